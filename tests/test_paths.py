"""URL -> path: readable when it can be, safe always, and never two URLs on one file."""

from __future__ import annotations

import posixpath
import string

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fetchcli.fingerprints import url_key
from fetchcli.paths import MAX_NAME_BYTES, MAX_PATH_BYTES, flat_path, relative_path, row_path
from fetchcli.tree import TEMP_SUFFIX


def path_of(url: str) -> str:
    return str(relative_path(httpx.URL(url)))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://example.com/", "example.com/index.html"),
        ("https://example.com", "example.com/index.html"),
        ("https://Example.COM/a/b.txt", "example.com/a/b.txt"),
        ("https://example.com/a/b/", "example.com/a/b/index.html"),
        ("https://example.com:8443/x", "example.com_8443_tls/x"),
        ("https://example.com:443/x", "example.com/x"),
        ("https://example.com/%E4%B8%AD.html", "example.com/中.html"),
        ("https://example.com/a%20b.txt", "example.com/a b.txt"),
        ("https://example.com/~user/", "example.com/~user/index.html"),
        ("https://example.com/x#fragment", "example.com/x"),
        ("http://example.com/x", "example.com_80/x"),  # http never meets https
        ("http://example.com:8080/x", "example.com_8080/x"),
    ],
)
def test_readable_urls_keep_their_names(url: str, expected: str) -> None:
    assert path_of(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/a/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "http://example.com/%2e%2e",
        "http://example.com/.%2e/x",
        "http://example.com/a%2fb",
        "http://example.com/a%5cb",
        "http://example.com/%00%0a%1b",
        "http://example.com/CON",
        "http://example.com/nul.txt",
        "http://example.com/LPT1.log",
        "http://example.com/trailing.",
        "http://example.com/" + "x" * 1000,
        "http://example.com/a//b",
        "http://example.com/%ff%fe",
        "http://[::1]:8080/x",
    ],
)
def test_hostile_names_are_sanitized_and_marked_with_a_hash(url: str) -> None:
    path = path_of(url)
    parts = path.split("/")
    assert ".." not in parts and "." not in parts and "" not in parts
    assert not path.startswith("/")
    assert "~" in path  # sanitized names carry a hash of the original
    for part in parts:
        assert len(part.encode()) <= MAX_NAME_BYTES
        assert not set(part) & set('\\:*?"<>|\x00\n\x1b')


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("http://example.com/a%2fb", "http://example.com/a_b"),  # sanitize to the same name
        ("http://example.com/%62", "http://example.com/b"),  # same text, different URL
        ("http://example.com/", "http://example.com/index.html"),
        ("http://example.com/a//b", "http://example.com/a/b"),
        ("http://example.com/p?x=1", "http://example.com/p?x=2"),
        ("http://example.com/p?x=1", "http://example.com/p"),
        ("http://example.com:8080/x", "http://example.com_8080/x"),
        ("http://example.com/x", "https://example.com/x"),
        ("http://example.com/x", "https://example.com:80/x"),
        ("https://example.com:80/x", "http://example.com/x"),
        ("http://example.com/a:b", "http://example.com/a_b"),
        ("http://example.com/" + "x" * 300, "http://example.com/" + "x" * 301),
    ],
)
def test_different_urls_never_share_a_path(first: str, second: str) -> None:
    assert path_of(first) != path_of(second)


@pytest.mark.parametrize("host", ["..", ".", "...", ".hidden", "a..b", "_x", "[::1]"])
def test_hostile_hosts_cannot_climb_out(host: str) -> None:
    path = path_of(f"https://{host}/file")
    top = path.split("/")[0]
    assert top not in ("", ".", "..") and not top.startswith(".") and ".." not in top
    assert posixpath.normpath(posixpath.join("/out", path)).startswith("/out/")


def test_the_same_url_always_maps_to_the_same_path() -> None:
    url = "http://example.com/a%2fb?q=%2e%2e"
    assert path_of(url) == path_of(url)


def test_a_query_adds_a_hash_before_the_extension() -> None:
    path = path_of("https://example.com/page.php?id=3")
    assert path.startswith("example.com/page~") and path.endswith(".php")


def test_an_over_long_path_is_folded_into_one_hashed_name() -> None:
    url = "https://example.com/" + "/".join(["segment"] * 400) + "/file.bin"
    path = path_of(url)
    assert len(path.encode()) <= MAX_PATH_BYTES
    assert path.startswith("example.com/~") and path.endswith(".bin")


segment_chars = st.sampled_from(
    [
        *string.ascii_letters,
        *string.digits,
        *"-._~!$&'()*+,;=:@%/\\?#[] ",
        *["%2e", "%2E", "%2f", "%2F", "%00", "%5c", "..", ".", "%ff", "é", "\u202e", "CON"],
    ]
)
hostile_paths = st.lists(segment_chars, max_size=60).map("".join)


@settings(max_examples=400, deadline=None)
@given(path=hostile_paths, query=st.one_of(st.none(), hostile_paths))
def test_no_url_can_produce_a_path_outside_the_output_dir(path: str, query: str | None) -> None:
    raw = "https://example.com/" + path + (f"?{query}" if query is not None else "")
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL:
        return
    result = str(relative_path(url))
    joined = posixpath.normpath(posixpath.join("/out", result))
    assert joined.startswith("/out/")
    parts = result.split("/")
    assert parts[0] == "example.com"
    assert all(part not in ("", ".", "..") for part in parts)
    assert all("\x00" not in part and len(part.encode()) <= MAX_NAME_BYTES + 20 for part in parts)
    assert len(result.encode()) <= MAX_PATH_BYTES + 64


