#!/usr/bin/env python3
"""Soak run: 100,000 URLs against a local server where a tenth of the requests misbehave.

    python scripts/soak.py [--urls 100000] [--concurrency 64]

The server (tests/servers.py) resets, truncates, answers 503/429/500/404, hangs, or
compresses; each URL's fate is a pure function of its number, so the script knows what every
record must say. It runs the real CLI, then checks that every input line was recorded exactly
once, that each record matches the fault it met, and that the requests the server counted are
the attempts the records claim. Prints per-outcome counts; exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers import FaultServer

RETRIES = 2
TIMEOUT = 1.0


@dataclass(frozen=True)
class Expect:
    """What the record of one line must say."""

    target: str | None  # the request target, or None for lines that are never fetched
    ok: bool
    attempts: int
    kind: str  # the outcome's name in the report


def fate(n: int, key: str) -> tuple[str, Expect]:
    """Line `n`'s URL and what must become of it."""
    if n % 1000 == 999:
        return "ftp://soak.test/not-http", Expect(None, False, 0, "invalid line")
    if n % 1000 == 998:
        return f"/ok/{key}/1", Expect(None, True, 0, "duplicate")
    if n % 10:
        return f"/ok/{key}/{n}", Expect(f"/ok/{key}/{n}", True, 1, "ok")
    fault = (n // 10) % 9
    if fault == 0:
        t = f"/flaky/{key}/{n}?fail=1&status=503"
        return t, Expect(t, True, 2, "503 then ok")
    if fault == 1:
        t = f"/reset/{key}/{n}?fail=1&size=20000&after=4000"
        return t, Expect(t, True, 2, "reset then ok")
    if fault == 2:
        t = f"/truncate/{key}/{n}?fail=1&size=20000&send=4000"
        return t, Expect(t, True, 2, "truncated then ok")
    if fault == 3:
        t = f"/retry-after/{key}/{n}?fail=1&after=0&status=429"
        return t, Expect(t, True, 2, "429 then ok")
    if fault == 4:
        t = f"/status/404/{key}-{n}"
        return t, Expect(t, False, 1, "404")
    if fault == 5:
        t = f"/status/500/{key}-{n}"
        return t, Expect(t, False, RETRIES + 1, "500 every time")
    if fault == 6 and n % 100 == 60:  # hangs are slow by nature: a tenth of this share
        t = f"/hang/{key}/{n}"
        return t, Expect(t, False, RETRIES + 1, "hang")
    if fault == 7:
        t = f"/gzip/{key}/{n}"
        return t, Expect(t, True, 1, "gzip")
    t = f"/chunked/{key}/{n}?size=30000"
    return t, Expect(t, True, 1, "chunked")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=64)
    options = parser.parse_args()
    key = f"soak{int(time.time())}"
    with FaultServer() as server, tempfile.TemporaryDirectory() as workdir:
        lines, expected = [], {}
        for n in range(1, options.urls + 1):
            target, expect = fate(n, key)
            lines.append(server.url(target) if target.startswith("/") else target)
            expected[n] = expect
        source = Path(workdir) / "urls.txt"
        source.write_text("\n".join(lines) + "\n")
        records_path = Path(workdir) / "records.jsonl"
        command = [
            sys.executable, "-m", "fetchcli", "get", str(source), "--no-save", "-q",
            "-c", str(options.concurrency), "-r", str(RETRIES), "-t", str(TIMEOUT),
            "--backoff", "0.05", "--jsonl", str(records_path),
        ]  # fmt: skip
        started = time.monotonic()
        code = subprocess.run(command, check=False).returncode
        wall = time.monotonic() - started
        records = [json.loads(line) for line in records_path.read_text().splitlines()]
        problems = check(records, expected, server)
        served = server.total_hits
    report(records, expected, code, wall, served)
    for problem in problems[:20]:
        print("MISMATCH:", problem)
    print(
        f"{len(problems)} mismatches"
        if problems
        else "every URL recorded exactly once, as expected"
    )
    return 1 if problems else 0


def check(records: list[dict], expected: dict[int, Expect], server: FaultServer) -> list[str]:
    problems = []
    lines = Counter(r["line"] for r in records)
    missing = set(expected) - set(lines)
    problems += [f"line {n}: no record" for n in sorted(missing)]
    problems += [f"line {n}: {c} records" for n, c in lines.items() if c != 1]
    attempts_by_target: Counter[str] = Counter()
    for record in records:
        expect = expected[record["line"]]
        if record["ok"] != expect.ok or record["attempts"] != expect.attempts:
            problems.append(
                f"line {record['line']} ({expect.kind}): ok={record['ok']} "
                f"attempts={record['attempts']}, expected ok={expect.ok} attempts={expect.attempts}"
            )
        if expect.target is not None:
            attempts_by_target[expect.target] += record["attempts"]
    for target, attempts in attempts_by_target.items():
        if server.hits(target) != attempts:
            problems.append(f"{target}: server saw {server.hits(target)}, records say {attempts}")
    return problems


def report(records: list[dict], expected: dict[int, Expect], code: int, wall: float, served: int):
    by_line = {r["line"]: r for r in records}
    want: Counter[str] = Counter(e.kind for e in expected.values())
    got: Counter[str] = Counter()
    for n, expect in expected.items():
        record = by_line.get(n)
        if record and record["ok"] == expect.ok and record["attempts"] == expect.attempts:
            got[expect.kind] += 1
    print(f"{len(expected):,} URLs in {wall:.1f}s ({len(expected) / wall:,.0f}/s), exit {code}")
    print(f"{'outcome':<20}{'expected':>10}{'recorded':>10}")
    for kind, count in want.most_common():
        print(f"{kind:<20}{count:>10,}{got[kind]:>10,}")
    attempts = sum(r["attempts"] for r in records)
    print(f"requests: {served:,} served, {attempts:,} attempts in the records")


if __name__ == "__main__":
    sys.exit(main())
