"""URL sources: files and stdin streamed as they arrive; a line checked as a URL; dedupe keys.

`manifests.items_of` turns the chunks of `read_chunks` into rows, whatever the format.

Reading happens on one daemon thread per source, never on the event loop and never on the
default executor: a read of a pipe cannot be cancelled, and asyncio.run() would wait for an
executor thread blocked in it forever. The thread hands over chunks as soon as they arrive,
so the first URL of a slow pipe is fetched while the rest is still being written.
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import os
import re
import stat
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import BinaryIO

import httpx

from fetchcli.errors import UsageError
from fetchcli.models import BadLine, Job
from fetchcli.urls import parse_url

__all__ = [
    "MAX_LINE_BYTES",
    "LongLine",
    "Source",
    "close_sources",
    "input_size",
    "open_sources",
    "parse_line",
    "read_chunks",
]

MAX_LINE_BYTES = 8 * 1024
READ_SIZE = 64 * 1024
CUT_MARK = "…[cut]"  # ends the `url` of a line cut to its first MAX_LINE_BYTES

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BAD_HOST = re.compile(r"[^A-Za-z0-9._:~-]")


@dataclass(frozen=True, slots=True)
class LongLine:
    """An input line over its limit: its first bytes (up to the limit), and its length."""

    head: bytes
    length: int


@dataclass(slots=True)
class Source:
    """An opened input: its name as the user gave it ("-" for stdin) and its byte stream.

    Once a reader thread has it (`reading`), that thread closes it: closing a pipe from
    another thread would wait for the read in progress, which may never end.
    """

    name: str
    stream: BinaryIO
    reading: bool = False


def open_sources(
    names: tuple[str, ...],
    stdin: BinaryIO,
    *,
    records: str | None = None,
    stdout: BinaryIO | None = None,
) -> list[Source]:
    """Open every source up front, so a missing one is a usage error before any fetch.

    `records` is the --jsonl path ("-": `stdout`): it must not be one of the sources, or the
    run would overwrite (or, appended, read back forever) its own list of URLs. Checked here,
    before anything is opened for writing.
    """
    sources = []
    for name in names:
        if name == "-":
            # An explicit "-" on a terminal reads what is typed there until Ctrl-D, as
            # `cat -` does; the CLI refuses a terminal only when no source was given.
            sources.append(Source("-", stdin))
            continue
        try:
            sources.append(Source(name, open(name, "rb")))  # noqa: SIM115 - closed by its reader
        except OSError as exc:
            close_sources(sources)
            msg = f"cannot read {name}: {exc.strerror or exc}"
            raise UsageError(msg) from exc
    if records is not None:
        clash = _source_written_by(sources, records, stdout)
        if clash is not None:
            close_sources(sources)
            if records == "-":
                msg = f"--jsonl - goes to {clash}, which is also a source: give the records a file"
            else:
                msg = f"--jsonl {records} is also a source ({clash}): give the records a file"
            raise UsageError(msg + " of their own")
    return sources


def _source_written_by(sources: list[Source], records: str, stdout: BinaryIO | None) -> str | None:
    """The name of the source that the records file is (same device and inode), or None."""
    try:
        if records != "-":
            info = os.stat(records)  # through symlinks, as the writing would go
        elif stdout is not None:
            info = os.fstat(stdout.fileno())
        else:
            return None
    except (OSError, ValueError):  # not there yet (fine), or no file descriptor
        return None
    # Only files: stdin and stdout may well be one terminal, or both /dev/null.
    if not stat.S_ISREG(info.st_mode):
        return None
    for source in sources:
        try:
            theirs = os.fstat(source.stream.fileno())
        except (OSError, ValueError):
            continue
        if (theirs.st_dev, theirs.st_ino) == (info.st_dev, info.st_ino):
            return source.name
    return None


def close_sources(sources: list[Source]) -> None:
    """Close every opened file that no reader thread holds (and never stdin); idempotent."""
    for source in sources:
        if source.name != "-" and not source.reading:
            source.stream.close()


def input_size(sources: list[Source]) -> int | None:
    """Bytes to read from the sources, when all are regular files (None with stdin or pipes)."""
    total = 0
    for source in sources:
        try:
            info = os.fstat(source.stream.fileno())
        except (OSError, ValueError):  # no file descriptor: an in-memory stream
            return None
        if source.name == "-" or not stat.S_ISREG(info.st_mode):
            return None
        total += info.st_size
    return total


async def read_chunks(stream: BinaryIO, *, close: bool) -> AsyncIterator[bytes]:
    """The bytes of `stream` as they arrive, read on a daemon thread; closed at the end
    when `close`. A read error is a UsageError."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes | BaseException] = asyncio.Queue(maxsize=4)
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                chunk = _read1(stream, stdin=not close)
                if not _hand_over(chunk) or not chunk:
                    return
        except (OSError, ValueError) as exc:
            _hand_over(exc)
        finally:
            if close:
                stream.close()

    def _hand_over(item: bytes | BaseException) -> bool:
        """Wait until the loop has taken `item`; False when the run is over."""
        try:
            future = asyncio.run_coroutine_threadsafe(chunks.put(item), loop)
        except RuntimeError:  # the loop is closed
            return False
        while not stop.is_set():
            try:
                future.result(timeout=0.5)
                return True
            except concurrent.futures.TimeoutError:
                continue
            except concurrent.futures.CancelledError:  # the loop shut down
                return False
        future.cancel()
        return False

    thread = threading.Thread(target=reader, name="fetchcli-source", daemon=True)
    thread.start()
    try:
        while True:
            item = await chunks.get()
            if isinstance(item, BaseException):
                msg = f"reading input failed: {item}"
                raise UsageError(msg) from item
            if not item:
                return
            yield item
    finally:
        stop.set()


