"""The Ray executor (`--ray ADDRESS --shards N`): each shard a Ray task, records back here.

    RayShards.run ─▶ N tasks: shard_task.run_shard (InProcess on a worker, its own ledger)
         ▲                                   │ push(shard, seq, lines) after the ledger write
         └── take() ── Funnel actor, on this node ◀┘

Shards are cut as `--shard K/N` cuts them (by host, or `--shard-by url`), so per-host limits
hold across the cluster and `--rate` is split evenly between the tasks. With list files, every
task reads the list itself (at the same path on every node, a shared filesystem) and this
process never does; a list from the library is validated here and each task is shipped its
share (through Ray's object store: no shared filesystem needed for it). A task whose worker
or node dies is run again by Ray and goes on from its ledger (shard_task.py). A retried
generator task would drop as many yields as its first try had delivered, which is why the
records come through an actor that keeps a cursor per shard rather than as a generator.
Ledgers live in `<--jsonl>.shards/` (else `<-o>/.fetchcli-shards/`), bodies under `-o`:
both are written by the nodes themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import ray
import ray.exceptions
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from fetchcli.config import RayOptions, Settings
from fetchcli.errors import FetchcliError, IncompleteRun, UsageError, primary_error
from fetchcli.executor import Emit, Produce, to_wall
from fetchcli.kinds import ErrorKind
from fetchcli.models import BadLine, Job, Record
from fetchcli.parallel.shard_task import Counters, ShardResult, ShardSpec, run_shard
from fetchcli.parallel.wire import WireJob
from fetchcli.records import Etags, read_lines
from fetchcli.shard import Shard
from fetchcli.sources import parse_line
from fetchcli.stats import RunStats

__all__ = ["Funnel", "RayShards"]

TASK_RETRIES = 3  # Ray's default: a shard's worker may die three times
FUNNEL_LIMIT = 10_000  # records held by the funnel at most; pushes wait beyond it
TAKE_SECONDS = 0.25  # a take returns this soon even empty, with the shards' counters
SHARD_DIR = ".fetchcli-shards"  # under -o, when there is no --jsonl file to put them beside


class Funnel:
    """The records of every shard on their way to the driver, each exactly once.

    `cursor[k]` counts the ledger records of shard k accepted so far; a push of records
    the funnel has (a try that replays its ledger, a late push of a dead one) is cut to
    what is new. `start[k]` is the ledger's length when this run first met it: records
    from there on are this run's.
    """

    def __init__(self, cursors: dict[int, int]) -> None:
        self._cursor = dict(cursors)
        self._start: dict[int, int] = {}
        self._queue: list[str] = []
        self._counters: dict[int, Counters] = {}
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._closed = False

    async def begin(self, shard: int) -> tuple[int, int | None]:
        """A try starts: the records delivered so far, and where this run's records start."""
        return self._cursor.get(shard, 0), self._start.get(shard)

    async def started(self, shard: int, count: int) -> int:
        """The first try has made its ledger ready with `count` records: they are earlier runs'."""
        return self._start.setdefault(shard, count)

    async def push(self, shard: int, first: int, lines: list[str], counters: Counters) -> None:
        """Records `first`, `first + 1` ... of shard's ledger; waits while the driver is behind."""
        while len(self._queue) >= FUNNEL_LIMIT:
            self._room.clear()
            await self._room.wait()
        cursor = self._cursor.get(shard, 0)
        if first > cursor:
            msg = f"shard {shard}: records {cursor} to {first - 1} were never pushed"
            raise IncompleteRun(msg)
        self._queue.extend(lines[cursor - first :])
        self._cursor[shard] = max(cursor, first + len(lines))
        await self.report(shard, counters)

    async def report(self, shard: int, counters: Counters) -> None:
        """What a shard has in flight and retrying, for the driver's display."""
        self._counters[shard] = counters
        self._arrived.set()

    async def take(self) -> tuple[list[str], dict[int, Counters]] | None:
        """What arrived (waiting a little for something), or None once closed and drained."""
        if not self._queue and not self._closed:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), TAKE_SECONDS)
        if self._closed and not self._queue:
            return None
        lines, self._queue = self._queue, []
        self._room.set()
        return lines, dict(self._counters)

    async def close(self) -> None:
        """Every task has returned: `take` gives None once the rest is taken."""
        self._closed = True
        self._arrived.set()


