"""The Batcher: many items, few thread hops, nothing lost on errors or cancellation."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from fetchcli.batching import Batcher

pytestmark = pytest.mark.anyio


class Recorder:
    def __init__(self, fail_on: object = None) -> None:
        self.batches: list[list[int]] = []
        self.fail_on = fail_on
        self.threads: set[int] = set()

    def __call__(self, items: Sequence[int]) -> list[int | Exception]:
        self.threads.add(threading.get_ident())
        self.batches.append(list(items))
        return [ValueError(f"bad {i}") if i == self.fail_on else i * 10 for i in items]


async def test_items_submitted_together_share_a_hop():
    write = Recorder()
    batcher: Batcher[int, int] = Batcher(write)
    async with asyncio.TaskGroup() as group:
        group.create_task(batcher.run())
        results = await asyncio.gather(*(batcher.submit(i) for i in range(100)))
        batcher.close()
    assert results == [i * 10 for i in range(100)]
    written = sorted(i for batch in write.batches for i in batch)
    assert len(write.batches) < 10 and written == list(range(100))
    assert threading.get_ident() not in write.threads  # never on the event loop's thread


async def test_a_failed_item_fails_only_its_submitter():
    batcher: Batcher[int, int] = Batcher(Recorder(fail_on=3))
    async with asyncio.TaskGroup() as group:
        group.create_task(batcher.run())
        results = await asyncio.gather(
            *(batcher.submit(i) for i in range(6)), return_exceptions=True
        )
        batcher.close()
    assert [str(r) if isinstance(r, Exception) else r for r in results] == [
        0,
        10,
        20,
        "bad 3",
        40,
        50,
    ]


async def test_a_failed_fire_and_forget_item_stops_the_run():
    batcher: Batcher[int, int] = Batcher(Recorder(fail_on=2))
    with pytest.raises(ExceptionGroup) as caught:
        async with asyncio.TaskGroup() as group:
            group.create_task(batcher.run())
            for i in range(4):
                batcher.submit_nowait(i)
            await asyncio.Event().wait()  # the failure cancels this
    assert caught.group_contains(ValueError, match="bad 2")


async def test_close_writes_everything_pending():
    write = Recorder()
    batcher: Batcher[int, int] = Batcher(write)
    for i in range(5):
        batcher.submit_nowait(i)
    batcher.close()
    await batcher.run()
    assert [i for batch in write.batches for i in batch] == [0, 1, 2, 3, 4]


async def test_cancellation_still_writes_what_was_handed_over():
    write = Recorder()
    batcher: Batcher[int, int] = Batcher(write)
    task = asyncio.create_task(batcher.run())
    await asyncio.sleep(0)
    for i in range(3):
        batcher.submit_nowait(i)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted([i for batch in write.batches for i in batch]) == [0, 1, 2]
    with pytest.raises(RuntimeError, match="stopped"):
        batcher.submit_nowait(9)


async def test_cancellation_waits_for_a_write_already_in_its_thread():
    started, release = threading.Event(), threading.Event()
    written: list[int] = []

    def slow_write(items: Sequence[int]) -> list[int | Exception]:
        started.set()
        release.wait(5)
        written.extend(items)
        return list(items)

    batcher: Batcher[int, int] = Batcher(slow_write)
    task = asyncio.create_task(batcher.run())
    batcher.submit_nowait(1)
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    threading.Timer(0.1, release.set).start()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert written == [1]  # the run did not end while its write was still going on


async def test_nothing_can_be_handed_over_after_close():
    batcher: Batcher[int, int] = Batcher(Recorder())
    batcher.close()
    await batcher.run()
    with pytest.raises(RuntimeError, match="stopped"):
        batcher.submit_nowait(1)