@settings(max_examples=300, deadline=None)
@given(a=hostile_paths, b=hostile_paths)
def test_two_different_urls_map_to_different_paths(a: str, b: str) -> None:
    try:
        first, second = httpx.URL("http://h.test/" + a), httpx.URL("http://h.test/" + b)
    except httpx.InvalidURL:
        return
    if url_key(first) != url_key(second):  # the same resource: "http://h.test" is "http://h.test/"
        assert relative_path(first) != relative_path(second)


@pytest.mark.parametrize(
    ("url", "cut", "expected"),
    [
        ("https://example.com/pub/data/2024/file.nc", 0, "example.com/pub/data/2024/file.nc"),
        ("https://example.com/pub/data/2024/file.nc", 2, "example.com/2024/file.nc"),
        ("https://example.com/pub/data/2024/file.nc", 3, "example.com/file.nc"),
        ("https://example.com/pub/data/2024/file.nc", 9, "example.com/file.nc"),  # never the name
        ("https://example.com/a/b/", 1, "example.com/b/index.html"),
        ("https://example.com/", 1, "example.com/index.html"),
    ],
)
def test_cut_dirs_drops_leading_directories_but_never_the_host_or_the_name(url, cut, expected):
    assert str(relative_path(httpx.URL(url), cut)) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://example.com/a/b/file.tar.gz", "file.tar.gz"),
        ("https://example.com/", "index.html"),
        ("https://example.com/dir/", "index.html"),
        ("https://example.com/%E4%B8%AD.txt", "中.txt"),
        ("https://example.com/x/CON", None),  # sanitized: a hash marks it
        ("https://example.com/x/%2e%2e", None),
    ],
)
def test_flat_is_the_last_segment_sanitized_as_in_the_tree(url, expected):
    path = flat_path(httpx.URL(url))
    assert len(path.parts) == 1
    tree = relative_path(httpx.URL(url))
    assert path.name == tree.name
    if expected is not None:
        assert str(path) == expected
    else:
        assert "~" in str(path)


def test_flat_names_of_a_query_differ():
    first = flat_path(httpx.URL("https://example.com/get?id=1"))
    second = flat_path(httpx.URL("https://example.com/get?id=2"))
    assert first != second and str(first).startswith("get~")


URL = httpx.URL("https://example.com/d/remote.bin")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("images/cat.jpg", "images/cat.jpg"),
        ("/etc/passwd", "etc/passwd"),
        ("../../x", "x"),
        ("a/./b/../c", "a/b/c"),  # literal components: ".." is dropped, never climbed
        ("a\\b.txt", "a/b.txt"),
        ("a%2fb", "a%2fb"),  # taken literally: no percent-decoding
        ("out/", "out/remote.bin"),
        ("été/file", "été/file"),
    ],
)
def test_row_paths_are_confined_and_taken_literally(given, expected):
    assert str(row_path(given, URL)) == expected


@pytest.mark.parametrize("given", ["", "/", ".", "..", "./..//"])
def test_a_row_path_with_no_name_left_is_none(given):
    assert row_path(given, URL) is None


@pytest.mark.parametrize("given", ["CON", "a:b", "x\x00y", "trailing.", "q?.txt", "x" * 300])
def test_unsafe_row_names_are_sanitized_and_marked_with_a_hash(given):
    path = row_path(given, URL)
    assert path is not None and "~" in str(path)
    assert len(path.name.encode()) <= MAX_NAME_BYTES + 20
    assert not set(path.name) & set('\\:*?"<>|\x00')


def test_an_over_long_row_path_is_folded_into_one_name():
    path = row_path("/".join(["segment"] * 400) + "/f.bin", URL)
    assert path is not None and len(path.parts) == 1
    assert str(path).startswith("~") and str(path).endswith(".bin")


row_texts = st.lists(
    st.sampled_from(["a", "b", ".", "..", "", "/", "\\", "%2e", "CON", "\x00", "é", " ", "~"]),
    max_size=40,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(given=row_texts | st.text(max_size=80))
def test_no_row_path_can_leave_the_output_dir(given: str) -> None:
    path = row_path(given, URL)
    if path is None:
        return
    result = str(path)
    assert posixpath.normpath(posixpath.join("/out", result)).startswith("/out/")
    assert not path.is_absolute()
    assert all(part not in ("", ".", "..") for part in path.parts)
    assert all("\x00" not in part and "/" not in part for part in path.parts)
    assert len(result.encode()) <= MAX_PATH_BYTES + 64


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/.a.0badc0de-0.fetchcli-part",
        "https://example.com/.a.0badc0de-0.fetchcli-part/b",
        "https://example.com/x.fetchcli-part?q",
    ],
)
def test_no_saved_name_looks_like_a_temporary_file(url: str) -> None:
    # A later run removes files named like a dead run's temporary file: no body may be one.
    assert not any(part.endswith(TEMP_SUFFIX) for part in relative_path(httpx.URL(url)).parts)
