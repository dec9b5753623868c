"""Test helpers: a Fetcher on a respx router, jobs from URLs, CLI runs in and out of process."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import respx

from fetchcli.cli import run_cli
from fetchcli.client import Client, HttpxTransport
from fetchcli.config import Settings
from fetchcli.environment import Environment
from fetchcli.fetcher import Fetcher
from fetchcli.models import Job
from fetchcli.partial import Decision, Held, decide, write_sidecar
from fetchcli.sink import Saver
from fetchcli.sources import parse_line
from fetchcli.stats import RunStats
from tests.servers import FaultServer

# Comparing a server's time.monotonic() readings with a wait the client timed: an event
# loop may run a timer up to its clock's resolution early.
CLOCK_SLACK = 0.01


def job(url: str, line: int = 1) -> Job:
    parsed = parse_line("-", line, url.encode())
    assert isinstance(parsed, Job), parsed
    return parsed


def decided(held: Held, status: int, headers: Mapping[str, str]) -> Decision:
    """`decide()` on an answer it judges (a 200, 206 or 416), which always has a verdict."""
    decision = decide(held, status, headers)
    assert decision is not None, (status, headers)
    return decision


def put_sidecar(path: str | Path, held: Held) -> None:
    """The sidecar of `held` at `path`, as a run leaves it (written through a file beside it)."""
    write_sidecar(path, held, temp=f"{path}.tmp")


class RawStream(httpx.AsyncByteStream):
    """A body that arrives as raw bytes, in two pieces, like a network delivers it."""

    def __init__(self, raw: bytes) -> None:
        self._raw = raw

    async def __aiter__(self) -> AsyncIterator[bytes]:
        half = len(self._raw) // 2
        for piece in (self._raw[:half], self._raw[half:]):
            if piece:
                yield piece


class Pauses:
    """The host pauses a Fetcher asked for, on a fake clock."""

    def __init__(self, clock: list[float]) -> None:
        self._clock = clock
        self._until: dict[str, float] = {}

    def pause_host(self, host: str, seconds: float) -> None:
        self._until[host] = max(self._until.get(host, 0.0), self._clock[0] + seconds)

    def host_pause(self, host: str) -> float:
        return max(0.0, self._until.get(host, 0.0) - self._clock[0])


@dataclass
class FetchRig:
    """A Fetcher and what it touches, for assertions."""

    fetcher: Fetcher
    hosts: Pauses
    stats: RunStats
    sleeps: list[float] = field(default_factory=list)
    pauses: list[float] = field(default_factory=list)  # example.com's pause as each wait began


@contextlib.asynccontextmanager
async def fetch_rig(
    router: respx.MockRouter, output_dir: Path | None = None, **options: Any
) -> AsyncIterator[FetchRig]:
    """A Fetcher over `router`, zero backoff unless asked, saving under `output_dir`."""
    options.setdefault("backoff", 0)
    options.setdefault("save", output_dir is not None)
    settings = Settings.create(output_dir=output_dir or Path(), **options)
    saver = Saver(settings.output.output_dir, save=settings.output.save)
    now = [1000.0]
    hosts = Pauses(now)
    stats = RunStats()
    sleeps: list[float] = []
    pauses: list[float] = []

    async def record_sleep(seconds: float) -> None:
        # Time passes at once, for the pauses too: a test of a 7 s wait takes no 7 s.
        sleeps.append(seconds)
        pauses.append(hosts.host_pause("example.com"))
        now[0] += seconds

    async def as_network_would(request: httpx.Request) -> httpx.Response:
        # httpx reads a bytes body at once (decoded); a network streams it raw.
        response = await router.async_handler(request)
        if response.is_stream_consumed:
            raw = b"".join([chunk async for chunk in response.stream])  # type: ignore[union-attr]
            response = httpx.Response(
                response.status_code, headers=response.headers, stream=RawStream(raw)
            )
        return response

    # Wrapped as the client wraps httpx's own transport: errors arrive in fetchcli's words.
    transport = HttpxTransport(httpx.MockTransport(as_network_would))
    async with Client(transport=transport) as client, saver:
        fetcher = Fetcher(
            client,
            settings,
            saver,
            stats,
            random.Random(7).random,
            pause_host=hosts.pause_host,
            sleep=record_sleep,
        )
        yield FetchRig(fetcher, hosts, stats, sleeps, pauses)


@dataclass
class CliResult:
    """What an in-process CLI run left behind."""

    exit_code: int
    stdout: bytes
    stderr: str

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.decode().splitlines()]


def cli(
    *args: str, stdin: bytes = b"", stdin_isatty: bool = False, cpu_count: int = 4
) -> CliResult:
    """Run the CLI in this process with captured streams (no terminal).

    `cpu_count` is the machine the CLI sees, whatever this one has: a test of `-P 2` gets its
    two engines on one core too.
    """
    stdout, stderr = io.BytesIO(), io.StringIO()
    env = Environment(
        stdin=io.BytesIO(stdin),
        stdout=stdout,
        stderr=stderr,
        stdin_isatty=stdin_isatty,
        stderr_isatty=False,
        environ={},
        cpu_count=cpu_count,
    )
    code = run_cli(list(args), env)
    return CliResult(code, stdout.getvalue(), stderr.getvalue())


FETCHCLI = [sys.executable, "-m", "fetchcli"]


# Reports the peak RSS of this process (VmHWM: reset at exec, unlike a child's ru_maxrss,
# which keeps the size of the test process it was forked from).
MEASURED = """
import atexit, os, sys
def report():
    with open("/proc/self/status") as status:
        peak = next(line for line in status if line.startswith("VmHWM:"))
    with open(os.environ["PEAK_FILE"], "w") as out:
        out.write(peak.split()[1])
atexit.register(report)
from fetchcli.cli import main
sys.argv[0] = "fetchcli"
main()
"""


def run_measured(args: list[str], stdin: str) -> tuple[int, float]:
    """Run fetchcli in a child; return its exit code and peak RSS in MiB."""
    peak_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"fetchcli-peak-{os.getpid()}"
    env = {**os.environ, "PEAK_FILE": str(peak_file)}
    done = subprocess.run(
        [sys.executable, "-c", MEASURED, *args], input=stdin.encode(), env=env, timeout=300
    )
    peak_kib = int(peak_file.read_text())
    peak_file.unlink()
    return done.returncode, peak_kib / 1024


def write_list(path: Path, urls: list[str]) -> Path:
    path.write_text("".join(url + "\n" for url in urls))
    return path


def saved_path(out: Path, server: FaultServer, target: str) -> Path:
    return out / f"127.0.0.1_{server.port}" / target.lstrip("/")


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections (bound, not listening: nobody takes it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@contextlib.contextmanager
def unanswered_port() -> Iterator[int]:
    """A port whose connects hang: a listener with a full backlog that never accepts."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(3):  # more than the backlog holds: the kernel drops later SYNs
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
            yield port
        finally:
            for filler in fillers:
                filler.close()
