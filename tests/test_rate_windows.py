"""The --limit-rate promise, checked exactly on a virtual clock: over every 5 s window of a long
transfer the bytes granted are within 10% of rate x 5 s, and no transfer starves: alone, a big
file beside small ones, and across engine processes whose shares the coordinator moves.

Everything runs on tests/virtual_time.py's loop, so `Bandwidth` runs as it does in a run (the
loop's clock, `asyncio.sleep`) and the coordinator's own `_rebalance` sends the `Share`
messages, over the wire format, to each engine's `Bandwidth`. "Every window" is meant
literally: the bytes in (s, s + 5] change only where an edge meets a grant, so the starts at
each grant and 5 s before it see every count there is.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from fetchcli.bandwidth import BURST_SECONDS, Bandwidth
from fetchcli.config import Settings
from fetchcli.parallel.coordinator import _Engine, _Pool
from fetchcli.parallel.engine import REPORT_SECONDS
from fetchcli.parallel.wire import EngineStats, Share, read_message
from fetchcli.stats import RunStats
from tests.virtual_time import run

KiB, MiB = 1024, 1024 * 1024
RATE = 2 * MiB
WINDOW = 5.0
STATS_SECONDS = 5 * REPORT_SECONDS  # how often an engine reports its stats (engine.py)
_EDGE = 1e-9  # windows shifted by a nanosecond: grants at a window's very edge fall inside


@dataclass
class Grant:
    when: float
    size: int
    flow: str


@dataclass
class Ledger:
    """Every grant of a scenario, and when each transfer began and ended."""

    grants: list[Grant] = field(default_factory=list)
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)

    def window_counts(self, start: float, end: float) -> list[tuple[float, int]]:
        """(s, bytes granted in (s, s + WINDOW]) for every distinct count with start <= s and
        s + WINDOW <= end."""
        times = [g.when for g in self.grants]
        totals = list(itertools.accumulate((g.size for g in self.grants), initial=0))
        starts = {start} | {t for t in times} | {t - WINDOW for t in times}
        counts = []
        for s in sorted(x for x in starts if start <= x <= end - WINDOW):
            low = bisect.bisect_right(times, s + _EDGE)
            high = bisect.bisect_right(times, s + WINDOW + _EDGE)
            counts.append((s, totals[high] - totals[low]))
        return counts

    def busy(self) -> tuple[float, float]:
        """From the first transfer's start to the last one's end."""
        return min(a for a, _ in self.spans.values()), max(b for _, b in self.spans.values())

    def most_at_once(self, name: str) -> int:
        """The most transfers that ran at once during `name`'s life (itself included)."""
        began, ended = self.spans[name]
        edges = [began] + [a for a, _ in self.spans.values() if began < a < ended]
        return max(sum(1 for a, b in self.spans.values() if a <= t < b) for t in edges)

    def rate_of(self, name: str) -> float:
        began, ended = self.spans[name]
        return sum(g.size for g in self.grants if g.flow == name) / (ended - began)


def network_chunks(seed: int, small: int, large: int) -> Callable[[], int]:
    """Chunk sizes as sockets hand them over: anything between `small` and `large`."""
    draw = random.Random(seed)
    return lambda: draw.randint(small, large)


