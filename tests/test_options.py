"""The flags of `fetchcli get`: one for each option of the settings, parsed into Settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from fetchcli import options
from fetchcli.cli import app
from fetchcli.config import Settings, option_types
from tests.helpers import cli


def parse(*args: str, environ: dict[str, str] | None = None) -> Settings:
    """The settings `fetchcli get ARGS` runs with (parsed as the CLI parses, not run)."""
    group = typer.main.get_command(app)
    command = group.commands["get"]  # type: ignore[attr-defined]
    with command.make_context("get", list(args)) as ctx:
        values = dict(ctx.params)
    sources = values.pop("sources")
    values.pop("debug")
    return options.settings(sources, values, environ or {})


def test_every_option_of_the_settings_has_one_flag():
    flagged = [each.option for _, each in options.flags()]
    assert sorted(flagged) == sorted(option_types().keys() - {"sources"})  # sources: arguments


def test_no_flags_give_the_librarys_defaults():
    assert parse() == Settings.create()


def test_flags_set_their_options():
    settings = parse(
        *("-c", "4", "--per-host", "2", "-t", "0", "--no-save", "--no-dedupe", "--no-follow"),
        *("--per-host-rate", "2.5"),
        *("-k", "--max-bytes", "1M", "-H", "X-A: 1", "-H", "X-B:2", "-o", "out", "a.txt", "-"),
    )
    assert settings.input.sources == ("a.txt", "-") and not settings.input.dedupe
    assert settings.limits.concurrency == 4 and settings.limits.per_host == 2
    assert settings.limits.per_host_rate == 2.5
    assert settings.timeouts.total is None
    assert not settings.output.save and settings.output.output_dir == Path("out")
    assert not settings.http.follow_redirects and not settings.http.verify
    assert settings.http.max_bytes == 1 << 20
    assert settings.http.headers == (("X-A", "1"), ("X-B", "2"))


def test_flags_come_from_the_environment_too(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FETCHCLI_PER_HOST", "3")
    monkeypatch.setenv("FETCHCLI_NO_SAVE", "1")
    monkeypatch.setenv("FETCHCLI_MAX_BYTES", "2k")
    settings = parse(environ={"FETCHCLI_HEADER": "X-A: 1 2\nX-B: 3"})
    assert settings.limits.per_host == 3 and not settings.output.save
    assert settings.http.max_bytes == 2048
    assert settings.http.headers == (("X-A", "1 2"), ("X-B", "3"))  # one per line, spaces kept
    assert parse("-H", "X-C: 4", environ={"FETCHCLI_HEADER": "X-A: 1"}).http.headers == (
        ("X-C", "4"),
    )


def test_the_help_shows_every_flag_and_its_env_var(capsys: pytest.CaptureFixture[str]):
    assert cli("get", "--help").exit_code == 0
    out = capsys.readouterr().out
    for _, each in options.flags():
        assert all(decl in out for decl in each.decls)
        assert each.envvar in out  # FETCHCLI_HEADER too, written into its help


def test_manifest_and_credential_flags(tmp_path: Path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine a.test login u password p\n")
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("a.test\tFALSE\t/\tFALSE\t0\tk\tv\n")
    settings = parse(
        *("--input-format", "tsv", "--layout", "flat", "--cut-dirs", "2", "--keep-cookies"),
        *("--netrc-file", str(netrc), "-u", "alice:pw", "--cookies", str(cookies)),
        *("--proxy", "socks5h://127.0.0.1:1080"),
    )
    assert settings.input.format == "tsv"
    assert (settings.output.layout, settings.output.cut_dirs) == ("flat", 2)
    credentials = settings.http.credentials
    assert credentials is not None and credentials.user is not None
    assert credentials.user.user == "alice" and "pw" not in repr(settings)
    assert set(credentials.machines) == {"a.test"} and "password" not in repr(credentials)
    assert settings.http.cookies is not None and len(settings.http.cookies) == 1
    assert settings.http.keep_cookies and settings.http.proxy == "socks5h://127.0.0.1:1080"


def test_a_missing_password_is_asked_once_and_never_without_a_prompt():
    group = typer.main.get_command(app)
    command = group.commands["get"]  # type: ignore[attr-defined]
    with command.make_context("get", ["-u", "alice"]) as ctx:
        values = dict(ctx.params)
    values.pop("sources"), values.pop("debug")
    asked = options.settings(None, values, {}, prompt=lambda text: "typed")
    assert asked.http.credentials is not None and asked.http.credentials.user is not None
    assert asked.http.credentials.user.password == "typed"


def test_the_help_keeps_square_brackets_that_are_not_rich_markup(
    capsys: pytest.CaptureFixture[str],
):
    assert cli("get", "--help").exit_code == 0
    words = capsys.readouterr().out.replace("│", " ").split()
    assert "'fetchcli[ray]'." in words  # Rich would read [ray] as a style and drop it


def test_a_bad_value_from_the_environment_names_its_variable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FETCHCLI_LIMIT_RATE", "abc")
    result = cli("get", "-", stdin=b"http://127.0.0.1:1/x\n")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "--limit-rate (from FETCHCLI_LIMIT_RATE) must be" in result.stderr
    monkeypatch.delenv("FETCHCLI_LIMIT_RATE")
    result = cli("get", "-", "--limit-rate", "abc", stdin=b"http://127.0.0.1:1/x\n")
    assert result.exit_code == 2 and "FETCHCLI_LIMIT_RATE" not in result.stderr


@pytest.mark.parametrize("flag", [["--rate", "abc"], ["--rate=abc"], ["-cabc"]])
def test_a_value_typer_cannot_parse_names_the_variable_only_when_it_came_from_there(
    monkeypatch: pytest.MonkeyPatch, flag: list[str]
):
    # Typer's own message names an option's env var whatever the value came from.
    monkeypatch.setenv("FETCHCLI_RATE", "1")  # set, but the flag wins
    monkeypatch.setenv("FETCHCLI_CONCURRENCY", "4")
    result = cli("get", "-", *flag, stdin=b"http://127.0.0.1:1/x\n")
    assert result.exit_code == 2 and "'abc' is not a valid" in result.stderr
    assert "FETCHCLI_" not in result.stderr
    monkeypatch.setenv("FETCHCLI_RATE", "abc")
    result = cli("get", "-", stdin=b"http://127.0.0.1:1/x\n")
    assert result.exit_code == 2
    assert "Invalid value for '--rate' (from FETCHCLI_RATE): 'abc'" in result.stderr


def test_only_the_options_from_the_environment_are_named(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FETCHCLI_NO_SAVE", "1")
    result = cli("get", "-", "--update", stdin=b"http://127.0.0.1:1/x\n")
    assert result.exit_code == 2
    assert "--update compares" in result.stderr and "--no-save (from FETCHCLI_NO_SAVE)" in (
        result.stderr
    )
    assert "FETCHCLI_UPDATE" not in result.stderr
