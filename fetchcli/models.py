"""The records that cross module lines: a job to fetch, and what happened to it."""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx

__all__ = ["Job", "Record"]


@dataclass(frozen=True, slots=True)
class Job:
    """One usable URL from one input line."""

    source: str
    line: int
    url: str  # as written in the input, for the record
    parsed: httpx.URL


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """What happened to one input line; one JSONL object.

    `ok` is true when the body was fetched with a 2xx status (or the line needed no fetch:
    `skipped` says why). `error` is null or a short message; `error_kind` a stable word.
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
    error_kind: str | None = None
    final_url: str | None = None
    content_type: str | None = None
    skipped: str | None = None  # "duplicate" | "exists"
    source: str = "-"
    line: int = 0

    @classmethod
    def lost(cls, source: str, line: int, url: str, reason: str) -> Record:
        """The record of a job whose engine went away before it finished."""
        return cls(url=url, ok=False, error=reason, error_kind="internal", source=source, line=line)

    def to_json(self) -> str:
        """One line of JSON, fields in declaration order."""
        return json.dumps(
            {
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
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )
