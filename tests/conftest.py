"""Shared fixtures: a clean environment, the asyncio backend, real loopback servers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest_plugins = ["tests._server_fixtures"]

PROXY_AND_TLS_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NO_COLOR",
)


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No proxy, TLS or FETCHCLI_* variable of the developer's shell leaks into a test."""
    import os

    for name in list(os.environ):
        if name.upper() in PROXY_AND_TLS_VARIABLES or name.startswith("FETCHCLI_"):
            monkeypatch.delenv(name)
    yield


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
