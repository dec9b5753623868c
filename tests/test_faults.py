"""Hostile servers and hostile input: the run keeps going, loses nothing, writes nowhere else."""

from __future__ import annotations

import json
import os
import resource
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.helpers import CLOCK_SLACK, FETCHCLI, cli, run_measured, saved_path
from tests.servers import body_for


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".fetchcli-part")]


def fetch_one(url: str, *args: str):
    result = cli("get", "--jsonl", "-", "--backoff", "0", *args, stdin=url.encode())
    (record,) = result.records()
    return result, record


# --- broken transfers ---------------------------------------------------------------------


def test_a_reset_mid_body_is_retried(server, unique, tmp_path):
    target = f"/reset/{unique}/r.bin?fail=2&size=200000&after=20000"
    _, record = fetch_one(server.url(target), "-o", str(tmp_path))
    assert record["ok"] and record["attempts"] == 3 and server.hits(target) == 3
    assert Path(record["path"]).read_bytes() == body_for(target, 200000)
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize(
    "route",
    ["/truncate/{key}/t.bin?size=100000&send=40000", "/reset/{key}/r.bin?size=100000&after=30000"],
)
def test_a_body_cut_short_is_never_ok_nor_kept(server, unique, tmp_path, route):
    target = route.format(key=unique)
    result, record = fetch_one(server.url(target), "-o", str(tmp_path), "-r", "2")
    assert result.exit_code == 1
    assert not record["ok"] and record["attempts"] == 3 and server.hits(target) == 3
    assert record["error_kind"] == "truncated" and record["error"].startswith("body cut short: ")
    assert files_under(tmp_path) == []


def test_a_truncated_chunked_body_is_not_kept(server, unique, tmp_path):
    target = f"/chunked/{unique}/c.bin?size=300000&truncate=1"
    _, record = fetch_one(server.url(target), "-o", str(tmp_path), "-r", "1")
    assert not record["ok"] and record["attempts"] == 2
    assert files_under(tmp_path) == []


def test_a_complete_chunked_body_is_kept(server, unique, tmp_path):
    target = f"/chunked/{unique}/c.bin?size=300000"
    _, record = fetch_one(server.url(target), "-o", str(tmp_path))
    assert record["ok"] and Path(record["path"]).read_bytes() == body_for(target, 300000)


@pytest.mark.parametrize("route", ["/drip/{key}?bytes=1000&interval=0.05", "/hang/{key}"])
def test_a_drip_or_a_hang_is_cut_by_the_attempt_timeout(server, unique, route):
    # The read timeout (30 s) never fires on a drip (50 s long); the per-attempt limit must.
    # Without it the 3 attempts take 90 s or more: a bound far from that survives a loaded machine.
    target = route.format(key=unique)
    started = time.monotonic()
    _, record = fetch_one(server.url(target), "--no-save", "-t", "0.5", "-r", "2")
    elapsed = time.monotonic() - started
    assert not record["ok"] and record["error_kind"] == "timeout" and record["attempts"] == 3
    assert server.hits(target) == 3
    assert elapsed < 15  # 3 x 0.5 s, and (zero) backoff, and a loaded machine's slack


def test_the_read_timeout_cuts_a_stall_even_without_a_total_limit(server, unique):
    target = f"/drip/{unique}?bytes=3&interval=20"  # 60 s unless the read timeout cuts it
    started = time.monotonic()
    _, record = fetch_one(
        server.url(target), "--no-save", "-t", "0", "--read-timeout", "0.3", "-r", "0"
    )
    assert not record["ok"] and record["error_kind"] == "timeout"
    assert time.monotonic() - started < 15  # 0.3 s, and a loaded machine's slack


# --- statuses and Retry-After ------------------------------------------------------------


@pytest.mark.parametrize("form", ["seconds", "date"])
def test_retry_after_is_honoured(server, unique, form):
    target = f"/retry-after/{unique}?fail=1&after=1&status=429&form={form}"
    started = time.monotonic()
    _, record = fetch_one(server.url(target), "--no-save")
    assert record["ok"] and record["attempts"] == 2
    assert time.monotonic() - started >= 0.9  # waited as asked, although --backoff is 0


def test_retry_after_is_capped_by_backoff_max(server, unique):
    target = f"/retry-after/{unique}?fail=1&after=3600&status=503"
    started = time.monotonic()
    _, record = fetch_one(server.url(target), "--no-save", "--backoff-max", "0.2")
    assert record["ok"] and record["attempts"] == 2
    assert time.monotonic() - started < 10


