"""The live view's machinery: frames from fire-and-forget tasks, and failures that surface."""

from __future__ import annotations

import asyncio
import io
import re
import sys
from typing import Any

import pytest
from rich.console import Console

from fetchcli.config import OutputOptions
from fetchcli.kinds import ErrorKind, Skipped
from fetchcli.live import LiveDisplay, StatusLines, summary_table
from fetchcli.models import Record
from fetchcli.progress import estimate
from fetchcli.stats import Pauses, RunStats, Transfer
from fetchcli.summary import paused_note, status_line, summary_line
from tests import virtual_time

pytestmark = pytest.mark.anyio


def live(stats: RunStats) -> tuple[LiveDisplay, io.StringIO]:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=80, color_system=None)
    return LiveDisplay(stats, console), screen


def test_frames_are_drawn_by_tracked_background_tasks():
    # On a virtual clock: the frames a third of a second gives, exactly, however busy the machine.
    async def main() -> int:
        stats = RunStats()
        display, screen = live(stats)
        display.start([])
        assert len(display._tasks) == 1  # the first frame, held by a strong reference
        for _ in range(50):  # many events, ...
            stats.add(Record(url="http://a.test/", ok=True, status=200))
        await asyncio.sleep(0.35)
        frames = screen.getvalue().count("req/s")
        await display.aclose(interrupted=False)
        assert display._tasks == set()  # none left behind
        assert "fetchcli: done" in screen.getvalue()
        return frames

    assert virtual_time.run(main()) == 4  # ... but frames at 0, 0.1, 0.2 and 0.3 s, not per event


async def test_a_failing_redraw_is_reported_and_the_run_goes_on():
    stats = RunStats()
    display, screen = live(stats)

    def broken() -> None:
        raise ValueError("cannot draw")

    display._render = broken  # type: ignore[method-assign,assignment]
    display.start([])
    await asyncio.sleep(0.05)
    assert isinstance(display.error, ValueError)
    assert "display error: ValueError: cannot draw" in screen.getvalue()
    display.on_record(Record(url="http://a.test/", ok=False, error="x", error_kind=ErrorKind.HTTP))
    await display.aclose(interrupted=False)  # still closes, still prints the summary
    assert "fetchcli: done" in screen.getvalue()


async def test_failures_are_listed_once_each_and_capped():
    stats = RunStats()
    display, screen = live(stats)
    display.start([])
    for i in range(25):
        record = Record(url=f"http://a.test/{i}", ok=False, status=404, error_kind=ErrorKind.HTTP)
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


def big_run(small_done: int = 95, big: int = 5, share: float = 0.25) -> RunStats:
    """Small pages done, and five bodies of 200 MB a quarter arrived."""
    stats = RunStats(total=small_done + big)
    for i in range(small_done):
        stats.add(Record(url=f"http://a.test/{i}", ok=True, status=200, bytes=1_000))
    for key in range(big):
        expected = 200_000_000
        stats.transfers[key] = Transfer(
            f"http://a.test/big{key}", expected, Arrived(int(expected * share))
        )
    return stats


def test_progress_is_weighted_by_bytes_when_sizes_are_known():
    progress = estimate(big_run())  # 95 of 100 URLs done, but a quarter of the bytes
    assert progress.by_bytes and progress.done == 95
    assert progress.share == pytest.approx(250.095 / 1000.095)
    assert progress.left == pytest.approx(750_000_000)


def test_without_any_size_known_progress_counts_urls():
    stats = RunStats(total=10)
    for i in range(4):
        stats.add(Record(url=f"http://a.test/{i}", ok=False, status=404, error_kind=ErrorKind.HTTP))
    progress = estimate(stats)
    assert not progress.by_bytes and progress.share == 0.4 and progress.left == 6


def test_urls_of_unknown_size_weigh_the_mean_of_the_known_ones():
    stats = RunStats(total=4, resumed=1)  # one done by an earlier run: its size unknown
    stats.add(Record(url="http://a.test/1", ok=True, status=200, bytes=100))
    stats.transfers[1] = Transfer("http://a.test/2", 300, Arrived(150))
    stats.transfers[2] = Transfer("http://a.test/3", None, Arrived(50))  # no Content-Length
    progress = estimate(stats)  # the mean is 200: URLs 3 and the resumed one weigh 200
    assert progress.share == pytest.approx((100 + 150 + 50 + 200) / (100 + 300 + 200 + 200))


