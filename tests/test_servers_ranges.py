"""The FaultServer's ranged routes, seen from http.client: each behaviour must really happen
on the wire (and partial.py must judge it as the issue says), or tests built on them prove
nothing."""

from __future__ import annotations

import gzip
import http.client
import socket
from contextlib import closing

import pytest

from fetchcli.partial import Held, Verdict, continue_headers, update_headers
from tests.helpers import decided
from tests.servers import FaultServer, body_for

SIZE = 200_000


def get(
    server: FaultServer, target: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    with closing(http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)) as conn:
        conn.request(method, target, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def cut_with_headers(
    server: FaultServer, target: str, headers: dict[str, str] | None = None
) -> tuple[dict[str, str], bytes]:
    """GET over a raw socket: the response headers, and what arrived of the body before the
    connection died."""
    lines = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{lines}\r\n".encode())
        data = b""
        try:
            while piece := sock.recv(65536):
                data += piece
        except ConnectionResetError:
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *received = head.decode("latin-1").split("\r\n")
    assert status_line.startswith("HTTP/1.1 "), head
    fields = (line.partition(":") for line in received)
    return {name.strip().lower(): value.strip() for name, _, value in fields}, body


def cut(server: FaultServer, target: str, headers: dict[str, str] | None = None) -> bytes:
    return cut_with_headers(server, target, headers)[1]


def version(target: str, n: int = 1, size: int = SIZE) -> bytes:
    return body_for(f"{target}#{n}", size)


# --- /range ---------------------------------------------------------------------------------


def test_range_serves_the_whole_body_with_validators(server, unique):
    target = f"/range/{unique}/f.bin?size={SIZE}"
    status, headers, body = get(server, target)
    assert (status, body) == (200, version(target))
    assert headers["etag"].startswith('"') and headers["accept-ranges"] == "bytes"
    assert headers["last-modified"].endswith(" GMT")
    assert server.bytes_sent(target) == SIZE


@pytest.mark.parametrize(
    ("spec", "first", "stop"),
    [
        ("bytes=1000-", 1000, SIZE),
        ("bytes=1000-1999", 1000, 2000),
        ("bytes=1000-999999", 1000, SIZE),
        ("bytes=-500", SIZE - 500, SIZE),
        ("bytes=-999999", 0, SIZE),
        ("bytes=0-", 0, SIZE),
    ],
)
def test_range_honours_one_byte_range(server, unique, spec, first, stop):
    target = f"/range/{unique}/f.bin?size={SIZE}"
    status, headers, body = get(server, target, {"Range": spec})
    assert (status, body) == (206, version(target)[first:stop])
    assert headers["content-range"] == f"bytes {first}-{stop - 1}/{SIZE}"
    assert server.bytes_sent(target) == stop - first


@pytest.mark.parametrize("spec", ["bytes=0-1,5-9", "items=0-5", "bytes=9-5", "bytes=x-", "bytes"])
def test_range_ignores_what_it_does_not_do(server, unique, spec):
    target = f"/range/{unique}/f.bin?size=1000"
    assert get(server, target, {"Range": spec})[:1] == (200,)


@pytest.mark.parametrize("spec", [f"bytes={SIZE}-", f"bytes={SIZE + 5}-{SIZE + 9}", "bytes=-0"])
def test_range_beyond_the_end_is_416_with_the_length(server, unique, spec):
    target = f"/range/{unique}/f.bin?size={SIZE}"
    status, headers, body = get(server, target, {"Range": spec})
    assert (status, body, headers["content-range"]) == (416, b"", f"bytes */{SIZE}")


def test_if_range_holds_for_the_strong_etag_or_the_exact_date(server, unique):
    target = f"/range/{unique}/f.bin?size={SIZE}"
    _, headers, _ = get(server, target)
    for validator in (headers["etag"], headers["last-modified"]):
        status, _, body = get(server, target, {"Range": "bytes=10-", "If-Range": validator})
        assert (status, body) == (206, version(target)[10:])
    for validator in ('"other"', "W/" + headers["etag"], "Mon, 01 Jan 2001 00:00:00 GMT"):
        status, _, body = get(server, target, {"Range": "bytes=10-", "If-Range": validator})
        assert (status, body) == (200, version(target))


def test_a_weak_etag_never_satisfies_if_range(server, unique):
    target = f"/range/{unique}/f.bin?size=1000&weak=1"
    _, headers, _ = get(server, target)
    assert headers["etag"].startswith('W/"')
    assert get(server, target, {"Range": "bytes=10-", "If-Range": headers["etag"]})[0] == 200
    assert get(server, target, {"If-None-Match": headers["etag"][2:]})[0] == 304  # weak compare


def test_conditional_requests_give_304_as_rfc_9110_says(server, unique):
    target = f"/range/{unique}/f.bin?size=1000"
    _, headers, _ = get(server, target)
    etag, modified = headers["etag"], headers["last-modified"]
    for request, status in [
        ({"If-None-Match": etag}, 304),
        ({"If-None-Match": f'"x", {etag}'}, 304),
        ({"If-None-Match": "*"}, 304),
        ({"If-None-Match": '"x"'}, 200),
        ({"If-Modified-Since": modified}, 304),
        ({"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}, 304),
        ({"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}, 200),
        ({"If-Modified-Since": "garbage"}, 200),
        # If-None-Match decides when both are sent.
        ({"If-None-Match": '"x"', "If-Modified-Since": modified}, 200),
    ]:
        got, answer, body = get(server, target, request)
        assert (got, request) == (status, request)
        if got == 304:
            assert body == b"" and answer["etag"] == etag


def test_validators_can_be_left_out(server, unique):
    target = f"/range/{unique}/f.bin?size=1000"
    kinds = {"none": set(), "etag": {"etag"}, "date": {"last-modified"}}
    for kind, expected in kinds.items():
        _, headers, _ = get(server, f"{target}&validators={kind}")
        assert {"etag", "last-modified"} & headers.keys() == expected
    none = f"{target}&validators=none"
    assert get(server, none, update_headers('"x"', 4_000_000_000))[0] == 200
    status, headers, _ = get(server, none)
    assert continue_headers(Held.from_response(none, status, headers, 500)) is None


def test_range_over_gzip_counts_encoded_bytes(server, unique):
    target = f"/range/{unique}/f.bin?size={SIZE}&encoding=gzip"
    encoded = gzip.compress(version(target), mtime=0)
    status, headers, body = get(server, target)
    assert (status, body, headers["content-encoding"]) == (200, encoded, "gzip")
    assert headers["etag"].endswith('-gzip"')
    status, headers, body = get(server, target, {"Range": "bytes=1000-"})
    assert (status, body) == (206, encoded[1000:])
    assert headers["content-range"] == f"bytes 1000-{len(encoded) - 1}/{len(encoded)}"


def test_a_failing_attempt_resets_after_half_then_the_rest_comes_by_range(server, unique):
    target = f"/range/{unique}/f.bin?size={SIZE}&fail=1"
    first = cut(server, target)
    assert first == version(target)[: SIZE // 2] and server.bytes_sent(target) == SIZE // 2
    status, _, body = get(server, target, {"Range": f"bytes={len(first)}-"})
    assert status == 206 and first + body == version(target)
    assert server.bytes_sent(target) == SIZE  # nothing twice


def test_cut_and_rate_shape_the_failing_attempt_and_the_body(server, unique):
    target = f"/range/{unique}/f.bin?size=100000&fail=2&cut=1234&rate=100000000"
    assert cut(server, target) == version(target, size=100000)[:1234]
    assert (
        cut(server, target, {"Range": "bytes=1234-"})
        == version(target, size=100000)[1234 : 2 * 1234]
    )
    status, _, body = get(server, target)
    assert (status, body) == (200, version(target, size=100000))


def test_head_gets_the_headers_only(server, unique):
    target = f"/range/{unique}/f.bin?size=1000"
    status, headers, body = get(server, target, method="HEAD")
    assert (status, body, headers["content-length"]) == (200, b"", "1000")
    assert server.bytes_sent(target) == 0


# --- The misbehaving variants, and partial.py's verdicts on them ---------------------------


def test_norange_ignores_range_so_the_client_starts_over(server, unique):
    target = f"/norange/{unique}/f.bin?size={SIZE}&fail=1"
    headers, first = cut_with_headers(server, target)
    assert len(first) == SIZE // 2 and "accept-ranges" not in headers
    held = Held.from_response(server.url(target), 200, headers, len(first))
    status, headers, body = get(server, target, continue_headers(held))
    assert (status, body) == (200, version(target))
    assert decided(held, status, headers).verdict is Verdict.REPLACE


def test_changing_fails_if_range_with_a_full_200_of_the_new_version(server, unique):
    target = f"/changing/{unique}/f.bin?size={SIZE}&fail=1"
    first = cut(server, target)
    assert first == version(target, 1)[: SIZE // 2]
    held = Held(url=target, size=len(first), etag='"v1"', total=SIZE)
    status, headers, body = get(server, target, continue_headers(held))
    assert (status, headers["etag"], body) == (200, '"v2"', version(target, 2))
    decision = decided(held, status, headers)
    assert (decision.verdict, decision.reason) == (Verdict.REPLACE, "the body changed")
    # Without If-Range the Range is honoured, on bytes of another version: why If-Range matters.
    status, headers, body = get(server, target, {"Range": f"bytes={len(first)}-"})
    assert (status, body) == (206, version(target, 3)[len(first) :])
    assert decided(held, status, headers).verdict is Verdict.REFETCH  # its ETag gives it away


def test_wrong_range_starts_every_206_at_zero_and_is_refused(server, unique):
    target = f"/wrong-range/{unique}/f.bin?size={SIZE}"
    status, headers, _ = get(server, target)
    held = Held.from_response(server.url(target), status, headers, 5000)
    status, headers, body = get(server, target, continue_headers(held))
    assert status == 206 and headers["content-range"] == f"bytes 0-{SIZE - 1}/{SIZE}"
    assert body == version(target)
    decision = decided(held, status, headers)
    assert (decision.verdict, decision.reason) == (Verdict.REFETCH, "206 from byte 0, not 5000")


def test_a_416_for_a_complete_body_is_done(server, unique):
    target = f"/range/{unique}/f.bin?size={SIZE}"
    status, headers, _ = get(server, target)
    held = Held.from_response(server.url(target), status, headers, SIZE)
    status, headers, _ = get(server, target, continue_headers(held))
    assert status == 416
    assert decided(held, status, headers).verdict is Verdict.COMPLETE
    assert server.bytes_sent(target) == SIZE


def test_the_within_run_story_sends_at_most_1_1x_the_size(server, unique):
    """Attempt 1 is reset at half; attempt 2 asks for the rest and appends it."""
    target = f"/range/{unique}/f.bin?size={SIZE}&fail=1"
    headers, first = cut_with_headers(server, target)
    held = Held.from_response(server.url(target), 200, headers, len(first))
    assert held.etag is not None and held.total == SIZE
    status, headers, body = get(server, target, continue_headers(held))
    assert decided(held, status, headers).verdict is Verdict.APPEND
    assert first + body == version(target)
    assert server.bytes_sent(target) <= 1.1 * SIZE


def test_bytes_sent_is_reset_with_the_stats(server, unique):
    target = f"/ok/{unique}?size=5000"
    get(server, target)
    assert server.bytes_sent(target) == 5000
    server.reset_stats()
    assert server.bytes_sent(target) == 0


@pytest.mark.parametrize("query", ["validators=all", "encoding=br", "size=x", "rate=-1", "end=x"])
def test_bad_parameters_are_400(server, unique, query):
    assert get(server, f"/range/{unique}/f.bin?{query}")[0] == 400
