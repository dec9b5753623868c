"""Exit statuses and the exception hierarchy, classified by what the caller does with each.

    FetchcliError                  anything fetchcli raises on purpose
    ├── UsageError                 bad flag, value or source: exit 2, one line
    ├── OutputError                the record file cannot be written: the run stops, exit 1
    │   └── ReaderGone             its pipe's reader left (`| head`): exit 141, quietly
    ├── Interrupted                SIGINT/SIGTERM ended the run: exit 130/143
    └── FetchError                 one URL failed; it gets a record and the run goes on
        ├── TransientError         worth another attempt (resets, timeouts, 429/503 ...)
        └── PermanentError         final at once (404, too large, redirect loop ...)

Library errors are translated once, at the boundary, by `map_transport_error()`.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator
from enum import IntEnum, unique

import httpx

__all__ = [
    "ExitStatus",
    "FetchError",
    "FetchcliError",
    "Interrupted",
    "OutputError",
    "PermanentError",
    "ReaderGone",
    "TransientError",
    "UsageError",
    "map_transport_error",
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


class Interrupted(FetchcliError):
    """Raised by the pipeline after a signal stopped the run and cleanup is done."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum


class FetchError(FetchcliError):
    """Raised when one attempt at one URL fails.

    `kind` is a short stable word for summaries and the JSONL `error_kind` field;
    `status` is the HTTP status when there was a response.
    """

    def __init__(self, kind: str, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


class TransientError(FetchError):
    """Raised when another attempt may succeed; `retry_after` is the server's wish, in seconds."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(kind, message, status=status)
        self.retry_after = retry_after


class PermanentError(FetchError):
    """Raised when retrying cannot help; the URL fails at once."""


def map_transport_error(exc: httpx.TransportError | httpx.DecodingError) -> FetchError:
    """Translate an httpx error into the most specific fetchcli error."""
    message = str(exc) or type(exc).__name__
    match exc:
        case httpx.ConnectTimeout():
            return TransientError("timeout", f"connect timeout: {message}")
        case httpx.TimeoutException():
            return TransientError("timeout", f"timeout: {message}")
        case httpx.UnsupportedProtocol():
            return PermanentError("invalid_url", message)
        case httpx.ProxyError():
            return TransientError("proxy", f"proxy error: {message}")
        case httpx.ConnectError() if _caused_by(exc, ssl.SSLCertVerificationError):
            # A certificate that fails verification will fail again: do not retry it.
            return PermanentError("tls", f"TLS verification failed: {message}")
        case httpx.ConnectError() if _is_unknown_host(exc):
            return PermanentError("dns", f"host not found: {message}")
        case httpx.ConnectError():
            return TransientError("connect", f"connection failed: {message}")
        case httpx.RemoteProtocolError():
            return TransientError("protocol", message)
        case httpx.NetworkError():
            return TransientError("network", f"network error: {message}")
        case httpx.DecodingError():
            return PermanentError("decoding", f"cannot decode body: {message}")
        case httpx.LocalProtocolError():
            return PermanentError("protocol", message)
    return TransientError("network", message)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and the chain of causes behind it."""
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(cause, kind) for cause in _causes(exc))


def _is_unknown_host(exc: BaseException) -> bool:
    for cause in _causes(exc):
        if isinstance(cause, socket.gaierror):
            # EAI_AGAIN is a temporary resolver failure; the others mean "no such name".
            return cause.errno != socket.EAI_AGAIN
    return False


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
