"""Manifests: URL lists with a name, a checksum and a size per URL, streamed row by row.

A source is one URL per line (`lines`), CSV or TSV with a header row, or JSONL objects;
gzip-compressed sources are recognised by their first bytes, whatever their name. Columns
(or keys): `url` (required), `path` (the name under -o), `sha256` (hex), `size` (bytes);
the others are kept under `meta`. Bytes go in as they arrive (`ManifestParser.feed`) and
rows come out as soon as they are complete, so memory stays flat whatever the length of
the list. A row that cannot be fetched (no url, a bad sha256 or size, broken quoting, a
line that is not a JSON object) becomes a `BadLine` with its line number; the rest goes on.
A usable row is a `Job` whose `expect` holds what the row says besides the URL (None for a
plain URL line), so every format ends in what the producer takes.

`items_of` reads the sources of a run this way (one path for every format, plain lists
included); `items_from` does the same for the URLs or row mappings a program gives.

CSV and TSV follow the `excel` and `excel-tab` dialects of the csv module: a quoted field
may hold separators, doubled quotes and newlines; quoting errors fail the row (strict).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from enum import StrEnum
from typing import Any

from fetchcli.decoding import Decoder, ZlibDecoder
from fetchcli.errors import FetchError, UsageError
from fetchcli.kinds import ErrorKind
from fetchcli.models import BadLine, Expectation, Job
from fetchcli.sources import MAX_LINE_BYTES, LongLine, Source, parse_line, read_chunks

__all__ = [
    "BATCH",
    "MAX_ROW_BYTES",
    "Expectation",
    "Format",
    "Item",
    "Items",
    "ManifestParser",
    "format_for",
    "holds_rows",
    "items_from",
    "items_of",
    "read_manifest",
]

MAX_ROW_BYTES = 128 * 1024  # the csv module's own field limit; a longer row is a bad row
BATCH = 256
GZIP_MAGIC = b"\x1f\x8b"
BOM = b"\xef\xbb\xbf"
KNOWN_COLUMNS = ("url", "path", "sha256", "size")

_SHA256 = re.compile(r"[0-9a-f]{64}")


class Format(StrEnum):
    """What the rows of a source are."""

    LINES = "lines"
    CSV = "csv"
    TSV = "tsv"
    JSONL = "jsonl"


_EXTENSIONS = {
    ".csv": Format.CSV,
    ".tsv": Format.TSV,
    ".tab": Format.TSV,
    ".jsonl": Format.JSONL,
    ".ndjson": Format.JSONL,
}


def format_for(name: str, given: Format | str | None = None) -> Format:
    """`--input-format` when given, else by extension (`.csv.gz` is csv), else lines."""
    if given is not None:
        return Format(given)
    name = name.lower().removesuffix(".gz")
    for extension, found in _EXTENSIONS.items():
        if name.endswith(extension):
            return found
    return Format.LINES


def holds_rows(names: Iterable[str], given: Format | str | None = None) -> bool:
    """Whether any of the sources `names` is a manifest (rows that may name their files)."""
    return any(format_for(name, given) is not Format.LINES for name in names)


# A usable row (its expectation in `job.expect`) or a row that cannot be fetched.
Item = Job | BadLine
# Batches of items, each with the name of its source ("-" is stdin).
Items = AsyncIterator[tuple[str, list[Item]]]


async def items_of(sources: list[Source], fmt: Format | str | None = None) -> Items:
    """Every row of every source, in order, in batches; `fmt` is --input-format."""
    for source in sources:
        source.reading = True  # its reader thread closes it from now on
        chunks = read_chunks(source.stream, close=source.name != "-")
        async for batch in read_manifest(source.name, chunks, format_for(source.name, fmt)):
            yield source.name, batch


async def items_from(
    urls: Iterable[str | Mapping[str, Any]] | AsyncIterable[str | Mapping[str, Any]],
    name: str = "fetch()",
) -> Items:
    """URLs (or rows: mappings with the manifest columns) given by a program, numbered from
    1; an async iterable is taken one by one, anything else in batches."""
    rows = _JsonLines(name)
    if isinstance(urls, AsyncIterable):
        number = 0
        async for value in urls:
            number += 1
            item = rows.value(number, value)
            if item is not None:
                yield name, [item]
        return
    batch: list[Item] = []
    for number, value in enumerate(urls, start=1):
        item = rows.value(number, value)
        if item is not None:
            batch.append(item)
        if len(batch) == BATCH:
            yield name, batch
            batch = []
    if batch:
        yield name, batch


async def read_manifest(
    name: str, chunks: AsyncIterable[bytes], fmt: Format
) -> AsyncIterator[list[Item]]:
    """The rows of one source, in batches of at most `BATCH`, as its chunks arrive."""
    parser = ManifestParser(name, fmt)
    batch: list[Item] = []
    async for chunk in chunks:
        for item in parser.feed(chunk):
            batch.append(item)
            if len(batch) >= BATCH:
                yield batch
                batch = []
        if batch:
            yield batch
            batch = []
    batch.extend(parser.close())
    if batch:
        yield batch


class ManifestParser:
    """Bytes in, rows out: gunzip when needed, split lines, then parse rows by format.

    `feed` returns a generator: take all of it before the next `feed`. `close` ends the
    source and returns what is left (a last line without a newline, an unclosed quote).
    A header without a `url` column raises UsageError: nothing in that source is usable.
    """

    def __init__(self, source: str, fmt: Format) -> None:
        self._source = source
        self._inflater = _Inflater()
        limit = MAX_LINE_BYTES if fmt is Format.LINES else MAX_ROW_BYTES
        self._lines = _LineSplitter(limit)
        self._rows: _Rows
        match fmt:
            case Format.LINES:
                self._rows = _UrlLines(source)
            case Format.JSONL:
                self._rows = _JsonLines(source)
            case Format.CSV:
                self._rows = _CsvRows(source, "excel")
            case Format.TSV:
                self._rows = _CsvRows(source, "excel-tab")
        self._failed = False

    def feed(self, chunk: bytes) -> Iterator[Item]:
        """Rows completed by `chunk`."""
        if self._failed:
            return
        rows = self._rows
        try:
            for piece in self._inflater.push(chunk):
                for number, line in self._lines.push(piece):
                    item = rows.line(number, line)
                    if item is not None:
                        yield item
        except FetchError as exc:
            yield self._broken(exc)

    def close(self) -> list[Item]:
        """The rows left at the end of the source."""
        if self._failed:
            return []
        rows = self._rows
        items: list[Item | None] = []
        try:
            for piece in self._inflater.finish():
                items.extend(rows.line(number, line) for number, line in self._lines.push(piece))
        except FetchError as exc:
            items.append(self._broken(exc))
        else:
            items.extend(rows.line(number, line) for number, line in self._lines.finish())
            items.append(rows.finish())
        return [item for item in items if item is not None]

    def _broken(self, exc: FetchError) -> BadLine:
        # Nothing after a corrupt stretch of gzip can be read: one bad line, then stop.
        self._failed = True
        if exc.kind == ErrorKind.TRUNCATED:
            reason = "the gzip data ends early (a truncated file?)"
        else:
            reason = f"corrupt gzip data: {exc.__cause__ or exc}"
        return BadLine(self._source, self._lines.number + 1, "", reason)


class _Inflater:
    """gzip (one member or several) -> bytes, in bounded pieces; other data passes through.

    The inflating is decoding.py's, as for a gzip body: at most `decoding.PIECE` bytes a step.
    """

    def __init__(self) -> None:
        self._head = b""  # the first bytes, until two tell whether this is gzip
        self._gzip: Decoder | None = None
        self._known = False

    def push(self, data: bytes) -> Iterator[bytes]:
        if not self._known:
            self._head += data
            if len(self._head) < len(GZIP_MAGIC):
                return
            self._known = True
            if self._head.startswith(GZIP_MAGIC):
                self._gzip = ZlibDecoder("gzip")
            data, self._head = self._head, b""
        if self._gzip is None:
            if data:
                yield data
            return
        yield from self._gzip.decode(data)

    def finish(self) -> Iterator[bytes]:
        if not self._known:
            self._known = True  # under two bytes: not gzip
            if self._head:
                yield self._head
        elif self._gzip is not None:
            yield from self._gzip.flush()


class _LineSplitter:
    """Bytes -> numbered lines; a line over `limit` bytes comes as a `LongLine`: its first
    MAX_LINE_BYTES (the rest is counted, not kept)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._pending = b""
        self._head: bytes | None = None  # the start of an over-long line still arriving
        self._before = 0  # its bytes so far, not kept
        self._first = True
        self.number = 0

    def push(self, data: bytes) -> Iterator[tuple[int, bytes | LongLine]]:
        if self._first:
            self._pending += data
            if len(self._pending) < len(BOM) and BOM.startswith(self._pending):
                return
            self._first = False
            data, self._pending = self._pending.removeprefix(BOM), b""
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            self.number += 1
            yield self.number, self._line(line)
        if len(self._pending) > self._limit:
            if self._head is None:
                self._head = self._pending[:MAX_LINE_BYTES]
            self._before += len(self._pending)
            self._pending = b""

    def finish(self) -> Iterator[tuple[int, bytes | LongLine]]:
        if self._first:
            self._first = False
            self._pending = self._pending.removeprefix(BOM)
        if self._pending or self._head is not None:
            self.number += 1
            yield self.number, self._line(self._pending)
        self._pending = b""

    def _line(self, line: bytes) -> bytes | LongLine:
        head, before = self._head, self._before
        self._head, self._before = None, 0
        if head is not None:
            return LongLine(head, before + len(line))
        if len(line) > self._limit:
            return LongLine(line[:MAX_LINE_BYTES], len(line))
        return line