def _read1(stream: BinaryIO, *, stdin: bool = False) -> bytes:
    # read1 returns whatever has arrived (at least one byte) instead of waiting for a full block.
    raw = getattr(stream, "raw", None) if stdin else None
    if raw is not None:
        # stdin's buffered reader would be locked by this thread while it waits, and an
        # interpreter exiting on Ctrl-C aborts on that lock (sys.stdin is closed at exit).
        chunk: bytes | None = raw.read(READ_SIZE)
        if chunk is None:  # a non-blocking stdin with nothing yet: say so, never cut it short
            msg = "stdin is in non-blocking mode"
            raise BlockingIOError(msg)
        return chunk
    read1 = getattr(stream, "read1", None)
    return read1(READ_SIZE) if read1 is not None else stream.read(READ_SIZE)


def parse_line(source: str, number: int, raw: bytes | LongLine | None) -> Job | BadLine | None:
    """Turn one raw input line into a Job, a BadLine, or None for blanks and comments.

    A bad line keeps its text as written (JSON escapes what it must); only bytes that are
    not UTF-8 become U+FFFD. `None` is a line too long whose start was not kept.
    """
    limit = f"{MAX_LINE_BYTES // 1024} KiB"
    if raw is None:
        return BadLine(source, number, "", f"line longer than {limit}")
    if isinstance(raw, LongLine):
        head = raw.head.lstrip()
        if head.startswith(b"#"):
            return None
        # Whole characters only: a cut through one must not become U+FFFD.
        text = codecs.getincrementaldecoder("utf-8")("replace").decode(head)
        reason = f"line of {raw.length:,} bytes is longer than {limit}"
        return BadLine(source, number, text + CUT_MARK, reason)
    raw = raw.strip()
    if not raw or raw.startswith(b"#"):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return BadLine(source, number, raw.decode("utf-8", "replace"), "not valid UTF-8")
    problem, url = _check_url(text)
    if url is None:
        return BadLine(source, number, text, problem)
    return Job(source, number, text, url)


def _check_url(text: str) -> tuple[str, httpx.URL | None]:
    if _CONTROL.search(text):
        return "contains control characters", None
    scheme, sep, _ = text.partition("://")
    if not sep:
        return "not a URL: it must start with http:// or https://", None
    if scheme.lower() not in ("http", "https"):
        return f"unsupported scheme {scheme[:20]!r}: only http and https are fetched", None
    try:
        url = parse_url(text)
    except httpx.InvalidURL as exc:
        return f"invalid URL: {exc}", None
    host = url.raw_host.decode("ascii", "replace")
    if not host:
        return "invalid URL: no host", None
    if _BAD_HOST.search(host) or host.startswith(".") or ".." in host:
        return f"invalid URL: bad host {host[:60]!r}", None
    if url.port is not None and not 0 < url.port < 65536:
        return f"invalid URL: port {url.port} out of range", None
    return "", url