class RayShards:
    """Fetches on a Ray cluster, `--shards` tasks; the records come to `emit` here."""

    def __init__(
        self,
        settings: Settings,
        stats: RunStats,
        *,
        deadline_at: float | None,
        etags: Etags | None = None,
    ) -> None:
        self._settings = settings
        self._stats = stats
        self._deadline = to_wall(deadline_at)  # the nodes' monotonic clocks are not this one's
        self._etags = etags  # --update: the ETags of this process's records, for every task
        # List files are read by the tasks; the library's URLs (no files) are shipped to them.
        self._ship = "-" in settings.input.sources

    async def run(self, produce: Produce, emit: Emit) -> None:
        """Connect (or start a local cluster), run the shards, and stop what was started.

        With list files the tasks run the producer's work themselves, so `produce` is not
        called; with shipped URLs it is, here, and each job goes to its shard.
        """
        options = self._settings.ray
        assert options.address is not None
        started = await asyncio.to_thread(_connect, options.address)
        try:
            count = options.shards or await asyncio.to_thread(_cluster_cpus)
            split = Shard(0, count, options.shard_by)
            jobs = await _collect(produce, split) if self._ship else None
            cursors: dict[int, int] = {}
            if self._settings.output.resume and self._settings.output.jsonl and not self._ship:
                cursors = await asyncio.to_thread(
                    _delivered, self._settings.output.jsonl, count, options
                )
            await self._run_tasks(count, jobs, cursors, emit)
        finally:
            if started:
                await asyncio.to_thread(ray.shutdown)

    async def _run_tasks(
        self, count: int, jobs: list[list[WireJob]] | None, cursors: dict[int, int], emit: Emit
    ) -> None:
        here = ray.get_runtime_context().get_node_id()
        funnel: Any = (
            ray.remote(Funnel)
            .options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(here, False))
            .remote(cursors)
        )
        task: Any = ray.remote(run_shard).options(num_cpus=1, max_retries=TASK_RETRIES)
        # Put once, read by every task (each looks up its own URLs in it).
        etags = None if self._etags is None else await asyncio.to_thread(ray.put, self._etags)
        refs = [
            task.remote(self._spec(k, count), None if jobs is None else jobs[k], etags, funnel)
            for k in range(count)
        ]
        lost: list[str] = []
        finished = False
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._receive(funnel, emit, count))
                waiters = [
                    group.create_task(self._wait(f"{k}/{count}", ref, lost))
                    for k, ref in enumerate(refs)
                ]
                results = [await waiter for waiter in waiters]
                await funnel.close.remote()
            finished = True
        finally:
            if not finished:  # cancelled, or a task failed: stop the others (no retries)
                for ref in refs:
                    ray.cancel(ref, force=True)
            ray.kill(funnel)
        self._stats.resumed = sum(result.resumed for result in results if result is not None)
        if lost:
            msg = (
                f"{len(lost)} of {count} shards were lost, their records are not complete: "
                f"{'; '.join(lost[:3])}{' ...' if len(lost) > 3 else ''}"
            )
            raise IncompleteRun(msg)

    async def _wait(self, name: str, ref: Any, lost: list[str]) -> ShardResult | None:
        try:
            result: ShardResult = await ref
        except ray.exceptions.RayTaskError as exc:  # the task raised: a retry would too
            raise _cause(name, exc) from exc
        except ray.exceptions.RayError as exc:  # its worker or node died more than retried
            lost.append(f"shard {name}: {_first_line(exc)}")
            return None
        return result

    async def _receive(self, funnel: Any, emit: Emit, count: int) -> None:
        shards = [Counters()] * count
        stats = self._stats
        while (taken := await funnel.take.remote()) is not None:
            lines, reports = taken
            for line in lines:
                await emit(Record.from_json(line))
            for index, counters in reports.items():
                shards[index] = counters
            stats.in_flight = sum(shard.in_flight for shard in shards)
            stats.retrying = sum(shard.retrying for shard in shards)
            stats.retries = sum(shard.retries for shard in shards)
            stats.resumed = sum(shard.resumed for shard in shards)
            stats.received = sum(shard.received for shard in shards)

    def _spec(self, index: int, count: int) -> ShardSpec:
        """Shard `index`'s task: the driver's settings with its share, paths made absolute."""
        settings = self._settings
        output, limits = settings.output, settings.limits
        if output.jsonl and output.jsonl != "-":
            ledgers = Path(output.jsonl + ".shards")
        else:
            ledgers = Path(output.output_dir) / SHARD_DIR
        shard = Shard(index, count, settings.ray.shard_by)
        sources = () if self._ship else settings.input.sources
        own = dataclasses.replace(
            settings,
            input=dataclasses.replace(settings.input, sources=sources, shard=shard),
            limits=dataclasses.replace(limits, processes=1, rate=limits.rate / count),
            output=dataclasses.replace(
                output, output_dir=Path(output.output_dir).absolute(), jsonl=None, resume=False
            ),
            ray=RayOptions(),
        )
        return ShardSpec(
            settings=own,
            sources=tuple((name, os.path.abspath(name)) for name in sources),
            ledger=str(ledgers.absolute() / f"shard-{index}-of-{count}.jsonl"),
            fresh=not output.resume,
            deadline=self._deadline,
        )


