"""The JSONL record file: written in batches off the event loop, read back for --resume (the
URLs done) and for --update (the ETags they had)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import stat
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import BinaryIO, Self

from fetchcli.batching import Batcher
from fetchcli.errors import OutputError, ReaderGone
from fetchcli.fingerprints import FingerprintSet
from fetchcli.kinds import Skipped
from fetchcli.models import Record

__all__ = ["Etags", "RecordLog", "load_done", "load_etags"]

MAX_BACKLOG = 10_000  # records waiting to be written, at most (a few MiB)


class RecordLog:
    """Appends records as JSON lines; each batch is one write, flushed at once.

    A failed write is cut back to the last whole line, so the file stays valid JSONL, and
    stops the run (there is no point fetching what cannot be recorded). `async with` runs
    the writer; on the way out it writes what it holds and the file is closed.
    """

    def __init__(self, stream: BinaryIO, name: str, *, owned: bool) -> None:
        self._stream = stream
        self._name = name
        self._owned = owned
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
    def open(cls, path: str, *, append: bool, stdout: BinaryIO) -> RecordLog:
        """Open `path` ("-": stdout) for records; blocking, call it in a thread."""
        if path == "-":
            return cls(stdout, "stdout", owned=False)
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            stream = open(path, "ab" if append else "wb", buffering=0)  # noqa: SIM115
        except OSError as exc:
            msg = f"cannot write records to {path}: {exc.strerror or exc}"
            raise OutputError(msg) from exc
        return cls(stream, path, owned=True)

    async def add(self, record: Record) -> None:
        """Queue one record for writing; wait when the writing falls far behind (a slow
        reader of `--jsonl -`), so that memory stays flat."""
        if self._writer.backlog < MAX_BACKLOG:
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
        data = "".join([record.to_json() + "\n" for record in records]).encode()
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
        return [None] * len(records)


def _is_regular(stream: BinaryIO) -> bool:
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError):
        return False


def load_done(path: str) -> FingerprintSet:
    """The URLs (as written in the input) that `path` records as fetched ok (or already
    there, or repeats of such); blocking.

    A last line cut short by a crash is removed, so appending starts on a fresh line.
    """
    done = FingerprintSet()
    try:
        stream = open(path, "r+b")  # noqa: SIM115
    except FileNotFoundError:
        return done
    except OSError as exc:
        msg = f"cannot read records from {path}: {exc.strerror or exc}"
        raise OutputError(msg) from exc
    with stream:
        good_end = 0
        for line in stream:
            if not line.endswith(b"\n"):
                break
            good_end += len(line)
            if b'"ok":true' not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            # A repeat's record is its first's outcome: ok means its URL was fetched ok.
            if (
                isinstance(record, dict)
                and record.get("ok") is True
                and record.get("skipped")
                in (None, Skipped.EXISTS, Skipped.DUPLICATE, Skipped.NOT_MODIFIED)
            ):
                url = record.get("url")
                if isinstance(url, str):
                    done.add(url.encode())
        stream.truncate(good_end)
    return done


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
    try:
        stream = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return etags
    except OSError as exc:
        msg = f"cannot read records from {path}: {exc.strerror or exc}"
        raise OutputError(msg) from exc
    with stream:
        for line in stream:
            if b'"etag":"' not in line or not line.endswith(b"\n"):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or record.get("ok") is not True:
                continue
            url, etag = record.get("url"), record.get("etag")
            if isinstance(url, str) and isinstance(etag, str):
                etags.set(url, etag)
    return etags
