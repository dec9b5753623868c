"""What a person sees on stderr: nothing (-q), one plain summary line (not a terminal),
or the live view of `fetchcli.live` (a terminal). Only the live view imports Rich.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TextIO

from fetchcli.config import Settings
from fetchcli.environment import Environment
from fetchcli.models import Record
from fetchcli.stats import RunStats
from fetchcli.summary import summary_line

__all__ = ["Display", "NullDisplay", "PlainDisplay", "make_display"]


class Display(Protocol):
    """What the pipeline tells the display."""

    def start(self, files: Sequence[str]) -> None:
        """The run begins; `files` are regular files whose lines may be counted ahead."""

    def on_record(self, record: Record) -> None:
        """A record was produced."""

    async def aclose(self, *, interrupted: bool, summary: bool = True) -> None:
        """The run ended: stop drawing and print the summary (unless told not to)."""


class NullDisplay:
    """For -q: nothing at all."""

    def start(self, files: Sequence[str]) -> None:
        pass

    def on_record(self, record: Record) -> None:
        pass

    async def aclose(self, *, interrupted: bool, summary: bool = True) -> None:
        pass


class PlainDisplay:
    """Not a terminal: no live display, no control codes, one summary line at the end."""

    def __init__(self, stats: RunStats, stream: TextIO) -> None:
        self._stats = stats
        self._stream = stream

    def start(self, files: Sequence[str]) -> None:
        pass

    def on_record(self, record: Record) -> None:
        pass

    async def aclose(self, *, interrupted: bool, summary: bool = True) -> None:
        if not summary:
            return
        prefix = "interrupted: " if interrupted else ""
        self._stream.write(f"fetchcli: {prefix}{summary_line(self._stats)}\n")
        self._stream.flush()


def make_display(settings: Settings, env: Environment, stats: RunStats) -> Display:
    """The display for where stderr goes: nothing, one summary line, or a live view."""
    if settings.output.quiet:
        return NullDisplay()
    if not env.stderr_isatty:
        return PlainDisplay(stats, env.stderr)
    from fetchcli.live import LiveDisplay  # Rich: ~50 ms to import, only for a terminal

    return LiveDisplay.on_stderr(stats, env)