def test_a_429_with_retry_after_pauses_the_whole_host(server, other_server, unique):
    paused = server.url(f"/retry-after/{unique}?fail=1&after=1.5&status=429")
    late = server.url(f"/ok/{unique}/late")
    elsewhere = [other_server.url(f"/slow/{unique}/{i}?delay=0.3") for i in range(4)]
    stdin = "\n".join([paused, *elsewhere, late]).encode()
    result = cli("get", "--no-save", "-c", "5", "--jsonl", "-", stdin=stdin)
    assert result.exit_code == 0
    # As the servers saw it: `late` began only after the pause the 429 asked for, and the
    # other host's URLs had all finished by then (they did not wait for it).
    (_, _, asked), *_ = server.timeline(f"/retry-after/{unique}")
    (_, late_began, _), *_ = server.timeline(f"/ok/{unique}/late")
    assert late_began >= asked + 1.5 - CLOCK_SLACK
    assert max(ended for *_, ended in other_server.timeline(f"/slow/{unique}/")) < late_began


@pytest.mark.parametrize("status", [400, 403, 404, 410])
def test_client_errors_are_never_retried(server, unique, status):
    target = f"/status/{status}/{unique}"
    _, record = fetch_one(server.url(target), "--no-save", "-r", "5")
    assert (record["status"], record["attempts"], server.hits(target)) == (status, 1, 1)


def test_server_errors_are_retried_then_recorded(server, unique):
    target = f"/status/500/{unique}"
    _, record = fetch_one(server.url(target), "--no-save", "-r", "2")
    assert (record["status"], record["attempts"], server.hits(target)) == (500, 3, 3)
    assert record["error"] == "HTTP 500 Internal Server Error"


# --- sizes and bombs -----------------------------------------------------------------------


def test_a_gzip_bomb_fails_fast_with_flat_memory(server, unique, tmp_path):
    target = f"/gzip-bomb/{unique}/bomb?size={4 << 30}"
    records = tmp_path / "r.jsonl"
    started = time.monotonic()
    code, peak_mib = run_measured(
        [
            "get",
            "-",
            "-o",
            str(tmp_path / "out"),
            "-q",
            "--max-bytes",
            "20M",
            "--jsonl",
            str(records),
        ],
        server.url(target),
    )
    assert code == 1 and time.monotonic() - started < 20
    (record,) = [json.loads(line) for line in records.read_text().splitlines()]
    assert record["error_kind"] == "too_large" and record["attempts"] == 1
    assert peak_mib < 150
    assert files_under(tmp_path / "out") == []


# --- redirects -----------------------------------------------------------------------------


def test_a_redirect_loop_ends_with_a_clear_error(server, unique):
    target = f"/redirect/loop/{unique}/a"
    result, record = fetch_one(server.url(target), "--no-save")
    assert result.exit_code == 1
    assert record["error_kind"] == "redirect" and record["attempts"] == 1
    assert record["error"] == f"redirect loop back to {server.url(target)}"


def test_max_redirects_holds(server, unique):
    target = f"/redirect/chain/{unique}/5"
    _, too_many = fetch_one(server.url(target), "--no-save", "--max-redirects", "4")
    _, enough = fetch_one(server.url(target), "--no-save", "--max-redirects", "5")
    assert too_many["error"] == "more than 4 redirects" and enough["ok"]


def test_a_redirect_to_another_scheme_is_refused(server, unique):
    target = f"/redirect/to/{unique}?url={quote('file:///etc/passwd', safe='')}"
    _, record = fetch_one(server.url(target), "--no-save")
    assert record["error"] == "redirect to unsupported scheme 'file'"


# --- names ---------------------------------------------------------------------------------


def test_colliding_names_are_saved_apart_deterministically(server, unique, tmp_path):
    targets = [
        f"/ok/{unique}/a%3Ab",
        f"/ok/{unique}/a_b",
        f"/ok/{unique}/x%2Fy",
        f"/ok/{unique}/x_y",
    ]
    paths: list[list[Path]] = []
    for order in (targets, targets[::-1]):
        out = tmp_path / f"out{len(paths)}"
        result = cli(
            "get",
            "-o",
            str(out),
            "--jsonl",
            "-",
            stdin="\n".join(server.url(t) for t in order).encode(),
        )
        by_url = {r["url"]: r for r in result.records()}
        paths.append([Path(by_url[server.url(t)]["path"]).relative_to(out) for t in targets])
        for target in targets:
            assert Path(by_url[server.url(target)]["path"]).read_bytes() == body_for(target)
    assert paths[0] == paths[1]  # the same names whatever the order
    assert len(set(paths[0])) == 4


