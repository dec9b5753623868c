"""What aiohttp and httpx raise, in fetchcli's words: translated once, at the transport boundary.

The transports (fetchcli/client.py) call these where a library error meets our code, so
the fetcher only ever sees a `FetchError` with its kind, a one-line message and, once the
response head arrived, its status. Every library class is mapped on purpose, most specific
first; tests/test_transport.py lists each aiohttp and httpx error class with the kind and
words it must get, and fails on a class it does not list.

An `Exchange` is the state of one request on the wire: where it was going, its time
limits, and how much of the body arrived, which is what a good message needs.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
import httpx
from aiohttp.http_exceptions import ContentLengthError, TransferEncodingError

from fetchcli.credentials import DEFAULT_PORTS
from fetchcli.errors import FetchError, PermanentError, TransientError
from fetchcli.kinds import ErrorKind

__all__ = [
    "Exchange",
    "body_cut_short",
    "from_aiohttp",
    "from_httpx",
    "from_os_error",
    "from_socks",
    "received",
    "seconds",
    "socks_errors",
]


@functools.cache
def socks_errors() -> tuple[type[Exception], ...]:
    """What a SOCKS proxy's failures come as, as `except` takes them: aiohttp-socks' own
    errors (0.10 on), which wrap python-socks' (raised bare by older releases).

    Loaded when a SOCKS proxy is used, not before: the two packages are 13 ms of a start.
    """
    import aiohttp_socks
    import python_socks

    return (
        aiohttp_socks.ProxyError,
        aiohttp_socks.ProxyConnectionError,
        aiohttp_socks.ProxyTimeoutError,
        python_socks.ProxyError,
        python_socks.ProxyConnectionError,
        python_socks.ProxyTimeoutError,
    )


# SOCKS5 reply codes (RFC 1928, 6) that another attempt will not change.
_SOCKS_FINAL = {
    2: "not allowed by its rules",
    7: "command not supported",
    8: "address type not supported",
}
_SOCKS_REPLIES = {
    1: "general failure",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
}


@dataclass(slots=True)
class Exchange:
    """One request on the wire, as far as it got."""

    host: str
    port: int
    connect_timeout: float | None = None
    read_timeout: float | None = None
    status: int | None = None  # set when the response head has arrived
    expected: int | None = None  # the response's Content-Length
    received: int = 0  # body bytes so far, as sent (before any decoding)

    @classmethod
    def of(cls, request: httpx.Request) -> Exchange:
        """The exchange `request` starts, with the time limits httpx gave it."""
        url = request.url
        timeout = request.extensions.get("timeout", {})
        return cls(
            host=url.host,
            port=url.port or DEFAULT_PORTS.get(url.scheme, 0),
            connect_timeout=timeout.get("connect"),
            read_timeout=timeout.get("read"),
        )

    @property
    def origin(self) -> str:
        """`host:port` as a person writes it (`[::1]:80` for IPv6)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def respond(self, status: int, expected: int | None) -> None:
        """Note that the response head arrived."""
        self.status = status
        self.expected = expected

    def failed(self, error: FetchError) -> FetchError:
        """`error`, with the status of the response it cut short, if any."""
        if error.status is None:
            error.status = self.status
        return error

    def in_body(self) -> str:
        """` after 1,000 of 2,000 bytes` while a body was arriving, else nothing."""
        return "" if self.status is None else f" after {received(self.received, self.expected)}"


def seconds(value: float) -> str:
    """`1.5 s`, `30 s`: a time limit as messages show it."""
    return f"{value:g} s"


def received(count: int, expected: int | None) -> str:
    """`1,000 of 2,000 bytes`, or `1,000 bytes` when the length was not announced."""
    return f"{count:,} of {expected:,} bytes" if expected is not None else f"{count:,} bytes"


def body_cut_short(count: int, expected: int | None, status: int | None) -> TransientError:
    """The body ended before its end: retried, as curl and wget do."""
    if expected is not None:
        msg = f"body cut short: {received(count, expected)}"
    else:
        msg = f"body cut short after {received(count, None)}"
    return TransientError(ErrorKind.TRUNCATED, msg, status=status)


def from_aiohttp(exc: aiohttp.ClientError, ex: Exchange) -> FetchError:
    """The fetchcli error for an aiohttp one raised during `ex`."""
    return ex.failed(_from_aiohttp(exc, ex))


