"""The JSONL record file: written in batches off the event loop, read back for --resume (the
URLs done) and for --update (the ETags they had). The CLI's `--jsonl` file and each `--ray`
shard's ledger are both records files: one writer (`RecordLog`), one reader (`read_lines`),
one rule for what is done (`is_done`)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import stat
import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, BinaryIO, Self

from fetchcli.batching import Batcher
from fetchcli.errors import OutputError, ReaderGone
from fetchcli.fingerprints import FingerprintSet
from fetchcli.kinds import Skipped
from fetchcli.models import Record

__all__ = ["Etags", "RecordLog", "is_done", "load_done", "load_etags", "read_lines"]

MAX_BACKLOG = 10_000  # records waiting to be written, at most (a few MiB)
# A record says its URL needs no fetching again (--resume) when it is ok and was fetched,
# already there, unchanged (a 304), or a repeat of such (a repeat's record is its first's).
_DONE_SKIPPED = (None, Skipped.EXISTS, Skipped.DUPLICATE, Skipped.NOT_MODIFIED)

# Called in the writer's thread with each batch's lines once they are in the file, flushed.
AfterWrite = Callable[[list[str]], None]


class RecordLog:
    """Appends records as JSON lines; each batch is one write, flushed at once.

    A failed write is cut back to the last whole line, so the file stays valid JSONL, and
    stops the run (there is no point fetching what cannot be recorded). `async with` runs
    the writer; on the way out it writes what it holds and the file is closed.

    `after_write(lines)` runs in the writer's thread after each batch is in the file (a
    `--ray` shard hands its lines on to the driver there); an error it raises stops the run
    as a failed write would. At most `max_backlog` records wait for the writing.
    """

    def __init__(
        self,
        stream: BinaryIO,
        name: str,
        *,
        owned: bool,
        after_write: AfterWrite | None = None,
        max_backlog: int = MAX_BACKLOG,
    ) -> None:
        self._stream = stream
        self._name = name
        self._owned = owned
        self._after_write = after_write
        self._max_backlog = max_backlog
        # Only a regular file can be cut back after a failed write (not a pipe, not stdout).
        self._seekable = owned and _is_regular(stream)
        self._lock = threading.Lock()  # a cancelled run's last write may overlap a hop
        self._writer: Batcher[Record, None] = Batcher(self._write)

    async def __aenter__(self) -> Self:
        await self._writer.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            await self._writer.__aexit__(exc_type, exc, traceback)
        finally:
            await asyncio.to_thread(self.close)

    @classmethod
    def open(
        cls, path: str, *, append: bool, stdout: BinaryIO | None = None, **options: Any
    ) -> RecordLog:
        """Open `path` ("-": `stdout`) for records; blocking, call it in a thread. `options`
        are the constructor's `after_write` and `max_backlog`."""
        if path == "-" and stdout is not None:
            return cls(stdout, "stdout", owned=False, **options)
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            stream = open(path, "ab" if append else "wb", buffering=0)  # noqa: SIM115
        except OSError as exc:
            msg = f"cannot write records to {path}: {exc.strerror or exc}"
            raise OutputError(msg) from exc
        return cls(stream, path, owned=True, **options)

    async def add(self, record: Record) -> None:
        """Queue one record for writing; wait when the writing falls far behind (a slow
        reader of `--jsonl -`), so that memory stays flat."""
        if self._writer.backlog < self._max_backlog:
            self._writer.submit_nowait(record)
        else:
            await self._writer.submit(record)

    def close(self) -> None:
        """Close the file (not stdout); blocking. Waits for a write in progress."""
        with self._lock:
            if self._owned:
                self._stream.close()

    def _write(self, records: Sequence[Record]) -> list[Exception | None]:
        with self._lock:
            return self._write_locked(records)

    def _write_locked(self, records: Sequence[Record]) -> list[Exception | None]:
        lines = [record.to_json() for record in records]
        data = "".join([line + "\n" for line in lines]).encode()
        start = self._stream.tell() if self._seekable else None
        try:
            view = memoryview(data)
            while view:
                written = self._stream.write(view)
                view = view[written or 0 :]
            self._stream.flush()
        except OSError as exc:
            if start is not None:
                # Cut a partly written batch back to the last whole line (a regular file can).
                with contextlib.suppress(OSError):
                    os.ftruncate(self._stream.fileno(), start)
            msg = f"cannot write records to {self._name}: {exc.strerror or exc}"
            error = ReaderGone(msg) if isinstance(exc, BrokenPipeError) else OutputError(msg)
            return [error] * len(records)
        if self._after_write is not None:
            self._after_write(lines)
        return [None] * len(records)


