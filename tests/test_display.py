"""What a person sees: a live display in a terminal; nothing but one plain line in a pipe."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import select
import shlex
import signal
import struct
import subprocess
import sys
import termios
import time

from fetchcli.config import Settings
from fetchcli.display import TYPING_NOTE, NullDisplay, PlainDisplay, make_display
from fetchcli.environment import Environment
from fetchcli.live import LiveDisplay, StatusLines
from fetchcli.stats import RunStats
from tests.helpers import FETCHCLI
from tests.screen import Screen

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
COLOR = re.compile(r"\x1b\[[0-9;]*(3[0-9]|9[0-7]|38;5;\d+|38;2;[\d;]+)m")


def run_in_terminal(
    args: list[str], stdin: str, columns: int = 100, **env: str
) -> tuple[int, str, float]:
    """Run fetchcli with stderr on a pseudo-terminal; return (exit code, what it drew, seconds)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    started = time.monotonic()
    process = subprocess.Popen(
        [*FETCHCLI, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=follower,
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns), **env},
    )
    os.close(follower)
    assert process.stdin is not None
    process.stdin.write(stdin.encode())
    process.stdin.close()
    screen = bytearray()
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the other side closed: the process is done with the terminal
            break
        if not chunk:
            break
        screen += chunk
    os.close(leader)
    code = process.wait(timeout=60)
    return code, screen.decode("utf-8", "replace"), time.monotonic() - started


def urls_for(server, unique: str) -> str:
    slow = [server.url(f"/slow/{unique}/s{i}?delay=0.6") for i in range(12)]
    big = [server.url(f"/big/{unique}/big.bin?size={300 << 20}")]
    fast = [server.url(f"/ok/{unique}/f{i}") for i in range(30)]
    return "\n".join([*big, *slow, *fast, server.url(f"/status/404/{unique}")]) + "\n"


def test_a_terminal_gets_a_live_display_and_a_summary(server, unique, tmp_path):
    source = tmp_path / "urls.txt"
    source.write_text(urls_for(server, unique))
    code, screen, elapsed = run_in_terminal(["get", str(source), "--no-save", "-c", "8"], "")
    text = ANSI.sub("", screen)
    assert code == 1
    assert "━" in text and "req/s" in text and "in flight" in text  # the live display
    assert re.search(r"\d+% \d+/44", text)  # the total was counted ahead for a file
    assert "✗ 404" in text  # the failure, above the live area
    assert "fetchcli: done" in text and "outcome" in text and "HTTP 4xx" in text  # summary
    frames = text.count("req/s")
    assert frames <= 15 * elapsed + 5, f"{frames} frames in {elapsed:.1f}s: not rate-limited"


def test_stdin_shows_a_running_count(server, unique):
    _, screen, _ = run_in_terminal(["get", "-", "--no-save"], urls_for(server, unique))
    text = ANSI.sub("", screen)
    assert re.search(r"\d+ done", text) and "fetchcli: done" in text


def test_no_color_means_no_colors(server, unique):
    _, screen, _ = run_in_terminal(
        ["get", "-", "--no-save"], urls_for(server, unique), NO_COLOR="1"
    )
    assert "req/s" in screen and not COLOR.search(screen)


def test_a_narrow_terminal_gets_no_garbage(server, unique):
    _, screen, _ = run_in_terminal(["get", "-", "--no-save"], urls_for(server, unique), columns=40)
    lines = [line for line in ANSI.sub("\n", screen).split("\n") if line.strip()]
    assert lines and max(len(line) for line in lines) <= 40


def test_a_pipe_gets_no_control_codes_at_all(server, unique):
    done = subprocess.run(
        [*FETCHCLI, "get", "-", "--no-save", "--jsonl", "-"],
        input=urls_for(server, unique).encode(),
        capture_output=True,
        timeout=60,
    )
    assert b"\x1b" not in done.stderr and b"\x1b" not in done.stdout
    (line,) = done.stderr.decode().splitlines()
    assert line.startswith("fetchcli: 44 URLs in ") and "1 failed (HTTP 4xx 1)" in line


def test_quiet_prints_nothing(server, unique):
    code, screen, _ = run_in_terminal(["get", "-", "--no-save", "-q"], urls_for(server, unique))
    assert code == 1 and screen == ""


