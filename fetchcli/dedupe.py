"""Repeated URLs: the first of each is fetched, and every repeat is recorded with its outcome.

    producer ─admit(job)─▶ first of its URL? ──yes──▶ handoff ─▶ Executor
                              │ no                                  │
                              ▼                                     ▼ emit(record)
          first finished: a record from its outcome,    the first's record, then the
          first in flight: held until it finishes  ◀─── repeats held for it

A repeat's record is its first's (`ok`, `status`, `path`, `bytes`, `sha256`, `error` ...)
on its own line, with `skipped: "duplicate"`; none is written before its first's. Repeats
whose firsts' outcomes are on disk are looked up many per thread hop, at `flush()`.

Memory stays flat whatever the list: the URLs seen are 64-bit fingerprints
(`FingerprintSet`, 16-32 bytes each); a repeat is held in memory only while its first is in
flight (at most `MAX_HELD` at once: past that, the producer waits); the records of finished
firsts are kept for the latest `MEMORY_OUTCOMES` and, beyond that, in a private sqlite
database on disk (in TMPDIR; sqlite deletes it when it is closed, and never leaves it
behind, even after a kill -9). All sqlite work runs on one thread of its own.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import enum
import marshal
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from fetchcli.executor import Emit, Handoff
from fetchcli.fingerprints import FingerprintSet, fingerprint
from fetchcli.kinds import ErrorKind
from fetchcli.models import REPEAT_OWN_FIELDS, Job, Record, shown_url
from fetchcli.names import dedupe_key

if TYPE_CHECKING:
    import sqlite3

__all__ = ["MAX_HELD", "MEMORY_OUTCOMES", "Dedupe"]

MEMORY_OUTCOMES = 10_000  # records of finished firsts kept in memory (~7 MiB at most)
MAX_HELD = 10_000  # repeats waiting for firsts still in flight (~2 MiB at most)
LOOKUP_BATCH = 512  # repeats whose firsts are on disk, looked up in one thread hop
SQLITE_CACHE_KIB = 4096

T = TypeVar("T")

# A repeat waiting for its first: its source, line, URL as written and row's meta.
_Held = tuple[str, int, str, dict[str, Any] | None]


class Dedupe:
    """Lets the first job of each URL through and records every repeat with its outcome.

    The producer calls `admit(job, handoff)` for every job and `flush()` after each batch
    of lines and at its end; the executor's records go through `emit`, which passes them on
    to the `emit` given here. `aclose()` at the end of the run.
    """

    def __init__(
        self,
        emit: Emit,
        *,
        memory_outcomes: int = MEMORY_OUTCOMES,
        max_held: int = MAX_HELD,
    ) -> None:
        self._emit = emit
        self._seen = FingerprintSet()
        self._flying: dict[int, list[_Held]] = {}  # firsts in flight: the repeats they hold
        self._firsts: dict[tuple[str, int, str], int] = {}  # the same, by line: fingerprint
        self._held = 0
        self._max_held = max_held
        self._released = asyncio.Event()
        self._outcomes = _Outcomes(memory_outcomes)
        self._lookups: collections.deque[tuple[int, _Held]] = collections.deque()

    @property
    def outcomes_in_memory(self) -> int:
        """How many records of finished firsts are kept in memory now."""
        return self._outcomes.in_memory

    async def admit(self, job: Job, handoff: Handoff) -> None:
        """Hand `job` off if it is the first of its URL; else record it as a repeat."""
        key = fingerprint(dedupe_key(job))
        if self._seen.add_fingerprint(key):
            await self._hand_off(job, key, handoff)
            return
        repeat = (job.source, job.line, job.url, job.meta)
        held = self._flying.get(key)
        if held is not None:
            held.append(repeat)
            self._held += 1
            while self._held > self._max_held:
                self._released.clear()
                await self._released.wait()
            return
        first = self._outcomes.recent(key)
        if first is not None:
            await self._emit(_repeat_of(first, repeat))
            return
        self._lookups.append((key, repeat))
        if len(self._lookups) >= LOOKUP_BATCH:
            await self.flush()

    async def flush(self) -> None:
        """Record the repeats whose firsts' outcomes are on disk, with one thread hop."""
        lookups = self._lookups
        while lookups:
            found = await self._outcomes.stored([key for key, _ in lookups])
            for first in found:
                _, repeat = lookups.popleft()
                if first is None:  # cannot happen: every first's record is kept
                    record = Record.lost(*repeat[:3], "the outcome of its first was lost")
                else:
                    record = _repeat_of(first, repeat)
                await self._emit(record)

    async def emit(self, record: Record) -> None:
        """Pass `record` on; when it is a first's, the repeats held for it follow."""
        key = self._firsts.pop((record.source, record.line, record.url), None)
        if key is None:
            await self._emit(record)
            return
        # In one step with no await: a repeat admitted now finds the outcome, or is held.
        held = self._flying.pop(key, [])
        self._outcomes.add(key, record)
        await self._emit(record)
        for repeat in held:
            await self._emit(_repeat_of(record, repeat))
        if held:
            self._held -= len(held)
            self._released.set()
        await self._outcomes.spill_if_full()

    async def aclose(self) -> None:
        """Forget every outcome and close the store on disk; idempotent."""
        await self._outcomes.aclose()

    async def _hand_off(self, job: Job, key: int, handoff: Handoff) -> None:
        line = (job.source, job.line, shown_url(job.url))  # as its record will say
        self._flying[key] = []
        self._firsts[line] = key
        try:
            await handoff(job)
        except BaseException:
            # Not handed off (the deadline passed, the run stops): no record will come.
            if self._firsts.pop(line, None) is not None:
                self._flying.pop(key, None)
            raise


