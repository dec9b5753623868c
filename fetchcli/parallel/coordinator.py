"""The multi-process executor: engine processes, each with its own event loop and GIL.

One event loop is one core: a busy run is CPU-bound at a few thousand requests a second, and
sooner when bodies are saved, because the thread that writes files waits for the GIL that
the busy loop holds (measured: the writes then run in series with the fetching). Here this
process is the coordinator: the producer (reading, validating, deduplicating) runs here,
its jobs are dealt out to N engine processes (`engine.py`), and their records come back to
the one `emit`. Every engine runs the in-process executor with its share of `-c`, `-w` and
`--rate`. A host paused by a Retry-After in one engine is paused in all of them. The
`--limit-rate` cap is split by the requests each engine has in flight, and `--rate` by the
jobs each could start, rebalanced as their stats come in (every 0.1 s): transfers share the
cap alike whichever engine runs them, and a host alone in one engine gets the whole rate. The
messages are in `wire.py`.

Without per-host limits a job goes to the engine with the least work, in a small window per
engine (late binding keeps the engines even); the jobs that wait there for a time, a paused
host's or a retry's, do not count in it, or a paused host's URLs would fill every engine's
window and hold up every other host until the pause ended. Nor do the jobs dealt while their
host was paused, until they are done: once the pause is over they take turns with the other
hosts' in the engine's frontier, and the others must keep coming meanwhile. With `--per-host` or
`--per-host-rate`, every job of a host goes to the same engine, chosen by a stable hash of
the host (as `--shard` deals hosts to instances): that engine's frontier then holds the
host's limits exactly, each engine with the full per-host limits for its hosts, and it may
hold as many jobs as its frontier parks, so that a list grouped by host keeps every engine
busy. A list of one host runs on one engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import sys

from fetchcli.bandwidth import split_rate
from fetchcli.config import Limits, Settings
from fetchcli.errors import IncompleteRun
from fetchcli.executor import Emit, Produce
from fetchcli.frontier import DEFAULT_PARK
from fetchcli.models import Job, Record
from fetchcli.parallel.wire import (
    Done,
    End,
    EngineStats,
    Jobs,
    Pause,
    Records,
    Share,
    Start,
    Starts,
    Stop,
    ToEngine,
    WireError,
    WireJob,
    frame,
    read_message,
)
from fetchcli.shard import host_key, share_of
from fetchcli.stats import Pauses, RunStats, Transfer

__all__ = ["EngineProcesses"]

JOBS_PER_MESSAGE = 256
WINDOW_PER_WORKER = 4  # jobs an engine may hold, per worker: enough to never run dry
STOP_SECONDS = 5.0  # how long a stopped engine may take to clean up before it is killed
FLUSH_SECONDS = 0.02  # jobs buffered for a busy engine still leave this soon
REBALANCE_SHARE = 0.02  # of --limit-rate: smaller changes of an engine's share are not sent


class EngineProcesses:
    """Fetches on `count` engine processes; the same records come out as in one process."""

    def __init__(
        self, settings: Settings, stats: RunStats, count: int, *, deadline_at: float | None
    ) -> None:
        self._settings = settings
        self._stats = stats
        self._count = count
        self._deadline_at = deadline_at

    async def run(self, produce: Produce, emit: Emit) -> None:
        """Start the engines, deal out every job `produce` hands off, stop them cleanly."""
        pool = _Pool(self._settings, self._count, emit, self._stats)
        async with asyncio.TaskGroup() as group:
            try:
                await pool.start(group, self._deadline_at)
                await produce(pool.handoff)
                await pool.finish()
            finally:
                # Engines hand in what they finished before the records file is closed.
                await pool.shutdown()
                self._stats.read_pauses = None


@dataclasses.dataclass(eq=False)
class _Engine:
    """The coordinator's view of one engine process."""

    index: int
    process: asyncio.subprocess.Process
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    window: int  # jobs it may hold that could start (`_Pool._has_room`)
    hungry: int  # below this many, a job is sent at once, not batched
    outstanding: dict[tuple[str, int], list[str]] = dataclasses.field(default_factory=dict)
    pending: int = 0
    buffer: list[WireJob] = dataclasses.field(default_factory=list)
    finished: bool = False
    in_flight: int = 0
    retrying: int = 0
    retries: int = 0
    received: int = 0
    transfers: dict[int, Transfer] = dataclasses.field(default_factory=dict)
    rate: float | None = None  # its share of --limit-rate
    start_rate: float = 0.0  # its share of --rate
    held: int = 0  # of `pending`, those waiting for a time: a paused host's, retries
    paused: int = 0  # of `held`, a paused host's
    parked: int = 0  # of `pending`, those dealt while their host was paused
    parked_lines: dict[tuple[str, int], int] = dataclasses.field(default_factory=dict)

    @property
    def queued(self) -> int:
        return self.pending + len(self.buffer)

    @property
    def runnable(self) -> int:
        """Of its jobs, about those that count in its window: not waiting for a time, nor
        dealt while their host was paused (during the pause those are in `held` too)."""
        return self.queued - max(self.held, self.parked)

    def park(self, line: tuple[str, int]) -> None:
        """A job of `line` dealt while its host was paused."""
        self.parked += 1
        self.parked_lines[line] = self.parked_lines.get(line, 0) + 1

    def unpark(self, line: tuple[str, int]) -> None:
        """A record of `line` came back: if it was a parked job's, one fewer is parked."""
        count = self.parked_lines.get(line, 0)
        if count:
            self.parked -= 1
            if count == 1:
                del self.parked_lines[line]
            else:
                self.parked_lines[line] = count - 1

    def send(self, message: ToEngine) -> None:
        if not self.writer.is_closing():
            self.writer.write(frame(message))


