"""What a person sees on stderr: nothing (-q), one plain summary line (not a terminal),
or a view from `fetchcli.live` (a terminal). Only those views import Rich.

In a terminal the live view redraws an area at the bottom, which erases whatever others
wrote there in the meantime. So it is drawn only when the terminal is ours alone; when it
is shared (the reader of a pipe on stdout may write to it, records go to it on stdout, or
a person types the URLs into it), the view is complete lines that erase nothing.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from typing import BinaryIO, Protocol, TextIO

from fetchcli.config import OutputOptions, Settings
from fetchcli.environment import Environment
from fetchcli.models import Record
from fetchcli.stats import RunStats
from fetchcli.summary import resume_hint, summary_line

__all__ = ["TYPING_NOTE", "Display", "NullDisplay", "PlainDisplay", "make_display", "shared_stdout"]

TYPING_NOTE = "fetchcli: reading URLs from the terminal, one a line; Ctrl-D ends the list"


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

    def __init__(
        self, stats: RunStats, stream: TextIO, output: OutputOptions | None = None
    ) -> None:
        self._stats = stats
        self._stream = stream
        self._output = output or OutputOptions()

    def start(self, files: Sequence[str]) -> None:
        pass

    def on_record(self, record: Record) -> None:
        pass

    async def aclose(self, *, interrupted: bool, summary: bool = True) -> None:
        if not summary:
            return
        prefix = "interrupted: " if interrupted else ""
        self._stream.write(f"fetchcli: {prefix}{summary_line(self._stats)}\n")
        if interrupted:  # as the live view says it: how to go on from here
            self._stream.write(f"fetchcli: {resume_hint(self._output)}\n")
        self._stream.flush()


def make_display(settings: Settings, env: Environment, stats: RunStats) -> Display:
    """The display for where stderr goes: nothing, one summary line, or a live view."""
    if settings.output.quiet:
        return NullDisplay()
    if not env.stderr_isatty:
        return PlainDisplay(stats, env.stderr, settings.output)
    from fetchcli.live import LiveDisplay, StatusLines  # Rich: ~50 ms, only for a terminal

    output = settings.output
    if env.stdin_isatty and "-" in settings.input.sources:
        # Status lines would cut into the line being typed: a note first, the summary last.
        return StatusLines.on_stderr(stats, env, output, every=None, note=TYPING_NOTE)
    if shared_stdout(env.stdout, records=output.jsonl == "-"):
        return StatusLines.on_stderr(stats, env, output)
    return LiveDisplay.on_stderr(stats, env, output)


def shared_stdout(stdout: BinaryIO, *, records: bool) -> bool:
    """Whether what goes to stdout may land on the terminal too: a pipe or a socket (its
    reader may write there, as jq does), or a terminal that `records` go to."""
    try:
        fd = stdout.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError):  # no file descriptor (a test's buffer), or closed
        return False
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return True
    return records and os.isatty(fd)