def test_a_body_longer_than_the_mean_without_content_length_weighs_what_arrived():
    stats = RunStats(total=2)
    stats.add(Record(url="http://a.test/1", ok=True, status=200, bytes=100))
    stats.transfers[1] = Transfer("http://a.test/2", None, Arrived(900))
    assert estimate(stats).share == pytest.approx(1.0)
    assert (estimate(stats).share or 0.0) <= 1.0


def test_percent_is_never_rounded_up_to_a_finish():
    stats = RunStats(total=1000)
    for i in range(999):
        stats.add(Record(url=f"http://a.test/{i}", ok=False, error_kind=ErrorKind.HTTP))
    display, screen = live(stats)
    display._live.start()
    display._draw()
    display._live.stop()
    assert " 99% 999/1,000" in screen.getvalue()


async def test_the_top_bar_shows_the_share_of_the_bytes_not_of_the_urls():
    display, screen = live(big_run())
    display.start([])
    await asyncio.sleep(0.05)
    await display.aclose(interrupted=False)
    text = screen.getvalue()
    assert " 25% 95/100" in text and "95%" not in text


def test_the_eta_comes_from_the_bytes_left_and_the_byte_rate():
    stats = big_run(small_done=0)
    progress = estimate(stats)
    line = status_line(stats, progress, 250_000_000, request_rate=0.0, byte_rate=50_000_000)
    assert "25% · 0/5 URLs" in line and "250.0 MB at 50.0 MB/s" in line
    assert "ETA 0:00:15" in line  # 750 MB left at 50 MB/s


def test_the_interrupted_summary_counts_what_was_transferred():
    stats = RunStats()
    stats.add(Record(url="http://a.test/small", ok=True, status=200, bytes=501))
    stats.received = 350_000_000
    screen = io.StringIO()
    Console(file=screen, width=100, color_system=None).print(summary_table(stats, interrupted=True))
    text = screen.getvalue()
    assert "1 URL · 350.0 MB ·" in text and "501 B" not in text


def test_the_interrupted_summary_gives_the_hint_for_this_run():
    screen = io.StringIO()
    options = OutputOptions(jsonl="r.jsonl")
    table = summary_table(RunStats(), interrupted=True, output=options)
    Console(file=screen, width=200, color_system=None).print(table)
    assert "no record in r.jsonl: run the same command again with --resume" in screen.getvalue()


async def test_the_live_display_leaves_stdout_alone():
    # Rich's Live swaps sys.stdout for a proxy onto its console unless told not to.
    before = sys.stdout
    display, _ = live(RunStats())
    display.start([])
    assert sys.stdout is before
    await display.aclose(interrupted=False)
    assert sys.stdout is before


def status_lines(stats: RunStats, **options: Any) -> tuple[StatusLines, io.StringIO]:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120, color_system=None)
    return StatusLines(stats, console, **options), screen


def test_status_lines_are_whole_lines_that_move_no_cursor():
    async def main() -> str:  # on a virtual clock: a line every 0.05 s exactly
        stats = RunStats(total=4)
        display, screen = status_lines(stats, every=0.05)
        display.start([])
        stats.add(Record(url="http://a.test/1", ok=True, status=200, bytes=10))
        await asyncio.sleep(0.08)
        stats.add(Record(url="http://a.test/2", ok=False, status=404, error_kind=ErrorKind.HTTP))
        await asyncio.sleep(0.05)
        await asyncio.sleep(0.15)  # nothing changes: no more lines
        await display.aclose(interrupted=False)
        return screen.getvalue()

    text = virtual_time.run(main())
    assert not re.search(r"\x1b\[\d*[ABCDGHJKf]|\r", text)  # nothing moved, nothing erased
    lines = [line for line in text.splitlines() if line.startswith("fetchcli: ") and "URLs" in line]
    assert [line.split(" · ")[:2] for line in lines] == [
        ["fetchcli: 25%", "1/4 URLs"],
        ["fetchcli: 50%", "2/4 URLs"],
    ]
    assert "fetchcli: done" in text


async def test_status_lines_for_a_terminal_being_typed_into_only_a_note_and_the_summary():
    stats = RunStats()
    display, screen = status_lines(stats, every=None, note="fetchcli: reading URLs")
    display.start([])
    stats.add(Record(url="http://a.test/1", ok=True, status=200, bytes=10))
    await asyncio.sleep(0.05)
    await display.aclose(interrupted=False)
    text = screen.getvalue()
    assert text.startswith("fetchcli: reading URLs\n")
    assert "URLs ·" not in text and "fetchcli: done" in text