def _connect(address: str) -> bool:
    """Connect to the cluster, or start a local one; True when this call started Ray here.

    A process that has called `ray.init()` itself keeps its connection, whatever the address.
    """
    if ray.is_initialized():
        return False
    quiet: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address == "local":
        # Never `ray.init()` with no address: it attaches to a dead cluster's leftovers and hangs.
        quiet["include_dashboard"] = False
    try:
        ray.init(address=address, **quiet)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        msg = f"--ray {address}: cannot connect to the cluster: {_first_line(exc)}"
        raise UsageError(msg) from exc
    return True


def _cluster_cpus() -> int:
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return max(1, int(resources.get("CPU", 1)))


async def _collect(produce: Produce, split: Shard) -> list[list[WireJob]]:
    """The library's jobs, validated and deduplicated here, sorted into their shards."""
    jobs: list[list[WireJob]] = [[] for _ in range(split.count)]

    async def handoff(job: Job) -> None:
        jobs[split.share(job)].append(WireJob.of(job))

    await produce(handoff)
    return jobs


def _delivered(path: str, count: int, options: RayOptions) -> dict[int, int]:
    """--resume: how many records of each shard the driver's records file has. They are the
    first records of that shard's ledger, in order, as the funnel delivered them."""
    split = Shard(0, count, options.shard_by)
    cursors: dict[int, int] = {}

    def visit(raw: bytes) -> None:
        try:
            record = Record.from_json(raw)
        except ValueError:  # not a record: none of ours
            return
        item: Job | BadLine | None = BadLine(record.source, record.line, "", "")
        if record.error_kind != ErrorKind.INVALID_URL:
            item = parse_line(record.source, record.line, record.url.encode()) or item
        assert item is not None
        index = split.share(item)
        cursors[index] = cursors.get(index, 0) + 1

    read_lines(path, visit)
    return cursors


def _cause(name: str, error: ray.exceptions.RayTaskError) -> FetchcliError:
    """The error a task raised, as the run's: ours as it is, any other as an IncompleteRun
    that says which shard (with --debug, the task's traceback follows)."""
    cause = error.cause
    if isinstance(cause, BaseExceptionGroup):
        cause = primary_error(cause)
    if isinstance(cause, FetchcliError):
        return cause
    return IncompleteRun(f"shard {name} failed: {type(cause).__name__}: {cause}")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
