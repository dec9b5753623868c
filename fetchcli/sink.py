"""Bodies to disk: streamed to a temporary file beside the target, renamed into place when
complete, hashed on the way. Every file operation runs in a thread, never on the event loop.

Small bodies (the common case) stay in memory and are written many per thread hop through a
`Batcher`; large ones spill in `SPILL_BYTES` pieces, each piece hashed and written in a
thread while the next one downloads. A registry of live temporary files lets `sweep()`
remove every one of them when a run is interrupted.

Directories are opened through `tree.OutputTree`: nothing is written through a symlink
inside the output directory, and the temporary files of runs that died are swept where this
run writes.

With --continue a body that reaches the disk goes to a *kept* partial file instead
(`.NAME.fetchcli-partial`, with its sidecar written as the file opens, so even kill -9 leaves
both): it is locked (`flock`) while a body writes it, tracked apart from the temporary files
(the sweep never removes it), kept when the transfer is cut or fails for a reason that may
pass, and continued by the next run (`Saver.resume`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import itertools
import os
import stat
import threading
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Self

from fetchcli.batching import Batcher
from fetchcli.errors import PermanentError
from fetchcli.kinds import ErrorKind
from fetchcli.partial import (
    Held,
    continue_headers,
    discard_partial,
    hash_file,
    hash_prefix,
    load_partial,
    partial_name,
    sidecar_name,
    write_sidecar,
)
from fetchcli.tree import TEMP_SUFFIX, OutputTree, SymlinkInTree

if TYPE_CHECKING:
    from _hashlib import HASH

__all__ = ["SPILL_BYTES", "TEMP_SUFFIX", "Body", "OnDisk", "Saved", "Saver"]

SPILL_BYTES = 256 * 1024
WRITE_THREADS = 1

# Never through a symlink, never over an existing file (a temporary name is new).
_NEW_TEMP = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_BINARY", 0)
# A kept partial file: read too (its prefix is hashed through the same descriptor), never
# through a symlink; it may exist (an earlier run's).
_KEPT = os.O_RDWR | os.O_NOFOLLOW | getattr(os, "O_BINARY", 0)

# relpath, body, and the mtime to give the file (Last-Modified), if any.
SmallFile = tuple[PurePosixPath, bytes, float | None]
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


class Saved(NamedTuple):
    """A file saved already, as it is now (`Saver.existing`)."""

    path: str
    size: int
    sha256: str


class OnDisk(NamedTuple):
    """What the output directory already holds for one target."""

    size: int | None  # of the saved file (a regular file, not a link), or None
    mtime: float | None  # its modification time
    partial: bool  # a kept partial body (--continue) is beside it


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
        self._kept: set[tuple[int, str]] = set()  # kept partial files open now: never swept
        self._lock = threading.Lock()
        self._closed = False
        self._serial = itertools.count()
        # One hop at a time: more threads overlap the disk's waits but fight the event loop
        # for the GIL on every syscall (measured: W1 took 6.2 s with one, 9.4 s with four).
        self.small_files: Batcher[SmallFile, str] = Batcher(
            self._write_small_files, max_hops=WRITE_THREADS
        )
        # What is saved already, many per hop: a look (stat) at each target, and the hash
        # of each small file found (--skip-existing, a 304 of --update).
        self.on_disk: Batcher[PurePosixPath, OnDisk] = Batcher(
            self._look_all, max_hops=WRITE_THREADS
        )
        self.digests: Batcher[PurePosixPath, tuple[int, str] | None] = Batcher(
            self._digest_files, max_hops=WRITE_THREADS
        )
        self._writers = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self.small_files)
            await stack.enter_async_context(self.on_disk)
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

    def body(self, relpath: PurePosixPath | None, *, keep: Held | None = None) -> Body:
        """A new body for one response, saved under `relpath`, or only hashed when None.

        With `keep` (--continue: the validators of its response), the body goes to a kept
        partial file with a sidecar once it reaches the disk, for a later run to continue.
        """
        return Body(self, relpath, keep=keep if relpath is not None else None)

    async def look(self, relpath: PurePosixPath) -> OnDisk:
        """What is saved for `relpath` already: the file (--update, --skip-existing), a kept
        partial body (--continue). Many per thread hop."""
        return await self.on_disk.submit(relpath)

    async def resume(self, relpath: PurePosixPath, url: str) -> tuple[Body, Held] | None:
        """The kept partial body of `url`, opened to be continued, and what it holds; None
        when there is none that can be continued (one that cannot is removed). The prefix is
        hashed in a thread, so the sha256 still covers the whole body."""
        try:
            return await asyncio.to_thread(self._resume, relpath, url)
        except OSError:
            return None  # unreadable: the body starts over (and says why if it cannot)

    async def existing(self, relpath: PurePosixPath, size_hint: int | None = None) -> Saved | None:
        """The file saved for `relpath` as it is now: its path, real size and sha256 (hashed,
        never read through a symlink); None when there is none (gone, not a regular file).

        The one way to the disk for both --skip-existing and a 304 of --update. `size_hint`
        (a `look()` just made) spares looking again; a file known small is hashed with many
        others per thread hop, a large one in a hop of its own, so that it holds none back.
        """
        if size_hint is None:
            size_hint = (await self.look(relpath)).size
            if size_hint is None:
                return None
        if size_hint <= SPILL_BYTES:
            found = await self.digests.submit(relpath)
        else:
            found = await asyncio.to_thread(self._digest_file, relpath)
        return None if found is None else Saved(str(self.root / relpath), *found)

    def sweep(self) -> None:
        """Remove every temporary file still registered, then release the output directory;
        later writes are refused. Blocking."""
        try:
            with self._lock:
                self._closed = True
                temps, self._temps = self._temps, set()
                self._kept = set()  # kept for the next run: not removed (their owners close)
                # Under the lock: a registered directory descriptor is open until forgotten.
                for dir_fd, name in temps:
                    _unlink(name, dir_fd)
        finally:
            self._tree.close()  # the run's lock last: its temporary files are gone

    # The methods below run in worker threads.

    def _look_all(self, relpaths: Sequence[PurePosixPath]) -> list[OnDisk]:
        found: list[OnDisk] = []
        for relpath in relpaths:
            try:
                directory = self._tree.directory(relpath.parent, create=False)
            except OSError:
                found.append(OnDisk(None, None, partial=False))
                continue
            try:
                size = mtime = None
                with contextlib.suppress(OSError):
                    # Only a file of its own counts: a symlink is not looked through.
                    info = os.stat(relpath.name, dir_fd=directory, follow_symlinks=False)
                    if stat.S_ISREG(info.st_mode):
                        size, mtime = info.st_size, info.st_mtime
                try:
                    os.stat(partial_name(relpath.name), dir_fd=directory, follow_symlinks=False)
                except OSError:
                    partial = False
                else:
                    partial = True
                found.append(OnDisk(size, mtime, partial))
            finally:
                os.close(directory)
        return found

    def _digest_files(self, relpaths: Sequence[PurePosixPath]) -> list[tuple[int, str] | None]:
        return [self._digest_file(relpath) for relpath in relpaths]

    def _digest_file(self, relpath: PurePosixPath) -> tuple[int, str] | None:
        """Size and sha256 of what the file holds now; None if it is gone or not a file."""
        try:
            directory = self._tree.directory(relpath.parent, create=False)
        except OSError:
            return None
        try:
            # As for its look: a file of its own, never one seen through a symlink.
            return hash_file(relpath.name, dir_fd=directory)
        except OSError:
            return None
        finally:
            os.close(directory)

    def _write_small_files(self, files: Sequence[SmallFile]) -> list[str | Exception]:
        results: list[str | Exception] = []
        for relpath, data, mtime in files:
            try:
                temp = self.open_temp(relpath)
                try:
                    try:
                        _write_all(temp.fd, [data])
                        if mtime is not None:
                            os.utime(temp.fd, (mtime, mtime))
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

    def open_partial(self, relpath: PurePosixPath, held: Held) -> TempFile | None:
        """Create (or empty) the kept partial file of `relpath`, locked, with the sidecar of
        `held`; None when another body holds its lock (that body keeps it; this one takes a
        temporary file)."""
        dir_fd, name, target = self._target(relpath)
        partial = partial_name(name)
        try:
            fd = _locked(os.open(partial, _KEPT | os.O_CREAT, 0o666, dir_fd=dir_fd))
            if fd is None:
                os.close(dir_fd)
                return None
            try:
                os.ftruncate(fd, 0)
                write_sidecar(sidecar_name(partial), held, dir_fd=dir_fd)
                self._track_kept(dir_fd, partial)
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            if (dir_fd, partial) not in self._kept:
                os.close(dir_fd)
            raise
        return TempFile(fd, dir_fd, partial, target)

    def _resume(self, relpath: PurePosixPath, url: str) -> tuple[Body, Held] | None:
        dir_fd, name, target = self._target(relpath)
        partial = partial_name(name)
        try:
            try:
                fd = _locked(os.open(partial, _KEPT, dir_fd=dir_fd))
            except OSError:
                fd = None  # gone, a link, unreadable: nothing to continue
            if fd is None:  # or a live body is writing it
                os.close(dir_fd)
                return None
            try:
                held = load_partial(partial, url, dir_fd=dir_fd)
                if held is None or continue_headers(held) is None:
                    # Under the lock: no body of another run loses it.
                    discard_partial(partial, dir_fd=dir_fd)
                    os.close(fd)
                    os.close(dir_fd)
                    return None
                digest = hash_prefix(fd, held.size)
                os.lseek(fd, held.size, os.SEEK_SET)
                self._track_kept(dir_fd, partial)
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            if (dir_fd, partial) not in self._kept:
                os.close(dir_fd)
            raise
        temp = TempFile(fd, dir_fd, partial, target)
        return Body.resumed(self, relpath, temp, held, digest), held

    def _track_kept(self, dir_fd: int, name: str) -> None:
        with self._lock:
            if self._closed:
                msg = "the run is shutting down"
                raise OSError(msg)
            self._kept.add((dir_fd, name))

    def _release_kept(self, temp: TempFile) -> None:
        with self._lock:
            self._kept.discard((temp.dir_fd, temp.name))
        os.close(temp.dir_fd)

    def keep_partial(self, temp: TempFile, held: Held) -> None:
        """Leave a kept partial file for the next run, its sidecar saying what it holds; its
        descriptors are closed (and so its lock released)."""
        try:
            write_sidecar(sidecar_name(temp.name), held, dir_fd=temp.dir_fd)
        finally:
            os.close(temp.fd)
            self._release_kept(temp)

    def drop_partial(self, temp: TempFile) -> None:
        """Remove a kept partial file and its sidecar, then close it (its lock holds until
        both are gone)."""
        try:
            discard_partial(temp.name, dir_fd=temp.dir_fd)
        finally:
            os.close(temp.fd)
            self._release_kept(temp)

    def place_partial(self, temp: TempFile, relpath: PurePosixPath) -> str:
        """Rename a complete kept partial file to its target while it is still open and
        locked (no other run can take it half-way), then remove its sidecar and close it."""
        try:
            placed = self._rename(temp, relpath)
            _unlink(sidecar_name(temp.name), temp.dir_fd)
        except BaseException:
            self.drop_partial(temp)
            raise
        os.close(temp.fd)
        self._release_kept(temp)
        return placed

    def place(self, temp: TempFile, relpath: PurePosixPath) -> str:
        """Rename a finished temporary file to its target; return the final path.

        A symlink of the target's name is replaced, never followed. On failure the temporary
        file stays registered, for `drop_temp`.
        """
        placed = self._rename(temp, relpath)
        self._release(temp.dir_fd, temp.name)
        return placed

    def _rename(self, temp: TempFile, relpath: PurePosixPath) -> str:
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
    """One response body on its way to disk: counted, hashed, buffered, spilled, placed.

    A body lives as long as its URL's attempts: a cut transfer continued with a Range goes on
    feeding the same body (`restart()` empties it for a body that starts over).
    """

    def __init__(
        self, saver: Saver, relpath: PurePosixPath | None, *, keep: Held | None = None
    ) -> None:
        self.size = 0
        self._saver = saver
        self._relpath = relpath
        self._keep = keep  # --continue: the validators for the sidecar of a kept file
        self._hash = hashlib.sha256()
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._temp: TempFile | None = None
        self._kept = False  # the file is a kept partial one (not a temporary file)
        self._open = False
        # The one file operation in flight, in its thread (a spill, a rewind, the last write).
        self._pending: asyncio.Future[Any] | None = None
        self._done = False  # handed over to be placed, or placed: nothing left to keep or drop

    @classmethod
    def resumed(
        cls, saver: Saver, relpath: PurePosixPath, temp: TempFile, held: Held, digest: HASH
    ) -> Body:
        """A body continued from a kept partial file already holding `held.size` bytes,
        whose sha256 so far is `digest`; `temp` is open at its end."""
        body = cls(saver, relpath, keep=held)
        body.size, body._hash = held.size, digest
        body._temp, body._kept, body._open = temp, True, True
        return body

    @property
    def on_disk(self) -> bool:
        """Whether some of the body went to a file (or is on its way)."""
        return self._temp is not None or self._pending is not None

    def feed(self, data: bytes) -> bool:
        """Take a piece of decoded body; True when enough is buffered to `spill()`."""
        self.size += len(data)
        self._chunks.append(data)
        self._buffered += len(data)
        return self._buffered >= SPILL_BYTES

    async def spill(self) -> None:
        """Hash and write what is buffered, in a thread, while the caller reads on."""
        await self._wait()
        chunks, self._chunks, self._buffered = self._chunks, [], 0
        self._pending = asyncio.ensure_future(asyncio.to_thread(self._write, chunks))

    async def restart(self, keep: Held | None = None) -> None:
        """Forget every byte: the body starts over from byte 0 (a 200 to a Range request).

        `keep` gives the new validators for a kept file's sidecar; None makes a kept file an
        ordinary temporary one's equal: it will not be kept.
        """
        await self._wait()
        self.size, self._hash = 0, hashlib.sha256()
        self._chunks, self._buffered = [], 0
        self._keep = keep
        if self._temp is not None:
            await self._run(self._rewind)

    async def finish(
        self, verify: Verify | None = None, *, mtime: float | None = None
    ) -> tuple[str | None, str]:
        """Complete the body; return (final path or None when not saved, sha256 hex).

        `mtime` (the response's Last-Modified) becomes the saved file's modification time.
        `verify(sha256 hex)` runs after the last byte and before the rename; what it raises
        comes out of here, and the body is then not placed (`discard()` removes it).
        """
        if not self.on_disk:
            # Small body: hashing inline is cheaper than a thread hop; the write is batched.
            for chunk in self._chunks:
                self._hash.update(chunk)
            if verify is not None:
                verify(self._hash.hexdigest())
            if self._relpath is None:
                return None, self._hash.hexdigest()
            data, self._done = b"".join(self._chunks), True
            path = await self._saver.small_files.submit((self._relpath, data, mtime))
            return path, self._hash.hexdigest()
        await self._wait()
        chunks, self._chunks = self._chunks, []
        placed: str | None = await self._run(self._write_last, chunks, mtime, verify)
        return placed, self._hash.hexdigest()

    async def discard(self) -> None:
        """Forget the body and remove its file, if any."""
        await self._settle()
        if self._temp is not None and not self._done:
            await asyncio.to_thread(self._drop)

    async def keep(self, held: Held) -> None:
        """Leave what the body holds in its kept partial file for a later run, with a sidecar
        saying so; `held` has the validators (its size is the body's). A body that is not
        for keeping, or whose writing failed, is discarded instead."""
        whole = await self._settle()
        if self._done:
            return  # placed meanwhile (a cancelled wait for the last write)
        if self._keep is None or not whole or self._relpath is None:
            await self.discard()
            return
        chunks, self._chunks = self._chunks, []
        try:
            await asyncio.to_thread(self._keep_file, chunks, held.at(self.size))
        except (OSError, PermanentError):
            await self.discard()  # nothing to keep after all; the URL's record says why

    async def _wait(self) -> None:
        """Wait for the file operation in flight; its error, if it failed, is raised here.

        Shielded: a cancelled wait must not mark the operation cancelled while its thread
        runs on, so that `_settle()` can still tell when the file is as the body says.
        """
        if self._pending is not None:
            await asyncio.shield(self._pending)
            self._pending = None

    async def _run(self, operation: Callable[..., Any], *args: Any) -> Any:
        """Run a file operation in a thread, as the one in flight, and wait for it."""
        self._pending = asyncio.ensure_future(asyncio.to_thread(operation, *args))
        result = await asyncio.shield(self._pending)
        self._pending = None
        return result

    async def _settle(self) -> bool:
        """Wait for the file operation in flight, if any; False when it failed."""
        pending, self._pending = self._pending, None
        if pending is None:
            return True
        await asyncio.wait([pending])
        # Seen either way: the URL has already failed for a reason of its own.
        return not pending.cancelled() and pending.exception() is None

    # The methods below run in worker threads.

    def _write(self, chunks: list[bytes]) -> None:
        if self._relpath is not None and self._temp is None:
            self._open_file(self._relpath)
        for chunk in chunks:
            self._hash.update(chunk)
        if self._temp is not None:
            try:
                _write_all(self._temp.fd, chunks)
            except OSError as exc:
                raise _write_error(self._temp.target, exc) from exc

    def _open_file(self, relpath: PurePosixPath) -> None:
        self._kept = False
        if self._keep is not None:
            # A link in its place, or one more failure: a temporary file does (or says why).
            with contextlib.suppress(OSError):
                self._temp = self._saver.open_partial(relpath, self._keep.at(0))
            self._kept = self._temp is not None
        try:
            if self._temp is None:
                self._temp = self._saver.open_temp(relpath)
        except OSError as exc:
            raise _write_error(self._saver.root / relpath, exc) from exc
        self._open = True

    def _write_last(
        self, chunks: list[bytes], mtime: float | None, verify: Verify | None
    ) -> str | None:
        self._write(chunks)
        if verify is not None:
            verify(self._hash.hexdigest())  # before the close: _drop() closes what failed
        temp = self._temp
        if temp is None or self._relpath is None:
            return None
        try:
            if mtime is not None:
                os.utime(temp.fd, (mtime, mtime))
            if self._kept:
                # The saver closes it, whatever happens.
                self._open, self._temp, self._kept, self._done = False, None, False, True
                placed = self._saver.place_partial(temp, self._relpath)
            else:
                self._open = False
                os.close(temp.fd)
                placed = self._saver.place(temp, self._relpath)
        except OSError as exc:
            raise _write_error(temp.target, exc) from exc
        self._temp, self._done = None, True  # placed: its directory descriptor is closed
        return placed

    def _rewind(self) -> None:
        temp = self._temp
        assert temp is not None
        if self._kept and self._keep is None:
            self._drop()  # the new body cannot be continued: no kept file for it
            return
        try:
            os.ftruncate(temp.fd, 0)
            os.lseek(temp.fd, 0, os.SEEK_SET)
            if self._kept and self._keep is not None:
                write_sidecar(sidecar_name(temp.name), self._keep.at(0), dir_fd=temp.dir_fd)
        except OSError as exc:
            raise _write_error(temp.target, exc) from exc

    def _keep_file(self, chunks: list[bytes], held: Held) -> None:
        if self._temp is None and self.size > 0:
            assert self._relpath is not None
            self._open_file(self._relpath)
        temp = self._temp
        if temp is None:
            return
        if not self._kept:
            self._drop()  # a temporary file after all (the kept one was locked)
            return
        self._open, self._temp = False, None
        try:
            _write_all(temp.fd, chunks)
        except OSError:
            self._saver.drop_partial(temp)
            return
        self._saver.keep_partial(temp, held)

    def _drop(self) -> None:
        temp, kept = self._temp, self._kept
        if temp is None:
            return
        self._temp, self._kept = None, False
        if kept:
            self._open = False
            self._saver.drop_partial(temp)  # it closes the file, after removing it
            return
        if self._open:
            self._open = False
            os.close(temp.fd)
        self._saver.drop_temp(temp)


def _locked(fd: int) -> int | None:
    """`fd` once locked for this run's writing, or None (closed) when another holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


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
