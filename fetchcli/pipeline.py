"""The async lifecycle of a run, in one place: open, produce, fetch, record, drain, clean up.

    sources ─▶ producer ─▶ bounded Queue ─▶ N workers ─▶ Fetcher ─▶ records
                                                              │
                                        JSONL batcher ◀───────┤
                                        display     ◀─────────┘

Every task is a child of one TaskGroup, so a failing child cancels its siblings. The
producer ends with one sentinel per worker. SIGINT/SIGTERM cancel the run's task; cleanup
(temporary files, the records already finished) runs in `finally` blocks and threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from fetchcli.batching import Batcher
from fetchcli.client import make_client
from fetchcli.config import Settings
from fetchcli.display import make_display
from fetchcli.environment import Environment
from fetchcli.errors import Interrupted, sole_error
from fetchcli.fetcher import Fetcher
from fetchcli.limits import Limiter
from fetchcli.models import Job, Record
from fetchcli.processes import engine_count, execute_in_processes
from fetchcli.producer import produce
from fetchcli.records import RecordLog, load_done
from fetchcli.sink import Saver
from fetchcli.sources import (
    FingerprintSet,
    Lines,
    close_sources,
    input_size,
    lines_of,
    open_sources,
)
from fetchcli.stats import RunStats

__all__ = ["execute", "run"]

QUEUE_PER_WORKER = 2


async def run(settings: Settings, env: Environment) -> RunStats:
    """The CLI's run: sources, records file, display and signals around `execute()`.

    Returns the stats; raises UsageError, OutputError or Interrupted.
    """
    async with contextlib.AsyncExitStack() as opened:
        sources = await asyncio.to_thread(
            open_sources, settings.input.sources, env.stdin, env.stdin_isatty
        )
        opened.push_async_callback(asyncio.to_thread, close_sources, sources)
        output = settings.output
        done = None
        if output.resume and output.jsonl:
            done = await asyncio.to_thread(load_done, output.jsonl)
        log = None
        if output.jsonl:
            log = await asyncio.to_thread(
                RecordLog.open, output.jsonl, append=output.resume, stdout=env.stdout
            )
            opened.push_async_callback(asyncio.to_thread, log.close)
        stats = RunStats()
        display = make_display(settings, env, stats)

        async def emit(record: Record) -> None:
            stats.add(record)
            if log is not None:
                await log.add(record)
            display.on_record(record)

        with _signals_cancel_this_task() as caught:
            try:
                try:
                    size = input_size(sources)  # None unless every source is a regular file
                    display.start([source.name for source in sources] if size else [])
                    writers = [log.writer] if log else []
                    count = engine_count(settings, input_bytes=size)
                    if count > 1:
                        await execute_in_processes(
                            settings,
                            count,
                            lines_of(sources),
                            emit,
                            stats,
                            done=done,
                            writers=writers,
                        )
                    else:
                        await execute(
                            settings,
                            lines_of(sources),
                            emit,
                            stats,
                            random=env.random.random,
                            done=done,
                            writers=writers,
                        )
                finally:
                    await display.aclose(interrupted=bool(caught))
            except asyncio.CancelledError:
                if not caught:
                    raise
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                raise Interrupted(caught[0]) from None
    return stats


async def execute(
    settings: Settings,
    lines: Lines,
    emit: Callable[[Record], Awaitable[None]],
    stats: RunStats,
    *,
    random: Callable[[], float],
    done: FingerprintSet | None = None,
    writers: Sequence[Batcher[Any, Any]] = (),
    limiter: Limiter | None = None,
) -> None:
    """Fetch every line, handing each record to `emit`: the engine of the CLI and the library.

    Owns the client, the output directory and every task; whatever happens, temporary files
    are gone when it returns.
    """
    saver = Saver(settings.output.output_dir, save=settings.output.save)
    try:
        async with make_client(settings) as client:
            limiter = limiter or Limiter(settings.limits)
            fetcher = Fetcher(client, settings, limiter, saver, stats, random)
            await _fetch_all(
                settings,
                lines,
                fetcher,
                [saver.small_files, saver.sizes, *writers],
                emit,
                stats,
                done,
            )
    except BaseExceptionGroup as group:
        raise sole_error(group) from None
    finally:
        stats.finish()
        # In a thread that a second Ctrl-C cannot stop: asyncio.run() waits for it.
        await asyncio.shield(asyncio.ensure_future(asyncio.to_thread(saver.sweep)))


async def _fetch_all(
    settings: Settings,
    lines: Lines,
    fetcher: Fetcher,
    writers: list[Batcher[Any, Any]],
    emit: Callable[[Record], Awaitable[None]],
    stats: RunStats,
    done: FingerprintSet | None,
) -> None:
    loop = asyncio.get_running_loop()
    deadline = None
    if settings.timeouts.deadline is not None:
        deadline = loop.time() + settings.timeouts.deadline
    workers = settings.limits.workers
    queue: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=QUEUE_PER_WORKER * workers)
    seen = FingerprintSet() if settings.input.dedupe else None
    async with asyncio.TaskGroup() as group:
        for writer in writers:
            group.create_task(writer.run())
        try:
            async with asyncio.TaskGroup() as work:
                work.create_task(
                    _feed_workers(lines, queue, workers, emit, stats, seen, done, deadline)
                )
                for _ in range(workers):
                    work.create_task(_consume(queue, fetcher, emit, deadline))
        finally:
            for writer in writers:
                writer.close()


async def _feed_workers(
    lines: Lines,
    queue: asyncio.Queue[Job | None],
    workers: int,
    emit: Callable[[Record], Awaitable[None]],
    stats: RunStats,
    seen: FingerprintSet | None,
    done: FingerprintSet | None,
    deadline: float | None,
) -> None:
    """The producer: every job into the bounded queue, then one sentinel per worker."""
    await produce(lines, queue.put, emit, stats, seen, done, deadline)
    for _ in range(workers):
        await queue.put(None)


async def _consume(
    queue: asyncio.Queue[Job | None],
    fetcher: Fetcher,
    emit: Callable[[Record], Awaitable[None]],
    deadline: float | None,
) -> None:
    """Fetch jobs from the queue until a sentinel arrives."""
    while (job := await queue.get()) is not None:
        await emit(await fetcher.fetch(job, deadline))


@contextlib.contextmanager
def _signals_cancel_this_task() -> Iterator[list[int]]:
    """On SIGINT or SIGTERM, cancel the current task; yield the list of signals caught."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    caught: list[int] = []

    def on_signal(signum: int) -> None:
        caught.append(signum)
        if task is not None:
            # A second signal cancels again: cleanup that waits on the network is cut short.
            task.cancel()

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except (NotImplementedError, RuntimeError, ValueError):
            continue  # not the main thread, or Windows: Ctrl-C still raises KeyboardInterrupt
        installed.append(signum)
    try:
        yield caught
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
            if caught:
                # The process is on its way out with 130/143; a late Ctrl-C must not kill it
                # with a traceback while the last thread hops (the sweep) finish.
                signal.signal(signum, signal.SIG_IGN)
