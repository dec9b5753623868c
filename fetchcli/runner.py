"""The lifecycle of a run, in one place: producer, repeats, executor, errors, the clock.

    drive() ─▶ producer (rows -> jobs, named; bad rows -> records at once)
                  │ Dedupe.admit(job): the first of each URL is handed off, repeats wait
                  ▼
             Executor.run ─▶ Dedupe.emit(record) ─▶ emit(record), then its repeats

The CLI (`session.py`) and the library (`api.py`) drive the executor `launch.py` chose, with
the records file or the caller's queue as `emit`; each `--ray` shard task drives its own
`InProcess` the same way, with its ledger as `emit` (parallel/shard_task.py). Whatever
happens, the repeats' store is closed, the clock stopped, and a task group's error comes out
as the error itself.
"""

from __future__ import annotations

import functools

from fetchcli.config import OutputOptions
from fetchcli.dedupe import Dedupe
from fetchcli.errors import primary_error
from fetchcli.executor import Emit, Executor
from fetchcli.fingerprints import FingerprintSet
from fetchcli.manifests import Items
from fetchcli.names import Namer, Naming
from fetchcli.producer import produce
from fetchcli.records import Etags
from fetchcli.shard import Shard
from fetchcli.stats import RunStats

__all__ = ["drive", "namer_for"]


async def drive(
    executor: Executor,
    items: Items,
    emit: Emit,
    stats: RunStats,
    *,
    deadline_at: float | None,
    dedupe: bool,
    namer: Namer | None,
    shard: Shard | None = None,
    done: FingerprintSet | None = None,
    recorded: FingerprintSet | None = None,
    etags: Etags | None = None,
) -> None:
    """Fetch every row of `items` on `executor`, handing each record to `emit`.

    `deadline_at` is a `time.monotonic()` time; `dedupe` records each repeat with its first's
    outcome; `namer` names the jobs (None: bodies are not saved); with `shard`, only its share
    of the rows is fetched. `done` holds the URLs an earlier run recorded done (--resume),
    `recorded` the lines this run has records of already (a retried `--ray` shard), `etags`
    the ETags an earlier run recorded (--update).
    """
    repeats = Dedupe(emit) if dedupe else None
    producer = functools.partial(
        produce,
        items,
        emit=emit,
        stats=stats,
        dedupe=repeats,
        done=done,
        recorded=recorded,
        deadline_at=deadline_at,
        namer=namer,
        shard=shard,
        etags=etags,
    )
    try:
        await executor.run(producer, emit if repeats is None else repeats.emit)
    except BaseExceptionGroup as group:
        raise primary_error(group) from None
    finally:
        try:
            if repeats is not None:
                await repeats.aclose()
        finally:
            stats.finish()


def namer_for(output: OutputOptions, *, rows: bool) -> Namer | None:
    """The run's names when bodies are saved (or looked for); `rows`: the input may hold
    manifest rows, whose paths may meet any other name."""
    if not (output.save or output.skip_existing):
        return None
    return Namer(Naming(layout=output.layout, cut_dirs=output.cut_dirs), rows=rows)
