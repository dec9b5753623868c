"""Group many small blocking writes into a few `asyncio.to_thread` hops.

Measured: one thread hop per 1 KiB file cost more than the write itself, and creating files
one after another in a single thread left the fetchers waiting on the disk. A `Batcher`
takes items from many coroutines and hands whatever queued up to a blocking function in a
thread, with up to `max_hops` hops in flight at once.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Generic, Self, TypeVar

__all__ = ["Batcher"]

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """Run `write_batch(items) -> results` in threads for whatever has queued up.

    `write_batch` returns one result per item, in order: a value, or an exception for that
    item. `async with batcher:` runs `run()` as its background task and, on the way out,
    writes what is pending and waits for it; a failure of the writing is raised by the next
    `submit` and on the way out, so the run stops with the real cause.
    """

    def __init__(
        self,
        write_batch: Callable[[Sequence[Item]], Sequence[Result | Exception]],
        *,
        max_hops: int = 1,
    ) -> None:
        self._write_batch = write_batch
        self._max_hops = max_hops
        self._hops = 0
        # The thread hops in flight, kept until their threads are done.
        self._threads: set[asyncio.Future[Sequence[Result | Exception]]] = set()
        self._pending: list[tuple[Item, asyncio.Future[Result] | None]] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._stopped = False
        self._failure: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self.run())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._task is not None
        self.close()
        try:
            # Shielded: the writer finishes what it holds even while we are being cancelled.
            await asyncio.shield(self._task)
        except asyncio.CancelledError:
            self._task.cancel()  # a second cancel: run() still writes what it holds
            raise
        except BaseException:
            if exc is None and self._failure is not None:
                raise self._failure from None
            # Otherwise the body's own error is the one to report (often this same failure).

    @property
    def backlog(self) -> int:
        """Items handed over and not yet taken by a thread hop."""
        return len(self._pending)

    def close(self) -> None:
        """Ask `run()` to write what is pending and return."""
        self._closing = True
        self._wake.set()

    def submit_nowait(self, item: Item) -> None:
        """Queue `item` without waiting; a failure to write it stops `run()` with the error."""
        self._queue(item, None)

    async def submit(self, item: Item) -> Result:
        """Queue `item` and wait until its batch is written; return its result or raise."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue(item, future)
        return await future

    def _queue(self, item: Item, future: asyncio.Future[Result] | None) -> None:
        if self._failure is not None:
            raise self._failure
        if self._stopped:
            msg = "the writer has stopped"
            raise RuntimeError(msg)
        self._pending.append((item, future))
        self._wake.set()

    async def run(self) -> None:
        """Write batches until closed; when cancelled, still write what was handed over."""
        try:
            async with asyncio.TaskGroup() as hops:
                while not (self._closing and not self._pending):
                    await self._wake.wait()
                    self._wake.clear()
                    while self._pending and self._hops < self._max_hops:
                        size = math.ceil(len(self._pending) / (self._max_hops - self._hops))
                        batch, self._pending = self._pending[:size], self._pending[size:]
                        # The thread's task is started here, outside the group: a hop that is
                        # cancelled before it runs still gets its batch written.
                        thread = asyncio.ensure_future(  # noqa: RUF006 - kept in self._threads
                            asyncio.to_thread(self._write_batch, [item for item, _ in batch])
                        )
                        self._threads.add(thread)
                        thread.add_done_callback(self._threads.discard)
                        self._hops += 1
                        hops.create_task(self._hop(batch, thread))
        except asyncio.CancelledError:
            # Hops already in their threads finish there (a thread cannot be stopped): wait
            # for them, then write what is still queued, so that every record handed over
            # before Ctrl-C reaches the file whole, and nothing writes after we return.
            batch, self._pending = self._pending, []
            await asyncio.shield(asyncio.gather(*self._threads, return_exceptions=True))
            if batch:
                await asyncio.shield(
                    asyncio.to_thread(self._write_batch, [item for item, _ in batch])
                )
            raise
        except BaseException as exc:
            # The hops' TaskGroup wraps the failure in a group: keep the error itself.
            while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                exc = exc.exceptions[0]
            self._failure = exc
            for _, future in self._pending:
                if future is not None and not future.done():
                    future.set_exception(exc)
            self._pending = []
            raise
        finally:
            self._stopped = True

    async def _hop(
        self,
        batch: list[tuple[Item, asyncio.Future[Result] | None]],
        thread: asyncio.Future[Sequence[Result | Exception]],
    ) -> None:
        try:
            # Shielded: cancelling the hop must not cancel a write its thread is doing.
            results = await asyncio.shield(thread)
        finally:
            self._hops -= 1
            self._wake.set()
        failure: Exception | None = None
        for (_, future), result in zip(batch, results, strict=True):
            if future is None:
                if isinstance(result, Exception) and failure is None:
                    failure = result
            elif not future.done():
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        if failure is not None:
            raise failure
