"""The frontier: the limits hold as a server sees them, no job is lost or doubled, lanes keep their
order, busy or paused hosts hold no worker, the park is bounded, and nothing is left running.

Every test runs on a virtual-time event loop (tests/virtual_time.py): the fake attempts sleep
for their "network" time and the frontier's timers fire, and no real time passes.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fetchcli.frontier import Again, Frontier, Slot, work
from fetchcli.stats import Pauses
from tests.virtual_time import run

EPSILON = 1e-9


@dataclass(frozen=True)
class FakeJob:
    id: int
    host: str
    duration: float = 0.05
    failures: int = 0  # attempts that fail before one succeeds
    retry_delay: float = 0.0
    pause: float = 0.0  # with each failure, the server pauses the host this long


Item = tuple[FakeJob, int]  # the job and its attempt number (0: first)


@dataclass
class Server:
    """What the server sees, and the checks of every limit against it."""

    frontier: Frontier[Item]
    park: int
    per_host: int = 0
    concurrency: int = 1
    in_flight: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    peak: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    total: int = 0
    peak_total: int = 0
    starts: list[tuple[float, str, int, int]] = field(default_factory=list)  # t, host, id, try
    pauses: dict[str, float] = field(default_factory=dict)  # host: paused until
    finished: list[int] = field(default_factory=list)

    def check_park(self) -> None:
        # The bound on memory: jobs waiting in lanes or in flight, retries included.
        frontier = self.frontier
        assert frontier.parked + frontier.in_flight <= self.park + self.concurrency

    async def attempt(self, item: Item) -> int | Again[Item]:
        job, tries = item
        now = asyncio.get_running_loop().time()
        assert now >= self.pauses.get(job.host, 0.0) - EPSILON, "started while paused"
        self.check_park()
        self.starts.append((now, job.host, job.id, tries))
        self.in_flight[job.host] += 1
        self.total += 1
        self.peak[job.host] = max(self.peak[job.host], self.in_flight[job.host])
        self.peak_total = max(self.peak_total, self.total)
        try:
            await asyncio.sleep(job.duration)
        finally:
            self.in_flight[job.host] -= 1
            self.total -= 1
        if tries < job.failures:
            if job.pause:
                until = asyncio.get_running_loop().time() + job.pause
                self.pauses[job.host] = max(self.pauses.get(job.host, 0.0), until)
                self.frontier.pause_host(job.host, job.pause)
            return Again((job, tries + 1), job.retry_delay)
        return job.id

    async def finish(self, job_id: int) -> None:
        self.finished.append(job_id)


async def crawl(
    jobs: list[FakeJob],
    *,
    concurrency: int = 100,
    workers: int | None = None,
    per_host: int = 0,
    rate: float = 0.0,
    per_host_rate: float = 0.0,
    park: int = 1000,
) -> Server:
    """Producer -> bounded queue -> feed -> frontier -> workers, as the pipeline wires them."""
    frontier: Frontier[Item] = Frontier(
        concurrency=concurrency,
        per_host=per_host,
        rate=rate,
        per_host_rate=per_host_rate,
        park=park,
    )
    server = Server(frontier, park, per_host, concurrency)
    queue: asyncio.Queue[Item | None] = asyncio.Queue(maxsize=4)

    async def produce() -> None:
        for job in jobs:
            await queue.put((job, 0))
            server.check_park()
        await queue.put(None)

    async with asyncio.TaskGroup() as group:
        group.create_task(produce())
        group.create_task(frontier.feed(queue, lambda item: item[0].host))
        for _ in range(workers or concurrency):
            group.create_task(work(frontier, server.attempt, server.finish))
    return server


def first_starts(server: Server) -> dict[str, list[int]]:
    by_host: dict[str, list[int]] = defaultdict(list)
    for _, host, job_id, tries in server.starts:
        if tries == 0:
            by_host[host].append(job_id)
    return by_host


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


# --- the invariants, on random workloads -----------------------------------------------------

jobs_strategy = st.lists(
    st.tuples(
        st.integers(0, 7),  # host
        st.sampled_from([0.0, 0.01, 0.05, 0.2]),  # duration
        st.integers(0, 2),  # failures
        st.sampled_from([0.0, 0.03, 0.5]),  # retry delay
        st.sampled_from([0.0, 0.0, 0.1, 1.0]),  # pause with each failure
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    raw=jobs_strategy,
    concurrency=st.integers(1, 8),
    workers=st.integers(1, 10),
    per_host=st.integers(0, 3),
    rate=st.sampled_from([0.0, 0.0, 10.0, 33.0]),
    per_host_rate=st.sampled_from([0.0, 0.0, 5.0, 40.0]),
    park=st.integers(1, 12),
)
def test_the_invariants_hold_for_random_workloads(
    raw, concurrency, workers, per_host, rate, per_host_rate, park
):
    jobs = [FakeJob(i, f"h{h}", d, f, r, p) for i, (h, d, f, r, p) in enumerate(raw)]

    async def main() -> tuple[Server, int]:
        server = await crawl(
            jobs,
            concurrency=concurrency,
            workers=workers,
            per_host=per_host,
            rate=rate,
            per_host_rate=per_host_rate,
            park=park,
        )
        await asyncio.sleep(10)  # past every pause and rate gap: nothing left to remember
        return server, server.frontier.hosts

    server, hosts_left = run(main())
    # Every job finished exactly once, after exactly its attempts.
    assert sorted(server.finished) == [job.id for job in jobs]
    assert len(server.starts) == sum(job.failures + 1 for job in jobs)
    # The limits, as the server saw them.
    assert server.peak_total <= min(concurrency, workers)
    if per_host:
        assert max(server.peak.values(), default=0) <= per_host
    times = [t for t, *_ in server.starts]
    if rate:
        assert min(gaps(times), default=1.0) >= 1 / rate - EPSILON
    if per_host_rate:
        for host in {job.host for job in jobs}:
            host_times = [t for t, h, *_ in server.starts if h == host]
            assert min(gaps(host_times), default=1.0) >= 1 / per_host_rate - EPSILON
    # First attempts start in list order within each host.
    for host, ids in first_starts(server).items():
        assert ids == sorted(ids), host
    frontier = server.frontier
    assert (frontier.in_flight, frontier.parked, frontier.retrying, hosts_left) == (0, 0, 0, 0)


# --- speed: nobody waits on a busy or paused host -----------------------------------------------


def test_a_list_grouped_by_host_runs_at_full_speed():
    # W5 in miniature: 20 hosts x 20 URLs, grouped, -c 100 --per-host 4, 50 ms per answer.
    jobs = [FakeJob(h * 20 + i, f"h{h:02d}") for h in range(20) for i in range(20)]

    async def main() -> tuple[Server, float]:
        loop = asyncio.get_running_loop()
        begin = loop.time()
        server = await crawl(jobs, concurrency=100, per_host=4, park=400)
        return server, loop.time() - begin

    server, wall = run(main())
    assert wall == pytest.approx(20 / 4 * 0.05)  # the ideal: every host busy all the time
    assert set(server.peak.values()) == {4}


def test_a_job_whose_host_has_room_passes_a_full_park():
    # The park is full of one slow host's jobs; another host's job still goes straight out.
    jobs = [FakeJob(i, "slow", duration=1.0) for i in range(3)] + [FakeJob(3, "fast")]
    jobs += [FakeJob(i, "slow", duration=1.0) for i in range(4, 6)]

    async def main() -> Server:
        return await crawl(jobs, concurrency=4, per_host=1, park=2)

    server = run(main())
    fast = next(t for t, host, *_ in server.starts if host == "fast")
    assert fast == 0.0  # not after the slow host's first job


def test_a_paused_host_holds_no_worker():
    # Two workers; "paused" says Retry-After 10 at once; "other" has ten jobs that finish first.
    jobs = [FakeJob(0, "paused", failures=1, retry_delay=10, pause=10)]
    jobs += [FakeJob(i, "paused") for i in range(1, 5)]
    jobs += [FakeJob(i, "other", duration=0.1) for i in range(5, 15)]

    async def main() -> Server:
        return await crawl(jobs, concurrency=2, per_host=1)

    server = run(main())
    other_done = max(t for t, host, *_ in server.starts if host == "other") + 0.1
    paused_starts = [round(t, 6) for t, host, *_ in server.starts if host == "paused"]
    assert other_done == pytest.approx(1.0)  # its own pace: ten jobs of 0.1 s, one at a time
    assert paused_starts == [0.0, 10.05, 10.1, 10.15, 10.2, 10.25]
    assert sorted(server.finished) == list(range(15))


def test_a_retry_waits_in_its_lane_not_in_a_worker():
    # One worker: while job 0 waits 5 s to be tried again, the other host's jobs run.
    jobs = [FakeJob(0, "a", duration=0.1, failures=1, retry_delay=5)]
    jobs += [FakeJob(i, "b", duration=0.1) for i in range(1, 4)]

    async def main() -> Server:
        return await crawl(jobs, concurrency=1)

    server = run(main())
    assert [(round(t, 6), job_id, tries) for t, _, job_id, tries in server.starts] == [
        (0.0, 0, 0),
        (0.1, 1, 0),
        (0.2, 2, 0),
        (0.3, 3, 0),
        (5.1, 0, 1),
    ]


def test_a_retry_that_is_due_goes_before_the_lanes_first_attempts():
    jobs = [FakeJob(0, "a", failures=1), FakeJob(1, "a"), FakeJob(2, "a")]

    async def main() -> Server:
        return await crawl(jobs, concurrency=1, per_host=1)

    server = run(main())
    assert [(job_id, tries) for _, _, job_id, tries in server.starts] == [
        (0, 0),
        (0, 1),
        (1, 0),
        (2, 0),
    ]


# --- rates: exact spacing ---------------------------------------------------------------------


def test_per_host_rate_spaces_each_hosts_starts_exactly():
    jobs = [FakeJob(i, host, duration=0.01) for i, host in enumerate(["a", "b"] * 5)]

    async def main() -> Server:
        return await crawl(jobs, concurrency=10, per_host_rate=4)

    server = run(main())
    for host in ("a", "b"):
        times = [t for t, h, *_ in server.starts if h == host]
        assert times == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])


def test_the_global_rate_spaces_all_starts_exactly():
    jobs = [FakeJob(i, f"h{i % 3}", duration=1.0) for i in range(6)]

    async def main() -> Server:
        return await crawl(jobs, concurrency=10, rate=10)

    server = run(main())
    assert [t for t, *_ in server.starts] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])


# --- the park: bounded, and the producer waits --------------------------------------------------


def test_when_the_park_is_full_the_producer_waits():
    async def main() -> None:
        loop = asyncio.get_running_loop()
        frontier: Frontier[int] = Frontier(concurrency=4, park=3)
        frontier.pause_host("h", 5)
        put: list[float] = []

        async def produce() -> None:
            for i in range(5):
                await frontier.put("h", i)
                put.append(loop.time())
            frontier.close()

        async def worker() -> list[int]:
            got = []
            while (slot := await frontier.get()) is not None:
                got.append(slot.item)
                frontier.done(slot)
            return got

        async with asyncio.TaskGroup() as group:
            group.create_task(produce())
            workers = [group.create_task(worker()) for _ in range(2)]
            await asyncio.sleep(1)
            assert put == [0.0, 0.0, 0.0] and frontier.parked == 3  # the fourth put waits
        assert put[3:] == [5.0, 5.0]
        assert sorted(workers[0].result() + workers[1].result()) == [0, 1, 2, 3, 4]

    run(main())


def test_retries_never_wait_for_room_in_the_park():
    async def main() -> None:
        frontier: Frontier[str] = Frontier(concurrency=2, park=1)
        await frontier.put("h", "a")
        slot = await frontier.get()
        await frontier.put("i", "b")  # the park is full now
        assert slot is not None and frontier.parked == 1
        frontier.retry(slot, "a again", 1.0)  # over the park's bound: a retry is not refused
        assert frontier.parked == 2 and frontier.retrying == 1
        frontier.close()
        got = []
        while (slot := await frontier.get()) is not None:
            got.append(slot.item)
            frontier.done(slot)
        assert got == ["b", "a again"]

    run(main())


# --- cancellation and bookkeeping ---------------------------------------------------------------


def test_a_get_cancelled_as_it_receives_a_slot_gives_the_job_back():
    async def main() -> None:
        frontier: Frontier[str] = Frontier(concurrency=1)
        waiting = asyncio.ensure_future(frontier.get())
        await asyncio.sleep(0)  # it waits: nothing to hand out yet
        await frontier.put("h", "job")  # ... handed to `waiting`, which has not run yet
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert (frontier.in_flight, frontier.parked) == (0, 1)
        slot = await frontier.get()
        assert slot is not None and slot.item == "job"
        frontier.done(slot)

    run(main())


def test_cancelling_the_run_leaves_no_task_and_no_slot():
    jobs = [FakeJob(i, f"h{i % 5}", duration=1.0, failures=1, retry_delay=2) for i in range(50)]

    async def main() -> Server | None:
        try:
            async with asyncio.timeout(3.5):
                return await crawl(jobs, concurrency=8, per_host=2, park=10)
        except TimeoutError:
            return None

    assert run(main()) is None  # and run() found no task left behind


def test_workers_stay_while_a_job_in_flight_may_come_back():
    async def main() -> None:
        frontier: Frontier[str] = Frontier(concurrency=2)
        await frontier.put("h", "job")
        frontier.close()
        slot = await frontier.get()
        assert slot is not None
        second = asyncio.ensure_future(frontier.get())
        await asyncio.sleep(1)
        assert not second.done()  # the job in flight may be retried: not finished yet
        frontier.retry(slot, "job, again", 0.5)
        again = await second
        assert again is not None and again.item == "job, again"
        assert asyncio.get_running_loop().time() == pytest.approx(1.5)
        last = asyncio.ensure_future(frontier.get())
        frontier.done(again)
        assert await last is None

    run(main())


def test_idle_hosts_are_forgotten():
    jobs = [FakeJob(i, f"h{i}", duration=0.0) for i in range(10_000)]

    async def main() -> int:
        server = await crawl(jobs, concurrency=16, per_host=1, park=100)
        return server.frontier.hosts

    assert run(main()) == 0


def test_a_paused_idle_host_is_remembered_until_its_pause_ends():
    async def main() -> None:
        frontier: Frontier[str] = Frontier(concurrency=1)
        frontier.pause_host("h", 2)
        await asyncio.sleep(1)
        assert frontier.hosts == 1 and frontier.host_pause("h") == pytest.approx(1)
        await asyncio.sleep(1)
        assert frontier.hosts == 0 and frontier.host_pause("h") == 0

    run(main())


def test_drain_takes_every_waiting_job_out():
    async def main() -> None:
        frontier: Frontier[str] = Frontier(concurrency=1, per_host=1)
        for item in ("a1", "a2", "b1"):
            await frontier.put(item[0], item)
        slot = await frontier.get()
        assert slot is not None and slot.item == "a1"
        frontier.retry(slot, "a1 again", 60)
        assert sorted(frontier.drain()) == ["a1 again", "a2", "b1"]
        assert (frontier.parked, frontier.retrying, frontier.hosts) == (0, 0, 0)
        frontier.close()
        assert await frontier.get() is None

    run(main())


def test_pauses_are_announced_once():
    async def main() -> None:
        heard: list[tuple[str, float]] = []
        frontier: Frontier[str] = Frontier(concurrency=1, on_pause=lambda *a: heard.append(a))
        frontier.pause_host("a", 3)
        frontier.pause_host("b", 1, announce=False)  # one that came from another engine
        assert heard == [("a", 3)]

    run(main())


def test_a_slot_is_given_back_once():
    async def main() -> None:
        frontier: Frontier[str] = Frontier(concurrency=1)
        await frontier.put("h", "job")
        slot = await frontier.get()
        assert isinstance(slot, Slot)
        frontier.done(slot)
        with pytest.raises(RuntimeError, match="given back already"):
            frontier.done(slot)
        frontier.close()
        with pytest.raises(RuntimeError, match="after close"):
            await frontier.put("h", "late")

    run(main())


def test_a_pause_between_hand_out_and_start_sends_the_job_back():
    async def main() -> None:
        loop = asyncio.get_running_loop()
        frontier: Frontier[str] = Frontier(concurrency=2)
        getting = asyncio.ensure_future(frontier.get())
        await asyncio.sleep(0)  # it waits
        await frontier.put("h", "job")  # handed to `getting`, which has not run yet ...
        frontier.pause_host("h", 5)  # ... when another worker reads a 429 from "h"
        slot = await getting
        assert slot is not None and slot.item == "job" and loop.time() == 5.0
        frontier.done(slot)

    run(main())


def test_a_pause_that_begins_while_a_job_waits_for_its_hosts_slot_is_kept():
    # From the Limiter's tests: the job waiting for the host's one slot starts only after a
    # pause read by the request that held the slot (a 429), not when the slot comes back.
    jobs = [FakeJob(0, "h", duration=0.1, failures=1, retry_delay=0, pause=2.0)]
    jobs += [FakeJob(1, "h", duration=0.1)]

    async def main() -> Server:
        return await crawl(jobs, concurrency=4, per_host=1)

    server = run(main())
    assert [(round(t, 6), job_id) for t, _, job_id, _ in server.starts] == [
        (0.0, 0),
        (2.1, 0),  # the retry, due at once, goes first once the pause is over
        (2.2, 1),
    ]


def test_the_rate_carries_no_debt_over_a_quiet_spell():
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        frontier: Frontier[str] = Frontier(concurrency=4, rate=10)
        starts: list[float] = []

        async def take(count: int) -> None:
            for i in range(count):
                await frontier.put("h", str(i))
            for _ in range(count):
                slot = await frontier.get()
                assert slot is not None
                starts.append(loop.time())
                frontier.done(slot)

        await take(3)
        await asyncio.sleep(5)  # quiet: no burst is saved up for later
        await take(2)
        return starts

    assert run(main()) == pytest.approx([0.0, 0.1, 0.2, 5.2, 5.3])


# --- a worker's next job -----------------------------------------------------------------------


def test_done_and_next_hands_the_next_job_to_its_worker_before_one_waiting():
    async def main() -> None:
        frontier: Frontier[str] = Frontier(concurrency=2, per_host=1)
        for item in ("a1", "a2", "b1"):
            await frontier.put(item[0], item)
        first = await frontier.get()
        second = await frontier.get()
        assert first is not None and second is not None
        assert (first.item, second.item) == ("a1", "b1")
        waiting = asyncio.ensure_future(frontier.get())
        await asyncio.sleep(0)  # a third worker waits: both slots are taken
        following = frontier.done_and_next(first)
        assert following is not None and following.item == "a2"  # this worker's, at once
        assert not waiting.done() and frontier.in_flight == 2
        frontier.done(following)
        frontier.done(second)
        frontier.close()
        assert await waiting is None

    run(main())


def test_done_and_next_leaves_a_job_handed_to_a_waiting_worker_first():
    # A waiting worker was handed "h1" and has not run yet: "h2" must not leave before it.
    async def main() -> None:
        frontier: Frontier[str] = Frontier(concurrency=3)
        await frontier.put("x", "x1")
        held = await frontier.get()
        assert held is not None
        waiting = asyncio.ensure_future(frontier.get())
        await asyncio.sleep(0)
        for item in ("h1", "h2"):
            await frontier.put("h", item)  # "h1" goes to `waiting` as it is put
        assert frontier.done_and_next(held) is None
        slot = await waiting
        assert slot is not None and slot.item == "h1"
        rest = await frontier.get()
        assert rest is not None and rest.item == "h2"

    run(main())


def test_done_and_next_gives_nothing_when_no_job_may_start():
    async def main() -> None:
        frontier: Frontier[str] = Frontier(concurrency=2, per_host=1)
        await frontier.put("h", "h1")
        await frontier.put("h", "h2")
        slot = await frontier.get()
        assert slot is not None
        frontier.pause_host("h", 5)
        assert frontier.done_and_next(slot) is None  # its host is paused: "h2" waits
        assert (frontier.in_flight, frontier.parked) == (0, 1)
        later = await frontier.get()
        assert later is not None and later.item == "h2"
        assert asyncio.get_running_loop().time() == 5.0

    run(main())


def test_pauses_name_the_first_host_back_of_those_that_hold_a_job():
    async def main() -> None:
        frontier: Frontier[str] = Frontier(concurrency=1)
        for item in ("a1", "b1", "b2", "c1"):
            await frontier.put(item[0], item)
        slot = await frontier.get()
        assert slot is not None and slot.item == "a1"
        frontier.retry(slot, "a1 again", 1)
        frontier.pause_host("a", 6)  # holds its retry
        frontier.pause_host("b", 8)  # holds two fresh jobs
        frontier.pause_host("z", 2)  # first back, but holds nothing: not worth naming
        # c1 waits for the slot, not for a time: not counted.
        assert frontier.pauses() == Pauses(waiting=3, hosts=3, first="a", first_ends_in=6.0)
        await asyncio.sleep(6.5)
        assert frontier.pauses() == Pauses(waiting=2, hosts=1, first="b", first_ends_in=1.5)

    run(main())


def test_held_counts_the_jobs_that_wait_for_a_time_not_for_a_slot():
    async def main() -> None:
        frontier: Frontier[str] = Frontier(concurrency=1)
        for item in ("a1", "a2", "b1", "b2"):
            await frontier.put(item[0], item)
        slot = await frontier.get()
        assert slot is not None and slot.item == "a1"
        assert frontier.held == 0  # the rest wait for the one slot
        frontier.retry(slot, "a1 again", 2)
        frontier.pause_host("b", 4)
        assert frontier.held == 3  # the retry, and b's two while b is paused
        assert frontier.pauses() == Pauses(waiting=2, hosts=1, first="b", first_ends_in=4.0)
        await asyncio.sleep(2.5)
        assert frontier.held == 2  # a retry that is due waits for a slot, like a2
        assert frontier.pauses() == Pauses(waiting=2, hosts=1, first="b", first_ends_in=1.5)
        await asyncio.sleep(2)
        assert frontier.held == 0 and frontier.pauses() is None

    run(main())
