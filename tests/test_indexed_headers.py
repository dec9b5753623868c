"""IndexedHeaders answers every lookup as httpx's own Headers does, before and after changes."""

from __future__ import annotations

import httpx
import pytest

from fetchcli.client import IndexedHeaders

RAW = [
    (b"Content-Type", b"text/plain"),
    (b"Set-Cookie", b"a=1"),
    (b"set-cookie", b"b=2"),
    (b"ETag", b'"x"'),
]


def pair() -> tuple[httpx.Headers, IndexedHeaders]:
    return httpx.Headers(RAW), IndexedHeaders(RAW)


@pytest.mark.parametrize("name", ["content-type", "Set-Cookie", "ETAG", "missing"])
def test_lookups_match_httpx(name: str) -> None:
    plain, indexed = pair()
    assert indexed.get(name) == plain.get(name)
    assert (name in indexed) == (name in plain)
    assert indexed.get_list(name) == plain.get_list(name)
    if name == "missing":
        with pytest.raises(KeyError):
            indexed[name]


def test_repeated_headers_are_joined_as_httpx_joins_them() -> None:
    assert IndexedHeaders(RAW)["set-cookie"] == "a=1, b=2"


def test_a_change_after_a_lookup_is_seen() -> None:
    plain, indexed = pair()
    for headers in (plain, indexed):
        assert headers.get("etag") == '"x"'
        headers["ETag"] = '"y"'
        del headers["content-type"]
        headers.update({"Location": "/z"})
    assert indexed.get("etag") == plain.get("etag") == '"y"'
    assert "content-type" not in indexed
    assert indexed.get("location") == plain.get("location") == "/z"
    assert indexed.multi_items() == plain.multi_items()


def test_a_response_keeps_them() -> None:
    response = httpx.Response(200)
    response.headers = IndexedHeaders(RAW)
    assert response.headers.get("content-type") == "text/plain"
