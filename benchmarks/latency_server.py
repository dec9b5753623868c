"""A loopback HTTP/1.1 server that answers every request after a fixed delay (W3).

Raw asyncio protocol, keep-alive, pipelining-safe (responses leave in request order), no
per-request task: a request costs one parse and one timer, so a single process serves well
over 10,000 req/s and is never the bottleneck of a 1,000 req/s workload. uvloop is used when
importable (`--no-uvloop` to turn it off); the stdlib loop is also far faster than needed.

Usage: python latency_server.py [--port 0] [--delay 0.1]
Prints "PORT <n>" on stdout once listening. Control paths, answered at once:
  GET /__stats  -> "<requests> <distinct paths>" served since the last reset
  GET /__reset  -> zero both counters
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import sys
from typing import cast

BODY = b"ok\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (
    len(BODY),
    BODY,
)
MAX_HEAD = 64 * 1024


class Counters:
    """What the harness reads to check that a run fetched every URL."""

    def __init__(self) -> None:
        self.requests = 0
        self.paths: set[bytes] = set()

    def reset(self) -> None:
        self.requests = 0
        self.paths = set()


def _control(body: bytes, close: bool) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n" % len(body)
    return head + (b"Connection: close\r\n" if close else b"") + b"\r\n" + body


class DelayedHttp(asyncio.Protocol):
    """One connection: parse request heads, answer each one `delay` seconds after it arrived."""

    def __init__(self, delay: float, counters: Counters) -> None:
        self.delay = delay
        self.counters = counters
        self.buffer = b""
        # (due time, response bytes, close after) in arrival order; one timer per connection.
        self.pending: collections.deque[tuple[float, bytes, bytes, bool]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.pending.clear()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        loop = asyncio.get_running_loop()
        while not self.closing:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD and self.transport is not None:
                    self.transport.close()
                return
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            self._request(head, loop)

    def _request(self, head: bytes, loop: asyncio.AbstractEventLoop) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        path = parts[1] if len(parts) > 1 else b"/"
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        # Requests with a body are not expected; skip it if one is announced.
        length = int(headers.get(b"content-length", b"0") or b"0")
        self.buffer = self.buffer[length:]
        close = headers.get(b"connection") == b"close" or parts[-1] == b"HTTP/1.0"
        self.closing = close
        if path.startswith(b"/__"):
            self._control(path, close)
            return
        self.pending.append((loop.time() + self.delay, path, RESPONSE, close))
        if self.timer is None:
            self.timer = loop.call_at(self.pending[0][0], self._flush)

    def _control(self, path: bytes, close: bool) -> None:
        if path == b"/__reset":
            self.counters.reset()
            body = b"reset\n"
        else:
            body = b"%d %d\n" % (self.counters.requests, len(self.counters.paths))
        if self.pending:  # keep response order: queue it behind the delayed ones, due now
            self.pending.append((0.0, b"", _control(body, close), close))
        elif self.transport is not None:
            self.transport.write(_control(body, close))
            if close:
                self.transport.close()

    def _flush(self) -> None:
        self.timer = None
        if self.transport is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        out: list[bytes] = []
        close = False
        while self.pending and self.pending[0][0] <= now and not close:
            _, path, response, close = self.pending.popleft()
            if path:
                self.counters.requests += 1
                self.counters.paths.add(path)
            out.append(response)
        self.transport.write(b"".join(out))
        if close:
            self.transport.close()
        elif self.pending:
            self.timer = loop.call_at(self.pending[0][0], self._flush)


async def serve(host: str, port: int, delay: float) -> None:
    loop = asyncio.get_running_loop()
    counters = Counters()
    server = await loop.create_server(
        lambda: DelayedHttp(delay, counters), host, port, backlog=4096, reuse_address=True
    )
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    bound = server.sockets[0].getsockname()[1]
    print(f"PORT {bound}", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.1, help="seconds (default 0.1)")
    parser.add_argument("--no-uvloop", action="store_true", help="use the stdlib event loop")
    args = parser.parse_args()
    run = asyncio.run
    if not args.no_uvloop:
        try:
            import uvloop

            run = uvloop.run
        except ImportError:
            pass
    try:
        run(serve(args.host, args.port, args.delay))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
