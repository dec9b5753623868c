"""`fetchcli merge`: the records of many shards, checked against the list they came from.

Every input line that needs a record (not blank, not a comment) must have one, by source
and line number, in exactly one ledger (records file). Merge says which lines failed and
which have no record, writes the URLs still to fetch, and is complete only when every line
is ok. It reads each file once, streaming, and keeps the records on disk, not in memory:

1. every ledger's records go into an SQLite table in a temporary directory (appends only);
2. one index over (source, line, state, ledger) sorts them: SQLite's external merge sort,
   in bounded memory (`CACHE_KIB`), spilling to temporary files;
3. the input is read in order beside a scan of that index (a merge join): each line meets
   its records, or has none.

Records name their source as it was given to `fetchcli get`: a record matches an input given
to merge by that exact name, or else by its file name alone (`/data/list.txt` and
`list.txt`), when no two inputs share that file name. Line numbers count every physical
line, blank and comment lines included, as `fetchcli get` counts them.

A record with `skipped: "duplicate"` stands for a line whose URL came earlier in the list:
it is ok when that earlier line is. The earlier line is found by the URL as written (without
its fragment); a repeat written differently (letter case, a default port), which only
fetchcli's own parsing could match, is taken on the record's word.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import IO, BinaryIO

from fetchcli.errors import OutputError, UsageError
from fetchcli.kinds import ErrorKind, Skipped
from fetchcli.models import Job
from fetchcli.sources import MAX_LINE_BYTES, parse_line

__all__ = ["Entry", "MergeReport", "merge"]

SAMPLE = 20  # lines listed of each kind; the counts are always whole
BATCH = 10_000  # rows per executemany
CACHE_KIB = 32 * 1024  # SQLite's page cache and sorter memory
MAX_RECORD_BYTES = 1 << 20  # a ledger line longer than this is not a record


class State(IntEnum):
    """A line's best record, in order: the highest of its records wins."""

    INVALID = 1  # not a URL: failed, and never worth fetching again
    FAILED = 2
    DUPLICATE = 3  # ok if the earlier line with its URL is
    OK = 4


@dataclass(frozen=True, slots=True)
class Entry:
    """One line in a report: where it is, its URL, and what went wrong (if anything)."""

    source: str
    line: int
    url: str
    why: str | None = None


