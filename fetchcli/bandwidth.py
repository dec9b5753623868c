"""The bandwidth cap (`--limit-rate`): body bytes per second over every transfer of an engine.

A `Bandwidth` is a virtual link of `rate` bytes per second. Each transfer reads from it
through its own `Flow`: after a chunk arrives, `await flow.consume(len(chunk))` returns once
the link has had time to carry it, so the reader reads nothing more meanwhile and the socket
fills and closes its window (backpressure, no buffering here).

Fairness is processor sharing: the chunks waiting on the link are carried side by side, each
at rate / (how many wait), and a chunk is released when its own bytes are through. A flow that
read 256 KiB waits eight times as long as one that read 32 KiB, so flows share the rate by
bytes whatever their chunk sizes, and a small file's chunk never queues behind a big file's
backlog. (Handing the whole link to one chunk at a time, in order of fair-queueing stamps,
does not do this here: a flow is never waiting at the moment the link is handed on, because
it is busy reading its next chunk, so the order degrades to one chunk each.)

Timing follows the clock, not the sleeps: the model is run up to the present at every event,
so a timer that fires late delays one wake-up but no byte of the schedule; an idle link lends
a newcomer up to `burst` seconds, which makes up the gap between one flow's chunks. The
long-run rate is exact, and an idle link may send `burst` seconds' worth at once.

What waits unread below the reader is kept small too: under a cap the client reads in
`read_size()` pieces from sockets with a `receive_buffer()` of their own, so the server's pace
follows the reader's from the first seconds on.

Several engine processes share one cap by splitting it: each engine's `Bandwidth` gets a share
(`split_rate()`), which the coordinator may change at run time with `set_rate()`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence

__all__ = [
    "BURST_SECONDS",
    "Bandwidth",
    "Flow",
    "read_size",
    "receive_buffer",
    "split_rate",
    "throttled",
]

BURST_SECONDS = 0.1
_EPSILON = 1e-6  # seconds: a chunk due this soon is done (timers may fire a hair early)
IDLE_SHARE = 0.05  # of the whole cap, split among engines, kept for those with no transfer


def read_size(rate: float, ceiling: int = 256 * 1024) -> int:
    """A read size that keeps pacing smooth: ~50 ms of the rate, between 4 KiB and `ceiling`.

    Each flow may hold one chunk read but not yet paid for (and the HTTP client buffers up to
    two reads), so smaller reads under a low cap keep what is on the wire close to the cap at
    the start of a transfer.
    """
    return max(4096, min(ceiling, int(rate / 20)))


def receive_buffer(rate: float) -> int:
    """A socket receive buffer (SO_RCVBUF) for transfers under a cap of `rate`: an eighth of
    a second of it, between 64 KiB and 4 MiB.

    Left to itself, the kernel grows a connection's buffer to megabytes while the reader is
    still fast at the start of a body, and that much leaves the server ahead of the cap
    (measured: 3 MiB in the first 0.3 s at 256 KiB/s). Linux doubles the value, and about
    that much can then arrive unread (measured on loopback: 2.3x): a quarter second of the
    cap, which still lets one connection reach it over a round trip of about 250 ms.
    """
    return max(64 * 1024, min(4 * 1024 * 1024, int(rate / 8)))


def split_rate(total: float, active: Sequence[int]) -> list[float]:
    """Shares of a cap of `total` for engines running `active[i]` transfers each (or, for
    --rate, holding `active[i]` jobs that could start).

    A small part (`IDLE_SHARE`) is split evenly, so an engine whose first transfer starts
    before the next rebalance is not stalled; the rest goes by transfer count, so transfers
    are treated alike whichever engine runs them. With no transfer anywhere, an even split.
    The shares always add up to `total` (or less, by rounding).
    """
    engines = len(active)
    if engines == 0:
        return []
    running = sum(max(0, count) for count in active)
    if running == 0:
        return [total / engines] * engines
    floor = total * IDLE_SHARE / engines
    rest = total - floor * engines
    return [floor + rest * max(0, count) / running for count in active]


class Bandwidth:
    """A byte budget of `rate` per second shared fairly by every `Flow` made from it."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        burst: float = BURST_SECONDS,
    ) -> None:
        _check(rate)
        self._rate = rate
        self._clock = clock
        self._sleep = sleep
        self._burst = burst
        # The model: every waiting chunk is carried at rate / len(waiting). `_virtual` is what
        # each has been carried since the link last went busy, as of clock time `_updated`;
        # a chunk is done when `_virtual` reaches its mark.
        self._waiting: list[tuple[float, int, asyncio.Future[None]]] = []
        self._virtual = 0.0
        self._updated = 0.0
        self._idle_since = -math.inf  # clock time at which the link last ran out of work
        self._order = itertools.count()  # equal marks: first come, first served
        self._timer: asyncio.Task[None] | None = None
        self._timer_due = math.inf
        self.paid = 0  # bytes carried or being carried (for stats and tests)

    @property
    def rate(self) -> float:
        return self._rate

    def set_rate(self, rate: float) -> None:
        """Change the rate from now on (the coordinator's rebalancing). On the loop only."""
        _check(rate)
        self._advance(self._clock())
        self._rate = rate
        self._schedule(force=True)

    def flow(self) -> Flow:
        """A new flow: one per transfer, used by one task at a time."""
        return Flow(self)

    async def _carry(self, size: int) -> None:
        now = self._clock()
        if self._waiting:
            self._advance(now)
        else:
            # An idle link lends a newcomer the time it sat idle, up to `burst`: the wake-up
            # latency between one flow's chunks is made up, and the long-run rate stays exact.
            self._virtual = 0.0
            self._updated = max(self._idle_since, now - self._burst)
        turn = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (self._virtual + size, next(self._order), turn))
        self.paid += size
        self._advance(now)
        self._schedule()
        try:
            await turn
        except asyncio.CancelledError:
            if turn.cancelled():
                self._drop(turn)
            raise

    def _advance(self, now: float) -> None:
        """Run the model up to `now`, ending (and waking) every chunk carried by then."""
        while self._waiting:
            mark, _, turn = self._waiting[0]
            reach = self._updated + (mark - self._virtual) * len(self._waiting) / self._rate
            if reach > now + _EPSILON:
                self._virtual += (now - self._updated) * self._rate / len(self._waiting)
                self._updated = now
                return
            heapq.heappop(self._waiting)
            self._virtual, self._updated = mark, min(reach, now)
            if not turn.done():
                turn.set_result(None)
        self._idle_since = self._updated

    def _drop(self, turn: asyncio.Future[None]) -> None:
        """Forget a cancelled chunk: the others share its part of the link from now on."""
        self._advance(self._clock())
        self._waiting = [entry for entry in self._waiting if entry[2] is not turn]
        heapq.heapify(self._waiting)
        if not self._waiting:
            self._idle_since = self._updated
        self._schedule(force=True)

    def _schedule(self, *, force: bool = False) -> None:
        """Have a timer wake the chunk that ends first. A timer due earlier than needed is
        kept (it wakes, finds nothing done, and schedules again): arrivals only ever delay the
        end of the others, so most of them cost no new timer."""
        if not self._waiting:
            due = math.inf
        else:
            mark = self._waiting[0][0]
            due = self._updated + (mark - self._virtual) * len(self._waiting) / self._rate
        if self._timer is not None:
            if not force and self._timer_due <= due:
                return
            self._timer.cancel()
            self._timer = None
        if due < math.inf:
            self._timer_due = due
            self._timer = asyncio.ensure_future(self._wake(max(0.0, due - self._clock())))

    async def _wake(self, delay: float) -> None:
        await self._sleep(delay)
        self._timer = None
        self._advance(self._clock())
        self._schedule()


class Flow:
    """One transfer's access to a `Bandwidth`."""

    __slots__ = ("_bandwidth", "paid")

    def __init__(self, bandwidth: Bandwidth) -> None:
        self._bandwidth = bandwidth
        self.paid = 0

    async def consume(self, size: int) -> None:
        """Return once the link has carried `size` more bytes of this flow (read already)."""
        if size > 0:
            self.paid += size
            await self._bandwidth._carry(size)


def _check(rate: float) -> None:
    if not (math.isfinite(rate) and rate > 0):
        msg = f"a bandwidth needs a positive finite rate (got {rate!r})"
        raise ValueError(msg)


async def throttled(chunks: AsyncIterable[bytes], flow: Flow) -> AsyncIterator[bytes]:
    """`chunks`, each handed on once the flow has paid for it; the next is read only then."""
    async for chunk in chunks:
        await flow.consume(len(chunk))
        yield chunk
