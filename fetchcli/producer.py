"""The producer: numbered input lines into jobs, and bad lines and repeats into records."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fetchcli.models import Job, Record
from fetchcli.sources import BadLine, FingerprintSet, Lines, parse_line, url_key
from fetchcli.stats import RunStats

__all__ = ["produce"]


async def produce(
    lines: Lines,
    handoff: Callable[[Job], Awaitable[None]],
    emit: Callable[[Record], Awaitable[None]],
    stats: RunStats,
    seen: FingerprintSet | None,
    done: FingerprintSet | None,
    deadline: float | None,
) -> None:
    """Turn lines into jobs for `handoff`; bad lines and duplicates into records at once."""
    try:
        async with asyncio.timeout_at(deadline):
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
                        await handoff(item)
    except TimeoutError:
        pass  # the deadline: stop reading; what was handed off is recorded as unfinished