def from_httpx(exc: httpx.TransportError, ex: Exchange) -> FetchError:
    """The fetchcli error for an httpx one raised during `ex` (httpx's own transport)."""
    return ex.failed(_from_httpx(exc, ex))


def from_os_error(exc: OSError, ex: Exchange) -> FetchError:
    """The fetchcli error for a bare OSError from a socket during `ex`."""
    return ex.failed(_from_os_error(exc, ex))


def from_socks(exc: Exception, ex: Exchange) -> FetchError:
    """The fetchcli error for one of `socks_errors()` (aiohttp-socks raises python-socks'
    errors, not aiohttp's)."""
    return ex.failed(_from_socks(exc, ex))


def _from_socks(exc: Exception, ex: Exchange) -> FetchError:
    import aiohttp_socks  # loaded already: `exc` is one of theirs
    import python_socks

    match exc:
        case aiohttp_socks.ProxyTimeoutError() | python_socks.ProxyTimeoutError():
            return TransientError(ErrorKind.PROXY, "connect to the SOCKS proxy timed out")
        case aiohttp_socks.ProxyConnectionError() | python_socks.ProxyConnectionError():
            cause = _os_cause(exc)
            reason = _reason(cause) if cause is not None else "unreachable"
            return TransientError(ErrorKind.PROXY, f"cannot connect to the SOCKS proxy: {reason}")
    code = getattr(exc, "error_code", None)
    if code in _SOCKS_FINAL:
        msg = f"SOCKS proxy refused {ex.origin}: {_SOCKS_FINAL[code]}"
        return PermanentError(ErrorKind.PROXY, msg)
    if code is not None:
        reason = _SOCKS_REPLIES.get(code, f"reply {code}")
        return TransientError(ErrorKind.PROXY, f"SOCKS proxy could not reach {ex.origin}: {reason}")
    if "authentication" in str(exc).lower():
        # A refused login is refused again: not retried.
        return PermanentError(ErrorKind.PROXY, "SOCKS proxy refused the login")
    return TransientError(ErrorKind.PROXY, f"SOCKS proxy failed: {_first_line(str(exc))}")


def _from_aiohttp(exc: aiohttp.ClientError, ex: Exchange) -> FetchError:
    # Most specific first: a class is matched by its first case, and many inherit twice.
    match exc:
        case aiohttp.ConnectionTimeoutError():
            return _connect_timed_out(ex)
        case aiohttp.ServerTimeoutError():  # SocketTimeoutError: sock_read ran out
            return _read_timed_out(ex)
        case aiohttp.ClientProxyConnectionError():
            msg = f"cannot connect to proxy {exc.host}:{exc.port}: {_reason(exc.os_error)}"
            return TransientError(ErrorKind.PROXY, msg)
        case aiohttp.ClientHttpProxyError():
            msg = f"proxy answered {exc.status} {exc.message}".strip()
            return TransientError(ErrorKind.PROXY, msg)
        case aiohttp.ClientConnectorCertificateError():
            return _untrusted(exc.certificate_error)
        case aiohttp.ClientConnectorError():  # DNS, TLS handshake, Unix socket, plain TCP
            return _connect_failed(ex, exc.os_error)
        case aiohttp.ServerFingerprintMismatch():
            msg = f"TLS certificate of {ex.origin} does not match the expected fingerprint"
            return PermanentError(ErrorKind.TLS, msg)
        case aiohttp.ServerDisconnectedError():
            return _closed(ex)
        case aiohttp.ClientPayloadError():
            return _bad_body(exc, ex)
        case aiohttp.ClientConnectionResetError():
            return _reset(ex)
        case aiohttp.ClientOSError() if isinstance(exc.__cause__, ssl.SSLError):
            # The TLS handshake after a SOCKS proxy's tunnel: aiohttp-socks wraps its error so.
            return _connect_failed(ex, exc.__cause__)
        case aiohttp.ClientOSError():
            return _from_os_error(exc, ex)
        case aiohttp.ClientConnectionError():  # ServerConnectionError, "Connection closed"
            msg = f"connection to {ex.origin} lost{ex.in_body()}"
            return TransientError(ErrorKind.NETWORK, msg)
        case aiohttp.TooManyRedirects() | aiohttp.RedirectClientError():
            # aiohttp never follows redirects here (the fetcher does): kept for completeness.
            return PermanentError(ErrorKind.REDIRECT, "redirect refused")
        case aiohttp.ContentTypeError() | aiohttp.WSServerHandshakeError():
            # Raised by .json() and websockets, which the transport never uses.
            return PermanentError(ErrorKind.PROTOCOL, f"unexpected response from {ex.origin}")
        case aiohttp.ClientResponseError():  # a response head that is not HTTP
            return _malformed(ex, exc.message)
        case aiohttp.InvalidURL() | aiohttp.NonHttpUrlClientError():
            return PermanentError(ErrorKind.INVALID_URL, "not a URL fetchcli can request")
        case aiohttp.UploadAbortedError():
            msg = f"request to {ex.origin} not fully sent"
            return TransientError(ErrorKind.NETWORK, msg)
        case _:  # ClientError itself: aiohttp raises it bare only in its digest-auth helper
            return TransientError(ErrorKind.NETWORK, f"request to {ex.origin} failed")


