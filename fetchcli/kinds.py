"""The stable words of the records contract: why a URL failed, and why it needed no fetch.

Both are `StrEnum`s, so a member is its word: it serializes as that word in JSONL and
compares equal to it (`ErrorKind.HTTP == "http"`).
"""

from __future__ import annotations

from enum import StrEnum, unique

__all__ = ["ErrorKind", "Skipped"]


@unique
class ErrorKind(StrEnum):
    """A record's `error_kind`: one word for what went wrong."""

    HTTP = "http"  # the server answered with a status that is not a success
    TIMEOUT = "timeout"  # connect, read or attempt time limit
    CONNECT = "connect"  # no connection (refused, unreachable)
    DNS = "dns"  # the host name did not resolve
    TLS = "tls"  # certificate not trusted, handshake failed
    NETWORK = "network"  # the connection broke (reset, closed)
    PROTOCOL = "protocol"  # the server did not speak HTTP properly
    TRUNCATED = "truncated"  # the body ended before its announced end
    REDIRECT = "redirect"  # loop, too many, bad target, or not followed
    TOO_LARGE = "too_large"  # over --max-bytes
    DECODING = "decoding"  # Content-Encoding unsupported or corrupt
    IO = "io"  # the body could not be written
    PROXY = "proxy"  # the proxy failed or refused
    INVALID_URL = "invalid_url"  # the line is not a usable http(s) URL
    DEADLINE = "deadline"  # --deadline passed before the URL finished
    CHECKSUM = "checksum"  # size or digest does not match what was expected
    INTERNAL = "internal"  # fetchcli itself failed (an engine process died)


@unique
class Skipped(StrEnum):
    """A record's `skipped`: why a line needed no fetch of its own."""

    DUPLICATE = "duplicate"  # the same URL appeared earlier in the run
    EXISTS = "exists"  # --skip-existing found its file
    NOT_MODIFIED = "not_modified"  # --update: the server said 304
