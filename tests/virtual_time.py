"""An event loop whose clock is virtual: when every task waits, time jumps to the next timer.

The asyncio counterpart of trio's autojump MockClock: `asyncio.sleep`, `loop.call_at` and
`loop.time()` all run on it, so a test of something timed takes no real time, and its timings
are exact instead of "about right on a quiet machine". Nothing may wait on real I/O.

A deadlock (every task waits, no timer) and a livelock (the loop spins without time moving)
fail the test at once: pytest-timeout cannot, as asyncio swallows what its alarm raises
inside a callback.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["VirtualTimeLoop", "run"]

T = TypeVar("T")

SPINS = 200_000  # loop iterations at one instant taken for a livelock


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.spins = 0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if not events and timeout is None:
            msg = "deadlock: every task is waiting and no timer is set"
            raise RuntimeError(msg)
        if not events and timeout:
            self.now += timeout  # nothing to do until the next timer: go there at once
            self.spins = 0
        else:
            self.spins += 1
            if self.spins > SPINS:
                msg = f"livelock: {SPINS} loop iterations without the clock moving"
                raise RuntimeError(msg)
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector loop whose `time()` starts at 0 and moves only when the loop would sleep."""

    def __init__(self) -> None:
        self._jumping = _JumpingSelector()
        super().__init__(self._jumping)

    def time(self) -> float:
        return self._jumping.now


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on a fresh virtual-time loop; fail if it leaves a task behind."""
    loop = VirtualTimeLoop()
    try:
        result = loop.run_until_complete(main)
        left = [task for task in asyncio.all_tasks(loop) if not task.done()]
        assert not left, f"tasks left pending: {left!r}"
        return result
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