class _Rows:
    """Lines of one format -> rows."""

    def __init__(self, source: str) -> None:
        self._source = source

    def line(self, number: int, raw: bytes | LongLine) -> Item | None:
        raise NotImplementedError

    def finish(self) -> Item | None:
        return None

    def _bad(self, number: int, text: str, reason: str) -> BadLine:
        return BadLine(self._source, number, text[:200], reason)

    def _row(
        self,
        number: int,
        url: Any,
        path: Any = None,
        sha256: Any = None,
        size: Any = None,
        meta: dict[str, Any] | None = None,
    ) -> Item:
        """Validate one row's values (str from CSV, any JSON value from JSONL)."""
        if not isinstance(url, str) or not url.strip() or url.lstrip().startswith("#"):
            shown = url if isinstance(url, str) else ""
            return self._bad(number, shown, "no url in this row")
        job = parse_line(self._source, number, url.encode("utf-8", "surrogatepass"))
        if not isinstance(job, Job):
            assert job is not None  # a non-blank, non-comment line is a Job or a BadLine
            return job
        problem = ""
        if path is not None and not isinstance(path, str):
            problem = f"bad path {_shown(path)}: not text"
        elif path is not None and not _is_unicode(path):
            problem = "bad path: not valid Unicode (a lone surrogate)"
        if sha256 is not None:
            sha256, problem = _checked_sha256(sha256, problem)
        if size is not None:
            size, problem = _checked_size(size, problem)
        if problem:
            return self._bad(number, job.url, problem)
        if not (path or sha256 is not None or size is not None or meta):
            return job
        expect = Expectation(path=path or None, sha256=sha256, size=size, meta=meta)
        return Job(job.source, job.line, job.url, job.parsed, expect)