def _from_httpx(exc: httpx.TransportError, ex: Exchange) -> FetchError:
    match exc:
        case httpx.ConnectTimeout():
            return _connect_timed_out(ex)
        case httpx.ReadTimeout():
            return _read_timed_out(ex)
        case httpx.WriteTimeout():
            msg = f"write timed out: {ex.origin} took no data"
            return TransientError(ErrorKind.TIMEOUT, msg)
        case httpx.PoolTimeout():
            msg = f"timed out waiting for a connection to {ex.origin}"
            return TransientError(ErrorKind.TIMEOUT, msg)
        case httpx.TimeoutException():
            return TransientError(ErrorKind.TIMEOUT, f"timed out{ex.in_body()}")
        case httpx.ConnectError():
            return _connect_failed(ex, _os_cause(exc))
        case httpx.NetworkError():  # ReadError, WriteError, CloseError
            cause = _os_cause(exc)
            if isinstance(cause, OSError) and not isinstance(cause, ssl.SSLError):
                return _from_os_error(cause, ex)
            msg = f"connection to {ex.origin} lost{ex.in_body()}"
            return TransientError(ErrorKind.NETWORK, msg)
        case httpx.RemoteProtocolError() if ex.status is not None:
            # h11 and h2 say so when the connection or the stream ends mid-body.
            return body_cut_short(ex.received, ex.expected, ex.status)
        case httpx.RemoteProtocolError():
            return TransientError(ErrorKind.PROTOCOL, f"malformed response from {ex.origin}")
        case httpx.LocalProtocolError():
            return PermanentError(ErrorKind.PROTOCOL, "the request is not valid HTTP")
        case httpx.ProtocolError():
            return TransientError(ErrorKind.PROTOCOL, f"HTTP protocol error with {ex.origin}")
        case httpx.ProxyError():
            return TransientError(ErrorKind.PROXY, f"proxy failed for {ex.origin}")
        case httpx.UnsupportedProtocol():
            return PermanentError(ErrorKind.INVALID_URL, "not a URL fetchcli can request")
        case _:  # TransportError itself
            msg = f"transfer from {ex.origin} failed{ex.in_body()}"
            return TransientError(ErrorKind.NETWORK, msg)


def _from_os_error(exc: OSError, ex: Exchange) -> FetchError:
    if isinstance(exc, TimeoutError) and exc.errno is None:
        return TransientError(ErrorKind.TIMEOUT, f"timed out{ex.in_body()}")
    if exc.errno == errno.ECONNRESET:
        return _reset(ex)
    if exc.errno == errno.EPIPE:
        return _closed(ex)
    if exc.errno == errno.ECONNREFUSED:
        return TransientError(ErrorKind.CONNECT, f"connection refused by {ex.origin}")
    msg = f"connection to {ex.origin} failed{ex.in_body()}: {_reason(exc)}"
    return TransientError(ErrorKind.NETWORK, msg)