def test_the_display_does_not_read_a_named_pipe_twice(server, unique, tmp_path):
    # Counting lines ahead is for regular files: a second reader would steal a pipe's lines.
    fifo, records = tmp_path / "urls.fifo", tmp_path / "r.jsonl"
    os.mkfifo(fifo)
    urls = [server.url(f"/ok/{unique}/{i}") for i in range(200)]

    def feed() -> None:
        with open(fifo, "w") as feeder:
            feeder.write("\n".join(urls) + "\n")

    import threading

    feeder = threading.Thread(target=feed)
    feeder.start()
    code, _, _ = run_in_terminal(["get", str(fifo), "--no-save", "--jsonl", str(records)], "")
    feeder.join()
    assert code == 0
    assert len(records.read_text().splitlines()) == 200


def terminal(columns: int = 100) -> tuple[int, int]:
    """A pseudo-terminal (leader, follower), `columns` wide and 40 rows high."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    return leader, follower


def read_all(leader: int) -> str:
    """What was written to the terminal, until every program has let go of it."""
    screen = bytearray()
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    os.close(leader)
    return screen.decode("utf-8", "replace")


def run_shell_in_terminal(command: str, columns: int = 100) -> tuple[int, str]:
    """Run a shell command line with its stdout and stderr on one terminal, as typed there."""
    leader, follower = terminal(columns)
    process = subprocess.Popen(
        ["sh", "-c", command],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns)},
    )
    os.close(follower)
    screen = read_all(leader)
    return process.wait(timeout=60), screen


def slow_list(server, unique: str, tmp_path) -> tuple[str, list[str]]:
    """A list file that takes a few frames to fetch, with eight failures among it."""
    missing = [server.url(f"/status/404/{unique}/m{i}") for i in range(8)]
    slow = [server.url(f"/slow/{unique}/s{i}?delay=0.25") for i in range(24)]
    urls = [
        u for pair in zip(slow[::3], slow[1::3], slow[2::3], missing, strict=True) for u in pair
    ]
    source = tmp_path / "links.txt"
    source.write_text("\n".join(urls) + "\n")
    return str(source), missing


# Prints the URL of each failed record as it arrives, as `jq -r 'select(.ok|not) | .url'`.
READER = (
    "import json, sys\n"
    "for line in sys.stdin:\n"
    "    record = json.loads(line)\n"
    "    if not record['ok']:\n"
    "        print('failed:', record['url'], flush=True)\n"
)
CURSOR_UP = re.compile(r"\x1b\[\d*A")


def test_the_lines_of_a_pipes_reader_stay_on_the_screen(server, unique, tmp_path):
    # The README's `... --jsonl - | jq -c 'select(.ok|not)'`: jq writes to the same terminal.
    source, missing = slow_list(server, unique, tmp_path)
    fetch = shlex.join([*FETCHCLI, "get", "--no-save", "--jsonl", "-", "-c", "4", source])
    reader = shlex.join([sys.executable, "-c", READER])
    code, output = run_shell_in_terminal(f"{fetch} | {reader}")
    lines = Screen(100).feed(output).lines()
    assert code == 0  # the reader's status
    assert sorted(line for line in lines if line.startswith("failed:")) == sorted(
        f"failed: {url}" for url in missing
    )
    assert not CURSOR_UP.search(output)  # nothing was drawn over
    assert "fetchcli: done" in lines and any(line.startswith(" HTTP 4xx") for line in lines)


def test_records_on_the_same_terminal_stay_whole(server, unique, tmp_path):
    source, _ = slow_list(server, unique, tmp_path)
    code, output = run_shell_in_terminal(
        shlex.join([*FETCHCLI, "get", "--no-save", "--jsonl", "-", "-c", "4", source])
    )
    lines = Screen(100).feed(output).lines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert code == 1 and len(records) == 32
    assert not CURSOR_UP.search(output)


def test_with_stdout_in_a_file_the_terminal_is_ours_and_stdout_gets_only_records(
    server, unique, tmp_path
):
    source, _ = slow_list(server, unique, tmp_path)
    leader, follower = terminal()
    with open(tmp_path / "records.jsonl", "wb") as stdout:
        process = subprocess.Popen(
            [*FETCHCLI, "get", "--no-save", "--jsonl", "-", "-c", "4", source],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=follower,
            env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "100"},
        )
        os.close(follower)
        screen = read_all(leader)
        assert process.wait(timeout=60) == 1
    written = (tmp_path / "records.jsonl").read_bytes()
    assert b"\x1b" not in written
    assert len([json.loads(line) for line in written.splitlines()]) == 32
    assert CURSOR_UP.search(screen) and "in flight" in screen  # the live view: nobody else here


def type_into(args: list[str], typed: list[bytes], columns: int = 100) -> tuple[int, str]:
    """Run fetchcli with stdin, stdout and stderr on one terminal, and type `typed` into it."""
    leader, follower = terminal(columns)
    process = subprocess.Popen(
        [*FETCHCLI, *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns)},
    )
    os.close(follower)
    seen = read_until(leader, b"Ctrl-D")  # the note: it is reading the terminal now
    for text in typed:
        os.write(leader, text)
    screen = seen.decode() + read_all(leader)
    return process.wait(timeout=60), screen


def read_until(leader: int, needle: bytes, timeout: float = 30) -> bytes:
    """What the terminal got until `needle` showed (bounded: fails after `timeout`)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0 and select.select([leader], [], [], left)[0], f"no {needle!r}: {seen!r}"
        seen += os.read(leader, 65536)
    return seen


