"""A misbehaving, instrumented HTTP/1.1 server on 127.0.0.1 for fetchcli's tests.

Every byte on the wire is written here, on plain asyncio streams (no HTTP library), so a route
can do exactly the wrong thing a real server does: reset mid-body, close early, drip, hang.
The request target is recorded and routed exactly as received, never normalised or decoded.

Routes (the first path segment decides; `<key>` is any text, so each test owns its counters;
"attempt" is the 1-based count of requests for the exact raw target, query included, over the
server's life; `size=N` anywhere means the body is body_for(target, N), else body_for(target)):

    /ok/<any>?size=N&type=<mime>           200, the body (Content-Type `type`, default text/plain)
       ...&encoding=<coding>               ... claiming `Content-Encoding: coding`, sent as is
    /slow/<key>?delay=S                    wait S seconds (default 1), then as /ok
    /status/<code>[/<key>]                 that status, short body (none for 204 and 304)
    /flaky/<key>?fail=K&status=503         attempts <= K (default 1): `status`; then as /ok
    /retry-after/<key>?fail=K&after=S&status=429&form=seconds|date
                                           attempts <= K (default 1): `status` + Retry-After
                                           (S verbatim, default 1, or with form=date an
                                           HTTP-date S s ahead); then as /ok
    /reset/<key>?fail=K&size=N&after=M     attempts <= K (default always): Content-Length of the
                                           body, its first M bytes (default half), then a TCP
                                           RST; later as /ok
    /truncate/<key>?fail=K&size=N&send=M   as /reset but a clean close (FIN) after M bytes
    /chunked/<key>?size=N&truncate=1       the body chunked; truncate=1 closes (FIN) after half
                                           of it, without the terminating 0-chunk
    /drip/<key>?bytes=N&interval=S         Content-Length N (default 8), one byte every S s
                                           (default 0.1), each after its wait
    /hang/<key>                            never answers, until the client or the server leaves
    /empty/<key>?how=fin|rst               ends the connection (FIN, or a TCP RST with how=rst)
                                           without a byte of answer
    /garbage/<key>                         a status line that is not HTTP, then a close
    /redirect/chain/<key>/<n>?status=302   `status` to .../<n-1> (query kept); n=0: as /ok
    /redirect/loop/<key>/a ↔ .../b         `status` (302) to the other one, forever (query kept)
    /redirect/to/<key>?url=<url>&status=302  `status` to the percent-decoded `url`
    /headers/<key>                         200, JSON object of the request headers
    /big/<key>?size=N                      200, N bytes (default 1 MiB), application/octet-stream
    /gzip/<key>?size=N                     200, Content-Encoding: gzip of the body
    /gzip-bomb/<key>?size=N                200, Content-Encoding: gzip of N zero bytes
                                           (default 1 GiB), ~1 KiB per MiB on the wire
    anything else                          404; a bad parameter gives 400
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
import json
import logging
import math
import random
import socket
import ssl
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from email.utils import formatdate
from http import HTTPStatus
from types import TracebackType
from urllib.parse import parse_qsl

__all__ = ["FaultServer", "body_for", "gzip_bomb", "http_date", "iter_body"]

logger = logging.getLogger(__name__)

BLOCK = 1 << 20
ALWAYS = 1 << 62  # "fail=K" default for routes that misbehave forever
_STEP = 104_729  # odd: the rotation of MiB k (see iter_body) repeats only after 1 TiB
_MAX_HEAD = 64 * 1024
_CLIENT_GONE = (ConnectionError, asyncio.IncompleteReadError)

Chunk = bytes | memoryview


# --- Bodies -------------------------------------------------------------------------------


@functools.cache
def _pattern() -> memoryview:
    block = random.Random(0x5EED).randbytes(BLOCK)
    # Doubled, so any rotation of the block is one zero-copy slice.
    return memoryview(block + block)


def _encode(target: str) -> bytes:
    return target.encode("utf-8", "surrogatepass")


def iter_body(target: str, size: int) -> Iterator[memoryview]:
    """body_for(target, size) as pieces of at most 1 MiB, without ever building it whole."""
    if size < 0:
        raise ValueError("size must not be negative")
    pattern = _pattern()
    start = zlib.crc32(_encode(target)) % BLOCK
    for index, offset in enumerate(range(0, size, BLOCK)):
        # Each MiB is a different rotation, so a client that duplicates or drops a whole MiB
        # still produces a mismatch.
        rotation = (start + index * _STEP) % BLOCK
        yield pattern[rotation : rotation + min(BLOCK, size - offset)]


def body_for(target: str, size: int | None = None) -> bytes:
    """The deterministic body of the normal routes for this raw target.

    Without size: ~300 bytes of text naming the target. With size: exactly `size`
    pseudo-random bytes that depend on the target (stream big ones with iter_body).
    """
    if size is not None:
        return b"".join(iter_body(target, size))
    digest = hashlib.sha256(_encode(target)).hexdigest()
    lines = [f"fetchcli test body for {target}"]
    lines += [digest[i:] + digest[:i] for i in range(0, 64, 16)]
    return _encode("\n".join(lines) + "\n")


def http_date(seconds_from_now: float) -> str:
    """An HTTP-date at least `seconds_from_now` ahead (rounded up to the whole second)."""
    return formatdate(math.ceil(time.time() + seconds_from_now), usegmt=True)


def _gf2_times(matrix: list[int], vector: int) -> int:
    total = 0
    for column in matrix:
        if not vector:
            break
        if vector & 1:
            total ^= column
        vector >>= 1
    return total


def _crc32_of_zeros(length: int) -> int:
    """zlib.crc32(bytes(length)) in O(log length) rather than a pass over GiBs of zeros.

    A zero byte maps the CRC register linearly (over GF(2)), so a run of them is a matrix
    power: zlib's crc32_combine trick.
    """
    operator = [0xEDB88320] + [1 << i for i in range(31)]  # one zero bit
    for _ in range(3):  # -> one zero byte
        operator = [_gf2_times(operator, column) for column in operator]
    register = 0xFFFFFFFF
    while length:
        if length & 1:
            register = _gf2_times(operator, register)
        length >>= 1
        if length:
            operator = [_gf2_times(operator, column) for column in operator]
    return register ^ 0xFFFFFFFF


@functools.lru_cache(maxsize=4)
def gzip_bomb(size: int) -> bytes:
    """A valid gzip member that inflates to `size` zero bytes (~1 KiB per MiB)."""
    if size < 0:
        raise ValueError("size must not be negative")
    full, rest = divmod(size, BLOCK)
    mib = zlib.compressobj(9, zlib.DEFLATED, -15)
    # A full flush leaves the unit byte-aligned and free of back-references, so copies of it
    # concatenate into a valid stream: N MiB cost one MiB of compression.
    unit = mib.compress(bytes(BLOCK)) + mib.flush(zlib.Z_FULL_FLUSH)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    last = tail.compress(bytes(rest)) + tail.flush()
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, mtime 0
    trailer = struct.pack("<II", _crc32_of_zeros(size), size & 0xFFFFFFFF)
    return b"".join([header, unit * full, last, trailer])


def _take(chunks: Iterable[Chunk], limit: int) -> Iterator[memoryview]:
    for chunk in chunks:
        if limit <= 0:
            return
        view = memoryview(chunk)[:limit]
        limit -= len(view)
        yield view


def _pieces(chunks: Iterable[Chunk], size: int) -> Iterator[memoryview]:
    for chunk in chunks:
        view = memoryview(chunk)
        for start in range(0, len(view), size):
            yield view[start : start + size]


# --- One request and its answer -----------------------------------------------------------


class _BadRequest(Exception):
    """A parameter or path that makes no sense: answered 400 if nothing was sent yet."""


class _Exchange:
    """One parsed request, and the primitives the routes answer (or misbehave) with."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        method: str,
        target: str,
        headers: dict[str, str],
        keep_alive: bool,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.method = method
        self.target = target
        self.headers = headers
        self.keep_alive = keep_alive
        self.path, _, self.query = target.partition("?")
        self.params = dict(parse_qsl(self.query, keep_blank_values=True))
        self.attempt = 0
        self.started = False

    @property
    def is_head(self) -> bool:
        return self.method == "HEAD"

    def rest(self, prefix: str) -> str:
        """The path after `prefix` (e.g. "/flaky/"): the key."""
        return self.path[len(prefix) :]

    def number(self, name: str, default: float) -> float:
        """A finite, non-negative query parameter (400 otherwise)."""
        try:
            value = float(self.params.get(name, default))
        except ValueError:
            value = -1.0
        if not 0 <= value < math.inf:
            message = f"{name} must be a non-negative number"
            raise _BadRequest(message)
        return value

    def integer(self, name: str, default: int) -> int:
        """A non-negative integer query parameter (400 otherwise)."""
        value = self.params.get(name, str(default))
        if not value.isdigit():
            message = f"{name} must be a non-negative integer"
            raise _BadRequest(message)
        return int(value)

    def body(self) -> tuple[int, Iterable[Chunk]]:
        """(length, pieces) of this target's body: body_for(target, size=N) or the short one."""
        if "size" not in self.params:
            short = body_for(self.target)
            return len(short), [short]
        size = self.integer("size", 0)
        return size, iter_body(self.target, size)

    async def start(
        self,
        status: int,
        headers: Iterable[tuple[str, str]] = (),
        length: int | None = None,
    ) -> None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Whatever"
        lines = [f"HTTP/1.1 {status} {reason}", *(f"{name}: {value}" for name, value in headers)]
        if length is not None:
            lines.append(f"Content-Length: {length}")
        if not self.keep_alive:
            lines.append("Connection: close")
        self.started = True
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await self.writer.drain()

    async def send(self, chunks: Iterable[Chunk]) -> None:
        if self.is_head:
            return
        for chunk in chunks:
            self.writer.write(chunk)
            await self.writer.drain()

    async def respond(
        self,
        status: int,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
        content_type: str = "text/plain",
    ) -> None:
        await self.start(status, [("Content-Type", content_type), *headers], len(body))
        await self.send([body])

    async def respond_body(self, content_type: str = "text/plain") -> None:
        """200 with this target's body, streamed."""
        length, chunks = self.body()
        headers = [("Content-Type", self.params.get("type", content_type))]
        if "encoding" in self.params:
            headers.append(("Content-Encoding", self.params["encoding"]))
        await self.start(200, headers, length)
        await self.send(chunks)

    async def close(self) -> None:
        """End the connection cleanly: everything written, then a FIN."""
        self.keep_alive = False
        self.writer.close()
        await self.writer.wait_closed()

    async def reset(self) -> None:
        """End the connection with a TCP RST once what was written has reached the kernel."""
        self.keep_alive = False
        transport = self.writer.transport
        transport.set_write_buffer_limits(0)  # drain() now waits for an empty buffer
        await self.writer.drain()
        sock = self.writer.get_extra_info("socket")
        # Linger on, timeout 0: close() discards the connection with a RST instead of a FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()


