"""Baseline fetcher: the asyncio + httpx script a typical user would write.

A bounded queue feeds N worker tasks; each worker owns one httpx.AsyncClient (one client shared
by all workers stalls in httpcore's pool, encode/httpcore#822: `--shared-client` shows that).
The clients share one SSL context: httpx builds a new one per client otherwise, ~25 ms each.
Bodies are streamed; with -o each one is written by one asyncio.to_thread call per file.

Usage: python httpx_script.py LIST|- [-c 64] [-o DIR] [--shared-client]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path
from typing import TextIO

import httpx

TIMEOUT = 60.0  # not httpx's 5 s default: a stalled shared pool would fail instead of finishing
SSL_CONTEXT = httpx.create_ssl_context()


async def fetch(client: httpx.AsyncClient, url: str, out_dir: Path | None) -> None:
    async with client.stream("GET", url) as response:
        response.raise_for_status()
        body = bytearray()
        async for chunk in response.aiter_bytes():
            if out_dir is not None:
                body += chunk
    if out_dir is not None:
        name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "index.html"
        await asyncio.to_thread((out_dir / name).write_bytes, body)


async def drain(
    client: httpx.AsyncClient, queue: asyncio.Queue[str | None], out: Path | None
) -> int:
    failures = 0
    while (url := await queue.get()) is not None:
        try:
            await fetch(client, url, out)
        except (httpx.HTTPError, OSError) as exc:
            failures += 1
            print(f"{url}: {exc!r}", file=sys.stderr)
    return failures


async def worker(
    shared: httpx.AsyncClient | None, queue: asyncio.Queue[str | None], out: Path | None
) -> int:
    if shared is not None:
        return await drain(shared, queue, out)
    async with httpx.AsyncClient(timeout=TIMEOUT, verify=SSL_CONTEXT) as client:
        return await drain(client, queue, out)


async def run(args: argparse.Namespace, lines: TextIO) -> int:
    queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=2 * args.concurrency)
    async with contextlib.AsyncExitStack() as stack:
        shared = None
        if args.shared_client:
            limits = httpx.Limits(max_connections=args.concurrency)
            client = httpx.AsyncClient(timeout=TIMEOUT, verify=SSL_CONTEXT, limits=limits)
            shared = await stack.enter_async_context(client)
        tasks = [
            asyncio.create_task(worker(shared, queue, args.output)) for _ in range(args.concurrency)
        ]
        for line in lines:
            if url := line.strip():
                await queue.put(url)
        for _ in tasks:
            await queue.put(None)
        return sum(await asyncio.gather(*tasks))


def main() -> None:
    parser = argparse.ArgumentParser(description="Fetch URLs concurrently with httpx.")
    parser.add_argument(
        "source", type=argparse.FileType(), help="file with one URL per line, or - for stdin"
    )
    parser.add_argument("-c", "--concurrency", type=int, default=64)
    parser.add_argument("-o", "--output", type=Path, help="save bodies here (default: discard)")
    parser.add_argument("--shared-client", action="store_true", help="one client for all workers")
    args = parser.parse_args()
    if args.output is not None:
        args.output.mkdir(parents=True, exist_ok=True)
    with args.source as lines:
        failures = asyncio.run(run(args, lines))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
