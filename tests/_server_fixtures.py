"""Pytest fixtures for the loopback FaultServer (two origins per session), nginx, and a unique
key per test.

Load with `pytest_plugins = ["tests._server_fixtures"]` or `from tests._server_fixtures import *`.
"""

from __future__ import annotations

import itertools
import re
import ssl
from collections.abc import Iterator

import pytest
import trustme

from tests import nginx as nginx_server
from tests.servers import FaultServer

__all__ = ["_fault_server_errors", "nginx", "other_server", "server", "unique"]

_started: list[FaultServer] = []
_keys = itertools.count(1)


def _serve() -> Iterator[FaultServer]:
    with FaultServer() as fault_server:
        _started.append(fault_server)
        try:
            yield fault_server
        finally:
            _started.remove(fault_server)


@pytest.fixture(scope="session")
def server() -> Iterator[FaultServer]:
    """The misbehaving loopback server (see tests/servers.py for its routes)."""
    yield from _serve()


@pytest.fixture(scope="session")
def other_server() -> Iterator[FaultServer]:
    """A second FaultServer: another origin, for cross-origin redirects."""
    yield from _serve()


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    """A certificate authority of the tests' own (trustme): what `tls_server` is signed by."""
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_server(authority: trustme.CA) -> Iterator[FaultServer]:
    """A FaultServer over TLS for 127.0.0.1, its certificate signed by `authority`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    with FaultServer(ssl_context=context) as tls:
        yield tls


@pytest.fixture(scope="session")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[nginx_server.Nginx]:
    """nginx serving static files on 127.0.0.1, the reference for Range/ETag/304 semantics
    (see tests/nginx.py). Skipped only where the nginx binary is absent; .ci/run installs it."""
    if nginx_server.find_nginx() is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light; .ci/run does it)")
    yield from nginx_server.serve(tmp_path_factory.mktemp("nginx"))


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> str:
    """A short key no other test uses, e.g. "test_reset-17": per-test server counters."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:40].strip("-")
    return f"{name}-{next(_keys)}"


@pytest.fixture(autouse=True)
def _fault_server_errors() -> Iterator[None]:
    """Fail the test during which a server hit an unexpected error (not a client disconnect):
    errors in the server's thread would otherwise go unseen."""
    yield
    errors = [error for fault_server in _started for error in fault_server.take_errors()]
    assert not errors, f"FaultServer failed while serving this test: {errors!r}"
