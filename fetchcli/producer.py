"""The producer: numbered input lines into jobs, and bad lines into records; repeats go to
the `Dedupe` (fetchcli/dedupe.py), which records them with their first's outcome."""

from __future__ import annotations

import asyncio

from fetchcli.dedupe import Dedupe
from fetchcli.executor import Emit, Handoff, loop_time
from fetchcli.models import Record
from fetchcli.sources import BadLine, FingerprintSet, Lines, parse_line
from fetchcli.stats import RunStats

__all__ = ["produce"]


async def produce(
    lines: Lines,
    handoff: Handoff,
    *,
    emit: Emit,
    stats: RunStats,
    dedupe: Dedupe | None,
    done: FingerprintSet | None,
    deadline_at: float | None,
) -> None:
    """Turn lines into jobs for `handoff` (through `dedupe`, unless None); bad lines into
    records at once. A line recorded ok in `done` (--resume) is skipped, repeats included.

    `deadline_at` is a `time.monotonic()` time: past it, reading stops.
    """
    try:
        async with asyncio.timeout_at(loop_time(deadline_at)):
            async for source, batch in lines:
                for number, raw in batch:
                    item = parse_line(source, number, raw)
                    if item is None:
                        continue
                    if isinstance(item, BadLine):
                        await emit(Record.invalid(item.source, item.line, item.text, item.reason))
                    elif done is not None and item.url.encode() in done:
                        stats.resumed += 1
                    elif dedupe is not None:
                        await dedupe.admit(item, handoff)
                    else:
                        await handoff(item)
                if dedupe is not None:
                    await dedupe.flush()
    except TimeoutError:
        pass  # the deadline: stop reading; what was handed off is recorded as unfinished
    if dedupe is not None:
        await dedupe.flush()  # the repeats read before the deadline get their records too
