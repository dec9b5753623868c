"""The CLI's run: sources, the records file, the display and signals around `execute()`.

    open sources ─▶ records file (async with) ─▶ display ─▶ execute() ─▶ summary
                         ▲                          ▲
                         └──────── emit(record) ────┘

SIGINT/SIGTERM cancel this task; the executor cleans up on its way out (temporary files, the
records already finished), and the run ends with `Interrupted`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

from fetchcli.config import Settings
from fetchcli.display import make_display
from fetchcli.environment import Environment
from fetchcli.errors import Interrupted, ReaderGone, UsageError
from fetchcli.launch import execute
from fetchcli.loop import spare_collector
from fetchcli.manifests import holds_rows, items_of
from fetchcli.models import Record
from fetchcli.records import RecordLog, load_done, load_etags
from fetchcli.sources import close_sources, input_size, open_sources
from fetchcli.stats import RunStats
from fetchcli.tree import check_output_dir

__all__ = ["run"]


async def run(settings: Settings, env: Environment) -> RunStats:
    """Run `fetchcli get` as the settings say; return the stats.

    Raises UsageError, OutputError (and its ReaderGone) or Interrupted.
    """
    output = settings.output
    stats = RunStats()
    async with contextlib.AsyncExitStack() as opened:
        # Refused before anything is written: records into a source, an unusable -o.
        sources = await asyncio.to_thread(
            open_sources,
            settings.input.sources,
            env.stdin,
            records=output.jsonl,
            stdout=env.stdout,
        )
        opened.push_async_callback(asyncio.to_thread, close_sources, sources)
        if output.save:
            await asyncio.to_thread(check_output_dir, output.output_dir)
        done = etags = None
        if output.skips_done and output.jsonl and settings.ray.address is None:
            # (With --ray each shard task goes on from its own ledger instead.)
            done = await asyncio.to_thread(load_done, output.jsonl)
        if output.update and output.jsonl and output.jsonl != "-":
            # Read before the file is opened for writing (without --resume it starts afresh).
            etags = await asyncio.to_thread(load_etags, output.jsonl)
        log = None
        if output.jsonl:
            log = await asyncio.to_thread(
                RecordLog.open, output.jsonl, append=output.resume, stdout=env.stdout
            )
            await opened.enter_async_context(log)
        display = make_display(settings, env, stats)

        async def emit(record: Record) -> None:
            stats.add(record)
            if log is not None:
                await log.add(record)
            display.on_record(record)

        with _signals_cancel_this_task() as caught:
            try:
                summary = True
                try:
                    size = input_size(sources)  # None unless every source is a regular file
                    fmt = settings.input.format
                    rows = holds_rows((source.name for source in sources), fmt)
                    plain = not rows and not any(s.name.lower().endswith(".gz") for s in sources)
                    # A total only from plain lists: a header or gzip would make it wrong, and
                    # so would a --shard instance, which fetches a share of the lines.
                    counted = size and plain and settings.input.shard is None
                    display.start([source.name for source in sources] if counted else [])
                    await execute(
                        settings,
                        items_of(sources, fmt),
                        emit,
                        stats,
                        random=env.random.random,
                        done=done,
                        input_bytes=size,
                        rows=rows,  # row paths may meet any name: every name is booked
                        etags=etags,
                        on_loaded=spare_collector if env.own_process else None,
                    )
                except ReaderGone:
                    summary = False  # as `yes | head`: the reader has what it wanted, quietly
                    raise
                except UsageError:
                    summary = False  # a source that cannot be read (a header with no url)
                    raise
                finally:
                    await display.aclose(interrupted=bool(caught), summary=summary)
            except asyncio.CancelledError:
                if not caught:
                    raise
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                raise Interrupted(caught[0]) from None
    return stats


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
