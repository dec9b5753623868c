"""Exit statuses and the exception hierarchy, classified by what the caller does with each.

    FetchcliError                  anything fetchcli raises on purpose
    ├── UsageError                 bad flag, value or source: exit 2, one line
    ├── OutputError                the record file cannot be written: the run stops, exit 1
    │   └── ReaderGone             its pipe's reader left (`| head`): exit 141, quietly
    ├── IncompleteRun              part of the input got no records (a Ray shard lost or failed,
    │                              every engine process gone): exit 1, one line
    ├── Interrupted                SIGINT/SIGTERM ended the run: exit 130/143
    └── FetchError                 one URL failed; it gets a record and the run goes on
        ├── TransientError         worth another attempt (resets, timeouts, 429/503 ...)
        └── PermanentError         final at once (404, too large, redirect loop ...)

`FetchError.kind` is an `ErrorKind` (fetchcli/kinds.py). Library errors are translated once,
where the transports meet them (fetchcli/transport_errors.py), so nothing past the client
sees an aiohttp or httpx exception.
"""

from __future__ import annotations

import asyncio
from enum import IntEnum, unique

from fetchcli.kinds import ErrorKind

__all__ = [
    "ExitStatus",
    "FetchError",
    "FetchcliError",
    "IncompleteRun",
    "Interrupted",
    "OutputError",
    "PermanentError",
    "ReaderGone",
    "TransientError",
    "UsageError",
    "primary_error",
]


@unique
class ExitStatus(IntEnum):
    """The process exit codes of the interface contract."""

    OK = 0
    FAILURES = 1
    USAGE = 2
    INTERRUPTED = 130  # 128 + SIGINT
    READER_GONE = 141  # 128 + SIGPIPE, what `yes | head` gives the writer
    TERMINATED = 143  # 128 + SIGTERM


class FetchcliError(Exception):
    """Base of every error fetchcli raises on purpose."""


class UsageError(FetchcliError):
    """Raised when a flag, a value or a source is unusable; the run does not start."""


class OutputError(FetchcliError):
    """Raised when records cannot be written (disk full, closed pipe); the run stops."""


class ReaderGone(OutputError):
    """Raised when the pipe the records go to has no reader any more (`--jsonl - | head`)."""


class IncompleteRun(FetchcliError):
    """Raised when a run cannot give every line a record: a lost or failed Ray shard, every
    engine process gone."""


class Interrupted(FetchcliError):
    """Raised by `session.run` after a signal stopped the run and cleanup is done."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum


class FetchError(FetchcliError):
    """Raised when one attempt at one URL fails.

    `kind` is the stable word for summaries and the JSONL `error_kind` field; `status`
    is the HTTP status when there was a response, `final_url` the URL it came from (set by
    the fetcher, which knows the redirects). The message is one line.
    """

    def __init__(self, kind: ErrorKind, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.final_url: str | None = None


class TransientError(FetchError):
    """Raised when another attempt may succeed; `retry_after` is the server's wish, in seconds."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(kind, message, status=status)
        self.retry_after = retry_after


class PermanentError(FetchError):
    """Raised when retrying cannot help; the URL fails at once."""


def primary_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error a TaskGroup's group stands for, never the group itself.

    Several leaves are common: every worker meets a closed records pipe at once. The most
    telling one wins: a signal, then the records output, then a usage error, then any
    other error of ours; cancellations only when there is nothing else.
    """
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        error = pending.pop()
        if isinstance(error, BaseExceptionGroup):
            pending.extend(reversed(error.exceptions))
        else:
            leaves.append(error)
    real = [leaf for leaf in leaves if not isinstance(leaf, asyncio.CancelledError)] or leaves
    for kind in (Interrupted, OutputError, UsageError, FetchcliError):
        for leaf in real:
            if isinstance(leaf, kind):
                return leaf
    return real[0]
