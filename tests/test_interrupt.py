"""Ctrl-C and SIGTERM mid-run: prompt exit, no partial files, whole records, then --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import FETCHCLI, cli, saved_path
from tests.servers import body_for


def start(args: list[str], urls: list[str]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [*FETCHCLI, "get", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stdin is not None
    process.stdin.write("\n".join(urls).encode() + b"\n")
    process.stdin.close()
    return process


def stop(process: subprocess.Popen[bytes], *signals: signal.Signals, gap: float = 0.0) -> float:
    """Send the signals; return how long the process took to exit after the first."""
    sent = time.monotonic()
    for number in signals:
        process.send_signal(number)
        time.sleep(gap)
    try:
        process.wait(timeout=15)
    finally:
        process.kill()
        if process.stderr:
            process.stderr.close()
    return time.monotonic() - sent


def whole_records(path: Path) -> list[dict]:
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "a record was cut in half"
    return [json.loads(line) for line in text.splitlines()]


def wait_for_lines(path: Path, count: int, timeout: float = 20) -> bool:
    """Wait (bounded) until `path` holds `count` lines."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= count:
            return True
        time.sleep(0.02)
    return False


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".fetchcli-part" in p.name]


@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_run_cleanly_and_resume_finishes_it(
    server, unique, tmp_path, signum, exit_code
):
    quick = [f"/ok/{unique}/q{i}" for i in range(30)]
    slow = [f"/hang/{unique}/s{i}" for i in range(6)]
    big = [f"/drip/{unique}/d{i}?bytes=2000000&interval=0.5" for i in range(2)]
    urls = [server.url(t) for t in quick + slow + big]
    out, records = tmp_path / "out", tmp_path / "r.jsonl"
    args = ["-", "-o", str(out), "--jsonl", str(records), "-c", "40"]
    server.reset_stats()
    process = start(args, urls)
    assert all(server.wait_for_hits(t, 1, timeout=20) for t in slow + big)
    assert wait_for_lines(records, len(quick)), "finished URLs were not recorded as they finished"
    took = stop(process, signum)
    assert process.returncode == exit_code
    assert took < 5, f"took {took:.1f}s to stop"
    assert temp_files(out) == []
    first = whole_records(records)
    assert {r["url"] for r in first} == {server.url(t) for t in quick}  # and nothing else

    # The rest, resumed, with the slow routes answering at once this time.
    rest = [server.url(f"/ok/{unique}/after{i}") for i in range(3)]
    resumed = subprocess.run(
        [*FETCHCLI, "get", "-", "--no-save", "--jsonl", str(records), "--resume", "-q"],
        input="\n".join(urls[: len(quick)] + rest).encode(),
        timeout=60,
    )
    assert resumed.returncode == 0
    assert all(server.hits(t) == 1 for t in quick)  # not fetched again
    assert len(whole_records(records)) == len(first) + len(rest)


def test_a_second_ctrl_c_during_cleanup_still_exits_promptly(server, unique, tmp_path):
    slow = [f"/drip/{unique}/d{i}?bytes=5000000&interval=0.2" for i in range(8)]
    out, records = tmp_path / "out", tmp_path / "r.jsonl"
    process = start(["-", "-o", str(out), "--jsonl", str(records)], [server.url(t) for t in slow])
    assert all(server.wait_for_hits(t, 1, timeout=20) for t in slow)
    took = stop(process, signal.SIGINT, signal.SIGINT, gap=0.02)
    assert process.returncode == 130
    assert took < 5
    assert temp_files(out) == []
    whole_records(records)


def test_large_transfers_in_flight_leave_no_partial_file(server, unique, tmp_path):
    # Big bodies that have already spilled to temporary files when the signal arrives.
    big = [f"/big/{unique}/b{i}?size={20 << 30}" for i in range(3)]
    out = tmp_path / "out"
    process = start(["-", "-o", str(out), "-q"], [server.url(t) for t in big])
    deadline = time.monotonic() + 20
    while not temp_files(out) and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for a condition on disk, bounded
    assert temp_files(out), "no transfer reached the disk"
    stop(process, signal.SIGINT)
    assert process.returncode == 130
    assert temp_files(out) == [] and [p for p in out.rglob("*") if p.is_file()] == []


