"""Name lookups: on asyncio's loop in a pool of their own, never behind the file writes; and the
event loop the CLI and engines choose."""

from __future__ import annotations

import asyncio
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from fetchcli.client import AiohttpTransport
from fetchcli.loop import loop_factory
from fetchcli.resolver import PoolResolver, resolver_for
from tests.helpers import job

pytestmark = pytest.mark.anyio


async def test_a_lookup_does_not_wait_for_a_busy_default_executor():
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(1))  # the writers' pool, all taken:
    gate = threading.Event()
    writing = asyncio.ensure_future(asyncio.to_thread(gate.wait))
    resolver = PoolResolver(loop)
    try:
        found = await asyncio.wait_for(resolver.resolve("localhost", 8080), 10)
    finally:
        gate.set()
        await writing
        await resolver.close()
    assert ("127.0.0.1", 8080, socket.AF_INET) in {
        (r["host"], r["port"], r["family"]) for r in found
    }


def test_uvloop_keeps_aiohttps_own_resolver():
    uvloop = pytest.importorskip("uvloop")  # a dependency, but not on Windows
    loop = uvloop.new_event_loop()
    try:
        assert resolver_for(loop) is None  # its getaddrinfo runs on libuv's pool
    finally:
        loop.close()
    plain = asyncio.new_event_loop()
    try:
        assert isinstance(resolver_for(plain), PoolResolver)
    finally:
        plain.close()


async def test_a_request_by_name_goes_through_the_resolver(server, unique):
    transport = AiohttpTransport()
    url = server.url(f"/ok/{unique}/by-name").replace("127.0.0.1", "localhost")
    request = httpx.Request("GET", job(url).parsed)
    try:
        response = await transport.handle_async_request(request)
        await response.aread()
        assert response.status_code == 200
        assert isinstance(transport._resolver, PoolResolver)
    finally:
        await transport.aclose()
    assert transport._resolver is None


def test_the_cli_runs_on_uvloop_unless_asked_not_to():
    pytest.importorskip("uvloop")
    assert loop_factory({}) is not None
    assert loop_factory({"FETCHCLI_EVENT_LOOP": "asyncio"}) is None
