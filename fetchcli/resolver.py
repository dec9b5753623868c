"""Name lookups off the thread pool that file writes use.

aiohttp's default resolver calls `loop.getaddrinfo()`, which asyncio's own loop runs on the
default executor: the pool of `asyncio.to_thread`, where the bodies are written. A slow DNS
answer (seconds, for a name that does not resolve) then holds a writer's thread, and a list
of many hosts queues its writes behind its lookups. uvloop's `getaddrinfo` runs on libuv's
own pool instead, so on uvloop aiohttp's resolver is kept as it is; on asyncio's loop,
`resolver_for()` gives one with a small pool of its own. Either way the connector caches
answers (`ttl_dns_cache`), so a host is looked up once in a while, not once a request.
"""

from __future__ import annotations

import asyncio
import functools
import socket
from concurrent.futures import ThreadPoolExecutor

from aiohttp.abc import AbstractResolver, ResolveResult

__all__ = ["LOOKUP_THREADS", "PoolResolver", "resolver_for"]

LOOKUP_THREADS = 4  # lookups at once: a few slow names must not hold up the others
_NUMERIC = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
_NUMERIC_NAMES = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV


def resolver_for(loop: asyncio.AbstractEventLoop) -> AbstractResolver | None:
    """The resolver for a connector on `loop`: None (aiohttp's own) where the loop does its
    lookups off the default executor already, as uvloop does."""
    if type(loop).__module__.startswith("uvloop"):
        return None
    return PoolResolver(loop)


class PoolResolver(AbstractResolver):
    """`getaddrinfo` in threads of its own (as aiohttp's ThreadedResolver, another pool)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pool = ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="fetchcli-dns")

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Every address of `host`, as aiohttp's connector wants them."""
        lookup = functools.partial(
            socket.getaddrinfo,
            host,
            port,
            family=family,
            type=socket.SOCK_STREAM,
            flags=socket.AI_ADDRCONFIG,
        )
        # A gaierror goes up as it is: the connector makes it its DNS error, as with its own.
        infos = await self._loop.run_in_executor(self._pool, lookup)
        found: list[ResolveResult] = []
        for info_family, _, proto, _, address in infos:
            if info_family == socket.AF_INET6:
                if len(address) < 4:
                    continue  # IPv6 that this Python cannot use
                if address[3]:
                    # A link-local address: its scope must reach the connect, as "fe80::1%2".
                    names = functools.partial(socket.getnameinfo, address, _NUMERIC_NAMES)
                    name, service = await self._loop.run_in_executor(self._pool, names)
                    resolved, resolved_port = name, int(service)
                else:
                    resolved, resolved_port = str(address[0]), int(address[1])
            else:
                resolved, resolved_port = str(address[0]), int(address[1])
            found.append(
                ResolveResult(
                    hostname=host,
                    host=resolved,
                    port=resolved_port,
                    family=info_family,
                    proto=proto,
                    flags=_NUMERIC,
                )
            )
        return found

    async def close(self) -> None:
        """Stop the pool; a lookup still running ends on its own (it cannot be cut)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