@pytest.mark.parametrize(
    "target",
    [
        "/ok/{key}/%2e%2e/%2e%2e/%2e%2e/escape.txt",
        "/ok/{key}/..%2f..%2fescape.txt",
        "/ok/{key}/%00nul%0d%0a",
        "/ok/{key}/CON",
        "/ok/{key}/" + "n" * 1000,
    ],
)
def test_hostile_names_stay_inside_the_output_dir(server, unique, tmp_path, target):
    target = target.format(key=unique)
    out = tmp_path / "out"
    _, record = fetch_one(server.url(target), "-o", str(out))
    assert record["ok"]
    saved = Path(record["path"]).resolve()
    assert saved.is_relative_to(out.resolve())
    assert saved.read_bytes() == body_for(target)
    assert files_under(tmp_path) == [saved]


# --- bad input -----------------------------------------------------------------------------


def test_every_bad_line_gets_a_record_and_the_good_ones_are_fetched(server, unique, tmp_path):
    good = server.url(f"/ok/{unique}/good")
    lines = [
        b"file:///etc/passwd",
        b"ftp://example.com/file",
        b"http:///no-host",
        b"http://bad\xff\xfeutf8.test/",
        b"http://long.test/" + b"x" * 10_000,
        b"http://nul.test/\x00byte",
        good.encode(),
    ]
    source = tmp_path / "urls.txt"
    source.write_bytes(b"\n".join(lines) + b"\n")
    result = cli("get", str(source), "--no-save", "--jsonl", "-")
    records = sorted(result.records(), key=lambda r: r["line"])
    assert result.exit_code == 1
    assert [r["line"] for r in records] == list(range(1, 8))
    assert all(r["error_kind"] == "invalid_url" and not r["ok"] for r in records[:6])
    assert records[6]["ok"] and records[6]["url"] == good
    assert [r["error"] for r in records[3:6]] == [
        "not valid UTF-8",
        "line of 10,017 bytes is longer than 8 KiB",
        "contains control characters",
    ]


def test_a_missing_source_exits_2_before_fetching(server, unique, tmp_path):
    good = tmp_path / "good.txt"
    good.write_text(server.url(f"/ok/{unique}/never") + "\n")
    result = cli("get", str(good), str(tmp_path / "missing.txt"))
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0].startswith("fetchcli: error: cannot read")
    assert server.hits(f"/ok/{unique}/never") == 0


# --- the disk ------------------------------------------------------------------------------


def test_an_output_dir_that_is_a_file_stops_the_run_before_any_request(server, unique, tmp_path):
    # Not every URL requested and failed one by one (200 MB bodies half sent): exit 2 at once.
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("in the way")
    targets = [f"/ok/{unique}/{i}" for i in range(3)] + [f"/big/{unique}/b?size=3000000"]
    stdin = "\n".join(server.url(t) for t in targets).encode()
    result = cli("get", "-o", str(blocker), "--jsonl", "-", stdin=stdin)
    assert result.exit_code == 2
    assert result.stderr == f"fetchcli: error: cannot save bodies in {blocker}: not a directory\n"
    assert result.records() == [] and all(server.hits(t) == 0 for t in targets)
    assert files_under(tmp_path) == [blocker]


def limit_file_size(limit: int):
    def apply() -> None:
        # Writes past `limit` then fail (EFBIG) as they would on a full disk (ENOSPC).
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_fails_the_bodies_that_do_not_fit(server, unique, tmp_path):
    small = [f"/ok/{unique}/s{i}" for i in range(5)]
    large = [f"/big/{unique}/l{i}?size=2000000" for i in range(3)]
    out, records = tmp_path / "out", tmp_path / "r.jsonl"
    done = subprocess.run(
        [*FETCHCLI, "get", "-", "-o", str(out), "-q", "--jsonl", str(records), "-r", "0"],
        input="\n".join(server.url(t) for t in small + large).encode(),
        preexec_fn=limit_file_size(1_000_000),
        timeout=60,
        capture_output=True,
    )
    assert done.returncode == 1, done.stderr
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    by_url = {r["url"]: r for r in lines}
    assert len(lines) == 8
    assert all(by_url[server.url(t)]["ok"] for t in small)
    for target in large:
        record = by_url[server.url(target)]
        assert record["error_kind"] == "io" and record["error"].startswith("cannot write")
    assert temp_files(out) == []
    assert not any(saved_path(out, server, t.split("?")[0]).exists() for t in large)


