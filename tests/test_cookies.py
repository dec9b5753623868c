"""A cookie file: each cookie goes where its domain, path, Secure flag and expiry allow."""

from __future__ import annotations

import httpx
import pytest

from fetchcli.cookies import MAX_PER_HOST, Cookie, CookieFile, HostJar, parse_cookie_line
from fetchcli.errors import UsageError

NOW = 1_700_000_000
LATER = NOW + 3600
EARLIER = NOW - 1


def line(domain, sub, path, secure, expires, name, value) -> str:
    return "\t".join([domain, sub, path, secure, str(expires), name, value])


FILE = "\n".join(
    [
        "# Netscape HTTP Cookie File",
        "# This is a generated file! Do not edit.",
        "",
        line(".example.test", "TRUE", "/", "FALSE", 0, "everywhere", "1"),
        line("example.test", "FALSE", "/", "FALSE", LATER, "exact", "2"),
        line("shop.example.test", "FALSE", "/cart", "FALSE", LATER, "cart", "3"),
        line(".example.test", "TRUE", "/", "TRUE", LATER, "secure", "4"),
        line(".example.test", "TRUE", "/", "FALSE", EARLIER, "expired", "5"),
        "#HttpOnly_" + line(".example.test", "TRUE", "/", "FALSE", LATER, "session", "6"),
        line("other.test", "TRUE", "/", "FALSE", LATER, "other", "7"),
        line("127.0.0.1", "TRUE", "/", "FALSE", 0, "ip", "8"),
        "not\ta cookie line",
        line("example.test", "FALSE", "/", "FALSE", "soon", "badexpiry", "x"),
        line("example.test", "FALSE", "/", "FALSE", 0, "inject", "a; admin=1"),
    ]
)


@pytest.fixture
def jar() -> CookieFile:
    return CookieFile.parse(FILE, clock=lambda: NOW)


def sent(jar: CookieFile | HostJar, url: str) -> list[str]:
    header = jar.header_for(httpx.URL(url))
    return [] if header is None else [part.split("=")[0] for part in header.split("; ")]


def test_the_file_keeps_good_lines_and_counts_the_bad_ones(jar):
    assert len(jar) == 7  # the expired cookie is gone
    assert jar.skipped == 3
    assert "1" not in repr(jar) and "value" not in repr(parse_cookie_line(FILE.splitlines()[3]))


def test_include_subdomains_tailmatches_and_without_it_only_the_host_matches(jar):
    assert sent(jar, "http://example.test/") == ["everywhere", "exact", "session"]
    assert sent(jar, "http://www.example.test/") == ["everywhere", "session"]
    assert sent(jar, "http://a.b.example.test/") == ["everywhere", "session"]
    assert sent(jar, "http://badexample.test/") == []  # a suffix, but not at a dot
    assert sent(jar, "http://example.test.evil/") == []


def test_paths_match_at_slash_boundaries_and_longer_paths_come_first(jar):
    assert sent(jar, "http://shop.example.test/cart") == ["cart", "everywhere", "session"]
    assert sent(jar, "http://shop.example.test/cart/items?x=1")[0] == "cart"
    assert "cart" not in sent(jar, "http://shop.example.test/cartoon")
    assert "cart" not in sent(jar, "http://shop.example.test/")


def test_secure_cookies_go_over_https_only(jar):
    assert "secure" not in sent(jar, "http://example.test/")
    assert "secure" in sent(jar, "https://example.test/")


def test_cookies_expire_during_the_run():
    clock = [NOW]
    jar = CookieFile.parse(
        line("a.test", "FALSE", "/", "FALSE", NOW + 10, "c", "v"), clock=lambda: clock[0]
    )
    assert jar.header_for(httpx.URL("http://a.test/")) == "c=v"
    clock[0] = NOW + 10
    assert jar.header_for(httpx.URL("http://a.test/")) is None


def test_an_ip_address_matches_exactly_never_by_tail(jar):
    assert sent(jar, "http://127.0.0.1:8080/") == ["ip"]
    cookie = Cookie("0.0.1", True, "/", False, 0, "n", "v")
    assert not cookie.matches("127.0.0.1", "/", False, NOW)