# --- Routes -------------------------------------------------------------------------------


async def _ok(ex: _Exchange) -> None:
    await ex.respond_body()


async def _slow(ex: _Exchange) -> None:
    await asyncio.sleep(ex.number("delay", 1))
    await ex.respond_body()


async def _status(ex: _Exchange) -> None:
    code = ex.rest("/status/").partition("/")[0]
    if not code.isdigit() or not 200 <= int(code) <= 599:
        raise _BadRequest("status code must be 200-599")
    status = int(code)
    if status in (204, 304):
        await ex.start(status)  # neither may carry a body (nor, for 204, a Content-Length)
    else:
        await ex.respond(status, f"status {status}\n".encode())


async def _flaky(ex: _Exchange) -> None:
    if ex.attempt <= ex.integer("fail", 1):
        status = ex.integer("status", 503)
        await ex.respond(status, f"flaky failure {ex.attempt}\n".encode())
    else:
        await ex.respond_body()


async def _retry_after(ex: _Exchange) -> None:
    if ex.attempt > ex.integer("fail", 1):
        await ex.respond_body()
        return
    after = ex.params.get("after", "1")
    form = ex.params.get("form", "seconds")
    if form == "date":
        after = http_date(ex.number("after", 1))
    elif form != "seconds":
        raise _BadRequest("form must be seconds or date")
    status = ex.integer("status", 429)
    await ex.respond(status, b"slow down\n", [("Retry-After", after)])


