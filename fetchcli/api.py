"""The library API: `fetchcli.fetch(urls, **options)`, an async iterator of records.

    async for record in fetchcli.fetch(urls, concurrency=32, output_dir="out"):
        print(record.url, record.ok, record.status, record.path)

The options are the flags' (see `Settings.create`), checked by the same code; the records are
the JSONL records. The CLI is this same engine with a records file, a display and signal
handling around it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Mapping
from typing import Any

from fetchcli.config import Settings, option_types
from fetchcli.errors import UsageError
from fetchcli.launch import execute
from fetchcli.manifests import items_from
from fetchcli.models import Record
from fetchcli.stats import RunStats
from fetchcli.tree import check_output_dir

__all__ = ["fetch"]

CLI_ONLY = frozenset({"sources", "input_format", "jsonl", "resume", "quiet"})


Url = str | Mapping[str, Any]


async def fetch(
    urls: Iterable[Url] | AsyncIterable[Url], **options: Any
) -> AsyncGenerator[Record, None]:
    """Fetch `urls` concurrently and yield one `Record` per URL as each finishes.

    Each item is a URL, or a manifest row: a mapping with `url` and any of `path` (its name
    under `output_dir`), `sha256` and `size` (what the body must be); its other keys come
    back in the record's `meta`.

    Options are the keywords of `Settings.create`, the flags of `fetchcli get` (`per_host=4`
    for `--per-host 4`, `save=False` for `--no-save`, `follow_redirects=False` for
    `--no-follow`, `max_bytes="10M"`, `headers` a dict or a list of "Name: value"), but not
    the command line's own `jsonl`, `resume` and `quiet`. An unknown name, a wrong type or a
    bad value raises `UsageError`; a bad URL gets a record. It runs in the calling process
    unless `processes` asks for engine processes (`processes=0`: one per core, as the CLI),
    or `ray` for Ray tasks (`ray="local", shards=8`: the URLs are validated here and each
    task is shipped its share; see the README's "Scaling out").

    Leaving the loop early stops the fetching once the iterator is closed; use
    `contextlib.aclosing(fetch(...))` to make that immediate.
    """
    unknown = options.keys() - (option_types().keys() - CLI_ONLY)
    if unknown:
        msg = f"not an option of fetch(): {', '.join(sorted(unknown))}"
        raise UsageError(msg)
    settings = Settings.from_options(**{"processes": 1, **options})
    if settings.output.save:
        await asyncio.to_thread(check_output_dir, settings.output.output_dir)
    results: asyncio.Queue[Record] = asyncio.Queue(maxsize=2 * settings.limits.workers)
    stats = RunStats()

    async def emit(record: Record) -> None:
        stats.add(record)
        await results.put(record)  # a slow consumer slows the fetching: memory stays flat

    # Rows may name their files: then every name goes through the run's book. A list is
    # looked through at once; other iterables start the book at their first row path.
    rows = isinstance(urls, list | tuple) and any(isinstance(url, Mapping) for url in urls)
    engine = asyncio.create_task(
        execute(settings, items_from(urls), emit, stats, random=random.Random().random, rows=rows)
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
