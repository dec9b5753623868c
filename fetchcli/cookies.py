"""A Netscape/Mozilla cookie file (what `curl -b`, `wget --load-cookies` read), read-only.

Each line: domain, include-subdomains flag, path, secure flag, expiry (Unix seconds, 0 for
a session cookie), name, value, separated by tabs. `#HttpOnly_` before a domain marks an
HttpOnly cookie (sent as any other: we are not a browser); other `#` lines are comments.
A line that does not parse is skipped and counted, as curl skips it.

A cookie is sent to a URL when its domain is the URL's host, or a parent domain of it with
the include-subdomains flag (never for an IP address); its path is a prefix of the URL's
path at a `/` boundary (RFC 6265, 5.1.4); it is not `Secure` or the URL is https; and it
has not expired. Longer paths come first in the header, as RFC 6265 asks.
"""

from __future__ import annotations

import email.utils
import ipaddress
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fetchcli.errors import UsageError

if TYPE_CHECKING:  # annotations only: `--help` does not load httpx
    import httpx

__all__ = ["Cookie", "CookieFile", "HostJar", "parse_cookie_line", "parse_set_cookie"]

HTTPONLY_PREFIX = "#HttpOnly_"
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_PER_HOST = 50  # what a HostJar keeps: a run may meet millions of hosts
MAX_HOSTS = 10_000

# Bytes that would break out of a Cookie header or confuse a server: never sent.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f;]")


@dataclass(frozen=True, slots=True)
class Cookie:
    """One cookie of the file; the value stays out of reprs."""

    domain: str  # lower case, no leading dot
    subdomains: bool
    path: str
    secure: bool
    expires: int  # Unix seconds; 0 for a session cookie, which lasts the run
    name: str
    value: str = field(repr=False)
    http_only: bool = False

    def matches(self, host: str, path: str, https: bool, now: float) -> bool:
        """True when this cookie goes with a request to `host` (lower case) and `path`."""
        if self.secure and not https:
            return False
        if self.expires and self.expires <= now:
            return False
        if host != self.domain and not (
            self.subdomains and host.endswith("." + self.domain) and not _is_ip(host)
        ):
            return False
        return _path_matches(path, self.path)


def parse_cookie_line(line: str) -> Cookie | None:
    """One line of a cookie file -> a Cookie; None for comments, blanks and bad lines."""
    line = line.rstrip("\r\n")
    http_only = line.startswith(HTTPONLY_PREFIX)
    if http_only:
        line = line[len(HTTPONLY_PREFIX) :]
    elif not line.strip() or line.startswith("#"):
        return None
    fields = line.split("\t")
    if len(fields) == 6:
        fields.append("")  # curl writes a cookie with an empty value this way
    if len(fields) != 7:
        return None
    domain, subdomains, path, secure, expires, name, value = fields
    domain = domain.strip().lower().lstrip(".")
    if not domain or not expires.strip().isdigit() or not (name or value):
        return None
    if _UNSAFE.search(name) or _UNSAFE.search(value) or "=" in name:
        return None
    return Cookie(
        domain=domain,
        subdomains=subdomains.strip().upper() == "TRUE",
        path=path if path.startswith("/") else "/",
        secure=secure.strip().upper() == "TRUE",
        expires=int(expires),
        name=name,
        value=value,
        http_only=http_only,
    )


