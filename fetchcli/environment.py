"""The process's surroundings, injected so that tests can swap them: streams, terminal, RNG."""

from __future__ import annotations

import getpass
import os
import random
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, TextIO

__all__ = ["Environment", "terminal_prompt"]


def _ask_on_the_terminal(text: str) -> str:
    # getpass falls back to reading stdin when there is no terminal: stdin may be the list.
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    except OSError:
        raise EOFError from None
    return getpass.getpass(text + " ")


def terminal_prompt() -> Callable[[str], str] | None:
    """A password prompt on the controlling terminal when a person is there, else None."""
    return _ask_on_the_terminal if sys.stderr.isatty() else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Environment:
    """Where input comes from and output goes; whether a person is watching."""

    stdin: BinaryIO = field(default_factory=lambda: sys.stdin.buffer)
    stdout: BinaryIO = field(default_factory=lambda: sys.stdout.buffer)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    stdin_isatty: bool = field(default_factory=lambda: sys.stdin.isatty())
    stderr_isatty: bool = field(default_factory=lambda: sys.stderr.isatty())
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    no_color: bool = field(default_factory=lambda: bool(os.environ.get("NO_COLOR")))
    random: random.Random = field(default_factory=random.Random)
    cpu_count: int = field(default_factory=lambda: os.cpu_count() or 1)  # cores, for -P
    # Asks for a password (-u USER without one); None where nobody can answer.
    prompt: Callable[[str], str] | None = field(default_factory=terminal_prompt)
    # The `fetchcli` command, whose process ends with the run: its imports may be frozen
    # out of the garbage collector's way (loop.spare_collector). Not in tests, nor a library.
    own_process: bool = False
