"""A small SOCKS5 proxy on 127.0.0.1 for tests (RFC 1928 CONNECT, RFC 1929 user/password).

It records every destination as the client named it, so a test can tell `socks5://` (the
client resolves: an IP address arrives) from `socks5h://` (the proxy resolves: a name).
Runs on the test's own event loop (`async with Socks5Server() as proxy: ... proxy.url`), or
on a loop of its own in a thread (`with socks5_in_thread() as proxy:`), for the CLI's runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import threading
from collections.abc import Iterator
from types import TracebackType

__all__ = ["Socks5Server", "socks5_in_thread"]

VERSION = 5
NO_AUTH, USER_PASSWORD, NO_METHOD = 0, 2, 0xFF
CONNECT = 1
IPV4, DOMAIN, IPV6 = 1, 3, 4
SUCCEEDED, FAILURE, NOT_ALLOWED, REFUSED, COMMAND_UNSUPPORTED = 0, 1, 2, 5, 7


class Socks5Server:
    """CONNECT only; with `user`/`password` set, clients must log in (RFC 1929)."""

    def __init__(self, user: str | None = None, password: str | None = None) -> None:
        self._login = None if user is None else (user.encode(), (password or "").encode())
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.destinations: list[tuple[str, int]] = []
        self.refused_logins = 0

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, scheme: str = "socks5", credentials: str = "") -> str:
        at = f"{credentials}@" if credentials else ""
        return f"{scheme}://{at}127.0.0.1:{self.port}"

    async def __aenter__(self) -> Socks5Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        # Abort the sockets rather than cancel the handlers: asyncio logs a cancelled one.
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            upstream = await self._handshake(reader, writer)
            if upstream is not None:
                self._writers.add(upstream[1])
                try:
                    await _relay(reader, writer, *upstream)
                finally:
                    self._writers.discard(upstream[1])
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        version, count = await reader.readexactly(2)
        methods = await reader.readexactly(count)
        wanted = NO_AUTH if self._login is None else USER_PASSWORD
        if version != VERSION or wanted not in methods:
            writer.write(bytes([VERSION, NO_METHOD]))
            return None
        writer.write(bytes([VERSION, wanted]))
        if wanted == USER_PASSWORD and not await self._authenticate(reader, writer):
            return None
        _, command, _, kind = await reader.readexactly(4)
        if kind == IPV4:
            host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
        elif kind == IPV6:
            host = str(ipaddress.IPv6Address(await reader.readexactly(16)))
        elif kind == DOMAIN:
            host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        else:
            return None
        port = int.from_bytes(await reader.readexactly(2), "big")
        if command != CONNECT:
            writer.write(_reply(COMMAND_UNSUPPORTED))
            return None
        self.destinations.append((host, port))
        try:
            upstream = await asyncio.open_connection(host, port)
        except OSError:
            writer.write(_reply(REFUSED))
            return None
        writer.write(_reply(SUCCEEDED))
        return upstream

    async def _authenticate(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        _version, length = await reader.readexactly(2)
        user = await reader.readexactly(length)
        password = await reader.readexactly((await reader.readexactly(1))[0])
        accepted = (user, password) == self._login
        writer.write(bytes([1, 0 if accepted else 1]))
        self.refused_logins += not accepted
        return accepted


@contextlib.contextmanager
def socks5_in_thread(
    user: str | None = None, password: str | None = None
) -> Iterator[Socks5Server]:
    """A Socks5Server on an event loop of its own, in a daemon thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="Socks5Server", daemon=True)
    thread.start()
    server = Socks5Server(user, password)
    try:
        asyncio.run_coroutine_threadsafe(server.__aenter__(), loop).result(10)
        try:
            yield server
        finally:
            asyncio.run_coroutine_threadsafe(server.__aexit__(None, None, None), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def _reply(status: int) -> bytes:
    # The bound address is not used by clients here: 0.0.0.0:0.
    return bytes([VERSION, status, 0, IPV4]) + socket.inet_aton("0.0.0.0") + b"\0\0"


async def _relay(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        finally:
            if sink.can_write_eof():
                with contextlib.suppress(OSError):
                    sink.write_eof()

    try:
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
    finally:
        up_writer.close()
