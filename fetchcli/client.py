"""The HTTP client of a run: one httpx AsyncClient over a transport backed by aiohttp.

httpx stays the client (requests, responses, headers, URLs, HTTP/2); only the HTTP/1.1 wire
work moves to aiohttp's connection pool and C parser. Measured on loopback
(benchmarks/README.md): 2-3x the requests per second of httpx's default transport, and free
of the shared-pool stall of httpcore 1.0 (encode/httpcore#822), so one client serves every
worker. Both transports raise fetchcli's own errors (fetchcli/transport_errors.py): the one
translation happens here, at the boundary, where the most is known about what failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import aiohttp
import httpx
import yarl
from aiohttp.abc import AbstractResolver
from httpx import USE_CLIENT_DEFAULT

from fetchcli import trust_store
from fetchcli.bandwidth import read_size, receive_buffer
from fetchcli.config import Settings
from fetchcli.decoding import ACCEPT_ENCODING
from fetchcli.resolver import resolver_for
from fetchcli.transport_errors import (
    Exchange,
    from_aiohttp,
    from_httpx,
    from_os_error,
    from_socks,
    socks_errors,
)

__all__ = [
    "AiohttpTransport",
    "Client",
    "HttpxTransport",
    "IndexedHeaders",
    "content_length",
    "make_client",
    "new_request",
]

READ_CHUNK = 256 * 1024
SOCKS_SCHEMES = ("socks5", "socks5h")


@contextmanager
def _translated(ex: Exchange, socks: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """aiohttp's errors (and a socket's) as fetchcli's, raised from the original; `socks`:
    a SOCKS proxy's errors (`socks_errors()`), when one is used."""
    try:
        yield
    except aiohttp.ClientError as exc:
        raise from_aiohttp(exc, ex) from exc
    except socks as exc:  # before OSError: some of them are one
        raise from_socks(exc, ex) from exc
    except OSError as exc:
        raise from_os_error(exc, ex) from exc


def ca_context(cacert: str | None) -> ssl.SSLContext:
    """The system's trust store, plus the CAs of `cacert` when given (curl's --cacert
    replaces the store instead); blocking: ~35 ms to load the system's."""
    context = ssl.create_default_context()
    if cacert is not None:
        context.load_verify_locations(cafile=cacert)
    return context


def _is_https(proxy: str | None) -> bool:
    return proxy is not None and proxy[:6].lower() == "https:"


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


def _socket_receiving(buffer: int, address: tuple[Any, ...]) -> socket.socket:
    """A new socket for `address` (getaddrinfo's tuple) with a receive buffer of `buffer`
    bytes, which also stops the kernel from growing it."""
    family, kind, proto = address[:3]
    sock = socket.socket(family=family, type=kind, proto=proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
    except BaseException:
        sock.close()
        raise
    return sock


def _header_items(headers: httpx.Headers) -> list[tuple[str, str]]:
    # Faster than Headers.multi_items(), which works out the encoding again for every item.
    try:
        return [(name.decode("ascii"), value.decode()) for name, value in headers.raw]
    except UnicodeDecodeError:
        return headers.multi_items()


_NO_BODY = httpx.ByteStream(b"")  # holds no state: one for every request


def new_request(
    method: str, url: httpx.URL, headers: httpx.Headers, timeout: Mapping[str, float | None]
) -> httpx.Request:
    """A bodiless `httpx.Request` (GET, HEAD) as httpx makes it, `Host` first, with these
    `timeout` extensions: httpx would encode an empty body and build the headers twice to put
    `Host` in front, about four times the cost (measured: ~3% of the CPU per request)."""
    sent = httpx.Headers(headers)
    if "host" not in sent:
        sent._list.insert(0, (b"Host", b"host", url.netloc))  # what httpx's own Request adds
    return httpx.Request(
        method, url, headers=sent, stream=_NO_BODY, extensions={"timeout": timeout}
    )


class IndexedHeaders(httpx.Headers):
    """A response's headers, looked up through a dict built at the first lookup.

    httpx's `Headers` scans and decodes its whole list for every `get()`, and a response is
    asked for a dozen of its headers (length, encoding, validators, digests, type ...):
    measured on loopback, about 4% of the CPU per request. Any change empties the index.
    """

    _index: dict[bytes, str] | None = None

    def _lookup(self) -> dict[bytes, str]:
        index = self._index
        if index is None:
            index = {}
            encoding = self.encoding
            for _, key, value in self._list:
                text = value.decode(encoding)
                index[key] = f"{index[key]}, {text}" if key in index else text
            self._index = index
        return index

    def __getitem__(self, key: str) -> str:
        try:
            return self._lookup()[key.lower().encode(self.encoding)]
        except KeyError:
            raise KeyError(key) from None

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        return key.lower().encode(self.encoding) in self._lookup()

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key, value)
        self._index = None

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._index = None

    def update(self, headers: httpx._types.HeaderTypes | None = None) -> None:  # type: ignore[override]
        super().update(headers)  # asks `in` (building the index) before it extends the list
        self._index = None