def test_a_later_line_for_the_same_cookie_replaces_the_earlier():
    text = "\n".join(
        [
            line("a.test", "FALSE", "/", "FALSE", 0, "c", "old"),
            line("a.test", "FALSE", "/", "FALSE", 0, "c", "new"),
        ]
    )
    assert CookieFile.parse(text).header_for(httpx.URL("http://a.test/")) == "c=new"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("#HttpOnly_.a.test\tTRUE\t/\tFALSE\t0\tn\tv", ("a.test", True, True)),
        ("A.TEST\tFALSE\t/p\tTRUE\t5\tn\tv\r", ("a.test", False, False)),
        ("a.test\tFALSE\t/\tFALSE\t0\tn", ("a.test", False, False)),  # six fields: no value
    ],
)
def test_cookie_lines_parse(text, expected):
    cookie = parse_cookie_line(text)
    assert cookie is not None
    assert (cookie.domain, cookie.subdomains, cookie.http_only) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# a comment",
        "a.test\tFALSE\t/\tFALSE\t0",
        "\tFALSE\t/\tFALSE\t0\tn\tv",
        "a.test\tFALSE\t/\tFALSE\t-1\tn\tv",
        "a.test\tFALSE\t/\tFALSE\t0\tn;x\tv",
        "a.test\tFALSE\t/\tFALSE\t0\tn\tv\x00",
    ],
)
def test_bad_cookie_lines_are_skipped(text):
    assert parse_cookie_line(text) is None


def test_an_empty_jar_sends_nothing():
    assert CookieFile([]).header_for(httpx.URL("http://a.test/")) is None


def test_load_reads_a_file_and_a_missing_one_is_a_usage_error(tmp_path):
    path = tmp_path / "cookies.txt"
    path.write_bytes(line("a.test", "FALSE", "/", "FALSE", 0, "c", "v").encode() + b"\r\n")
    assert CookieFile.load(str(path)).header_for(httpx.URL("http://a.test/x")) == "c=v"
    with pytest.raises(UsageError, match=r"^cannot read cookie file .*: No such file"):
        CookieFile.load(str(tmp_path / "missing.txt"))


class Clock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now


def test_kept_cookies_go_back_to_the_same_host_only_whatever_their_domain_says():
    kept = HostJar(clock=Clock())
    kept.store(httpx.URL("https://a.example.test/login"), ["sid=s3cr3t; Domain=.example.test"])
    assert kept.header_for(httpx.URL("https://a.example.test/data")) == "sid=s3cr3t"
    assert kept.header_for(httpx.URL("http://a.example.test:8080/")) == "sid=s3cr3t"  # RFC 6265
    for other in ("https://b.example.test/", "https://example.test/", "https://x.a.example.test/"):
        assert kept.header_for(httpx.URL(other)) is None
    assert "s3cr3t" not in repr(kept)


def test_kept_cookies_follow_path_secure_and_the_default_path():
    kept = HostJar(clock=Clock())
    kept.store(
        httpx.URL("https://h.test/app/login?next=/"),
        ["a=1", "b=2; Path=/; Secure", "c=3; path=/other", "broken", "=x", "d=4\x00"],
    )
    assert sent(kept, "https://h.test/app/page") == ["a", "b"]  # a: default path /app
    assert sent(kept, "http://h.test/app/page") == ["a"]
    assert sent(kept, "https://h.test/other/x") == ["c", "b"]
    assert sent(kept, "https://h.test/application") == ["b"]


def test_kept_cookies_expire_and_servers_can_delete_them():
    clock = Clock()
    kept = HostJar(clock=clock)
    url = httpx.URL("https://h.test/")
    kept.store(url, ["a=1; Max-Age=10", "b=2; Expires=Wed, 21 Oct 2015 07:28:00 GMT", "c=3"])
    assert sent(kept, "https://h.test/") == ["a", "c"]
    kept.store(url, ["c=gone; Max-Age=0"])
    assert sent(kept, "https://h.test/") == ["a"]
    clock.now += 10
    assert kept.header_for(url) is None


def test_the_kept_cookies_are_bounded():
    kept = HostJar(clock=Clock())
    url = httpx.URL("https://h.test/")
    kept.store(url, [f"c{n}=v" for n in range(MAX_PER_HOST + 5)])
    names = sent(kept, "https://h.test/")
    assert len(names) == MAX_PER_HOST and "c0" not in names and f"c{MAX_PER_HOST + 4}" in names
