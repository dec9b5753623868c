"""Files on disk for the bodies (fetchcli/body.py): each streamed to a temporary file beside
its target and renamed into place when complete. Every file operation runs in a thread,
never on the event loop.

Small bodies (the common case) stay in memory and are written many per thread hop through a
`Batcher`; large ones spill to their temporary file as they arrive. A registry of live
temporary files lets `sweep()` remove every one of them when a run is interrupted.

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
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import NamedTuple, Self

from fetchcli.batching import Batcher
from fetchcli.body import SPILL_BYTES, Body, write_all, write_error
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
from fetchcli.tree import TEMP_SUFFIX, OutputTree

__all__ = ["TEMP_SUFFIX", "OnDisk", "Saved", "Saver"]

WRITE_THREADS = 1

# Never through a symlink, never over an existing file (a temporary name is new).
_NEW_TEMP = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_BINARY", 0)
# A kept partial file: read too (its prefix is hashed through the same descriptor), never
# through a symlink; it may exist (an earlier run's).
_KEPT = os.O_RDWR | os.O_NOFOLLOW | getattr(os, "O_BINARY", 0)

# relpath, body, and the mtime to give the file (Last-Modified), if any.
SmallFile = tuple[PurePosixPath, bytes, float | None]


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
                        write_all(temp.fd, [data])
                        if mtime is not None:
                            os.utime(temp.fd, (mtime, mtime))
                    finally:
                        os.close(temp.fd)
                    results.append(self.place(temp, relpath))
                except BaseException:
                    self.drop_temp(temp)
                    raise
            except OSError as exc:
                results.append(write_error(self.root / relpath, exc))
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
                self.write_sidecar(dir_fd, partial, held)
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

    def write_sidecar(self, dir_fd: int, partial: str, held: Held) -> None:
        """The sidecar of the kept file `partial` in `dir_fd`, through a temporary name of this
        run's: one a kill -9 leaves is swept like the run's other temporary files. Blocking."""
        sidecar = sidecar_name(partial)
        temp = self._tree.temp_name(sidecar, next(self._serial))
        write_sidecar(sidecar, held, dir_fd=dir_fd, temp=temp)

    def keep_partial(self, temp: TempFile, held: Held) -> None:
        """Leave a kept partial file for the next run, its sidecar saying what it holds; its
        descriptors are closed (and so its lock released)."""
        try:
            self.write_sidecar(temp.dir_fd, temp.name, held)
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


def _unlink(name: str, dir_fd: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)
