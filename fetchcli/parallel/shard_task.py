"""One shard of a `--ray` run, on a Ray worker: fetchcli's own in-process executor, with a ledger.

    begin ─▶ scan the ledger ─▶ replay what the funnel lacks ─▶ produce ─▶ InProcess ─▶ record
                                                                                         │
                 ledger (the shard's records file, written first) ◀──────────────────────┤
                 funnel.push(shard, seq, lines)  (then: to the driver) ◀─────────────────┘

The ledger is the shard's memory across tries. Ray runs a task again when its worker or
node dies; the new try scans the ledger and goes on from it: a line recorded in this run is
not fetched again (whatever its outcome), a URL recorded ok in an earlier run neither (as
`--resume`). A repeat of a URL recorded by an earlier try is fetched once more: its record
carries an outcome, which no try keeps for the next. Every record is in the ledger before it
is pushed, and the funnel keeps a
cursor per shard (how many ledger records it has), so a try first replays the records the
funnel lacks and every record reaches the driver once. This module does not import Ray: it
only awaits the funnel's methods, which the driver hands it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import json
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, NamedTuple, Protocol

from fetchcli.batching import Batcher
from fetchcli.config import Settings
from fetchcli.dedupe import Dedupe
from fetchcli.errors import OutputError, UsageError
from fetchcli.fingerprints import FingerprintSet
from fetchcli.kinds import Skipped
from fetchcli.manifests import Format, Items, format_for, items_of
from fetchcli.models import Job, Record
from fetchcli.names import Namer, Naming
from fetchcli.parallel.wire import WireJob
from fetchcli.pipeline import InProcess
from fetchcli.producer import produce
from fetchcli.sources import Source, parse_line
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
    deadline: float | None  # time.time() when the run ends: the nodes' clocks, not monotonic


class Method(Protocol):
    def remote(self, *args: Any) -> Any: ...


class Funnel(Protocol):
    """The driver's actor, as a task sees it (its methods are awaited through `.remote`)."""

    begin: Method
    started: Method
    push: Method
    report: Method


def run_shard(spec: ShardSpec, jobs: Sequence[WireJob] | None, funnel: Funnel) -> ShardResult:
    """The Ray task: fetch the shard, from its ledger on; blocking (its own event loop)."""
    return asyncio.run(_run(spec, jobs, funnel))


async def _run(spec: ShardSpec, jobs: Sequence[WireJob] | None, funnel: Funnel) -> ShardResult:
    shard = spec.settings.input.shard
    assert shard is not None
    cursor, start = await funnel.begin.remote(shard.index)
    if start is None:  # this run's first try of the shard (or one that died before this)
        count = await asyncio.to_thread(_first_count, spec.ledger, spec.fresh)
        start = await funnel.started.remote(shard.index, count)
    scan = await asyncio.to_thread(_Scan.read, spec.ledger, start)
    if scan.count < cursor:
        msg = (
            f"{spec.ledger} holds {scan.count} records, but the driver's records file already "
            f"has {cursor} of shard {shard}: was it removed? Run again without --resume"
        )
        raise OutputError(msg)
    await _replay(spec.ledger, cursor, scan.count, funnel, shard.index)
    stats = RunStats()
    deadline_at = None if spec.deadline is None else time.monotonic() + spec.deadline - time.time()
    with _open_ledger(spec.ledger) as stream:
        async with _Shipper(stream, spec.ledger, funnel, shard.index, scan.count, stats) as ship:

            async def emit(record: Record) -> None:
                stats.add(record)
                await ship.add(record)

            items = _shipped(jobs) if jobs is not None else _read(spec)
            if len(scan.recorded):
                items = _unrecorded(items, scan.recorded)
            # This shard's repeats, recorded with their first's outcome (all are in it).
            dedupe = Dedupe(emit) if spec.settings.input.dedupe else None
            producer = functools.partial(
                produce,
                items,
                emit=emit,
                stats=stats,
                dedupe=dedupe,
                done=scan.done,
                deadline_at=deadline_at,
                namer=None if jobs is not None else _namer(spec),  # shipped jobs are named
                shard=shard,
            )
            executor = InProcess(
                spec.settings, stats, random=random.Random().random, deadline_at=deadline_at
            )
            try:
                async with asyncio.TaskGroup() as group:
                    reporter = group.create_task(_report(funnel, shard.index, stats))
                    await executor.run(producer, emit if dedupe is None else dedupe.emit)
                    reporter.cancel()
            finally:
                if dedupe is not None:
                    await dedupe.aclose()
    return ShardResult(stats.done, stats.ok, stats.failed, stats.resumed)


def counters(stats: RunStats) -> Counters:
    """The counters of a shard's stats, for its pushes and reports."""
    return Counters(stats.in_flight, stats.retrying, stats.retries, stats.resumed, stats.received)


async def _report(funnel: Funnel, index: int, stats: RunStats) -> None:
    while True:
        await asyncio.sleep(REPORT_SECONDS)
        await funnel.report.remote(index, counters(stats))


