"""The in-process executor: the producer feeds a bounded queue, N workers drain it.

    producer ─▶ bounded Queue ─▶ N workers ─▶ Fetcher ─▶ emit(record)

Every task is a child of one TaskGroup, so a failing child cancels its siblings. The
producer ends with one sentinel per worker. The client and the Saver are opened around the
group and closed after it, whatever happens: temporary files are gone when `run()` returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fetchcli.bandwidth import Bandwidth
from fetchcli.client import make_client
from fetchcli.config import Settings
from fetchcli.executor import Emit, Produce, loop_time
from fetchcli.fetcher import Fetcher
from fetchcli.limits import Limiter
from fetchcli.models import Job
from fetchcli.sink import Saver
from fetchcli.stats import RunStats

__all__ = ["InProcess"]

QUEUE_PER_WORKER = 2


class InProcess:
    """Fetches on this event loop: one client, one Saver, `--workers` worker tasks."""

    def __init__(
        self,
        settings: Settings,
        stats: RunStats,
        *,
        random: Callable[[], float],
        deadline_at: float | None,
        limiter: Limiter | None = None,
        bandwidth: Bandwidth | None = None,
    ) -> None:
        # `limiter`: an engine process passes its own, to hear of and spread host pauses;
        # `bandwidth`: its share of --limit-rate, which the coordinator moves as work moves.
        self._bandwidth = bandwidth
        self._settings = settings
        self._stats = stats
        self._random = random
        self._deadline_at = deadline_at
        self._limiter = limiter

    async def run(self, produce: Produce, emit: Emit) -> None:
        """Fetch every job `produce` hands off; return when each has its record."""
        settings = self._settings
        workers = settings.limits.workers
        queue: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=QUEUE_PER_WORKER * workers)
        deadline = loop_time(self._deadline_at)
        limiter = self._limiter or Limiter(settings.limits)
        bandwidth = self._bandwidth
        if bandwidth is None and settings.limits.limit_rate is not None:
            loop = asyncio.get_running_loop()
            bandwidth = Bandwidth(settings.limits.limit_rate, clock=loop.time)
        async with (
            Saver(settings.output.output_dir, save=settings.output.save) as saver,
            make_client(settings) as client,
        ):
            fetcher = Fetcher(
                client, settings, limiter, saver, self._stats, self._random, bandwidth=bandwidth
            )
            async with asyncio.TaskGroup() as work:
                work.create_task(_feed(produce, queue, workers))
                for _ in range(workers):
                    work.create_task(_consume(queue, fetcher, emit, deadline))


async def _feed(produce: Produce, queue: asyncio.Queue[Job | None], workers: int) -> None:
    """The producer's task: every job into the bounded queue, then one sentinel per worker."""
    await produce(queue.put)
    for _ in range(workers):
        await queue.put(None)


async def _consume(
    queue: asyncio.Queue[Job | None], fetcher: Fetcher, emit: Emit, deadline: float | None
) -> None:
    """A worker: fetch jobs from the queue until a sentinel arrives."""
    while (job := await queue.get()) is not None:
        await emit(await fetcher.fetch(job, deadline))