async def _cut_short(ex: _Exchange, sent_param: str, end: Callable[[], Awaitable[None]]) -> None:
    if ex.attempt > ex.integer("fail", ALWAYS):
        await ex.respond_body()
        return
    length, chunks = ex.body()
    sent = ex.integer(sent_param, length // 2)
    await ex.start(200, [("Content-Type", ex.params.get("type", "text/plain"))], length)
    await ex.send(_take(chunks, sent))
    await end()


async def _reset(ex: _Exchange) -> None:
    await _cut_short(ex, "after", ex.reset)


async def _truncate(ex: _Exchange) -> None:
    await _cut_short(ex, "send", ex.close)


async def _chunked(ex: _Exchange) -> None:
    length, chunks = ex.body()
    truncate = ex.params.get("truncate") == "1"
    await ex.start(200, [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked")])
    if ex.is_head:
        return
    # Four chunks for a small body, 64 KiB ones for a big body.
    sent = 0
    for piece in _pieces(chunks, max(1, min(64 * 1024, -(-length // 4)))):
        if truncate and sent >= length // 2:
            break
        ex.writer.writelines([b"%x\r\n" % len(piece), piece, b"\r\n"])
        await ex.writer.drain()
        sent += len(piece)
    if truncate:
        await ex.close()  # mid-stream, without the terminating 0-chunk
        return
    ex.writer.write(b"0\r\n\r\n")
    await ex.writer.drain()


async def _drip(ex: _Exchange) -> None:
    length = ex.integer("bytes", 8)
    interval = ex.number("interval", 0.1)
    await ex.start(200, [("Content-Type", "application/octet-stream")], length)
    if ex.is_head:
        return
    for piece in _pieces(iter_body(ex.target, length), 1):
        await asyncio.sleep(interval)
        ex.writer.write(piece)
        await ex.writer.drain()


async def _hang(ex: _Exchange) -> None:
    ex.keep_alive = False
    while await ex.reader.read(65536):  # until the client closes; anything it sends is ignored
        pass


async def _empty(ex: _Exchange) -> None:
    how = ex.params.get("how", "fin")
    if how not in ("fin", "rst"):
        raise _BadRequest("how must be fin or rst")
    await (ex.reset() if how == "rst" else ex.close())


async def _garbage(ex: _Exchange) -> None:
    ex.started = True
    ex.writer.write(b"HTTP/1.1 abc Nonsense\r\nContent-Length: 2\r\n\r\nhi")
    await ex.close()


async def _redirect(ex: _Exchange) -> None:
    kind, _, rest = ex.rest("/redirect/").partition("/")
    status = ex.integer("status", 302)
    query = f"?{ex.query}" if ex.query else ""
    key, _, last = rest.rpartition("/")
    if kind == "chain" and key and last.isdigit():
        if int(last) == 0:
            await ex.respond_body()
            return
        location = f"/redirect/chain/{key}/{int(last) - 1}{query}"
    elif kind == "loop" and key and last in ("a", "b"):
        location = f"/redirect/loop/{key}/{'b' if last == 'a' else 'a'}{query}"
    elif kind == "to" and "url" in ex.params:
        location = ex.params["url"]
    else:
        await ex.respond(404, b"no such redirect\n")
        return
    await ex.respond(status, b"redirecting\n", [("Location", location)])


async def _headers(ex: _Exchange) -> None:
    body = json.dumps(ex.headers, sort_keys=True).encode()
    await ex.respond(200, body, content_type="application/json")


async def _big(ex: _Exchange) -> None:
    size = ex.integer("size", BLOCK)
    await ex.start(200, [("Content-Type", "application/octet-stream")], size)
    await ex.send(iter_body(ex.target, size))


async def _gzip(ex: _Exchange) -> None:
    _, chunks = ex.body()
    payload = gzip.compress(b"".join(chunks), mtime=0)
    await ex.respond(200, payload, [("Content-Encoding", "gzip")])


async def _gzip_bomb(ex: _Exchange) -> None:
    payload = gzip_bomb(ex.integer("size", 1 << 30))
    headers = [("Content-Type", "application/octet-stream"), ("Content-Encoding", "gzip")]
    await ex.start(200, headers, len(payload))
    await ex.send(_pieces([payload], BLOCK))


_ROUTES: dict[str, Callable[[_Exchange], Awaitable[None]]] = {
    "ok": _ok,
    "slow": _slow,
    "status": _status,
    "flaky": _flaky,
    "retry-after": _retry_after,
    "reset": _reset,
    "truncate": _truncate,
    "chunked": _chunked,
    "drip": _drip,
    "hang": _hang,
    "empty": _empty,
    "garbage": _garbage,
    "redirect": _redirect,
    "headers": _headers,
    "big": _big,
    "gzip": _gzip,
    "gzip-bomb": _gzip_bomb,
}


async def _dispatch(ex: _Exchange) -> None:
    first = ex.path.split("/")[1] if ex.path.startswith("/") else ""
    route = _ROUTES.get(first) if ex.path.startswith(f"/{first}/") else None
    try:
        if route is None:
            await ex.respond(404, b"not found\n")
        else:
            await route(ex)
    except _BadRequest as exc:
        if ex.started:
            raise
        await ex.respond(400, f"{exc}\n".encode())


async def _refuse(writer: asyncio.StreamWriter, status: str) -> None:
    """Answer a request that could not even be parsed, and give up on the connection."""
    writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()


# --- The server -----------------------------------------------------------------------------


class FaultServer:
    """The fault routes above on 127.0.0.1, served by an event loop in a daemon thread."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl = ssl_context  # serve https with this context; plain http without one
        self._cond = threading.Condition()
        self._hits: Counter[str] = Counter()
        # Fault sequencing ("first K attempts") is never reset, unlike the statistics.
        self._attempts: Counter[str] = Counter()
        self._last_headers: dict[str, dict[str, str]] = {}
        self._total_hits = 0
        self._connections = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._errors: list[BaseException] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._port = 0
        # Connection handler task -> its writer, so stop() can abort every socket.
        self._open: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    # Lifecycle

    def start(self) -> FaultServer:
        if self._thread is not None:
            raise RuntimeError("FaultServer already started")
        self._ready.clear()
        self._port = 0
        self._thread = threading.Thread(target=self._run, name="FaultServer", daemon=True)
        self._thread.start()
        self._ready.wait()
        if not self._port:
            self._thread.join()
            self._thread = None
            raise RuntimeError("FaultServer failed to start") from self._take_errors_or_none()
        return self

    def stop(self) -> None:
        """Close the listener and every connection at once, hung ones included."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None or loop is None or stopping is None:
            return
        loop.call_soon_threadsafe(stopping.set)
        thread.join()
        self._thread = None

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # Addresses

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        scheme = "https" if self._ssl else "http"
        return f"{scheme}://127.0.0.1:{self._port}"

    def url(self, path: str) -> str:
        """base_url + path, verbatim: no quoting, no normalisation."""
        return self.base_url + path

    # Instrumentation (thread-safe)

    def hits(self, target: str) -> int:
        """Requests received for this exact raw target (query included) since reset_stats()."""
        with self._cond:
            return self._hits[target]

    @property
    def total_hits(self) -> int:
        with self._cond:
            return self._total_hits

    @property
    def connections(self) -> int:
        """Connections accepted since reset_stats()."""
        with self._cond:
            return self._connections

    @property
    def in_flight(self) -> int:
        """Requests read but not yet fully answered (hung ones included)."""
        with self._cond:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        with self._cond:
            return self._max_in_flight

    def last_headers(self, target: str) -> dict[str, str]:
        """Headers (lower-cased names) of the latest request for target; KeyError if none."""
        with self._cond:
            return dict(self._last_headers[target])

    def wait_for_hits(self, target: str, count: int, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._hits[target] >= count, timeout)

    def wait_in_flight(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until at least `count` requests are in flight."""
        with self._cond:
            return self._cond.wait_for(lambda: self._in_flight >= count, timeout)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is in flight (e.g. hung clients have gone away)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._in_flight == 0, timeout)

    def reset_stats(self) -> None:
        """Zero hits, total_hits, connections and last_headers; max_in_flight := in_flight.
        Fault sequencing ("the first K attempts") carries on regardless."""
        with self._cond:
            self._hits.clear()
            self._last_headers.clear()
            self._total_hits = 0
            self._connections = 0
            self._max_in_flight = self._in_flight

    def take_errors(self) -> list[BaseException]:
        """Unexpected server-side failures since the last call (client disconnects are not)."""
        with self._cond:
            errors, self._errors = self._errors, []
            return errors

    def _take_errors_or_none(self) -> BaseException | None:
        errors = self.take_errors()
        return errors[0] if errors else None

    def _record_error(self, error: BaseException) -> None:
        logger.error("FaultServer failure", exc_info=error)
        with self._cond:
            self._errors.append(error)

    def _begin(self, target: str, headers: dict[str, str]) -> int:
        with self._cond:
            self._hits[target] += 1
            self._attempts[target] += 1
            self._total_hits += 1
            self._last_headers[target] = headers
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            self._cond.notify_all()
            return self._attempts[target]

    def _end(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    # The event loop thread

    def _run(self) -> None:
        try:
            # Never in asyncio debug mode (PYTHONASYNCIODEBUG, -X dev): it logs every client
            # disconnect with a traceback, and this loop is test infrastructure, not under test.
            asyncio.run(self._main(), debug=False)
        except BaseException as exc:
            self._record_error(exc)
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.set_exception_handler(self._on_loop_error)
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(
            self._serve, "127.0.0.1", 0, limit=_MAX_HEAD, backlog=4096, ssl=self._ssl
        )
        self._port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            await asyncio.sleep(0)  # connections accepted just now get their handler going
            for writer in self._open.values():
                writer.transport.abort()
            tasks = list(self._open)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        error = context.get("exception")
        if isinstance(error, ConnectionError):
            return  # a client went away: routine here
        self._record_error(
            error if isinstance(error, BaseException) else RuntimeError(context.get("message"))
        )
        loop.default_exception_handler(context)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open[task] = writer
        with self._cond:
            self._connections += 1
        try:
            while await self._serve_one(reader, writer):
                pass
        except _CLIENT_GONE:
            pass
        except asyncio.CancelledError:
            # Only stop() cancels. Ending normally matters: on a cancelled task, the done
            # callback of Python 3.11's StreamReaderProtocol calls task.exception(), which
            # raises and gets logged.
            pass
        except Exception as exc:
            self._record_error(exc)
        finally:
            del self._open[task]
            writer.close()  # a no-op after abort(); the loop closes the socket soon after

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read and answer one request; whether the connection may carry another."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False  # the client closed between requests
        except asyncio.LimitOverrunError:
            await _refuse(writer, "431 Request Header Fields Too Large")
            return False
        # latin-1 maps bytes to code points one to one: the target stays exactly as sent.
        lines = head.decode("latin-1").split("\r\n")
        while lines and not lines[0]:
            lines.pop(0)  # stray CRLFs before a request line are allowed (RFC 9112 2.2)
        parts = lines[0].split(" ") if lines else []
        headers: dict[str, str] = {}
        for line in filter(None, lines[1:]):
            name, colon, value = line.partition(":")
            if not colon:
                parts = []
                break
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
            await _refuse(writer, "400 Bad Request")
            return False
        method, target, version = parts
        tokens = {token.strip().lower() for token in headers.get("connection", "").split(",")}
        keep_alive = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
        ex = _Exchange(reader, writer, method, target, headers, keep_alive)
        ex.attempt = self._begin(target, headers)
        try:
            if "chunked" in headers.get("transfer-encoding", ""):
                ex.keep_alive = False
                await ex.respond(501, b"chunked request bodies are not supported\n")
            elif headers.get("content-length", "0").isdigit():
                await reader.readexactly(int(headers.get("content-length", "0")))
                await _dispatch(ex)
            else:
                ex.keep_alive = False
                await ex.respond(400, b"bad Content-Length\n")
        finally:
            self._end()
        return ex.keep_alive