def test_records_that_cannot_be_written_stop_the_run_with_a_clear_error(server, unique):
    result = cli(
        "get", "--no-save", "--jsonl", "/dev/full", stdin=server.url(f"/ok/{unique}/x").encode()
    )
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        "fetchcli: error: cannot write records to /dev/full: No space left on device"
    )


def client_sockets_to(port: int) -> int:
    """Sockets of this process connected to `port` (the client side of our connections)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # closed meanwhile (the listing's own fd, the server)
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    count = 0
    for line in Path("/proc/self/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].split(":")[1], 16)
        if remote_port == port and fields[9] in inodes:
            count += 1
    return count


@pytest.mark.skipif(sys.platform != "linux", reason="uses /proc")
def test_a_run_leaves_no_connection_open(server, unique):
    urls = [server.url(f"/status/404/{unique}-{i}") for i in range(100)]
    urls += [server.url(f"/ok/{unique}/{i}") for i in range(100)]
    result = cli("get", "--no-save", "-c", "32", stdin="\n".join(urls).encode())
    assert result.exit_code == 1
    assert client_sockets_to(server.port) == 0


# --- sources that are pipes -------------------------------------------------------------


def test_records_can_go_to_a_pipe_by_name(server, unique):
    done = subprocess.run(
        [*FETCHCLI, "get", "-", "--no-save", "-q", "--jsonl", "/dev/stdout"],
        input=server.url(f"/ok/{unique}/p").encode(),
        capture_output=True,  # stdout is a pipe: the records file cannot be seeked
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ok"]


def test_a_reader_that_leaves_ends_the_run_quietly(server, unique):
    # `fetchcli get --jsonl - | head -1`: once the reader is gone, stop like `yes | head`.
    proc = subprocess.Popen(
        [*FETCHCLI, "get", "-", "--no-save", "--jsonl", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin and proc.stdout and proc.stderr
    proc.stdin.write(server.url(f"/ok/{unique}/first").encode() + b"\n")
    proc.stdin.flush()
    assert json.loads(proc.stdout.readline())["ok"]
    proc.stdout.close()  # the reader leaves; the next record has nowhere to go
    proc.stdin.write(server.url(f"/ok/{unique}/second").encode() + b"\n")
    proc.stdin.close()
    assert proc.wait(timeout=30) == 141
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert "error" not in stderr and "Traceback" not in stderr, stderr


@pytest.mark.parametrize("processes", ["1", "2"])
@pytest.mark.parametrize("source", ["file", "stdin"])
def test_head_of_thousands_of_records_ends_quietly_with_141(
    server, unique, tmp_path, processes, source
):
    # `fetchcli get list --no-save --jsonl - | head -2`, for real: every worker then meets
    # the closed pipe at once, in one process or in the coordinator of several.
    urls = tmp_path / "urls.txt"
    urls.write_text("".join(server.url(f"/ok/{unique}/{i}") + "\n" for i in range(2000)))
    command = [*FETCHCLI, "get", "--no-save", "-c", "64", "-P", processes, "--jsonl", "-"]
    command += [str(urls)] if source == "file" else ["-"]
    shell = " ".join(shlex.quote(part) for part in command) + " | head -2"
    with open(urls, "rb") as stdin:
        done = subprocess.run(
            ["bash", "-c", f"{shell}; exit ${{PIPESTATUS[0]}}"],
            stdin=stdin,
            capture_output=True,
            timeout=60,
        )
    assert done.returncode == 141, done.stderr.decode()[-2000:]
    assert len(done.stdout.splitlines()) == 2
    assert done.stderr == b""  # quietly: no traceback, no summary, no engine complaints


def test_a_named_pipe_source_can_be_interrupted(server, unique, tmp_path):
    fifo = tmp_path / "urls.fifo"
    os.mkfifo(fifo)
    process = subprocess.Popen(
        [*FETCHCLI, "get", str(fifo), "--no-save", "-q"], stderr=subprocess.PIPE
    )
    target = f"/ok/{unique}/first"
    with open(fifo, "w") as feeder:  # opened for writing, and left silent
        feeder.write(server.url(target) + "\n")
        feeder.flush()
        assert server.wait_for_hits(target, 1, timeout=20)
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=5)  # not stuck closing a pipe mid-read
        finally:
            process.kill()
            if process.stderr is not None:
                process.stderr.close()
    assert code == 130
