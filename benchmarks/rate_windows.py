"""--limit-rate on the wall clock, as the server sees it: every 5 s window of long transfers.

    python benchmarks/rate_windows.py                  # ~30 s a case, five cases
    python benchmarks/rate_windows.py --seconds 60 --markdown

The server (tests/send_log.py) writes each body 16 KiB at a time on a socket with a small send
buffer and logs when each piece left it, so its log is the pace at which fetchcli read, early
by at most what the socket buffers hold. For each case fetchcli runs as a child process
(`--no-save`, start-up included in the wall time) and the table gives:

- `rate`: the body bytes over the time from the first piece sent to the last, over the cap;
- `windows`: the fewest and most bytes in any window (s, s + 5] from 5 s after the first
  piece to the last (after the first window, which holds the buffers' first fill), over
  5 s of the cap; every window, not a sample: the counts change only where an edge meets a
  send, so the starts at each send and 5 s before it see every one;
- `ahead`: how far the server's sends ran ahead of the cap's line from the first piece on, in
  seconds of the cap (what the buffers below the reader took in);
- for the case with small files beside a big one: the slowest small file's elapsed time over
  the time its fair share would take (the cap over the transfers at once).

The issue's target is 10% over any 5 s window of a long transfer; the tests check it exactly
on a virtual clock (tests/test_rate_windows.py) and bound `ahead` on the wall clock
(tests/test_limit_rate.py), which load cannot break. This table is the wall-clock shape.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fetchcli.config import parse_rate
from tests.send_log import SendLog, serve

FETCHCLI = [sys.executable, "-m", "fetchcli"]
WINDOW = 5.0
MiB = 1 << 20


@dataclass(frozen=True)
class Case:
    name: str
    cap: str
    transfers: int  # long ones, at once
    processes: int = 1
    small: int = 0  # small files beside the one long transfer, `at_once` at a time
    at_once: int = 0


CASES = [
    Case("one transfer", "2M", 1),
    Case("one transfer", "512k", 1),
    Case("ten at once", "2M", 10),
    Case("ten at once, -P 2", "2M", 10, processes=2),
    Case("a big file + small ones", "2M", 1, small=40, at_once=5),
]
SMALL_BYTES = 256 * 1024


def measure(log: SendLog, case: Case, seconds: float, key: str) -> dict[str, str]:
    rate = parse_rate(case.cap)
    total = int(rate * seconds)
    if case.small:
        # The long one carries what the small ones leave of the cap.
        sizes = [total - case.small * SMALL_BYTES] + [SMALL_BYTES] * case.small
        concurrency = 1 + case.at_once
    else:
        sizes = [total // case.transfers] * case.transfers
        concurrency = case.transfers
    urls = [log.url(key, size) + f"?{i}" for i, size in enumerate(sizes)]
    args = ["get", "-", "--no-save", "--jsonl", "-", "-q", "--limit-rate", case.cap,
            "-c", str(concurrency), "-P", str(case.processes)]  # fmt: skip
    began = time.monotonic()
    done = subprocess.run(
        [*FETCHCLI, *args],
        input="".join(url + "\n" for url in urls).encode(),
        capture_output=True,
        timeout=seconds * 3 + 60,
        check=False,
    )
    wall = time.monotonic() - began
    records = [json.loads(line) for line in done.stdout.splitlines()]
    ok = done.returncode == 0 and sum(r["bytes"] for r in records) == sum(sizes)
    sends = log.sends(key)
    times = [when for when, _ in sends]
    totals = list(itertools.accumulate((size for _, size in sends), initial=0))
    first, last = times[0], times[-1]
    ahead = max(totals[i + 1] - rate * (times[i] - first) for i in range(len(times)))
    low, high = window_extremes(times, totals, first + WINDOW, last)
    row = {
        "case": case.name,
        "cap": case.cap,
        "MiB": f"{sum(sizes) / MiB:.0f}",
        "wall s": f"{wall:.1f}",
        "rate": f"{totals[-1] / (last - first) / rate:.3f}",
        "windows": f"{low / rate / WINDOW:.3f} - {high / rate / WINDOW:.3f}",
        "ahead s": f"{ahead / rate:.2f}",
        "small files": "",
        "ok": str(ok),
    }
    if case.small:
        fair = SMALL_BYTES * (1 + case.at_once) / rate
        slowest = max(r["elapsed"] for r in records if r["bytes"] == SMALL_BYTES)
        row["small files"] = f"{slowest / fair:.2f}x fair"
    return row


def window_extremes(
    times: list[float], totals: list[int], start: float, end: float
) -> tuple[int, int]:
    """The fewest and most bytes sent in any window (s, s + WINDOW], start <= s <= end - WINDOW."""
    starts = {start} | set(times) | {t - WINDOW for t in times}
    counts = []
    for s in starts:
        if start <= s <= end - WINDOW:
            low = bisect.bisect_right(times, s + 1e-9)
            high = bisect.bisect_right(times, s + WINDOW + 1e-9)
            counts.append(totals[high] - totals[low])
    if not counts:
        return 0, 0
    return min(counts), max(counts)


def table(rows: list[dict[str, str]], markdown: bool) -> str:
    columns = list(rows[0])
    if markdown:
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(row[c] for c in columns) + " |" for row in rows]
        return "\n".join(lines)
    widths = {c: max(len(c), *(len(row[c]) for row in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(row[c].ljust(widths[c]) for c in columns) for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each case")
    parser.add_argument("--markdown", action="store_true")
    options = parser.parse_args()
    rows = []
    with serve() as log:
        for index, case in enumerate(CASES):
            rows.append(measure(log, case, options.seconds, f"case{index}"))
            print(table(rows[-1:], markdown=False), file=sys.stderr)
    load = os.getloadavg()[0]
    print(f"load average at the end: {load:.1f} on {os.cpu_count()} cores")
    print(table(rows, options.markdown))


if __name__ == "__main__":
    main()
