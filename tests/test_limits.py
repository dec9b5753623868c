"""The Limiter: global and per-host limits hold; paused hosts wait; the rate is kept."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from fetchcli.config import Limits
from fetchcli.limits import Limiter, RateLimiter

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def slot(limiter: Limiter, host: str) -> AsyncIterator[None]:
    await limiter.acquire(host)
    try:
        yield
    finally:
        limiter.release(host)


async def peak_in_flight(limiter: Limiter, hosts: list[str]) -> tuple[int, dict[str, int]]:
    current: dict[str, int] = {}
    peak_by_host: dict[str, int] = {}
    peak = 0
    total = 0

    async def one(host: str) -> None:
        nonlocal peak, total
        async with slot(limiter, host):
            total += 1
            current[host] = current.get(host, 0) + 1
            peak = max(peak, total)
            peak_by_host[host] = max(peak_by_host.get(host, 0), current[host])
            await asyncio.sleep(0.001)
            current[host] -= 1
            total -= 1

    await asyncio.gather(*(one(host) for host in hosts))
    return peak, peak_by_host


async def test_the_global_limit_holds():
    peak, _ = await peak_in_flight(Limiter(Limits(concurrency=5)), ["a"] * 50 + ["b"] * 50)
    assert peak == 5


async def test_the_per_host_limit_holds():
    limiter = Limiter(Limits(concurrency=10, per_host=2))
    peak, by_host = await peak_in_flight(limiter, ["a", "b", "c"] * 20)
    assert by_host == {"a": 2, "b": 2, "c": 2} and peak == 6


async def test_a_paused_host_waits_and_others_do_not():
    loop = asyncio.get_running_loop()
    limiter = Limiter(Limits(concurrency=4))
    limiter.pause_host("slow", 0.2)
    started: dict[str, float] = {}

    async def one(host: str) -> None:
        async with slot(limiter, host):
            started[host] = loop.time()

    begin = loop.time()
    await asyncio.gather(one("slow"), one("fast"))
    assert started["fast"] - begin < 0.1
    assert started["slow"] - begin >= 0.2


async def test_idle_hosts_are_forgotten():
    limiter = Limiter(Limits(concurrency=4, per_host=1))
    await peak_in_flight(limiter, [f"h{i}" for i in range(1000)])
    assert limiter._hosts == {}


async def test_the_rate_limiter_spaces_starts():
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    rate = RateLimiter(10, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        await rate.wait()
    now[0] = 5.0  # after a quiet spell, no debt is carried over
    await rate.wait()
    assert slept == pytest.approx([0.1, 0.2, 0.3])


async def test_a_pause_that_begins_while_waiting_for_a_slot_is_respected():
    loop = asyncio.get_running_loop()
    limiter = Limiter(Limits(concurrency=1))
    await limiter.acquire("h")  # the only slot is taken
    waiter = asyncio.ensure_future(limiter.acquire("h"))
    await asyncio.sleep(0)
    limiter.pause_host("h", 0.2)  # e.g. a 429 arrives for the request holding the slot
    paused_at = loop.time()
    limiter.release("h")
    await waiter
    assert loop.time() - paused_at >= 0.2
    limiter.release("h")


async def test_pauses_are_announced_once():
    heard: list[tuple[str, float]] = []
    limiter = Limiter(Limits(), on_pause=lambda host, seconds: heard.append((host, seconds)))
    limiter.pause_host("a", 3)
    limiter.pause_host("b", 1, announce=False)  # one that came from another engine
    assert heard == [("a", 3)]
