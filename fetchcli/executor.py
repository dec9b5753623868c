"""The interface every way of fetching implements, and the callables that cross it.

    producer ──handoff(job)──▶ Executor.run ──emit(record)──▶ records file, display, caller

Implementations: `pipeline.InProcess` (a bounded queue and N workers on this event loop),
`parallel.coordinator.EngineProcesses` (jobs dealt to engine processes) and
`parallel.ray_shards.RayShards` (shards as Ray tasks); `runner.py` chooses one and drives it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from fetchcli.models import Job, Record

__all__ = ["Emit", "Executor", "Handoff", "Produce", "loop_time"]

Emit = Callable[[Record], Awaitable[None]]
Handoff = Callable[[Job], Awaitable[None]]
# Feeds every job of the input to a handoff (which may wait: back-pressure), then returns.
Produce = Callable[[Handoff], Awaitable[None]]


class Executor(Protocol):
    """Fetches the jobs a producer hands off and gives every record to `emit`."""

    async def run(self, produce: Produce, emit: Emit) -> None:
        """Return once every job handed off has its record; clean up whatever happens."""


def loop_time(deadline_at: float | None) -> float | None:
    """A `time.monotonic()` deadline (one clock for every process) as this loop's time."""
    if deadline_at is None:
        return None
    return asyncio.get_running_loop().time() + deadline_at - time.monotonic()
