"""An HTTP server on 127.0.0.1 that writes down when each piece of a body left it.

`GET /<key>/<size>` (any query ignored) answers 200 with `size` bytes, written `PIECE` bytes
at a time with a blocking `sendall` on a socket whose send buffer is made small; after each
one returns, the time (`time.monotonic()`) and the piece's size go into `sends(key)`. A
client that stops reading fills its receive buffer and then this one's within a few pieces,
and the sends stop: the log shows the pace at which the client read, early by at most what
the buffers between the two hold. Anything else is a 404.

For the --limit-rate tests (tests/test_limit_rate.py) and benchmarks/rate_windows.py.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["PIECE", "SEND_BUFFER", "SendLog", "serve"]

PIECE = 16 * 1024
SEND_BUFFER = 32 * 1024  # asked for; Linux doubles it


class SendLog:
    """The running server: its URLs and its log of sends, per key."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self._lock = threading.Lock()
        self._sends: dict[str, list[tuple[float, int]]] = defaultdict(list)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, key: str, size: int) -> str:
        return f"http://127.0.0.1:{self.port}/{key}/{size}"

    def sends(self, key: str) -> list[tuple[float, int]]:
        """(when, bytes) of every piece of every body sent for `key`, in time order."""
        with self._lock:
            return sorted(self._sends[key])

    def _sent(self, key: str, size: int) -> None:
        with self._lock:
            self._sends[key].append((time.monotonic(), size))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        parts = self.path.partition("?")[0].strip("/").split("/")
        if len(parts) != 2 or not parts[1].isdigit():
            self.send_error(404)
            return
        key, size = parts[0], int(parts[1])
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        piece = bytes(PIECE)
        left = size
        try:
            while left > 0:
                n = min(PIECE, left)
                self.connection.sendall(piece[:n])
                self.server.log._sent(key, n)
                left -= n
        except OSError:
            self.close_connection = True  # the client went away: nothing more to log

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the log that matters is the sends'


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    log: SendLog


@contextmanager
def serve() -> Iterator[SendLog]:
    """Run the server in a thread for the duration of the block."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.log = SendLog(server)
    thread = threading.Thread(target=server.serve_forever, name="send-log", daemon=True)
    thread.start()
    try:
        yield server.log
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
