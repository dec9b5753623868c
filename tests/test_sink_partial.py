"""Kept partial bodies (--continue) in the Saver: opened locked with a sidecar, kept or dropped,
never swept, resumed with their prefix hashed; restart, and mtimes from Last-Modified."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

from fetchcli.body import SPILL_BYTES, Body
from fetchcli.partial import Held, partial_path, read_sidecar, sidecar_path, write_sidecar
from fetchcli.sink import Saver
from fetchcli.tree import TEMP_SUFFIX
from tests.helpers import put_sidecar

pytestmark = pytest.mark.anyio

URL = "http://h.test/a.bin"
# A run's temporary file, as the sweep finds them: `.NAME.<token>-<serial>.fetchcli-part`.
TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{8}-[0-9]+" + re.escape(TEMP_SUFFIX))
REL = PurePosixPath("h/a.bin")
ETAG = '"abc"'
DATA = os.urandom(3 * SPILL_BYTES + 12345)


def validators(total: int | None = len(DATA)) -> Held:
    return Held(url=URL, size=0, etag=ETAG, total=total)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def feed(body: Body, data: bytes) -> None:
    for start in range(0, len(data), 65536):
        if body.feed(data[start : start + 65536]):
            await body.spill()


def kept_files(root: Path) -> list[str]:
    """Every file under `root` but the lock of a live run."""
    return sorted(
        p.name for p in root.rglob("*") if p.is_file() and not p.name.startswith(".fetchcli-run-")
    )


async def test_a_kept_body_spills_to_its_stable_name_with_a_sidecar_at_once(tmp_path):
    async with Saver(tmp_path, save=True) as saver:
        body = saver.body(REL, keep=validators())
        await feed(body, DATA[: 2 * SPILL_BYTES])
        await body.spill()
        partial = partial_path(tmp_path / REL)
        await body._settle()  # the write in flight
        # As kill -9 would find it: the sidecar is there from the start, the file a prefix.
        assert read_sidecar(sidecar_path(partial), URL) == validators()
        assert DATA.startswith(partial.read_bytes()) and partial.stat().st_size > 0
        await body.keep(validators())
        assert read_sidecar(sidecar_path(partial), URL) == validators().at(2 * SPILL_BYTES)
        assert partial.read_bytes() == DATA[: 2 * SPILL_BYTES]
    # The sweep at the end of the run leaves kept bodies alone.
    assert kept_files(tmp_path) == [".a.bin.fetchcli-partial", ".a.bin.fetchcli-partial.json"]


async def test_a_small_body_is_written_out_when_kept(tmp_path):
    async with Saver(tmp_path, save=True) as saver:
        body = saver.body(REL, keep=validators())
        await feed(body, DATA[:1000])
        await body.keep(validators())
    partial = partial_path(tmp_path / REL)
    assert partial.read_bytes() == DATA[:1000]
    assert read_sidecar(sidecar_path(partial), URL) == validators().at(1000)


async def test_a_body_not_for_keeping_is_removed(tmp_path):
    async with Saver(tmp_path, save=True) as saver:
        body = saver.body(REL)
        await feed(body, DATA)
        await body.keep(validators())  # it was not opened to be kept: discarded
    assert kept_files(tmp_path) == []


async def test_a_kept_body_is_resumed_and_its_sha256_covers_the_whole(tmp_path):
    async with Saver(tmp_path, save=True) as saver:
        body = saver.body(REL, keep=validators())
        await feed(body, DATA[: SPILL_BYTES + 777])
        await body.keep(validators())
    async with Saver(tmp_path, save=True) as saver:
        resumed = await saver.resume(REL, URL)
        assert resumed is not None
        body, held = resumed
        assert held == validators().at(SPILL_BYTES + 777) and body.size == held.size
        await feed(body, DATA[held.size :])
        path, digest = await body.finish()
    assert (path, digest) == (str(tmp_path / REL), sha(DATA))
    assert (tmp_path / REL).read_bytes() == DATA
    assert kept_files(tmp_path) == ["a.bin"]  # the sidecar went with it


async def test_a_kept_body_that_cannot_be_continued_is_removed(tmp_path):
    partial = partial_path(tmp_path / REL)
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"x" * 100)
    put_sidecar(sidecar_path(partial), Held(url=URL, size=100))  # no validator at all
    async with Saver(tmp_path, save=True) as saver:
        assert (await saver.look(REL)).partial
        assert await saver.resume(REL, URL) is None
    assert kept_files(tmp_path) == []


async def test_another_urls_kept_body_is_not_taken(tmp_path):
    partial = partial_path(tmp_path / REL)
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"x" * 100)
    put_sidecar(sidecar_path(partial), validators().at(100))
    async with Saver(tmp_path, save=True) as saver:
        assert await saver.resume(REL, "http://h.test/other") is None


async def test_a_kept_body_in_use_is_left_to_its_writer(tmp_path):
    async with Saver(tmp_path, save=True) as one, Saver(tmp_path, save=True) as two:
        writing = one.body(REL, keep=validators())
        await feed(writing, DATA[:SPILL_BYTES])
        await writing.spill()
        await writing._settle()
        assert await two.resume(REL, URL) is None  # locked by the first: not touched
        other = two.body(REL, keep=validators())
        await feed(other, DATA)
        assert await other.finish() == (str(tmp_path / REL), sha(DATA))  # by a temp file
        await writing.keep(validators())
    assert partial_path(tmp_path / REL).read_bytes() == DATA[:SPILL_BYTES]


async def test_restart_empties_the_body_and_renews_the_sidecar(tmp_path):
    other = Held(url=URL, size=0, etag='"new"', total=len(DATA))
    async with Saver(tmp_path, save=True) as saver:
        body = saver.body(REL, keep=validators())
        await feed(body, DATA[: 2 * SPILL_BYTES])
        await body.restart(other)
        partial = partial_path(tmp_path / REL)
        assert body.size == 0 and partial.stat().st_size == 0
        assert read_sidecar(sidecar_path(partial), URL) == other
        await feed(body, DATA)
        assert await body.finish() == (str(tmp_path / REL), sha(DATA))
    assert kept_files(tmp_path) == ["a.bin"]


async def test_restart_without_validators_gives_up_the_kept_file(tmp_path):
    async with Saver(tmp_path, save=True) as saver:
        body = saver.body(REL, keep=validators())
        await feed(body, DATA[: 2 * SPILL_BYTES])
        await body.restart(None)
        assert kept_files(tmp_path) == []
        await feed(body, DATA)
        await body.keep(validators())  # nothing to keep now
    assert kept_files(tmp_path) == []


async def test_discard_removes_a_kept_body_and_its_sidecar(tmp_path):
    async with Saver(tmp_path, save=True) as saver:
        body = saver.body(REL, keep=validators())
        await feed(body, DATA)
        await body.discard()
    assert kept_files(tmp_path) == []


@pytest.mark.parametrize("size", [1000, len(DATA)])  # batched small file, or spilled
async def test_finish_gives_the_file_its_mtime(tmp_path, size):
    async with Saver(tmp_path, save=True) as saver:
        body = saver.body(REL)
        await feed(body, DATA[:size])
        path, _ = await body.finish(mtime=1_600_000_000)
        assert path is not None and os.stat(path).st_mtime == 1_600_000_000
        look = await saver.look(REL)
        assert (look.size, look.mtime, look.partial) == (size, 1_600_000_000, False)
        assert await saver.existing(REL, look.size) == (path, size, sha(DATA[:size]))


def test_no_url_is_saved_under_a_kept_bodys_name():
    import httpx

    from fetchcli.paths import relative_path

    for name in (".x.fetchcli-partial", ".x.fetchcli-partial.json"):
        saved = relative_path(httpx.URL(f"http://h.test/{name}")).name
        assert not saved.endswith((".fetchcli-partial", ".fetchcli-partial.json")), saved


async def test_a_cancel_while_a_spill_is_written_still_keeps_the_whole_prefix(
    tmp_path, monkeypatch
):
    import asyncio
    import threading

    from fetchcli import body as body_module

    started, release = threading.Event(), threading.Event()
    real_write_all = body_module.write_all

    def slow_write_all(fd: int, chunks: list[bytes]) -> None:
        started.set()
        release.wait(5)  # the thread is still writing when the reader is cancelled
        real_write_all(fd, chunks)

    monkeypatch.setattr(body_module, "write_all", slow_write_all)
    async with Saver(tmp_path, save=True) as saver:
        body = saver.body(REL, keep=validators())

        async def reader() -> None:
            await feed(body, DATA[: 2 * SPILL_BYTES])  # the second spill waits for the first

        task = asyncio.create_task(reader())
        assert await asyncio.to_thread(started.wait, 5)
        assert body.size == 2 * SPILL_BYTES  # all fed: the reader waits in its second spill
        task.cancel()  # as Ctrl-C does, while the reader waits for the write in flight
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        await body.keep(validators())
    partial = partial_path(tmp_path / REL)
    assert partial.read_bytes() == DATA[: body.size]
    assert read_sidecar(sidecar_path(partial), URL) == validators().at(body.size)


async def test_every_sidecar_is_written_through_a_temporary_name_of_the_run(tmp_path, monkeypatch):
    # Opened, renewed by a restart, and kept: each write goes through a name the sweep knows.
    written: list[str] = []

    def spy(path: str, held: Held, *, temp: str, dir_fd: int | None = None) -> None:
        written.append(temp)
        write_sidecar(path, held, temp=temp, dir_fd=dir_fd)

    monkeypatch.setattr("fetchcli.sink.write_sidecar", spy)  # as the Saver calls it
    async with Saver(tmp_path, save=True) as saver:
        body = saver.body(REL, keep=validators())
        await feed(body, DATA[: 2 * SPILL_BYTES])
        await body.restart(validators())
        await feed(body, DATA[:SPILL_BYTES])
        await body.spill()
        await body.keep(validators())
    assert len(written) == 3
    assert all(TEMP_NAME.fullmatch(name) for name in written), written


def cut_a_sidecar_with_kill_9(root: Path) -> str:
    """The temporary file of a sidecar whose run was killed before renaming it."""
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITING_A_SIDECAR, str(root)], stdout=subprocess.PIPE
    )
    with child, child.stdout as said:  # type: ignore[union-attr]
        assert said.readline() == b"written, not renamed\n"
        child.kill()
    (cut,) = [p.name for p in (root / "h").iterdir() if ".json." in p.name]
    return cut


async def test_a_sidecar_cut_by_kill_9_before_its_rename_is_swept_by_the_next_run(tmp_path):
    cut = cut_a_sidecar_with_kill_9(tmp_path)
    async with Saver(tmp_path, save=True) as saver:  # the next run that writes in h/
        body = saver.body(PurePosixPath("h/other.bin"))
        await feed(body, b"x" * (2 * SPILL_BYTES))  # spilled: a file in h/
        await body.finish()
    assert cut not in os.listdir(tmp_path / "h")
    assert ".a.bin.fetchcli-partial" in os.listdir(tmp_path / "h")  # a kept body stays


# A run killed between its sidecar's write and rename: os.replace never returns.
_KILLED_WRITING_A_SIDECAR = """
import os, sys, time
from pathlib import Path, PurePosixPath
from fetchcli.partial import Held
from fetchcli.sink import Saver

def killed_here(*args, **kwargs):
    print("written, not renamed", flush=True)
    time.sleep(60)

saver = Saver(Path(sys.argv[1]), save=True)
os.replace = killed_here
saver.open_partial(PurePosixPath("h/a.bin"), Held(url="http://h.test/a.bin", size=0, etag='"e"'))
"""
