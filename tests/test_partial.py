"""Continuing and refreshing, the pure parts: validators, Content-Range, the request for the
rest, the verdict on each answer, sidecars that are never trusted blindly, --update headers."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fetchcli.partial import (
    PARTIAL_SUFFIX,
    SIDECAR_VERSION,
    ContentRange,
    Decision,
    Held,
    Verdict,
    continue_headers,
    decide,
    discard_partial,
    format_http_date,
    hash_file,
    hash_prefix,
    is_strong_etag,
    load_partial,
    parse_content_range,
    parse_etag,
    parse_http_date,
    partial_path,
    read_sidecar,
    set_mtime,
    sidecar_path,
    update_headers,
)
from tests.helpers import decided, put_sidecar

URL = "http://files.test/a.bin"
DATE = "Tue, 14 Nov 2023 22:13:20 GMT"  # 1_700_000_000
LATER = "Wed, 15 Nov 2023 22:13:20 GMT"
ETAG = '"abc-123"'


def held(
    size: int = 400,
    *,
    etag: str | None = ETAG,
    last_modified: str | None = DATE,
    content_encoding: str | None = None,
    total: int | None = 1000,
) -> Held:
    return Held(
        url=URL,
        size=size,
        etag=etag,
        last_modified=last_modified,
        content_encoding=content_encoding,
        total=total,
    )


# --- Validators and dates -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "etag"),
    [
        ('"x"', '"x"'),
        ('  "x"  ', '"x"'),
        ('W/"x"', 'W/"x"'),
        ('""', '""'),
        ('"a-b_c.d/e"', '"a-b_c.d/e"'),
        ("x", None),
        ('"x', None),
        ('"x"y', None),
        ('"a"b"', None),
        ('w/"x"', None),
        ('"x\r\nSet-Cookie: a"', None),
        ('"x y"', None),
        ("", None),
        (None, None),
    ],
)
def test_parse_etag(value, etag):
    assert parse_etag(value) == etag


def test_only_unmarked_well_formed_tags_are_strong():
    assert is_strong_etag('"x"') and is_strong_etag('""')
    assert not is_strong_etag('W/"x"') and not is_strong_etag("x") and not is_strong_etag(None)


@pytest.mark.parametrize(
    "value",
    [
        DATE,
        "Tuesday, 14-Nov-23 22:13:20 GMT",
        "Tue Nov 14 22:13:20 2023",
        f"  {DATE} ",
        DATE[:-3] + "+0000",
    ],
)
def test_parse_http_date_reads_the_three_forms(value):
    assert parse_http_date(value) == 1_700_000_000


@pytest.mark.parametrize(
    "value", [None, "", "yesterday", "Tue, 99 Nov 2023 x", "Tue, 14 Nov 99999 22:13:20 GMT"]
)
def test_parse_http_date_rejects_junk(value):
    assert parse_http_date(value) is None


def test_format_http_date_is_an_imf_fixdate_rounded_down():
    assert format_http_date(1_700_000_000.9) == DATE
    assert parse_http_date(format_http_date(1_234_567_890)) == 1_234_567_890


# --- Content-Range ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("bytes 0-499/1000", ContentRange(0, 499, 1000)),
        ("bytes 400-999/1000", ContentRange(400, 999, 1000)),
        ("BYTES 400-999/1000", ContentRange(400, 999, 1000)),
        ("  bytes   400-999/1000 ", ContentRange(400, 999, 1000)),
        ("bytes 400-999/*", ContentRange(400, 999, None)),
        ("bytes */1000", ContentRange(None, None, 1000)),
        ("bytes 0-0/1", ContentRange(0, 0, 1)),
    ],
)
def test_parse_content_range(value, parsed):
    assert parse_content_range(value) == parsed


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "bytes */*",
        "bytes 500-400/1000",  # last before first
        "bytes 0-1000/1000",  # last beyond the end
        "bytes 0-499",
        "bytes=0-499/1000",
        "items 0-4/10",
        "bytes -5-9/10",
        "bytes 0-4/10, 5-9/10",
        "bytes 0x1-4/10",
        "bytes \uff10-4/10",  # a fullwidth digit, which \d and int() would take
    ],
)
def test_parse_content_range_rejects_the_malformed_and_impossible(value):
    assert parse_content_range(value) is None


def test_content_range_length():
    assert ContentRange(400, 999, 1000).length == 600
    assert ContentRange(None, None, 1000).length == 0


@given(first=st.integers(0, 10**12), length=st.integers(1, 10**9), extra=st.integers(0, 10**9))
def test_parse_content_range_round_trips(first, length, extra):
    last, total = first + length - 1, first + length + extra
    assert parse_content_range(f"bytes {first}-{last}/{total}") == ContentRange(first, last, total)


# --- Held and the request for the rest ------------------------------------------------------


def test_held_from_a_200_keeps_strong_validators_and_the_length():
    headers = {
        "ETag": ETAG,
        "Last-Modified": DATE,
        "Date": LATER,
        "Content-Length": "1000",
        "Content-Type": "application/octet-stream",
    }
    assert Held.from_response(URL, 200, headers, 400) == held()


def test_held_from_a_206_takes_the_total_of_its_content_range():
    headers = {"etag": ETAG, "content-range": "bytes 400-999/1000", "content-length": "600"}
    got = Held.from_response(URL, 206, headers)
    assert got.total == 1000 and got.size == 0 and got.last_modified is None


def test_held_drops_a_date_as_new_as_the_response_and_any_malformed_validator():
    headers = {"ETag": "junk", "Last-Modified": DATE, "Date": DATE, "Content-Length": "10"}
    got = Held.from_response(URL, 200, headers, 5)
    assert got.etag is None and got.last_modified is None and continue_headers(got) is None
    assert Held.from_response(URL, 200, {"Last-Modified": "soon"}).last_modified is None


def test_held_has_no_total_for_a_chunked_body_and_normalises_the_encoding():
    headers = {"Transfer-Encoding": "chunked", "Content-Length": "5", "Content-Encoding": " GZIP"}
    got = Held.from_response(URL, 200, headers)
    assert got.total is None and got.content_encoding == "gzip"
    assert Held.from_response(URL, 200, {"Content-Encoding": "identity"}).content_encoding is None


def test_held_at_moves_only_the_size():
    assert held(10).at(700) == held(700)


def test_continue_asks_for_the_rest_under_the_strong_etag():
    assert continue_headers(held()) == {"Range": "bytes=400-", "If-Range": ETAG}


def test_continue_falls_back_to_the_date_without_a_strong_etag():
    expected = {"Range": "bytes=400-", "If-Range": DATE}
    assert continue_headers(held(etag=None)) == expected
    assert continue_headers(held(etag='W/"weak"')) == expected


@pytest.mark.parametrize(
    "value",
    [
        held(0),  # nothing held
        held(1001),  # more than the body has
        held(etag=None, last_modified=None),  # nothing to check the rest against
        held(etag='W/"weak"', last_modified=None),  # a weak tag may not go in If-Range
        held(etag=None, content_encoding="gzip"),  # encoded: only a strong tag names the bytes
        held(etag='W/"weak"', content_encoding="gzip"),
    ],
)
def test_continue_starts_over_when_in_doubt(value):
    assert continue_headers(value) is None


def test_continue_an_encoded_body_under_a_strong_etag():
    assert continue_headers(held(content_encoding="gzip")) == {
        "Range": "bytes=400-",
        "If-Range": ETAG,
    }


def test_continue_without_a_known_total_and_when_all_is_held():
    assert continue_headers(held(total=None)) == {"Range": "bytes=400-", "If-Range": ETAG}
    # All of it held: the request is still made, and its 416 will say "done".
    assert continue_headers(held(1000)) == {"Range": "bytes=1000-", "If-Range": ETAG}


# --- The verdict ----------------------------------------------------------------------------


def rest(
    first: int = 400,
    last: int = 999,
    total: int | str = 1000,
    *,
    etag: str | None = ETAG,
    content_length: str | None = None,
    content_encoding: str | None = None,
) -> dict[str, str]:
    """The headers of a 206 for bytes first-last; a header given as None is left out."""
    values = {
        "Content-Range": f"bytes {first}-{last}/{total}",
        "ETag": etag,
        "Content-Length": content_length or str(last - first + 1),
        "Content-Encoding": content_encoding,
    }
    return {name: value for name, value in values.items() if value is not None}


def test_206_exactly_the_rest_is_appended():
    assert decide(held(), 206, rest()) == Decision(Verdict.APPEND, "the rest from byte 400", 1000)
    assert decided(held(total=None), 206, rest()).verdict is Verdict.APPEND
    lower = {k.lower(): v for k, v in rest().items()}
    assert decided(held(), 206, lower).verdict is Verdict.APPEND


def test_206_under_the_date_is_appended_when_the_date_agrees():
    by_date = held(etag=None)
    assert decided(by_date, 206, rest(etag=None) | {"Last-Modified": DATE}).verdict == "append"
    headers = {"Content-Range": "bytes 400-999/1000"}
    assert decided(by_date, 206, headers).verdict is Verdict.APPEND
    assert decided(by_date, 206, headers | {"Last-Modified": LATER}).verdict is Verdict.REFETCH


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (rest(0, 999), "206 from byte 0, not 400"),
        (rest(500, 999), "206 from byte 500, not 400"),
        (rest(400, 799), "206 that does not run to the end of the body"),
        (rest(total="*"), "206 that does not run to the end of the body"),
        (rest(400, 1099, 1100), "206 of a 1100-byte body, not 1000"),
        (rest(content_length="599"), "206 whose Content-Length and Content-Range differ"),
        (rest(etag='"other"'), "206 under another ETag"),
        (rest(content_encoding="gzip"), "206 in another Content-Encoding"),
        (
            {"Content-Type": "multipart/byteranges; boundary=x"},
            "206 without a usable Content-Range",
        ),
        ({"Content-Range": "bytes */1000"}, "206 without a usable Content-Range"),
        ({"Content-Range": "bytes 400-999/900"}, "206 without a usable Content-Range"),
    ],
)
def test_any_other_206_asks_again_from_byte_0(headers, reason):
    decision = decide(held(), 206, headers)
    assert decision is not None
    assert (decision.verdict, decision.reason) == (Verdict.REFETCH, reason)


def test_an_encoded_body_continues_only_in_the_same_encoding():
    gz = held(content_encoding="gzip")
    assert decided(gz, 206, rest(content_encoding="gzip")).verdict is Verdict.APPEND
    assert decided(gz, 206, rest(content_encoding="GZip")).verdict is Verdict.APPEND
    assert decided(gz, 206, rest()).verdict is Verdict.REFETCH
    assert decided(gz, 206, rest(content_encoding="br")).verdict is Verdict.REFETCH
    plain = held()
    assert decided(plain, 206, rest(content_encoding="identity")).verdict == "append"


def test_200_replaces_saying_why():
    changed = decide(held(), 200, {"ETag": '"v2"', "Content-Length": "1200"})
    assert changed == Decision(Verdict.REPLACE, "the body changed", 1200)
    ignored = decide(held(), 200, {"ETag": ETAG})
    assert ignored == Decision(Verdict.REPLACE, "the server ignored the Range", None)


def test_416_for_exactly_what_is_held_is_complete():
    done = held(1000)
    assert decide(done, 416, {"Content-Range": "bytes */1000"}) == Decision(
        Verdict.COMPLETE, "everything is held already", 1000
    )
    assert decided(done, 416, {"content-range": "bytes */1000", "etag": ETAG}).verdict == "complete"
    assert decided(held(1000, total=None), 416, {"Content-Range": "bytes */1000"}).verdict == (
        "complete"
    )


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (held(1000), {}, "416 without a total length"),
        (held(1000), {"Content-Range": "bytes */*"}, "416 without a total length"),
        (held(1000), {"Content-Range": "bytes */900"}, "416 for a body of 900 bytes, 1000 held"),
        (held(400), {"Content-Range": "bytes */1000"}, "416 for a body of 1000 bytes, 400 held"),
        (
            held(1200, total=None),
            {"Content-Range": "bytes */1000"},
            "416 for a body of 1000 bytes, 1200 held",
        ),
        (
            held(1000, total=1200),
            {"Content-Range": "bytes */1000"},
            "416 for a body of 1000 bytes, 1000 held",
        ),
        (held(1000), {"Content-Range": "bytes */1000", "ETag": '"new"'}, "416 under another ETag"),
    ],
)
def test_any_other_416_asks_again_from_byte_0(value, headers, reason):
    decision = decide(value, 416, headers)
    assert decision is not None
    assert (decision.verdict, decision.reason) == (Verdict.REFETCH, reason)


@pytest.mark.parametrize("status", [204, 304, 301, 404, 412, 429, 500, 503])
def test_other_statuses_are_for_the_caller_as_without_a_range(status):
    assert decide(held(), status, {}) is None


# --- Names, sidecars, loading ---------------------------------------------------------------


def test_the_kept_names_are_stable_and_never_a_run_temp_name(tmp_path):
    target = tmp_path / "host_80" / "a.bin"
    assert partial_path(target) == tmp_path / "host_80" / f".a.bin{PARTIAL_SUFFIX}"
    assert sidecar_path(partial_path(target)).name == ".a.bin.fetchcli-partial.json"
    # A run's temporary files all end with ".fetchcli-part" (sink.TEMP_SUFFIX).
    assert not partial_path(target).name.endswith(".fetchcli-part")
    assert not sidecar_path(partial_path(target)).name.endswith(".fetchcli-part")


def keep(tmp_path: Path, body: bytes, value: Held) -> Path:
    partial = partial_path(tmp_path / "a.bin")
    partial.write_bytes(body)
    put_sidecar(sidecar_path(partial), value)
    return partial


def test_a_sidecar_round_trips_and_leaves_no_temporary_file(tmp_path):
    value = held(content_encoding="gzip")
    path = tmp_path / "s.json"
    put_sidecar(path, value)
    assert read_sidecar(path, URL) == value
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]
    document = json.loads(path.read_text())
    assert document["fetchcli_partial"] == SIDECAR_VERSION and document["held"] == 400


def test_a_sidecar_is_replaced_atomically(tmp_path):
    path = tmp_path / "s.json"
    put_sidecar(path, held(100))
    inode = path.stat().st_ino
    put_sidecar(path, held(900))
    assert read_sidecar(path, URL) == held(900) and path.stat().st_ino != inode


def good_document() -> dict:
    return {
        "fetchcli_partial": SIDECAR_VERSION,
        "url": URL,
        "held": 400,
        "etag": ETAG,
        "last_modified": DATE,
        "content_encoding": None,
        "total": 1000,
    }


@pytest.mark.parametrize(
    "change",
    [
        {"fetchcli_partial": 2},
        {"fetchcli_partial": None},
        {"url": "http://files.test/other.bin"},
        {"held": -1},
        {"held": "400"},
        {"held": True},
        {"held": 4.0},
        {"total": 399},
        {"total": "1000"},
        {"etag": "unquoted"},
        {"etag": '"x"\r\nX-Injected: 1'},
        {"etag": 5},
        {"last_modified": "not a date"},
        {"last_modified": DATE + "\r\nX: y"},
        {"content_encoding": "gzip\r\nX: y"},
        {"content_encoding": 1},
    ],
)
def test_a_sidecar_with_anything_wrong_is_ignored(tmp_path, change):
    path = tmp_path / "s.json"
    assert read_sidecar(path, URL) is None  # missing
    path.write_text(json.dumps(good_document()))
    assert read_sidecar(path, URL) == held()
    path.write_text(json.dumps(good_document() | change))
    assert read_sidecar(path, URL) is None


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"[]", b"null", b'"text"', b"\xff\xfe", b"{}", b" " * (65 * 1024) + b"{}"],
)
def test_a_corrupt_or_foreign_sidecar_is_ignored(tmp_path, data):
    path = tmp_path / "s.json"
    path.write_bytes(data)
    assert read_sidecar(path, URL) is None


def test_a_sidecar_that_is_a_directory_or_a_link_is_ignored(tmp_path):
    (tmp_path / "dir.json").mkdir()
    assert read_sidecar(tmp_path / "dir.json", URL) is None
    real = tmp_path / "real.json"
    put_sidecar(real, held())
    (tmp_path / "link.json").symlink_to(real)
    assert read_sidecar(tmp_path / "link.json", URL) is None


def test_load_partial_holds_what_the_file_holds(tmp_path):
    partial = keep(tmp_path, b"x" * 400, held(400))
    assert load_partial(partial, URL) == held(400)


def test_load_partial_counts_bytes_that_came_after_the_sidecar(tmp_path):
    # Killed after more writes than the last recorded count: the file's prefix is good.
    partial = keep(tmp_path, b"x" * 650, held(400))
    assert load_partial(partial, URL) == held(650)


@pytest.mark.parametrize(
    ("body", "value"),
    [
        (b"x" * 399, held(400)),  # shorter than recorded: something truncated it
        (b"x" * 1001, held(400)),  # longer than the whole body
        (b"x" * 400, held(400, content_encoding="gzip")),  # stored decoded: offsets unknown
    ],
)
def test_load_partial_refuses_what_cannot_be_continued(tmp_path, body, value):
    assert load_partial(keep(tmp_path, body, value), URL) is None


def test_load_partial_refuses_a_missing_file_a_link_and_another_url(tmp_path):
    partial = keep(tmp_path, b"x" * 400, held())
    assert load_partial(partial, "http://files.test/b.bin") is None
    outside = tmp_path / "outside"
    outside.write_bytes(b"x" * 400)
    partial.unlink()
    assert load_partial(partial, URL) is None
    partial.symlink_to(outside)
    assert load_partial(partial, URL) is None


def test_discard_partial_removes_both_and_tolerates_neither(tmp_path):
    partial = keep(tmp_path, b"x", held(1))
    discard_partial(partial)
    assert list(tmp_path.iterdir()) == []
    discard_partial(partial)


def test_hash_prefix_hashes_exactly_the_first_bytes(tmp_path):
    path = tmp_path / "f"
    data = os.urandom(3 * 1024 * 1024 + 5)
    path.write_bytes(data)
    digest = hash_prefix(path, 2 * 1024 * 1024 + 1)
    assert digest.hexdigest() == hashlib.sha256(data[: 2 * 1024 * 1024 + 1]).hexdigest()
    digest.update(data[2 * 1024 * 1024 + 1 :])
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert hash_prefix(path, 0).hexdigest() == hashlib.sha256().hexdigest()
    with pytest.raises(OSError, match="holds"):
        hash_prefix(path, len(data) + 1)


# --- --update -----------------------------------------------------------------------------


def test_hash_file_hashes_a_regular_file_and_refuses_anything_else(tmp_path):
    data = os.urandom(2 * 1024 * 1024 + 3)
    (tmp_path / "f").write_bytes(data)
    assert hash_file(tmp_path / "f") == (len(data), hashlib.sha256(data).hexdigest())
    directory = os.open(tmp_path, os.O_RDONLY)
    try:
        assert hash_file("f", dir_fd=directory) == hash_file(tmp_path / "f")
    finally:
        os.close(directory)
    (tmp_path / "link").symlink_to(tmp_path / "f")
    os.mkfifo(tmp_path / "fifo")  # refused at once, not waited on for a writer
    for name in ("link", "fifo", "missing", "."):
        with pytest.raises(OSError):
            hash_file(tmp_path / name)


def test_update_headers_from_the_records_etag_and_the_file_mtime():
    assert update_headers(ETAG, 1_700_000_000.5) == {
        "If-None-Match": ETAG,
        "If-Modified-Since": DATE,
    }
    assert update_headers('W/"weak"', None) == {"If-None-Match": 'W/"weak"'}
    assert update_headers(None, 1_700_000_000) == {"If-Modified-Since": DATE}


@pytest.mark.parametrize(
    ("etag", "mtime"),
    [(None, None), ("unquoted", None), ('"x"\r\nX: y', None), (None, 0), (None, float("nan"))],
)
def test_update_headers_send_nothing_unsound(etag, mtime):
    assert update_headers(etag, mtime) == {}


def test_set_mtime_from_last_modified_by_path_and_by_descriptor(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    assert set_mtime(path, DATE) is True
    assert path.stat().st_mtime == 1_700_000_000
    fd = os.open(path, os.O_RDONLY)
    try:
        assert set_mtime(fd, LATER) is True
    finally:
        os.close(fd)
    assert path.stat().st_mtime == 1_700_086_400
    assert set_mtime(path, None) is False and set_mtime(path, "garbage") is False
    assert path.stat().st_mtime == 1_700_086_400
    # And the If-Modified-Since of the next --update is that very date.
    assert update_headers(None, path.stat().st_mtime) == {"If-Modified-Since": LATER}
