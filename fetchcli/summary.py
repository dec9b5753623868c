"""A run's outcome in words for people: byte sizes, counts and rates, no control codes."""

from __future__ import annotations

import math
import re

from fetchcli.config import OutputOptions
from fetchcli.progress import Estimate, eta, percent, transferred
from fetchcli.stats import Pauses, RunStats

__all__ = [
    "clock",
    "more_failures",
    "paused_note",
    "printable",
    "resume_hint",
    "retries",
    "size",
    "status_line",
    "summary_line",
]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
HOST_SHOWN = 30  # characters of a paused host's name shown


def summary_line(stats: RunStats) -> str:
    """One plain line: counts, bytes, time and rates; no control codes."""
    rate = stats.done / stats.elapsed if stats.elapsed > 0 else 0.0
    urls = "URL" if stats.done == 1 else "URLs"
    ok = f"{stats.ok:,} ok" + _ok_details(stats)
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
    parts.append(size(transferred(stats)))
    parts.append(retries(stats.retries))
    return ", ".join(parts)


def retries(count: int) -> str:
    """`1 retry`, `3 retries`."""
    return f"{count:,} {'retry' if count == 1 else 'retries'}"


def _ok_details(stats: RunStats) -> str:
    """` (2 already there, 3 not modified)`: the ok URLs whose file was left as it was."""
    details = [
        f"{count:,} {what}"
        for count, what in ((stats.existing, "already there"), (stats.not_modified, "not modified"))
        if count
    ]
    return f" ({', '.join(details)})" if details else ""


def status_line(
    stats: RunStats, progress: Estimate, moved: int, request_rate: float, byte_rate: float
) -> str:
    """One complete line about the run so far, for a terminal shared with others; `moved`
    is the bytes that arrived."""
    if progress.share is not None and progress.total is not None:
        where = f"{percent(progress.share)}% · {progress.done:,}/{progress.total:,} URLs"
    else:
        where = f"{progress.done:,} done"
    line = f"fetchcli: {where} · {size(moved)} at {size(byte_rate)}/s · {clock(stats.elapsed)}"
    left = eta(progress, request_rate, byte_rate)
    if left is not None:
        line += f" · ETA {clock(left)}"
    line += f" · ok {stats.ok:,} · failed {stats.failed:,} · in flight {stats.in_flight:,}"
    if stats.retrying:
        line += f" · retrying {stats.retrying:,}"
    if (pauses := stats.pauses) is not None:
        line += f" · {paused_note(pauses)}"
    return line


def paused_note(pauses: Pauses) -> str:
    """The jobs paused hosts hold back, and which host comes back first, and when:
    `waiting for paused hosts 298 (example.org back in 4s, +2 more)`."""
    note = f"waiting for paused hosts {pauses.waiting:,}"
    if pauses.first:
        host = pauses.first if len(pauses.first) <= HOST_SHOWN else pauses.first[:HOST_SHOWN] + "…"
        more = f", +{pauses.hosts - 1:,} more" if pauses.hosts > 1 else ""
        note += f" ({host} back in {_wait(pauses.first_ends_in)}{more})"
    return note


def _wait(seconds: float) -> str:
    whole = math.ceil(seconds)  # "back in 0s" would say it is back
    return f"{whole}s" if whole < 60 else clock(whole)


def resume_hint(output: OutputOptions) -> str:
    """After an interrupted run: how to fetch only the rest, true to where the records went
    (and, with --continue, that the partial files kept are continued)."""
    kept = output.continue_partial
    if output.jsonl == "-":
        hint = (
            "The records went to stdout: next time give --jsonl a FILE, so that --resume "
            "can fetch only the rest."
        )
        if kept and output.save:
            hint += (
                " Run it again with --skip-existing --continue to continue the partial files kept."
            )
        return hint
    if output.jsonl:
        again = "again" if output.resume else "again with --resume"
        rest = " (continuing the partial files kept)" if kept else ""
        return (
            f"What had not finished has no record in {output.jsonl}: run the same command "
            f"{again} to fetch only the rest{rest}."
        )
    hint = "Nothing recorded what finished (no --jsonl). "
    if output.save and output.skip_existing:
        hint += "The same command again passes over the files already saved"
        hint += " and continues the partial files kept. " if kept else ". "
    elif output.save:  # saved files are whole: a partial body never has the final name
        hint += "Run it again with --skip-existing to pass over the files already saved"
        hint += "; with --continue it continues the partial files kept. " if kept else ". "
    return hint + "Next time add --jsonl FILE, so that --resume can fetch only the rest."


def more_failures(output: OutputOptions) -> str:
    """The line that stands for the failures not listed one by one."""
    if output.jsonl == "-":
        return "… more failures: see the summary and the records on stdout"
    if output.jsonl:
        return f"… more failures: see the summary and the records in {output.jsonl}"
    return "… more failures: see the summary"


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


def clock(seconds: float) -> str:
    """A duration as H:MM:SS."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
