"""What a person sees: a live display in a terminal; nothing but one plain line in a pipe."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
import time

from tests.helpers import FETCHCLI

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
