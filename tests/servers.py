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
    /digest/<key>?field=F&algorithm=A&fail=K  200, the body with `F: A=:base64:` (default
                                           Repr-Digest, sha-256) of it; attempts <= K (default
                                           0) send it with its first byte changed
    /set-cookie/<key>?cookie=C&to=<url>    200 with `Set-Cookie: C` (percent-decoded); with
                                           `to`, a 302 there instead
    /big/<key>?size=N                      200, N bytes (default 1 MiB), application/octet-stream
    /gzip/<key>?size=N                     200, Content-Encoding: gzip of the body
    /gzip-bomb/<key>?size=N                200, Content-Encoding: gzip of N zero bytes
                                           (default 1 GiB), ~1 KiB per MiB on the wire

  Continuing and refreshing (a body whose version is n is body_for(f"{target}#{n}", N), N =
  size, default 1 MiB; version 1 unless said; the validators are ETag and Last-Modified):
    /range/<key>?size=N&fail=K&cut=M&validators=both|etag|date|none&weak=1&encoding=gzip&rate=B
                                           a static file done right: Accept-Ranges, honours
                                           Range (one range: a-, a-b, -n), If-Range (strong
                                           ETag or exact date), If-None-Match (weak compare,
                                           before If-Modified-Since): 200, 206, 304, or 416
                                           with `*/length`. Attempts <= K (default 0) send M
                                           bytes of their body (default half) then a TCP RST
                                           (end=fin: a clean close; end=stall: silence until
                                           the client leaves).
                                           weak=1: a W/ ETag; encoding=gzip: the body is
                                           gzip(version) with Content-Encoding, and ranges
                                           count its bytes; rate=B: the body at B bytes/s
    /norange/<key>?...                     as /range, but Range is ignored: always a full 200
    /changing/<key>?...                    as /range, but attempt n serves version n (ETag
                                           "v<n>", a later Last-Modified), so If-Range never
                                           holds: a full 200 (a bare Range gets a 206 of it)
    /wrong-range/<key>?...                 as /range, but every 206 is the whole body from
                                           byte 0 (Content-Range 0-end), whatever was asked
  `bytes_sent(target)` counts the body bytes a target's answers sent (all routes but /chunked
  and /drip).

    anything else                          404; a bad parameter gives 400
