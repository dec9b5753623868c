"""Loopback servers for the benchmark: nginx (or the slow Python fallback), the latency server
and the hosts server (many ports).

Every server is a child process in its own session, started by a context manager that stops it
on exit, error or Ctrl-C. The static servers write an access log, one line per response, in the
format "<status> <body bytes> <uri>"; the harness empties it before a run and reads it after.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
STARTUP_TIMEOUT = 15.0

# worker_processes 1: the machine this suite targets has 2 cores, and the fetcher under test
# needs one of them. One nginx worker serves the 1 KiB files at well over 30,000 req/s on
# loopback (check with wrk), several times what any fetcher here reaches, so a second worker
# would not raise any result: it would only compete with the fetcher for the same two cores.
NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
{user}
events {{
    worker_connections 8192;
    multi_accept on;
}}
http {{
    default_type application/octet-stream;
    types {{ }}
    log_format bench '$status $body_bytes_sent $request_uri';
    access_log {prefix}/access.log bench;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    open_file_cache max=20000 inactive=120s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        server_name bench;
        root {root};
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            msg = f"{what} exited with code {proc.returncode} at startup"
            raise RuntimeError(msg)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    msg = f"{what} did not listen on port {port} within {STARTUP_TIMEOUT:.0f} s"
    raise RuntimeError(msg)


def _read_port_line(proc: subprocess.Popen[bytes], what: str) -> int:
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("PORT "):
        msg = f"{what} failed to start (exit code {proc.wait()})"
        raise RuntimeError(msg)
    return int(line.split()[1])


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


@dataclass(frozen=True)
class LogEntry:
    status: int
    size: int
    uri: str


@dataclass
class StaticServer:
    """A static file server over `root`, with an access log the harness can reset and read."""

    kind: str  # "nginx" or "python"
    description: str
    base_url: str
    access_log: Path

    def reset_log(self) -> None:
        # Both servers append with O_APPEND, so truncating in place is safe while they run.
        os.truncate(self.access_log, 0)

    def read_log(self) -> list[LogEntry]:
        entries = []
        with self.access_log.open("rb") as f:
            for line in f:
                status, size, uri = line.rstrip(b"\n").split(b" ", 2)
                entries.append(LogEntry(int(status), int(size), uri.decode()))
        return entries

    def count_log_lines(self) -> int:
        with self.access_log.open("rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def nginx_path() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def nginx_version(nginx: str) -> str:
    out = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
    return (out.stderr or out.stdout).strip().removeprefix("nginx version: ")


@contextmanager
def nginx_server(nginx: str, root: Path, workdir: Path) -> Iterator[StaticServer]:
    prefix = workdir / "nginx"
    prefix.mkdir()
    port = free_port()
    # As root, nginx would run its worker as "nobody", which cannot read the private temp dir.
    user = "user root;" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, root=root, user=user))
    (prefix / "access.log").touch()
    argv = [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for_port(port, proc, "nginx")
        yield StaticServer(
            kind="nginx",
            description=f"nginx {nginx_version(nginx)}, worker_processes 1, sendfile on",
            base_url=f"http://127.0.0.1:{port}",
            access_log=prefix / "access.log",
        )
    finally:
        _stop(proc, signal.SIGQUIT)  # graceful stop; SIGKILL after 10 s


@contextmanager
def python_static_server(python: str, root: Path, workdir: Path) -> Iterator[StaticServer]:
    log = workdir / "static-access.log"
    log.touch()
    argv = [python, str(HERE / "static_server.py"), str(root), str(log)]
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        port = _read_port_line(proc, "static_server.py")
        yield StaticServer(
            kind="python",
            description="FALLBACK Python static server (threaded, much slower than nginx: "
            "results measure it as much as the fetchers)",
            base_url=f"http://127.0.0.1:{port}",
            access_log=log,
        )
    finally:
        _stop(proc)


@dataclass
class LatencyServer:
    base_url: str

    def _get(self, path: str) -> str:
        with urllib.request.urlopen(self.base_url + path, timeout=10) as response:
            text: str = response.read().decode()
            return text

    def reset(self) -> None:
        self._get("/__reset")

    def stats(self) -> tuple[int, int]:
        """(requests answered, distinct paths) since the last reset."""
        requests, distinct = self._get("/__stats").split()
        return int(requests), int(distinct)


@contextmanager
def latency_server(python: str, delay: float) -> Iterator[LatencyServer]:
    argv = [python, str(HERE / "latency_server.py"), "--delay", str(delay)]
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        port = _read_port_line(proc, "latency_server.py")
        yield LatencyServer(base_url=f"http://127.0.0.1:{port}")
    finally:
        _stop(proc)


def server_python() -> str:
    """The interpreter for the helper servers: this one (they need only the stdlib)."""
    return sys.executable


@dataclass(frozen=True)
class HostStats:
    """What one host (port) of the hosts server saw since its last reset."""

    requests: int
    distinct_ok: int
    max_in_flight: int
    busy_sent: int
    first_request: float | None  # time.monotonic() of this machine
    last_ok: float | None


@dataclass
class HostsServer:
    """Many hosts (one port each) answering after a delay, counting what each one saw."""

    base_urls: list[str]

    def _get(self, path: str) -> str:
        with urllib.request.urlopen(self.base_urls[0] + path, timeout=10) as response:
            text: str = response.read().decode()
            return text

    def reset(self, pause_for: float = 0.0) -> None:
        """Zero the counters; host 0 will answer 503 for `pause_for` s from its first request."""
        self._get(f"/__reset?pause_for={pause_for:g}")

    def stats(self) -> list[HostStats]:
        """Per host, in the order of `base_urls`."""
        return [HostStats(**entry) for entry in json.loads(self._get("/__stats"))]


@contextmanager
def hosts_server(python: str, hosts: int, delay: float, retry_after: int) -> Iterator[HostsServer]:
    argv = [python, str(HERE / "hosts_server.py"), "--hosts", str(hosts), "--delay", str(delay),
            "--retry-after", str(retry_after)]  # fmt: skip
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if not line.startswith("PORTS "):
            msg = f"hosts_server.py failed to start (exit code {proc.wait()})"
            raise RuntimeError(msg)
        ports = line.split()[1:]
        yield HostsServer(base_urls=[f"http://127.0.0.1:{port}" for port in ports])
    finally:
        _stop(proc)
