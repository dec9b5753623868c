"""Fallback static file server for when nginx is not installed. SLOW: numbers taken with it
measure this server as much as the fetchers, and are not comparable to nginx runs.

Threaded stdlib server, HTTP/1.1 keep-alive, GET/HEAD only. Writes one access-log line per
response in the same format as the harness's nginx config: "<status> <body bytes> <uri>".

Usage: python static_server.py ROOT ACCESS_LOG [--port 0]   (prints "PORT <n>" when listening)
"""

from __future__ import annotations

import argparse
import http.server
import os
import shutil
import sys
import threading
import urllib.parse
from pathlib import Path
from typing import BinaryIO


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root: Path
    log: BinaryIO
    log_lock = threading.Lock()

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def _serve(self, *, send_body: bool) -> None:
        relative = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            body = b"not found\n"
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self._access(404, len(body))
            return
        size = path.stat().st_size
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if send_body:
            with path.open("rb") as f:
                shutil.copyfileobj(f, self.wfile, 1 << 20)
        self._access(200, size if send_body else 0)

    def _access(self, status: int, size: int) -> None:
        with self.log_lock:
            self.log.write(b"%d %d %s\n" % (status, size, self.path.encode()))
            self.log.flush()

    def log_message(self, format: str, *args: object) -> None:  # quiet: the access log is ours
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description="Fallback static server (slow).")
    parser.add_argument("root", type=Path)
    parser.add_argument("access_log", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    Handler.root = args.root.resolve()
    fd = os.open(args.access_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    Handler.log = os.fdopen(fd, "ab")
    http.server.ThreadingHTTPServer.request_queue_size = 1024
    server = http.server.ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
