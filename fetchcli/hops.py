"""One request and its redirects, followed here rather than by httpx, to bound and police them.

Every hop is checked (http or https only, no loop, at most --max-redirects) and gets the
login and cookies chosen for its own URL; credentials never cross to another origin. The
headers the caller adds (Range, If-Range, If-None-Match ...) go to every hop: they name the
resource, wherever it is served from.
"""

from __future__ import annotations

import itertools
from typing import Protocol

import httpx

from fetchcli.client import content_length, new_request
from fetchcli.config import HttpOptions
from fetchcli.cookies import HostJar
from fetchcli.errors import PermanentError
from fetchcli.fingerprints import url_key
from fetchcli.kinds import ErrorKind
from fetchcli.models import shown_url

__all__ = ["Hops", "drain"]

# Headers that carry credentials: never sent to another origin after a redirect.
SENSITIVE_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
ERROR_BODY_DRAIN = 64 * 1024


class Whereabouts(Protocol):
    """Where an attempt's request went: its error message names the redirect's target."""

    url: str | None


class Hops:
    """Sends a run's requests, each with its redirects, on `client`."""

    def __init__(self, client: httpx.AsyncClient, http: HttpOptions) -> None:
        self._client = client
        self._http = http
        headers = list(http.headers)
        if not any(name.lower() == "user-agent" for name, _ in headers):
            # As with curl, -H "User-Agent: ..." replaces the default instead of adding one.
            headers.insert(0, ("User-Agent", http.user_agent))
        # The client's own headers merged in once, as `build_request()` would for each request:
        # requests are made here, with the client's timeouts, at a fraction of its cost.
        self._headers = httpx.Headers(client.headers)
        self._headers.update(headers)
        self._timeout = client.timeout.as_dict()
        # Logins and cookies go on at each hop; none of it for a run that has none.
        self._jar = HostJar() if http.keep_cookies else None
        self._credentials = bool(http.credentials or http.cookies or self._jar)

    async def send(
        self, url: httpx.URL, extra: dict[str, str], where: Whereabouts
    ) -> httpx.Response:
        """The response to `url` (streamed), once no redirect is left to follow; `extra`
        headers go to every hop."""
        headers = self._headers
        if extra:
            headers = headers.copy()
            headers.update(extra)
        listed = url
        seen = {url_key(url)}
        for hop in itertools.count():
            sent = self._with_credentials(headers, url, listed) if self._credentials else headers
            request = new_request(self._http.method, url, sent, self._timeout)
            if hop:
                where.url = str(url)  # a failure from here on is about the redirect's target
            response = await self._client.send(request, stream=True)
            where.url = str(url)
            if self._jar is not None:
                # Redirects too: login flows set their cookies on the 302.
                self._jar.store(url, response.headers.get_list("set-cookie"))
            location = response.headers.get("location")
            if (
                not self._http.follow_redirects
                or response.status_code not in REDIRECT_STATUSES
                or location is None
            ):
                return response
            await drain(response)
            await response.aclose()
            url, headers = self._next_hop(response, url, location, headers, seen, hop)
        raise AssertionError("unreachable")  # pragma: no cover

    def _next_hop(
        self,
        response: httpx.Response,
        url: httpx.URL,
        location: str,
        headers: httpx.Headers,
        seen: set[bytes],
        hop: int,
    ) -> tuple[httpx.URL, httpx.Headers]:
        """Where a redirect from `url` goes, with the headers that may go there."""
        status = response.status_code
        try:
            target = url.join(location)
        except httpx.InvalidURL as exc:
            msg = f"redirect to an invalid URL {location!r}"
            raise PermanentError(ErrorKind.REDIRECT, msg, status=status) from exc
        if target.scheme not in ("http", "https"):
            msg = f"redirect to unsupported scheme {target.scheme!r}"
            raise PermanentError(ErrorKind.REDIRECT, msg, status=status)
        if hop >= self._http.max_redirects:
            msg = f"more than {self._http.max_redirects} redirects"
            raise PermanentError(ErrorKind.REDIRECT, msg, status=status)
        key = url_key(target)
        if key in seen:
            msg = f"redirect loop back to {shown_url(str(target))}"
            raise PermanentError(ErrorKind.REDIRECT, msg, status=status)
        seen.add(key)
        if _origin(target) != _origin(url):
            headers = httpx.Headers(
                [(k, v) for k, v in headers.multi_items() if k not in SENSITIVE_HEADERS]
            )
        return target, headers

    def _with_credentials(
        self, headers: httpx.Headers, url: httpx.URL, listed: httpx.URL
    ) -> httpx.Headers:
        """`headers` with the login and cookies for this hop to `url`, made for `listed`.

        After the cross-origin stripping: what the user gave with -H (and still holds here)
        wins, and what goes on is chosen for this hop's URL alone.
        """
        http = self._http
        extra = []
        if http.credentials is not None and "authorization" not in headers:
            authorization = http.credentials.authorization(url, listed)
            if authorization is not None:
                extra.append(("Authorization", authorization))
        if "cookie" not in headers:
            cookies = [jar.header_for(url) for jar in (http.cookies, self._jar) if jar is not None]
            if any(cookies):
                extra.append(("Cookie", "; ".join(cookie for cookie in cookies if cookie)))
        if not extra:
            return headers
        return httpx.Headers([*headers.multi_items(), *extra])


async def drain(response: httpx.Response) -> None:
    """Read a small unwanted body (error page, redirect), so its connection can be reused."""
    expected = content_length(response.headers)
    if expected is not None and expected > ERROR_BODY_DRAIN:
        return
    received = 0
    async for chunk in response.aiter_raw():
        received += len(chunk)
        if received > ERROR_BODY_DRAIN:
            return


def _origin(url: httpx.URL) -> tuple[bytes, bytes, int | None]:
    return url.raw_scheme, url.raw_host, url.port
