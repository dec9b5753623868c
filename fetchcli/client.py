"""The HTTP client of a run: one httpx AsyncClient over a transport backed by aiohttp.

httpx stays the client (requests, responses, headers, URLs, HTTP/2); only the HTTP/1.1 wire
work moves to aiohttp's connection pool and C parser. Measured on loopback
(benchmarks/README.md): 2-3x the requests per second of httpx's default transport, and free
of the shared-pool stall of httpcore 1.0 (encode/httpcore#822), so one client serves every
worker. aiohttp errors are mapped to the most specific httpx error here, at the boundary,
and `errors.map_transport_error` takes it from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager

import aiohttp
import httpx
import yarl

from fetchcli.config import Settings
from fetchcli.decoding import ACCEPT_ENCODING

__all__ = ["AiohttpTransport", "Client", "make_client"]

READ_CHUNK = 256 * 1024


@contextmanager
def _mapped_errors() -> Iterator[None]:
    try:
        yield
    except aiohttp.ClientError as exc:
        error_class, message = _mapped(exc)
        # Keep the OSError (gaierror, SSLCertVerificationError ...) reachable for classification.
        cause = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
        raise error_class(message) from cause
    except OSError as exc:
        message = str(exc) or type(exc).__name__
        raise httpx.ReadError(message) from exc


def _mapped(exc: aiohttp.ClientError) -> tuple[type[httpx.TransportError], str]:
    """The most specific httpx error for an aiohttp one, and its message."""
    text = str(exc) or type(exc).__name__
    match exc:
        case aiohttp.ConnectionTimeoutError():
            return httpx.ConnectTimeout, text
        case aiohttp.ServerTimeoutError():
            return httpx.ReadTimeout, f"no data for the read timeout: {text}"
        case aiohttp.ClientProxyConnectionError():
            return httpx.ProxyError, text
        case aiohttp.ClientHttpProxyError():
            return httpx.ProxyError, f"proxy answered {exc.status} {exc.message}"
        case aiohttp.ClientConnectorError():
            return httpx.ConnectError, text
        case aiohttp.ServerDisconnectedError():
            return httpx.RemoteProtocolError, "server closed the connection without a response"
        case aiohttp.ClientPayloadError():
            return httpx.RemoteProtocolError, f"body incomplete: {_root_message(exc)}"
        case aiohttp.ClientResponseError():
            return httpx.RemoteProtocolError, f"malformed response: {exc.message}"
        case aiohttp.InvalidURL():
            return httpx.UnsupportedProtocol, f"invalid URL: {text}"
        case aiohttp.ClientConnectionError():
            return httpx.ReadError, text
    return httpx.NetworkError, text


def _env_proxies(environ: Mapping[str, str] | None) -> dict[str, str]:
    """HTTP(S)_PROXY / NO_PROXY as curl and wget read them (lower case wins)."""
    if environ is None:
        return urllib.request.getproxies_environment()
    proxies: dict[str, str] = {}
    for name, value in environ.items():
        name = name.lower()
        if value and name.endswith("_proxy"):
            proxies[name[: -len("_proxy")]] = value
    return proxies


def _header_items(headers: httpx.Headers) -> list[tuple[str, str]]:
    # Faster than Headers.multi_items(), which works out the encoding again for every item.
    try:
        return [(name.decode("ascii"), value.decode()) for name, value in headers.raw]
    except UnicodeDecodeError:
        return headers.multi_items()


def _http_version(version: aiohttp.HttpVersion | None) -> bytes:
    return b"HTTP/%d.%d" % (version.major, version.minor) if version else b"HTTP/1.1"


def _root_message(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc) or type(exc).__name__


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        with _mapped_errors():
            while chunk := await content.readany():
                yield chunk

    async def aclose(self) -> None:
        # release() keeps a fully read connection for reuse and closes an unfinished one.
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests through one aiohttp session (one pool for the whole run)."""

    def __init__(
        self,
        *,
        verify: bool = True,
        proxy: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._verify = verify
        self._proxy = proxy
        # Read the proxy variables once: aiohttp's trust_env reads them, and ~/.netrc, in a
        # thread for every request, which cost more than the request itself.
        self._env_proxies = _env_proxies(environ) if proxy is None else {}
        self._proxy_for: dict[tuple[str, str], str | None] = {}
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=0,  # the Limiter bounds concurrency; the pool must not queue on its own
            # aiohttp's own default contexts (system CA store, SSL_CERT_FILE/DIR honoured, as
            # with curl): loading a second CA bundle would cost ~35 ms at every start.
            ssl=self._verify,
            ttl_dns_cache=300,
            enable_cleanup_closed=True,
        )
        return aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
            read_bufsize=READ_CHUNK,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request`; the body is streamed to the caller."""
        if self._session is None:
            self._session = self._open()
        timeout = request.extensions.get("timeout", {})
        with _mapped_errors():
            response = await self._session.request(
                request.method,
                yarl.URL(str(request.url), encoded=True),
                headers=_header_items(request.headers),
                allow_redirects=False,
                proxy=self._proxy or self._env_proxy(request.url),
                timeout=self._timeout(timeout.get("connect"), timeout.get("read")),
            )
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_ResponseStream(response),
            request=request,
            extensions={
                "http_version": _http_version(response.version),
                "reason_phrase": (response.reason or "").encode("latin-1", "replace"),
            },
        )

    @functools.lru_cache(maxsize=8)  # noqa: B019 - a handful of values for the run's life
    def _timeout(self, connect: float | None, read: float | None) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)

    def _env_proxy(self, url: httpx.URL) -> str | None:
        if not self._env_proxies:
            return None
        key = (url.scheme, url.host)
        if key not in self._proxy_for:
            proxy = self._env_proxies.get(url.scheme)
            if proxy and urllib.request.proxy_bypass_environment(  # type: ignore[attr-defined]
                url.host, self._env_proxies
            ):
                proxy = None
            if len(self._proxy_for) > 10_000:
                self._proxy_for.clear()
            self._proxy_for[key] = proxy
        return self._proxy_for[key]

    async def aclose(self) -> None:
        """Close every pooled connection; idempotent."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
            # Let the transports' close callbacks run before the loop goes away.
            await asyncio.sleep(0)


class _NoCookies(httpx.Cookies):
    def extract_cookies(self, response: httpx.Response) -> None:
        """Keep nothing."""


class Client(httpx.AsyncClient):
    """An AsyncClient that keeps no cookies from one URL to the next, as curl does.

    httpx parses every response's Set-Cookie into a jar through urllib's cookie machinery:
    measured here, a third of the client's cost per request, for cookies we would not send.
    """

    _no_cookies = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        pass


@contextlib.asynccontextmanager
async def make_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The one client of a run: aiohttp for HTTP/1.1; httpcore for HTTP/2 over TLS."""
    options = settings.http
    timeouts = settings.timeouts
    transport = AiohttpTransport(verify=options.verify, proxy=options.proxy)
    mounts: dict[str, httpx.AsyncBaseTransport | None] = {}
    if options.http2:
        # aiohttp speaks HTTP/1.1 only; HTTP/2 is negotiated over TLS, so https goes to httpcore.
        mounts["https://"] = httpx.AsyncHTTPTransport(
            http2=True,
            verify=await asyncio.to_thread(ssl.create_default_context) if options.verify else False,
            proxy=options.proxy,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
        )
    client = Client(
        transport=transport,
        mounts=mounts,
        headers={"Accept-Encoding": ACCEPT_ENCODING},
        timeout=httpx.Timeout(None, connect=timeouts.connect, read=timeouts.read),
        follow_redirects=False,
        trust_env=False,  # the transport reads the proxy variables
    )
    async with client:
        yield client
