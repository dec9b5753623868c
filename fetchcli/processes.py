"""Several engine processes, each with its own event loop and its own GIL.

One event loop is one core: a busy run is CPU-bound at a few thousand requests a second, and
sooner when bodies are saved, because the thread that writes files waits for the GIL that
the busy loop holds (measured: the writes then run in series with the fetching). With
`--processes N` this process becomes the coordinator: it reads, validates and deduplicates
the input, deals the jobs out to N engine processes, and funnels their records to the one
records file and display. Every engine runs the same `pipeline.execute()` as a
single-process run, with its share of `-c`, `-w` and `--rate`. A host paused by a
Retry-After in one engine is paused in all of them.

Coordinator and engines talk over a socket pair in length-prefixed pickles:

    to an engine:    ("start", Settings, deadline)  ("jobs", [(source, line, url)])
                     ("pause", host, seconds)  ("end",)  ("stop",)
    from an engine:  ("records", [Record])  ("stats", in_flight, retrying, retries, transfers)
                     ("pause", host, seconds)  ("done",)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fetchcli.batching import Batcher
from fetchcli.config import Limits, Settings
from fetchcli.engine import REPORT_SECONDS, frame, read_message
from fetchcli.errors import sole_error
from fetchcli.kinds import ErrorKind
from fetchcli.models import Job, Record
from fetchcli.producer import produce
from fetchcli.sources import FingerprintSet, Lines
from fetchcli.stats import RunStats, Transfer

__all__ = ["engine_count", "execute_in_processes"]

JOBS_PER_MESSAGE = 256
WINDOW_PER_WORKER = 4  # jobs an engine may hold, per worker: enough to never run dry
STOP_SECONDS = 5.0  # how long a stopped engine may take to clean up before it is killed
SMALL_INPUT_BYTES = 256 * 1024  # about 5,000 URLs: less is over before engines start


def engine_count(
    settings: Settings, cpus: int | None = None, input_bytes: int | None = None
) -> int:
    """How many engine processes to run: the flag, or when it is 0 ("auto") one per core.

    One process, whatever the flag, with `--per-host`: its limit holds per process, and the
    hosts are not split between engines. Auto also stays at one when more cannot help: a
    few requests at a time, or a short list of files (`input_bytes`; None for stdin), which
    would be done before the engines had started.
    """
    limits = settings.limits
    if limits.per_host:
        return 1
    if limits.processes:
        return max(1, min(limits.processes, limits.concurrency))
    if limits.concurrency < 8 or (input_bytes is not None and input_bytes < SMALL_INPUT_BYTES):
        return 1
    return max(1, min(cpus or os.cpu_count() or 1, 4, limits.concurrency))


async def execute_in_processes(
    settings: Settings,
    count: int,
    lines: Lines,
    emit: Callable[[Record], Awaitable[None]],
    stats: RunStats,
    *,
    done: FingerprintSet | None,
    writers: Sequence[Batcher[Any, Any]],
) -> None:
    """`pipeline.execute()` spread over `count` engine processes; the same records come out."""
    loop = asyncio.get_running_loop()
    deadline = settings.timeouts.deadline
    seen = FingerprintSet() if settings.input.dedupe else None
    pool = _Pool(settings, count, emit, stats)
    try:
        async with asyncio.TaskGroup() as group:
            for writer in writers:
                group.create_task(writer.run())
            try:
                await pool.start(group, deadline)
                await produce(
                    lines,
                    pool.handoff,
                    emit,
                    stats,
                    seen,
                    done,
                    None if deadline is None else loop.time() + deadline,
                )
                await pool.finish()
            finally:
                # Engines hand in what they finished before the records file is closed.
                await pool.shutdown()
                for writer in writers:
                    writer.close()
    except BaseExceptionGroup as group:
        raise sole_error(group) from None
    finally:
        stats.finish()


@dataclasses.dataclass(eq=False)
class _Engine:
    """The coordinator's view of one engine process."""

    index: int
    process: asyncio.subprocess.Process
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    window: int
    outstanding: dict[tuple[str, int], list[str]] = dataclasses.field(default_factory=dict)
    pending: int = 0
    buffer: list[tuple[str, int, str]] = dataclasses.field(default_factory=list)
    finished: bool = False
    in_flight: int = 0
    retrying: int = 0
    retries: int = 0
    transfers: dict[int, Transfer] = dataclasses.field(default_factory=dict)

    def send(self, message: tuple[Any, ...]) -> None:
        if not self.writer.is_closing():
            self.writer.write(frame(message))