class _Outcomes:
    """Records of finished firsts by fingerprint: the latest in memory, older ones on disk.

    Two generations in memory, each up to half the bound: when the young one is full, the
    old one goes to disk and the young one becomes old. Reading and writing the disk both
    run on one thread, in the order asked, so a record on its way there is always found.
    """

    def __init__(self, memory: int) -> None:
        self._half = max(1, memory // 2)
        self._young: dict[int, Record] = {}
        self._old: dict[int, Record] = {}
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._disk: _Disk | None = None
        self._closed = False

    @property
    def in_memory(self) -> int:
        return len(self._young) + len(self._old)

    def add(self, key: int, record: Record) -> None:
        self._young[key] = record

    def recent(self, key: int) -> Record | None:
        return self._young.get(key) or self._old.get(key)

    async def stored(self, keys: Sequence[int]) -> list[Record | None]:
        """The records on disk for `keys`, None for those not there."""
        if self._disk is None:
            return [None] * len(keys)
        return await self._run(self._disk.get, keys)

    async def spill_if_full(self) -> None:
        """When the young generation is full, write the old one to disk."""
        if len(self._young) < self._half:
            return
        spilled, self._old, self._young = self._old, self._young, {}
        if not spilled:
            return
        if self._disk is None:
            self._disk = _Disk()
        await self._run(self._disk.put, spilled.items())

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._young, self._old = {}, {}
        thread, disk = self._thread, self._disk
        if thread is None:
            return
        try:
            if disk is not None:
                # Shielded: a cancelled run still closes the database, which removes it.
                await asyncio.shield(asyncio.wrap_future(thread.submit(disk.close)))
        finally:
            thread.shutdown(wait=False)

    async def _run(self, work: Callable[..., T], *args: object) -> T:
        if self._thread is None:
            self._thread = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="fetchcli-dedupe"
            )
        return await asyncio.wrap_future(self._thread.submit(work, *args))


class _Disk:
    """The outcomes too many for memory, in a private temporary sqlite database.

    Blocking; used from one thread only (the connection is opened on first use there). Every
    first's outcome of a long list comes here whether or not a repeat ever asks for it, so
    it is stored as cheaply as it can be: a marshalled tuple of what a repeat takes from it,
    in key order (the B-tree's pages in turn), without a journal (the database dies with the
    process). As JSON in random order it was a quarter of the coordinator's CPU.
    """

    def __init__(self) -> None:
        self._db: sqlite3.Connection | None = None

    def put(self, items: Iterable[tuple[int, Record]]) -> None:
        rows = sorted((_signed(key), _pack(record)) for key, record in items)
        db = self._open()
        with db:
            db.executemany("INSERT OR REPLACE INTO outcome VALUES (?, ?)", rows)

    def get(self, keys: Sequence[int]) -> list[Record | None]:
        db = self._open()
        query = "SELECT outcome FROM outcome WHERE key = ?"
        rows = [db.execute(query, (_signed(key),)).fetchone() for key in keys]
        return [None if row is None else _unpack(row[0]) for row in rows]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()  # a temporary database: sqlite deletes it now
            self._db = None

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            import sqlite3  # here: most runs never spill, and the import is 3 ms of start-up

            # "": a private temporary database on disk, unlinked by sqlite as it is made.
            db = sqlite3.connect("", isolation_level="DEFERRED")
            db.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
            db.execute("PRAGMA journal_mode = OFF")
            db.execute("PRAGMA synchronous = OFF")
            db.execute("CREATE TABLE outcome (key INTEGER PRIMARY KEY, outcome BLOB)")
            self._db = db
        return self._db


# What a repeat's record takes from its first's.
_OUTCOME = tuple(
    field.name for field in dataclasses.fields(Record) if field.name not in REPEAT_OWN_FIELDS
)


def _pack(record: Record) -> bytes:
    return marshal.dumps(tuple(_plain(getattr(record, name)) for name in _OUTCOME))


def _unpack(data: bytes) -> Record:
    fields: dict[str, Any] = dict(zip(_OUTCOME, marshal.loads(data), strict=True))
    if fields["error_kind"] is not None:
        fields["error_kind"] = ErrorKind(fields["error_kind"])
    return Record(url="", **fields)  # its url is the repeat's


def _plain(value: Any) -> Any:
    """`value` as marshal takes it: an enum member as its value."""
    return value.value if isinstance(value, enum.Enum) else value


def _repeat_of(first: Record, repeat: _Held) -> Record:
    source, line, url, meta = repeat
    return Record.duplicate(source, line, url, first, meta)


def _signed(key: int) -> int:
    """A 64-bit fingerprint as sqlite's signed INTEGER."""
    return key - (1 << 64) if key >= 1 << 63 else key
