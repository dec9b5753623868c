"""The interface every way of fetching implements, and the callables that cross it.

    producer ──handoff(job)──▶ Executor.run ──emit(record)──▶ records file, display, caller

Implementations: `pipeline.InProcess` (a bounded queue and N workers on this event loop),
`parallel.coordinator.EngineProcesses` (jobs dealt to engine processes) and
`parallel.ray_shards.RayShards` (shards as Ray tasks); `launch.py` chooses one and
`runner.drive` runs it.

The run's deadline is a `time.monotonic()` time: one clock for every process of this machine
(engine processes included). Ray tasks may run on other machines, whose monotonic clocks are
not this one's: they are given the wall-clock time (`to_wall`, and `from_wall` there).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from fetchcli.models import Job, Record

__all__ = [
    "Emit",
    "Executor",
    "Handoff",
    "Produce",
    "deadline_after",
    "from_wall",
    "loop_time",
    "to_wall",
]

Emit = Callable[[Record], Awaitable[None]]
Handoff = Callable[[Job], Awaitable[None]]
# Feeds every job of the input to a handoff (which may wait: back-pressure), then returns.
Produce = Callable[[Handoff], Awaitable[None]]


class Executor(Protocol):
    """Fetches the jobs a producer hands off and gives every record to `emit`."""

    async def run(self, produce: Produce, emit: Emit) -> None:
        """Return once every job handed off has its record; clean up whatever happens."""


def deadline_after(seconds: float | None) -> float | None:
    """The deadline `seconds` from now (--deadline), as a `time.monotonic()` time."""
    return None if seconds is None else time.monotonic() + seconds


def to_wall(deadline_at: float | None) -> float | None:
    """A `time.monotonic()` deadline as a `time.time()` one, for another machine."""
    return None if deadline_at is None else time.time() + deadline_at - time.monotonic()


def from_wall(wall: float | None) -> float | None:
    """A `time.time()` deadline from another machine as this one's `time.monotonic()` time."""
    return None if wall is None else time.monotonic() + wall - time.time()


def loop_time(deadline_at: float | None) -> float | None:
    """A `time.monotonic()` deadline as this loop's time."""
    if deadline_at is None:
        return None
    return asyncio.get_running_loop().time() + deadline_at - time.monotonic()