def _connect_failed(ex: Exchange, cause: BaseException | None) -> FetchError:
    """No connection: say why, from the OS or TLS error underneath."""
    match cause:
        case ssl.SSLCertVerificationError():
            return _untrusted(cause)
        case ssl.SSLError():
            msg = f"TLS handshake with {ex.origin} failed: {_ssl_reason(cause)}"
            return TransientError(ErrorKind.TLS, msg)
        case socket.gaierror() if cause.errno == socket.EAI_AGAIN:
            # A resolver that could not answer now may answer later.
            return TransientError(ErrorKind.DNS, f"cannot resolve {ex.host} now: try again")
        case socket.gaierror():
            return PermanentError(ErrorKind.DNS, f"no such host: {ex.host}")
        case ConnectionRefusedError():
            return TransientError(ErrorKind.CONNECT, f"connection refused by {ex.origin}")
        case TimeoutError():
            msg = f"connect to {ex.origin} timed out (no answer)"
            return TransientError(ErrorKind.CONNECT, msg)
        case OSError():
            msg = f"cannot connect to {ex.origin}: {_reason(cause)}"
            return TransientError(ErrorKind.CONNECT, msg)
        case _:
            return TransientError(ErrorKind.CONNECT, f"cannot connect to {ex.origin}")


def _untrusted(cause: BaseException) -> PermanentError:
    # A certificate that fails verification will fail again: not retried.
    reason = (getattr(cause, "verify_message", None) or "verification failed").rstrip(".")
    reason = reason[:1].lower() + reason[1:]
    return PermanentError(ErrorKind.TLS, f"TLS certificate not trusted: {reason}")


def _connect_timed_out(ex: Exchange) -> TransientError:
    limit = "" if ex.connect_timeout is None else f" after {seconds(ex.connect_timeout)}"
    return TransientError(ErrorKind.TIMEOUT, f"connect timed out{limit}")


def _read_timed_out(ex: Exchange) -> TransientError:
    limit = "" if ex.read_timeout is None else f": no data for {seconds(ex.read_timeout)}"
    progress = "" if ex.status is None else f" ({received(ex.received, ex.expected)} received)"
    return TransientError(ErrorKind.TIMEOUT, f"read timed out{limit}{progress}")


def _reset(ex: Exchange) -> TransientError:
    msg = f"connection reset by {ex.origin}{ex.in_body()}"
    return TransientError(ErrorKind.NETWORK, msg)


def _closed(ex: Exchange) -> TransientError:
    if ex.status is None:
        msg = f"{ex.origin} closed the connection without a response"
        return TransientError(ErrorKind.PROTOCOL, msg)
    return body_cut_short(ex.received, ex.expected, ex.status)


def _malformed(ex: Exchange, detail: str) -> TransientError:
    detail = _first_line(detail)
    what = f": {detail[:1].lower()}{detail[1:]}" if detail else ""
    return TransientError(ErrorKind.PROTOCOL, f"malformed response from {ex.origin}{what}")


def _bad_body(exc: aiohttp.ClientPayloadError, ex: Exchange) -> TransientError:
    cause = exc.__cause__
    if isinstance(cause, (ContentLengthError, TransferEncodingError)) or (
        ex.expected is not None and ex.received < ex.expected
    ):
        return body_cut_short(ex.received, ex.expected, ex.status)
    msg = f"malformed body from {ex.origin}{ex.in_body()}"
    return TransientError(ErrorKind.PROTOCOL, msg)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def _os_cause(exc: BaseException) -> OSError | None:
    """The OS or TLS error under an httpx one (httpcore and anyio keep it as a cause).

    The first with an error number: anyio puts its own "All connection attempts failed"
    over the socket's ConnectionRefusedError.
    """
    errors = [cause for cause in _causes(exc) if isinstance(cause, OSError)]
    return next((error for error in errors if error.errno is not None), None) or next(
        iter(errors), None
    )


def _reason(exc: BaseException) -> str:
    """`connection refused`: the OS's words for an error, without its number."""
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError) and (exc.errno or 0) > 0:
        text = os.strerror(exc.errno or 0)
    else:
        text = _first_line(str(exc)) or type(exc).__name__
    return text[:1].lower() + text[1:]


def _ssl_reason(exc: ssl.SSLError) -> str:
    """`wrong version number`: OpenSSL's reason code, in words."""
    reason = getattr(exc, "reason", None)  # set by the ssl module, absent on one built by hand
    return str(reason).lower().replace("_", " ") if reason else "TLS error"


def _first_line(text: str) -> str:
    """The first line of a library's message, without a trailing colon."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line.rstrip(":")
