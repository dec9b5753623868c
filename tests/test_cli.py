"""The command line: exit codes, one-line errors, help, and records on stdout."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fetchcli import __version__
from fetchcli.errors import OutputError
from tests.helpers import cli


def test_version(capsys: pytest.CaptureFixture[str]):
    result = cli("--version")
    assert result.exit_code == 0
    assert capsys.readouterr().out == f"fetchcli {__version__}\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["get", "-c", "0", "-"], "fetchcli: error: --concurrency must be at least 1 (got 0)"),
        (["get", "-c", "many", "-"], "fetchcli: error: Invalid value for '-c' / '--concurrency'"),
        (["get", "--retries", "-1", "-"], "fetchcli: error: --retries must be at least 0 (got -1)"),
        (["get", "--resume", "-"], "fetchcli: error: --resume needs --jsonl PATH"),
        (["get", "-H", "broken", "-"], "fetchcli: error: --header must look like 'Name: value'"),
        (
            ["get", "--max-bytes", "huge", "-"],
            "fetchcli: error: --max-bytes must be a number of bytes",
        ),
        (["get", "--no-such-flag"], "fetchcli: error: No such option: --no-such-flag"),
        (["get", "missing-file.txt"], "fetchcli: error: cannot read missing-file.txt: No such"),
        (["get", "/"], "fetchcli: error: cannot read /: Is a directory"),
        (["get", "-X", "DELETE", "-"], "fetchcli: error: --method must be GET or HEAD"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], message: str):
    result = cli(*args)
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(message)
    assert "Traceback" not in result.stderr and "╭" not in result.stderr
    assert result.stdout == b""


def test_stdin_from_a_terminal_without_sources_is_a_usage_error():
    result = cli("get", stdin_isatty=True)
    assert result.exit_code == 2
    assert result.stderr.startswith("fetchcli: error: no URLs: give a file of URLs")
    assert "'-' reads the terminal" in result.stderr


def test_an_explicit_dash_reads_a_terminal_as_cat_does(server, unique):
    url = server.url(f"/ok/{unique}/typed")
    stdin = f"{url}\n".encode()
    result = cli("get", "-", "--no-save", "--jsonl", "-", stdin=stdin, stdin_isatty=True)
    assert result.exit_code == 0
    assert [(r["url"], r["ok"]) for r in result.records()] == [(url, True)]


def test_bad_lines_get_records_and_the_run_goes_on():
    stdin = b"file:///etc/passwd\n\n# comment\nnot a url\nhttp://\n\xff\xfe\n"
    result = cli("get", "-q", "--jsonl", "-", stdin=stdin)
    assert result.exit_code == 1
    records = result.records()
    assert [(r["line"], r["ok"], r["error_kind"]) for r in records] == [
        (1, False, "invalid_url"),
        (4, False, "invalid_url"),
        (5, False, "invalid_url"),
        (6, False, "invalid_url"),
    ]
    assert records[0]["error"] == "unsupported scheme 'file': only http and https are fetched"
    assert result.stderr == ""


def test_empty_input_is_success():
    result = cli("get", "--jsonl", "-", stdin=b"\n# nothing here\n")
    assert result.exit_code == 0 and result.stdout == b""
    assert result.stderr.startswith("fetchcli: 0 URLs")


def test_a_plain_summary_line_when_stderr_is_not_a_terminal():
    result = cli("get", stdin=b"ftp://x/y\n")
    assert re.fullmatch(
        r"fetchcli: 1 URL in \d+\.\ds \(\d+/s\), 0 ok, 1 failed \(invalid_url 1\), 0 B, "
        r"0 retries\n",
        result.stderr,
    )
    assert "\x1b" not in result.stderr


def test_help_groups_flags_into_panels_and_ends_with_examples(capsys: pytest.CaptureFixture[str]):
    result = cli("get", "--help")
    out = capsys.readouterr().out
    assert result.exit_code == 0
    for panel in ("Input", "Concurrency", "Timeouts and retries", "Output", "HTTP"):
        assert f"─ {panel} ─" in out
    assert "cat urls.txt | fetchcli get" in out and "--resume" in out
    assert "FETCHCLI_CONCURRENCY" in out


def test_no_arguments_shows_help(capsys: pytest.CaptureFixture[str]):
    result = cli()
    assert result.exit_code == 2
    assert "get" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "cpu_count", "note"),
    [
        (["-P", "99"], 1, "fetchcli: -P 99 capped at 1 (cores)\n"),
        (["-P", "3", "-c", "1"], 4, "fetchcli: -P 3 capped at 1 (-c 1)\n"),
        (["-P", "1"], 1, ""),
        (["-P", "0"], 1, ""),  # auto is never more than the cores
    ],
)
def test_processes_beyond_the_machine_are_capped_with_a_note(args, cpu_count, note):
    result = cli("get", "--no-save", *args, stdin=b"ftp://x/y\n", cpu_count=cpu_count)
    assert result.exit_code == 1  # the one bad line: the run itself went ahead
    assert result.stderr.startswith(f"{note}fetchcli: 1 URL in ")  # the note, the summary


def test_quiet_hides_the_note_too():
    result = cli("get", "-q", "--no-save", "-P", "99", stdin=b"ftp://x/y\n", cpu_count=1)
    assert result.exit_code == 1 and result.stderr == ""


def test_debug_is_read_from_the_flags_not_from_any_argument(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "--debug").write_text("ftp://x/y\n")  # a source named like the flag
    records_dir = str(tmp_path)  # not a file: the run fails with an output error
    result = cli("get", "-q", "--jsonl", records_dir, "--", "--debug")
    assert result.exit_code == 1
    assert (
        result.stderr == f"fetchcli: error: cannot write records to {records_dir}: Is a directory\n"
    )
    with pytest.raises(OutputError):  # with --debug itself, the error leaves with its traceback
        cli("get", "-q", "--debug", "--jsonl", records_dir, "--", "--debug")
