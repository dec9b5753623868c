"""What may run, and when: the global concurrency Semaphore, per-host limits and pauses,
and the request-rate limiter.

A caller holds a slot only for the duration of one attempt; waiting out a backoff or a
host pause holds nothing, so one slow host cannot starve the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fetchcli.config import Limits

__all__ = ["Limiter", "RateLimiter"]


class RateLimiter:
    """Spaces request starts at least `1 / rate` seconds apart, over the whole run."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0

    async def wait(self) -> None:
        """Return when the next request may start."""
        now = self._clock()
        start = max(now, self._next)
        self._next = start + self._interval
        if start > now:
            await self._sleep(start - now)


class _Host:
    __slots__ = ("paused_until", "semaphore", "users")

    def __init__(self, per_host: int) -> None:
        self.semaphore = asyncio.Semaphore(per_host) if per_host else None
        self.paused_until = 0.0
        self.users = 0


class Limiter:
    """Hands out request slots: host pause, per-host limit, global limit, then the rate."""

    def __init__(
        self,
        limits: Limits,
        clock: Callable[[], float] | None = None,
        on_pause: Callable[[str, float], None] | None = None,
    ) -> None:
        # on_pause hears of every pause this limiter starts, so other engines can follow.
        self._on_pause = on_pause
        self._clock = clock or asyncio.get_running_loop().time
        self._global = asyncio.Semaphore(limits.concurrency)
        self._per_host = limits.per_host
        self._rate = RateLimiter(limits.rate, self._clock) if limits.rate else None
        self._hosts: dict[str, _Host] = {}

    async def acquire(self, host: str) -> None:
        """Wait for a request slot for `host`; pair it with `release(host)`.

        Order: host pause, per-host slot, global slot, then the rate (last, so that the
        moment a request may start is the moment it starts). A pause that began while we
        waited for a slot sends us back to wait it out, holding nothing.
        """
        state = self._hosts.get(host)
        if state is None:
            state = self._hosts[host] = _Host(self._per_host)
        state.users += 1
        try:
            while True:
                # A pause may be extended while we sleep, so look again after each nap.
                while (delay := state.paused_until - self._clock()) > 0:  # noqa: ASYNC110
                    await asyncio.sleep(delay)
                await self._take_slots(state)
                if state.paused_until <= self._clock():
                    break
                self._give_slots(state)
            if self._rate is not None:
                try:
                    await self._rate.wait()
                except BaseException:
                    self._give_slots(state)
                    raise
        except BaseException:
            self._leave(host, state)
            raise

    def release(self, host: str) -> None:
        """Give back the slot taken by `acquire(host)`."""
        state = self._hosts[host]
        self._give_slots(state)
        self._leave(host, state)

    async def _take_slots(self, state: _Host) -> None:
        if state.semaphore is not None:
            await state.semaphore.acquire()
        try:
            await self._global.acquire()
        except BaseException:
            if state.semaphore is not None:
                state.semaphore.release()
            raise

    def _give_slots(self, state: _Host) -> None:
        self._global.release()
        if state.semaphore is not None:
            state.semaphore.release()

    def _leave(self, host: str, state: _Host) -> None:
        state.users -= 1
        if state.users == 0 and state.paused_until <= self._clock():
            # Forget idle hosts, so a list of a million hosts does not grow a million entries.
            del self._hosts[host]

    def pause_host(self, host: str, seconds: float, *, announce: bool = True) -> None:
        """Start no new request to `host` for `seconds` (a Retry-After on 429/503)."""
        if announce and self._on_pause is not None:
            self._on_pause(host, seconds)
        state = self._hosts.get(host)
        if state is None:
            state = self._hosts[host] = _Host(self._per_host)
        state.paused_until = max(state.paused_until, self._clock() + seconds)

    def host_pause(self, host: str) -> float:
        """Seconds until `host` may be contacted again (0 when it is not paused)."""
        state = self._hosts.get(host)
        return max(0.0, state.paused_until - self._clock()) if state else 0.0
