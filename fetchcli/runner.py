"""Drives a run: the deadline fixed once, the executor chosen once, the producer started.

    execute() ─▶ producer (rows -> jobs; bad rows -> records at once)
                    │ Dedupe.admit(job): the first of each URL is handed off, repeats wait
                    ▼
               Executor.run ─▶ Dedupe.emit(record) ─▶ emit(record), then its repeats
                 ├── InProcess        pipeline.py: bounded queue -> N workers, this event loop
                 ├── EngineProcesses  parallel/coordinator.py: jobs dealt to engine processes
                 └── RayShards        parallel/ray_shards.py: --ray, each shard a Ray task

Both the CLI (`session.py`) and the library (`api.py`) run `execute()`; whatever happens,
the clock is stopped and a task group's error comes out as the error itself.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable

from fetchcli.config import Limits, Settings
from fetchcli.dedupe import Dedupe
from fetchcli.errors import UsageError, primary_error
from fetchcli.executor import Emit, Executor
from fetchcli.fingerprints import FingerprintSet
from fetchcli.manifests import Items
from fetchcli.names import Namer, Naming
from fetchcli.producer import produce
from fetchcli.records import Etags
from fetchcli.stats import RunStats

__all__ = ["engine_count", "execute"]

SMALL_INPUT_BYTES = 256 * 1024  # about 5,000 URLs: less is over before engines start
MAX_ENGINES = 4


async def execute(
    settings: Settings,
    items: Items,
    emit: Emit,
    stats: RunStats,
    *,
    random: Callable[[], float],
    done: FingerprintSet | None = None,
    input_bytes: int | None = None,
    rows: bool = False,
    etags: Etags | None = None,
) -> None:
    """Fetch every row, handing each record to `emit`, on the executor the settings ask for.

    `done` holds the URLs an earlier run recorded ok (--resume); `input_bytes` is the size of
    the input when known ahead, for the automatic choice of engine processes; `rows` says the
    input may hold manifest rows, whose paths may meet any other name; `etags` the ETags an
    earlier run recorded (--update).
    """
    deadline = settings.timeouts.deadline
    deadline_at = None if deadline is None else time.monotonic() + deadline
    # The executors' records come back here, so repeats are dealt with once, in this process.
    # With --ray each shard task does it for its share instead: a URL's repeats are all in
    # its shard, and jobs shipped to the tasks are all collected before any record comes.
    ray = settings.ray.address is not None
    dedupe = Dedupe(emit) if settings.input.dedupe and not ray else None
    output = settings.output
    # Names are given here, on the producer's side: engines would not see each other's.
    namer = None
    if output.save or output.skip_existing:
        namer = Namer(Naming(layout=output.layout, cut_dirs=output.cut_dirs), rows=rows)
    producer = functools.partial(
        produce,
        items,
        emit=emit,
        stats=stats,
        dedupe=dedupe,
        done=done,
        deadline_at=deadline_at,
        namer=namer,
        shard=settings.input.shard,
        etags=etags,
    )
    executor = _choose(settings, stats, random, input_bytes, deadline_at)
    try:
        await executor.run(producer, emit if dedupe is None else dedupe.emit)
    except BaseExceptionGroup as group:
        raise primary_error(group) from None
    finally:
        try:
            if dedupe is not None:
                await dedupe.aclose()
        finally:
            stats.finish()


def _choose(
    settings: Settings,
    stats: RunStats,
    random: Callable[[], float],
    input_bytes: int | None,
    deadline_at: float | None,
) -> Executor:
    if settings.ray.address is not None:
        return _ray(settings, stats, deadline_at)
    shard = settings.input.shard
    if shard is not None and input_bytes is not None:
        input_bytes //= shard.count  # this instance reads every line but fetches its share
    # Imported here, for the one chosen: a coordinator never loads the HTTP stack (aiohttp
    # alone is ~100 ms of start-up), and a run in one process never loads the wire.
    count = engine_count(settings.limits, input_bytes=input_bytes)
    if count > 1 and not settings.http.keep_cookies:  # a host's cookies live in one process
        from fetchcli.parallel.coordinator import EngineProcesses

        return EngineProcesses(settings, stats, count, deadline_at=deadline_at)
    from fetchcli.pipeline import InProcess

    return InProcess(settings, stats, random=random, deadline_at=deadline_at)


def _ray(settings: Settings, stats: RunStats, deadline_at: float | None) -> Executor:
    try:
        # Only with --ray: Ray takes a second or more to import.
        from fetchcli.parallel.ray_shards import RayShards
    except ImportError as exc:
        if exc.name is None or not exc.name.startswith("ray"):
            raise
        msg = "--ray needs Ray: pip install 'fetchcli[ray]'"
        raise UsageError(msg) from exc
    return RayShards(settings, stats, deadline_at=deadline_at)


def engine_count(limits: Limits, cpus: int | None = None, input_bytes: int | None = None) -> int:
    """How many engine processes to run: the flag, or when it is 0 ("auto") one per core.

    Auto stays at one when more cannot help: a few requests at a time, or a short list of
    files (`input_bytes`; None for stdin), which would be done before the engines had
    started. With `--per-host N` (a host's jobs all go to one engine, which has its share of
    `-c`), auto runs no more engines than leave each `N` of `-c`: one host alone can still
    have its N requests in flight.
    """
    if limits.processes:
        return max(1, min(limits.processes, limits.concurrency))
    if limits.concurrency < 8 or (input_bytes is not None and input_bytes < SMALL_INPUT_BYTES):
        return 1
    count = min(cpus or os.cpu_count() or 1, MAX_ENGINES, limits.concurrency)
    if limits.per_host:
        count = min(count, limits.concurrency // limits.per_host)
    return max(1, count)