async def test_more_failures_names_the_records_file():
    stats = RunStats()
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100, color_system=None)
    display = LiveDisplay(stats, console, OutputOptions(jsonl="out.jsonl"))
    display.start([])
    for i in range(12):
        display.on_record(
            Record(url=f"http://a.test/{i}", ok=False, status=404, error_kind=ErrorKind.HTTP)
        )
    await asyncio.sleep(0.05)
    await display.aclose(interrupted=False)
    assert "more failures: see the summary and the records in out.jsonl" in screen.getvalue()


async def test_failure_and_status_lines_are_cut_to_one_line_never_wrapped():
    long = "http://a.test/" + "x" * 200
    stats = RunStats(total=3)
    stats.add(Record(url=long, ok=False, status=404, error_kind=ErrorKind.HTTP))
    display, screen = live(stats)
    display.start([])
    display.on_record(Record(url=long, ok=False, status=404, error_kind=ErrorKind.HTTP))
    await asyncio.sleep(0.05)
    await display.aclose(interrupted=False)
    shown = [_plain(line) for line in screen.getvalue().splitlines()]
    (at,) = [i for i, line in enumerate(shown) if "✗ 404" in line]
    assert shown[at].endswith("…") and not shown[at + 1].startswith("x")  # not wrapped
    narrow = io.StringIO()
    console = Console(file=narrow, force_terminal=True, width=40, color_system=None)
    lines = StatusLines(stats, console, every=0.01)
    lines.start([])
    await asyncio.sleep(0.05)
    await lines.aclose(interrupted=False)
    (status,) = [line for line in narrow.getvalue().splitlines() if "URLs" in line]
    assert len(status) == 40 and status.endswith("…")


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
    failed = Record(url="http://a.test/x", ok=False, status=404, error_kind=ErrorKind.HTTP, line=1)
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
    stats.received = 10
    assert summary_line(stats).split(", ")[1:4] == ["2 ok (1 already there)", "0 failed", "10 B"]
    screen = io.StringIO()
    Console(file=screen, width=100, color_system=None).print(summary_table(stats))
    rows = [line.replace("│", " ").split() for line in screen.getvalue().splitlines()]
    assert ["ok", "1"] in rows and ["ok", "(already", "there)", "1"] in rows


def test_the_summary_has_an_example_column_only_when_there_is_a_failure_to_show():
    def headers(stats: RunStats) -> list[str]:
        screen = io.StringIO()
        Console(file=screen, width=100, color_system=None).print(summary_table(stats))
        return next(line for line in screen.getvalue().splitlines() if "outcome" in line).split()

    stats = RunStats()
    stats.add(Record(url="http://a.test/1", ok=True, status=200, bytes=10))
    assert headers(stats) == ["outcome", "┃", "count"]
    stats.add(Record(url="http://a.test/2", ok=False, status=404, error="HTTP 404"))
    assert headers(stats) == ["outcome", "┃", "count", "┃", "example"]


async def test_jobs_waiting_for_a_paused_host_are_shown_while_they_wait():
    # A host's Retry-After can hold most of what is left: the counts say so, and which host
    # comes back when, or a quiet spell with nothing in flight would look like a hang.
    stats = RunStats(total=10)
    pauses: list[Pauses | None] = [Pauses(298, 1, "api.example.com", 4.2)]
    stats.read_pauses = lambda: pauses[0]
    display, screen = live(stats)
    display.start([])
    await asyncio.sleep(0.05)
    lines = screen.getvalue().splitlines()  # a line of its own, not a wrapped end of the counts
    assert "waiting for paused hosts 298 (api.example.com back in 5s)" in lines
    pauses[0] = None
    screen.seek(0)
    screen.truncate()
    await asyncio.sleep(0.2)
    await display.aclose(interrupted=False)
    assert "paused" not in screen.getvalue()
    line = status_line(stats, estimate(stats), 0, 0.0, 0.0)
    assert "paused" not in line
    pauses[0] = Pauses(3, 3, "a.example", 75)
    line = status_line(stats, estimate(stats), 0, 0.0, 0.0)
    assert line.endswith("waiting for paused hosts 3 (a.example back in 0:01:15, +2 more)")


@pytest.mark.parametrize(
    ("pauses", "note"),
    [
        (Pauses(1, 1, "a.example", 0.2), "waiting for paused hosts 1 (a.example back in 1s)"),
        (Pauses(7, 0, "", 0.0), "waiting for paused hosts 7"),  # a pause the engines end
        (
            Pauses(2, 2, "h" * 50, 3),
            f"waiting for paused hosts 2 ({'h' * 30}… back in 3s, +1 more)",
        ),
    ],
)
def test_the_pause_note_names_the_first_host_back(pauses, note):
    assert paused_note(pauses) == note
