"""Every error kind of the contract, produced by a real run against real loopback servers,
each with its one line in fetchcli's own words."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fetchcli.kinds import ErrorKind
from tests.helpers import cli, refused_port, unanswered_port
from tests.servers import FaultServer

# Kinds no loopback run can produce today, and where they are pinned instead.
ELSEWHERE = {
    ErrorKind.CHECKSUM: "nothing checks sizes or digests yet (manifests will)",
    ErrorKind.INTERNAL: "tests/test_processes.py kills an engine; tests/test_models.py",
}
COVERED: set[ErrorKind] = set()
Test = TypeVar("Test", bound=Callable[..., None])


def covers(kind: ErrorKind) -> Callable[[Test], Test]:
    """Mark a test as the one that produces `kind`."""
    COVERED.add(kind)
    return lambda test: test


def run(url: str, *args: str) -> dict[str, Any]:
    """The record of one URL fetched with no retries and no saving (unless asked)."""
    result = cli("get", "--jsonl", "-", "-r", "0", "--backoff", "0", *args, stdin=url.encode())
    (record,) = result.records()
    assert result.exit_code == 1 and not record["ok"], result.stderr
    assert "\n" not in record["error"]
    return record


def failure(url: str, *args: str) -> tuple[str, str]:
    record = run(url, "--no-save", *args)
    return record["error_kind"], record["error"]


@covers(ErrorKind.HTTP)
def test_http(server: FaultServer, unique: str):
    assert failure(server.url(f"/status/404/{unique}")) == ("http", "HTTP 404 Not Found")


@covers(ErrorKind.TIMEOUT)
def test_timeout_of_the_attempt(server: FaultServer, unique: str):
    assert failure(server.url(f"/hang/{unique}"), "-t", "0.3") == (
        "timeout",
        "timed out after 0.3 s (no response)",
    )
    kind, error = failure(server.url(f"/drip/{unique}?bytes=1000&interval=0.05"), "-t", "0.5")
    assert kind == "timeout"
    assert re.fullmatch(r"timed out after 0\.5 s \(\d of 1,000 bytes received\)", error), error


def test_timeout_of_a_read_with_no_attempt_limit(server: FaultServer, unique: str):
    url = server.url(f"/drip/{unique}?bytes=3&interval=5")
    assert failure(url, "-t", "0", "--read-timeout", "0.3") == (
        "timeout",
        "read timed out: no data for 0.3 s (0 of 3 bytes received)",
    )


def test_timeout_of_a_connect():
    with unanswered_port() as port:
        kind, error = failure(f"http://127.0.0.1:{port}/", "--connect-timeout", "0.2")
    assert (kind, error) == ("timeout", "connect timed out after 0.2 s")


@covers(ErrorKind.CONNECT)
def test_connect():
    with refused_port() as port:
        kind, error = failure(f"http://127.0.0.1:{port}/x")
    assert (kind, error) == ("connect", f"connection refused by 127.0.0.1:{port}")


@covers(ErrorKind.DNS)
def test_dns():
    record = run("http://no-such-host.invalid/", "--no-save", "-r", "3")
    assert record["error_kind"] == "dns"
    if record["error"] == "no such host: no-such-host.invalid":
        assert record["attempts"] == 1  # a name that does not exist is not retried
    else:  # a resolver that cannot answer now is asked again
        assert record["error"] == "cannot resolve no-such-host.invalid now: try again"


@covers(ErrorKind.TLS)
def test_tls(tls_server: FaultServer, unique: str):
    record = run(tls_server.url(f"/ok/{unique}"), "--no-save", "-r", "3")
    assert (record["error_kind"], record["error"], record["attempts"]) == (
        "tls",
        "TLS certificate not trusted: unable to get local issuer certificate",
        1,
    )


@covers(ErrorKind.NETWORK)
def test_network(server: FaultServer, unique: str):
    assert failure(server.url(f"/empty/{unique}?how=rst")) == (
        "network",
        f"connection reset by 127.0.0.1:{server.port}",
    )


@covers(ErrorKind.PROTOCOL)
def test_protocol(server: FaultServer, unique: str):
    origin = f"127.0.0.1:{server.port}"
    assert failure(server.url(f"/garbage/{unique}")) == (
        "protocol",
        f"malformed response from {origin}: bad status line",
    )
    assert failure(server.url(f"/empty/{unique}")) == (
        "protocol",
        f"{origin} closed the connection without a response",
    )


@covers(ErrorKind.TRUNCATED)
def test_truncated(server: FaultServer, unique: str):
    record = run(server.url(f"/truncate/{unique}?size=2000&send=1000"), "--no-save")
    assert (record["error_kind"], record["error"], record["status"]) == (
        "truncated",
        "body cut short: 1,000 of 2,000 bytes",
        200,
    )


def test_truncated_by_a_reset(server: FaultServer, unique: str):
    kind, error = failure(server.url(f"/reset/{unique}?size=200000&after=30000"))
    assert kind == "truncated"
    assert re.fullmatch(r"body cut short: [\d,]+ of 200,000 bytes", error), error


@covers(ErrorKind.REDIRECT)
def test_redirect(server: FaultServer, unique: str):
    target = f"/redirect/loop/{unique}/a"
    assert failure(server.url(target)) == (
        "redirect",
        f"redirect loop back to {server.url(target)}",
    )


@covers(ErrorKind.TOO_LARGE)
def test_too_large(server: FaultServer, unique: str):
    assert failure(server.url(f"/ok/{unique}?size=2000"), "--max-bytes", "1000") == (
        "too_large",
        "body of 2,000 bytes is over --max-bytes 1,000",
    )


@covers(ErrorKind.DECODING)
def test_decoding(server: FaultServer, unique: str):
    assert failure(server.url(f"/ok/{unique}?encoding=br")) == (
        "decoding",
        "unsupported Content-Encoding: br",
    )
    assert failure(server.url(f"/ok/{unique}?encoding=gzip")) == (
        "decoding",
        "invalid gzip data: incorrect header check",
    )


@covers(ErrorKind.IO)
def test_io(server: FaultServer, unique: str, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / f"127.0.0.1_{server.port}").write_text("a file where the host directory goes")
    record = run(server.url(f"/ok/{unique}/x"), "-o", str(out))
    assert record["error_kind"] == "io"
    # The OS's words for why: the host directory's name is taken by a file.
    assert record["error"].startswith(f"cannot write {out}/127.0.0.1_{server.port}/")
    assert record["error"].endswith(": Not a directory")


@covers(ErrorKind.PROXY)
def test_proxy(server: FaultServer, unique: str):
    with refused_port() as port:
        kind, error = failure(server.url(f"/ok/{unique}"), "--proxy", f"http://127.0.0.1:{port}")
    assert (kind, error) == (
        "proxy",
        f"cannot connect to proxy 127.0.0.1:{port}: connection refused",
    )


@covers(ErrorKind.INVALID_URL)
def test_invalid_url():
    result = cli("get", "--jsonl", "-", stdin=b"ftp://example.test/file\n")
    (record,) = result.records()
    assert (record["error_kind"], record["error"]) == (
        "invalid_url",
        "unsupported scheme 'ftp': only http and https are fetched",
    )


@covers(ErrorKind.DEADLINE)
def test_deadline(server: FaultServer, unique: str):
    assert failure(server.url(f"/hang/{unique}"), "--deadline", "0.3") == (
        "deadline",
        "deadline exceeded",
    )


def test_every_kind_is_produced_here_or_pinned_elsewhere():
    assert COVERED | set(ELSEWHERE) == set(ErrorKind)
    assert not COVERED & set(ELSEWHERE)