"""

from __future__ import annotations

import asyncio
import base64
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
from email.utils import formatdate, parsedate_to_datetime
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
        self.count_sent: Callable[[int], None] = lambda size: None  # body bytes, as written

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
            self.count_sent(len(chunk))
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
        # Wait out the interval, or until the client goes away: a long drip must not stay "in
        # flight" (max_in_flight, wait_idle) for seconds after its test has ended.
        try:
            if not await asyncio.wait_for(ex.reader.read(1), interval):
                return  # the client closed its end
        except TimeoutError:
            pass
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


async def _digest(ex: _Exchange) -> None:
    _, chunks = ex.body()
    body = b"".join(chunks)
    algorithm = ex.params.get("algorithm", "sha-256")
    hashed = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}.get(algorithm)
    if hashed is None:
        raise _BadRequest("algorithm must be sha-256 or sha-512")
    value = f"{algorithm}=:{base64.b64encode(hashed(body).digest()).decode()}:"
    if ex.attempt <= ex.integer("fail", 0):
        body = bytes([body[0] ^ 1]) + body[1:]  # same length, one bit off
    field = ex.params.get("field", "Repr-Digest")
    await ex.respond(200, body, [(field, value)])


async def _set_cookie(ex: _Exchange) -> None:
    headers = [("Set-Cookie", ex.params.get("cookie", "session=1"))]
    if "to" in ex.params:
        await ex.respond(302, b"redirecting\n", [*headers, ("Location", ex.params["to"])])
    else:
        await ex.respond(200, b"cookie set\n", headers)


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


# --- Continuing and refreshing: ranges, validators, conditional requests -------------------

_EPOCH = 1_600_000_000  # the Last-Modified of version 1; version n is n - 1 hours later
_PACE = 16 * 1024  # rate=B sends pieces of this size, each after its share of a second


class _Entity:
    """One version of a ranged route's resource: its bytes and validators."""

    def __init__(self, ex: _Exchange, version: int, etag: str) -> None:
        self.size = ex.integer("size", BLOCK)
        self.name = f"{ex.target}#{version}"
        self.encoding = ex.params.get("encoding")
        if self.encoding not in (None, "gzip"):
            raise _BadRequest("encoding must be gzip")
        self._gzipped = (
            gzip.compress(body_for(self.name, self.size), mtime=0) if self.encoding else None
        )
        self.length = len(self._gzipped) if self._gzipped is not None else self.size
        validators = ex.params.get("validators", "both")
        if validators not in ("both", "etag", "date", "none"):
            raise _BadRequest("validators must be both, etag, date or none")
        weak = "W/" if ex.params.get("weak") == "1" else ""
        suffix = "-gzip" if self.encoding else ""
        self.etag = f'{weak}"{etag}{suffix}"' if validators in ("both", "etag") else None
        modified = formatdate(_EPOCH + (version - 1) * 3600, usegmt=True)
        self.last_modified = modified if validators in ("both", "date") else None

    def headers(self) -> list[tuple[str, str]]:
        headers = [("Content-Type", "application/octet-stream")]
        if self.etag is not None:
            headers.append(("ETag", self.etag))
        if self.last_modified is not None:
            headers.append(("Last-Modified", self.last_modified))
        if self.encoding is not None:
            headers.append(("Content-Encoding", self.encoding))
        return headers

    def chunks(self, start: int, stop: int) -> Iterator[memoryview]:
        if self._gzipped is not None:
            yield memoryview(self._gzipped)[start:stop]
            return
        skipped = 0
        for piece in iter_body(self.name, stop):
            if skipped + len(piece) > start:
                yield piece[max(0, start - skipped) :]
            skipped += len(piece)


def _requested_range(value: str | None, length: int) -> tuple[int, int] | str | None:
    """(start, stop) of a single-range `Range`, "unsatisfiable", or None to send it all."""
    if value is None:
        return None
    unit, _, spec = value.strip().partition("=")
    first, dash, last = spec.strip().partition("-")
    if unit.strip().lower() != "bytes" or not dash or "," in spec:
        return None  # not one byte range: a server may ignore what it does not do
    if not first:  # a suffix: the last N bytes
        if not last.isdigit():
            return None
        count = int(last)
        return (max(0, length - count), length) if count else "unsatisfiable"
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start, end = int(first), int(last) if last else length - 1
    if last and end < start:
        return None
    if start >= length:
        return "unsatisfiable"
    return start, min(end, length - 1) + 1


def _opaque(tag: str) -> str:
    return tag.removeprefix("W/")


def _not_modified(ex: _Exchange, entity: _Entity) -> bool:
    """RFC 9110 13.2.2: If-None-Match (weak comparison) decides; else If-Modified-Since."""
    none_match = ex.headers.get("if-none-match")
    if none_match is not None:
        tags = {_opaque(tag.strip()) for tag in none_match.split(",")}
        return entity.etag is not None and ("*" in tags or _opaque(entity.etag) in tags)
    since = ex.headers.get("if-modified-since")
    if since is None or entity.last_modified is None:
        return False
    try:
        return parsedate_to_datetime(entity.last_modified) <= parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False


def _if_range_holds(ex: _Exchange, entity: _Entity) -> bool:
    """RFC 9110 13.1.5: a strong ETag compared strongly, or exactly the Last-Modified date."""
    value = ex.headers.get("if-range")
    if value is None:
        return True
    if value.startswith(('"', "W/")):
        return entity.etag is not None and not entity.etag.startswith("W/") and value == entity.etag
    return value == entity.last_modified