def _is_regular(stream: BinaryIO) -> bool:
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError):
        return False


def read_lines(path: str, visit: Callable[[bytes], object], *, repair: bool = False) -> int:
    """Give `visit` every whole line of the records file `path`, in order; return how many.

    Blocking; a missing file has none. A last line cut short by a crash is passed over; with
    `repair` it is also cut off the file, so that appending starts on a fresh line.
    """
    try:
        stream = open(path, "r+b" if repair else "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return 0
    except OSError as exc:
        msg = f"cannot read records from {path}: {exc.strerror or exc}"
        raise OutputError(msg) from exc
    count = good_end = 0
    with stream:
        for line in stream:
            if not line.endswith(b"\n"):
                break
            good_end += len(line)
            count += 1
            visit(line)
        if repair:
            stream.truncate(good_end)
    return count


def is_done(record: object) -> bool:
    """Whether a record read back (a JSON object) says its URL needs no fetching again: ok,
    and fetched, already there, unchanged (`not_modified`), or a repeat of such."""
    return (
        isinstance(record, dict)
        and record.get("ok") is True
        and record.get("skipped") in _DONE_SKIPPED
    )


def load_done(path: str) -> FingerprintSet:
    """The URLs (as written in the input) that `path` records as done (`is_done`); blocking.

    A last line cut short by a crash is removed, so appending starts on a fresh line.
    """
    done = FingerprintSet()

    def visit(line: bytes) -> None:
        if b'"ok":true' not in line:  # most lines of a long file are passed over unparsed
            return
        url = _done_url(line)
        if url is not None:
            done.add(url.encode())

    read_lines(path, visit, repair=True)
    return done


def _done_url(line: bytes) -> str | None:
    """The URL of a records file's line when the record is done (`is_done`), else None."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    url = record.get("url") if is_done(record) else None
    return url if isinstance(url, str) else None


class Etags:
    """The ETag an earlier run recorded for each URL, for `If-None-Match` (--update).

    Keyed by a 64-bit fingerprint of the URL as written, not the URL itself: about 150 bytes a
    URL with an ETag (a million cost ~150 MiB). A fingerprint shared by two URLs would send
    one's ETag for the other, which a server answers with a full 200, never a wrong 304
    (unless both bodies share that ETag, when the 304 is true).
    """

    def __init__(self) -> None:
        self._tags: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._tags)

    def get(self, url: str) -> str | None:
        """The ETag recorded last for `url`, or None."""
        return self._tags.get(_url_fingerprint(url))

    def set(self, url: str, etag: str) -> None:
        self._tags[_url_fingerprint(url)] = etag


def _url_fingerprint(url: str) -> int:
    digest = hashlib.blake2b(url.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def load_etags(path: str) -> Etags:
    """The ETags that `path` records for URLs fetched ok (the last one wins); blocking.

    A missing file holds none; lines that are torn or not records are passed over.
    """
    etags = Etags()

    def visit(line: bytes) -> None:
        if b'"etag":"' not in line:
            return
        try:
            record = json.loads(line)
        except ValueError:
            return
        if not isinstance(record, dict) or record.get("ok") is not True:
            return
        url, etag = record.get("url"), record.get("etag")
        if isinstance(url, str) and isinstance(etag, str):
            etags.set(url, etag)

    read_lines(path, visit)
    return etags