class CookieFile:
    """The cookies of one file, by domain; `header_for(url)` gives the Cookie header."""

    def __init__(
        self,
        cookies: Iterable[Cookie],
        *,
        skipped: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        now = clock()
        kept: dict[tuple[str, str, str], Cookie] = {}
        for cookie in cookies:
            if cookie.expires and cookie.expires <= now:
                continue
            # A later line for the same domain, path and name replaces an earlier one.
            kept.pop((cookie.domain, cookie.path, cookie.name), None)
            kept[(cookie.domain, cookie.path, cookie.name)] = cookie
        self._by_domain: dict[str, list[Cookie]] = {}
        for cookie in kept.values():
            self._by_domain.setdefault(cookie.domain, []).append(cookie)
        self.skipped = skipped

    def __len__(self) -> int:
        return sum(len(cookies) for cookies in self._by_domain.values())

    def __repr__(self) -> str:
        return f"<CookieFile: {len(self)} cookies for {len(self._by_domain)} domains>"

    @classmethod
    def parse(cls, text: str, *, clock: Callable[[], float] = time.time) -> CookieFile:
        """The cookies in the text of a cookie file; `skipped` counts the lines that were not."""
        cookies, skipped = [], 0
        for line in text.splitlines():
            cookie = parse_cookie_line(line)
            if cookie is not None:
                cookies.append(cookie)
            elif line.strip() and (line.startswith(HTTPONLY_PREFIX) or line[0] != "#"):
                skipped += 1
        return cls(cookies, skipped=skipped, clock=clock)

    @classmethod
    def load(cls, path: str, *, clock: Callable[[], float] = time.time) -> CookieFile:
        """Read a cookie file; UsageError (one line) when it cannot be read."""
        try:
            with open(path, "rb") as stream:
                data = stream.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            msg = f"cannot read cookie file {path}: {exc.strerror or exc}"
            raise UsageError(msg) from None
        if len(data) > MAX_FILE_BYTES:
            msg = f"cookie file {path} is over {MAX_FILE_BYTES >> 20} MiB"
            raise UsageError(msg)
        return cls.parse(data.decode("utf-8", "replace"), clock=clock)

    def header_for(self, url: httpx.URL) -> str | None:
        """The `Cookie` header value for a request to `url`, or None when nothing matches."""
        if not self._by_domain:
            return None
        host = url.raw_host.decode("ascii").lower().rstrip(".")
        path = url.raw_path.split(b"?", 1)[0].decode("ascii") or "/"
        https = url.scheme == "https"
        now = self._clock()
        found: list[Cookie] = []
        for domain in _domains_of(host):
            for cookie in self._by_domain.get(domain, ()):
                if cookie.matches(host, path, https, now):
                    found.append(cookie)
        if not found:
            return None
        found.sort(key=lambda cookie: len(cookie.path), reverse=True)  # stable: file order
        return "; ".join(f"{cookie.name}={cookie.value}" for cookie in found)


class HostJar:
    """`--keep-cookies`: what servers set during the run, sent back to the same host only.

    Every cookie is host-only, whatever its Domain attribute says, so nothing set by one host
    ever reaches another. Path, Secure, Max-Age and Expires are honoured (RFC 6265, 5.2).
    Bounded: `MAX_PER_HOST` cookies a host, `MAX_HOSTS` hosts (the least recently used go).
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._hosts: OrderedDict[str, dict[tuple[str, str], Cookie]] = OrderedDict()

    def __repr__(self) -> str:
        return f"<HostJar: {len(self._hosts)} hosts>"

    def store(self, url: httpx.URL, set_cookies: Iterable[str]) -> None:
        """Keep the cookies of a response's `Set-Cookie` fields, for `url`'s host."""
        host = url.raw_host.decode("ascii").lower().rstrip(".")
        default_path = _default_path(url.raw_path.split(b"?", 1)[0].decode("ascii"))
        now = self._clock()
        for value in set_cookies:
            cookie = parse_set_cookie(value, host, default_path, now)
            if cookie is None:
                continue
            cookies = self._hosts.setdefault(host, {})
            self._hosts.move_to_end(host)
            key = (cookie.name, cookie.path)
            cookies.pop(key, None)
            if cookie.expires and cookie.expires <= now:
                continue  # Max-Age=0 or a past Expires: the server deletes the cookie
            cookies[key] = cookie
            if len(cookies) > MAX_PER_HOST:
                del cookies[next(iter(cookies))]
        while len(self._hosts) > MAX_HOSTS:
            self._hosts.popitem(last=False)

    def header_for(self, url: httpx.URL) -> str | None:
        """The `Cookie` header value of the kept cookies for `url`, or None."""
        host = url.raw_host.decode("ascii").lower().rstrip(".")
        cookies = self._hosts.get(host)
        if not cookies:
            return None
        path = url.raw_path.split(b"?", 1)[0].decode("ascii") or "/"
        https, now = url.scheme == "https", self._clock()
        found = [cookie for cookie in cookies.values() if cookie.matches(host, path, https, now)]
        if not found:
            return None
        found.sort(key=lambda cookie: len(cookie.path), reverse=True)
        return "; ".join(f"{cookie.name}={cookie.value}" for cookie in found)


def parse_set_cookie(value: str, host: str, default_path: str, now: float) -> Cookie | None:
    """One `Set-Cookie` value -> a host-only Cookie; None when it is unusable."""
    pair, *attributes = value.split(";")
    name, equals, cookie_value = pair.partition("=")
    name, cookie_value = name.strip(), cookie_value.strip()
    if not equals or not name or _UNSAFE.search(name) or _UNSAFE.search(cookie_value):
        return None
    path, secure, expires, max_age = default_path, False, 0, None
    for attribute in attributes:
        key, _, argument = attribute.partition("=")
        key, argument = key.strip().lower(), argument.strip()
        if key == "path" and argument.startswith("/"):
            path = argument
        elif key == "secure":
            secure = True
        elif key == "max-age" and re.fullmatch(r"-?[0-9]{1,12}", argument):
            max_age = int(argument)
        elif key == "expires":
            expires = _http_date(argument) or expires
    if max_age is not None:  # Max-Age wins over Expires
        expires = int(now) + max_age if max_age > 0 else 1
    return Cookie(host, False, path, secure, expires, name, cookie_value)


def _default_path(path: str) -> str:
    """RFC 6265, 5.1.4: the request path up to its last `/`, or `/`."""
    if not path.startswith("/") or path.count("/") == 1:
        return "/"
    return path[: path.rindex("/")]


def _http_date(text: str) -> int | None:
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return max(int(when.timestamp()), 1)


def _domains_of(host: str) -> list[str]:
    """`a.b.example` -> [`a.b.example`, `b.example`, `example`]: where its cookies live."""
    if _is_ip(host):
        return [host]
    parts = host.split(".")
    return [".".join(parts[index:]) for index in range(len(parts))]


def _path_matches(request: str, cookie: str) -> bool:
    if request == cookie:
        return True
    return request.startswith(cookie) and (cookie.endswith("/") or request[len(cookie)] == "/")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
