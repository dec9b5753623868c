"""Bodies to disk: streamed to a temporary file beside the target, renamed into place when
complete, hashed on the way. Every file operation runs in a thread, never on the event loop.

Small bodies (the common case) stay in memory and are written many per thread hop through a
`Batcher`; large ones spill in `SPILL_BYTES` pieces, each piece hashed and written in a
thread while the next one downloads. A registry of live temporary files lets `sweep()`
remove every one of them when a run is interrupted.

Directories are opened through `tree.OutputTree`: nothing is written through a symlink
inside the output directory, and the temporary files of runs that died are swept where this
run writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import stat
import threading
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import NamedTuple, Self

from fetchcli.batching import Batcher
from fetchcli.errors import PermanentError
from fetchcli.kinds import ErrorKind
from fetchcli.tree import TEMP_SUFFIX, OutputTree, SymlinkInTree

__all__ = ["SPILL_BYTES", "TEMP_SUFFIX", "Body", "Saver"]

SPILL_BYTES = 256 * 1024
HASH_PIECE = 1024 * 1024  # an existing file is read and hashed this much at a time
WRITE_THREADS = 1

# Never through a symlink, never over an existing file (a temporary name is new).
_NEW_TEMP = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_BINARY", 0)

SmallFile = tuple[PurePosixPath, bytes]
# Checks a finished body by its sha256 (hex) before it gets its name; raises to refuse it.
Verify = Callable[[str], None]


class TempFile(NamedTuple):
    """An open temporary file, its directory, and the target it becomes when complete.

    `dir_fd` is a descriptor of its own, closed by `Saver.place` or `Saver.drop_temp`.
    """

    fd: int
    dir_fd: int
    name: str
    target: Path


class Saver:
    """Owns the output directory for one run: targets, temporary files, batched writes.

    `async with Saver(...)` runs its writers; on the way out they finish what they hold,
    every temporary file still registered is removed, and the run's lock is released.
    """

    def __init__(self, output_dir: Path, *, save: bool) -> None:
        self.root = output_dir
        self.save = save
        self._tree = OutputTree(output_dir)
        self._temps: set[tuple[int, str]] = set()  # (directory descriptor, name)
        self._lock = threading.Lock()
        self._closed = False
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
        """Remove every temporary file still registered, then release the output directory;
        later writes are refused. Blocking."""
        try:
            with self._lock:
                self._closed = True
                temps, self._temps = self._temps, set()
                # Under the lock: a registered directory descriptor is open until forgotten.
                for dir_fd, name in temps:
                    _unlink(name, dir_fd)
        finally:
            self._tree.close()  # the run's lock last: its temporary files are gone

    # The methods below run in worker threads.

    def _stat_sizes(self, relpaths: Sequence[PurePosixPath]) -> list[int | None]:
        sizes: list[int | None] = []
        for relpath in relpaths:
            try:
                directory = self._tree.directory(relpath.parent, create=False)
            except OSError:
                sizes.append(None)
                continue
            try:
                # Only a file of its own counts: a symlink is not looked through.
                info = os.stat(relpath.name, dir_fd=directory, follow_symlinks=False)
            except OSError:
                sizes.append(None)
            else:
                sizes.append(info.st_size if stat.S_ISREG(info.st_mode) else None)
            finally:
                os.close(directory)
        return sizes

    def _digest_files(self, relpaths: Sequence[PurePosixPath]) -> list[tuple[int, str] | None]:
        return [self._digest_file(relpath) for relpath in relpaths]

    def _digest_file(self, relpath: PurePosixPath) -> tuple[int, str] | None:
        """Size and sha256 of what the file holds now; None if it is gone or not a file."""
        try:
            directory = self._tree.directory(relpath.parent, create=False)
        except OSError:
            return None
        try:
            # As for its size: a file of its own, never one seen through a symlink.
            fd = os.open(relpath.name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=directory)
        except OSError:
            return None
        finally:
            os.close(directory)
        digest = hashlib.sha256()
        size = 0
        try:
            with open(fd, "rb") as stream:
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
                    self.drop_temp(temp)
                    raise
            except OSError as exc:
                results.append(_write_error(self.root / relpath, exc))
        return results

    def open_temp(self, relpath: PurePosixPath) -> TempFile:
        """Create and register a temporary file beside the target of `relpath`."""
        dir_fd, name, target = self._target(relpath)
        temp = self._tree.temp_name(name, next(self._serial))
        with self._lock:
            if self._closed:
                os.close(dir_fd)
                msg = "the run is shutting down"
                raise OSError(msg)
            self._temps.add((dir_fd, temp))
        try:
            fd = os.open(temp, _NEW_TEMP, 0o666, dir_fd=dir_fd)
        except BaseException:
            self._release(dir_fd, temp)
            raise
        return TempFile(fd, dir_fd, temp, target)

    def place(self, temp: TempFile, relpath: PurePosixPath) -> str:
        """Rename a finished temporary file to its target; return the final path.

        A symlink of the target's name is replaced, never followed. On failure the temporary
        file stays registered, for `drop_temp`.
        """
        target = temp.target
        try:
            os.replace(temp.name, target.name, src_dir_fd=temp.dir_fd, dst_dir_fd=temp.dir_fd)
        except IsADirectoryError:
            # Another URL needed this name as a directory ("/a" after "/a/b").
            clash = _clash_path(relpath)
            host = self._tree.directory(clash.parent, create=True)
            try:
                os.replace(temp.name, clash.name, src_dir_fd=temp.dir_fd, dst_dir_fd=host)
            finally:
                os.close(host)
            target = self.root / clash
        self._release(temp.dir_fd, temp.name)
        return str(target)

    def drop_temp(self, temp: TempFile) -> None:
        """Remove a temporary file that will not be completed."""
        _unlink(temp.name, temp.dir_fd)
        self._release(temp.dir_fd, temp.name)

    def _release(self, dir_fd: int, temp: str) -> None:
        """Forget a temporary file and close its directory descriptor (after: see sweep)."""
        with self._lock:
            self._temps.discard((dir_fd, temp))
        os.close(dir_fd)

    def _target(self, relpath: PurePosixPath) -> tuple[int, str, Path]:
        """The directory (a new descriptor), name and path for `relpath`, its directories
        made; moved aside if a file blocks them. Raises SymlinkInTree through a symlink."""
        try:
            directory = self._tree.directory(relpath.parent, create=True)
        except NotADirectoryError:
            # A file holds a name this path needs as a directory ("/a/b" after "/a").
            clash = _clash_path(relpath)
            return self._tree.directory(clash.parent, create=True), clash.name, self.root / clash
        return directory, relpath.name, self.root / relpath


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

    async def finish(self, verify: Verify | None = None) -> tuple[str | None, str]:
        """Complete the body; return (final path or None when not saved, sha256 hex).

        `verify(sha256 hex)` runs after the last byte and before the rename; what it raises
        comes out of here, and the body is then not placed (`discard()` removes it).
        """
        if self._spill is None:
            # Small body: hashing inline is cheaper than a thread hop; the write is batched.
            for chunk in self._chunks:
                self._hash.update(chunk)
            if verify is not None:
                verify(self._hash.hexdigest())
            if self._relpath is None:
                return None, self._hash.hexdigest()
            path = await self._saver.small_files.submit((self._relpath, b"".join(self._chunks)))
            return path, self._hash.hexdigest()
        await self._spill
        chunks, self._chunks = self._chunks, []
        placed: str | None = await asyncio.to_thread(self._write_last, chunks, verify)
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

    def _write_last(self, chunks: list[bytes], verify: Verify | None) -> str | None:
        self._write(chunks)
        if verify is not None:
            verify(self._hash.hexdigest())  # before the close: _drop() closes what failed
        temp = self._temp
        if temp is None or self._relpath is None:
            return None
        try:
            self._open = False
            os.close(temp.fd)
            placed = self._saver.place(temp, self._relpath)
        except OSError as exc:
            raise _write_error(temp.target, exc) from exc
        self._temp = None  # placed: its directory descriptor is closed
        return placed

    def _drop(self) -> None:
        if self._temp is None:
            return
        if self._open:
            self._open = False
            os.close(self._temp.fd)
        self._saver.drop_temp(self._temp)
        self._temp = None


def _clash_path(relpath: PurePosixPath) -> PurePosixPath:
    """Where a body goes when a file/directory clash blocks its path: `host/~<hash><ext>`
    in the tree (its first directory), `~<hash><ext>` for a name without one (`flat`).

    Names of `~` and hex digits never come out of `paths.relative_path` unhashed, so this
    cannot meet another URL's file.
    """
    key = f"clash:{relpath}".encode("utf-8", "surrogatepass")
    name = "~" + hashlib.sha256(key).hexdigest()[:20] + relpath.suffix[:11]
    return (
        PurePosixPath(*relpath.parts[:1], name) if len(relpath.parts) > 1 else PurePosixPath(name)
    )


def _write_error(path: Path, exc: OSError) -> PermanentError:
    if isinstance(exc, SymlinkInTree):
        return PermanentError(ErrorKind.IO, f"cannot write {exc.path}: {exc.strerror}")
    reason = exc.strerror or str(exc)
    return PermanentError(ErrorKind.IO, f"cannot write {path}: {reason}")


def _write_all(fd: int, chunks: list[bytes]) -> None:
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]


def _unlink(name: str, dir_fd: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)
