"""nginx on 127.0.0.1 as the reference server for Range, ETag, If-Range and 304 semantics.

`Nginx` starts the Debian package's binary as a child process on a free port, with a config,
pid file, logs and temp directories of its own under a work directory. `daemon off` keeps it
our child, and `master_process off` makes it one process: exactly one pid to stop, and no
worker that switches to `nobody` when the tests run as root (it could not read pytest's
private temporary directories; `user root` would work too, but needs a root group name).
It serves `root` as static files:

    /<path>                  the file, with nginx's own ETag ("mtime-size", strong),
                             Last-Modified, Range (206/416), If-Range, If-None-Match and
                             If-Modified-Since (304 when the file is not newer)
    /slow/<path>?rate=R      the same file at R bytes/s (nginx `limit_rate` syntax: 64k, 1m;
                             default 1m), for interrupting a transfer half-way
    /gzip/<path>             the same file gzipped on the fly (Content-Encoding: gzip, a weak
                             ETag, Range not honoured), as nginx's `gzip on` does

The access log is one JSON object per request (`LogEntry`): status, bytes sent, and the Range,
If-Range, If-None-Match and If-Modified-Since headers as received, so a test can assert "the
server sent no more than 1.1x the size". nginx writes an entry once a request is over, so
read it with `wait_for()` rather than at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = ["LogEntry", "Nginx", "find_nginx", "serve"]

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
START_ATTEMPTS = 5  # a free port can be taken between our probe and nginx's bind

_LOG_FORMAT = (
    '{"method":"$request_method","uri":"$request_uri","status":$status,'
    '"body_bytes_sent":$body_bytes_sent,"bytes_sent":$bytes_sent,'
    '"range":"$http_range","if_range":"$http_if_range",'
    '"if_none_match":"$http_if_none_match","if_modified_since":"$http_if_modified_since",'
    '"connection":$connection,"request_time":$request_time}'
)

_CONFIG = """\
daemon off;
master_process off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format fetchcli escape=json '{log_format}';
    access_log {work}/access.log fetchcli;
    client_body_temp_path {work}/tmp/body;
    proxy_temp_path {work}/tmp/proxy;
    fastcgi_temp_path {work}/tmp/fastcgi;
    uwsgi_temp_path {work}/tmp/uwsgi;
    scgi_temp_path {work}/tmp/scgi;
    default_type application/octet-stream;
    server_tokens off;
    sendfile on;
    keepalive_timeout 30s;
    keepalive_requests 100000;
    # RFC 9110: 304 when the file is not newer than the date, not only at the same second.
    if_modified_since before;
    map $arg_rate $fetchcli_rate {{ "" 1m; default $arg_rate; }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location /slow/ {{ alias {root}/; limit_rate $fetchcli_rate; }}
        location /gzip/ {{
            alias {root}/;
            gzip on;
            gzip_types *;
            gzip_min_length 0;
            gzip_http_version 1.0;
        }}
    }}
}}
"""


def find_nginx() -> str | None:
    """The nginx binary: on PATH, or where Debian puts it (/usr/sbin is not on every PATH)."""
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One access-log line. Header fields are "" when the request had no such header."""

    method: str
    uri: str
    status: int
    body_bytes_sent: int
    bytes_sent: int
    range: str
    if_range: str
    if_none_match: str
    if_modified_since: str
    connection: int
    request_time: float


class Nginx:
    """nginx serving `root` on 127.0.0.1 from a work directory of its own."""

    def __init__(self, work: Path, binary: str) -> None:
        self.work = work
        self.binary = binary
        self.root = work / "root"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    # Lifecycle

    def start(self) -> Nginx:
        if self._process is not None:
            raise RuntimeError("nginx already started")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.work / "tmp").mkdir(exist_ok=True)
        failure = ""
        for _ in range(START_ATTEMPTS):
            self.port = _free_port()
            config = self.work / "nginx.conf"
            config.write_text(
                _CONFIG.format(
                    work=self.work, root=self.root, port=self.port, log_format=_LOG_FORMAT
                )
            )
            error_log = self.work / "error.log"
            error_log.write_bytes(b"")
            with open(self.work / "stderr.log", "wb") as stderr:
                process = subprocess.Popen(
                    # -e: the log for errors before the config is read (else /var/log/nginx).
                    [self.binary, "-p", str(self.work), "-c", str(config), "-e", str(error_log)],
                    stdin=subprocess.DEVNULL,
                    stdout=stderr,
                    stderr=stderr,
                )
            if self._wait_listening(process):
                self._process = process
                return self
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.kill()
            process.wait()
            failure = error_log.read_text(errors="replace") + (self.work / "stderr.log").read_text(
                errors="replace"
            )
            if "Address already in use" not in failure:
                break
        msg = f"nginx did not start:\n{failure}"
        raise RuntimeError(msg)

    def _wait_listening(self, process: subprocess.Popen[bytes]) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return True
            time.sleep(0.01)  # polling a condition with a deadline, not waiting for luck
        return False

    def stop(self) -> None:
        """Fast shutdown (SIGTERM), then SIGKILL if it lingers. Idempotent."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # Addresses and files

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        """base_url + path, verbatim."""
        return self.base_url + path

    def put(self, relpath: str, data: bytes, mtime: float | None = None) -> str:
        """Serve `data` at `/relpath` (written atomically, so nginx never serves half of it),
        with `mtime` as its Last-Modified if given; returns the URL path."""
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.put")
        temp.write_bytes(data)
        if mtime is not None:
            os.utime(temp, (mtime, mtime))
        os.replace(temp, path)
        return "/" + relpath

    # The access log

    def log(self) -> list[LogEntry]:
        """Every entry so far (requests still going have none yet)."""
        try:
            text = (self.work / "access.log").read_text()
        except FileNotFoundError:
            return []
        return [LogEntry(**json.loads(line)) for line in text.splitlines() if line.strip()]

    def entries(self, uri: str) -> list[LogEntry]:
        """Entries for this exact request URI (query included)."""
        return [entry for entry in self.log() if entry.uri == uri]

    def wait_for(self, uri: str, count: int = 1, timeout: float = 5.0) -> list[LogEntry]:
        """The entries for `uri` once there are at least `count` (AssertionError after
        `timeout` s: nginx writes an entry when a request ends, a moment after the client
        has the last byte)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.entries(uri)
            if len(found) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert len(found) >= count, f"{len(found)} of {count} log entries for {uri}: {found}"
        return found

    def body_bytes_sent(self, uri: str, count: int = 1) -> int:
        """Body bytes nginx sent for `uri` over its first `count` (or more) requests."""
        return sum(entry.body_bytes_sent for entry in self.wait_for(uri, count))

    def errors(self, at_least: str = "error") -> list[str]:
        """error.log lines at `at_least` or worse (nginx levels: error, crit, alert, emerg)."""
        levels = ("error", "crit", "alert", "emerg")
        wanted = {f"[{level}]" for level in levels[levels.index(at_least) :]}
        text = (self.work / "error.log").read_text(errors="replace")
        return [line for line in text.splitlines() if any(tag in line for tag in wanted)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(work: Path) -> Iterator[Nginx]:
    """Start nginx for a pytest fixture; the caller skips when find_nginx() is None."""
    binary = find_nginx()
    assert binary is not None
    with Nginx(work, binary) as nginx:
        yield nginx
