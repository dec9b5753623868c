"""A response body on its way to disk: counted, hashed, held in memory while small, spilled
to its file in `SPILL_BYTES` pieces (each hashed and written in a thread while the next one
downloads), and handed to its `Saver` (fetchcli/sink.py) to be placed under its name, kept as
a partial file (--continue), or dropped. Every file operation runs in a thread, never on the
event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from fetchcli.errors import PermanentError
from fetchcli.kinds import ErrorKind
from fetchcli.partial import Held
from fetchcli.tree import SymlinkInTree

if TYPE_CHECKING:
    from _hashlib import HASH

    from fetchcli.sink import Saver, TempFile

__all__ = ["SPILL_BYTES", "Body", "Verify", "write_all", "write_error"]

SPILL_BYTES = 256 * 1024

# Checks a finished body by its sha256 (hex) before it gets its name; raises to refuse it.
Verify = Callable[[str], None]


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
                write_all(self._temp.fd, chunks)
            except OSError as exc:
                raise write_error(self._temp.target, exc) from exc

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
            raise write_error(self._saver.root / relpath, exc) from exc
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
            raise write_error(temp.target, exc) from exc
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
                self._saver.write_sidecar(temp.dir_fd, temp.name, self._keep.at(0))
        except OSError as exc:
            raise write_error(temp.target, exc) from exc

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
            write_all(temp.fd, chunks)
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


def write_error(path: Path, exc: OSError) -> PermanentError:
    """A failed write of `path`, as the URL's record says it (a symlink in `-o`: its path)."""
    if isinstance(exc, SymlinkInTree):
        return PermanentError(ErrorKind.IO, f"cannot write {exc.path}: {exc.strerror}")
    reason = exc.strerror or str(exc)
    return PermanentError(ErrorKind.IO, f"cannot write {path}: {reason}")


def write_all(fd: int, chunks: list[bytes]) -> None:
    """Write every byte of `chunks` to `fd`, however short each `os.write` is."""
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
