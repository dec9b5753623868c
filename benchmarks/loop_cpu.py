#!/usr/bin/env python3
"""CPU per request on uvloop and on asyncio's own loop: the same fetchcli, one process (-P 1),
N small unsaved requests to nginx, runs interleaved; medians of CPU seconds (user + system,
of fetchcli alone) and wall seconds.

    python benchmarks/loop_cpu.py [--runs 6] [--count 5000] [--fetchcli PATH] [--save]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_servers import nginx_path, nginx_server


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    cpu, began = cpu_of_children(), time.monotonic()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - began, cpu_of_children() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--fetchcli", default=shutil.which("fetchcli") or "fetchcli")
    parser.add_argument("--save", action="store_true", help="save the bodies (W1's shape)")
    args = parser.parse_args()
    nginx = nginx_path()
    if nginx is None:
        raise SystemExit("needs nginx")
    with tempfile.TemporaryDirectory(prefix="fetchcli-loop-", dir="/dev/shm") as tmp:
        work = Path(tmp)
        site = work / "site"
        site.mkdir()
        for i in range(args.count):
            (site / f"{i}.txt").write_bytes(os.urandom(512).hex().encode())
        with nginx_server(nginx, site, work) as static:
            urls = work / "urls.txt"
            urls.write_text("".join(f"{static.base_url}/{i}.txt\n" for i in range(args.count)))
            results: dict[str, list[tuple[float, float]]] = {"uvloop": [], "asyncio": []}
            for run in range(args.runs):
                for loop in ["uvloop", "asyncio"] if run % 2 else ["asyncio", "uvloop"]:
                    out = work / f"out-{run}-{loop}"
                    argv = [args.fetchcli, "get", str(urls), "-P", "1", "-c", "64", "-q"]
                    argv += ["-o", str(out)] if args.save else ["--no-save"]
                    env = {**os.environ, "FETCHCLI_EVENT_LOOP": loop}
                    results[loop].append(one(argv, env))
                    shutil.rmtree(out, ignore_errors=True)
    print(f"{args.count} requests, -P 1 -c 64, {'saved' if args.save else 'not saved'}, "
          f"{args.runs} interleaved runs, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    for loop, runs in results.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        per = cpu / args.count * 1e6
        print(f"{loop:8} wall {wall:6.2f} s  CPU {cpu:6.2f} s  ({per:.0f} us of CPU a request)")


if __name__ == "__main__":
    main()