class _Pool:
    """Starts the engines, deals jobs out, collects records, and stops them cleanly."""

    def __init__(
        self,
        settings: Settings,
        count: int,
        emit: Callable[[Record], Awaitable[None]],
        stats: RunStats,
    ) -> None:
        self._settings = settings
        self._count = count
        self._emit = emit
        self._stats = stats
        self._engines: list[_Engine] = []
        self._room = asyncio.Event()

    async def start(self, group: asyncio.TaskGroup, deadline: float | None) -> None:
        """Spawn the engines, give each its settings, and listen to them."""
        deadline_at = None if deadline is None else time.time() + deadline
        for index in range(self._count):
            ours, theirs = socket.socketpair()
            try:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "fetchcli.engine",
                    str(theirs.fileno()),
                    pass_fds=[theirs.fileno()],
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    # Its own session: a Ctrl-C at the terminal reaches the coordinator only,
                    # which stops the engines in order.
                    start_new_session=True,
                )
            finally:
                theirs.close()
            reader, writer = await asyncio.open_connection(sock=ours)
            share = self._share(index)
            engine = _Engine(index, process, reader, writer, WINDOW_PER_WORKER * share.workers)
            engine.send(("start", self._engine_settings(share), deadline_at))
            self._engines.append(engine)
            group.create_task(self._listen(engine))
        group.create_task(self._flush_now_and_then())

    async def handoff(self, job: Job) -> None:
        """Give `job` to the engine with the least work; wait while all of them are full."""
        while True:
            live = [engine for engine in self._engines if not engine.finished]
            if not live:
                msg = "every engine process has stopped"
                raise RuntimeError(msg)
            engine = min(live, key=lambda e: e.pending + len(e.buffer))
            if engine.pending + len(engine.buffer) < engine.window:
                break
            self._flush_all()
            self._room.clear()
            await self._room.wait()
        engine.buffer.append((job.source, job.line, job.url))
        engine.outstanding.setdefault((job.source, job.line), []).append(job.url)
        # A hungry engine gets the job at once (a slow pipe's first URL); a busy one in bulk.
        if len(engine.buffer) >= JOBS_PER_MESSAGE or engine.pending < engine.window // 4:
            self._flush(engine)
            await engine.writer.drain()

    async def finish(self) -> None:
        """No more jobs: let every engine finish its work and hand in its records."""
        self._flush_all()
        for engine in self._engines:
            engine.send(("end",))
        await asyncio.gather(*(self._wait_finished(engine) for engine in self._engines))

    async def shutdown(self) -> None:
        """Make sure every engine is gone; after a stop, wait for it to clean up first."""
        try:
            for engine in self._engines:
                if not engine.finished:
                    engine.send(("stop",))
            await asyncio.gather(*(self._wait_exit(engine) for engine in self._engines))
            # An exited engine's last records may still be in the socket: read them all.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(self._wait_finished(engine) for engine in self._engines)),
                    STOP_SECONDS,
                )
        except asyncio.CancelledError:
            # A second Ctrl-C: stop them harder, still wait (briefly) so that their
            # temporary files are swept before we exit; then go on being cancelled.
            for engine in self._engines:
                _signal(engine.process, signal.SIGTERM)
            await asyncio.shield(
                asyncio.gather(*(self._wait_exit(engine) for engine in self._engines))
            )
            raise

    def _share(self, index: int) -> Limits:
        limits = self._settings.limits

        def split(total: int) -> int:
            return max(1, total // self._count + (1 if index < total % self._count else 0))

        return dataclasses.replace(
            limits,
            concurrency=split(limits.concurrency),
            workers=split(limits.workers),
            rate=limits.rate / self._count,
            processes=1,
        )

    def _engine_settings(self, limits: Limits) -> Settings:
        settings = self._settings
        return dataclasses.replace(
            settings,
            limits=limits,
            input=dataclasses.replace(settings.input, dedupe=False),  # done here, once
            output=dataclasses.replace(settings.output, jsonl=None, resume=False, quiet=True),
        )

    def _flush(self, engine: _Engine) -> None:
        if engine.buffer:
            engine.pending += len(engine.buffer)
            engine.send(("jobs", engine.buffer))
            engine.buffer = []

    def _flush_all(self) -> None:
        for engine in self._engines:
            self._flush(engine)

    async def _flush_now_and_then(self) -> None:
        # Jobs buffered for a busy engine still leave within a few milliseconds.
        while not all(engine.finished for engine in self._engines):
            self._flush_all()
            await asyncio.sleep(REPORT_SECONDS)

    async def _listen(self, engine: _Engine) -> None:
        try:
            while True:
                message = await read_message(engine.reader)
                kind = message[0]
                if kind == "records":
                    await self._take_records(engine, message[1])
                elif kind == "stats":
                    self._take_stats(engine, *message[1:])
                elif kind == "pause":
                    for other in self._engines:
                        if other is not engine:
                            other.send(message)
                elif kind == "done":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, EOFError):
            await self._lost(engine)
        finally:
            engine.finished = True
            engine.in_flight = engine.retrying = 0
            engine.transfers = {}
            self._merge_stats()
            self._room.set()
            engine.writer.close()

    async def _take_records(self, engine: _Engine, records: list[Record]) -> None:
        for record in records:
            urls = engine.outstanding.get((record.source, record.line))
            if urls:
                urls.pop()
                if not urls:
                    del engine.outstanding[record.source, record.line]
            engine.pending -= 1
            await self._emit(record)
        self._room.set()

    def _take_stats(
        self,
        engine: _Engine,
        in_flight: int,
        retrying: int,
        retries: int,
        transfers: list[tuple[int, str, int | None, int]],
    ) -> None:
        engine.in_flight, engine.retrying, engine.retries = in_flight, retrying, retries
        engine.transfers = {
            key: Transfer(url, expected, _Received(size)) for key, url, expected, size in transfers
        }
        self._merge_stats()

    def _merge_stats(self) -> None:
        stats = self._stats
        stats.in_flight = sum(engine.in_flight for engine in self._engines)
        stats.retrying = sum(engine.retrying for engine in self._engines)
        stats.retries = sum(engine.retries for engine in self._engines)
        stats.transfers = {
            (engine.index << 40) | key: transfer
            for engine in self._engines
            for key, transfer in engine.transfers.items()
        }

    async def _lost(self, engine: _Engine) -> None:
        """The engine died without saying goodbye: its unfinished jobs fail, and say why."""
        code = engine.process.returncode
        reason = "engine process died" + (f" (exit {code})" if code is not None else "")
        for (source, line), urls in list(engine.outstanding.items()):
            for url in urls:
                await self._emit(
                    Record(
                        url=url,
                        ok=False,
                        error=reason,
                        error_kind=ErrorKind.INTERNAL,
                        source=source,
                        line=line,
                    )
                )
        engine.outstanding.clear()

    async def _wait_finished(self, engine: _Engine) -> None:
        while not engine.finished:
            self._room.clear()
            await self._room.wait()

    async def _wait_exit(self, engine: _Engine) -> None:
        try:
            await asyncio.wait_for(engine.process.wait(), STOP_SECONDS)
        except TimeoutError:
            _signal(engine.process, signal.SIGKILL)
            await engine.process.wait()


@dataclasses.dataclass(slots=True)
class _Received:
    """An engine's report of how much of one body has arrived."""

    size: int


def _signal(process: asyncio.subprocess.Process, signum: int) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)
