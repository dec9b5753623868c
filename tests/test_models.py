"""Record's named constructors: each kind of outcome carries exactly its fields, in JSONL."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fetchcli.errors import PermanentError, TransientError
from fetchcli.kinds import ErrorKind, Skipped
from fetchcli.models import Expectation, Job, Record, shown_url
from tests.helpers import job

URL = "http://example.test/a"
EMPTY: dict[str, Any] = {
    "url": URL,
    "ok": False,
    "status": None,
    "path": None,
    "bytes": 0,
    "sha256": None,
    "elapsed": 0.0,
    "attempts": 0,
    "error": None,
    "error_kind": None,
    "final_url": None,
    "content_type": None,
    "skipped": None,
    "source": "-",
    "line": 3,
    "etag": None,
    "last_modified": None,
}


def as_json(record: Record) -> dict[str, Any]:
    line = record.to_json()
    assert "\n" not in line
    decoded: dict[str, Any] = json.loads(line)
    assert list(decoded) == list(EMPTY)  # every field, always, in this order
    return decoded


def test_succeeded():
    record = Record.succeeded(
        job(URL, line=3),
        status=200,
        path="out/example.test/a",
        size=5,
        sha256="ab" * 32,
        final_url=URL + "/b",
        content_type="text/plain",
        attempts=2,
        elapsed=0.25,
    )
    assert as_json(record) == EMPTY | {
        "ok": True,
        "status": 200,
        "path": "out/example.test/a",
        "bytes": 5,
        "sha256": "ab" * 32,
        "elapsed": 0.25,
        "attempts": 2,
        "final_url": URL + "/b",
        "content_type": "text/plain",
    }


def test_succeeded_carries_the_validators_at_the_end():
    record = Record.succeeded(
        job(URL, line=3),
        status=200,
        path="out/example.test/a",
        size=5,
        sha256="ab" * 32,
        final_url=URL,
        content_type=None,
        attempts=1,
        elapsed=0.5,
        etag='W/"x"',
        last_modified="Sun, 13 Sep 2020 12:26:40 GMT",
    )
    decoded = as_json(record)
    assert list(decoded)[-2:] == ["etag", "last_modified"]
    assert (decoded["etag"], decoded["last_modified"]) == (
        'W/"x"',
        "Sun, 13 Sep 2020 12:26:40 GMT",
    )


def test_not_modified_is_ok_with_the_saved_file():
    record = Record.succeeded(
        job(URL, line=3),
        status=304,
        path="out/example.test/a",
        size=4,
        sha256="cd" * 32,
        final_url=URL,
        content_type=None,
        attempts=1,
        elapsed=0.1,
        etag='"v1"',
        skipped=Skipped.NOT_MODIFIED,
    )
    assert as_json(record) == EMPTY | {
        "ok": True,
        "status": 304,
        "path": "out/example.test/a",
        "bytes": 4,
        "sha256": "cd" * 32,
        "elapsed": 0.1,
        "attempts": 1,
        "final_url": URL,
        "skipped": "not_modified",
        "etag": '"v1"',
    }


def test_failed_carries_the_error_its_kind_and_status():
    error = TransientError(ErrorKind.TRUNCATED, "body cut short: 1,000 of 2,000 bytes", status=200)
    record = Record.failed(job(URL, line=3), error, attempts=4, elapsed=1.5)
    assert record.error_kind is ErrorKind.TRUNCATED
    assert as_json(record) == EMPTY | {
        "status": 200,
        "elapsed": 1.5,
        "attempts": 4,
        "error": "body cut short: 1,000 of 2,000 bytes",
        "error_kind": "truncated",
    }
    refused = Record.failed(
        job(URL, 3), PermanentError(ErrorKind.HTTP, "HTTP 404", status=404), 1, 0
    )
    assert as_json(refused)["status"] == 404


def test_invalid_keeps_the_line_as_read():
    record = Record.invalid("urls.txt", 3, "ftp://x", "unsupported scheme 'ftp'")
    assert as_json(record) == EMPTY | {
        "url": "ftp://x",
        "error": "unsupported scheme 'ftp'",
        "error_kind": "invalid_url",
        "source": "urls.txt",
    }


def test_failed_carries_the_url_that_answered():
    error = PermanentError(ErrorKind.HTTP, "HTTP 403 Forbidden", status=403)
    error.final_url = URL + "/moved"
    record = Record.failed(job(URL, line=3), error, attempts=1, elapsed=0.5)
    assert as_json(record)["final_url"] == URL + "/moved"


def test_a_duplicate_carries_its_originals_outcome_as_its_own_line():
    error = PermanentError(ErrorKind.HTTP, "HTTP 404 Not Found", status=404)
    error.final_url = URL
    failed = Record.failed(job(URL, line=1), error, attempts=2, elapsed=0.5)
    repeat = Record.duplicate("urls.txt", 3, URL + "#again", failed)
    assert as_json(repeat) == as_json(failed) | {
        "url": URL + "#again",
        "elapsed": 0.0,
        "attempts": 0,
        "skipped": "duplicate",
        "source": "urls.txt",
        "line": 3,
    }
    exists = Record.exists(job(URL, line=1), "out/example.test/a", 4, "cd" * 32)
    again = Record.duplicate("-", 3, URL, exists)
    assert as_json(again) == as_json(exists) | {"skipped": "duplicate", "line": 3}


def test_exists_carries_the_files_size_and_digest():
    exists = Record.exists(job(URL, line=3), "out/example.test/a", 4, "cd" * 32)
    assert exists.skipped is Skipped.EXISTS
    assert as_json(exists) == EMPTY | {
        "ok": True,
        "path": "out/example.test/a",
        "bytes": 4,
        "sha256": "cd" * 32,
        "skipped": "exists",
    }


def test_lost():
    record = Record.lost("urls.txt", 3, URL, "engine process died (exit -9)")
    assert as_json(record) == EMPTY | {
        "error": "engine process died (exit -9)",
        "error_kind": "internal",
        "source": "urls.txt",
    }


def test_a_password_in_a_url_never_reaches_a_record():
    secret = job("https://alice:s3cret@example.test/a")
    failed = Record.failed(secret, PermanentError(ErrorKind.HTTP, "HTTP 404", status=404), 1, 0.1)
    invalid = Record.invalid("-", 2, "ftp://bob:pw@example.test/", "unsupported scheme")
    assert failed.url == "https://***@example.test/a" and "s3cret" not in failed.to_json()
    assert invalid.url == "ftp://***@example.test/"
    assert shown_url("https://example.test/a@b?c=d@e") == "https://example.test/a@b?c=d@e"
    assert shown_url("https://token@example.test/") == "https://***@example.test/"


def test_a_rows_other_columns_come_back_as_meta_and_plain_records_have_none():
    row = job(URL, line=3)
    with_meta = Job(row.source, row.line, row.url, row.parsed, Expectation(meta={"caption": "é"}))
    record = Record.failed(with_meta, PermanentError(ErrorKind.HTTP, "HTTP 404", status=404), 1, 0)
    assert json.loads(record.to_json())["meta"] == {"caption": "é"}
    # A repeat has its own row's columns, not its first's.
    assert "meta" not in json.loads(Record.duplicate("-", 4, URL, record).to_json())
    again = Record.duplicate("-", 5, URL, record, {"caption": "è"})
    assert json.loads(again.to_json())["meta"] == {"caption": "è"}


def test_a_record_read_back_from_its_json_is_the_same_record():
    row = Job("rows.csv", 4, "https://a.test/x", job("https://a.test/x").parsed,
              expect=Expectation(meta={"caption": "é"}))  # fmt: skip
    failed = Record.failed(row, PermanentError(ErrorKind.HTTP, "HTTP 404", status=404), 2, 0.5)
    kept = Record.succeeded(
        row, status=304, path="out/x", size=3, sha256="ab" * 32, final_url=row.url,
        content_type=None, attempts=1, elapsed=0.25, etag='"e"', skipped=Skipped.NOT_MODIFIED,
    )  # fmt: skip
    for original in (failed, kept, Record.invalid("-", 1, "nope", "not a URL")):
        again = Record.from_json(original.to_json())
        assert again == original
        assert isinstance(again.error_kind, ErrorKind | None)
        assert isinstance(again.skipped, Skipped | None)
    # Unknown fields (a later version's) are passed over; what is not a record is refused.
    assert Record.from_json('{"url":"u","ok":true,"new":1}') == Record(url="u", ok=True)
    for line in (
        "[1]",
        '{"ok":true}',
        '{"url":"u","ok":"yes"}',
        '{"url":"u","ok":true,"line":"7"}',
    ):
        with pytest.raises(ValueError):
            Record.from_json(line)
