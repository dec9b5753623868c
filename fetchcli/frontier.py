"""The frontier: per-host lanes between the producer and the workers, so that no worker ever
waits on a busy host.

    producer ─▶ bounded Queue ─▶ feed() ─▶ Frontier: one lane per host ─▶ get() ─▶ N workers
                                             ▲                                       │
                                             └──── retry(slot, item, delay) ◀────────┤
                                                   done(slot) ◀──────────────────────┘

`get()` returns only a `Slot` whose request may start now: the global limit (-c), the host's
limit (--per-host), the global and the host's start rates (--rate, --per-host-rate) and the
host's pause (Retry-After) all allow it. A job whose host does not allow it waits in its host's
lane, not in a worker; lanes keep their order, and hosts with work take turns. The lanes are
bounded in total: `put()` waits while `park` jobs wait, and jobs waiting or in flight, retries
included, never pass `park + concurrency`, so memory stays flat however long the list. A retry
goes back into its lane with a not-before time instead of sleeping in a worker. Lanes of idle
hosts are forgotten.

Slots are counted from the moment `get()` hands one out to `done()`/`retry()`, which contains
the request as the server sees it: the limits hold there exactly. Time is the running event
loop's (its clock and timers): the tests run the frontier on a loop with a virtual clock.
Everything happens on that one loop; no method but `put()`, `feed()` and `get()` waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from fetchcli.stats import Pauses

__all__ = ["DEFAULT_PARK", "Again", "Frontier", "Slot", "work"]

T = TypeVar("T")
R = TypeVar("R")

# Jobs waiting in lanes, over all hosts: about 0.6 KiB each as fetchcli's Job (6 MiB in all);
# enough look-ahead for a list grouped by host to reach thousands of URLs past one busy host.
DEFAULT_PARK = 10_000

_NEVER = math.inf


class _Lane(Generic[T]):
    """One host: its waiting jobs, its requests in flight, and when it may start the next."""

    __slots__ = (
        "fresh",
        "in_flight",
        "name",
        "next_start",
        "paused_until",
        "queued",
        "retries",
        "wake_at",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.fresh: deque[tuple[float, int, T]] = deque()  # first attempts: (0, seq, item)
        self.retries: list[tuple[float, int, T]] = []  # heap of (not before, seq, item)
        self.in_flight = 0
        self.paused_until = 0.0
        self.next_start = 0.0  # --per-host-rate: no start before this
        self.queued = False  # in the ready ring
        self.wake_at = _NEVER  # filed in the timed heap for this time

    def waiting(self) -> bool:
        return bool(self.fresh or self.retries)

    def holds_until(self) -> float:
        """Until when this lane must be remembered even with nothing waiting or in flight."""
        return max(self.paused_until, self.next_start)


@dataclass(slots=True, eq=False)
class Slot(Generic[T]):
    """Leave to start one request for `item` at `host`, held until `done()` or `retry()`."""

    host: str
    item: T
    _lane: _Lane[T] = field(repr=False)
    _entry: tuple[float, int, T] = field(repr=False)  # as it waited: to put it back in place
    _retry: bool = field(repr=False)
    _open: bool = field(default=True, repr=False)


@dataclass(frozen=True, slots=True)
class Again(Generic[T]):
    """An attempt's verdict for `work()`: try `item` again, not before `delay` seconds."""

    item: T
    delay: float


class Frontier(Generic[T]):
    """Per-host lanes of jobs, handed to workers only when their host allows a request.

    Construct it inside the running event loop. `concurrency` bounds the requests in flight
    over all hosts, `per_host` per host (0: no limit); `rate` and `per_host_rate` are request
    starts per second over all hosts and to one host (0: no limit); `park` bounds the jobs
    waiting in lanes. `on_pause` hears of every pause announced here (for other engines).
    """

    def __init__(
        self,
        *,
        concurrency: int,
        per_host: int = 0,
        rate: float = 0.0,
        per_host_rate: float = 0.0,
        park: int = DEFAULT_PARK,
        on_pause: Callable[[str, float], None] | None = None,
    ) -> None:
        if concurrency < 1 or park < 1 or per_host < 0 or rate < 0 or per_host_rate < 0:
            msg = "concurrency and park must be at least 1; the other limits at least 0"
            raise ValueError(msg)
        self._loop = asyncio.get_running_loop()
        self._clock = self._loop.time
        self._concurrency = concurrency
        self._per_host = per_host
        self._interval = 1.0 / rate if rate else 0.0
        self._host_interval = 1.0 / per_host_rate if per_host_rate else 0.0
        self._park = park
        self._on_pause = on_pause
        self._lanes: dict[str, _Lane[T]] = {}
        self._ready: deque[_Lane[T]] = deque()  # lanes that may start now, taking turns
        self._timed: list[tuple[float, int, _Lane[T]]] = []  # lanes waiting for a time
        self._expiring: list[tuple[float, int, _Lane[T]]] = []  # idle lanes kept for a pause
        self._seq = itertools.count()
        self._waiters: deque[asyncio.Future[Slot[T] | None]] = deque()  # workers in get()
        self._unclaimed = 0  # slots handed to waiters that have not resumed yet
        self._room: deque[tuple[str, asyncio.Future[None]]] = deque()  # producers in put()
        self._in_flight = 0
        self._pending = 0  # jobs waiting in lanes, retries included
        self._retrying = 0
        self._next_start = 0.0  # --rate: no start before this
        self._pauses_end = 0.0  # when the last pause heard of ends
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = _NEVER

    # --- what the display and the tests read --------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Slots handed out and not given back."""
        return self._in_flight

    @property
    def parked(self) -> int:
        """Jobs waiting in lanes (retries included)."""
        return self._pending

    @property
    def retrying(self) -> int:
        """Retries waiting in lanes."""
        return self._retrying

    @property
    def held(self) -> int:
        """Jobs waiting for a time rather than for a slot: every job of a paused host, and
        the other retries not due yet."""
        pauses, later = self._waiting_for_time()
        return later if pauses is None else pauses.waiting + later

    @property
    def hosts(self) -> int:
        """Hosts remembered: with jobs waiting or in flight, or paused, or inside a rate gap."""
        self._forget_expired(self._clock())
        return len(self._lanes)

    def pauses(self) -> Pauses | None:
        """The hosts paused now, while they hold back a job (else None)."""
        return self._waiting_for_time()[0]

    def host_pause(self, host: str) -> float:
        """Seconds until `host` may be contacted again (0 when it is not paused)."""
        lane = self._lanes.get(host)
        return max(0.0, lane.paused_until - self._clock()) if lane else 0.0

    # --- the producer's side ------------------------------------------------------------------

    async def put(self, host: str, item: T) -> None:
        """Add a job for `host` at the end of its lane; wait while the lanes are full.

        A job that can start at once (a worker is waiting, and its host and the global limits
        allow it) goes straight through, full lanes or not.
        """
        if self._closed:
            msg = "put() after close()"
            raise RuntimeError(msg)
        while self._pending >= self._park and not self._starts_at_once(host):
            room = self._loop.create_future()
            entry = (host, room)
            self._room.append(entry)
            try:
                await room
            finally:
                if not room.done():
                    self._room.remove(entry)
        lane = self._lane(host)
        lane.fresh.append((0.0, next(self._seq), item))
        self._pending += 1
        now = self._clock()
        self._file(lane, now)
        self._dispatch(now)

    async def feed(self, queue: asyncio.Queue[T | None], host_of: Callable[[T], str]) -> None:
        """Move jobs from `queue` into the lanes until a None arrives, then `close()`."""
        while (item := await queue.get()) is not None:
            await self.put(host_of(item), item)
        self.close()

    def close(self) -> None:
        """No more `put()`: once every job is finished, `get()` returns None to every worker."""
        self._closed = True
        self._dispatch()

    def drain(self) -> list[T]:
        """Take every waiting job out of the lanes (the deadline: they will not be fetched)."""
        taken: list[T] = []
        lanes = list(self._lanes.values())
        for lane in lanes:
            taken.extend(item for _, _, item in sorted(lane.retries, key=lambda r: r[:2]))
            taken.extend(item for _, _, item in lane.fresh)
            lane.fresh.clear()
            lane.retries.clear()
            lane.queued, lane.wake_at = False, _NEVER
        self._ready.clear()
        self._timed.clear()
        self._pending = self._retrying = 0
        now = self._clock()
        for lane in lanes:
            self._file(lane, now)  # forgotten, unless in flight or paused
        self._dispatch()
        return taken

    # --- the workers' side --------------------------------------------------------------------

    async def get(self) -> Slot[T] | None:
        """The next job that may start now, with its slot; None when every job is finished."""
        while True:
            slot = await self._next()
            if slot is None or slot._lane.paused_until <= self._clock():
                return slot
            # Its host was paused between the hand-out and now (a 429 that another worker
            # read meanwhile): the job goes back to the front of its lane.
            self._give_back(slot)

    async def _next(self) -> Slot[T] | None:
        if not self._waiters and not self._unclaimed:
            now = self._clock()
            self._wake_timed(now)
            slot = self._take(now)
            if slot is not None:
                self._dispatch(now)  # a producer may be waiting for the room this made
                return slot
        if self._finished():
            return None
        waiter: asyncio.Future[Slot[T] | None] = self._loop.create_future()
        self._waiters.append(waiter)
        self._dispatch()
        try:
            if waiter.done() and self._unclaimed > 1:
                # Workers handed a job before us have not run yet: let them start first,
                # so that a host's requests leave in the order of its lane.
                await asyncio.sleep(0)
            return await waiter
        except asyncio.CancelledError:
            if not waiter.done() or waiter.cancelled():
                with contextlib.suppress(ValueError):  # _dispatch() may have dropped it
                    self._waiters.remove(waiter)
            elif (slot := waiter.result()) is not None:
                # Handed a slot just as we were cancelled: put the job back where it was.
                self._give_back(slot)
            raise
        finally:
            if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                self._unclaimed -= 1

    def done(self, slot: Slot[T]) -> None:
        """The attempt is over, for good: give back its slot."""
        lane = self._release(slot)
        now = self._clock()
        self._file(lane, now)
        self._dispatch(now)

    def done_and_next(self, slot: Slot[T]) -> Slot[T] | None:
        """`done(slot)`, and the next job that may start now for the same worker, ahead of
        the workers waiting in `get()`: a waiting worker would start it a turn of the event
        loop later. None when no job may start now, or when jobs handed to waiting workers
        have not started yet (they go first: each host's requests leave in lane order)."""
        lane = self._release(slot)
        now = self._clock()
        self._file(lane, now)
        taken = None
        if not self._unclaimed:
            self._wake_timed(now)
            taken = self._take(now)
        self._dispatch(now)
        return taken

    def retry(self, slot: Slot[T], item: T, delay: float) -> None:
        """Give back the slot and put `item` back in its lane, to start no sooner than `delay`
        seconds from now (ahead of the lane's first attempts once due). Never waits: a retry
        takes the place of its slot, so jobs waiting stay under `park + concurrency`."""
        lane = self._release(slot)
        now = self._clock()
        heapq.heappush(lane.retries, (now + max(delay, 0.0), next(self._seq), item))
        self._pending += 1
        self._retrying += 1
        self._file(lane, now)
        self._dispatch(now)

    def set_rate(self, rate: float) -> None:
        """Start at most `rate` requests a second from now on (0: no limit): an engine's
        share of --rate, which the coordinator moves as the work moves."""
        self._interval = 1.0 / rate if rate else 0.0
        self._dispatch()

    def pause_host(self, host: str, seconds: float, *, announce: bool = True) -> None:
        """Start no new request to `host` for `seconds` (a Retry-After on 429/503)."""
        if announce and self._on_pause is not None:
            self._on_pause(host, seconds)
        now = self._clock()
        lane = self._lane(host)
        lane.paused_until = max(lane.paused_until, now + seconds)
        self._pauses_end = max(self._pauses_end, lane.paused_until)
        self._file(lane, now)  # an idle lane is remembered until the pause ends

    # --- the machinery ------------------------------------------------------------------------

    def _lane(self, host: str) -> _Lane[T]:
        lane = self._lanes.get(host)
        if lane is None:
            lane = self._lanes[host] = _Lane(host)
        return lane

    def _waiting_for_time(self) -> tuple[Pauses | None, int]:
        """(the pauses that hold jobs back, other retries not due yet): a walk over the
        lanes, only while there may be any."""
        now = self._clock()
        if not self._retrying and self._pauses_end <= now:
            return None, 0
        paused = hosts = later = 0
        first, first_until = "", _NEVER  # the first back of the paused hosts that hold a job
        for lane in self._lanes.values():
            if lane.paused_until > now:
                hosts += 1
                if held := len(lane.fresh) + len(lane.retries):
                    paused += held
                    if lane.paused_until < first_until:
                        first, first_until = lane.name, lane.paused_until
            elif lane.retries:
                later += sum(1 for due, _, _ in lane.retries if due > now)
        return (Pauses(paused, hosts, first, first_until - now) if paused else None), later

    def _due(self, lane: _Lane[T]) -> float:
        """When `lane` may start its next job; _NEVER when it has none, or waits for a slot of
        its own (then done() or retry() files it again)."""
        if not lane.waiting() or (self._per_host and lane.in_flight >= self._per_host):
            return _NEVER
        first = -_NEVER if lane.fresh else lane.retries[0][0]
        return max(first, lane.paused_until, lane.next_start)

    def _file(self, lane: _Lane[T], now: float) -> None:
        """Put `lane` where it belongs: the ready ring, the timed heap, or out of mind."""
        if lane.queued:
            return  # checked again when its turn comes
        if not lane.waiting():
            if lane.in_flight == 0:
                self._forget(lane, now)
            return
        due = self._due(lane)
        if due <= now:
            lane.queued = True
            self._ready.append(lane)
        elif due < lane.wake_at:  # (an entry for a later time goes stale)
            lane.wake_at = due
            heapq.heappush(self._timed, (due, next(self._seq), lane))

    def _forget(self, lane: _Lane[T], now: float) -> None:
        until = lane.holds_until()
        if until <= now:
            if self._lanes.get(lane.name) is lane:
                del self._lanes[lane.name]
        else:
            heapq.heappush(self._expiring, (until, next(self._seq), lane))

    def _forget_expired(self, now: float) -> None:
        # Lazily, when something happens: a million idle hosts cost a million heap entries
        # only while their pauses or rate gaps last.
        expiring = self._expiring
        while expiring and expiring[0][0] <= now:
            _, _, lane = heapq.heappop(expiring)
            if not lane.waiting() and lane.in_flight == 0:
                self._forget(lane, now)

    def _starts_at_once(self, host: str) -> bool:
        """Whether a job put for `host` now would go straight to a waiting worker.

        Only while jobs waiting plus in flight stay under `park + concurrency`: retries (which
        are never refused) cannot then pile up past that bound.
        """
        if self._pending + self._in_flight >= self._park + self._concurrency:
            return False
        if not any(not w.done() for w in self._waiters):
            return False
        now = self._clock()
        if self._in_flight >= self._concurrency or self._next_start > now:
            return False
        lane = self._lanes.get(host)
        return lane is None or (not lane.waiting() and self._due_if_fresh(lane) <= now)

    def _due_if_fresh(self, lane: _Lane[T]) -> float:
        if self._per_host and lane.in_flight >= self._per_host:
            return _NEVER
        return max(lane.paused_until, lane.next_start)

    def _take(self, now: float) -> Slot[T] | None:
        """Hand out the next job that may start now, taking its slots; None if there is none."""
        if self._in_flight >= self._concurrency or self._next_start > now:
            return None
        while self._ready:
            lane = self._ready.popleft()
            lane.queued = False
            if self._due(lane) > now:  # paused, or its limit reached, since it was filed
                self._file(lane, now)
                continue
            retry = bool(lane.retries) and lane.retries[0][0] <= now
            if retry:
                entry = heapq.heappop(lane.retries)
                self._retrying -= 1
            else:
                entry = lane.fresh.popleft()
            self._pending -= 1
            lane.in_flight += 1
            self._in_flight += 1
            if self._interval:
                self._next_start = now + self._interval
            if self._host_interval:
                lane.next_start = now + self._host_interval
            self._file(lane, now)  # at the back of the ring: hosts take turns
            return Slot(lane.name, entry[2], lane, entry, retry)
        return None

    def _wake_timed(self, now: float) -> None:
        timed = self._timed
        while timed and timed[0][0] <= now:
            due, _, lane = heapq.heappop(timed)
            if due == lane.wake_at:
                lane.wake_at = _NEVER
                self._file(lane, now)

    def _dispatch(self, now: float | None = None) -> None:
        """After any change: hand out what may start, wake producers, set the timer."""
        if now is None:
            now = self._clock()
        if self._timed and self._timed[0][0] <= now:
            self._wake_timed(now)
        waiters = self._waiters
        while waiters:
            if waiters[0].done():  # cancelled while waiting
                waiters.popleft()
                continue
            slot = self._take(now)
            if slot is None:
                break
            waiters.popleft().set_result(slot)
            self._unclaimed += 1
        if self._finished():
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
        if self._room:
            self._wake_producers()
        if self._expiring and self._expiring[0][0] <= now:
            self._forget_expired(now)
        if self._waiters or self._timer is not None:
            self._set_timer(now)

    def _wake_producers(self) -> None:
        for entry in list(self._room):
            if self._pending < self._park or self._starts_at_once(entry[0]):
                self._room.remove(entry)
                if not entry[1].done():
                    entry[1].set_result(None)

    def _set_timer(self, now: float) -> None:
        at = _NEVER  # no worker waits, or all slots are taken: get() or done() looks again
        if self._waiters and self._in_flight < self._concurrency:
            timed = self._timed
            while timed and timed[0][0] != timed[0][2].wake_at:
                heapq.heappop(timed)  # stale
            at = now if self._ready else timed[0][0] if timed else _NEVER
            at = max(at, self._next_start)  # nothing starts before --rate allows
        if at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at < _NEVER:
            self._timer = self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        at = self._timer_at
        self._timer, self._timer_at = None, _NEVER
        # The loop may run a timer up to its clock resolution early: it is due all the same.
        self._dispatch(max(self._clock(), at))

    def _finished(self) -> bool:
        return self._closed and self._pending == 0 and self._in_flight == 0

    def _release(self, slot: Slot[T]) -> _Lane[T]:
        if not slot._open:
            msg = "this slot was given back already"
            raise RuntimeError(msg)
        slot._open = False
        lane = slot._lane
        lane.in_flight -= 1
        self._in_flight -= 1
        return lane

    def _give_back(self, slot: Slot[T]) -> None:
        """Undo a hand-out whose worker never saw it: the job goes back to its lane's front."""
        lane = self._release(slot)
        entry = slot._entry
        if slot._retry:
            heapq.heappush(lane.retries, entry)
            self._retrying += 1
        else:
            # Others may have been given back before it: in front of the lane, in list order.
            at = next((i for i, e in enumerate(lane.fresh) if e[1] > entry[1]), len(lane.fresh))
            lane.fresh.insert(at, entry)
        self._pending += 1
        self._file(lane, self._clock())
        self._dispatch()


async def work(
    frontier: Frontier[T],
    attempt: Callable[[T], Awaitable[R | Again[T]]],
    finish: Callable[[R], Awaitable[None]],
) -> None:
    """One worker: attempt jobs from `frontier` until none is left.

    `attempt(item)` makes one request and returns a result for `finish`, or `Again(item,
    delay)` to go back into the item's lane. A result's slot is given back after `finish`,
    for the worker's next job when one may start at once: its request then leaves in the
    same turn of the event loop, not in the next one as a waiting worker's would (W5S, as
    the server sees it: the median turnaround from 2.0 to 1.35 ms).
    """
    slot = await frontier.get()
    while slot is not None:
        try:
            outcome = await attempt(slot.item)
        except BaseException:
            frontier.done(slot)
            raise
        if isinstance(outcome, Again):
            frontier.retry(slot, outcome.item, outcome.delay)
            slot = await frontier.get()
            continue
        try:
            await finish(outcome)
        except BaseException:
            frontier.done(slot)
            raise
        slot = frontier.done_and_next(slot) or await frontier.get()
