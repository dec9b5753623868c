"""The output directory of a run: walked without following a symlink, locked, swept of the
temporary files of runs that died.

- **No symlink is followed inside `-o`** (`-o` itself may be one: the user chose it). Each
  directory is opened one component at a time, relative to its parent's descriptor, with
  `O_NOFOLLOW`; files are then created and renamed relative to the last one. A symlink met on
  the way is `SymlinkInTree`, so the URL fails and nothing lands outside. A bounded cache of
  open descriptors keeps this as fast as plain paths.
- **Each run holds a lock** while it writes: `flock` on `-o/.fetchcli-run-<token>.lock`, taken
  before its first temporary file; every temporary name carries the token. A run killed with
  -9 loses the lock with its life, whatever it leaves on disk.
- **Dead runs' temporary files are swept lazily**: the first time a run writes in a directory
  that already existed, it removes the temporary files there whose run holds no lock. A huge
  tree is never walked; kept partial bodies (`.fetchcli-partial`) are never touched. When a
  run takes its lock it removes the lock files in `-o` of runs that hold them no more (found
  free with `flock`), so runs killed with -9 leave none behind.

POSIX only (`flock`, `dir_fd`), as the rest of the writing is.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import stat
import threading
from collections import OrderedDict
from pathlib import Path, PurePosixPath

from fetchcli.errors import UsageError

__all__ = [
    "LOCK_PREFIX",
    "LOCK_SUFFIX",
    "TEMP_SUFFIX",
    "OutputTree",
    "SymlinkInTree",
    "check_output_dir",
]

TEMP_SUFFIX = ".fetchcli-part"
LOCK_PREFIX = ".fetchcli-run-"
LOCK_SUFFIX = ".lock"
OPEN_DIRS = 64  # directory descriptors kept open, the most recently used
SWEPT_DIRS = 100_000  # directories known swept; past it, forgotten (sweeping again is harmless)
LOCK_TRIES = 8

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_NEW_LOCK = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW  # RDWR: NFS locks need it
# `.NAME.<token>-<serial>.fetchcli-part`, as `OutputTree.temp_name` makes them.
_TEMP = re.compile(r"\.([0-9a-f]{8})-[0-9]+" + re.escape(TEMP_SUFFIX) + r"\Z")
_LOCK = re.compile(re.escape(LOCK_PREFIX) + r"([0-9a-f]{8})" + re.escape(LOCK_SUFFIX) + r"\Z")


class SymlinkInTree(OSError):
    """Raised when a directory on a path inside the output directory is a symlink."""

    def __init__(self, path: Path) -> None:
        super().__init__(errno.ELOOP, "a symlink in the output directory", str(path))
        self.path = path


def check_output_dir(path: Path) -> None:
    """Make sure bodies can be saved in `path`, made when missing; blocking.

    Raises UsageError when it is (or lies under) a file, or cannot be made or written to. Root
    passes the permission check wherever the file system is not read-only.
    """
    try:
        os.makedirs(path, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        problem = "not a directory"
    except OSError as exc:
        problem = exc.strerror or str(exc)
    else:
        problem = "" if os.access(path, os.W_OK | os.X_OK) else "not writable"
    if problem:
        msg = f"cannot save bodies in {path}: {problem}"
        raise UsageError(msg)


class OutputTree:
    """The output directory of one run; thread-safe. `close()` releases everything."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._root_fd: int | None = None
        self._run_lock: int | None = None  # the flock'd lock file, once this run writes
        self._token = secrets.token_hex(4)
        self._open: OrderedDict[str, int] = OrderedDict()
        self._swept: set[str] = set()
        self._gone: dict[str, bool] = {}  # token -> its run holds no lock (cached)
        self._locks_swept = False
        self._closed = False

    def temp_name(self, name: str, serial: int) -> str:
        """The name of this run's temporary file number `serial` for the file `name`."""
        return f".{name}.{self._token}-{serial}{TEMP_SUFFIX}"

    def directory(self, reldir: PurePosixPath, *, create: bool) -> int:
        """A new descriptor of `reldir` under the root, for the caller to close; blocking.

        With `create`, missing directories are made, the run's lock is taken, and a directory
        that existed is swept of dead runs' temporary files the first time. Raises
        SymlinkInTree, NotADirectoryError (a file is in the way), or another OSError.
        """
        key = str(reldir)
        with self._lock:
            if self._closed:
                msg = "the run is shutting down"
                raise OSError(msg)
            root = self._root(create)
            fd, made = self._open.get(key), False
            if fd is None:
                fd, made = self._walk(root, reldir, create)
                self._keep(key, fd)
            else:
                self._open.move_to_end(key)
            sweep = create and key not in self._swept
            if sweep:
                if len(self._swept) >= SWEPT_DIRS:
                    self._swept.clear()
                self._swept.add(key)
            mine = os.dup(fd)
            # Once, with the run's lock held: a run taking its own meanwhile is safe (_take_lock).
            sweep_locks = self._run_lock is not None and not self._locks_swept
            if sweep_locks:
                self._locks_swept = True
                locks_in = os.dup(root)
        if sweep_locks:
            with contextlib.suppress(OSError):
                self._sweep_locks(locks_in)
        if sweep and not made:  # one made just now holds nothing of a dead run
            with contextlib.suppress(OSError):  # an unreadable directory: no sweep, still a write
                self._sweep(mine)
        return mine

    def close(self) -> None:
        """Close every descriptor, remove and release the run's lock; idempotent. Blocking."""
        with self._lock:
            self._closed = True
            fds, self._open = list(self._open.values()), OrderedDict()
            if self._run_lock is not None and self._root_fd is not None:
                with contextlib.suppress(OSError):
                    os.unlink(self._lock_name(self._token), dir_fd=self._root_fd)
                fds.append(self._run_lock)
            if self._root_fd is not None:
                fds.append(self._root_fd)
            self._run_lock = self._root_fd = None
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    # The methods below run with self._lock held.

    def _root(self, create: bool) -> int:
        if self._root_fd is None:
            if create:
                os.makedirs(self.root, exist_ok=True)
            # Following symlinks: `-o` is the user's choice, wherever it points.
            self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        if create and self._run_lock is None:
            self._run_lock = self._take_lock(self._root_fd)
        return self._root_fd

    def _take_lock(self, root: int) -> int:
        """Create and flock this run's lock file, before any temporary file carries its token."""
        for _ in range(LOCK_TRIES):
            name = self._lock_name(self._token)
            try:
                fd = os.open(name, _NEW_LOCK, 0o666, dir_fd=root)
            except FileExistsError:
                self._token = secrets.token_hex(4)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                # A sweeper that took this name for a dead run's (same token) unlinks it while
                # holding it: then the name is gone, and this lock protects nothing.
                if os.stat(name, dir_fd=root, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                    return fd
            except OSError:
                pass
            os.close(fd)
            self._token = secrets.token_hex(4)
        msg = f"cannot lock {self.root / self._lock_name(self._token)}"
        raise OSError(errno.EAGAIN, msg)

    def _walk(self, root: int, reldir: PurePosixPath, create: bool) -> tuple[int, bool]:
        """Open `reldir` component by component from the nearest open ancestor; return its
        descriptor and whether its last component was made just now."""
        parts = reldir.parts
        current, start, owned = root, 0, False
        for depth in range(len(parts) - 1, 0, -1):
            ancestor = self._open.get(str(PurePosixPath(*parts[:depth])))
            if ancestor is not None:
                current, start = ancestor, depth
                break
        made = False
        try:
            for depth in range(start, len(parts)):
                opened, made = _open_dir(parts[depth], current, create)
                if opened is None:
                    raise SymlinkInTree(self.root.joinpath(*parts[: depth + 1]))
                if owned:
                    os.close(current)
                current, owned = opened, True
        except BaseException:
            if owned:
                os.close(current)
            raise
        return (current if owned else os.dup(current)), made

    def _keep(self, key: str, fd: int) -> None:
        self._open[key] = fd
        if len(self._open) > OPEN_DIRS:
            _, old = self._open.popitem(last=False)
            os.close(old)

    def _lock_name(self, token: str) -> str:
        return f"{LOCK_PREFIX}{token}{LOCK_SUFFIX}"

    def _is_gone(self, token: str) -> bool:
        """Whether the run of `token` holds no lock (it has ended, or died); cached."""
        gone = self._gone.get(token)
        if gone is None:
            gone = self._gone[token] = self._probe(token)
        return gone

    def _probe(self, token: str) -> bool:
        if token == self._token or self._root_fd is None:
            return False
        name = self._lock_name(token)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=self._root_fd)
        except FileNotFoundError:
            return True  # a run takes its lock before it makes a temporary file
        except OSError:
            return False  # cannot tell: leave its files alone
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False  # a live run holds it
        try:
            # Removed while held, so that a run making this name just now notices (_take_lock).
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=self._root_fd)
        finally:
            os.close(fd)
        return True

    # The methods below run without self._lock, on a descriptor of their own (closed here).

    def _sweep_locks(self, root: int) -> None:
        """Remove the lock files in the root of runs that hold them no more (_probe)."""
        try:
            with os.scandir(root) as entries:
                tokens = [
                    found[1]
                    for entry in entries
                    if (found := _LOCK.match(entry.name)) and entry.is_file(follow_symlinks=False)
                ]
        finally:
            os.close(root)
        for token in tokens:
            with self._lock:
                if not self._closed:
                    self._is_gone(token)

    def _sweep(self, directory: int) -> None:
        """Remove the temporary files in `directory` that no live run owns."""
        stale = []
        with os.scandir(directory) as entries:
            for entry in entries:
                found = _TEMP.search(entry.name) if entry.name.endswith(TEMP_SUFFIX) else None
                if found is not None and entry.is_file(follow_symlinks=False):
                    stale.append((entry.name, found[1]))
        for name, token in stale:
            with self._lock:
                gone = not self._closed and self._is_gone(token)
            if gone:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=directory)


def _open_dir(name: str, parent: int, create: bool) -> tuple[int | None, bool]:
    """Open the directory `name` in `parent`, made when missing and `create`, never through a
    symlink; return (its descriptor or None for a symlink, whether it was made now)."""
    made = False
    for _ in range(3):  # a directory removed between mkdir and open is made again
        try:
            return os.open(name, _DIRECTORY, dir_fd=parent), made
        except FileNotFoundError:
            if not create:
                raise
        except OSError as exc:
            # O_NOFOLLOW meets a symlink with ELOOP, or with ENOTDIR beside O_DIRECTORY.
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            if stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                return None, False
            raise
        try:
            os.mkdir(name, dir_fd=parent)
            made = True
        except FileExistsError:
            made = False  # another run made it meanwhile
    return os.open(name, _DIRECTORY, dir_fd=parent), made
