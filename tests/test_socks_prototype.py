"""Prototype (not wired in): SOCKS5 proxies with aiohttp-socks, and a private CA (--cacert).

These tests show that aiohttp-socks' ProxyConnector works with the aiohttp in use, under the
project's own httpx-over-aiohttp transport, through the loopback SOCKS5 server of
tests/socks5.py; and that a CA bundle loaded from a file verifies a TLS test server.
They are skipped where aiohttp-socks is not installed (it is not a dependency yet).
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest
import trustme

from fetchcli.client import AiohttpTransport
from tests.servers import FaultServer
from tests.socks5 import Socks5Server

aiohttp_socks = pytest.importorskip("aiohttp_socks")

pytestmark = pytest.mark.anyio


def connector_for(proxy: str, ssl_context: ssl.SSLContext | bool = True) -> aiohttp.BaseConnector:
    """What client.py would build for `--proxy socks5://` or `socks5h://` (h: proxy resolves)."""
    url = httpx.URL(proxy)
    return aiohttp_socks.ProxyConnector(
        proxy_type=aiohttp_socks.ProxyType.SOCKS5,
        host=url.host,
        port=url.port or 1080,
        username=url.username or None,
        password=url.password or None,
        rdns=url.scheme == "socks5h",
        ssl=ssl_context,
        limit=0,
    )


class SocksTransport(AiohttpTransport):
    """The project's transport with its connector swapped: the seam client.py would grow."""

    def __init__(self, connector: aiohttp.BaseConnector) -> None:
        super().__init__()
        self._connector = connector

    def _open(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=self._connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
        )


async def get(connector: aiohttp.BaseConnector, url: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=SocksTransport(connector)) as client:
        response = await client.get(url)
        await response.aread()
        return response


async def test_socks5_carries_requests_and_the_client_resolves(server, unique):
    async with Socks5Server() as proxy:
        target = server.url(f"/ok/{unique}/a").replace("127.0.0.1", "localhost")
        response = await get(connector_for(proxy.url("socks5")), target)
        (host, port), *_ = proxy.destinations
        assert ipaddress.ip_address(host)  # socks5: an address, resolved on this side
        assert port == server.port
        if host == "127.0.0.1":  # (localhost may resolve to ::1 first, where nothing listens)
            assert response.status_code == 200


async def test_socks5h_lets_the_proxy_resolve_the_name(server, unique):
    async with Socks5Server() as proxy:
        target = server.url(f"/ok/{unique}/b").replace("127.0.0.1", "localhost")
        response = await get(connector_for(proxy.url("socks5h")), target)
        assert response.status_code == 200
        assert proxy.destinations == [("localhost", server.port)]
        assert server.hits(f"/ok/{unique}/b") == 1


async def test_socks5_with_a_login(server, unique):
    async with Socks5Server(user="u", password="p w") as proxy:
        good = connector_for(proxy.url("socks5", "u:p%20w"))
        response = await get(good, server.url(f"/ok/{unique}/c"))
        assert response.status_code == 200
        # aiohttp-socks raises its own errors, not aiohttp's: client.py must map them.
        with pytest.raises(aiohttp_socks.ProxyError, match="authentication failure"):
            await get(connector_for(proxy.url("socks5", "u:wrong")), server.url("/ok/x/d"))
        assert proxy.refused_logins == 1


async def test_socks_failures_are_errors_of_aiohttp_socks_to_map():
    async with Socks5Server() as proxy:
        # The proxy cannot reach the destination: a SOCKS reply code (5: refused).
        with pytest.raises(aiohttp_socks.ProxyError) as caught:
            await get(connector_for(proxy.url("socks5h")), "http://127.0.0.1:1/x")
        assert caught.value.error_code == 5
        port = proxy.port
    # No proxy listening at all.
    with pytest.raises(aiohttp_socks.ProxyConnectionError):
        await get(connector_for(f"socks5://127.0.0.1:{port}"), "http://127.0.0.1:1/x")


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_server(authority: trustme.CA) -> Iterator[FaultServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    with FaultServer(ssl_context=context) as tls:
        yield tls


async def test_a_private_ca_file_verifies_tls_through_socks(tls_server, authority, tmp_path: Path):
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    # --cacert FILE: the system store plus the file, as one context built once for the run.
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=str(bundle))
    async with Socks5Server() as proxy:
        response = await get(connector_for(proxy.url("socks5"), context), tls_server.url("/ok/t/e"))
        assert response.status_code == 200
        # Without the CA, the same server fails verification. Through aiohttp-socks it comes
        # as an aiohttp ClientOSError, which client.py maps to a ReadError and errors.py
        # would retry: wiring this in must make it a ConnectError (a final "tls" failure).
        with pytest.raises(httpx.ReadError, match="CERTIFICATE_VERIFY_FAILED") as caught:
            await get(connector_for(proxy.url("socks5")), tls_server.url("/ok/t/f"))
        assert isinstance(caught.value.__cause__, aiohttp.ClientOSError)
