"""One engine process: `python -m fetchcli.engine FD`, started by `fetchcli.processes`.

It runs the same `pipeline.execute()` as a single-process run, fed with jobs by the
coordinator over the socket FD, and hands its records, stats and host pauses back over it
(the messages are listed in `fetchcli.processes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import pickle
import random
import signal
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fetchcli.limits import Limiter
from fetchcli.models import Record
from fetchcli.stats import RunStats

__all__ = ["REPORT_SECONDS", "frame", "main", "read_message"]

REPORT_SECONDS = 0.02  # how often an engine sends its records (and, 5x slower, its stats)
_HEADER = struct.Struct("!I")


def frame(message: tuple[Any, ...]) -> bytes:
    """One message as bytes: its length, then its pickle."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


async def read_message(reader: asyncio.StreamReader) -> tuple[Any, ...]:
    """The next message from `reader`."""
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    message: tuple[Any, ...] = pickle.loads(await reader.readexactly(size))
    return message


async def _engine(fd: int) -> None:
    from fetchcli.pipeline import execute  # here: pipeline imports processes, which imports us

    reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=fd))
    _, settings, deadline_at = await read_message(reader)
    if deadline_at is not None:
        deadline = max(deadline_at - time.time(), 0.001)
        settings = dataclasses.replace(
            settings, timeouts=dataclasses.replace(settings.timeouts, deadline=deadline)
        )
    stats = RunStats()
    outbox: list[Record] = []
    incoming: asyncio.Queue[tuple[str, list[tuple[int, bytes | None]]] | None] = asyncio.Queue()

    def send(message: tuple[Any, ...]) -> None:
        if not writer.is_closing():
            writer.write(frame(message))

    async def emit(record: Record) -> None:
        outbox.append(record)

    async def jobs() -> AsyncIterator[tuple[str, list[tuple[int, bytes | None]]]]:
        while (batch := await incoming.get()) is not None:
            yield batch

    limiter = Limiter(settings.limits, on_pause=lambda host, s: send(("pause", host, s)))
    run = asyncio.create_task(
        execute(settings, jobs(), emit, stats, random=random.Random().random, limiter=limiter)
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, run.cancel)

    async def listen() -> None:
        try:
            while True:
                message = await read_message(reader)
                if message[0] == "jobs":
                    for source, batch in _by_source(message[1]):
                        incoming.put_nowait((source, batch))
                elif message[0] == "pause":
                    limiter.pause_host(message[1], message[2], announce=False)
                elif message[0] == "end":
                    incoming.put_nowait(None)
                elif message[0] == "stop":
                    run.cancel()
        except (asyncio.IncompleteReadError, ConnectionError):
            run.cancel()  # the coordinator is gone: stop, clean up, exit

    async def report() -> None:
        beat = 0
        while True:
            await asyncio.sleep(REPORT_SECONDS)
            _send_records(send, outbox)
            beat += 1
            if beat % 5 == 0:
                send(_stats_message(stats))
            await writer.drain()

    listener = asyncio.create_task(listen())
    reporter = asyncio.create_task(report())
    try:
        await asyncio.gather(run, return_exceptions=True)
    finally:
        listener.cancel()
        reporter.cancel()
        await asyncio.gather(listener, reporter, return_exceptions=True)
        _send_records(send, outbox)
        failed = not run.cancelled() and run.exception() is not None
        if not failed:
            # Without "done", the coordinator records this engine's unfinished jobs as lost.
            send(("done",))
        with contextlib.suppress(ConnectionError):  # the coordinator may be gone already
            await writer.drain()
        writer.close()
    if failed:
        raise run.exception()  # type: ignore[misc]


def _send_records(send: Callable[[tuple[Any, ...]], None], outbox: list[Record]) -> None:
    if outbox:
        send(("records", outbox[:]))
        outbox.clear()


def _stats_message(stats: RunStats) -> tuple[Any, ...]:
    transfers = [
        (key, transfer.url, transfer.expected, transfer.progress.size)
        for key, transfer in list(stats.transfers.items())
    ]
    return ("stats", stats.in_flight, stats.retrying, stats.retries, transfers)


def _by_source(
    jobs: list[tuple[str, int, str]],
) -> list[tuple[str, list[tuple[int, bytes | None]]]]:
    batches: list[tuple[str, list[tuple[int, bytes | None]]]] = []
    for source, line, url in jobs:
        if not batches or batches[-1][0] != source:
            batches.append((source, []))
        batches[-1][1].append((line, url.encode()))
    return batches


def main() -> None:
    """Entry point of an engine process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator decides when to stop
    asyncio.run(_engine(int(sys.argv[1])))


if __name__ == "__main__":
    main()
