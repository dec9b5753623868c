"""The records that cross module lines: a job to fetch, and what happened to it."""

from __future__ import annotations

import builtins
import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, NamedTuple

from fetchcli.errors import FetchError
from fetchcli.kinds import ErrorKind, Skipped

if TYPE_CHECKING:
    import httpx

__all__ = ["REPEAT_OWN_FIELDS", "BadLine", "Expectation", "Job", "Record", "Recorded", "shown_url"]

# One encoder for every record: json.dumps with options makes a new one each call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# The userinfo of an absolute URL ("user:password@"), which records never show.
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)[^/?#@]*@")


def shown_url(text: str) -> str:
    """A URL as records and messages show it: any `user:password@` replaced by `***@`."""
    if "@" not in text:  # the common case costs one scan
        return text
    return _USERINFO.sub(r"\1***@", text, count=1)


class Recorded(NamedTuple):
    """What an earlier run's records say of a URL's saved file (--update): its ETag (for
    If-None-Match), and its size and sha256, which the file on disk must still have for a
    conditional request to mean anything; None where the records say nothing."""

    etag: str | None = None
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Expectation:
    """What a manifest row says of its URL besides the URL; None where it says nothing."""

    path: str | None = None  # as written: paths.row_path confines it under -o
    sha256: str | None = None  # 64 lowercase hex digits
    size: int | None = None
    meta: dict[str, Any] | None = None  # unknown columns: str values (CSV/TSV) or JSON values


@dataclass(frozen=True, slots=True)
class BadLine:
    """An input line that is not a usable http(s) URL; it gets an error record."""

    source: str
    line: int
    text: str
    reason: str


@dataclass(frozen=True, slots=True)
class Job:
    """One usable URL from one input line (or manifest row)."""

    source: str
    line: int
    url: str  # as written in the input (records show it through shown_url)
    parsed: httpx.URL
    expect: Expectation | None = None  # a manifest row's path, sha256, size, other columns
    relpath: PurePosixPath | None = None  # the name the producer gave; None: the tree name
    recorded: Recorded | None = None  # --update: what an earlier run's records say of it

    @property
    def meta(self) -> dict[str, Any] | None:
        """The row's other columns, for the record."""
        return None if self.expect is None else self.expect.meta


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """What happened to one input line; one JSONL object.

    `ok` is true when the body was fetched with a 2xx status, or was already there
    (`skipped: "exists"`); a repeated URL's record is its first's outcome (`skipped:
    "duplicate"`). `error` is null or a short message; `error_kind` a stable word.
    Build one with the constructor for what happened (`Record.succeeded(...)`,
    `Record.failed(...)` ...), so every record of a kind carries the same fields.
    """

    url: str
    ok: bool
    status: int | None = None
    path: str | None = None
    bytes: int = 0
    sha256: str | None = None
    elapsed: float = 0.0
    attempts: int = 0
    error: str | None = None
    error_kind: ErrorKind | None = None
    final_url: str | None = None
    content_type: str | None = None
    skipped: Skipped | None = None
    source: str = "-"
    line: int = 0
    etag: str | None = None  # the response's ETag, verbatim (weak ones too)
    last_modified: str | None = None  # the response's Last-Modified, verbatim
    meta: dict[str, Any] | None = None  # a manifest row's other columns; in JSON only when set

    @classmethod
    def succeeded(
        cls,
        job: Job,
        *,
        status: int,
        path: str | None,
        size: int,
        sha256: str | None,
        final_url: str,
        content_type: str | None,
        attempts: int,
        elapsed: float,
        etag: str | None = None,
        last_modified: str | None = None,
        skipped: Skipped | None = None,
    ) -> Record:
        """A body fetched with a 2xx status (saved at `path` unless None); or, with
        `skipped=Skipped.NOT_MODIFIED`, a 304 that leaves the file at `path` as it was."""
        return cls(
            url=shown_url(job.url),
            ok=True,
            status=status,
            path=path,
            bytes=size,
            sha256=sha256,
            elapsed=elapsed,
            attempts=attempts,
            final_url=shown_url(final_url),
            content_type=content_type,
            skipped=skipped,
            source=job.source,
            line=job.line,
            etag=etag,
            last_modified=last_modified,
            meta=job.meta,
        )

    @classmethod
    def failed(cls, job: Job, error: FetchError, attempts: int, elapsed: float) -> Record:
        """A URL given up on after `attempts`, for the reason `error` gives."""
        return cls(
            url=shown_url(job.url),
            ok=False,
            status=error.status,
            elapsed=elapsed,
            attempts=attempts,
            error=str(error),
            error_kind=error.kind,
            final_url=None if error.final_url is None else shown_url(error.final_url),
            source=job.source,
            line=job.line,
            meta=job.meta,
        )

    @classmethod
    def invalid(cls, source: str, line: int, text: str, reason: str) -> Record:
        """An input line that is not a usable URL; `text` is the line as read."""
        return cls(
            url=shown_url(text),
            ok=False,
            error=reason,
            error_kind=ErrorKind.INVALID_URL,
            source=source,
            line=line,
        )

    @classmethod
    def duplicate(
        cls, source: str, line: int, url: str, original: Record, meta: dict[str, Any] | None = None
    ) -> Record:
        """A URL seen earlier in the run, not fetched again: its first's outcome, on its own
        line (with its own row's `meta`)."""
        return dataclasses.replace(
            original,
            url=shown_url(url),
            elapsed=0.0,
            attempts=0,
            skipped=Skipped.DUPLICATE,
            source=source,
            line=line,
            meta=meta,
        )

    @classmethod
    def exists(cls, job: Job, path: str, size: int, sha256: str) -> Record:
        """A URL whose file was already saved (--skip-existing): `size` bytes at `path`."""
        return cls(
            url=shown_url(job.url),
            ok=True,
            path=path,
            bytes=size,
            sha256=sha256,
            skipped=Skipped.EXISTS,
            source=job.source,
            line=job.line,
            meta=job.meta,
        )

    @classmethod
    def lost(cls, source: str, line: int, url: str, reason: str) -> Record:
        """A job that fetchcli itself lost (its engine process died): fails, saying why."""
        return cls(
            url=shown_url(url),
            ok=False,
            error=reason,
            error_kind=ErrorKind.INTERNAL,
            source=source,
            line=line,
        )

    @classmethod
    def from_json(cls, line: str | builtins.bytes) -> Record:
        """The record a line of JSON (`to_json`'s) holds; fields it does not know are passed
        over. Raises ValueError when the line is not a record."""
        value = json.loads(line)
        if not isinstance(value, dict):
            msg = "not a record: not a JSON object"
            raise ValueError(msg)
        fields = {name: value[name] for name in _FIELDS if name in value}
        if not (
            isinstance(fields.get("url"), str)
            and isinstance(fields.get("ok"), bool)
            and isinstance(fields.get("source", ""), str)
            and type(fields.get("line", 0)) is int
        ):
            msg = "not a record: no url, ok, source or line of the right type"
            raise ValueError(msg)
        if fields.get("error_kind") is not None:
            fields["error_kind"] = ErrorKind(fields["error_kind"])
        if fields.get("skipped") is not None:
            fields["skipped"] = Skipped(fields["skipped"])
        return cls(**fields)

    def to_json(self) -> str:
        """One line of JSON, fields in declaration order; `meta` only when set, so that a
        plain URL list gives the records it always gave (with `etag` and `last_modified`)."""
        fields: dict[str, Any] = {
            "url": self.url,
            "ok": self.ok,
            "status": self.status,
            "path": self.path,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "elapsed": round(self.elapsed, 6),
            "attempts": self.attempts,
            "error": self.error,
            "error_kind": self.error_kind,
            "final_url": self.final_url,
            "content_type": self.content_type,
            "skipped": self.skipped,
            "source": self.source,
            "line": self.line,
            "etag": self.etag,
            "last_modified": self.last_modified,
        }
        if self.meta is not None:
            fields["meta"] = self.meta
        return _ENCODER.encode(fields)


_FIELDS = tuple(field.name for field in dataclasses.fields(Record))
# The fields a repeat's record has of its own (`Record.duplicate`); the rest are its first's.
REPEAT_OWN_FIELDS = frozenset({"url", "elapsed", "attempts", "skipped", "source", "line", "meta"})
