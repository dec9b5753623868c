"""The FaultServer itself, seen from plain http.client and raw sockets: each misbehaviour
must really happen on the wire, or the fetcher tests built on it prove nothing."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import socket
import time
import zlib
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from email.utils import parsedate_to_datetime
from urllib.parse import quote

import pytest

from tests.servers import BLOCK, FaultServer, body_for, gzip_bomb, http_date, iter_body


@contextmanager
def connect(server: FaultServer) -> Iterator[http.client.HTTPConnection]:
    with closing(http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)) as conn:
        yield conn


def get(
    server: FaultServer, target: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[http.client.HTTPResponse, bytes]:
    with connect(server) as conn:
        conn.request(method, target, headers=headers or {})
        response = conn.getresponse()
        return response, response.read()


@contextmanager
def raw(server: FaultServer, target: str) -> Iterator[socket.socket]:
    """A socket that has sent a GET for target, byte for byte."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode("latin-1"))
        yield sock


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """(head, the body bytes that came with it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        assert piece, f"closed before the end of the head: {data!r}"
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    while piece := sock.recv(65536):
        data += piece
    return data


# --- Bodies -------------------------------------------------------------------------------


def test_body_for_is_deterministic_sized_and_per_target() -> None:
    assert body_for("/ok/a") == body_for("/ok/a") != body_for("/ok/b")
    assert b"/ok/a" in body_for("/ok/a") and 200 < len(body_for("/ok/a")) < 1000
    size = 2 * BLOCK + 7
    data = body_for("/big/x", size)
    assert len(data) == size and data == body_for("/big/x", size) != body_for("/big/y", size)
    assert data.count(0) < size // 100  # pseudo-random, not zeros
    assert data[:BLOCK] != data[BLOCK : 2 * BLOCK]  # each MiB differs: lost MiBs show up
    pieces = list(iter_body("/big/x", size))
    assert max(map(len, pieces)) == BLOCK and b"".join(pieces) == data
    assert body_for("/x", 0) == b""


def test_http_date_is_in_the_future() -> None:
    ahead = parsedate_to_datetime(http_date(30)).timestamp() - time.time()
    assert 29 < ahead <= 31.5


# --- Normal HTTP ----------------------------------------------------------------------------


def test_ok_records_the_raw_target_and_headers(server: FaultServer, unique: str) -> None:
    target = f"/ok/{unique}/a/%2e%2e/./b?q=%2F&x"
    with raw(server, target) as sock:
        head, body = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert f"Content-Length: {len(body_for(target))}".encode() in head
        while len(body) < len(body_for(target)):
            body += sock.recv(65536)
    assert body == body_for(target)
    assert server.hits(target) == 1 and server.hits(f"/ok/{unique}/b") == 0
    assert server.last_headers(target) == {"host": "127.0.0.1"}


def test_ok_size_and_type(server: FaultServer, unique: str) -> None:
    target = f"/ok/{unique}?size=100000&type=image/png"
    response, body = get(server, target)
    assert response.getheader("Content-Type") == "image/png"
    assert body == body_for(target, 100_000)


def test_keep_alive_reuses_one_connection(server: FaultServer, unique: str) -> None:
    before = server.connections
    with connect(server) as conn:
        sockets = set()
        for i in range(3):
            conn.request("GET", f"/ok/{unique}/{i}")
            assert conn.getresponse().read() == body_for(f"/ok/{unique}/{i}")
            sockets.add(conn.sock)
        # HEAD: headers only, else the next response on this connection would be garbage.
        conn.request("HEAD", f"/big/{unique}?size=8589934592")
        response = conn.getresponse()
        assert response.getheader("Content-Length") == "8589934592" and response.read() == b""
        conn.request("GET", f"/status/204/{unique}")
        response = conn.getresponse()
        assert response.status == 204 and response.getheader("Content-Length") is None
        assert response.read() == b""
        conn.request("GET", f"/ok/{unique}/last")
        assert conn.getresponse().read() == body_for(f"/ok/{unique}/last")
        sockets.add(conn.sock)
    assert len(sockets) == 1 and server.connections - before == 1


def test_status_and_not_found(server: FaultServer, unique: str) -> None:
    response, body = get(server, f"/status/418/{unique}")
    assert (response.status, body) == (418, b"status 418\n")
    assert get(server, f"/nowhere/{unique}")[0].status == 404
    assert get(server, "/ok")[0].status == 404
    assert get(server, f"/status/abc/{unique}")[0].status == 400


def test_headers_route_echoes_request_headers(server: FaultServer, unique: str) -> None:
    target = f"/headers/{unique}"
    response, body = get(server, target, headers={"X-Test": "abc", "User-Agent": "probe"})
    echoed = json.loads(body)
    assert response.getheader("Content-Type") == "application/json"
    assert echoed["x-test"] == "abc" and echoed["user-agent"] == "probe"
    assert server.last_headers(target) == echoed


def test_many_concurrent_keep_alive_connections(server: FaultServer, unique: str) -> None:
    connections, per_connection = 200, 10

    async def client(n: int) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        ok = 0
        try:
            for i in range(per_connection):
                writer.write(f"GET /ok/{unique}/{n}/{i} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                ok += await reader.readexactly(length) == body_for(f"/ok/{unique}/{n}/{i}")
        finally:
            writer.close()
            await writer.wait_closed()
        return ok

    async def main() -> list[int]:
        return await asyncio.gather(*(client(n) for n in range(connections)))

    before = server.total_hits
    assert sum(asyncio.run(main())) == connections * per_connection
    assert server.total_hits - before == connections * per_connection


# --- Instrumentation and lifecycle ----------------------------------------------------------


def test_in_flight_and_hang(server: FaultServer, unique: str) -> None:
    target = f"/hang/{unique}"
    server.reset_stats()
    with raw(server, target) as first, raw(server, target):
        assert server.wait_for_hits(target, 2) and server.wait_in_flight(2)
        assert server.max_in_flight >= 2
        first.settimeout(0.2)
        with pytest.raises(TimeoutError):  # no answer, ever
            first.recv(1)
    # The clients closed: the server noticed and let the requests go.
    assert server.wait_idle() and server.in_flight == 0
    server.reset_stats()
    assert server.max_in_flight == 0 and server.hits(target) == 0 and server.total_hits == 0
    assert not server.wait_for_hits(target, 1, timeout=0.05)


def test_stop_is_prompt_with_requests_in_progress() -> None:
    targets = [
        "/hang/h",
        "/slow/s?delay=60",
        "/drip/d?bytes=9&interval=60",
        f"/big/b?size={10**12}",
    ]
    with FaultServer() as fault_server:
        port = fault_server.port
        sockets = [socket.create_connection(("127.0.0.1", port)) for _ in targets]
        try:
            for target, sock in zip(targets, sockets, strict=True):
                sock.sendall(f"GET {target} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
            assert fault_server.wait_in_flight(len(targets))
            started = time.monotonic()
            fault_server.stop()
            assert time.monotonic() - started < 1
            assert fault_server.take_errors() == []
            for sock in sockets:  # every one closed: EOF (or a reset), not a timeout
                sock.settimeout(2)
                with suppress(ConnectionResetError):
                    read_to_eof(sock)
        finally:
            for sock in sockets:
                sock.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port)).close()


# --- Failures ---------------------------------------------------------------------------------


def test_flaky_fails_k_times_then_succeeds(server: FaultServer, unique: str) -> None:
    target = f"/flaky/{unique}?fail=2&status=500"
    statuses = [get(server, target)[0].status for _ in range(3)]
    assert statuses == [500, 500, 200] and get(server, target)[1] == body_for(target)
    assert get(server, f"/flaky/{unique}")[0].status == 503


@pytest.mark.parametrize("form", ["seconds", "date"])
def test_retry_after(server: FaultServer, unique: str, form: str) -> None:
    target = f"/retry-after/{unique}?fail=1&after=7&form={form}"
    response, _ = get(server, target)
    value = response.getheader("Retry-After")
    assert response.status == 429 and value is not None
    if form == "seconds":
        assert value == "7"
    else:
        assert 6 < parsedate_to_datetime(value).timestamp() - time.time() <= 8.5
    response, body = get(server, target)
    assert response.status == 200 and response.getheader("Retry-After") is None
    assert body == body_for(target)


def test_reset_mid_body_then_recovery(server: FaultServer, unique: str) -> None:
    target = f"/reset/{unique}?fail=2&size=1000&after=100"
    with connect(server) as conn:
        conn.request("GET", target)
        response = conn.getresponse()
        assert response.getheader("Content-Length") == "1000"
        with pytest.raises(ConnectionResetError):
            response.read()
    # On the wire: exactly `after` body bytes, then the RST (not a FIN).
    with raw(server, target) as sock:
        _, body = read_head(sock)
        with pytest.raises(ConnectionResetError):  # the bytes arrive, then the RST
            while piece := sock.recv(65536):
                body += piece
    assert body == body_for(target, 1000)[:100]
    response, body = get(server, target)
    assert response.status == 200 and body == body_for(target, 1000)


def test_truncate_closes_cleanly_after_a_short_body(server: FaultServer, unique: str) -> None:
    target = f"/truncate/{unique}?fail=2&size=1000&send=300"
    with connect(server) as conn:
        conn.request("GET", target)
        response = conn.getresponse()
        with pytest.raises(http.client.IncompleteRead) as caught:
            response.read()
        assert caught.value.partial == body_for(target, 1000)[:300]
    with raw(server, target) as sock:
        head, body = read_head(sock)
        body += read_to_eof(sock)  # a FIN: recv returns b"" rather than raising
    assert b"Content-Length: 1000" in head and body == body_for(target, 1000)[:300]
    assert get(server, target)[1] == body_for(target, 1000)


def test_empty_closes_without_an_answer(server: FaultServer, unique: str) -> None:
    with raw(server, f"/empty/{unique}") as sock:
        assert read_to_eof(sock) == b""
    with raw(server, f"/empty/{unique}?how=rst") as sock, pytest.raises(ConnectionResetError):
        read_to_eof(sock)


def test_ok_can_claim_an_encoding_it_does_not_use(server: FaultServer, unique: str) -> None:
    target = f"/ok/{unique}?encoding=br"
    response, body = get(server, target)
    assert response.getheader("Content-Encoding") == "br" and body == body_for(target)


def test_garbage_sends_a_status_line_that_is_not_http(server: FaultServer, unique: str) -> None:
    with raw(server, f"/garbage/{unique}") as sock:
        answer = read_to_eof(sock)
    assert answer.startswith(b"HTTP/1.1 abc Nonsense\r\n")


def test_chunked_whole_and_truncated(server: FaultServer, unique: str) -> None:
    target = f"/chunked/{unique}?size=5000"
    response, body = get(server, target)
    assert response.getheader("Transfer-Encoding") == "chunked" and body == body_for(target, 5000)

    cut = f"/chunked/{unique}?size=5000&truncate=1"
    with connect(server) as conn:
        conn.request("GET", cut)
        with pytest.raises(http.client.IncompleteRead):
            conn.getresponse().read()
    with raw(server, cut) as sock:
        head, body = read_head(sock)
        body += read_to_eof(sock)
    assert b"Transfer-Encoding: chunked" in head
    data, size = b"", -1
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        data, body = data + body[:size], body[size + 2 :]
    # Whole chunks of a strict prefix of the body, and no terminating 0-chunk.
    assert size > 0 and 0 < len(data) < 5000 and data == body_for(cut, 5000)[: len(data)]


def test_drip_sends_one_byte_at_a_time(server: FaultServer, unique: str) -> None:
    interval, count = 0.05, 4
    target = f"/drip/{unique}?bytes={count}&interval={interval}"
    with raw(server, target) as sock:
        head, body = read_head(sock)
        started = time.monotonic()
        assert b"Content-Length: 4" in head and body == b""
        first = sock.recv(65536)
        while len(body) < count - len(first):
            body += sock.recv(65536)
        elapsed = time.monotonic() - started
    assert len(first) == 1 and first + body == body_for(target, count)
    assert elapsed >= (count - 0.5) * interval


def test_slow_waits_before_answering(server: FaultServer, unique: str) -> None:
    started = time.monotonic()
    body = get(server, f"/slow/{unique}?delay=0.2")[1]
    assert time.monotonic() - started >= 0.2 and body == body_for(f"/slow/{unique}?delay=0.2")


# --- Redirects ------------------------------------------------------------------------------


def test_redirect_chain_loop_and_cross_origin(
    server: FaultServer, other_server: FaultServer, unique: str
) -> None:
    target, hops = f"/redirect/chain/{unique}/2", 0
    while (response := get(server, target)[0]).status == 302:
        target, hops = response.getheader("Location") or "", hops + 1
    assert hops == 2 and target == f"/redirect/chain/{unique}/0"
    assert get(server, target)[1] == body_for(target)

    response, _ = get(server, f"/redirect/loop/{unique}/a?status=307")
    assert (response.status, response.getheader("Location")) == (
        307,
        f"/redirect/loop/{unique}/b?status=307",
    )
    assert get(server, f"/redirect/loop/{unique}/b")[0].getheader("Location") == (
        f"/redirect/loop/{unique}/a"
    )

    elsewhere = other_server.url(f"/ok/{unique}?a=1&b=%20")
    response, _ = get(server, f"/redirect/to/{unique}?url={quote(elsewhere, safe='')}")
    assert response.status == 302 and response.getheader("Location") == elsewhere
    assert other_server.port != server.port
    assert get(other_server, f"/ok/{unique}?a=1&b=%20")[1] == body_for(f"/ok/{unique}?a=1&b=%20")


# --- Big bodies and compression -------------------------------------------------------------


def test_big_streams_exact_bytes(server: FaultServer, unique: str) -> None:
    size = 3 * BLOCK + 5
    target = f"/big/{unique}?size={size}"
    with connect(server) as conn:
        conn.request("GET", target)
        response = conn.getresponse()
        assert response.getheader("Content-Length") == str(size)
        for expected in iter_body(target, size):
            assert response.read(len(expected)) == expected
        assert response.read() == b""


def test_gzip_decodes_to_the_body(server: FaultServer, unique: str) -> None:
    response, payload = get(server, f"/gzip/{unique}")
    assert response.getheader("Content-Encoding") == "gzip"
    assert gzip.decompress(payload) == body_for(f"/gzip/{unique}")


def test_gzip_bomb_inflates_to_the_requested_size(server: FaultServer, unique: str) -> None:
    size = 40 * BLOCK + 3
    response, payload = get(server, f"/gzip-bomb/{unique}?size={size}")
    assert response.getheader("Content-Encoding") == "gzip"
    assert int(response.getheader("Content-Length") or 0) == len(payload) < size // 500
    inflater, inflated, pending = zlib.decompressobj(wbits=31), 0, payload
    while pending:  # at most 1 MiB out per step, as a careful client inflates
        piece = inflater.decompress(pending, BLOCK)
        pending = inflater.unconsumed_tail
        assert piece == bytes(len(piece))
        inflated += len(piece)
    # eof: zlib has read the trailer and checked its CRC and size.
    assert inflater.eof and inflated == size and inflater.unused_data == b""

    four_gib = gzip_bomb(4 << 30)
    assert len(four_gib) < 5 * BLOCK
    assert four_gib[-4:] == b"\0\0\0\0"  # ISIZE is the size mod 2**32
