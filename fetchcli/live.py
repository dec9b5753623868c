"""The live view on a terminal: overall progress, counts, the largest transfers, failures
printed above, and a summary table at the end.

It is drawn by a chain of fire-and-forget frame tasks (about 10 a second), kept in a
strong-reference set with a done callback that surfaces a failed redraw instead of losing
it. Events only touch counters in `RunStats`; nothing is drawn per chunk.
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

from fetchcli.environment import Environment
from fetchcli.kinds import ErrorKind
from fetchcli.models import Record
from fetchcli.stats import SHOWN_TRANSFER_BYTES, RunStats
from fetchcli.summary import printable
from fetchcli.summary import size as _size

__all__ = ["LiveDisplay", "summary_table"]

FRAME_SECONDS = 0.1
RATE_WINDOW_SECONDS = 5.0
MAX_FAILURE_LINES = 10
MAX_TRANSFER_ROWS = 3
# Columns left free at the right: the terminal echoes "^C" after the cursor, and a line it
# wraps would make the live area one line taller than Rich erases when it stops.
ECHO_ROOM = 2


class LiveDisplay:
    """A live display: overall progress, counts, the largest transfers, failures above."""

    @classmethod
    def on_stderr(cls, stats: RunStats, env: Environment) -> LiveDisplay:
        """A live display on the environment's stderr (a terminal)."""
        console = Console(file=env.stderr, force_terminal=True, no_color=env.no_color)
        return cls(stats, console)

    def __init__(self, stats: RunStats, console: Console) -> None:
        self._stats = stats
        self._console = console
        self._live = Live(console=console, auto_refresh=False, transient=True)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._failures: deque[Text] = deque()
        self._failures_shown = 0
        self._samples: deque[tuple[float, int, int]] = deque()
        self._speeds: dict[int, tuple[float, int, float]] = {}
        self._spinner = Spinner("dots", style="cyan")
        self.error: BaseException | None = None
        self.counter: threading.Thread | None = None  # counting the lines of the list files

    def start(self, files: Sequence[str]) -> None:
        # Only regular files: reading a pipe a second time would steal its lines.
        if files:
            self.spawn(self._count_lines(list(files)))
        self._live.start()
        self.spawn(self._frame(0.0))

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` in the background, holding a strong reference until it is done."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def on_record(self, record: Record) -> None:
        if record.ok or record.skipped or self._closed:  # a repeat is no new failure
            return
        if self._failures_shown + len(self._failures) < MAX_FAILURE_LINES:
            self._failures.append(_failure_line(record))
        elif self._failures_shown + len(self._failures) == MAX_FAILURE_LINES:
            self._failures.append(Text("… more failures: see the summary and the records", "dim"))

    async def aclose(self, *, interrupted: bool, summary: bool = True) -> None:
        # Drawing first and waiting last: a second Ctrl-C here must not leave the terminal
        # with a live display (and a hidden cursor) behind.
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if not self._closed:
            self._closed = True
            self._draw()
        self._live.stop()
        if summary:
            self._console.print(summary_table(self._stats, interrupted=interrupted))
        await asyncio.gather(*tasks, return_exceptions=True)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        # A redraw that fails must be seen, not lost with its task; the fetching goes on.
        self.error = task.exception()
        self._closed = True
        self._live.stop()
        self._console.print(
            f"fetchcli: display error: {type(self.error).__name__}: {self.error};"
            " the live display is off for the rest of the run",
            markup=False,
        )

    async def _frame(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._closed:
            return
        self._draw()
        self.spawn(self._frame(FRAME_SECONDS))

    def _draw(self) -> None:
        while self._failures:
            self._console.print(self._failures.popleft())
            self._failures_shown += 1
        self._live.update(self._render(), refresh=True)

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

    def _render(self) -> RenderableType:
        stats = self._stats
        now = time.monotonic()
        # Bytes of finished bodies and of those still arriving, so a big download shows.
        received = stats.bytes + sum(t.progress.size for t in list(stats.transfers.values()))
        request_rate, byte_rate = self._rates(now, received)
        done = stats.done + stats.resumed
        top = Table.grid(expand=True, padding=(0, 1))
        if stats.total:
            top.add_column(ratio=1)
            top.add_column(no_wrap=True, justify="right")
            share = min(done / stats.total, 1.0)
            top.add_row(
                ProgressBar(total=stats.total, completed=done),
                Text(f"{100 * share:3.0f}% {done:,}/{stats.total:,}", style="bold"),
            )
        else:
            top.add_column(no_wrap=True)
            top.add_row(self._spinner)
            self._spinner.text = Text(f"{done:,} done", style="bold")
        rates = Text(f"{request_rate:,.0f} req/s · {_size(received)} at {_size(byte_rate)}/s · ")
        rates.append(_clock(stats.elapsed))
        if stats.total and request_rate > 0 and done < stats.total:
            rates.append(f" · ETA {_clock((stats.total - done) / request_rate)}")
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
        group = Group(top, rates, counts, *self._transfer_rows(now))
        return Constrain(group, width=max(self._console.width - ECHO_ROOM, 20))

    def _rates(self, now: float, received: int) -> tuple[float, float]:
        """Requests and bytes per second over the last few seconds."""
        done = self._stats.done
        self._samples.append((now, done, received))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW_SECONDS:
            self._samples.popleft()
        first_time, first_done, first_bytes = self._samples[0]
        span = now - first_time
        if span <= 0:
            return 0.0, 0.0
        return (done - first_done) / span, (received - first_bytes) / span

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


def summary_table(stats: RunStats, *, interrupted: bool = False) -> RenderableType:
    """The end-of-run summary for a terminal: outcomes with an example each, then totals."""
    title = "fetchcli: interrupted" if interrupted else "fetchcli: done"
    title_text = Text(title, style="italic")
    table = Table(show_edge=False, expand=False)
    table.add_column("outcome")
    table.add_column("count", justify="right")
    table.add_column("example", overflow="fold")
    for outcome, count in stats.by_outcome.most_common():
        style = "green" if outcome.startswith("ok") else "dim" if "skipped" in outcome else "red"
        url, error = stats.error_examples.get(outcome, ("", ""))
        example = f"{escape(printable(url))} [dim]→ {escape(error)}[/]" if url else ""
        table.add_row(f"[{style}]{escape(outcome)}[/]", f"{count:,}", example)
    if stats.resumed:
        table.add_row("[dim]already done (--resume)[/]", f"{stats.resumed:,}", "")
    elapsed = stats.elapsed
    rate = stats.done / elapsed if elapsed > 0 else 0.0
    byte_rate = stats.bytes / elapsed if elapsed > 0 else 0.0
    totals = Text(
        f"{stats.done:,} URL{_s(stats.done)} · {_size(stats.bytes)} · {elapsed:.1f}s · "
        f"{rate:,.0f} req/s · {_size(byte_rate)}/s · {stats.retries:,} retries",
        style="bold",
    )
    parts: list[RenderableType] = [title_text]
    if table.row_count:
        parts.append(table)
    parts.append(totals)
    if interrupted:
        parts.append(
            Text(
                "What had not finished has no record: run the same command again with "
                "--jsonl FILE --resume to fetch only the rest.",
                style="dim",
            )
        )
    return Group(*parts)


def _failure_line(record: Record) -> Text:
    """One line per failure, cut to the terminal's width: what went wrong, then where."""
    http = record.error_kind == ErrorKind.HTTP
    what = str(record.status) if http else record.error_kind or "error"
    line = Text.assemble(("✗ ", "red"), (what, "red bold"), " ", printable(record.url))
    if record.error and not http:
        line.append(f"  {record.error}", style="dim")
    line.no_wrap = True
    line.overflow = "ellipsis"
    return line


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def _short_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1].split("?")[0] or url


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


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
