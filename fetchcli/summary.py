"""A run's outcome in words for people: byte sizes, counts and rates, no control codes."""

from __future__ import annotations

import re

from fetchcli.stats import RunStats

__all__ = ["printable", "size", "summary_line"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def summary_line(stats: RunStats) -> str:
    """One plain line: counts, bytes, time and rates; no control codes."""
    rate = stats.done / stats.elapsed if stats.elapsed > 0 else 0.0
    urls = "URL" if stats.done == 1 else "URLs"
    ok = f"{stats.ok:,} ok" + (f" ({stats.existing:,} already there)" if stats.existing else "")
    parts = [f"{stats.done:,} {urls} in {stats.elapsed:.1f}s ({rate:,.0f}/s)", ok]
    failed = f"{stats.failed:,} failed"
    kinds = [
        (k, n) for k, n in stats.by_outcome.most_common() if not k.startswith(("ok", "skipped"))
    ]
    if kinds:
        failed += " (" + ", ".join(f"{kind} {count:,}" for kind, count in kinds[:4]) + ")"
    parts.append(failed)
    if stats.skipped:
        parts.append(f"{stats.skipped:,} skipped")
    if stats.resumed:
        parts.append(f"{stats.resumed:,} already done")
    parts.append(size(stats.bytes))
    parts.append(f"{stats.retries:,} retries")
    return ", ".join(parts)


def size(count: float | None) -> str:
    """A byte count for people: 0 B, 12.3 kB, 4.5 MB ..."""
    if count is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"  # pragma: no cover


def printable(text: str) -> str:
    """`text` with control characters as escapes (`\\x1b`): a URL cannot drive the terminal."""
    return _CONTROL.sub(lambda found: repr(found.group())[1:-1], text)
