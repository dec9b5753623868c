"""parse_url gives the URL httpx.URL gives, or the same InvalidURL, and skips httpx's parser
only for the usual shape."""

from __future__ import annotations

import pickle

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fetchcli.urls import parse_url


def outcome(parse, text: str) -> object:
    try:
        url = parse(text)
    except httpx.InvalidURL as exc:
        return ("InvalidURL", str(exc))
    return url._uri_reference


def assert_same(text: str) -> None:
    assert outcome(parse_url, text) == outcome(httpx.URL, text), text


@pytest.mark.parametrize(
    "text",
    [
        "http://127.0.0.1:18080/f/1.bin?i=1",
        "https://Example.COM/a/./b",  # host lowercased, "." segment dropped
        "http://a.test",
        "http://a.test?x=1",
        "http://a.test:80/x",  # default ports dropped
        "https://a.test:443/x",
        "https://a.test:80/x",
        "http://a.test/%zz/%41",  # a lone '%' and an escape, both kept
        "http://a.test/a b",  # quoted
        "http://a.test/x#f",
        "http://a.test/.well-known/x",
        "http://a.test/./b",
        "http://a.test/../b",
        "http://a.test/a/..",
        "http://a.test/~user/(x)!*'",
        "http://a.test/x?q=a/b?c:d@e",
        'http://a.test/x?q="',
        "http://a.test/{x}`",
        "http://[::1]:8080/x",
        "http://a.test:99999/x",
        "http://a.test:abc/",
        "http://999.1.1.1/",
        "http://01.2.3.4/",
        "http://bücher.example/x",
        "http://a.test/ü?ü",
        "http://user:pw@a.test/x",
        "http:///x",
        "HTTP://a.test/x",
        "http://a.test\\b/x",
    ],
)
def test_a_url_parses_as_httpx_parses_it(text: str):
    assert_same(text)


AUTHORITY = st.sampled_from(
    ["a.test", "A.Test", "127.0.0.1", "127.0.0.1:8080", "a.test:80", "a.test:443", "[::1]",
     "256.1.1.1", "a.test:", "a.test:x", "", "b\u00fccher.test", "u@a.test", "a_b.test"]
)  # fmt: skip
PART = st.text(alphabet="abZ09-._~%/?#.:@!$&'()*+,;= \"<>`{}|\\^[]\u00fc\u00e9", max_size=24)


@settings(max_examples=1500, deadline=None)
@given(scheme=st.sampled_from(["http", "https", "Http"]), authority=AUTHORITY, rest=PART)
def test_any_url_parses_as_httpx_parses_it(scheme: str, authority: str, rest: str):
    assert_same(f"{scheme}://{authority}{rest}")


def test_the_usual_url_does_not_go_through_httpx_parser(monkeypatch):
    parse_url("http://a.test:8080/warm")  # its authority is parsed by httpx, once
    with monkeypatch.context() as patch:

        def no_parsing(*args, **kwargs):
            raise AssertionError("httpx parsed the URL")

        patch.setattr(httpx.URL, "__init__", no_parsing)
        url = parse_url("http://a.test:8080/data/%41b.bin?page=2&x=/y")
    assert url == httpx.URL("http://a.test:8080/data/%41b.bin?page=2&x=/y")
    assert (url.host, url.port, url.raw_path) == ("a.test", 8080, b"/data/%41b.bin?page=2&x=/y")
    assert pickle.loads(pickle.dumps(url)) == url
    assert url.copy_with(path="/z") == httpx.URL("http://a.test:8080/z?page=2&x=/y")