def _checked_sha256(value: Any, problem: str) -> tuple[str | None, str]:
    if not isinstance(value, str):
        return None, problem or f"bad sha256 {_shown(value)}: not 64 hex digits"
    text = value.strip().lower().removeprefix("sha256:")
    if not text:
        return None, problem
    if not _SHA256.fullmatch(text):
        return None, problem or f"bad sha256 {_shown(value)}: not 64 hex digits"
    return text, problem


def _checked_size(value: Any, problem: str) -> tuple[int | None, str]:
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None, problem
        if text.isascii() and text.isdigit():
            return int(text), problem
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value, problem
    return None, problem or f"bad size {_shown(value)}: not a whole number of bytes"


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return repr(text[:80])


class _UrlLines(_Rows):
    """One URL per line, as `sources.parse_line` reads them."""

    def line(self, number: int, raw: bytes | LongLine) -> Item | None:
        return parse_line(self._source, number, raw)


def _no_constants(name: str) -> Any:
    msg = f"{name} is not JSON"
    raise ValueError(msg)


class _JsonLines(_Rows):
    """One JSON object per line; blank lines are skipped."""

    def line(self, number: int, raw: bytes | LongLine) -> Item | None:
        if isinstance(raw, LongLine):
            return self._bad(number, "", f"line longer than {MAX_ROW_BYTES // 1024} KiB")
        raw = raw.strip()
        if not raw:
            return None
        try:
            # NaN and Infinity would make the records file invalid JSON: refuse them here.
            value = json.loads(raw, parse_constant=_no_constants)
        except (ValueError, RecursionError) as exc:
            reason = "not valid UTF-8" if isinstance(exc, UnicodeDecodeError) else "bad JSON"
            detail = f": {exc}" if not isinstance(exc, UnicodeDecodeError) else ""
            return self._bad(number, raw.decode("utf-8", "replace"), reason + detail)
        if not isinstance(value, dict):
            return self._bad(number, raw.decode("utf-8", "replace"), "not a JSON object")
        # "\ud800" parses, but would make the record unwritable as UTF-8: refuse it here.
        if b"\\u" in raw and not _is_unicode(json.dumps(value, ensure_ascii=False)):
            return self._bad(number, raw.decode("utf-8", "replace"), "not valid Unicode")
        return self._object(number, value)

    def value(self, number: int, value: object) -> Item | None:
        """A URL string (as a line of a list) or a mapping (as a JSON object)."""
        if isinstance(value, str):
            raw = value.encode("utf-8", "surrogatepass")
            long = len(raw) > MAX_LINE_BYTES
            return parse_line(
                self._source, number, LongLine(raw[:MAX_LINE_BYTES], len(raw)) if long else raw
            )
        if isinstance(value, Mapping):
            return self._object(number, value)
        return self._bad(number, "", f"not a URL or a row: {type(value).__name__}")

    def _object(self, number: int, value: Mapping[Any, Any]) -> Item:
        known: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        for key, item in value.items():
            name = str(key).lower()  # keys in any case, as CSV headers: LAION's "URL"
            if name in KNOWN_COLUMNS and name not in known:
                known[name] = item
            else:
                meta[str(key)] = item
        return self._row(
            number,
            known.get("url"),
            known.get("path"),
            known.get("sha256"),
            known.get("size"),
            meta or None,
        )


