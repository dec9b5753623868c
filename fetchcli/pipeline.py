"""The in-process executor: the producer feeds a bounded queue, the frontier hands jobs to N
workers as their hosts allow.

    producer ─▶ bounded Queue ─▶ feeder ─▶ Frontier (a lane per host) ─▶ N workers ─▶ emit
                                                ▲                            │
                                                └── retry, not before T ◀────┘

No worker waits on a busy or paused host, nor sleeps out a backoff: the frontier parks such
jobs per host (fetchcli/frontier.py) and every worker makes one attempt at a time
(`Fetcher.attempt`). Every task is a child of one TaskGroup, so a failing child cancels its
siblings; the producer ends with one sentinel, and the workers end when the frontier has
handed out its last job. With a deadline, a timer takes what is still waiting out of the
frontier when it passes ("deadline exceeded"); attempts then running are cut by it. The
client and the Saver are opened around the group and closed after it, whatever happens:
temporary files are gone when `run()` returns.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from fetchcli.bandwidth import Bandwidth
from fetchcli.client import make_client
from fetchcli.config import Settings
from fetchcli.executor import Emit, Produce, loop_time
from fetchcli.fetcher import Fetcher, Pending
from fetchcli.frontier import Again, Frontier, work
from fetchcli.models import Job, Record
from fetchcli.sink import Saver
from fetchcli.stats import RunStats

__all__ = ["InProcess"]

QUEUE_PER_WORKER = 2
LOOKAHEAD = 64  # jobs prepared at once when that looks at the disk


class InProcess:
    """Fetches on this event loop: one client, one Saver, one frontier, `--workers` workers.

    `on_pause(host, seconds)` hears of every host pause a response asked for (an engine
    process passes them on to the others); `pause_host()` brings one in from elsewhere.
    """

    def __init__(
        self,
        settings: Settings,
        stats: RunStats,
        *,
        random: Callable[[], float],
        deadline_at: float | None,
        on_pause: Callable[[str, float], None] | None = None,
        bandwidth: Bandwidth | None = None,
    ) -> None:
        # `bandwidth`: an engine's share of --limit-rate, which the coordinator moves as work
        # moves.
        self._bandwidth = bandwidth
        self._settings = settings
        self._stats = stats
        self._random = random
        self._deadline_at = deadline_at
        self._on_pause = on_pause
        self._frontier: Frontier[Pending] | None = None
        self._early_pauses: list[tuple[str, float]] = []
        self._rate = settings.limits.rate  # --rate, or an engine's share of it (set_rate)

    @property
    def held(self) -> int:
        """Jobs here that wait for a time, not for a slot (`Frontier.held`)."""
        return 0 if self._frontier is None else self._frontier.held

    def set_rate(self, rate: float) -> None:
        """Start at most `rate` requests a second from now on (an engine's share of --rate)."""
        self._rate = rate
        if self._frontier is not None:
            self._frontier.set_rate(rate)

    def pause_host(self, host: str, seconds: float) -> None:
        """Start no request to `host` for `seconds`: a pause another engine heard of."""
        if self._frontier is None:
            self._early_pauses.append((host, seconds))  # before run() made the frontier
        else:
            self._frontier.pause_host(host, seconds, announce=False)

    async def run(self, produce: Produce, emit: Emit) -> None:
        """Fetch every job `produce` hands off; return when each has its record."""
        settings = self._settings
        limits = settings.limits
        queue: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=QUEUE_PER_WORKER * limits.workers)
        frontier: Frontier[Pending] = Frontier(
            concurrency=limits.concurrency,
            per_host=limits.per_host,
            rate=self._rate,
            per_host_rate=limits.per_host_rate,
            on_pause=self._on_pause,
        )
        self._frontier = frontier
        self._stats.read_pauses = frontier.pauses
        for host, seconds in self._early_pauses:
            frontier.pause_host(host, seconds, announce=False)
        deadline = loop_time(self._deadline_at)
        bandwidth = self._bandwidth
        if bandwidth is None and settings.limits.limit_rate is not None:
            bandwidth = Bandwidth(settings.limits.limit_rate, clock=asyncio.get_running_loop().time)
        try:
            async with (
                Saver(settings.output.output_dir, save=settings.output.save) as saver,
                make_client(settings) as client,
            ):
                fetcher = Fetcher(
                    client,
                    settings,
                    saver,
                    self._stats,
                    self._random,
                    pause_host=frontier.pause_host,
                    bandwidth=bandwidth,
                )
                await _Run(frontier, fetcher, emit, deadline).run(produce, queue, limits.workers)
        finally:
            self._frontier = None
            self._stats.read_pauses = None


