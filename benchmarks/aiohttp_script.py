"""Peer fetcher: the same script as httpx_script.py, written with one aiohttp.ClientSession.

A bounded queue feeds N worker tasks sharing one session (aiohttp's pool is fine shared; its
connector is capped at N connections). Bodies are streamed; with -o each one is written by one
asyncio.to_thread call per file.

With --per-host N the connector also holds at most N connections per host (aiohttp's
limit_per_host): a worker whose URL's host is at its limit waits for it, URL in hand.

Usage: python aiohttp_script.py LIST|- [-c 64] [-o DIR] [--per-host N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TextIO

import aiohttp

CHUNK = 64 * 1024


async def fetch(session: aiohttp.ClientSession, url: str, out_dir: Path | None) -> None:
    async with session.get(url) as response:
        response.raise_for_status()
        body = bytearray()
        async for chunk in response.content.iter_chunked(CHUNK):
            if out_dir is not None:
                body += chunk
    if out_dir is not None:
        name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "index.html"
        await asyncio.to_thread((out_dir / name).write_bytes, body)


async def worker(
    session: aiohttp.ClientSession, queue: asyncio.Queue[str | None], out_dir: Path | None
) -> int:
    failures = 0
    while (url := await queue.get()) is not None:
        try:
            await fetch(session, url, out_dir)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            failures += 1
            print(f"{url}: {exc!r}", file=sys.stderr)
    return failures


async def run(args: argparse.Namespace, lines: TextIO) -> int:
    queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=2 * args.concurrency)
    connector = aiohttp.TCPConnector(limit=args.concurrency, limit_per_host=args.per_host)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [
            asyncio.create_task(worker(session, queue, args.output))
            for _ in range(args.concurrency)
        ]
        for line in lines:
            if url := line.strip():
                await queue.put(url)
        for _ in tasks:
            await queue.put(None)
        return sum(await asyncio.gather(*tasks))


def main() -> None:
    parser = argparse.ArgumentParser(description="Fetch URLs concurrently with aiohttp.")
    parser.add_argument(
        "source", type=argparse.FileType(), help="file with one URL per line, or - for stdin"
    )
    parser.add_argument("-c", "--concurrency", type=int, default=64)
    parser.add_argument("-o", "--output", type=Path, help="save bodies here (default: discard)")
    parser.add_argument("--per-host", type=int, default=0, help="connections per host (0: any)")
    args = parser.parse_args()
    if args.output is not None:
        args.output.mkdir(parents=True, exist_ok=True)
    with args.source as lines:
        failures = asyncio.run(run(args, lines))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