def test_dash_reads_urls_typed_into_the_terminal_until_ctrl_d(server, unique):
    ok, missing = server.url(f"/ok/{unique}/typed"), server.url(f"/status/404/{unique}/t")
    code, output = type_into(
        ["get", "-", "--no-save", "--jsonl", "-"], [f"{ok}\n{missing}\n".encode(), b"\x04"]
    )
    lines = Screen(100).feed(output).lines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert code == 1
    assert sorted((r["url"], r["ok"]) for r in records) == [(ok, True), (missing, False)]
    assert lines[0] == TYPING_NOTE  # says how to end, before anything is typed
    assert not CURSOR_UP.search(output)  # what is typed is never drawn over
    assert "fetchcli: done" in lines


def test_ctrl_c_while_reading_the_terminal_exits_130(server, unique):
    leader, follower = terminal()
    process = subprocess.Popen(
        [*FETCHCLI, "get", "-", "--no-save"],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={**os.environ, "TERM": "xterm-256color"},
    )
    os.close(follower)
    seen = read_until(leader, b"Ctrl-D")  # the note: it is reading the terminal now
    os.write(leader, f"{server.url(f'/ok/{unique}/before-ctrl-c')}\n".encode())
    assert server.wait_for_hits(f"/ok/{unique}/before-ctrl-c", 1, timeout=20)
    process.send_signal(signal.SIGINT)
    screen = seen.decode() + read_all(leader)
    assert process.wait(timeout=15) == 130
    assert "Fatal Python error" not in screen and "fetchcli: interrupted" in screen


def displayed(stdout, *, stdin_isatty: bool = False, stderr_isatty: bool = True, **options):
    env = Environment(
        stdin=io.BytesIO(),
        stdout=stdout,
        stderr=io.StringIO(),
        stdin_isatty=stdin_isatty,
        stderr_isatty=stderr_isatty,
        environ={},
    )
    return make_display(Settings.create(**options), env, RunStats())


def test_the_view_fits_whoever_else_writes_to_the_terminal(tmp_path):
    read_end, write_end = os.pipe()
    leader, follower = terminal()
    with (
        open(write_end, "wb") as pipe,
        open(follower, "wb") as tty,
        open(tmp_path / "records", "wb") as file,
    ):
        assert isinstance(displayed(pipe, jsonl="-"), StatusLines)  # `| jq`
        assert isinstance(displayed(pipe), StatusLines)  # its reader may write here too
        assert isinstance(displayed(tty, jsonl="-"), StatusLines)  # records on this terminal
        assert isinstance(displayed(tty), LiveDisplay)  # nothing on stdout: ours alone
        assert isinstance(displayed(tty, jsonl="r.jsonl"), LiveDisplay)
        assert isinstance(displayed(file, jsonl="-"), LiveDisplay)  # `> records.jsonl`
        typing = displayed(file, sources=["-"], stdin_isatty=True)
        assert isinstance(typing, StatusLines) and typing._every is None
        assert isinstance(displayed(file, sources=["a.txt"], stdin_isatty=True), LiveDisplay)
        assert isinstance(displayed(pipe, quiet=True), NullDisplay)
        assert isinstance(displayed(pipe, stderr_isatty=False), PlainDisplay)
    os.close(read_end)
    os.close(leader)


def test_the_summary_counts_bytes_of_a_body_cut_short(server, unique):
    # A body reset halfway still moved bytes: the summary says so, whichever executor ran.
    from tests.helpers import cli

    target = f"/reset/{unique}?after=200000&size=400000"
    result = cli("get", "--no-save", "-r", "0", "-P", "1", stdin=server.url(target).encode())
    assert result.exit_code == 1
    moved = re.search(r", ([\d.]+) kB, ", result.stderr)  # not "0 B": the cut body counts
    assert moved and float(moved[1]) > 10, result.stderr
