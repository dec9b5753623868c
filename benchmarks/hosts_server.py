"""Many "hosts" on loopback (W5, W6): one port per host, every answer after a fixed delay, and
per-host counters of what the server saw, in-flight requests above all.

One process and one event loop serve every port. Raw asyncio protocol, HTTP/1.1 keep-alive,
responses leave in request order. A request is "in flight" at its host from the moment its head
is parsed to the moment its answer is written: that is the count `--per-host` must bound, as
the server sees it. Optionally the first host is "paused": for some seconds after its first
request since the last reset it answers 503 with `Retry-After: --retry-after`.

Usage: python hosts_server.py [--hosts 20] [--delay 0.05] [--retry-after 5]
Prints "PORTS <p1> <p2> ..." on stdout once listening. Control paths, on any port, answered
in turn:
  GET /__stats  -> JSON, per host in port order: requests, distinct paths answered 200,
                   max in flight, 503s sent, first request and last 200 answer (time.monotonic)
  GET /__reset[?pause_for=S] -> zero every counter; the first host answers 503 for S seconds
                   after its next first request (default 0: never)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import signal
import sys
import time
from typing import cast

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: %d\r\n"
    b"Content-Length: 5\r\n\r\nbusy\n"
)
MAX_HEAD = 64 * 1024


class Host:
    """One port's counters."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.paths: set[bytes] = set()
        self.in_flight = 0
        self.max_in_flight = 0
        self.busy_sent = 0
        self.first_request: float | None = None
        self.last_ok: float | None = None

    def stats(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "distinct_ok": len(self.paths),
            "max_in_flight": self.max_in_flight,
            "busy_sent": self.busy_sent,
            "first_request": self.first_request,
            "last_ok": self.last_ok,
        }


class Server:
    def __init__(self, hosts: int, delay: float, retry_after: int) -> None:
        self.hosts = [Host() for _ in range(hosts)]
        self.delay = delay
        self.pause_for = 0.0
        self.retry_after = retry_after

    def control(self, path: bytes) -> bytes:
        if path.startswith(b"/__reset"):
            # /__reset?pause_for=S sets the first host's 503 spell for the next run too.
            _, _, pause_for = path.partition(b"?pause_for=")
            self.pause_for = float(pause_for or 0)
            for host in self.hosts:
                host.reset()
            return b"reset\n"
        return json.dumps([host.stats() for host in self.hosts]).encode()

    def answer_for(self, index: int, host: Host, now: float) -> bytes:
        """What this request gets: 503 while the first host is paused, else 200."""
        if index == 0 and self.pause_for > 0:
            assert host.first_request is not None
            if now - host.first_request < self.pause_for:
                return BUSY % self.retry_after
        return OK


class Connection(asyncio.Protocol):
    def __init__(self, server: Server, index: int) -> None:
        self.server = server
        self.index = index
        self.host = server.hosts[index]
        self.buffer = b""
        # (due time, path, response, counted in flight) in arrival order; one timer at a time.
        self.pending: collections.deque[tuple[float, bytes, bytes, bool]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        # Requests the client gave up on are no longer in flight.
        self.host.in_flight -= sum(1 for *_, counted in self.pending if counted)
        self.pending.clear()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        loop = asyncio.get_running_loop()
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            self.request(head, loop)
        if len(self.buffer) > MAX_HEAD and self.transport is not None:
            self.transport.close()

    def request(self, head: bytes, loop: asyncio.AbstractEventLoop) -> None:
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        path = parts[1] if len(parts) > 1 else b"/"
        if path.startswith(b"/__"):
            body = self.server.control(path)
            response = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            self.pending.append((0.0, b"", response, False))
        else:
            host, now = self.host, time.monotonic()
            if host.first_request is None:
                host.first_request = now
            host.requests += 1
            host.in_flight += 1
            host.max_in_flight = max(host.max_in_flight, host.in_flight)
            response = self.server.answer_for(self.index, host, now)
            self.pending.append((loop.time() + self.server.delay, path, response, True))
        if self.timer is None:
            self.timer = loop.call_at(self.pending[0][0], self.flush)

    def flush(self) -> None:
        self.timer = None
        if self.transport is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        out: list[bytes] = []
        while self.pending and self.pending[0][0] <= now:
            _, path, response, counted = self.pending.popleft()
            if counted:
                self.host.in_flight -= 1
                if response is OK:
                    self.host.paths.add(path)
                    self.host.last_ok = time.monotonic()
                else:
                    self.host.busy_sent += 1
            out.append(response)
        self.transport.write(b"".join(out))
        if self.pending:
            self.timer = loop.call_at(self.pending[0][0], self.flush)


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    state = Server(args.hosts, args.delay, args.retry_after)
    servers = []
    for index in range(args.hosts):
        servers.append(
            await loop.create_server(
                lambda index=index: Connection(state, index),  # type: ignore[misc]
                args.host,
                0,
                backlog=4096,
            )
        )
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    ports = " ".join(str(s.sockets[0].getsockname()[1]) for s in servers)
    print(f"PORTS {ports}", flush=True)
    await stop.wait()
    for s in servers:
        s.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds (default 0.05)")
    parser.add_argument("--retry-after", type=int, default=5, help="seconds, in the 503s")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
