"""Memory and time of `fetchcli merge` on a large list: peak RSS, Python heap, wall time.

    python benchmarks/merge_memory.py                 # 1,000,000 lines in 4 shards
    python benchmarks/merge_memory.py --lines 200000 --shards 8 --heap

Writes a list and the shards' records files (1% failed, 1% repeats, one shard's last records
lost) in a temporary directory, then runs the merge in a child process, so that the peak RSS
is the merge's alone. Needs fetchcli importable (its venv).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

# tracemalloc slows Python's allocations several times over: the heap is measured in a run
# of its own, and the time and RSS in a run without it.
CHILD = """
import resource, sys, time, tracemalloc
from fetchcli.merge import merge
heap = sys.argv[1] == "heap"
if heap:
    tracemalloc.start()
start, cpu = time.perf_counter(), time.process_time()
report = merge(sys.argv[4:], [sys.argv[2]], rerun=sys.argv[3])
wall, cpu = time.perf_counter() - start, time.process_time() - cpu
peak = tracemalloc.get_traced_memory()[1] if heap else 0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
counts = (report.lines, report.ok, report.failed, report.missing)
print(*counts, f"{wall:.1f}", f"{cpu:.1f}", peak, rss)
"""


def write_inputs(directory: str, lines: int, shards: int) -> tuple[str, list[str]]:
    from fetchcli.models import Job, Record
    from fetchcli.shard import Shard
    from fetchcli.sources import parse_line

    path = os.path.join(directory, "list.txt")
    ledgers = [os.path.join(directory, f"shard-{k}.jsonl") for k in range(shards)]
    outs = [open(ledger, "w") for ledger in ledgers]  # noqa: SIM115
    split = Shard(0, shards)
    with open(path, "w") as listing:
        for number in range(1, lines + 1):
            # Hosts repeat (a real list has far fewer hosts than URLs); every 100th line repeats.
            index = number - 1 if number % 100 else number - 2
            url = f"https://img{index % 5000}.example.com/photos/{index}/large.jpg?v={index}"
            listing.write(url + "\n")
            job = parse_line("list.txt", number, url.encode())
            assert isinstance(job, Job)
            if number % 100 == 0:
                record = Record(
                    url=url, ok=True, skipped="duplicate", source="list.txt", line=number
                )
            elif number % 97 == 0:
                record = Record(
                    url=url, ok=False, status=503, attempts=4, error="HTTP 503",
                    error_kind="status", source="list.txt", line=number,
                )  # fmt: skip
            else:
                record = Record(
                    url=url, ok=True, status=200, path=f"img/{index}.jpg", bytes=123456,
                    sha256="ab" * 32, elapsed=0.25, attempts=1, content_type="image/jpeg",
                    source="list.txt", line=number,
                )  # fmt: skip
            shard = split.share(job)
            if shard == shards - 1 and number > lines - lines // 50:
                continue  # the last shard crashed near the end
            outs[shard].write(record.to_json() + "\n")
    for out in outs:
        out.close()
    return path, ledgers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--heap", action="store_true", help="also measure the Python heap (slow)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="merge-bench-") as directory:
        start = time.perf_counter()
        listing, ledgers = write_inputs(directory, args.lines, args.shards)
        size = sum(os.path.getsize(p) for p in ledgers) + os.path.getsize(listing)
        took = time.perf_counter() - start
        print(f"wrote {args.lines:,} lines, {size / 2**20:,.0f} MiB in {took:.0f} s")
        rerun = os.path.join(directory, "rerun.txt")
        for mode in ("time", "heap") if args.heap else ("time",):
            child = subprocess.run(
                [sys.executable, "-c", CHILD, mode, listing, rerun, *ledgers],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            lines, ok, failed, missing, wall, cpu, heap, rss = child.stdout.split()
            if mode == "time":
                counts = f"{int(ok):,} ok, {int(failed):,} failed, {int(missing):,} missing"
                print(f"merge: {int(lines):,} lines, {counts}")
                print(f"wall {wall} s, CPU {cpu} s, peak RSS {int(rss) / 1024:.0f} MiB")
            else:
                print(f"Python heap peak (tracemalloc) {int(heap) / 2**20:.1f} MiB")
        print(
            f"(this harness: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)"
        )


if __name__ == "__main__":
    main()
