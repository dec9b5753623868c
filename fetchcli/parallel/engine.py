"""One engine process: `python -m fetchcli.parallel.engine FD PID`, started by the coordinator
whose process ID is PID.

It runs the same in-process executor as a single-process run, fed with jobs by the
coordinator over the socket FD, and hands its records, stats and host pauses back over it
(the messages are in `wire.py`). Its tasks share one TaskGroup: if one fails, the others are
cancelled and the process exits, so the coordinator sees it go and records what was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import sys
from typing import TYPE_CHECKING

from fetchcli import loop, trust_store
from fetchcli.bandwidth import Bandwidth
from fetchcli.errors import primary_error
from fetchcli.executor import Handoff
from fetchcli.models import Record
from fetchcli.parallel.wire import (
    Done,
    End,
    EngineStats,
    FromEngine,
    Jobs,
    Pause,
    Records,
    Share,
    Start,
    Starts,
    Stop,
    TransferReport,
    WireError,
    WireJob,
    frame,
    read_message,
)
from fetchcli.stats import RunStats

if TYPE_CHECKING:
    from fetchcli.pipeline import InProcess

__all__ = ["REPORT_SECONDS", "main"]

REPORT_SECONDS = 0.02  # how often an engine sends its records (and, 5x slower, its stats)
_PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent dies


class _EngineSide:
    """The engine's side of the socket: jobs in, records and stats out."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        executor_type: type[InProcess],
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._outbox: list[Record] = []
        self._incoming: asyncio.Queue[list[WireJob] | None] = asyncio.Queue()
        self._stats = RunStats()
        self._bandwidth: Bandwidth | None = None
        self._executor_type = executor_type
        self._executor: InProcess | None = None

    async def serve(self) -> None:
        start = await read_message(self._reader)
        if not isinstance(start, Start):
            msg = f"expected Start, got {type(start).__name__}"
            raise WireError(msg)
        rate = start.settings.limits.limit_rate
        clock = asyncio.get_running_loop().time
        self._bandwidth = None if rate is None else Bandwidth(rate, clock=clock)
        executor = self._executor_type(
            start.settings,
            self._stats,
            random=random.Random().random,
            deadline_at=start.deadline_at,
            on_pause=lambda host, seconds: self._send(Pause(host, seconds)),
            bandwidth=self._bandwidth,
        )
        self._executor = executor
        finished = False
        try:
            async with asyncio.TaskGroup() as group:
                run = group.create_task(executor.run(self._produce, self._emit))
                asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, run.cancel)
                listener = group.create_task(self._listen(run, executor))
                reporter = group.create_task(self._report(run))
                await asyncio.wait([run])  # not `await run`: its cancellation is not ours
                listener.cancel()
                reporter.cancel()
            finished = True  # all done, or stopped on request: either way not lost
        finally:
            self._send_records()
            self._send(self._stats_message())  # the last count of bytes, for the summary
            if finished:
                # Without Done, the coordinator records this engine's unfinished jobs as lost.
                self._send(Done())
            with contextlib.suppress(ConnectionError):  # the coordinator may be gone already
                await self._writer.drain()
            self._writer.close()

    async def _produce(self, handoff: Handoff) -> None:
        while (jobs := await self._incoming.get()) is not None:
            for wire in jobs:
                await handoff(wire.to_job())

    async def _emit(self, record: Record) -> None:
        self._outbox.append(record)

    async def _listen(self, run: asyncio.Task[None], executor: InProcess) -> None:
        try:
            while True:
                match await read_message(self._reader):
                    case Jobs(jobs):
                        self._incoming.put_nowait(jobs)
                    case Pause(host, seconds):
                        executor.pause_host(host, seconds)
                    case Share(rate):
                        if self._bandwidth is not None:
                            self._bandwidth.set_rate(rate)
                    case Starts(rate):
                        executor.set_rate(rate)
                    case End():
                        self._incoming.put_nowait(None)
                    case Stop():
                        run.cancel()
                        return
                    case other:
                        msg = f"unexpected {type(other).__name__} from the coordinator"
                        raise WireError(msg)
        except (asyncio.IncompleteReadError, ConnectionError):
            run.cancel()  # the coordinator is gone: stop, clean up, exit

    async def _report(self, run: asyncio.Task[None]) -> None:
        beat = 0
        try:
            while True:
                await asyncio.sleep(REPORT_SECONDS)
                self._send_records()
                beat += 1
                if beat % 5 == 0:
                    self._send(self._stats_message())
                await self._writer.drain()
        except ConnectionError:
            run.cancel()  # the coordinator is gone (its reader left, say): stop quietly

    def _send(self, message: FromEngine) -> None:
        if not self._writer.is_closing():
            self._writer.write(frame(message))

    def _send_records(self) -> None:
        if self._outbox:
            self._send(Records(self._outbox[:]))
            self._outbox.clear()

    def _stats_message(self) -> EngineStats:
        stats = self._stats
        transfers = [
            TransferReport(key, transfer.url, transfer.expected, transfer.progress.size)
            for key, transfer in list(stats.transfers.items())
        ]
        held = 0 if self._executor is None else self._executor.held
        return EngineStats(
            stats.in_flight,
            stats.retrying,
            stats.retries,
            stats.received,
            transfers,
            held,
            stats.paused,
        )


async def _serve(fd: int, executor_type: type[InProcess]) -> None:
    reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=fd))
    await _EngineSide(reader, writer, executor_type).serve()


def _die_with_the_coordinator(coordinator: int) -> None:
    """On Linux, have the kernel kill this engine when the coordinator dies, `kill -9` too
    (strictly, when the thread that started it ends: the coordinator's event loop's).

    Without it, an engine whose coordinator was killed sees its socket close and cleans up in
    order, writing what it still holds to a kept partial body: while the next run may be
    continuing that file already. (In its own session, the engine misses the signals sent to
    the coordinator's group.) A coordinator that died before this call left no one to send
    the signal: the engine, which has no job yet, exits at once.
    """
    if sys.platform != "linux":
        return
    import ctypes  # 5 ms, here only

    with contextlib.suppress(OSError, AttributeError):  # no libc, or no prctl: as before
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != coordinator:  # orphaned already (adopted by init or a subreaper)
        sys.exit("fetchcli: engine process: its coordinator is gone, or is not its parent")


def main() -> None:
    """Entry point of an engine process: `python -m fetchcli.parallel.engine FD COORDINATOR_PID`."""
    _die_with_the_coordinator(int(sys.argv[2]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator decides when to stop
    trust_store.defer()  # before the pipeline loads aiohttp: no CA store for plain http
    from fetchcli.pipeline import InProcess

    loop.spare_collector()  # the modules are loaded
    try:
        loop.run(_serve(int(sys.argv[1]), InProcess), os.environ)
        loop.spare_collector()
    except Exception as exc:  # one line for the user; the coordinator records what was lost
        error = primary_error(exc) if isinstance(exc, BaseExceptionGroup) else exc
        sys.stderr.write(f"fetchcli: engine process failed: {type(error).__name__}: {error}\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
