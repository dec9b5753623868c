"""How far a run is: the share of its work done, weighted by bytes once sizes are known,
the bytes that arrived, and the rates they arrive at. Numbers only, for the displays."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from fetchcli.stats import RunStats

__all__ = ["RATE_WINDOW_SECONDS", "Estimate", "Rates", "estimate", "eta", "percent", "transferred"]

RATE_WINDOW_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Estimate:
    """How far the run is: URLs done, and the share of the work, by bytes where known."""

    done: int  # URLs finished, those an earlier run did (--resume) too
    total: int | None  # URLs in all, when counted ahead
    share: float | None  # of the work done, 0 to 1; None without a total
    left: float  # work left for the ETA: bytes when `by_bytes`, else URLs
    by_bytes: bool


def estimate(stats: RunStats) -> Estimate:
    """How far the run is, weighted by bytes once any size is known.

    Counting URLs says 95% when 95 small pages are done and five bodies of 200 MB a quarter
    through. So each URL weighs its size: finished, the bytes of its body; in flight, its
    Content-Length; unknown (not started, no Content-Length, done by an earlier run), the
    mean of the known ones. Until a size is known, URLs are counted.
    """
    done = stats.done + stats.resumed
    total = stats.total
    if not total:
        return Estimate(done, total, None, 0.0, by_bytes=False)
    transfers = list(stats.transfers.values())
    sized = [t for t in transfers if t.expected]
    known = stats.bytes + sum(t.expected or 0 for t in sized)
    if known <= 0:
        left = max(total - done, 0)
        return Estimate(done, total, min(done / total, 1.0), left, by_bytes=False)
    mean = known / (stats.done + len(sized))
    unsized = max(total - done - len(sized), 0) + stats.resumed
    whole = known + unsized * mean
    got = (
        stats.bytes
        + sum(min(t.progress.size, t.expected or 0) for t in sized)
        + stats.resumed * mean
    )
    for transfer in transfers:
        if not transfer.expected:  # no Content-Length: at least what has arrived
            whole += max(transfer.progress.size - mean, 0)
            got += transfer.progress.size
    return Estimate(done, total, min(got / whole, 1.0), max(whole - got, 0.0), by_bytes=True)


def eta(progress: Estimate, request_rate: float, byte_rate: float) -> float | None:
    """Seconds left at the current rate (of bytes when weighted by bytes), when there is one."""
    rate = byte_rate if progress.by_bytes else request_rate
    if progress.share is None or progress.left <= 0 or rate <= 0:
        return None
    return progress.left / rate


def percent(share: float) -> int:
    """A share as a whole percentage, rounded down: 100% only when everything is done."""
    return math.floor(100 * share)


def transferred(stats: RunStats) -> int:
    """Body bytes that came over the wire in this run, whatever became of them.

    The per-chunk count only: finished records' bytes hold what an earlier run kept (a
    continued body) and, with engines, would meet their bodies again among the transfers the
    last report still shows in flight.
    """
    return stats.received


class Rates:
    """Requests and bytes per second over the last few seconds."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int, int]] = deque()

    def update(self, now: float, done: int, moved: int) -> tuple[float, float]:
        """Add a sample (a time, URLs done, bytes moved); return the two rates."""
        self._samples.append((now, done, moved))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW_SECONDS:
            self._samples.popleft()
        first_time, first_done, first_bytes = self._samples[0]
        span = now - first_time
        if span <= 0:
            return 0.0, 0.0
        return (done - first_done) / span, (moved - first_bytes) / span
