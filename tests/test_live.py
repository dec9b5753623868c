"""The live view's machinery: frames from fire-and-forget tasks, and failures that surface."""

from __future__ import annotations

import asyncio
import io

import pytest
from rich.console import Console

from fetchcli.live import LiveDisplay
from fetchcli.models import Record
from fetchcli.stats import RunStats

pytestmark = pytest.mark.anyio


def live(stats: RunStats) -> tuple[LiveDisplay, io.StringIO]:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=80, color_system=None)
    return LiveDisplay(stats, console), screen


async def test_frames_are_drawn_by_tracked_background_tasks():
    stats = RunStats()
    display, screen = live(stats)
    display.start([])
    assert len(display._tasks) == 1  # the first frame, held by a strong reference
    stats.add(Record(url="http://a.test/", ok=True, status=200))
    await asyncio.sleep(0.35)
    assert 2 <= screen.getvalue().count("req/s") <= 6  # ~10 frames a second, not per event
    await display.aclose(interrupted=False)
    assert display._tasks == set()  # none left behind
    assert "fetchcli: done" in screen.getvalue()


async def test_a_failing_redraw_is_reported_and_the_run_goes_on():
    stats = RunStats()
    display, screen = live(stats)

    def broken() -> None:
        raise ValueError("cannot draw")

    display._render = broken  # type: ignore[method-assign]
    display.start([])
    await asyncio.sleep(0.05)
    assert isinstance(display.error, ValueError)
    assert "display error: ValueError: cannot draw" in screen.getvalue()
    display.on_record(Record(url="http://a.test/", ok=False, error="x", error_kind="http"))
    await display.aclose(interrupted=False)  # still closes, still prints the summary
    assert "fetchcli: done" in screen.getvalue()


async def test_failures_are_listed_once_each_and_capped():
    stats = RunStats()
    display, screen = live(stats)
    display.start([])
    for i in range(25):
        record = Record(url=f"http://a.test/{i}", ok=False, status=404, error_kind="http")
        stats.add(record)
        display.on_record(record)
    await asyncio.sleep(0.15)
    await display.aclose(interrupted=False)
    text = screen.getvalue()
    assert text.count("✗ 404") == 10 and "more failures" in text
