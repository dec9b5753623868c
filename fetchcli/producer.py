"""The producer: numbered input lines into jobs, and bad lines and repeats into records."""

from __future__ import annotations

import asyncio
import dataclasses

from fetchcli.executor import Emit, Handoff, loop_time
from fetchcli.models import Record
from fetchcli.records import Etags
from fetchcli.sources import BadLine, FingerprintSet, Lines, parse_line, url_key
from fetchcli.stats import RunStats

__all__ = ["produce"]


async def produce(
    lines: Lines,
    handoff: Handoff,
    *,
    emit: Emit,
    stats: RunStats,
    seen: FingerprintSet | None,
    done: FingerprintSet | None,
    deadline_at: float | None,
    etags: Etags | None = None,
) -> None:
    """Turn lines into jobs for `handoff`; bad lines and duplicates into records at once.

    `deadline_at` is a `time.monotonic()` time: past it, reading stops. `etags` (--update)
    gives each job the ETag an earlier run recorded for it.
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
                    elif seen is not None and not seen.add(url_key(item.parsed)):
                        await emit(Record.duplicate(item))
                    else:
                        if etags is not None and (etag := etags.get(item.url)) is not None:
                            item = dataclasses.replace(item, etag=etag)
                        await handoff(item)
    except TimeoutError:
        pass  # the deadline: stop reading; what was handed off is recorded as unfinished
