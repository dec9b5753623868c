"""One shard of a `--ray` run, on a Ray worker: the CLI's own run, with a ledger for records.

    begin ─▶ scan the ledger ─▶ replay what the funnel lacks ─▶ runner.drive(InProcess) ─▶ record
                                                                                         │
         RecordLog: the ledger (the shard's records file) ◀──────────────────────────────┤
         its after-write hook: funnel.push(shard, seq, lines) (then: to the driver) ◀────┘

A shard is `runner.drive` on an `InProcess`, as a run of the CLI is, with its ledger as the
records file: the same producer (names, repeats, --resume, --update's ETags), errors and
stats. The ledger is the shard's memory across tries. Ray runs a task again when its worker or
node dies; the new try scans the ledger and goes on from it: a line recorded in this run is
not fetched again (whatever its outcome), a URL recorded done in an earlier run neither (as
`--resume`: `records.is_done`). A repeat of a URL recorded by an earlier try is fetched once
more: its record carries an outcome, which no try keeps for the next. Every record is in the
ledger before it is pushed, and the funnel keeps a cursor per shard (how many ledger records
it has), so a try first replays the records the funnel lacks and every record reaches the
driver once. This module does not import Ray: it only awaits the funnel's methods, which
the driver hands it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from fetchcli import loop
from fetchcli.config import Settings
from fetchcli.errors import OutputError, UsageError
from fetchcli.executor import from_wall
from fetchcli.fingerprints import FingerprintSet
from fetchcli.manifests import Items, holds_rows, items_of
from fetchcli.models import Record
from fetchcli.names import Namer
from fetchcli.parallel.wire import WireJob
from fetchcli.pipeline import InProcess
from fetchcli.producer import line_key
from fetchcli.records import Etags, RecordLog, is_done, read_lines
from fetchcli.runner import drive, namer_for
from fetchcli.sources import Source, close_sources
from fetchcli.stats import RunStats

__all__ = ["Counters", "ShardResult", "ShardSpec", "run_shard"]

REPLAY_BATCH = 1000  # ledger lines per push when a try replays what the funnel lacks
MAX_BACKLOG = 2000  # records waiting for the ledger and the funnel, at most
REPORT_SECONDS = 0.5  # how often the counters reach the driver when no record does


class Counters(NamedTuple):
    """What the driver's display shows of a shard besides its records."""

    in_flight: int = 0
    retrying: int = 0
    retries: int = 0
    resumed: int = 0
    received: int = 0  # body bytes that arrived, as sent


class ShardResult(NamedTuple):
    """A finished shard's counts, this try's."""

    done: int
    ok: int
    failed: int
    resumed: int


@dataclass(frozen=True, slots=True)
class ShardSpec:
    """Everything one shard task needs; the same for every try (Ray passes it again)."""

    settings: Settings  # input.shard is this shard; no Ray, one process, its part of --rate
    sources: tuple[tuple[str, str], ...]  # (name as given, absolute path); () with shipped jobs
    ledger: str  # the shard's records file, absolute
    fresh: bool  # a new run (no --resume): the first try starts the ledger afresh
    deadline: float | None  # time.time() (executor.to_wall): the nodes' clocks differ


class Method(Protocol):
    def remote(self, *args: Any) -> Any: ...


class FunnelHandle(Protocol):
    """The driver's actor, as a task sees it (its methods are awaited through `.remote`)."""

    begin: Method
    started: Method
    push: Method
    report: Method


def run_shard(
    spec: ShardSpec, jobs: Sequence[WireJob] | None, etags: Etags | None, funnel: FunnelHandle
) -> ShardResult:
    """The Ray task: fetch the shard, from its ledger on; blocking (its own event loop, uvloop
    as in the CLI and the engines).

    `jobs` are the shard's share of the library's URLs (None: the task reads the lists);
    `etags` the ETags of the driver's records (--update)."""
    return loop.run(_run(spec, jobs, etags, funnel), os.environ)


