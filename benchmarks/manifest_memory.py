"""A 1,000,000-row CSV manifest through the parser: rows per second, and the traced peak.

    python benchmarks/manifest_memory.py                 # speed, 1,000,000 rows
    python benchmarks/manifest_memory.py --trace         # also the tracemalloc peak (slow)
    python benchmarks/manifest_memory.py --rows 100000 --gzip

The rows are made as they are read (600 a chunk), so the only memory that can grow is the
parser's own.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
import zlib
from collections.abc import Iterator

from fetchcli.manifests import Format, ManifestParser
from fetchcli.models import Job


def lazy_csv(count: int) -> Iterator[bytes]:
    yield b"url,path,sha256,size,caption\n"
    for start in range(0, count, 600):
        yield b"".join(
            b'https://cdn.a.test/i/%d.jpg,img/%d.jpg,%064x,%d,"caption, %d"\n' % (n, n, n, n, n)
            for n in range(start, min(start + 600, count))
        )


def gzipped(chunks: Iterator[bytes]) -> Iterator[bytes]:
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    for chunk in chunks:
        if packed := packer.compress(chunk):
            yield packed
    yield packer.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--trace", action="store_true", help="measure the tracemalloc peak")
    parser.add_argument("--gzip", action="store_true", help="feed the CSV gzip-compressed")
    args = parser.parse_args()
    chunks = lazy_csv(args.rows)
    if args.gzip:
        chunks = gzipped(chunks)
    manifest = ManifestParser("bench.csv", Format.CSV)
    if args.trace:
        tracemalloc.start()
    started = time.perf_counter()
    rows = 0
    for chunk in chunks:
        for item in manifest.feed(chunk):
            rows += isinstance(item, Job)
    rows += sum(isinstance(item, Job) for item in manifest.close())
    elapsed = time.perf_counter() - started
    line = f"{rows:,} rows in {elapsed:.1f} s: {rows / elapsed:,.0f} rows/s"
    if args.trace:
        line += f"; traced peak {tracemalloc.get_traced_memory()[1] / 2**20:.2f} MiB"
    print(line)


if __name__ == "__main__":
    main()