@dataclass(slots=True)
class MergeReport:
    """What merge found. The counts are whole; the lists hold the first `SAMPLE` of each."""

    lines: int = 0  # input lines that need a record
    ok: int = 0
    failed: int = 0  # including `invalid`
    invalid: int = 0  # lines that are not URLs: failed, and not in the rerun list
    missing: int = 0  # lines with no record
    repeated: int = 0  # lines recorded by two ledgers, or fetched ok twice
    strays: int = 0  # records that match no input line (a blank line, a line past the end,
    # or a source that was not given)
    unreadable: int = 0  # ledger lines that are not records (a crashed shard's cut-short last line)
    rerun: int = 0  # URLs written to the rerun file
    failures: list[Entry] = field(default_factory=list)
    missings: list[Entry] = field(default_factory=list)
    repeats: list[Entry] = field(default_factory=list)
    stray_records: list[Entry] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every line has a record and every line is ok."""
        return self.failed == 0 and self.missing == 0


def merge(
    ledgers: Sequence[str],
    inputs: Sequence[str],
    rerun: str | None = None,
    *,
    stdin: BinaryIO | None = None,
    tmpdir: str | None = None,
) -> MergeReport:
    """Check the records in `ledgers` against the lines of `inputs`; blocking.

    `inputs` are read in order ("-" is `stdin`). `rerun`, when given, receives the URLs of
    the failed and missing lines in input order (written whole, or not at all). The
    scratch database goes in `tmpdir` (default: the system's, `TMPDIR`): about 40 bytes a
    record. Raises UsageError when a file cannot be read or written, OutputError when the
    scratch database fails.
    """
    if not inputs:
        msg = "merge needs --input LIST: the list the shards fetched"
        raise UsageError(msg)
    if list(inputs).count("-") > 1:
        msg = "--input - (stdin) can be given once"
        raise UsageError(msg)
    streams = _open_inputs(inputs, stdin)
    report = MergeReport()
    with contextlib.ExitStack() as stack:
        for stream in streams:
            if stream is not stdin:
                stack.callback(stream.close)
        # Made first, so that an unwritable rerun path is known before hours of reading.
        out = stack.enter_context(_rerun_file(rerun)) if rerun else None
        directory = stack.enter_context(tempfile.TemporaryDirectory(dir=tmpdir, prefix="merge-"))
        try:
            db = _database(os.path.join(directory, "records.db"))
            stack.callback(db.close)
            matcher = _SourceMatcher(inputs)
            repeats = _Repeats(db)
            for number, path in enumerate(ledgers):
                _load(db, repeats, path, number, matcher, report)
            db.execute("CREATE INDEX by_line ON rec (src, line, state, ledger)")
            _join(db, repeats, inputs, streams, out, report)
        except sqlite3.Error as exc:  # a full disk, most likely
            msg = f"merge's scratch database in {directory} failed: {exc}"
            raise OutputError(msg) from exc
    return report


def _open_inputs(inputs: Sequence[str], stdin: BinaryIO | None) -> list[BinaryIO]:
    streams: list[BinaryIO] = []
    for name in inputs:
        if name == "-":
            if stdin is None:
                msg = "--input -: no stdin to read"
                raise UsageError(msg)
            streams.append(stdin)
            continue
        try:
            streams.append(open(name, "rb"))  # noqa: SIM115 - closed by merge()
        except OSError as exc:
            for stream in streams:
                if stream is not stdin:
                    stream.close()
            msg = f"cannot read {name}: {exc.strerror or exc}"
            raise UsageError(msg) from exc
    return streams


def _database(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    # A scratch database: nothing to recover after a crash, so no journal and no syncs.
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    db.execute("PRAGMA temp_store = FILE")
    db.execute(
        "CREATE TABLE rec (src INTEGER, line INTEGER, state INTEGER, ledger INTEGER, error TEXT)"
    )
    return db


class _Repeats:
    """The URLs of the duplicate records (as written, without the fragment), and whether the
    earlier line with each is ok. A filter of one bit per hash in front of the table spares
    it a lookup for nearly every line, which is nobody's earlier line."""

    BITS = 1 << 27  # 16 MiB: a few per cent of false hits with a few million repeated URLs

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._bits: bytearray | None = None  # made by the first duplicate: most runs have none
        db.execute(
            "CREATE TABLE dup (url BLOB PRIMARY KEY, seen INTEGER, ok INTEGER) WITHOUT ROWID"
        )

    def add(self, urls: list[bytes]) -> None:
        """Remember the URLs of duplicate records."""
        if not urls:
            return
        if self._bits is None:
            self._bits = bytearray(self.BITS // 8)
        for url in urls:
            # hash() is seeded per process, and this filter lives in one process.
            bit = hash(url) & (self.BITS - 1)
            self._bits[bit >> 3] |= 1 << (bit & 7)
        self._db.executemany("INSERT OR IGNORE INTO dup VALUES (?, 0, 0)", ((u,) for u in urls))

    def note(self, url: bytes, ok: bool) -> None:
        """A line that is not a duplicate may be the earlier line of one: note how it did."""
        if self._bits is None:
            return
        bit = hash(url) & (self.BITS - 1)
        if self._bits[bit >> 3] & (1 << (bit & 7)):
            self._db.execute(
                "UPDATE dup SET seen = 1, ok = max(ok, ?) WHERE url = ?", (int(ok), url)
            )

    def earlier_ok(self, url: bytes) -> bool:
        """For a duplicate: whether its earlier line is ok (True too when it is not to be
        found: written differently, it was matched by fetchcli's parsing, not by merge)."""
        found = self._db.execute("SELECT seen, ok FROM dup WHERE url = ?", (url,)).fetchone()
        return found is None or not found[0] or bool(found[1])


class _SourceMatcher:
    """A record's source name -> the index of the input it came from, or None."""

    def __init__(self, inputs: Sequence[str]) -> None:
        self._exact = {name: index for index, name in enumerate(inputs)}
        by_base: dict[str, list[int]] = {}
        for index, name in enumerate(inputs):
            if name != "-":
                by_base.setdefault(os.path.basename(name), []).append(index)
        self._by_base = {base: found[0] for base, found in by_base.items() if len(found) == 1}
        self._cache: dict[str, int | None] = {}

    def __call__(self, source: str) -> int | None:
        if source in self._cache:
            return self._cache[source]
        index = self._exact.get(source)
        if index is None and source != "-":
            index = self._by_base.get(os.path.basename(source))
        if len(self._cache) < 10_000:  # a ledger full of odd names does not grow it forever
            self._cache[source] = index
        return index


def _load(
    db: sqlite3.Connection,
    repeats: _Repeats,
    path: str,
    number: int,
    matcher: _SourceMatcher,
    report: MergeReport,
) -> None:
    rows: list[tuple[int, int, int, int, str | None]] = []
    dups: list[bytes] = []

    def flush() -> None:
        db.execute("BEGIN")
        db.executemany("INSERT INTO rec VALUES (?, ?, ?, ?, ?)", rows)
        repeats.add(dups)
        db.execute("COMMIT")
        rows.clear()
        dups.clear()

    try:
        stream = open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        msg = f"cannot read {path}: {exc.strerror or exc}"
        raise UsageError(msg) from exc
    with stream:
        for raw in _records(stream, report):
            record = _record(raw)
            if record is None:
                report.unreadable += 1
                continue
            source, line, url, state, error = record
            src = matcher(source)
            if src is None:
                _stray(report, Entry(source, line, url, "its source was not given with --input"))
                continue
            rows.append((src, line, state, number, error))
            if state is State.DUPLICATE:
                dups.append(_spelling(url.encode("utf-8", "surrogateescape")))
            if len(rows) >= BATCH:
                flush()
    flush()


def _records(stream: IO[bytes], report: MergeReport) -> Iterator[bytes]:
    """Whole lines of a ledger; a line cut short (a crashed shard's last) is counted, skipped."""
    while raw := stream.readline(MAX_RECORD_BYTES):
        if raw.endswith(b"\n"):
            yield raw
            continue
        report.unreadable += 1
        while raw and not raw.endswith(b"\n"):  # skip the rest of an overlong line
            raw = stream.readline(MAX_RECORD_BYTES)


def _record(raw: bytes) -> tuple[str, int, str, State, str | None] | None:
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    source, line, url, ok = (
        record.get("source"),
        record.get("line"),
        record.get("url"),
        record.get("ok"),
    )
    if not (isinstance(source, str) and isinstance(line, int) and isinstance(url, str)):
        return None
    if not isinstance(ok, bool) or isinstance(line, bool) or line < 1:
        return None
    skipped = record.get("skipped")
    if ok:
        return (
            source,
            line,
            url,
            State.DUPLICATE if skipped == Skipped.DUPLICATE else State.OK,
            None,
        )
    kind = record.get("error_kind")
    error = f"{kind}: {record.get('error')}" if kind else str(record.get("error"))
    state = State.INVALID if kind == ErrorKind.INVALID_URL else State.FAILED
    return source, line, url, state, error[:300]


def _stray(report: MergeReport, entry: Entry) -> None:
    report.strays += 1
    if len(report.stray_records) < SAMPLE:
        report.stray_records.append(entry)


def _spelling(url: bytes) -> bytes:
    """A URL as written, without its fragment: how a repeat is matched to the earlier line."""
    return url.partition(b"#")[0]


@contextlib.contextmanager
def _rerun_file(path: str) -> Iterator[IO[bytes]]:
    """A file that appears at `path` whole when the block ends well, and not at all if not."""
    directory = os.path.dirname(path) or "."
    try:
        descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".rerun-")
    except OSError as exc:
        msg = f"cannot write {path}: {exc.strerror or exc}"
        raise UsageError(msg) from exc
    try:
        with os.fdopen(descriptor, "wb") as out:
            yield out
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


# One row per line that has records: its best state, in how many ledgers, how often fetched ok.
_LINES = f"""
    SELECT src, line, max(state), count(DISTINCT ledger), sum(state = {int(State.OK)})
    FROM rec INDEXED BY by_line GROUP BY src, line ORDER BY src, line
"""


def _join(
    db: sqlite3.Connection,
    repeats: _Repeats,
    inputs: Sequence[str],
    streams: Sequence[BinaryIO],
    out: IO[bytes] | None,
    report: MergeReport,
) -> None:
    """Walk the input lines and the recorded lines side by side, both in (source, line) order."""
    db.execute("BEGIN")  # one transaction for the notes on duplicates, not one per line
    recorded = _Recorded(db.execute(_LINES))
    for src, (name, stream) in enumerate(zip(inputs, streams, strict=True)):
        for number, raw in _numbered_lines(name, stream):
            for stray, line in recorded.before(src, number):
                _stray(report, Entry(inputs[stray], line, "", "no such input line"))
            row = recorded.take(src, number)
            text = None if raw is None else raw.strip()
            if text is not None and (not text or text.startswith(b"#")):
                if row is not None:
                    _stray(report, Entry(name, number, "", "a blank or comment line"))
                continue
            report.lines += 1
            entry = Entry(name, number, "" if text is None else text.decode("utf-8", "replace"))
            if row is None:
                _missing(report, out, entry, raw)
                if text is not None:
                    repeats.note(_spelling(text), ok=False)
            else:
                _judge(db, repeats, out, report, entry, src, text, row)
    for stray, line in recorded.before(len(inputs), 0):
        _stray(report, Entry(inputs[stray], line, "", "no such input line"))
    db.execute("COMMIT")


class _Recorded:
    """The rows of `_LINES`, taken in order as the input lines come."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor
        self._row: tuple[int, int, int, int, int] | None = cursor.fetchone()

    def before(self, src: int, line: int) -> Iterator[tuple[int, int]]:
        """The recorded (source, line)s before this one: records of no input line."""
        while self._row is not None and (self._row[0], self._row[1]) < (src, line):
            yield self._row[0], self._row[1]
            self._row = self._cursor.fetchone()

    def take(self, src: int, line: int) -> tuple[int, int, int] | None:
        """(best state, ledgers, times fetched ok) of this line, if it has records."""
        row = self._row
        if row is None or (row[0], row[1]) != (src, line):
            return None
        self._row = self._cursor.fetchone()
        return row[2], row[3], row[4]


def _judge(
    db: sqlite3.Connection,
    repeats: _Repeats,
    out: IO[bytes] | None,
    report: MergeReport,
    entry: Entry,
    src: int,
    text: bytes | None,
    row: tuple[int, int, int],
) -> None:
    """Count one recorded line as ok or failed, and note it if it was recorded twice."""
    state, ledgers, oks = row
    if ledgers > 1 or oks > 1:
        report.repeated += 1
        if len(report.repeats) < SAMPLE:
            note = f"in {ledgers} ledgers" if ledgers > 1 else f"fetched ok {oks} times"
            report.repeats.append(Entry(entry.source, entry.line, entry.url, note))
    if text is None:  # over-long: its record can only be a failure
        state = min(state, State.INVALID)
    elif state == State.DUPLICATE:
        if not repeats.earlier_ok(_spelling(text)):
            # Its URL is listed, and rerun, with its earlier line: not rerun twice.
            why = "repeats an earlier line that is not ok"
            _failed(report, Entry(entry.source, entry.line, entry.url, why))
            return
    else:
        repeats.note(_spelling(text), ok=state == State.OK)
    if state >= State.DUPLICATE:
        report.ok += 1
        return
    if len(report.failures) < SAMPLE:
        entry = Entry(entry.source, entry.line, entry.url, _error(db, src, entry.line))
    _failed(report, entry)
    if state == State.INVALID:
        report.invalid += 1
    elif out is not None and text is not None:
        out.write(text + b"\n")
        report.rerun += 1


def _missing(report: MergeReport, out: IO[bytes] | None, entry: Entry, raw: bytes | None) -> None:
    report.missing += 1
    if len(report.missings) < SAMPLE:
        url = entry.url or f"(longer than {MAX_LINE_BYTES} bytes)"
        report.missings.append(Entry(entry.source, entry.line, url))
    # Only what fetchcli would fetch: a line that is not a URL would only fail again.
    if out is not None and raw is not None and isinstance(parse_line("", 1, raw), Job):
        out.write(raw.strip() + b"\n")
        report.rerun += 1


def _failed(report: MergeReport, entry: Entry) -> None:
    report.failed += 1
    if len(report.failures) < SAMPLE:
        report.failures.append(entry)


def _error(db: sqlite3.Connection, src: int, number: int) -> str | None:
    found = db.execute(
        "SELECT error FROM rec WHERE src = ? AND line = ? AND error IS NOT NULL"
        " ORDER BY state DESC LIMIT 1",
        (src, number),
    ).fetchone()
    return None if found is None else str(found[0])


def _numbered_lines(name: str, stream: BinaryIO) -> Iterator[tuple[int, bytes | None]]:
    """`(line number, raw line)` as `fetchcli get` numbers them; an over-long line is
    None. Synchronous: merge runs no event loop."""
    number = 0
    try:
        while raw := stream.readline(MAX_LINE_BYTES + 1):
            number += 1
            if raw.endswith(b"\n"):
                yield number, raw[:-1]
            elif len(raw) <= MAX_LINE_BYTES:
                yield number, raw  # the last line, with no newline
            else:
                while raw and not raw.endswith(b"\n"):
                    raw = stream.readline(MAX_LINE_BYTES + 1)
                yield number, None
    except OSError as exc:
        msg = f"cannot read {name}: {exc.strerror or exc}"
        raise UsageError(msg) from exc