async def transfer(
    ledger: Ledger,
    bandwidth: Bandwidth,
    name: str,
    size: int,
    chunk: Callable[[], int],
    start: float,
    in_flight: list[int] | None = None,
) -> None:
    """A reader as the fetcher's: a chunk arrives (after a short read), is paid for, and only
    then is the next one read."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(start)
    began = loop.time()
    if in_flight is not None:
        in_flight[0] += 1
    flow, left, reads = bandwidth.flow(), size, random.Random(name)
    while left > 0:
        await asyncio.sleep(reads.uniform(0, 0.002))  # the socket read itself
        piece = min(chunk(), left)
        await flow.consume(piece)
        ledger.grants.append(Grant(loop.time(), piece, name))
        left -= piece
    if in_flight is not None:
        in_flight[0] -= 1
    ledger.spans[name] = (began, loop.time())


def assert_every_window_holds_the_rate(ledger: Ledger) -> None:
    """Every window of the busy time, the first one included, is within 10% of the rate."""
    began, ended = ledger.busy()
    counts = ledger.window_counts(began, ended)
    assert len(counts) > 100  # a long transfer: many distinct windows were looked at
    low, high = min(c for _, c in counts), max(c for _, c in counts)
    worst = max(counts, key=lambda sc: abs(sc[1] - RATE * WINDOW))
    assert low >= 0.9 * RATE * WINDOW and high <= 1.1 * RATE * WINDOW, (
        f"window from {worst[0]:.3f} s: {worst[1] / WINDOW / RATE:.3f} of the rate"
    )


def assert_nobody_starves(ledger: Ledger, share: float) -> None:
    """Each transfer had at least `share` of its fair part (the rate over the most transfers
    that ran beside it) over its whole life."""
    for name in ledger.spans:
        fair = RATE / ledger.most_at_once(name)
        assert ledger.rate_of(name) >= share * fair, (name, ledger.rate_of(name) / fair)


def simulate(*coroutines: Coroutine[Any, Any, None]) -> None:
    async def main() -> None:
        async with asyncio.TaskGroup() as group:
            for coroutine in coroutines:
                group.create_task(coroutine)

    run(main())


# --- One engine ---------------------------------------------------------------------------


def test_one_long_transfer_holds_the_rate_in_every_5s_window():
    ledger = Ledger()

    async def scenario() -> None:
        bandwidth = Bandwidth(RATE, clock=asyncio.get_running_loop().time)
        await transfer(ledger, bandwidth, "long", 60 * MiB, network_chunks(1, 1, 256 * KiB), 0)

    simulate(scenario())
    assert_every_window_holds_the_rate(ledger)
    began, ended = ledger.spans["long"]
    assert ended - began <= 60 * MiB / RATE + 0.01  # never slower than the cap, less a hair
    assert ended - began >= 60 * MiB / RATE - BURST_SECONDS - 1e-9  # nor faster


def test_a_big_file_beside_small_ones_holds_the_rate_and_starves_nobody():
    ledger = Ledger()

    async def scenario() -> None:
        bandwidth = Bandwidth(RATE, clock=asyncio.get_running_loop().time)
        async with asyncio.TaskGroup() as group:
            big = network_chunks(2, 64 * KiB, 256 * KiB)
            group.create_task(transfer(ledger, bandwidth, "big", 50 * MiB, big, 0))
            group.create_task(
                transfer(ledger, bandwidth, "medium", 8 * MiB, network_chunks(3, 1, 64 * KiB), 4)
            )
            for i in range(40):  # small files coming and going, a few at a time
                chunks = network_chunks(10 + i, 1, 16 * KiB)
                start = 1.0 + 0.25 * i + 0.1 * (i % 3)
                group.create_task(
                    transfer(ledger, bandwidth, f"small{i}", 300 * KiB, chunks, start)
                )

    simulate(scenario())
    assert_every_window_holds_the_rate(ledger)
    # Processor sharing: a small file next to the big one (and the medium one) is done in
    # about its share's time, not after the big one's backlog. "About": while a reader reads
    # its next chunk it waits on no link, and the others carry on with the whole of it.
    assert_nobody_starves(ledger, share=0.8)
    assert max(ledger.most_at_once(f"small{i}") for i in range(40)) >= 4


# --- Engine processes: the coordinator splits the cap ---------------------------------------


class Pipe:
    """The coordinator's end of an engine's socket, in memory: what it writes, the engine
    reads (with `read_message`, as engine.py does)."""

    def __init__(self) -> None:
        self.reader = asyncio.StreamReader()

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.reader.feed_data(data)


@dataclass
class SimEngine:
    """One engine process as the coordinator sees it and as it runs: its Bandwidth, fed by
    the Share messages its listener reads, and its count of transfers in flight."""

    view: _Engine
    pipe: Pipe
    bandwidth: Bandwidth
    in_flight: list[int] = field(default_factory=lambda: [0])
    shares: list[tuple[float, float]] = field(default_factory=list)

    async def listen(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            match await read_message(self.pipe.reader):
                case Share(rate):
                    self.bandwidth.set_rate(rate)
                    self.shares.append((loop.time(), rate))
                case other:
                    msg = f"unexpected {other!r}"
                    raise AssertionError(msg)

    async def report(self, pool: _Pool, phase: float) -> None:
        await asyncio.sleep(phase)
        while True:
            pool._take_stats(self.view, EngineStats(self.in_flight[0], 0, 0, 0, []))
            await asyncio.sleep(STATS_SECONDS)


def engines(count: int) -> tuple[_Pool, list[SimEngine]]:
    """A coordinator's pool of `count` engines with --limit-rate RATE, each engine's
    Bandwidth at the first share the coordinator gives it (Start's settings)."""
    settings = Settings.create(limit_rate=RATE, processes=count)
    pool = _Pool(settings, count, emit=_no_emit, stats=RunStats())
    clock = asyncio.get_running_loop().time
    sims = []
    for index in range(count):
        pipe = Pipe()
        view = _Engine(index, None, None, pipe, window=64, hungry=16)  # type: ignore[arg-type]
        view.rate = pool._share(index).limit_rate
        assert view.rate is not None
        pool._engines.append(view)
        sims.append(SimEngine(view, pipe, Bandwidth(view.rate, clock=clock)))
    return pool, sims


async def _no_emit(record: object) -> None:
    raise AssertionError("no record is emitted here")


def test_engines_together_hold_the_rate_in_every_5s_window_and_starve_nobody():
    ledger = Ledger()

    async def scenario() -> None:
        pool, sims = engines(3)
        first, second, third = sims
        async with asyncio.TaskGroup() as group:
            helpers = [group.create_task(sim.listen()) for sim in sims]
            helpers += [
                group.create_task(sim.report(pool, STATS_SECONDS * i / len(sims)))
                for i, sim in enumerate(sims)
            ]
            work: list[asyncio.Task[None]] = []

            def start(sim: SimEngine, name: str, size: int, chunks: int, when: float) -> None:
                coroutine = transfer(
                    ledger, sim.bandwidth, name, size, network_chunks(len(work), 1, chunks),
                    when, sim.in_flight,
                )  # fmt: skip
                work.append(group.create_task(coroutine))

            start(first, "big", 40 * MiB, 256 * KiB, 0.0)  # one long transfer on one engine
            for i in range(6):  # one after another on the next (~2 s each at their share)
                start(second, f"medium{i}", 1536 * KiB, 64 * KiB, 2.0 + 2.5 * i)
            for i in range(12):  # bursts of small ones on the third
                start(third, f"small{i}", 400 * KiB, 16 * KiB, 5.0 + 1.5 * (i // 3))
            await asyncio.gather(*work)
            for helper in helpers:
                helper.cancel()

        # The coordinator moved the shares as the work moved, and they always added up.
        assert all(len(sim.shares) >= 3 for sim in sims)
        assert sum(sim.view.rate or 0 for sim in sims) <= RATE * (1 + 1e-9)

    simulate(scenario())
    assert_every_window_holds_the_rate(ledger)
    # A rebalance comes with the next stats (every 0.1 s): a transfer that starts on an idle
    # engine runs on its small floor until then, so its share is a little under the fair one.
    assert_nobody_starves(ledger, share=0.8)