async def _serve_entity(
    ex: _Exchange, entity: _Entity, *, ranges: bool = True, from_zero: bool = False
) -> None:
    failing = ex.attempt <= ex.integer("fail", 0)
    ex.integer("cut", 0)  # checked before anything is sent, so a bad one is a 400
    end = ex.params.get("end", "rst")
    if end not in ("rst", "fin", "stall"):
        raise _BadRequest("end must be rst, fin or stall")
    rate = ex.number("rate", 0)
    headers = entity.headers()
    if ranges:
        headers.append(("Accept-Ranges", "bytes"))
    if _not_modified(ex, entity):
        await ex.start(304, headers)
        return
    wanted = None
    if ranges and _if_range_holds(ex, entity):
        wanted = _requested_range(ex.headers.get("range"), entity.length)
    if wanted == "unsatisfiable":
        headers.append(("Content-Range", f"bytes */{entity.length}"))
        await ex.start(416, headers, 0)
        return
    status, start, stop = 200, 0, entity.length
    if isinstance(wanted, tuple):
        status, (start, stop) = 206, wanted
        if from_zero:
            start = 0
        headers.append(("Content-Range", f"bytes {start}-{stop - 1}/{entity.length}"))
    await ex.start(status, headers, stop - start)
    chunks: Iterable[Chunk] = entity.chunks(start, stop)
    if failing:
        chunks = _take(chunks, ex.integer("cut", (stop - start) // 2))
    if rate:
        for piece in _pieces(chunks, _PACE):
            await ex.send([piece])
            await asyncio.sleep(len(piece) / rate)
    else:
        await ex.send(chunks)
    if failing and not ex.is_head:
        if end == "fin":
            await ex.close()
        elif end == "stall":
            await _hang(ex)  # silence until the client gives up
        else:
            await ex.reset()


def _stable_tag(ex: _Exchange) -> str:
    return f"{zlib.crc32(_encode(ex.target)):08x}-{ex.integer('size', BLOCK)}"


async def _range(ex: _Exchange) -> None:
    await _serve_entity(ex, _Entity(ex, 1, _stable_tag(ex)))


async def _norange(ex: _Exchange) -> None:
    await _serve_entity(ex, _Entity(ex, 1, _stable_tag(ex)), ranges=False)


async def _changing(ex: _Exchange) -> None:
    await _serve_entity(ex, _Entity(ex, ex.attempt, f"v{ex.attempt}"))


async def _wrong_range(ex: _Exchange) -> None:
    await _serve_entity(ex, _Entity(ex, 1, _stable_tag(ex)), from_zero=True)


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
    "digest": _digest,
    "set-cookie": _set_cookie,
    "big": _big,
    "gzip": _gzip,
    "gzip-bomb": _gzip_bomb,
    # Continuing and refreshing
    "range": _range,
    "norange": _norange,
    "changing": _changing,
    "wrong-range": _wrong_range,
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
        self._sent: Counter[str] = Counter()
        self._connections = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._errors: list[BaseException] = []
        self._timeline: list[tuple[str, float, float]] = []  # (target, began, ended)
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

    def bytes_sent(self, target: str) -> int:
        """Body bytes written in answers to this raw target since reset_stats()."""
        with self._cond:
            return self._sent[target]

    def _count_sent(self, target: str, size: int) -> None:
        with self._cond:
            self._sent[target] += size

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

    def timeline(self, prefix: str = "") -> list[tuple[str, float, float]]:
        """(target, began, ended) of each request whose target starts with `prefix`, answered
        since reset_stats(), in the order they began: time.monotonic(), as the server saw it
        (began: its head was read; ended: its answer was written, or the client left)."""
        with self._cond:
            found = [entry for entry in self._timeline if entry[0].startswith(prefix)]
        return sorted(found, key=lambda entry: entry[1])

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
        """Zero hits, total_hits, bytes_sent, connections and last_headers; max_in_flight :=
        in_flight.
        Fault sequencing ("the first K attempts") carries on regardless."""
        with self._cond:
            self._hits.clear()
            self._last_headers.clear()
            self._sent.clear()
            self._timeline.clear()
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

    def _end(self, target: str, began: float) -> None:
        with self._cond:
            self._timeline.append((target, began, time.monotonic()))
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
        began = time.monotonic()
        ex.attempt = self._begin(target, headers)
        ex.count_sent = functools.partial(self._count_sent, target)
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
            self._end(target, began)
        return ex.keep_alive