async def _run(
    spec: ShardSpec, jobs: Sequence[WireJob] | None, etags: Etags | None, funnel: FunnelHandle
) -> ShardResult:
    settings = spec.settings
    shard = settings.input.shard
    assert shard is not None
    scan = await _begin(spec, funnel, shard.index)
    stats = RunStats()
    deadline_at = from_wall(spec.deadline)
    sources = [] if jobs is not None else await asyncio.to_thread(_open, spec.sources)
    items = _shipped(jobs) if jobs is not None else items_of(sources, settings.input.format)
    try:
        # The ledger is this shard's records file: each batch in it, then pushed to the funnel.
        ledger = await asyncio.to_thread(
            RecordLog.open,
            spec.ledger,
            append=True,
            after_write=_Push(funnel, shard.index, scan.count, stats),
            max_backlog=MAX_BACKLOG,
        )
        async with ledger:

            async def emit(record: Record) -> None:
                stats.add(record)
                await ledger.add(record)

            executor = InProcess(
                settings, stats, random=random.Random().random, deadline_at=deadline_at
            )
            async with _reporting(funnel, shard.index, stats):
                await drive(
                    executor,
                    items,
                    emit,
                    stats,
                    deadline_at=deadline_at,
                    dedupe=settings.input.dedupe,  # the shard's repeats: all are in it
                    namer=None if jobs is not None else _namer(spec),  # shipped jobs are named
                    shard=shard,
                    done=scan.done,
                    recorded=scan.recorded if len(scan.recorded) else None,
                    etags=etags,
                )
    finally:
        await asyncio.to_thread(close_sources, sources)
    return ShardResult(stats.done, stats.ok, stats.failed, stats.resumed)


async def _begin(spec: ShardSpec, funnel: FunnelHandle, index: int) -> _Scan:
    """Make the ledger ready (afresh on the run's first try), read it, and push the records
    an earlier try wrote and the funnel lacks."""
    cursor, start = await funnel.begin.remote(index)
    if start is None:  # this run's first try of the shard (or one that died before this)
        count = await asyncio.to_thread(_first_count, spec.ledger, spec.fresh)
        start = await funnel.started.remote(index, count)
    scan = await asyncio.to_thread(_Scan.read, spec.ledger, start)
    if scan.count < cursor:
        msg = (
            f"{spec.ledger} holds {scan.count} records, but the driver's records file already "
            f"has {cursor} of shard {spec.settings.input.shard}: was it removed? Run again "
            "without --resume"
        )
        raise OutputError(msg)
    await _replay(spec.ledger, cursor, scan.count, funnel, index)
    return scan


def counters(stats: RunStats) -> Counters:
    """The counters of a shard's stats, for its pushes and reports."""
    return Counters(stats.in_flight, stats.retrying, stats.retries, stats.resumed, stats.received)


@contextlib.asynccontextmanager
async def _reporting(funnel: FunnelHandle, index: int, stats: RunStats) -> AsyncIterator[None]:
    """The shard's counters to the driver now and then, while the body runs."""
    reporter = asyncio.create_task(_report(funnel, index, stats))
    try:
        yield
    finally:
        reporter.cancel()
        # Only the display's counters: a funnel that is gone stops the pushes, and the run.
        await asyncio.gather(reporter, return_exceptions=True)


async def _report(funnel: FunnelHandle, index: int, stats: RunStats) -> None:
    while True:
        await asyncio.sleep(REPORT_SECONDS)
        await funnel.report.remote(index, counters(stats))


class _Push:
    """The ledger's after-write hook: each batch, once in the ledger, to the funnel (in the
    ledger's writer thread, so records reach the driver in ledger order)."""

    def __init__(self, funnel: FunnelHandle, index: int, seq: int, stats: RunStats) -> None:
        self._funnel = funnel
        self._index = index
        self._seq = seq  # ledger records so far: the next batch's first number
        self._stats = stats

    def __call__(self, lines: list[str]) -> None:
        pushed = self._funnel.push.remote(self._index, self._seq, lines, counters(self._stats))
        pushed.future().result()  # the funnel waits while the driver is behind: so do we
        self._seq += len(lines)


