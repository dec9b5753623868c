"""The bandwidth cap on a virtual clock: the rate, its accuracy over 5 s windows, fairness
between flows whatever their chunk sizes, backpressure, cancellation, rate changes."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import time
from collections.abc import Awaitable, Coroutine
from typing import Any

import pytest

from fetchcli.bandwidth import (
    BURST_SECONDS,
    Bandwidth,
    read_size,
    receive_buffer,
    split_rate,
    throttled,
)
from fetchcli.config import parse_rate
from fetchcli.errors import UsageError

KiB, MiB = 1024, 1024 * 1024


class VirtualTime:
    """A clock and a sleep for asyncio code: time moves only when every task waits on a
    virtual sleep, straight to the next wake-up (plus `late` seconds at most, at random, as a
    loaded event loop wakes sleepers late)."""

    def __init__(self, late: float = 0.0, seed: int = 1) -> None:
        self.now = 0.0
        self._late = late
        self._random = random.Random(seed)
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        wake = self.now + max(0.0, delay) + self._random.uniform(0, self._late)
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (wake, next(self._order), future))
        await future

    def bandwidth(self, rate: float, **kwargs: Any) -> Bandwidth:
        return Bandwidth(rate, clock=self.clock, sleep=self.sleep, **kwargs)

    async def run(self, *coroutines: Coroutine[Any, Any, Any]) -> list[Any]:
        tasks = [asyncio.ensure_future(c) for c in coroutines]
        while True:
            for _ in range(10):  # let every ready task run until it waits again
                await asyncio.sleep(0)
            if all(task.done() for task in tasks):
                return [task.result() for task in tasks]
            while self._timers and self._timers[0][2].cancelled():
                heapq.heappop(self._timers)
            assert self._timers, "deadlock: tasks wait on nothing the clock can end"
            wake = self._timers[0][0]
            self.now = max(self.now, wake)
            while self._timers and self._timers[0][0] <= wake:  # due together: woken together
                _, _, future = heapq.heappop(self._timers)
                if not future.cancelled():
                    future.set_result(None)

    async def at(self, when: float) -> None:
        await self.sleep(when - self.now)


Log = list[tuple[float, int]]  # (time a chunk was released, its size)


async def transfer(
    vt: VirtualTime, bandwidth: Bandwidth, size: int, chunk: int, log: Log, start: float = 0.0
) -> float:
    """A reader that reads `chunk` bytes at a time (instantly) and pays for each; returns the
    time its last byte was released."""
    await vt.at(start)
    flow = bandwidth.flow()
    left = size
    while left > 0:
        piece = min(chunk, left)
        await flow.consume(piece)
        log.append((vt.now, piece))
        left -= piece
    return vt.now


def bytes_between(log: Log, start: float, end: float) -> int:
    return sum(size for when, size in log if start < when <= end)


def run(coroutine: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coroutine

    return asyncio.run(main())


# --- Parsing and splitting -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "rate"),
    [
        ("2M", 2 * MiB),
        ("2m", 2 * MiB),
        ("500k", 500 * KiB),
        ("500K", 500 * KiB),
        ("1G", 1024 * MiB),
        ("1.5M", 1.5 * MiB),
        (".5k", 512),
        ("100000", 100000),
        (" 2 M ", 2 * MiB),
        ("2MB", 2 * MiB),
        ("2MiB", 2 * MiB),
        ("2M/s", 2 * MiB),
        ("64kb/s", 64 * KiB),
        ("1", 1),
        (4096, 4096),
        (2.5, 2.5),
    ],
)
def test_parse_rate(raw, rate):
    assert parse_rate(raw) == rate


@pytest.mark.parametrize(
    "raw",
    ["", "M", "2X", "-1M", "0", "0k", "0.5", "2 M B x", "1e6", "nan", "inf", "2T", "1,5M", 0, -3],
)
def test_parse_rate_rejects_with_one_line_naming_the_flag(raw):
    with pytest.raises(UsageError) as caught:
        parse_rate(raw)
    message = str(caught.value)
    assert message.startswith("--limit-rate ") and "\n" not in message


def test_parse_rate_rejects_non_finite_numbers():
    for raw in (float("nan"), float("inf")):
        with pytest.raises(UsageError):
            parse_rate(raw)


def test_read_size_is_about_50ms_of_the_rate_within_bounds():
    assert read_size(2 * MiB) == 2 * MiB // 20
    assert read_size(1) == 4096
    assert read_size(1024 * MiB) == 256 * KiB
    assert read_size(1024 * MiB, ceiling=64 * KiB) == 64 * KiB


def test_receive_buffer_is_an_eighth_of_a_second_of_the_cap_within_bounds():
    assert receive_buffer(2 * MiB) == 2 * MiB // 8
    assert receive_buffer(1) == 64 * KiB
    assert receive_buffer(1024 * MiB) == 4 * MiB


def test_split_rate_goes_by_transfers_and_keeps_a_little_for_idle_engines():
    shares = split_rate(10 * MiB, [3, 1, 0, 0])
    assert sum(shares) == pytest.approx(10 * MiB) and sum(shares) <= 10 * MiB * (1 + 1e-12)
    assert shares[0] > shares[1] > shares[2] == shares[3] > 0
    assert shares[0] - shares[2] == pytest.approx(3 * (shares[1] - shares[2]))
    assert shares[2] == pytest.approx(10 * MiB * 0.05 / 4)


def test_split_rate_evenly_when_nothing_runs_and_empty_for_no_engine():
    assert split_rate(8.0, [0, 0, 0, 0]) == [2.0, 2.0, 2.0, 2.0]
    assert split_rate(8.0, [0, -1]) == [4.0, 4.0]
    assert split_rate(8.0, []) == []
    assert split_rate(8.0, [5]) == [8.0]


def test_a_bandwidth_needs_a_positive_rate():
    for rate in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            Bandwidth(rate, clock=time.monotonic)


# --- The rate ------------------------------------------------------------------------------


def test_one_transfer_takes_size_over_rate_less_the_burst():
    vt = VirtualTime()
    bandwidth = vt.bandwidth(2 * MiB)
    log: Log = []
    (end,) = run(vt.run(transfer(vt, bandwidth, 10 * MiB, 64 * KiB, log)))
    assert end == pytest.approx(5.0 - BURST_SECONDS)
    assert sum(size for _, size in log) == 10 * MiB == bandwidth.paid


def test_consume_returns_only_once_the_bytes_are_carried():
    vt = VirtualTime()
    bandwidth = vt.bandwidth(1 * MiB, burst=0.0)
    flow = bandwidth.flow()
    seen: list[tuple[str, float]] = []

    async def reader() -> None:
        await flow.consume(MiB)
        seen.append(("consumed", vt.now))

    async def watcher() -> None:
        await vt.at(0.5)
        seen.append(("watch", vt.now))

    run(vt.run(reader(), watcher()))
    assert seen == [("watch", 0.5), ("consumed", pytest.approx(1.0))]
    assert flow.paid == MiB


def test_ten_transfers_at_once_hold_the_total_rate():
    vt = VirtualTime()
    bandwidth = vt.bandwidth(2 * MiB)
    log: Log = []
    ends = run(vt.run(*(transfer(vt, bandwidth, MiB, 64 * KiB, log) for _ in range(10))))
    # 10 MiB at 2 MiB/s: 5 s less the burst, which the first reader spent alone.
    assert max(ends) == pytest.approx(5.0 - BURST_SECONDS)
    assert min(ends) >= 5.0 - BURST_SECONDS * 10 - 1e-9  # its head start, shared by ten


def test_ten_transfers_at_once_share_alike():
    vt = VirtualTime()
    bandwidth = vt.bandwidth(2 * MiB, burst=0.0)
    log: Log = []
    ends = run(vt.run(*(transfer(vt, bandwidth, MiB, 64 * KiB, log) for _ in range(10))))
    assert ends == [pytest.approx(5.0)] * 10


@pytest.mark.parametrize("late", [0.0, 0.002, 0.02])
def test_every_5s_window_is_within_10_percent_with_late_wakeups(late):
    vt = VirtualTime(late=late, seed=7)
    rate = 2 * MiB
    bandwidth = vt.bandwidth(rate)
    log: Log = []
    transfers = [
        transfer(vt, bandwidth, 30 * MiB, 256 * KiB, log),
        transfer(vt, bandwidth, 12 * MiB, 16 * KiB, log, start=3.0),
        transfer(vt, bandwidth, 8 * MiB, 100 * KiB, log, start=7.5),
        *(transfer(vt, bandwidth, 200 * KiB, 8 * KiB, log, start=10 + i) for i in range(5)),
    ]
    run(vt.run(*transfers))
    end = max(when for when, _ in log)
    total = sum(size for _, size in log)
    assert total / end == pytest.approx(rate, rel=0.02)
    for tenth in range(int((end - 5) * 10)):
        start = tenth / 10
        assert bytes_between(log, start, start + 5) == pytest.approx(5 * rate, rel=0.10), start


def test_an_idle_link_lends_at_most_the_burst():
    vt = VirtualTime()
    bandwidth = vt.bandwidth(1 * MiB)
    log: Log = []

    async def scenario() -> None:
        await transfer(vt, bandwidth, 64 * KiB, 64 * KiB, log)
        await vt.at(10.0)  # a long idle time earns no more than the burst
        await transfer(vt, bandwidth, 1 * MiB, 1 * MiB, log, start=10.0)

    run(vt.run(scenario()))
    assert log[-1][0] == pytest.approx(10.0 + 1.0 - BURST_SECONDS)


# --- Fairness -------------------------------------------------------------------------------


def test_flows_share_by_bytes_whatever_their_chunk_sizes():
    vt = VirtualTime()
    bandwidth = vt.bandwidth(1 * MiB)
    big: Log = []
    small: Log = []
    run(
        vt.run(
            transfer(vt, bandwidth, 20 * MiB, 256 * KiB, big),
            transfer(vt, bandwidth, 5 * MiB, 16 * KiB, small),
        )
    )
    # While both run (the first 10 s), each gets half the link, not one chunk per turn.
    assert bytes_between(small, 1, 9) == pytest.approx(4 * MiB, rel=0.05)
    assert bytes_between(big, 1, 9) == pytest.approx(4 * MiB, rel=0.08)


def test_small_files_are_not_starved_by_a_big_one():
    vt = VirtualTime()
    bandwidth = vt.bandwidth(1 * MiB)
    big: Log = []
    small: Log = []
    ends = run(
        vt.run(
            transfer(vt, bandwidth, 50 * MiB, 256 * KiB, big),
            *(transfer(vt, bandwidth, 100 * KiB, 16 * KiB, small, start=2.0) for _ in range(5)),
        )
    )
    # Six flows share 1 MiB/s: 100 KiB each takes ~0.6 s. One chunk per turn would make
    # each small file wait behind 256 KiB per 16 KiB: over 2 s.
    assert max(ends[1:]) - 2.0 == pytest.approx(6 * 100 * KiB / MiB, rel=0.1)
    # ... and the big one kept its share: the link never idled.
    assert ends[0] == pytest.approx((50 * MiB + 500 * KiB) / MiB - BURST_SECONDS)


def test_a_newcomer_is_served_at_once_beside_a_backlog():
    vt = VirtualTime()
    bandwidth = vt.bandwidth(1 * MiB, burst=0.0)
    log: Log = []
    ends = run(
        vt.run(
            transfer(vt, bandwidth, 4 * MiB, 4 * MiB, log),  # one huge chunk on the link
            transfer(vt, bandwidth, 8 * KiB, 8 * KiB, log, start=1.0),
        )
    )
    assert ends[1] == pytest.approx(1.0 + 2 * 8 * KiB / MiB)
    assert ends[0] == pytest.approx(4.0 + 8 * KiB / MiB)


# --- Changes, cancellation, the wrapper -----------------------------------------------------


def test_set_rate_applies_from_that_moment():
    vt = VirtualTime()
    bandwidth = vt.bandwidth(1 * MiB, burst=0.0)
    log: Log = []

    async def rebalance() -> None:
        await vt.at(2.0)
        bandwidth.set_rate(4 * MiB)

    ends = run(vt.run(transfer(vt, bandwidth, 6 * MiB, 64 * KiB, log), rebalance()))
    assert bandwidth.rate == 4 * MiB
    assert ends[0] == pytest.approx(2.0 + 4 * MiB / (4 * MiB), abs=0.02)
    with pytest.raises(ValueError):
        bandwidth.set_rate(0)


def test_a_cancelled_chunk_gives_its_share_back_and_leaves_no_timer():
    vt = VirtualTime()
    bandwidth = vt.bandwidth(1 * MiB, burst=0.0)
    ended: list[float] = []

    async def scenario() -> None:
        victim = asyncio.ensure_future(bandwidth.flow().consume(10 * MiB))
        survivor = bandwidth.flow()

        async def survive() -> None:
            await survivor.consume(2 * MiB)
            ended.append(vt.now)

        task = asyncio.ensure_future(survive())
        await vt.at(1.0)  # both at half the link until now: 0.5 MiB of each carried
        victim.cancel()
        with pytest.raises(asyncio.CancelledError):
            await victim
        await task

    run(vt.run(scenario()))
    assert ended == [pytest.approx(1.0 + 1.5)]
    assert bandwidth._timer is None and not bandwidth._waiting


def test_throttled_hands_on_every_chunk_in_order_at_the_rate():
    vt = VirtualTime()
    bandwidth = vt.bandwidth(100 * KiB, burst=0.0)
    chunks = [bytes([i]) * 10 * KiB for i in range(10)]
    times: list[float] = []

    async def source():
        for chunk in chunks:
            yield chunk

    async def read() -> list[bytes]:
        got = []
        async for chunk in throttled(source(), bandwidth.flow()):
            got.append(chunk)
            times.append(vt.now)
        return got

    (got,) = run(vt.run(read()))
    assert got == chunks
    assert times == pytest.approx([0.1 * (i + 1) for i in range(10)])


def test_on_a_real_loop_the_cap_is_never_beaten():
    async def main() -> float:
        loop = asyncio.get_running_loop()
        bandwidth = Bandwidth(40 * MiB, clock=loop.time)
        flows = [bandwidth.flow() for _ in range(4)]
        started = loop.time()

        async def pull(flow) -> None:
            for _ in range(32):
                await flow.consume(64 * KiB)

        await asyncio.gather(*(pull(flow) for flow in flows))
        return loop.time() - started

    # 8 MiB at 40 MiB/s: 0.2 s less the 0.1 s burst can never be beaten (a bound, not a
    # timing target: a loaded machine only makes it slower).
    elapsed = asyncio.run(main())
    assert elapsed >= 8 * MiB / (40 * MiB) - BURST_SECONDS - 1e-3


def test_zero_bytes_cost_nothing():
    vt = VirtualTime()
    bandwidth = vt.bandwidth(1.0)

    async def nothing() -> float:
        await bandwidth.flow().consume(0)
        return vt.now

    assert run(vt.run(nothing())) == [0.0]
    assert bandwidth.paid == 0