class _Shipper:
    """Records to the ledger, then to the funnel: in order, a batch per thread hop."""

    def __init__(
        self,
        stream: BinaryIO,
        name: str,
        funnel: Funnel,
        index: int,
        seq: int,
        stats: RunStats,
    ) -> None:
        self._stream = stream
        self._name = name
        self._funnel = funnel
        self._index = index
        self._seq = seq  # ledger records so far: the next batch's first number
        self._stats = stats
        self._writer: Batcher[Record, None] = Batcher(self._ship)

    async def __aenter__(self) -> _Shipper:
        await self._writer.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._writer.__aexit__(*exc_info)

    async def add(self, record: Record) -> None:
        if self._writer.backlog < MAX_BACKLOG:
            self._writer.submit_nowait(record)
        else:  # the driver or the disk is behind: the workers wait, memory stays flat
            await self._writer.submit(record)

    def _ship(self, records: Sequence[Record]) -> list[Exception | None]:
        """In a thread: append the batch to the ledger, flushed; then hand it to the funnel."""
        lines = [record.to_json() for record in records]
        try:
            self._stream.write("".join(line + "\n" for line in lines).encode())
            self._stream.flush()
        except OSError as exc:
            msg = f"cannot write records to {self._name}: {exc.strerror or exc}"
            return [OutputError(msg)] * len(records)
        pushed = self._funnel.push.remote(self._index, self._seq, lines, counters(self._stats))
        pushed.future().result()  # the funnel waits while the driver is behind: so do we
        self._seq += len(lines)
        return [None] * len(records)


@contextlib.contextmanager
def _open_ledger(path: str) -> Any:
    try:
        stream = open(path, "ab", buffering=0)  # noqa: SIM115 - closed below
    except OSError as exc:
        msg = f"cannot write records to {path}: {exc.strerror or exc}"
        raise OutputError(msg) from exc
    with stream:
        yield stream


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
    return _Scan.read(path, None).count


@dataclass(slots=True)
class _Scan:
    """What a ledger says: its whole records, the URLs done ok in earlier runs (as --resume
    reads them) and the lines recorded in this run (from record number `since` on)."""

    count: int
    done: FingerprintSet
    recorded: FingerprintSet

    @classmethod
    def read(cls, path: str, since: int | None) -> _Scan:
        """Read `path`; a last line cut short by a crash is cut off. Blocking."""
        scan = cls(0, FingerprintSet(), FingerprintSet())
        try:
            stream = open(path, "r+b")  # noqa: SIM115
        except FileNotFoundError:
            return scan
        except OSError as exc:
            msg = f"cannot read records from {path}: {exc.strerror or exc}"
            raise OutputError(msg) from exc
        with stream:
            good_end = 0
            for raw in stream:
                if not raw.endswith(b"\n"):
                    break
                good_end += len(raw)
                scan._note(raw, this_run=since is not None and scan.count >= since)
                scan.count += 1
            stream.truncate(good_end)
        return scan

    def _note(self, raw: bytes, *, this_run: bool) -> None:
        try:
            record = json.loads(raw)
        except ValueError:
            return
        if not isinstance(record, dict):
            return
        url, source, line = record.get("url"), record.get("source"), record.get("line")
        if this_run and isinstance(source, str) and isinstance(line, int):
            self.recorded.add(_line_key(source, line))
        skipped = record.get("skipped")
        ok = record.get("ok") is True and skipped in (None, Skipped.EXISTS, Skipped.DUPLICATE)
        # This run's lines are left out by line; by URL, a repeat of one would get no record.
        if ok and isinstance(url, str) and not this_run:
            self.done.add(url.encode())


def _line_key(source: str, line: int) -> bytes:
    return b"%s\0%d" % (source.encode("utf-8", "surrogateescape"), line)


async def _replay(path: str, first: int, end: int, funnel: Funnel, index: int) -> None:
    """Push ledger records `first` to `end` (written by an earlier try, not yet delivered)."""
    if first >= end:
        return
    batches = await asyncio.to_thread(_read_records, path, first, end)
    for number, lines in batches:
        await funnel.push.remote(index, number, lines, Counters())


def _read_records(path: str, first: int, end: int) -> list[tuple[int, list[str]]]:
    batches: list[tuple[int, list[str]]] = []
    with open(path, "rb") as stream:
        for number, raw in enumerate(stream):
            if number >= end:
                break
            if number < first:
                continue
            if not batches or len(batches[-1][1]) >= REPLAY_BATCH:
                batches.append((number, []))
            batches[-1][1].append(raw.decode("utf-8", "surrogateescape").rstrip("\n"))
    return batches


async def _unrecorded(items: Items, recorded: FingerprintSet) -> Items:
    """A retry's rows: those recorded in this run are left out. A later repeat of one of
    their URLs is not: its record needs an outcome, and the first's is in no memory now,
    so the first the producer sees is fetched again."""
    async for source, batch in items:
        yield source, [item for item in batch if _line_key(item.source, item.line) not in recorded]


async def _shipped(jobs: Sequence[WireJob]) -> Items:
    """The jobs the driver shipped (validated and named there), as items of their sources."""
    for start in range(0, len(jobs), REPLAY_BATCH):
        for source, group in itertools.groupby(jobs[start : start + REPLAY_BATCH], _source):
            yield source, [_job(wire) for wire in group]


def _job(wire: WireJob) -> Job:
    job = parse_line(wire.source, wire.line, wire.url.encode("utf-8", "surrogateescape"))
    assert isinstance(job, Job), wire  # the driver validated it
    return dataclasses.replace(job, expect=wire.expect, relpath=wire.relpath)


def _source(job: WireJob) -> str:
    return job.source


def _read(spec: ShardSpec) -> Items:
    return items_of(_open(spec.sources), spec.settings.input.format)


def _namer(spec: ShardSpec) -> Namer | None:
    """The shard's names, given as the runner gives them (a host's names are all in its shard)."""
    output = spec.settings.output
    if not (output.save or output.skip_existing):
        return None
    fmt = spec.settings.input.format
    rows = any(format_for(name, fmt) is not Format.LINES for name, _ in spec.sources)
    return Namer(Naming(layout=output.layout, cut_dirs=output.cut_dirs), rows=rows)


def _open(paths: tuple[tuple[str, str], ...]) -> list[Source]:
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
