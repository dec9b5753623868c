"""The live view's machinery: frames from fire-and-forget tasks, and failures that surface."""

from __future__ import annotations

import asyncio
import io
import re

import pytest
from rich.console import Console

from fetchcli.kinds import Skipped
from fetchcli.live import LiveDisplay, summary_table
from fetchcli.models import Record
from fetchcli.stats import RunStats, Transfer
from fetchcli.summary import summary_line

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


class Arrived:
    def __init__(self, size: int) -> None:
        self.size = size


async def test_large_transfers_get_rows_and_the_rest_a_count():
    stats = RunStats()
    for key in range(5):
        size = (key + 2) * 1024 * 1024
        stats.transfers[key] = Transfer(f"http://a.test/big{key}", size, Arrived(size // 2))
    stats.transfers[9] = Transfer("http://a.test/small", 10, Arrived(5))
    display, screen = live(stats)
    display.start([])
    await asyncio.sleep(0.05)
    text = screen.getvalue()
    assert all(f"big{key}" in text for key in (4, 3, 2))  # the three largest
    assert "big1" not in text and "small" not in text
    assert "… and 2 more large transfers" in text
    await display.aclose(interrupted=False)


async def test_lines_leave_room_for_the_echoed_ctrl_c():
    # A full-width last line would wrap when the terminal echoes "^C", and Rich would then
    # erase one line too few when the live area goes away.
    stats = RunStats(total=10)
    display, screen = live(stats)
    display.start([])
    await asyncio.sleep(0.05)
    await display.aclose(interrupted=True)
    lines = screen.getvalue().replace("\r", "\n").splitlines()
    bars = [line for line in lines if "0/10" in line]
    assert bars and all(len(_plain(line)) <= 78 for line in bars)


def test_an_interrupted_summary_says_how_to_finish():
    stats = RunStats()
    screen = io.StringIO()
    Console(file=screen, width=100, color_system=None).print(summary_table(stats, interrupted=True))
    text = screen.getvalue()
    assert text.startswith("fetchcli: interrupted")
    assert "outcome" not in text  # no empty table
    assert "0 URLs" in text and "--resume" in text


def _plain(line: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line)


async def test_counting_a_huge_list_stops_when_the_run_ends(tmp_path):
    # Ctrl-C on a list of millions of lines: the count must not hold the exit back.
    huge = tmp_path / "huge.txt"
    huge.write_bytes(b"http://a.test/some/path\n" * 3_000_000)
    stats = RunStats()
    display, _ = live(stats)
    display.start([str(huge)])
    await asyncio.sleep(0)  # the counting task starts its thread
    await display.aclose(interrupted=True)
    assert display.counter is not None
    await asyncio.to_thread(display.counter.join, 30)
    assert not display.counter.is_alive()
    assert stats.total is None  # stopped early: it did not count the whole file


async def test_the_lines_of_a_list_are_counted_for_the_total(tmp_path):
    listing = tmp_path / "urls.txt"
    listing.write_bytes(b"# a comment\nhttp://a.test/1\n\n  http://a.test/2  \n")
    stats = RunStats()
    display, _ = live(stats)
    display.start([str(listing)])
    while stats.total is None:  # noqa: ASYNC110 - bounded by the test timeout
        await asyncio.sleep(0.01)
    assert stats.total == 2
    await display.aclose(interrupted=False)


async def test_a_line_with_control_characters_cannot_drive_the_terminal():
    stats = RunStats()
    display, screen = live(stats)
    display.start([])
    bad = Record.invalid("-", 1, "http://a.test/\x1b[2J\x07x", "contains control characters")
    stats.add(bad)
    display.on_record(bad)
    await asyncio.sleep(0.15)
    await display.aclose(interrupted=False)
    text = screen.getvalue()
    assert "\x1b[2J" not in text and "\x07" not in text
    assert text.count("http://a.test/\\x1b[2J\\x07x") == 2  # the failure line and the summary


async def test_a_repeat_of_a_failure_is_not_listed_again():
    stats = RunStats()
    display, screen = live(stats)
    display.start([])
    failed = Record(url="http://a.test/x", ok=False, status=404, error_kind="http", line=1)
    for record in (failed, Record.duplicate("-", 2, "http://a.test/x#b", failed)):
        stats.add(record)
        display.on_record(record)
    await asyncio.sleep(0.15)
    await display.aclose(interrupted=False)
    assert screen.getvalue().count("✗ 404") == 1


def test_files_already_there_are_counted_as_ok():
    stats = RunStats()
    stats.add(Record(url="http://a.test/1", ok=True, status=200, bytes=10))
    stats.add(Record(url="http://a.test/2", ok=True, bytes=5, skipped=Skipped.EXISTS))
    assert summary_line(stats).split(", ")[1:4] == ["2 ok (1 already there)", "0 failed", "10 B"]
    screen = io.StringIO()
    Console(file=screen, width=100, color_system=None).print(summary_table(stats))
    rows = [line.replace("│", " ").split() for line in screen.getvalue().splitlines()]
    assert ["ok", "1"] in rows and ["ok", "(already", "there)", "1"] in rows