class _NeedMore(Exception):
    """The csv reader wants the next line of a quoted field that has not arrived yet."""


class _Replay:
    """The lines of the record being read, handed to the csv reader one at a time.

    When they run out mid-record, the reader is interrupted (`_NeedMore`); it starts each
    record afresh, so the record's lines are replayed once more have come.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.index = 0
        self.size = 0

    def __iter__(self) -> _Replay:
        return self

    def __next__(self) -> str:
        if self.index == len(self.lines):
            raise _NeedMore
        self.index += 1
        return self.lines[self.index - 1]

    def clear(self) -> None:
        self.lines.clear()
        self.index = self.size = 0


_QUOTED_TEXT = re.compile(r'(?:[^"]|"")*')


def _still_quoted(line: str, delimiter: str) -> bool:
    """Whether a line that starts inside a quoted field ends inside one (then or again)."""
    at, quoted = 0, True
    while True:
        if quoted:
            at = _QUOTED_TEXT.match(line, at).end()  # type: ignore[union-attr]
            if at == len(line):
                return True
            at, quoted = at + 1, False  # the closing quote
        else:
            at = line.find(delimiter, at)
            if at < 0:
                return False
            at += 1
            if line.startswith('"', at):
                at, quoted = at + 1, True


class _CsvRows(_Rows):
    """CSV or TSV with a header row; quoted fields may span lines."""

    def __init__(self, source: str, dialect: str) -> None:
        super().__init__(source)
        self._replay = _Replay()
        self._reader = csv.reader(self._replay, dialect, strict=True)
        self._delimiter = csv.get_dialect(dialect).delimiter
        self._start = 0  # the line number where the current record began
        self._bad_utf8 = False
        self._header: list[str] | None = None
        self._columns: dict[str, int] = {}
        self._meta: list[tuple[int, str]] = []

    def line(self, number: int, raw: bytes | LongLine) -> Item | None:
        replay = self._replay
        if not replay.lines:
            self._start, self._bad_utf8 = number, False
        if isinstance(raw, LongLine) or replay.size + len(raw) > MAX_ROW_BYTES:
            # Drop it and start afresh on the next line: memory stays flat on a stray quote.
            replay.clear()
            return self._bad(self._start, "", f"row longer than {MAX_ROW_BYTES // 1024} KiB")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text, self._bad_utf8 = raw.decode("utf-8", "replace"), True
        continued = bool(replay.lines)
        replay.lines.append(text + "\n")  # the reader keeps newlines inside quoted fields
        replay.size += len(raw) + 1
        if continued and _still_quoted(text, self._delimiter):
            return None  # replaying the record only when it can end keeps a long one linear
        replay.index = 0
        try:
            fields = next(self._reader)
        except _NeedMore:
            return None
        except csv.Error as exc:
            replay.clear()
            return self._bad(self._start, text.rstrip("\r\n"), f"bad CSV row: {exc}")
        replay.clear()
        if self._bad_utf8:
            return self._bad(self._start, "\t".join(fields), "not valid UTF-8")
        if self._header is None:
            self._take_header(fields)
            return None
        return self._fields(fields) if any(fields) else None

    def finish(self) -> Item | None:
        if not self._replay.lines:
            return None
        self._replay.clear()
        return self._bad(self._start, "", "a quoted field is not closed by the end of the file")

    def _take_header(self, fields: list[str]) -> None:
        if not any(field.strip() for field in fields):
            return  # blank lines before the header
        self._header = fields
        for index, name in enumerate(fields):
            key = name.strip().lower()
            if key in KNOWN_COLUMNS and key not in self._columns:
                self._columns[key] = index
            else:
                self._meta.append((index, name))
        if "url" not in self._columns:
            shown = ", ".join(repr(name[:40]) for name in fields[:10])
            msg = f"{self._source}: the header row has no 'url' column (it has {shown})"
            raise UsageError(msg)

    def _fields(self, fields: list[str]) -> Item:
        assert self._header is not None
        if len(fields) != len(self._header):
            text = fields[self._columns["url"]] if len(fields) > self._columns["url"] else ""
            reason = f"the row has {len(fields)} fields, the header {len(self._header)}"
            return self._bad(self._start, text, reason)
        columns = self._columns
        path, sha256, size = (
            fields[columns[key]] if key in columns else None for key in KNOWN_COLUMNS[1:]
        )
        meta = {name: fields[index] for index, name in self._meta} if self._meta else None
        return self._row(self._start, fields[columns["url"]], path, sha256, size, meta)
