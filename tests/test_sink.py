"""Saving: temp file then rename, off the loop; clashes resolved; failures leave nothing."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path, PurePosixPath

import pytest

from fetchcli.errors import PermanentError
from fetchcli.kinds import ErrorKind
from fetchcli.sink import SPILL_BYTES, TEMP_SUFFIX, Saver

pytestmark = pytest.mark.anyio


async def save(saver: Saver, relpath: str, data: bytes) -> tuple[str | None, str]:
    body = saver.body(PurePosixPath(relpath))
    for start in range(0, len(data), 65536):
        if body.feed(data[start : start + 65536]):
            await body.spill()
    return await body.finish()


async def run_saver(saver: Saver, *saves: tuple[str, bytes]) -> list:
    async with saver:
        return await asyncio.gather(
            *(save(saver, path, data) for path, data in saves), return_exceptions=True
        )


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(TEMP_SUFFIX)]


async def test_small_and_large_bodies_land_whole(tmp_path: Path):
    small, large = b"tiny", bytes(range(256)) * (3 * SPILL_BYTES // 256 + 7)
    results = await run_saver(Saver(tmp_path, save=True), ("h/a.txt", small), ("h/b/c.bin", large))
    assert results == [
        (str(tmp_path / "h/a.txt"), hashlib.sha256(small).hexdigest()),
        (str(tmp_path / "h/b/c.bin"), hashlib.sha256(large).hexdigest()),
    ]
    assert (tmp_path / "h/a.txt").read_bytes() == small
    assert (tmp_path / "h/b/c.bin").read_bytes() == large
    assert leftovers(tmp_path) == []


async def test_a_file_in_the_way_of_a_directory_moves_the_body_aside(tmp_path: Path):
    (first,) = await run_saver(Saver(tmp_path, save=True), ("h/a", b"file a"))
    (second,) = await run_saver(Saver(tmp_path, save=True), ("h/a/b", b"file a/b"))
    assert first[0] == str(tmp_path / "h/a")
    assert second[0] != str(tmp_path / "h/a/b") and Path(second[0]).read_bytes() == b"file a/b"
    assert Path(second[0]).parent == tmp_path / "h" and Path(second[0]).name.startswith("~")


async def test_a_directory_in_the_way_of_a_file_moves_the_body_aside(tmp_path: Path):
    await run_saver(Saver(tmp_path, save=True), ("h/a/b", b"inner"))
    (moved,) = await run_saver(Saver(tmp_path, save=True), ("h/a", b"outer"))
    assert Path(moved[0]).read_bytes() == b"outer" and Path(moved[0]).name.startswith("~")
    assert (tmp_path / "h/a/b").read_bytes() == b"inner"
    assert leftovers(tmp_path) == []


async def test_an_unwritable_output_dir_fails_each_body_cleanly(tmp_path: Path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the output dir should be")
    small, large = await run_saver(
        Saver(blocker, save=True), ("h/a", b"x"), ("h/b", b"y" * (2 * SPILL_BYTES))
    )
    for result in (small, large):
        assert isinstance(result, PermanentError) and result.kind == "io"
        assert str(result).startswith(f"cannot write {blocker}/h/")


async def test_sweep_removes_temporary_files_of_unfinished_bodies(tmp_path: Path):
    saver = Saver(tmp_path, save=True)
    body = saver.body(PurePosixPath("h/big.bin"))
    body.feed(b"z" * SPILL_BYTES)
    await body.spill()
    await asyncio.sleep(0.05)
    assert len(leftovers(tmp_path)) == 1
    saver.sweep()
    assert leftovers(tmp_path) == []
    with pytest.raises(PermanentError, match="shutting down"):
        await save(saver, "h/late.bin", b"q" * (2 * SPILL_BYTES))


async def test_discard_removes_the_temporary_file(tmp_path: Path):
    saver = Saver(tmp_path, save=True)
    body = saver.body(PurePosixPath("h/big.bin"))
    body.feed(b"z" * SPILL_BYTES)
    await body.spill()
    await body.discard()
    assert leftovers(tmp_path) == [] and not (tmp_path / "h/big.bin").exists()


async def test_no_save_still_hashes(tmp_path: Path):
    saver = Saver(tmp_path, save=False)
    data = b"abc" * SPILL_BYTES
    body = saver.body(None)
    for start in range(0, len(data), 65536):
        if body.feed(data[start : start + 65536]):
            await body.spill()
    assert await body.finish() == (None, hashlib.sha256(data).hexdigest())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("size", [100, 3 * SPILL_BYTES])  # inline, and in the writer thread
async def test_a_body_that_fails_its_check_is_never_placed(tmp_path: Path, size: int):
    data = b"q" * size
    seen: list[str] = []

    def refuse(sha256: str) -> None:
        seen.append(sha256)
        raise PermanentError(ErrorKind.CHECKSUM, "sha256 mismatch")

    async with Saver(tmp_path, save=True) as saver:
        body = saver.body(PurePosixPath("h/file.bin"))
        for start in range(0, size, 65536):
            if body.feed(data[start : start + 65536]):
                await body.spill()
        with pytest.raises(PermanentError, match="sha256 mismatch"):
            await body.finish(refuse)
        await body.discard()
    assert seen == [hashlib.sha256(data).hexdigest()]
    assert list(tmp_path.rglob("*.bin")) == [] and leftovers(tmp_path) == []


async def test_a_flat_name_blocked_by_a_directory_moves_aside_at_the_top(tmp_path: Path):
    (tmp_path / "data").mkdir()
    (moved,) = await run_saver(Saver(tmp_path, save=True), ("data", b"flat"))
    assert Path(moved[0]).parent == tmp_path and Path(moved[0]).name.startswith("~")
    assert Path(moved[0]).read_bytes() == b"flat"
