"""Input URLs parsed exactly as `httpx.URL` parses them, without its cost for the usual shape.

httpx checks every character, validates an IPv4 host with `ipaddress` and percent-quotes each
part: 10-30 µs a URL, the largest cost of reading a list (a million lines: 10-30 s of the
producer's CPU). Most lines are `http(s)://authority/path?query` with nothing for httpx to
quote or normalise: for those the authority is parsed by httpx once per distinct authority
(hosts repeat), and the path and query are taken as they are. Any other line goes to httpx.
tests/test_urls.py checks the two agree, so a change in httpx's parser fails there.
"""

from __future__ import annotations

import functools
import re

import httpx
from httpx._urlparse import (
    MAX_URL_LENGTH,
    PATH_SAFE,
    QUERY_SAFE,
    UNRESERVED_CHARACTERS,
    ParseResult,
)

__all__ = ["parse_url"]


def _unchanged(safe: str) -> str:
    """A regex class of the characters httpx's quoting leaves as they are (with `safe`)."""
    return "[" + re.escape(UNRESERVED_CHARACTERS + safe) + "]"


# Lowercase scheme; no userinfo or backslash in the authority; no fragment. The path's and
# query's characters are all ones httpx keeps ('%' included: it leaves a lone one too).
_USUAL = re.compile(
    rf"(https?)://([^/?#@\\]*)(/{_unchanged(PATH_SAFE)}*)?"
    rf"(?:\?({_unchanged(QUERY_SAFE)}*))?"
)


def parse_url(text: str) -> httpx.URL:
    """`httpx.URL(text)`, the same URL; raises httpx.InvalidURL where httpx does."""
    usual = _USUAL.fullmatch(text) if len(text) <= MAX_URL_LENGTH else None
    # A "." or ".." segment is one httpx removes: such a path goes to httpx, as does "/.x".
    if usual is None or (usual[3] and "/." in usual[3]):
        return httpx.URL(text)
    scheme, authority, path, query = usual.groups()
    url = httpx.URL.__new__(httpx.URL)
    url._uri_reference = _authority(scheme, authority)._replace(path=path or "", query=query)
    return url


@functools.lru_cache(maxsize=4096)
def _authority(scheme: str, authority: str) -> ParseResult:
    """The scheme, host and port of `scheme://authority`, as httpx normalises them."""
    return httpx.URL(f"{scheme}://{authority}/")._uri_reference
