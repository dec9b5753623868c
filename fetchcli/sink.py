"""Bodies to disk: streamed to a temporary file beside the target, renamed into place when
complete, hashed on the way. Every file operation runs in a thread, never on the event loop.

Small bodies (the common case) stay in memory and are written many per thread hop through a
`Batcher`; large ones spill in `SPILL_BYTES` pieces, each piece hashed and written in a
thread while the next one downloads. A registry of live temporary files lets `sweep()`
remove every one of them when a run is interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import secrets
import stat
import threading
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import NamedTuple, Self

from fetchcli.batching import Batcher
from fetchcli.errors import PermanentError
from fetchcli.kinds import ErrorKind

__all__ = ["SPILL_BYTES", "TEMP_SUFFIX", "Body", "Saver"]

SPILL_BYTES = 256 * 1024
HASH_PIECE = 1024 * 1024  # an existing file is read and hashed this much at a time
TEMP_SUFFIX = ".fetchcli-part"
WRITE_THREADS = 1

O_BINARY = getattr(os, "O_BINARY", 0)  # Windows would translate newlines without it

SmallFile = tuple[PurePosixPath, bytes]


class TempFile(NamedTuple):
    """An open temporary file and the target it becomes when complete."""

    fd: int
    path: str
    target: Path


class Saver:
    """Owns the output directory for one run: targets, temporary files, batched writes.

    `async with Saver(...)` runs its writers; on the way out they finish what they hold,
    and every temporary file still registered is removed.
    """

    def __init__(self, output_dir: Path, *, save: bool) -> None:
        self.root = output_dir
        self.save = save
        self._known_dirs: set[str] = set()
        self._temps: set[str] = set()
        self._lock = threading.Lock()
        self._closed = False
        # Temporary names: unique per run without a random draw (a syscall) per file.
        self._token = secrets.token_hex(4)
        self._serial = itertools.count()
        # One hop at a time: more threads overlap the disk's waits but fight the event loop
        # for the GIL on every syscall (measured: W1 took 6.2 s with one, 9.4 s with four).
        self.small_files: Batcher[SmallFile, str] = Batcher(
            self._write_small_files, max_hops=WRITE_THREADS
        )
        self.sizes: Batcher[PurePosixPath, int | None] = Batcher(
            self._stat_sizes, max_hops=WRITE_THREADS
        )
        self.digests: Batcher[PurePosixPath, tuple[int, str] | None] = Batcher(
            self._digest_files, max_hops=WRITE_THREADS
        )
        self._writers = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self.small_files)
            await stack.enter_async_context(self.sizes)
            await stack.enter_async_context(self.digests)
            self._writers = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            await self._writers.__aexit__(exc_type, exc, traceback)
        finally:
            # In a thread that a second Ctrl-C cannot stop: asyncio.run() waits for it.
            await asyncio.shield(asyncio.ensure_future(asyncio.to_thread(self.sweep)))

    def body(self, relpath: PurePosixPath | None) -> Body:
        """A new body for one response, saved under `relpath`, or only hashed when None."""
        return Body(self, relpath)

    async def existing_size(self, relpath: PurePosixPath) -> int | None:
        """The size of the file already saved for `relpath`, or None (for --skip-existing)."""
        return await self.sizes.submit(relpath)

    async def existing(self, relpath: PurePosixPath) -> tuple[int, str] | None:
        """The real size and sha256 of the file already saved for `relpath`, or None.

        Small files are hashed many per thread hop; a large one in a thread of its own, so
        that it holds up no other.
        """
        size = await self.existing_size(relpath)
        if size is None:
            return None
        if size <= SPILL_BYTES:
            return await self.digests.submit(relpath)
        return await asyncio.to_thread(self._digest_file, relpath)

    def sweep(self) -> None:
        """Remove every temporary file still registered; later writes are refused. Blocking."""
        with self._lock:
            self._closed = True
            temps, self._temps = self._temps, set()
        for temp in temps:
            _unlink(temp)

    # The methods below run in worker threads.

    def _stat_sizes(self, relpaths: Sequence[PurePosixPath]) -> list[int | None]:
        sizes: list[int | None] = []
        for relpath in relpaths:
            try:
                info = os.stat(self.root / relpath)
            except OSError:
                sizes.append(None)
            else:
                sizes.append(info.st_size if stat.S_ISREG(info.st_mode) else None)
        return sizes

    def _digest_files(self, relpaths: Sequence[PurePosixPath]) -> list[tuple[int, str] | None]:
        return [self._digest_file(relpath) for relpath in relpaths]

    def _digest_file(self, relpath: PurePosixPath) -> tuple[int, str] | None:
        """Size and sha256 of what the file holds now; None if it is gone or not a file."""
        digest = hashlib.sha256()
        size = 0
        try:
            with open(self.root / relpath, "rb") as stream:
                if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
                    return None
                while piece := stream.read(HASH_PIECE):
                    digest.update(piece)
                    size += len(piece)
        except OSError:
            return None
        return size, digest.hexdigest()

    def _write_small_files(self, files: Sequence[SmallFile]) -> list[str | Exception]:
        results: list[str | Exception] = []
        for relpath, data in files:
            try:
                temp = self.open_temp(relpath)
                try:
                    try:
                        _write_all(temp.fd, [data])
                    finally:
                        os.close(temp.fd)
                    results.append(self.place(temp, relpath))
                except BaseException:
                    self.drop_temp(temp.path)
                    raise
            except OSError as exc:
                results.append(_write_error(self.root / relpath, exc))
        return results

    def open_temp(self, relpath: PurePosixPath) -> TempFile:
        """Create and register a temporary file beside the target of `relpath`."""
        target = self._target(relpath)
        temp = f"{target.parent}/.{target.name}.{self._token}-{next(self._serial)}{TEMP_SUFFIX}"
        with self._lock:
            if self._closed:
                msg = "the run is shutting down"
                raise OSError(msg)
            self._temps.add(temp)
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_BINARY, 0o666)
        except BaseException:
            self._forget(temp)
            raise
        return TempFile(fd, temp, target)

    def place(self, temp: TempFile, relpath: PurePosixPath) -> str:
        """Rename a finished temporary file to its target; return the final path."""
        target = temp.target
        try:
            os.replace(temp.path, target)
        except IsADirectoryError:
            # Another URL needed this name as a directory ("/a" after "/a/b").
            target = self.root / _clash_path(relpath)
            os.replace(temp.path, target)
        self._forget(temp.path)
        return str(target)

    def drop_temp(self, temp: str) -> None:
        """Remove a temporary file that will not be completed."""
        _unlink(temp)
        self._forget(temp)

    def _forget(self, temp: str) -> None:
        with self._lock:
            self._temps.discard(temp)

    def _target(self, relpath: PurePosixPath) -> Path:
        """The file for `relpath`, its directories made; moved aside if a file blocks them."""
        target = self.root / relpath
        directory = str(target.parent)
        if directory in self._known_dirs:
            return target
        try:
            os.makedirs(target.parent, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            # A file holds a name this path needs as a directory ("/a/b" after "/a").
            target = self.root / _clash_path(relpath)
            os.makedirs(target.parent, exist_ok=True)
            return target
        if len(self._known_dirs) > 100_000:
            self._known_dirs.clear()
        self._known_dirs.add(directory)
        return target


class Body:
    """One response body on its way to disk: counted, hashed, buffered, spilled, placed."""

    def __init__(self, saver: Saver, relpath: PurePosixPath | None) -> None:
        self.size = 0
        self._saver = saver
        self._relpath = relpath
        self._hash = hashlib.sha256()
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._temp: TempFile | None = None
        self._open = False
        self._spill: asyncio.Future[None] | None = None

    def feed(self, data: bytes) -> bool:
        """Take a piece of decoded body; True when enough is buffered to `spill()`."""
        self.size += len(data)
        self._chunks.append(data)
        self._buffered += len(data)
        return self._buffered >= SPILL_BYTES

    async def spill(self) -> None:
        """Hash and write what is buffered, in a thread, while the caller reads on."""
        if self._spill is not None:
            await self._spill
        chunks, self._chunks, self._buffered = self._chunks, [], 0
        self._spill = asyncio.ensure_future(asyncio.to_thread(self._write, chunks))

    async def finish(self) -> tuple[str | None, str]:
        """Complete the body; return (final path or None when not saved, sha256 hex)."""
        if self._spill is None:
            # Small body: hashing inline is cheaper than a thread hop; the write is batched.
            for chunk in self._chunks:
                self._hash.update(chunk)
            if self._relpath is None:
                return None, self._hash.hexdigest()
            path = await self._saver.small_files.submit((self._relpath, b"".join(self._chunks)))
            return path, self._hash.hexdigest()
        await self._spill
        chunks, self._chunks = self._chunks, []
        placed: str | None = await asyncio.to_thread(self._write_last, chunks)
        return placed, self._hash.hexdigest()

    async def discard(self) -> None:
        """Forget the body and remove its temporary file, if any."""
        spill, self._spill = self._spill, None
        if spill is not None:
            # The write may still be running in its thread; the sweep covers a cancelled wait.
            await asyncio.wait([spill])
            if not spill.cancelled():
                spill.exception()  # seen: the URL already failed for a reason of its own
        if self._temp is not None:
            await asyncio.to_thread(self._drop)

    # The methods below run in worker threads.

    def _write(self, chunks: list[bytes]) -> None:
        if self._relpath is not None and self._temp is None:
            try:
                self._temp = self._saver.open_temp(self._relpath)
            except OSError as exc:
                raise _write_error(self._saver.root / self._relpath, exc) from exc
            self._open = True
        for chunk in chunks:
            self._hash.update(chunk)
        if self._temp is not None:
            try:
                _write_all(self._temp.fd, chunks)
            except OSError as exc:
                raise _write_error(self._temp.target, exc) from exc

    def _write_last(self, chunks: list[bytes]) -> str | None:
        self._write(chunks)
        if self._temp is None or self._relpath is None:
            return None
        try:
            self._open = False
            os.close(self._temp.fd)
            return self._saver.place(self._temp, self._relpath)
        except OSError as exc:
            raise _write_error(self._temp.target, exc) from exc

    def _drop(self) -> None:
        if self._temp is None:
            return
        if self._open:
            self._open = False
            os.close(self._temp.fd)
        self._saver.drop_temp(self._temp.path)
        self._temp = None


def _clash_path(relpath: PurePosixPath) -> PurePosixPath:
    """Where a body goes when a file/directory clash blocks its path: `host/~<hash><ext>`.

    Names of `~` and hex digits never come out of `paths.relative_path` unhashed, so this
    cannot meet another URL's file.
    """
    key = f"clash:{relpath}".encode("utf-8", "surrogatepass")
    return PurePosixPath(
        relpath.parts[0], "~" + hashlib.sha256(key).hexdigest()[:20] + relpath.suffix[:11]
    )


def _write_error(path: Path, exc: OSError) -> PermanentError:
    reason = exc.strerror or str(exc)
    return PermanentError(ErrorKind.IO, f"cannot write {path}: {reason}")


def _write_all(fd: int, chunks: list[bytes]) -> None:
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
