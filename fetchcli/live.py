"""The views on a terminal: the live view when the terminal is ours, complete status lines
when it is shared, and the summary table at the end.

`LiveDisplay` redraws an area at the bottom: overall progress, counts, the largest
transfers, failures printed above it. It is drawn by a chain of fire-and-forget frame tasks
(about 10 a second). `StatusLines` is for a terminal that others write to as well (the
reader of a pipe on stdout, records on stdout, someone typing the URLs): it never moves the
cursor, and prints a complete line now and then, as aria2c prints its summaries.

Background tasks are kept in a strong-reference set with a done callback that surfaces a
failed redraw instead of losing it. Events only touch counters in `RunStats`; nothing is
drawn per chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.constrain import Constrain
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from fetchcli.config import OutputOptions
from fetchcli.environment import Environment
from fetchcli.kinds import ErrorKind
from fetchcli.models import Record
from fetchcli.progress import Rates, estimate, eta, percent, transferred
from fetchcli.stats import SHOWN_TRANSFER_BYTES, RunStats
from fetchcli.summary import (
    clock,
    more_failures,
    paused_note,
    printable,
    resume_hint,
    retries,
    status_line,
)
from fetchcli.summary import size as _size

__all__ = ["LiveDisplay", "StatusLines", "summary_table"]

FRAME_SECONDS = 0.1
STATUS_SECONDS = 5.0  # between two status lines on a shared terminal
MAX_FAILURE_LINES = 10
MAX_TRANSFER_ROWS = 3
# Columns left free at the right: the terminal echoes "^C" after the cursor, and a line it
# wraps would make the live area one line taller than Rich erases when it stops.
ECHO_ROOM = 2
NO_OPTIONS = OutputOptions()


class _Terminal:
    """What both views share: their background tasks, the count ahead, the summary."""

    def __init__(self, stats: RunStats, console: Console, output: OutputOptions) -> None:
        self._stats = stats
        self._console = console
        self._output = output
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._rates = Rates()
        self.error: BaseException | None = None
        self.counter: threading.Thread | None = None  # counting the lines of the list files

    def start(self, files: Sequence[str]) -> None:
        """Begin drawing; count the lines of `files` (regular files only) for the total."""
        # Only regular files: reading a pipe a second time would steal its lines.
        if files:
            self.spawn(self._count_lines(list(files)))
        self._begin()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` in the background, holding a strong reference until it is done."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def on_record(self, record: Record) -> None:
        """A record was produced (the counters are in the stats already)."""

    async def aclose(self, *, interrupted: bool, summary: bool = True) -> None:
        """Stop drawing, then print the summary (unless told not to)."""
        # Drawing first and waiting last: a second Ctrl-C here must not leave the terminal
        # with a live display (and a hidden cursor) behind.
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if not self._closed:
            self._closed = True
            self._last(interrupted=interrupted)
        self._stop()
        if summary:
            table = summary_table(self._stats, interrupted=interrupted, output=self._output)
            self._console.print(table)
        await asyncio.gather(*tasks, return_exceptions=True)

    def _moved_so_far(self) -> int:
        """Body bytes that came over the wire so far (a per-chunk count: it never goes down)."""
        return transferred(self._stats)

    def _begin(self) -> None:
        """Start drawing."""

    def _last(self, *, interrupted: bool) -> None:
        """Draw a last time, as the run ends."""

    def _stop(self) -> None:
        """Give the terminal back; called more than once."""

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        # A redraw that fails must be seen, not lost with its task; the fetching goes on.
        self.error = task.exception()
        self._closed = True
        self._stop()
        self._console.print(
            f"fetchcli: display error: {type(self.error).__name__}: {self.error};"
            " the live display is off for the rest of the run",
            markup=False,
        )

    async def _count_lines(self, files: list[str]) -> None:
        # A daemon thread told to stop, not the default executor: asyncio.run() waits for the
        # executor's threads at exit, and counting a huge list must not hold back a Ctrl-C.
        loop = asyncio.get_running_loop()
        counted: asyncio.Future[int | None] = loop.create_future()
        stop = threading.Event()

        def count() -> None:
            try:
                total: int | None = _count_url_lines(files, stop)
            except OSError:
                total = None  # without a total, the display shows a running count
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
                loop.call_soon_threadsafe(_settle, counted, total)

        self.counter = threading.Thread(target=count, name="fetchcli-count", daemon=True)
        self.counter.start()
        try:
            self._stats.total = await counted
        finally:
            stop.set()


def _console(env: Environment) -> Console:
    return Console(file=env.stderr, force_terminal=True, no_color=env.no_color)


class StatusLines(_Terminal):
    """A terminal shared with others: a complete status line now and then, never a redraw.

    Whatever the others write (jq's lines, records on stdout, what a person types) stays on
    the screen: nothing here moves the cursor or erases. A line is printed every `every`
    seconds when something changed (`None`: none at all), and the summary table at the end.
    """

    @classmethod
    def on_stderr(
        cls,
        stats: RunStats,
        env: Environment,
        output: OutputOptions = NO_OPTIONS,
        *,
        every: float | None = STATUS_SECONDS,
        note: str | None = None,
    ) -> StatusLines:
        """Status lines on the environment's stderr (a terminal)."""
        return cls(stats, _console(env), output, every=every, note=note)

    def __init__(
        self,
        stats: RunStats,
        console: Console,
        output: OutputOptions = NO_OPTIONS,
        *,
        every: float | None = STATUS_SECONDS,
        note: str | None = None,
    ) -> None:
        super().__init__(stats, console, output)
        self._every = every
        self._note = note
        self._shown: tuple[int, int] | None = None  # (done, bytes) of the last line

    def _begin(self) -> None:
        if self._note:
            self._console.print(Text(self._note, style="dim"))
        if self._every is not None:
            self._rates.update(time.monotonic(), self._stats.done, self._moved_so_far())
            self.spawn(self._tick(self._every))

    def _last(self, *, interrupted: bool) -> None:
        if interrupted:  # the terminal echoed "^C" where the cursor was: start below it
            self._console.print()

    async def _tick(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._closed:
            return
        stats = self._stats
        moved = self._moved_so_far()
        request_rate, byte_rate = self._rates.update(time.monotonic(), stats.done, moved)
        if self._shown != (stats.done, moved):  # an unchanged line says nothing new
            self._shown = (stats.done, moved)
            line = status_line(stats, estimate(stats), moved, request_rate, byte_rate)
            # print() joins Texts into a new one, which wraps: one line is asked of print.
            self._console.print(
                line, no_wrap=True, overflow="ellipsis", markup=False, highlight=False
            )
        self.spawn(self._tick(delay))


class LiveDisplay(_Terminal):
    """A terminal of our own: overall progress, counts, the largest transfers, failures above."""

    @classmethod
    def on_stderr(
        cls, stats: RunStats, env: Environment, output: OutputOptions = NO_OPTIONS
    ) -> LiveDisplay:
        """A live display on the environment's stderr (a terminal)."""
        return cls(stats, _console(env), output)

    def __init__(
        self, stats: RunStats, console: Console, output: OutputOptions = NO_OPTIONS
    ) -> None:
        super().__init__(stats, console, output)
        # stdout is left alone: Rich would otherwise swap sys.stdout for a proxy that prints
        # on this console, and stdout carries only what was asked for.
        self._live = Live(
            console=console, auto_refresh=False, transient=True, redirect_stdout=False
        )
        self._failures: deque[Text] = deque()
        self._failures_shown = 0
        self._speeds: dict[int, tuple[float, int, float]] = {}
        self._spinner = Spinner("dots", style="cyan")

    def on_record(self, record: Record) -> None:
        if record.ok or record.skipped or self._closed:  # a repeat is no new failure
            return
        if self._failures_shown + len(self._failures) < MAX_FAILURE_LINES:
            self._failures.append(_failure_line(record))
        elif self._failures_shown + len(self._failures) == MAX_FAILURE_LINES:
            self._failures.append(Text(more_failures(self._output), "dim"))

    def _begin(self) -> None:
        self._live.start()
        self.spawn(self._frame(0.0))

    def _last(self, *, interrupted: bool) -> None:
        self._draw()

    def _stop(self) -> None:
        self._live.stop()

    async def _frame(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._closed:
            return
        self._draw()
        self.spawn(self._frame(FRAME_SECONDS))

    def _draw(self) -> None:
        while self._failures:
            self._console.print(self._failures.popleft(), no_wrap=True, overflow="ellipsis")
            self._failures_shown += 1
        self._live.update(self._render(), refresh=True)

    def _render(self) -> RenderableType:
        stats = self._stats
        now = time.monotonic()
        moved = self._moved_so_far()  # finished bodies and those still arriving
        request_rate, byte_rate = self._rates.update(now, stats.done, moved)
        progress = estimate(stats)
        top = Table.grid(expand=True, padding=(0, 1))
        if progress.share is not None and progress.total is not None:
            top.add_column(ratio=1)
            top.add_column(no_wrap=True, justify="right")
            figure = f"{percent(progress.share):3d}% {progress.done:,}/{progress.total:,}"
            top.add_row(
                ProgressBar(total=1.0, completed=progress.share), Text(figure, style="bold")
            )
        else:
            top.add_column(no_wrap=True)
            top.add_row(self._spinner)
            self._spinner.text = Text(f"{progress.done:,} done", style="bold")
        rates = Text(f"{request_rate:,.0f} req/s · {_size(moved)} at {_size(byte_rate)}/s · ")
        rates.append(clock(stats.elapsed))
        left = eta(progress, request_rate, byte_rate)
        if left is not None:
            rates.append(f" · ETA {clock(left)}")
        counts = Text.assemble(
            ("ok ", "green"),
            f"{stats.ok:,} · ",
            ("failed ", "red"),
            f"{stats.failed:,} · ",
            ("retrying ", "yellow"),
            f"{stats.retrying:,} · ",
            ("in flight ", "cyan"),
            f"{stats.in_flight:,}",
        )
        if stats.skipped or stats.resumed:
            counts.append(f" · skipped {stats.skipped + stats.resumed:,}")
        rows: list[RenderableType] = [top, rates, counts]
        if (pauses := stats.pauses) is not None:  # a quiet spell would otherwise look like a hang
            rows.append(Text(paused_note(pauses), style="yellow"))  # not the counts' end, wrapped
        group = Group(*rows, *self._transfer_rows(now))
        return Constrain(group, width=max(self._console.width - ECHO_ROOM, 20))

    def _transfer_rows(self, now: float) -> list[RenderableType]:
        """The largest transfers in progress, each with its own bar and speed."""
        big = [
            (key, transfer)
            for key, transfer in list(self._stats.transfers.items())
            if max(transfer.expected or 0, transfer.progress.size) >= SHOWN_TRANSFER_BYTES
        ]
        big.sort(key=lambda item: -(item[1].expected or item[1].progress.size))
        speeds: dict[int, tuple[float, int, float]] = {}
        rows = Table.grid(expand=True, padding=(0, 1))
        rows.add_column(no_wrap=True, overflow="ellipsis", max_width=28, style="dim")
        rows.add_column(ratio=1)
        rows.add_column(no_wrap=True, justify="right")
        shown = big[:MAX_TRANSFER_ROWS]
        for key, transfer in shown:
            size = transfer.progress.size
            then, then_size, speed = self._speeds.get(key, (now, size, 0.0))
            if now - then >= 0.5:  # a smoothed speed, refreshed twice a second
                speed = 0.5 * speed + 0.5 * (size - then_size) / (now - then)
                then, then_size = now, size
            speeds[key] = (then, then_size, speed)
            total = transfer.expected
            figure = f"{_size(size)}/{_size(total)}" if total else _size(size)
            rows.add_row(
                "  " + _short_name(transfer.url),
                ProgressBar(total=total or None, completed=size),
                f"{figure} {_size(speed)}/s",
            )
        self._speeds = speeds
        if not shown:
            return []
        if len(big) > len(shown):
            more = len(big) - len(shown)
            return [rows, Text(f"  … and {more} more large transfer{_s(more)}", "dim")]
        return [rows]


def summary_table(
    stats: RunStats,
    *,
    interrupted: bool = False,
    output: OutputOptions = NO_OPTIONS,
) -> RenderableType:
    """The end-of-run summary for a terminal: outcomes with an example each, then totals.

    After an interruption it says how to fetch only the rest, as `output` allows. The bytes
    and their rate are those that came over the wire in this run, not what was held before.
    """
    title = "fetchcli: interrupted" if interrupted else "fetchcli: done"
    title_text = Text(title, style="italic")
    rows = []
    for outcome, count in stats.by_outcome.most_common():
        style = "green" if outcome.startswith("ok") else "dim" if "skipped" in outcome else "red"
        url, error = stats.error_examples.get(outcome, ("", ""))
        example = f"{escape(printable(url))} [dim]→ {escape(error)}[/]" if url else ""
        rows.append((f"[{style}]{escape(outcome)}[/]", f"{count:,}", example))
    if stats.resumed:
        rows.append(("[dim]already done (--resume)[/]", f"{stats.resumed:,}", ""))
    # An example is a failure's: with none, no empty column.
    examples = any(example for *_, example in rows)
    table = Table(show_edge=False, expand=False)
    table.add_column("outcome")
    table.add_column("count", justify="right")
    if examples:
        table.add_column("example", overflow="fold")
    for row in rows:
        table.add_row(*(row if examples else row[:2]))
    elapsed = stats.elapsed
    moved = transferred(stats)  # unfinished bodies too, and not what an earlier run kept
    rate = stats.done / elapsed if elapsed > 0 else 0.0
    byte_rate = moved / elapsed if elapsed > 0 else 0.0
    totals = Text(
        f"{stats.done:,} URL{_s(stats.done)} · {_size(moved)} · {elapsed:.1f}s · "
        f"{rate:,.0f} req/s · {_size(byte_rate)}/s · {retries(stats.retries)}",
        style="bold",
    )
    parts: list[RenderableType] = [title_text]
    if table.row_count:
        parts.append(table)
    parts.append(totals)
    if interrupted:
        parts.append(Text(resume_hint(output), style="dim"))
    return Group(*parts)


def _failure_line(record: Record) -> Text:
    """One line per failure (printed cut to the terminal's width): what went wrong, where."""
    http = record.error_kind == ErrorKind.HTTP
    what = str(record.status) if http else record.error_kind or "error"
    line = Text.assemble(("✗ ", "red"), (what, "red bold"), " ", printable(record.url))
    if record.error and not http:
        line.append(f"  {record.error}", style="dim")
    return line


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def _short_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1].split("?")[0] or url


def _count_url_lines(files: list[str], stop: threading.Event) -> int | None:
    """Lines that may hold a URL (not blank, not a comment), or None when told to stop.

    Blocking: run it in a thread.
    """
    count = 0
    for name in files:
        with open(name, "rb") as stream:
            for number, line in enumerate(stream):
                if number % 65536 == 0 and stop.is_set():
                    return None
                stripped = line.strip()
                if stripped and not stripped.startswith(b"#"):
                    count += 1
    return count


def _settle(future: asyncio.Future[int | None], total: int | None) -> None:
    if not future.done():
        future.set_result(total)