def _http_version(version: aiohttp.HttpVersion | None) -> bytes:
    return b"HTTP/%d.%d" % (version.major, version.minor) if version else b"HTTP/1.1"


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, ex: Exchange) -> None:
        self._response = response
        self._ex = ex

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        ex = self._ex
        with _translated(ex):
            while chunk := await content.readany():
                ex.received += len(chunk)
                yield chunk

    async def aclose(self) -> None:
        # release() keeps a fully read connection for reuse and closes an unfinished one.
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests through one aiohttp session (one pool for the whole run)."""

    def __init__(
        self,
        *,
        verify: bool | ssl.SSLContext = True,
        proxy: str | None = None,
        environ: Mapping[str, str] | None = None,
        limit_rate: float | None = None,
    ) -> None:
        self._verify = verify  # a context: --cacert's
        self._limit_rate = limit_rate  # --limit-rate (this engine's share): smaller buffers
        socks = proxy is not None and httpx.URL(proxy).scheme in SOCKS_SCHEMES
        self._socks = httpx.URL(proxy) if socks and proxy is not None else None
        self._proxy = None if socks else proxy  # a SOCKS proxy is the connector's, not a request's
        self._socks_errors = socks_errors() if socks else ()
        # Read the proxy variables once: aiohttp's trust_env reads them, and ~/.netrc, in a
        # thread for every request, which cost more than the request itself.
        self._env_proxies = _env_proxies(environ) if proxy is None else {}
        self._proxy_for: dict[tuple[str, str], str | None] = {}
        self._timeouts: dict[tuple[float | None, float | None], aiohttp.ClientTimeout] = {}
        self._session: aiohttp.ClientSession | None = None
        self._resolver: AbstractResolver | None = None  # None: aiohttp's own

    def _open(self) -> aiohttp.ClientSession:
        options: dict[str, Any] = {
            "limit": 0,  # the frontier bounds concurrency; the pool must not queue on its own
            # True: aiohttp's own default contexts (system CA store, SSL_CERT_FILE/DIR
            # honoured, as with curl): loading a second CA bundle would cost ~35 ms a start.
            "ssl": self._verify,
            "ttl_dns_cache": 300,
            "enable_cleanup_closed": True,
            "resolver": self._resolver,
        }
        read_chunk = READ_CHUNK
        if self._limit_rate is not None:
            # Under a cap, little may wait unread (bandwidth.py): aiohttp buffers two reads,
            # the kernel its receive buffer; the server's pace then follows the reader's.
            read_chunk = read_size(self._limit_rate, READ_CHUNK)
            buffer = receive_buffer(self._limit_rate)
            options["socket_factory"] = functools.partial(_socket_receiving, buffer)
        socks = self._socks
        connector: aiohttp.TCPConnector
        if socks is None:
            connector = aiohttp.TCPConnector(**options)
        else:
            import aiohttp_socks  # loaded by socks_errors() already

            connector = aiohttp_socks.ProxyConnector(
                proxy_type=aiohttp_socks.ProxyType.SOCKS5,
                host=socks.host,
                port=socks.port or 1080,
                username=socks.username or None,
                password=socks.password or None,
                rdns=socks.scheme == "socks5h",  # socks5h: the proxy resolves names
                **options,
            )
        return aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
            read_bufsize=read_chunk,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request`; the body is streamed to the caller."""
        if self._session is None:
            self._resolver = resolver_for(asyncio.get_running_loop())
            self._session = self._open()
        ex = Exchange.of(request)
        url = yarl.URL(str(request.url), encoded=True)
        if url.raw_user is not None or url.raw_password is not None:
            # httpx made them an Authorization header; aiohttp refuses to get them twice.
            url = url.with_user(None)
        proxy = self._proxy or self._env_proxy(request.url)
        with _translated(ex, self._socks_errors):
            if self._verify is True and (url.scheme == "https" or _is_https(proxy)):
                await trust_store.ready()  # aiohttp's own contexts verify this one
            response = await self._session.request(
                request.method,
                url,
                headers=_header_items(request.headers),
                allow_redirects=False,
                proxy=proxy,
                timeout=self._timeout(ex.connect_timeout, ex.read_timeout),
            )
        ex.respond(response.status, response.content_length)
        answer = httpx.Response(
            status_code=response.status,
            stream=_ResponseStream(response, ex),
            request=request,
            extensions={
                "http_version": _http_version(response.version),
                "reason_phrase": (response.reason or "").encode("latin-1", "replace"),
            },
        )
        answer.headers = IndexedHeaders(response.raw_headers)
        return answer

    def _timeout(self, connect: float | None, read: float | None) -> aiohttp.ClientTimeout:
        # One object per pair of limits (a run has one or two), not one per request.
        key = (connect, read)
        if (timeout := self._timeouts.get(key)) is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)
            self._timeouts[key] = timeout
        return timeout

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
        resolver, self._resolver = self._resolver, None
        if session is not None:
            await session.close()
        if resolver is not None:
            await resolver.close()  # ours: the connector closes only the resolvers it made
            # Let the transports' close callbacks run before the loop goes away.
            await asyncio.sleep(0)


