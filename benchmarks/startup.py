#!/usr/bin/env python3
"""Start-up times: `fetchcli --version`, `--help`, and the time to the first request on the wire,
against `python -c "import asyncio"` in the same environment. Medians of interleaved runs.

    python benchmarks/startup.py [--runs 15] [--fetchcli PATH] [--python PATH] [--baseline PATH]

`--baseline PATH` adds another fetchcli executable (an older build) to every row. The first
request is timed from the spawn of `fetchcli get --no-save -P 1 -` (and `-P 2`) to the moment
a loopback server reads the request's head. Stdlib only.
"""

from __future__ import annotations

import argparse
import http.server
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


class _Heard(http.server.BaseHTTPRequestHandler):
    heard: list[float] = []  # noqa: RUF012 - one server per run of this script

    def do_GET(self) -> None:
        _Heard.heard.append(time.monotonic())
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def timed(argv: list[str]) -> float:
    began = time.monotonic()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.monotonic() - began


def first_request(argv: list[str], url: str) -> float:
    heard = _Heard.heard
    count = len(heard)
    began = time.monotonic()
    subprocess.run(argv, input=url.encode(), stdout=subprocess.DEVNULL, check=True)
    assert len(heard) == count + 1, "the server did not hear the request"
    return heard[-1] - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--fetchcli", default=shutil.which("fetchcli") or "fetchcli")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--baseline", help="another fetchcli executable, for comparison")
    args = parser.parse_args()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: bytecode cached (run.py)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Heard)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/x\n"

    rows: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        rows.setdefault(name, []).append(seconds)

    builds = [("fetchcli", args.fetchcli)]
    if args.baseline:
        builds.append(("baseline", args.baseline))
    for _ in range(args.runs):
        add('python -c "import asyncio"', timed([args.python, "-c", "import asyncio"]))
        for name, exe in builds:
            add(f"{name} --version", timed([exe, "--version"]))
            add(f"{name} --help", timed([exe, "--help"]))
            for processes in ("1", "2"):
                get = [exe, "get", "--no-save", "-q", "-P", processes, "-"]
                seconds = first_request(get, url)
                add(f"{name} get: first request on the wire, -P {processes}", seconds)
    server.shutdown()

    base = statistics.median(rows['python -c "import asyncio"'])
    print(f"{'what':58} {'median ms':>10} {'min-max ms':>14} {'x import asyncio':>17}")
    for name, times in rows.items():
        median = statistics.median(times)
        span = f"{min(times) * 1000:.0f}-{max(times) * 1000:.0f}"
        print(f"{name:58} {median * 1000:10.0f} {span:>14} {median / base:16.2f}x")


if __name__ == "__main__":
    main()
