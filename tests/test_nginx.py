"""The nginx fixture itself (Range, If-Range, 304, the access log), and partial.py's verdicts on
nginx's real answers: the reference server and our rules must agree."""

from __future__ import annotations

import http.client
import os
import socket
from contextlib import closing

import pytest

from fetchcli.partial import (
    Held,
    Verdict,
    continue_headers,
    decide,
    parse_http_date,
    set_mtime,
    update_headers,
)
from tests.nginx import Nginx
from tests.servers import body_for

MTIME = 1_600_000_000
SIZE = 300_000


def get(
    nginx: Nginx, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    with closing(http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=10)) as conn:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body


@pytest.fixture
def served(nginx: Nginx, unique: str) -> tuple[str, bytes]:
    """A file of SIZE bytes only this test uses: (its path, its bytes)."""
    data = body_for(unique, SIZE)
    return nginx.put(f"{unique}/file.bin", data, mtime=MTIME), data


def test_a_plain_get_has_strong_validators_and_is_logged(nginx, served):
    path, data = served
    status, headers, body = get(nginx, path)
    assert (status, body) == (200, data)
    assert headers["etag"].startswith('"') and headers["accept-ranges"] == "bytes"
    assert parse_http_date(headers["last-modified"]) == MTIME
    (entry,) = nginx.wait_for(path)
    assert (entry.method, entry.status, entry.body_bytes_sent) == ("GET", 200, SIZE)
    assert entry.bytes_sent > SIZE and entry.range == entry.if_range == ""


def test_range_gives_206_with_the_rest_and_the_log_shows_it(nginx, served):
    path, data = served
    status, headers, body = get(nginx, path, {"Range": "bytes=100000-"})
    assert (status, body) == (206, data[100000:])
    assert headers["content-range"] == f"bytes 100000-{SIZE - 1}/{SIZE}"
    (entry,) = nginx.wait_for(path)
    assert entry.status == 206 and entry.range == "bytes=100000-"
    assert entry.body_bytes_sent == SIZE - 100000


def test_if_none_match_gives_304_and_is_logged(nginx, served):
    path, _ = served
    _, headers, _ = get(nginx, path)
    status, again, body = get(nginx, path, {"If-None-Match": headers["etag"]})
    assert (status, body) == (304, b"") and again["etag"] == headers["etag"]
    entries = nginx.wait_for(path, 2)
    assert entries[1].status == 304 and entries[1].if_none_match == headers["etag"]
    assert entries[1].body_bytes_sent == 0
    status, _, _ = get(nginx, path, {"If-None-Match": '"something-else"'})
    assert status == 200


def test_if_modified_since_is_not_newer_than_the_file(nginx, served):
    path, _ = served
    older = "Sat, 12 Sep 2020 12:26:40 GMT"
    assert get(nginx, path, update_headers(None, MTIME))[0] == 304
    assert get(nginx, path, update_headers(None, MTIME + 3600))[0] == 304
    assert get(nginx, path, {"If-Modified-Since": older})[0] == 200
    assert nginx.wait_for(path, 3)[2].if_modified_since == older


# --- partial.py against the reference ------------------------------------------------------


def first_part(nginx: Nginx, path: str, size: int) -> Held:
    """What a client holds after a first attempt that got `size` bytes of a 200."""
    status, headers, _ = get(nginx, path)
    assert status == 200
    return Held.from_response(nginx.url(path), status, headers, size)


def test_the_rest_under_if_range_is_appended_and_nothing_is_sent_twice(nginx, served):
    path, data = served
    held = first_part(nginx, path, 120_000)
    request = continue_headers(held)
    assert request == {"Range": "bytes=120000-", "If-Range": held.etag}
    status, headers, body = get(nginx, path, request)
    decision = decide(held, status, headers)
    assert decision is not None and decision.verdict is Verdict.APPEND
    assert data[:120_000] + body == data
    entries = nginx.wait_for(path, 2)
    assert entries[1].if_range == held.etag and entries[1].body_bytes_sent == SIZE - 120_000