class HttpxTransport(httpx.AsyncBaseTransport):
    """httpx's own transport (httpcore: HTTP/2 over TLS), its errors in fetchcli's words.

    Wraps any httpx transport, so errors cross into fetchcli translated, whichever
    transport a request took.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` through the wrapped transport."""
        ex = Exchange.of(request)
        with _httpx_translated(ex):
            response = await self._inner.handle_async_request(request)
        ex.respond(response.status_code, content_length(response.headers))
        response.stream = _HttpxStream(response.stream, ex)
        return response

    async def __aenter__(self) -> HttpxTransport:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self._inner.__aexit__(exc_type, exc_value, traceback)

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self._inner.aclose()


class _HttpxStream(httpx.AsyncByteStream):
    def __init__(self, stream: httpx.SyncByteStream | httpx.AsyncByteStream, ex: Exchange) -> None:
        if not isinstance(stream, httpx.AsyncByteStream):
            msg = "an async transport must return an async stream"
            raise TypeError(msg)
        self._stream = stream
        self._ex = ex

    async def __aiter__(self) -> AsyncIterator[bytes]:
        ex = self._ex
        with _httpx_translated(ex):
            async for chunk in self._stream:
                ex.received += len(chunk)
                yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


@contextmanager
def _httpx_translated(ex: Exchange) -> Iterator[None]:
    try:
        yield
    except httpx.TransportError as exc:
        raise from_httpx(exc, ex) from exc
    except OSError as exc:
        raise from_os_error(exc, ex) from exc


def content_length(headers: httpx.Headers) -> int | None:
    """A Content-Length, or None when there is none that is a number."""
    value = headers.get("content-length")
    return int(value) if value is not None and value.isdigit() else None


class _NoCookies(httpx.Cookies):
    def extract_cookies(self, response: httpx.Response) -> None:
        """Keep nothing."""


class Client(httpx.AsyncClient):
    """An AsyncClient that keeps no cookies from one URL to the next, as curl does, and sends
    a streamed request straight to its transport when nothing of the client's own is asked.

    httpx parses every response's Set-Cookie into a jar through urllib's cookie machinery:
    measured here, a third of the client's cost per request, for cookies we would not send.
    The Fetcher follows redirects and puts logins on itself, so for it `send()` skips httpx's
    auth flow (an async generator per request), its redirect loop, event hooks and the
    elapsed-time stream wrapper: measured on loopback, about 8% of the CPU per request.
    """

    _no_cookies = _NoCookies()

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: httpx._types.AuthTypes | httpx._client.UseClientDefault | None = USE_CLIENT_DEFAULT,
        follow_redirects: bool | httpx._client.UseClientDefault = USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        """`AsyncClient.send`; streamed, with no login, hooks or redirects: the short way."""
        hooks = self.event_hooks
        if (
            not stream
            or auth is not USE_CLIENT_DEFAULT
            or follow_redirects not in (USE_CLIENT_DEFAULT, False)
            or self.auth is not None
            or self.follow_redirects
            or self.is_closed
            or request.url.userinfo  # httpx makes `user:password@` an Authorization header
            or hooks["request"]
            or hooks["response"]
        ):
            return await super().send(
                request, stream=stream, auth=auth, follow_redirects=follow_redirects
            )
        if "timeout" not in request.extensions:
            request.extensions = {**request.extensions, "timeout": self.timeout.as_dict()}
        transport = self._transport_for_url(request.url)  # the mounts: httpx pinned < 0.29
        response = await transport.handle_async_request(request)
        response.request = request
        return response

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
    verify: bool | ssl.SSLContext = options.verify
    if options.verify and options.cacert is not None:
        verify = await asyncio.to_thread(ca_context, options.cacert)
    limit_rate = settings.limits.limit_rate
    transport = AiohttpTransport(verify=verify, proxy=options.proxy, limit_rate=limit_rate)
    mounts: dict[str, httpx.AsyncBaseTransport | None] = {}
    if options.http2:
        if verify is True:
            verify = await asyncio.to_thread(ca_context, None)
        # aiohttp speaks HTTP/1.1 only; HTTP/2 is negotiated over TLS, so https goes to httpcore
        # (through a SOCKS proxy too: httpx[socks]).
        mounts["https://"] = HttpxTransport(
            httpx.AsyncHTTPTransport(
                http2=True,
                verify=verify,
                proxy=options.proxy,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
            )
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
