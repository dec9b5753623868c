"""The name each body gets in this run: layout, --cut-dirs, a row's own path; never two on one.

`relative_path` alone never maps two URLs to one file; `--layout flat`, `--cut-dirs` and
manifest paths can. A `NameBook` remembers the names given so far: the first URL keeps the
plain name, a later different URL gets a short hash of itself added. It lives where jobs are
made (the producer, or the coordinator of engine processes), so one book sees every name. With
`--shard` (or `--ray`) every instance's producer names every line of the list, its share and
the others', in list order: all books are alike, and every instance gives the names one run would.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import PurePosixPath

import httpx

from fetchcli.fingerprints import FingerprintSet, url_key
from fetchcli.models import Job
from fetchcli.paths import Layout, flat_path, relative_path, row_path, with_hash

__all__ = ["NameBook", "Namer", "Naming", "dedupe_key"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Naming:
    """How bodies are named: `--layout` and `--cut-dirs`."""

    layout: Layout = "tree"
    cut_dirs: int = 0

    @property
    def needs_book(self) -> bool:
        """True when URLs alone may share a name (a manifest path always may)."""
        return self.layout != "tree" or self.cut_dirs > 0

    def path_for(self, url: httpx.URL, row: str | None = None) -> PurePosixPath:
        """The name by the rules alone: a row's path wins, then the layout."""
        if row:
            given = row_path(row, url)
            if given is not None:
                return given
        if self.layout == "flat":
            return flat_path(url)
        return relative_path(url, self.cut_dirs)


class NameBook:
    """The names given in this run, as fingerprints: 16-32 bytes a name.

    Names are compared case-folded, so two URLs never meet on a case-insensitive file system.
    The same URL asking again (no dedupe, or a retry of the run's producer) gets its old name.
    """

    def __init__(self) -> None:
        self._names = FingerprintSet()
        self._owners = FingerprintSet()

    def __len__(self) -> int:
        return len(self._names)

    def claim(self, path: PurePosixPath, url: httpx.URL) -> PurePosixPath:
        """`path` if it is free or already `url`'s; else `path` with a hash of `url`."""
        key = url_key(url)
        wanted = path
        for attempt in itertools.count():
            name = str(wanted).casefold().encode("utf-8", "surrogatepass")
            owner = name + b"\0" + key
            if self._names.add(name):
                self._owners.add(owner)
                return wanted
            if owner in self._owners:
                return wanted
            # Taken by another URL: the hash of this one makes a name no other URL gets.
            salt = "" if attempt == 0 else f"#{attempt}"
            wanted = with_hash(path, key.decode("utf-8", "surrogateescape") + salt)
        raise AssertionError("unreachable")  # pragma: no cover


class Namer:
    """Names the jobs of one run, where they are made: `job.relpath` set, or left None for
    the plain tree name (which the fetcher works out itself).

    The book is kept only when names can meet: a layout or --cut-dirs that may join URLs,
    or `rows` (a manifest's paths may meet any name). A plain list in the tree layout pays
    nothing, as before. A row path arriving without a book (a program's rows after plain
    URLs) starts one; the names given before it were tree names, unique among themselves.
    """

    def __init__(self, naming: Naming, *, rows: bool = False) -> None:
        self._naming = naming
        self._book = NameBook() if naming.needs_book or rows else None

    def name(self, job: Job) -> Job:
        """`job` with the name it gets in this run."""
        row = None if job.expect is None else job.expect.path
        if self._book is None:
            if row is None:
                return job
            self._book = NameBook()
        path = self._book.claim(self._naming.path_for(job.parsed, row), job.parsed)
        return dataclasses.replace(job, relpath=path)


def dedupe_key(job: Job) -> bytes:
    """What makes a job a repeat: its URL, and a manifest row's own path (one URL may be
    wanted under two names)."""
    key = url_key(job.parsed)
    if job.expect is not None and job.expect.path:
        key += b"\0" + job.expect.path.encode("utf-8", "surrogatepass")
    return key
