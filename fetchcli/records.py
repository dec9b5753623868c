"""The JSONL record file: written in batches off the event loop, read back for --resume (the
URLs done) and for --update (the ETags they had, and the size and sha256 of their files)."""

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
from fetchcli.models import Record, Recorded

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
    """What an earlier run recorded for each URL saved ok, for --update: the ETag (for
    `If-None-Match`), and the file's size and sha256 (a file that no longer has them is
    fetched in full: its 304 would keep a damaged file).

    Keyed by a 64-bit fingerprint of the URL as written, not the URL itself, the digest kept
    as 32 bytes: about 290 bytes a URL with all three (a million cost ~290 MB), of which the
    size and sha256 take ~65. A fingerprint shared by two URLs would send one's ETag for the other, which a
    server answers with a full 200, never a wrong 304 (unless both bodies share that ETag,
    when the 304 is true); at worst a file is fetched in full again.
    """

    def __init__(self) -> None:
        self._tags: dict[int, tuple[str | None, int | None, bytes | None]] = {}

    def __len__(self) -> int:
        return len(self._tags)

    def get(self, url: str) -> Recorded | None:
        """What was recorded last for `url`, or None."""
        found = self._tags.get(_url_fingerprint(url))
        if found is None:
            return None
        etag, size, digest = found
        return Recorded(etag, size, None if digest is None else digest.hex())

    def set(self, url: str, recorded: Recorded) -> None:
        digest = None if recorded.sha256 is None else bytes.fromhex(recorded.sha256)
        self._tags[_url_fingerprint(url)] = (recorded.etag, recorded.size, digest)


def _url_fingerprint(url: str) -> int:
    digest = hashlib.blake2b(url.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def load_etags(path: str) -> Etags:
    """What `path` records of the URLs fetched ok (the last record wins, but an ETag stays
    until a later record names another); blocking.

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
            # Only records of saved files (a path) or with an ETag are worth parsing.
            if not line.endswith(b"\n") or (b'"etag":"' not in line and b'"path":"' not in line):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("ok") is True:
                _book(etags, record)
    return etags


def _book(etags: Etags, record: dict[str, object]) -> None:
    url, etag = record.get("url"), record.get("etag")
    if not isinstance(url, str):
        return
    etag = etag if isinstance(etag, str) else None
    if etag is None:  # a later run without one (a 304 that sent none) keeps the earlier
        earlier = etags.get(url)
        etag = None if earlier is None else earlier.etag
    size, digest = record.get("bytes"), record.get("sha256")
    if not isinstance(record.get("path"), str) or not isinstance(size, int):
        size = digest = None  # nothing saved: nothing to compare a file with
    if not (isinstance(digest, str) and len(digest) == 64 and _is_hex(digest)):
        digest = None
    if etag is not None or size is not None:
        etags.set(url, Recorded(etag, size, digest))


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True
