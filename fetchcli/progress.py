"""What a person sees on stderr: a live Rich display on a terminal, one summary line otherwise.

The live display is drawn by a chain of fire-and-forget frame tasks (about 10 a second),
kept in a strong-reference set with a done callback that surfaces a failed redraw instead
of losing it. Events only touch counters in `RunStats`; nothing is drawn per chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Coroutine, Iterable
from typing import Any, Protocol, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from fetchcli.models import Record
from fetchcli.stats import RunStats

__all__ = ["Display", "NullDisplay", "PlainDisplay", "RichDisplay", "summary_line"]

FRAME_SECONDS = 0.1
RATE_WINDOW_SECONDS = 5.0
MAX_FAILURE_LINES = 10
MAX_TRANSFER_ROWS = 3
BIG_TRANSFER_BYTES = 1024 * 1024


class Display(Protocol):
    """What the pipeline tells the display."""

    def start(self, sources: Iterable[str]) -> None:
        """The run begins; `sources` are the input names (to count lines ahead)."""

    def on_record(self, record: Record) -> None:
        """A record was produced."""

    async def aclose(self, *, interrupted: bool) -> None:
        """The run ended: stop drawing and print the summary."""


class NullDisplay:
    """For -q: nothing at all."""

    def start(self, sources: Iterable[str]) -> None:
        pass

    def on_record(self, record: Record) -> None:
        pass

    async def aclose(self, *, interrupted: bool) -> None:
        pass


class PlainDisplay:
    """Not a terminal: no live display, no control codes, one summary line at the end."""

    def __init__(self, stats: RunStats, stream: TextIO) -> None:
        self._stats = stats
        self._stream = stream

    def start(self, sources: Iterable[str]) -> None:
        pass

    def on_record(self, record: Record) -> None:
        pass

    async def aclose(self, *, interrupted: bool) -> None:
        prefix = "interrupted: " if interrupted else ""
        self._stream.write(f"fetchcli: {prefix}{summary_line(self._stats)}\n")
        self._stream.flush()


class RichDisplay:
    """A live display: overall progress, counts, the largest transfers, failures above."""

    def __init__(self, stats: RunStats, console: Console) -> None:
        self._stats = stats
        self._console = console
        self._live = Live(console=console, auto_refresh=False, transient=True)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._failures: deque[str] = deque()
        self._failures_shown = 0
        self._samples: deque[tuple[float, int, int]] = deque()
        self._transfer_marks: dict[int, tuple[float, int]] = {}
        self.error: BaseException | None = None

    def start(self, sources: Iterable[str]) -> None:
        files = [name for name in sources if name != "-"]
        if files and "-" not in sources:
            self.spawn(self._count_lines(files))
        self._live.start()
        self.spawn(self._frame(0.0))

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` in the background, holding a strong reference until it is done."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def on_record(self, record: Record) -> None:
        if record.ok or self._closed:
            return
        if self._failures_shown + len(self._failures) < MAX_FAILURE_LINES:
            self._failures.append(_failure_line(record))
        elif self._failures_shown + len(self._failures) == MAX_FAILURE_LINES:
            self._failures.append("[dim]… more failures: see the summary and the records[/]")

    async def aclose(self, *, interrupted: bool) -> None:
        # Drawing first and waiting last: a second Ctrl-C here must not leave the terminal
        # with a live display (and a hidden cursor) behind.
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if not self._closed:
            self._closed = True
            self._draw()
        self._live.stop()
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
            self._console.print(self._failures.popleft(), highlight=False)
            self._failures_shown += 1
        self._live.update(self._render(), refresh=True)

    async def _count_lines(self, files: list[str]) -> None:
        with contextlib.suppress(OSError):  # without a total, the display shows a count
            self._stats.total = await asyncio.to_thread(_count_url_lines, files)

    def _render(self) -> RenderableType:
        stats = self._stats
        now = time.monotonic()
        request_rate, byte_rate = self._rates(now)
        width = self._console.width
        done = stats.done + stats.resumed
        head = Text()
        if stats.total:
            head.append(f"{done:,}/{stats.total:,} ", style="bold")
            head.append(f"{100 * done / stats.total:3.0f}% ")
        else:
            head.append(f"{done:,} done ", style="bold")
        head.append(f"{request_rate:,.0f} req/s  {_size(stats.bytes)} {_size(byte_rate)}/s  ")
        head.append(_clock(stats.elapsed))
        if stats.total and request_rate > 0 and done < stats.total:
            head.append(f" ETA {_clock((stats.total - done) / request_rate)}")
        counts = Text.assemble(
            ("ok ", "green"),
            f"{stats.ok:,}  ",
            ("failed ", "red"),
            f"{stats.failed:,}  ",
            ("retrying ", "yellow"),
            f"{stats.retrying:,}  ",
            ("in flight ", "cyan"),
            f"{stats.in_flight:,}",
        )
        if stats.skipped or stats.resumed:
            counts.append(f"  skipped {stats.skipped + stats.resumed:,}")
        rows: list[RenderableType] = []
        if stats.total:
            rows.append(ProgressBar(total=stats.total, completed=done, width=max(10, width - 2)))
        rows += [head, counts]
        rows += self._transfer_rows(now, width)
        return Group(*rows)

    def _rates(self, now: float) -> tuple[float, float]:
        stats = self._stats
        self._samples.append((now, stats.done, stats.bytes))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW_SECONDS:
            self._samples.popleft()
        first_time, first_done, first_bytes = self._samples[0]
        span = now - first_time
        if span <= 0:
            return 0.0, 0.0
        return (stats.done - first_done) / span, (stats.bytes - first_bytes) / span

    def _transfer_rows(self, now: float, width: int) -> list[RenderableType]:
        transfers = self._stats.transfers
        big = [
            (key, transfer)
            for key, transfer in list(transfers.items())
            if max(transfer.expected or 0, transfer.body.size) >= BIG_TRANSFER_BYTES
        ]
        big.sort(key=lambda item: -(item[1].expected or item[1].body.size))
        marks = {}
        rows: list[RenderableType] = []
        name_width = max(8, min(30, width // 3))
        for key, transfer in big[:MAX_TRANSFER_ROWS]:
            size = transfer.body.size
            then, then_size = self._transfer_marks.get(key, (now, size))
            marks[key] = (then, then_size) if now - then < 1.0 else (now, size)
            speed = (size - then_size) / (now - then) if now > then else 0.0
            name = _short_name(transfer.url, name_width)
            row = Table.grid(padding=(0, 1))
            row.add_column(width=name_width, no_wrap=True)
            row.add_column()
            row.add_column(no_wrap=True)
            total = transfer.expected
            bar_width = max(5, width - name_width - 30)
            bar = ProgressBar(total=total or None, completed=size, width=bar_width)
            figure = f"{_size(size)}/{_size(total)}" if total else _size(size)
            row.add_row(Text(name, style="dim"), bar, f"{figure} {_size(speed)}/s")
            rows.append(row)
        self._transfer_marks = marks
        return rows


def summary_line(stats: RunStats) -> str:
    """One plain line: counts, bytes, time and rates; no control codes."""
    rate = stats.done / stats.elapsed if stats.elapsed > 0 else 0.0
    parts = [f"{stats.done:,} URLs in {stats.elapsed:.1f}s ({rate:,.0f}/s)", f"{stats.ok:,} ok"]
    failed = f"{stats.failed:,} failed"
    kinds = [(k, n) for k, n in stats.by_outcome.most_common() if k != "ok" and "skipped" not in k]
    if kinds:
        failed += " (" + ", ".join(f"{kind} {count:,}" for kind, count in kinds[:4]) + ")"
    parts.append(failed)
    if stats.skipped:
        parts.append(f"{stats.skipped:,} skipped")
    if stats.resumed:
        parts.append(f"{stats.resumed:,} already done")
    parts.append(_size(stats.bytes))
    parts.append(f"{stats.retries:,} retries")
    return ", ".join(parts)


def summary_table(stats: RunStats, *, interrupted: bool = False) -> RenderableType:
    """The end-of-run summary for a terminal: outcomes with an example each, then totals."""
    title = "fetchcli: interrupted" if interrupted else "fetchcli: done"
    table = Table(title=title, title_justify="left", show_edge=False, expand=False)
    table.add_column("outcome")
    table.add_column("count", justify="right")
    table.add_column("example", overflow="fold")
    for outcome, count in stats.by_outcome.most_common():
        style = "green" if outcome == "ok" else "dim" if "skipped" in outcome else "red"
        url, error = stats.error_examples.get(outcome, ("", ""))
        example = f"{escape(url)} [dim]{escape(error)}[/]" if url else ""
        table.add_row(f"[{style}]{escape(outcome)}[/]", f"{count:,}", example)
    if stats.resumed:
        table.add_row("[dim]already done (--resume)[/]", f"{stats.resumed:,}", "")
    elapsed = stats.elapsed
    rate = stats.done / elapsed if elapsed > 0 else 0.0
    byte_rate = stats.bytes / elapsed if elapsed > 0 else 0.0
    totals = Text(
        f"{stats.done:,} URLs · {_size(stats.bytes)} · {elapsed:.1f}s · "
        f"{rate:,.0f} req/s · {_size(byte_rate)}/s · {stats.retries:,} retries",
        style="bold",
    )
    return Group(table, totals)


def _failure_line(record: Record) -> str:
    what = str(record.status) if record.error_kind == "http" else record.error_kind or "error"
    return f"[red]{escape(what)}[/] {escape(record.url)} [dim]{escape(record.error or '')}[/]"


def _short_name(url: str, width: int) -> str:
    name = url.rstrip("/").rsplit("/", 1)[-1] or url
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def _size(count: float | None) -> str:
    if count is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"  # pragma: no cover


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _count_url_lines(files: list[str]) -> int:
    """Lines that may hold a URL (not blank, not a comment); blocking, run in a thread."""
    count = 0
    for name in files:
        with open(name, "rb") as stream:
            for line in stream:
                stripped = line.strip()
                if stripped and not stripped.startswith(b"#"):
                    count += 1
    return count