def test_a_changed_file_fails_if_range_and_is_replaced(nginx, served, unique):
    path, _ = served
    held = first_part(nginx, path, 120_000)
    changed = body_for(unique + "-v2", SIZE)
    nginx.put(path.lstrip("/"), changed, mtime=MTIME + 60)
    status, headers, body = get(nginx, path, continue_headers(held))
    decision = decide(held, status, headers)
    assert decision is not None and decision.verdict is Verdict.REPLACE
    assert decision.reason == "the body changed" and (status, body) == (200, changed)


def test_if_range_by_date_when_there_is_no_etag(nginx, served):
    path, data = served
    held = first_part(nginx, path, 1000)
    by_date = Held(url=held.url, size=1000, last_modified=held.last_modified, total=SIZE)
    status, headers, body = get(nginx, path, continue_headers(by_date))
    decision = decide(by_date, status, headers)
    assert decision is not None and decision.verdict is Verdict.APPEND and body == data[1000:]


def test_asking_beyond_a_complete_file_is_a_416_that_means_done(nginx, served):
    path, _ = served
    held = first_part(nginx, path, SIZE)
    status, headers, _ = get(nginx, path, continue_headers(held))
    assert status == 416 and headers["content-range"] == f"bytes */{SIZE}"
    decision = decide(held, status, headers)
    assert decision is not None and decision.verdict is Verdict.COMPLETE
    bigger = held.at(SIZE + 10)
    assert continue_headers(bigger) is None  # more than the body: start over, ask nothing


def test_gzip_on_the_fly_is_never_continued(nginx, served):
    path, _ = served
    status, headers, _ = get(nginx, "/gzip" + path, {"Accept-Encoding": "gzip"})
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert headers["etag"].startswith('W/"')  # nginx weakens the tag of what it recodes
    held = Held.from_response(nginx.url("/gzip" + path), status, headers, 5000)
    assert continue_headers(held) is None
    ranged = {"Accept-Encoding": "gzip", "Range": "bytes=5000-"}
    assert get(nginx, "/gzip" + path, ranged)[0] == 200  # and it would not range it anyway


def test_update_with_the_saved_mtime_gets_304_until_the_file_changes(nginx, served, tmp_path):
    path, data = served
    _, headers, body = get(nginx, path)
    saved = tmp_path / "file.bin"
    saved.write_bytes(body)
    assert set_mtime(saved, headers["last-modified"])
    request = update_headers(headers["etag"], saved.stat().st_mtime)
    assert get(nginx, path, request)[0] == 304
    assert get(nginx, path, update_headers(None, saved.stat().st_mtime))[0] == 304
    nginx.put(path.lstrip("/"), data[::-1], mtime=MTIME + 7200)
    assert get(nginx, path, request)[0] == 200


def test_slow_location_sends_little_before_an_interruption(nginx, unique):
    path = nginx.put(f"{unique}/big.bin", body_for(unique, 1 << 20))
    uri = f"/slow{path}?rate=64k"
    with socket.create_connection(("127.0.0.1", nginx.port), timeout=10) as sock:
        sock.sendall(f"GET {uri} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        received = b""
        while len(received) < 16 * 1024:
            piece = sock.recv(65536)
            assert piece
            received += piece
    (entry,) = nginx.wait_for(uri)
    # At 64 KiB/s nginx needs 8 s to send half; the client left after ~16 KiB.
    assert entry.status == 200 and 16 * 1024 <= entry.body_bytes_sent < (1 << 20) // 2


def test_files_with_unusual_names_are_served(nginx, unique):
    path = nginx.put(f"{unique}/a b~c.bin", b"spaced", mtime=MTIME)
    status, _, body = get(nginx, path.replace(" ", "%20"))
    assert (status, body) == (200, b"spaced")


def test_nginx_runs_in_its_own_directory_and_reports_no_error(nginx):
    assert nginx.running
    assert (nginx.work / "nginx.pid").read_text().strip().isdigit()
    assert not nginx.errors("crit")
    assert os.path.commonpath([nginx.root, nginx.work]) == str(nginx.work)