def _first_count(path: str, fresh: bool) -> int:
    """The ledger's whole records when the run first meets it; a fresh run empties it."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if fresh:
            with open(path, "wb"):
                return 0
    except OSError as exc:
        msg = f"cannot write records to {path}: {exc.strerror or exc}"
        raise OutputError(msg) from exc
    return read_lines(path, _nothing, repair=True)


def _nothing(_line: bytes) -> None:
    pass


@dataclass(slots=True)
class _Scan:
    """What a ledger says: its whole records, the URLs done in earlier runs (as --resume
    reads them) and the lines recorded in this run (from record number `since` on)."""

    count: int
    done: FingerprintSet
    recorded: FingerprintSet

    @classmethod
    def read(cls, path: str, since: int | None) -> _Scan:
        """Read `path`; a last line cut short by a crash is cut off. Blocking."""
        scan = cls(0, FingerprintSet(), FingerprintSet())

        def visit(raw: bytes) -> None:
            scan._note(raw, this_run=since is not None and scan.count >= since)
            scan.count += 1

        read_lines(path, visit, repair=True)
        return scan

    def _note(self, raw: bytes, *, this_run: bool) -> None:
        try:
            record = json.loads(raw)
        except ValueError:
            return
        if not isinstance(record, dict):
            return
        url, source, line = record.get("url"), record.get("source"), record.get("line")
        if this_run:
            # This run's lines are left out by line; by URL, a repeat of one would get no record.
            if isinstance(source, str) and isinstance(line, int):
                self.recorded.add(line_key(source, line))
        elif is_done(record) and isinstance(url, str):
            self.done.add(url.encode())


async def _replay(path: str, first: int, end: int, funnel: FunnelHandle, index: int) -> None:
    """Push ledger records `first` to `end` (written by an earlier try, not yet delivered)."""
    if first >= end:
        return
    batches = await asyncio.to_thread(_read_records, path, first, end)
    for number, lines in batches:
        await funnel.push.remote(index, number, lines, Counters())


def _read_records(path: str, first: int, end: int) -> list[tuple[int, list[str]]]:
    batches: list[tuple[int, list[str]]] = []
    numbers = itertools.count()

    def visit(raw: bytes) -> None:
        number = next(numbers)
        if first <= number < end:
            if not batches or len(batches[-1][1]) >= REPLAY_BATCH:
                batches.append((number, []))
            batches[-1][1].append(raw.decode("utf-8", "surrogateescape").rstrip("\n"))

    read_lines(path, visit)
    return batches


async def _shipped(jobs: Sequence[WireJob]) -> Items:
    """The jobs the driver shipped (validated and named there), as items of their sources."""
    for start in range(0, len(jobs), REPLAY_BATCH):
        for source, group in itertools.groupby(jobs[start : start + REPLAY_BATCH], _source):
            yield source, [wire.to_job() for wire in group]


def _source(job: WireJob) -> str:
    return job.source


def _namer(spec: ShardSpec) -> Namer | None:
    """The shard's names, given as the CLI's run gives them (`runner.namer_for`)."""
    rows = holds_rows((name for name, _ in spec.sources), spec.settings.input.format)
    return namer_for(spec.settings.output, rows=rows)


def _open(paths: tuple[tuple[str, str], ...]) -> list[Source]:
    """Open the lists on this node; blocking."""
    sources: list[Source] = []
    for name, path in paths:
        try:
            sources.append(Source(name, open(path, "rb")))  # noqa: SIM115 - closed by read_lines
        except OSError as exc:
            for source in sources:
                source.stream.close()
            msg = f"cannot read {name} on this node ({path}): {exc.strerror or exc}"
            raise UsageError(msg) from exc
    return sources