class _Run:
    """One run's tasks: the producer, the feeder, the workers, and the deadline's timer."""

    def __init__(
        self,
        frontier: Frontier[Pending],
        fetcher: Fetcher,
        emit: Emit,
        deadline: float | None,
    ) -> None:
        self._frontier = frontier
        self._fetcher = fetcher
        self._emit = emit
        self._deadline = deadline
        self._expired = False

    async def run(self, produce: Produce, queue: asyncio.Queue[Job | None], workers: int) -> None:
        frontier, deadline = self._frontier, self._deadline
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(_produce(produce, queue))
                group.create_task(self._feed(queue))
                tasks = [
                    group.create_task(work(frontier, self._attempt, self._emit))
                    for _ in range(workers)
                ]
                if deadline is not None:
                    timer = group.create_task(self._expire_at(deadline))
                    await asyncio.wait(tasks)  # the workers are done: nothing left to time out
                    timer.cancel()
        finally:
            # Stopped (Ctrl-C, an error): the jobs still waiting give up their carries, so a
            # cut body waiting for its retry is kept for the next run (--continue) or removed.
            for pending in frontier.drain():
                await self._fetcher.release(pending)

    async def _attempt(self, pending: Pending) -> Record | Again[Pending]:
        return await self._fetcher.attempt(pending, self._deadline)

    async def _feed(self, queue: asyncio.Queue[Job | None]) -> None:
        """Jobs from the queue into the frontier, by host, until the sentinel; then close it.

        When preparing a job looks at the disk (--skip-existing), up to `LOOKAHEAD` jobs are
        prepared at once, so that the saver batches their looks and a large file's hash holds
        up no other; they still enter the frontier in list order.
        """
        fetcher = self._fetcher
        if not fetcher.looks_on_disk:
            while (job := await queue.get()) is not None:
                await self._place(await fetcher.prepare(job))
        else:
            ahead: deque[asyncio.Task[Pending | Record]] = deque()
            try:
                while (job := await queue.get()) is not None:
                    ahead.append(asyncio.ensure_future(fetcher.prepare(job)))
                    if len(ahead) >= LOOKAHEAD:
                        await self._place(await ahead.popleft())
                while ahead:
                    await self._place(await ahead.popleft())
            finally:
                for task in ahead:
                    task.cancel()
                for left in await asyncio.gather(*ahead, return_exceptions=True):
                    if isinstance(left, Pending):
                        await fetcher.release(left)
        self._frontier.close()

    async def _place(self, prepared: Pending | Record) -> None:
        if isinstance(prepared, Record):
            await self._emit(prepared)
        elif self._expired:
            await self._emit(await self._fetcher.unfinished(prepared))
        else:
            await self._frontier.put(prepared.host, prepared)
            if self._expired_meanwhile():  # it waited for room across the deadline
                await self._take_unfinished()

    def _expired_meanwhile(self) -> bool:
        # A call, not `self._expired`: mypy would keep its narrowing from before the await.
        return self._expired

    async def _expire_at(self, deadline: float) -> None:
        """At the deadline: every job still waiting in the frontier is unfinished."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(deadline - loop.time())
        self._expired = True
        await self._take_unfinished()

    async def _take_unfinished(self) -> None:
        for pending in self._frontier.drain():
            await self._emit(await self._fetcher.unfinished(pending))


async def _produce(produce: Produce, queue: asyncio.Queue[Job | None]) -> None:
    """The producer's task: every job into the bounded queue, then the one sentinel."""
    await produce(queue.put)
    await queue.put(None)
