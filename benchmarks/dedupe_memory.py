"""A long list with many repeats through the Dedupe: lines per second, and the peak memory.

    python benchmarks/dedupe_memory.py                    # 1,000,000 lines, half repeats
    python benchmarks/dedupe_memory.py --lines 3000000 --repeats 0.3

No network: the firsts "finish" in order as a window of `--in-flight` fills, with records
the size of real ones; every repeat names a URL from anywhere earlier in the list, so most
outcomes come back from disk. What grows with the list is the FingerprintSet (16-32 bytes
a URL) and the sqlite file; the records in memory and the repeats held stay bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import random
import resource
import time

from fetchcli.dedupe import Dedupe
from fetchcli.models import Job, Record
from fetchcli.sources import parse_line


def job(n: int, line: int) -> Job:
    parsed = parse_line("bench.txt", line, b"https://cdn.a.test/assets/%d/photo.jpg" % n)
    assert isinstance(parsed, Job)
    return parsed


def outcome(first: Job) -> Record:
    return Record(
        url=first.url,
        ok=True,
        status=200,
        path=f"out/cdn.a.test/assets/{first.line}/photo.jpg",
        bytes=12_345,
        sha256=hashlib.sha256(first.url.encode()).hexdigest(),
        final_url=first.url,
        content_type="image/jpeg",
        attempts=1,
        source=first.source,
        line=first.line,
    )


async def run(lines: int, repeats: float, in_flight: int) -> tuple[int, int, float]:
    """Return the URLs, the repeats, and the seconds spent making jobs (parsing URLs)."""
    written = 0
    repeated = 0
    making = 0.0

    async def emit(record: Record) -> None:
        nonlocal written, repeated
        written += 1
        repeated += record.skipped == "duplicate"

    dedupe = Dedupe(emit)
    flying: collections.deque[Job] = collections.deque()

    async def handoff(first: Job) -> None:
        flying.append(first)
        if len(flying) > in_flight:
            await dedupe.emit(outcome(flying.popleft()))

    draw = random.Random(7)
    distinct = 0
    for line in range(1, lines + 1):
        if distinct and draw.random() < repeats:
            number = draw.randrange(distinct)
        else:
            number, distinct = distinct, distinct + 1
        before = time.perf_counter()
        next_job = job(number, line)
        making += time.perf_counter() - before
        await dedupe.admit(next_job, handoff)
        if line % 1000 == 0:  # the end of a batch of lines, as the producer reads them
            await dedupe.flush()
    await dedupe.flush()
    while flying:
        await dedupe.emit(outcome(flying.popleft()))
    await dedupe.aclose()
    assert written == lines, (written, lines)
    return distinct, repeated, making


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=float, default=0.5, help="share of lines repeated")
    parser.add_argument("--in-flight", type=int, default=256)
    args = parser.parse_args()
    started = time.perf_counter()
    distinct, repeated, making = asyncio.run(run(args.lines, args.repeats, args.in_flight))
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{args.lines:,} lines ({distinct:,} URLs, {repeated:,} repeats) in {elapsed:.1f} s, "
        f"{making:.1f} s of it parsing URLs: the rest at {args.lines / (elapsed - making):,.0f} "
        f"lines/s; peak RSS {peak:.0f} MiB"
    )


if __name__ == "__main__":
    main()