class _Pool:
    """Starts the engines, deals jobs out, collects records, and stops them cleanly."""

    def __init__(
        self,
        settings: Settings,
        count: int,
        emit: Emit,
        stats: RunStats,
    ) -> None:
        self._settings = settings
        self._count = count
        self._emit = emit
        self._stats = stats
        self._engines: list[_Engine] = []
        self._room = asyncio.Event()
        self._pauses: dict[str, float] = {}  # host -> until (loop time), as engines tell
        limits = settings.limits
        self._by_host = bool(limits.per_host or limits.per_host_rate)

    async def start(self, group: asyncio.TaskGroup, deadline_at: float | None) -> None:
        """Spawn the engines, give each its settings, and listen to them."""
        self._stats.read_pauses = self._read_pauses
        for index in range(self._count):
            ours, theirs = socket.socketpair()
            try:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-P",  # a "fetchcli" folder in the current directory must not shadow us
                    "-m",
                    "fetchcli.parallel.engine",
                    str(theirs.fileno()),
                    str(os.getpid()),  # for the engine to tell if it was orphaned already
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
            window = WINDOW_PER_WORKER * share.workers
            if self._by_host:
                window += DEFAULT_PARK  # what its frontier may park: hosts wait there, not here
            hungry = WINDOW_PER_WORKER * share.workers // 4
            engine = _Engine(index, process, reader, writer, window, hungry)
            engine.rate = share.limit_rate
            engine.start_rate = share.rate
            engine.send(Start(self._engine_settings(share), deadline_at))
            self._engines.append(engine)
            group.create_task(self._listen(engine))
        group.create_task(self._flush_now_and_then())

    async def handoff(self, job: Job) -> None:
        """Give `job` to its engine (its host's, or the one with the least work); wait while
        that engine is full."""
        while True:
            parks = bool(self._pauses) and not self._by_host and self._is_paused(job)
            engine = self._engine_for(job, parks)
            if self._has_room(engine, parks):
                break
            self._flush_all()
            self._room.clear()
            await self._room.wait()
        engine.buffer.append(WireJob.of(job))
        line = (job.source, job.line)
        engine.outstanding.setdefault(line, []).append(job.url)
        if parks:
            engine.park(line)
        # A hungry engine gets the job at once (a slow pipe's first URL); a busy one in bulk.
        if len(engine.buffer) >= JOBS_PER_MESSAGE or engine.pending < engine.hungry:
            self._flush(engine)
            await engine.writer.drain()

    def _engine_for(self, job: Job, parks: bool) -> _Engine:
        live = [engine for engine in self._engines if not engine.finished]
        if not live:
            msg = "every engine process has stopped: the rest of the input has no records"
            raise IncompleteRun(msg)
        if parks:
            # A paused host's backlog is shared out evenly: parked jobs are not in `runnable`,
            # so by that they would all go to one engine, and after the pause, once the other
            # hosts are done, run with that engine's workers only.
            return min(live, key=lambda e: (e.parked, e.runnable))
        if not self._by_host:
            return min(live, key=lambda e: e.runnable)
        key = host_key(job.parsed)
        engine = self._engines[share_of(key, len(self._engines))]
        # A lost engine's hosts move, together, to one of those left.
        return live[share_of(key, len(live))] if engine.finished else engine

    def _has_room(self, engine: _Engine, parks: bool) -> bool:
        """Whether `engine` may take one more job (`parks`: one dealt during its host's pause).
        Without per-host limits its window leaves out the jobs that wait there for a time (a
        paused host's, retries) and those dealt during their host's pause: they would fill
        every engine's window and hold up every host, during the pause and after it, up to
        what its frontier parks. So a parked job needs no room in the window: an engine whose
        window is full (still starting, say) takes its share of the backlog all the same."""
        if self._by_host:
            return engine.queued < engine.window  # that is its frontier's park already
        parking = engine.queued < engine.window + DEFAULT_PARK
        return parking and (parks or engine.runnable < engine.window)

    def _note_pause(self, host: str, seconds: float) -> None:
        now = asyncio.get_running_loop().time()
        # The pauses that are over go: the hosts paused now are all it holds, in a long run too.
        self._pauses = {other: until for other, until in self._pauses.items() if until > now}
        self._pauses[host] = max(now + seconds, self._pauses.get(host, 0))

    def _read_pauses(self) -> Pauses | None:
        """The engines' jobs held back by pauses, and the pauses as the engines told them."""
        waiting = sum(engine.paused for engine in self._engines if not engine.finished)
        if not waiting:
            return None
        now = asyncio.get_running_loop().time()
        live = [(until, host) for host, until in self._pauses.items() if until > now]
        if not live:  # a pause just over, the engines' counts not yet
            return Pauses(waiting, 0, "", 0.0)
        until, host = min(live)
        return Pauses(waiting, len(live), host, until - now)

    def _is_paused(self, job: Job) -> bool:
        host = host_key(job.parsed).decode("ascii")  # as the engines' frontiers count hosts
        until = self._pauses.get(host)
        if until is None:
            return False
        if until <= asyncio.get_running_loop().time():
            del self._pauses[host]
            return False
        return True

    async def finish(self) -> None:
        """No more jobs: let every engine finish its work and hand in its records."""
        self._flush_all()
        for engine in self._engines:
            engine.send(End())
        await asyncio.gather(*(self._wait_finished(engine) for engine in self._engines))

    async def shutdown(self) -> None:
        """Make sure every engine is gone; after a stop, wait for it to clean up first."""
        try:
            for engine in self._engines:
                if not engine.finished:
                    engine.send(Stop())
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
            limit_rate=None if limits.limit_rate is None else limits.limit_rate / self._count,
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
            engine.send(Jobs(engine.buffer))
            engine.buffer = []

    def _flush_all(self) -> None:
        for engine in self._engines:
            self._flush(engine)

    async def _flush_now_and_then(self) -> None:
        # Jobs buffered for a busy engine still leave within a few milliseconds.
        while not all(engine.finished for engine in self._engines):
            self._flush_all()
            await asyncio.sleep(FLUSH_SECONDS)

    async def _listen(self, engine: _Engine) -> None:
        try:
            while True:
                match await read_message(engine.reader):
                    case Records(records):
                        await self._take_records(engine, records)
                    case EngineStats() as report:
                        self._take_stats(engine, report)
                    case Pause() as pause:
                        self._note_pause(pause.host, pause.seconds)
                        for other in self._engines:
                            if other is not engine:
                                other.send(pause)
                    case Done():
                        break
                    case other:
                        msg = f"unexpected {type(other).__name__} from an engine"
                        raise WireError(msg)
        except (asyncio.IncompleteReadError, ConnectionError):
            await self._lost(engine, "engine process died")
        except WireError as exc:
            # Its word can no longer be trusted: stop it, and record its jobs as lost.
            _signal(engine.process, signal.SIGKILL)
            await self._lost(engine, f"engine process sent a bad message: {exc}")
        finally:
            engine.finished = True
            engine.in_flight = engine.retrying = 0
            engine.transfers = {}
            self._merge_stats()
            self._rebalance()
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
            if engine.parked_lines:
                engine.unpark((record.source, record.line))
            await self._emit(record)
        self._room.set()

    def _take_stats(self, engine: _Engine, report: EngineStats) -> None:
        engine.in_flight, engine.retrying = report.in_flight, report.retrying
        engine.retries, engine.received = report.retries, report.received
        engine.paused = report.paused
        if report.held != engine.held:
            engine.held = report.held
            self._room.set()  # a handoff may wait for this engine's window
        engine.transfers = {
            t.key: Transfer(t.url, t.expected, _Received(t.size)) for t in report.transfers
        }
        self._merge_stats()
        self._rebalance()

    def _rebalance(self) -> None:
        """Split --limit-rate by the requests each live engine has in flight, and --rate by
        the jobs each could start: a host's jobs all in one engine (--per-host) get the
        whole rate, not that engine's even share of it."""
        live = [engine for engine in self._engines if not engine.finished]
        total = self._settings.limits.limit_rate
        if total is not None:
            shares = split_rate(total, [engine.in_flight for engine in live])
            for engine, share in zip(live, shares, strict=True):
                if engine.rate is None or abs(share - engine.rate) > REBALANCE_SHARE * total:
                    engine.rate = share
                    engine.send(Share(share))
        starts = self._settings.limits.rate
        if starts:  # split_rate's shares are never 0 (no limit) while `starts` is not
            shares = split_rate(starts, [max(0, e.queued - e.held) for e in live])
            for engine, share in zip(live, shares, strict=True):
                if abs(share - engine.start_rate) > REBALANCE_SHARE * starts:
                    engine.start_rate = share
                    engine.send(Starts(share))

    def _merge_stats(self) -> None:
        stats = self._stats
        stats.in_flight = sum(engine.in_flight for engine in self._engines)
        stats.retrying = sum(engine.retrying for engine in self._engines)
        stats.retries = sum(engine.retries for engine in self._engines)
        stats.received = sum(engine.received for engine in self._engines)
        stats.transfers = {
            (engine.index << 40) | key: transfer
            for engine in self._engines
            for key, transfer in engine.transfers.items()
        }

    async def _lost(self, engine: _Engine, reason: str) -> None:
        """The engine went away without saying Done: its unfinished jobs fail, and say why."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(engine.process.wait(), STOP_SECONDS)
        code = engine.process.returncode
        if code is not None:
            reason += f" (exit {code})"
        for (source, line), urls in list(engine.outstanding.items()):
            for url in urls:
                await self._emit(Record.lost(source, line, url, reason))
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
