"""The producer: rows into jobs (named), and bad rows into records; repeats go to the
`Dedupe` (fetchcli/dedupe.py), which records each with its first's outcome."""

from __future__ import annotations

import asyncio
import dataclasses

from fetchcli.dedupe import Dedupe
from fetchcli.executor import Emit, Handoff, loop_time
from fetchcli.fingerprints import FingerprintSet
from fetchcli.manifests import Items
from fetchcli.models import BadLine, Job, Record, shown_url
from fetchcli.names import Namer
from fetchcli.records import Etags
from fetchcli.shard import Shard
from fetchcli.stats import RunStats

__all__ = ["line_key", "produce"]


async def produce(
    items: Items,
    handoff: Handoff,
    *,
    emit: Emit,
    stats: RunStats,
    dedupe: Dedupe | None,
    done: FingerprintSet | None,
    deadline_at: float | None,
    namer: Namer | None = None,
    shard: Shard | None = None,
    etags: Etags | None = None,
    recorded: FingerprintSet | None = None,
) -> None:
    """Turn rows into jobs for `handoff` (through `dedupe`, unless None); bad rows into
    records at once. A row recorded done in `done` (--resume) is skipped, repeats included.

    `namer` names each job here, where every job passes (None: bodies are not saved);
    `deadline_at` is a `time.monotonic()` time: past it, reading stops. With `shard`, the
    rows of other shards get nothing but their names: no record, no count, no place in
    `dedupe`. A line in `recorded` (`line_key`: a retried `--ray` shard's lines recorded
    already) is named and passed over. `etags` (--update) gives each job the ETag an earlier
    run recorded for it.
    """
    try:
        async with asyncio.timeout_at(loop_time(deadline_at)):
            async for _source, batch in items:
                for item in batch:
                    if isinstance(item, BadLine):
                        if _ours(item, shard, recorded):
                            await emit(
                                Record.invalid(item.source, item.line, item.text, item.reason)
                            )
                        continue
                    if namer is not None:
                        # Every row, in input order, before the shard's and the resume's checks:
                        # every shard (and every try of one) gives the names one run would, so
                        # no two URLs meet on a name, and one taken in an earlier run stays taken.
                        item = namer.name(item)
                    if not _ours(item, shard, recorded):
                        continue
                    if done is not None and shown_url(item.url).encode() in done:
                        stats.resumed += 1
                        continue
                    etag = etags.get(shown_url(item.url)) if etags is not None else None
                    if etag is not None:
                        item = dataclasses.replace(item, etag=etag)
                    if dedupe is not None:
                        await dedupe.admit(item, handoff)
                    else:
                        await handoff(item)
                if dedupe is not None:
                    await dedupe.flush()
    except TimeoutError:
        pass  # the deadline: stop reading; what was handed off is recorded as unfinished
    if dedupe is not None:
        await dedupe.flush()  # the repeats read before the deadline get their records too


def line_key(source: str, line: int) -> bytes:
    """A line of the input, as `produce`'s `recorded` holds it."""
    return b"%s\0%d" % (source.encode("utf-8", "surrogateescape"), line)


def _ours(item: Job | BadLine, shard: Shard | None, recorded: FingerprintSet | None) -> bool:
    if shard is not None and not shard.belongs(item):
        return False  # a row of another shard
    return recorded is None or line_key(item.source, item.line) not in recorded
