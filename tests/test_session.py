"""The CLI's run refuses before it writes or fetches anything: a records file that is one of
the sources, and an output directory that cannot be one."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.helpers import FETCHCLI, cli, write_list


def one_line_usage_error(result_code: int, stderr: str, start: str) -> None:
    assert result_code == 2, stderr
    (line,) = stderr.splitlines()
    assert line.startswith(f"fetchcli: error: {start}"), line


@pytest.mark.parametrize("resume", [False, True])
@pytest.mark.parametrize("spelling", ["urls.txt", "./urls.txt", "link.txt"])
def test_records_into_a_source_are_refused_and_the_list_is_kept(
    server, unique, tmp_path, monkeypatch, spelling, resume
):
    urls = write_list(tmp_path / "urls.txt", [server.url(f"/ok/{unique}/{i}") for i in range(3)])
    (tmp_path / "link.txt").symlink_to(urls)
    listed = urls.read_bytes()[:-1]  # no newline at the end: --resume would cut the line
    urls.write_bytes(listed)
    monkeypatch.chdir(tmp_path)
    args = ["get", "urls.txt", "--jsonl", spelling, "-o", "out"] + ["--resume"] * resume
    result = cli(*args)
    one_line_usage_error(result.exit_code, result.stderr, f"--jsonl {spelling} is also a source")
    assert urls.read_bytes() == listed
    assert server.hits(f"/ok/{unique}/0") == 0
    assert not (tmp_path / "out").exists()


def test_records_that_are_not_a_source_may_be_new(server, unique, tmp_path):
    urls = write_list(tmp_path / "urls.txt", [server.url(f"/ok/{unique}/a")])
    records = tmp_path / "new" / "dir" / "records.jsonl"  # --jsonl makes its directory
    result = cli("get", str(urls), "--jsonl", str(records), "--no-save")
    assert result.exit_code == 0, result.stderr
    assert records.read_text().count("\n") == 1


def test_an_output_directory_that_is_a_file_is_refused_before_any_request(server, unique, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    records = tmp_path / "records.jsonl"
    records.write_text('{"kept": true}\n')
    urls = write_list(tmp_path / "urls.txt", [server.url(f"/ok/{unique}/{i}") for i in range(5)])
    for output in (blocker, blocker / "sub"):
        result = cli("get", str(urls), "-o", str(output), "--jsonl", str(records), "-q")
        one_line_usage_error(
            result.exit_code, result.stderr, f"cannot save bodies in {output}: not a directory"
        )
        assert all(server.hits(f"/ok/{unique}/{i}") == 0 for i in range(5))
    assert records.read_text() == '{"kept": true}\n'  # not opened for writing either
    assert blocker.read_text() == "not a directory"


def test_no_save_does_not_check_the_output_directory(server, unique, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    urls = write_list(tmp_path / "urls.txt", [server.url(f"/ok/{unique}/a")])
    result = cli("get", str(urls), "-o", str(blocker), "--no-save", "-q")
    assert result.exit_code == 0, result.stderr
    assert server.hits(f"/ok/{unique}/a") == 1


def test_a_missing_output_directory_is_made(server, unique, tmp_path):
    urls = write_list(tmp_path / "urls.txt", [server.url(f"/ok/{unique}/a")])
    result = cli("get", str(urls), "-o", str(tmp_path / "new" / "out"), "-q")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "new" / "out").is_dir()


# Root writes anywhere whatever the mode bits say; without these capabilities it does not.
AS_UNPRIVILEGED_ROOT = ["--bounding-set=-dac_override", "--inh-caps=-dac_override"]


def test_an_output_directory_that_is_not_writable_is_refused_before_any_request(
    server, unique, tmp_path
):
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("as root, a read-only directory needs setpriv (util-linux) to test")
        prefix = [setpriv, *AS_UNPRIVILEGED_ROOT]
    readonly = tmp_path / "ro"
    readonly.mkdir(mode=0o555)
    target = f"/ok/{unique}/a"
    try:
        done = subprocess.run(
            [*prefix, *FETCHCLI, "get", "-", "-o", str(readonly), "-q"],
            input=server.url(target).encode() + b"\n",
            capture_output=True,
            timeout=60,
            check=False,
        )
    finally:
        readonly.chmod(0o755)
    one_line_usage_error(
        done.returncode, done.stderr.decode(), f"cannot save bodies in {readonly}: not writable"
    )
    assert server.hits(target) == 0
    assert list(readonly.iterdir()) == []
