"""The library API: `fetchcli.fetch(urls, **options)`, an async iterator of records.

    async for record in fetchcli.fetch(urls, concurrency=32, output_dir="out"):
        print(record.url, record.ok, record.status, record.path)

The options are the flags' (see `Settings.create`); the records are the JSONL records. The
CLI is this same engine with a records file, a display and signal handling around it.
"""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import Any

from fetchcli.config import Settings
from fetchcli.errors import UsageError
from fetchcli.models import Record
from fetchcli.runner import execute
from fetchcli.sources import lines_from
from fetchcli.stats import RunStats

__all__ = ["fetch"]

CLI_ONLY = frozenset({"sources", "jsonl", "resume", "quiet", "debug"})
OPTIONS = frozenset(inspect.signature(Settings.create).parameters) - CLI_ONLY


async def fetch(urls: Iterable[str] | AsyncIterable[str], **options: Any) -> AsyncIterator[Record]:
    """Fetch `urls` concurrently and yield one `Record` per URL as each finishes.

    Options are the CLI flags as keyword arguments: `concurrency`, `workers`, `per_host`,
    `rate`, `timeout`, `connect_timeout`, `read_timeout`, `deadline`, `retries`, `backoff`,
    `backoff_max`, `output_dir`, `save`, `skip_existing`, `dedupe`, `headers` (a dict, or a
    list of "Name: value"), `user_agent`, `method`, `http2`, `proxy`, `insecure`, `max_redirects`,
    `follow_redirects`, `max_bytes`. Bad values raise `UsageError`; a bad URL gets a record.

    Leaving the loop early stops the fetching once the iterator is closed; use
    `contextlib.aclosing(fetch(...))` to make that immediate.
    """
    unknown = options.keys() - OPTIONS
    if unknown:
        msg = f"not an option of fetch(): {', '.join(sorted(unknown))}"
        raise UsageError(msg)
    headers = options.get("headers")
    if isinstance(headers, Mapping):
        options["headers"] = [f"{name}: {value}" for name, value in headers.items()]
    settings = Settings.create(**options)
    results: asyncio.Queue[Record] = asyncio.Queue(maxsize=2 * settings.limits.workers)
    stats = RunStats()

    async def emit(record: Record) -> None:
        stats.add(record)
        await results.put(record)  # a slow consumer slows the fetching: memory stays flat

    engine = asyncio.create_task(
        execute(settings, lines_from(urls), emit, stats, random=random.Random().random)
    )
    getter: asyncio.Future[Record] | None = None
    try:
        while not (engine.done() and results.empty()):
            getter = asyncio.ensure_future(results.get())
            await asyncio.wait({getter, engine}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
            getter.cancel()  # done: a no-op; else the engine ended first (or we are cancelled)
        engine.result()  # the engine's error, if it failed
    finally:
        if getter is not None:
            getter.cancel()
        if not engine.done():
            engine.cancel()
        await asyncio.gather(engine, return_exceptions=True)
