"""Live counters of one run: what the display shows and what the summary reports."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from fetchcli.kinds import ErrorKind, Skipped
from fetchcli.models import Record

__all__ = ["SHOWN_TRANSFER_BYTES", "Pauses", "Progress", "RunStats", "Transfer"]

SHOWN_TRANSFER_BYTES = 1024 * 1024  # transfers from this size get a row in the live display


class Progress(Protocol):
    """Something that knows how many bytes have arrived: a Body, or an engine's report."""

    @property
    def size(self) -> int: ...


@dataclass(slots=True)
class Transfer:
    """A body being received now; the display reads `progress.size` when it redraws."""

    url: str
    expected: int | None
    progress: Progress


@dataclass(frozen=True, slots=True)
class Pauses:
    """The hosts a Retry-After pauses now, as the display shows them."""

    waiting: int  # jobs they hold back, retries included
    hosts: int  # paused now, whether or not a job waits for each
    # Of the hosts that hold a job (with engines: of all, the coordinator cannot tell), the
    # one whose pause ends first; "": none known (with engines, a pause just over).
    first: str
    first_ends_in: float  # seconds


@dataclass(slots=True)
class RunStats:
    """Counters updated as the run goes; cheap enough to touch once per event."""

    started: float = field(default_factory=time.monotonic)
    total: int | None = None  # input lines, when known ahead
    done: int = 0
    ok: int = 0  # `existing` and `not_modified` included
    existing: int = 0  # ok: the file was already there (--skip-existing)
    not_modified: int = 0  # ok: the server said 304 (--update)
    failed: int = 0
    skipped: int = 0  # duplicates, whatever their first's outcome
    bytes: int = 0  # of finished records' bodies: not files already there or kept, nor repeats
    # Body bytes as they arrive, of failed and unfinished transfers too: the fetcher adds
    # each chunk's length (one int add per chunk). 0 where nothing feeds it yet.
    received: int = 0
    retries: int = 0
    retrying: int = 0
    in_flight: int = 0
    resumed: int = 0  # lines skipped because the records of an earlier run say ok
    ended: float | None = None
    by_outcome: Counter[str] = field(default_factory=Counter)
    error_examples: dict[str, tuple[str, str]] = field(default_factory=dict)
    transfers: dict[int, Transfer] = field(default_factory=dict)
    # The hosts paused now, and the jobs they hold: the executor's frontier (or engines) tell.
    read_pauses: Callable[[], Pauses | None] | None = None

    @property
    def pauses(self) -> Pauses | None:
        """The hosts a Retry-After pauses now, while they hold back a job (else None)."""
        return None if self.read_pauses is None else self.read_pauses()

    @property
    def paused(self) -> int:
        """Jobs held back now by a host's Retry-After pause (0 when none is paused)."""
        pauses = self.pauses
        return 0 if pauses is None else pauses.waiting

    def add(self, record: Record) -> None:
        """Count one finished record."""
        self.done += 1
        if record.skipped is None:
            self.bytes += record.bytes
        if record.skipped == Skipped.EXISTS:
            self.ok += 1
            self.existing += 1
            self.by_outcome["ok (already there)"] += 1
        elif record.skipped == Skipped.NOT_MODIFIED and record.ok:
            self.ok += 1
            self.not_modified += 1
            self.by_outcome["ok (not modified)"] += 1
        elif record.skipped:
            self.skipped += 1
            self.by_outcome[f"skipped ({record.skipped})"] += 1
        elif record.ok:
            self.ok += 1
            self.by_outcome["ok"] += 1
        else:
            self.failed += 1
            outcome = _outcome(record)
            self.by_outcome[outcome] += 1
            if outcome not in self.error_examples:
                self.error_examples[outcome] = (record.url, record.error or "")

    @property
    def elapsed(self) -> float:
        """Seconds since the run started (until it ended)."""
        return (self.ended or time.monotonic()) - self.started

    def finish(self) -> None:
        """Stop the clock."""
        self.ended = time.monotonic()


def _outcome(record: Record) -> str:
    """A failed record's row in the summary: its status class, or its error kind."""
    if record.error_kind == ErrorKind.HTTP and record.status is not None:
        return f"HTTP {record.status // 100}xx"
    return record.error_kind or "error"