def test_ctrl_c_while_stdin_stays_open_exits_130_quietly(server, unique):
    # The reader thread waits in a read of stdin that never ends; the exit must not abort on
    # that stream ("Fatal Python error: could not acquire lock ... daemon threads", 134).
    first = f"/ok/{unique}/first"
    process = subprocess.Popen(
        [*FETCHCLI, "get", "-", "--no-save", "-P", "1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stdin is not None and process.stderr is not None
    try:
        process.stdin.write(server.url(first).encode() + b"\n")
        process.stdin.flush()  # and left open
        assert server.wait_for_hits(first, 1, timeout=20)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 130
        assert "Fatal Python error" not in process.stderr.read().decode()
    finally:
        process.kill()
        process.stdin.close()
        process.stderr.close()


def wait_for_temp(root: Path, timeout: float = 20) -> list[Path]:
    """Wait (bounded) until a body has spilled to a temporary file under `root`."""
    deadline = time.monotonic() + timeout
    while not (found := temp_files(root)) and time.monotonic() < deadline:
        time.sleep(0.02)  # waiting for a condition on disk, bounded
    return found


def run_locks(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.name.startswith(".fetchcli-run-")]


def kill_9(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL fetchcli and its engine processes (in sessions of their own) at once, as the
    OOM killer or a power cut would: nobody is left to clean up."""
    engines = []
    for task in Path(f"/proc/{process.pid}/task").iterdir():
        engines += [int(pid) for pid in (task / "children").read_text().split()]
    for pid in [*engines, process.pid]:
        os.kill(pid, signal.SIGKILL)
    process.wait(timeout=15)  # a killed process runs no more code: its files stay as they are


# A body that takes ~2 s to arrive: it spills to its temporary file after about 0.7 s.
SLOW_BODY = 768 * 1024
SLOW_RATE = 384 * 1024


@pytest.mark.parametrize("processes", ["1", "2"])
def test_after_kill_9_a_rerun_removes_the_dead_runs_temporary_file(
    server, unique, tmp_path, processes
):
    target = f"/range/{unique}?size={SLOW_BODY}&rate={SLOW_RATE}"
    out = tmp_path / "out"
    args = ["-", "-o", str(out), "-q", "-P", processes]
    process = start(args, [server.url(target)])
    try:
        (stale,) = wait_for_temp(out)
    finally:
        kill_9(process)
        if process.stderr:
            process.stderr.close()
    assert stale.exists() and run_locks(out)

    # The rerun writes into the same directory: the dead run's temporary file is removed, and
    # --skip-existing does not take it for a finished body.
    done = subprocess.run(
        [*FETCHCLI, "get", *args, "--skip-existing", "--jsonl", str(tmp_path / "r.jsonl")],
        input=server.url(target).encode() + b"\n",
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    (record,) = whole_records(tmp_path / "r.jsonl")
    assert record["ok"] and record["skipped"] is None and record["bytes"] == SLOW_BODY
    assert Path(record["path"]).read_bytes() == body_for(f"{target}#1", SLOW_BODY)
    assert not stale.exists() and temp_files(out) == []
    assert run_locks(out) == []


def test_two_runs_into_one_directory_keep_each_others_temporary_files(server, unique, tmp_path):
    # The first body takes ~6 s; the second run (in this process: no start-up) takes far less.
    slow = f"/range/{unique}/slow?size={6 << 20}&rate={1 << 20}"
    quick = [f"/range/{unique}/quick{i}?size=1000" for i in range(5)]  # the same directory
    out = tmp_path / "out"
    first = start(["-", "-o", str(out), "-q", "-P", "1"], [server.url(slow)])
    try:
        (live,) = wait_for_temp(out)
        second = cli("get", "-", "-o", str(out), "-q", "-P", "1", stdin=lines(server, quick))
        assert second.exit_code == 0, second.stderr
        assert first.poll() is None, "the first run ended too soon to tell"
        assert live.exists(), "the second run removed the first one's temporary file"
        assert first.wait(timeout=30) == 0
    finally:
        first.kill()
        if first.stderr:
            first.stderr.close()
    saved = saved_path(out, server, f"/range/{unique}")
    bodies = {p.name: p.read_bytes() for p in saved.iterdir()}
    assert body_for(f"{slow}#1", 6 << 20) in bodies.values()
    assert len(bodies) == 1 + len(quick) and temp_files(out) == [] and run_locks(out) == []


def lines(server, targets: list[str]) -> bytes:
    return "".join(server.url(target) + "\n" for target in targets).encode()


def test_ctrl_c_of_a_continue_run_on_a_pipe_says_how_to_go_on(server, unique, tmp_path):
    out = tmp_path / "out"
    process = start(
        ["-", "-o", str(out), "--continue"], [server.url(f"/big/{unique}?size={20 << 30}")]
    )
    deadline = time.monotonic() + 20
    while not temp_files(out) and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for a condition on disk, bounded
    assert temp_files(out), "no transfer reached the disk"
    process.send_signal(signal.SIGINT)
    assert process.stderr is not None
    try:
        process.wait(timeout=15)
        said = process.stderr.read()
    finally:
        process.kill()
        process.stderr.close()
    assert process.returncode == 130
    first, hint = said.decode().splitlines()[-2:]
    assert first.startswith("fetchcli: interrupted: 0 URLs")
    assert hint == (
        "fetchcli: Nothing recorded what finished (no --jsonl). Run it again with "
        "--skip-existing to pass over the files already saved; with --continue it continues "
        "the partial files kept. Next time add --jsonl FILE, so that --resume can fetch only "
        "the rest."
    )
