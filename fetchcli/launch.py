"""Starts a run: the deadline fixed once, the executor chosen once, then `runner.drive`.

    execute() ─▶ InProcess        pipeline.py: bounded queue -> N workers, this event loop
              ├▶ EngineProcesses  parallel/coordinator.py: jobs dealt to engine processes
              └▶ RayShards        parallel/ray_shards.py: --ray, each shard a Ray task

Both the CLI (`session.py`) and the library (`api.py`) run `execute()`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from fetchcli.config import Limits, Settings
from fetchcli.errors import UsageError
from fetchcli.executor import Emit, Executor, deadline_after
from fetchcli.fingerprints import FingerprintSet
from fetchcli.manifests import Items
from fetchcli.records import Etags
from fetchcli.runner import drive, namer_for
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
    on_loaded: Callable[[], None] | None = None,
) -> None:
    """Fetch every row, handing each record to `emit`, on the executor the settings ask for.

    `done` holds the URLs an earlier run recorded done (--resume); `input_bytes` is the size
    of the input when known ahead, for the automatic choice of engine processes; `rows` says
    the input may hold manifest rows, whose paths may meet any other name; `etags` the ETags
    an earlier run recorded (--update); `on_loaded` is called once the executor's modules
    are imported, before the first job.
    """
    deadline_at = deadline_after(settings.timeouts.deadline)
    ray = settings.ray.address is not None
    if ray:
        executor = _ray(settings, stats, deadline_at, etags)
    else:
        executor = _choose(settings, stats, random, input_bytes, deadline_at)
    if on_loaded is not None:
        on_loaded()
    await drive(
        executor,
        items,
        emit,
        stats,
        deadline_at=deadline_at,
        # The executors' records come back here, so repeats are dealt with once, in this
        # process. With --ray each shard task does it for its share instead: a URL's repeats
        # are all in its shard, and jobs shipped to the tasks are all collected before any
        # record comes.
        dedupe=settings.input.dedupe and not ray,
        # Names are given here, on the producer's side: engines would not see each other's.
        namer=namer_for(settings.output, rows=rows),
        shard=settings.input.shard,
        done=done,
        etags=etags,
    )


def _choose(
    settings: Settings,
    stats: RunStats,
    random: Callable[[], float],
    input_bytes: int | None,
    deadline_at: float | None,
) -> Executor:
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


def _ray(
    settings: Settings, stats: RunStats, deadline_at: float | None, etags: Etags | None
) -> Executor:
    try:
        # Only with --ray: Ray takes a second or more to import.
        from fetchcli.parallel.ray_shards import RayShards
    except ImportError as exc:
        if exc.name is None or not exc.name.startswith("ray"):
            raise
        msg = "--ray needs Ray: pip install 'fetchcli[ray]'"
        raise UsageError(msg) from exc
    return RayShards(settings, stats, deadline_at=deadline_at, etags=etags)


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
