"""Saving: temp file then rename, off the loop; clashes resolved; failures leave nothing."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path, PurePosixPath

import pytest

from fetchcli.body import SPILL_BYTES
from fetchcli.errors import PermanentError
from fetchcli.kinds import ErrorKind
from fetchcli.sink import TEMP_SUFFIX, Saver
from tests.helpers import cli, saved_path

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


# --- Symlinks in the output tree: never written through ---------------------------------------

LARGE = b"L" * (2 * SPILL_BYTES)


@pytest.mark.parametrize("link", ["h", "h/sub"])
async def test_a_symlinked_directory_inside_the_output_tree_is_not_written_through(
    tmp_path: Path, link: str
):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / link).parent.mkdir(parents=True)
    (out / link).symlink_to(elsewhere)
    results = await run_saver(Saver(out, save=True), ("h/sub/a", b"x"), ("h/sub/b", LARGE))
    for result in results:
        assert isinstance(result, PermanentError) and result.kind == "io", result
        assert str(result) == f"cannot write {out}/{link}: a symlink in the output directory"
    assert list(elsewhere.rglob("*")) == []


async def test_a_symlink_as_the_file_name_is_replaced_not_written_through(tmp_path: Path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not yours")
    (tmp_path / "out/h").mkdir(parents=True)
    for name in ("a", "b"):
        (tmp_path / "out/h" / name).symlink_to(outside)
    small, large = await run_saver(
        Saver(tmp_path / "out", save=True), ("h/a", b"small"), ("h/b", LARGE)
    )
    assert outside.read_bytes() == b"not yours"
    for (path, _), data in ((small, b"small"), (large, LARGE)):
        assert not Path(path).is_symlink() and Path(path).read_bytes() == data


async def test_the_output_directory_itself_may_be_a_symlink(tmp_path: Path):
    real, link = tmp_path / "real", tmp_path / "link"
    real.mkdir()
    link.symlink_to(real)
    (result,) = await run_saver(Saver(link, save=True), ("h/a", b"x"))
    assert result[0] == str(link / "h/a") and (real / "h/a").read_bytes() == b"x"


async def test_existing_files_are_not_looked_for_through_a_symlink(tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "a").write_bytes(b"12345")
    out = tmp_path / "out"
    out.mkdir()
    (out / "h").symlink_to(elsewhere)
    (out / "g").mkdir()
    (out / "g/a").symlink_to(elsewhere / "a")
    (out / "g/b").write_bytes(b"123")
    async with Saver(out, save=True) as saver:
        looks = [await saver.look(PurePosixPath(p)) for p in ("h/a", "g/a", "g/b")]
        found = [await saver.existing(PurePosixPath(p)) for p in ("h/a", "g/a", "g/b")]
        hinted = [await saver.existing(PurePosixPath(p), 3) for p in ("h/a", "g/a")]
    assert [look.size for look in looks] == [None, None, 3]
    assert found[:2] == [None, None] and hinted == [None, None]  # not read through it either
    assert found[2] == (str(out / "g/b"), 3, hashlib.sha256(b"123").hexdigest())


async def test_existing_hashes_what_the_file_holds_whatever_the_hint_says(tmp_path: Path):
    # The hint only picks the thread hop: a file that grew (or shrank) since its look is still
    # hashed whole, and a FIFO in a file's place is refused without hanging the open.
    import os

    data = os.urandom(3 * SPILL_BYTES + 5)
    (tmp_path / "h").mkdir()
    (tmp_path / "h/big").write_bytes(data)
    (tmp_path / "h/small").write_bytes(b"abc")
    os.mkfifo(tmp_path / "h/fifo")
    async with Saver(tmp_path, save=True) as saver:
        small_hint = await saver.existing(PurePosixPath("h/big"), 10)
        big_hint = await saver.existing(PurePosixPath("h/small"), 10 * SPILL_BYTES)
        fifo = await asyncio.wait_for(saver.existing(PurePosixPath("h/fifo"), 10), 10)
    assert small_hint == (str(tmp_path / "h/big"), len(data), hashlib.sha256(data).hexdigest())
    assert big_hint == (str(tmp_path / "h/small"), 3, hashlib.sha256(b"abc").hexdigest())
    assert fifo is None


# --- Temporary files of dead runs: swept where a run writes ---------------------------------

DEAD = "0badc0de"


def temp_of(directory: Path, name: str, token: str) -> Path:
    temp = directory / f".{name}.{token}-0{TEMP_SUFFIX}"
    temp.parent.mkdir(parents=True, exist_ok=True)
    temp.write_bytes(b"half a body")
    return temp


def run_locks(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".fetchcli-run-"))


@pytest.mark.parametrize("lock", ["none", "unheld"])
async def test_a_dead_runs_temporary_files_are_removed_where_a_run_writes(
    tmp_path: Path, lock: str
):
    if lock == "unheld":  # a run killed with -9 leaves its lock file, but not its lock
        (tmp_path / f".fetchcli-run-{DEAD}.lock").write_bytes(b"")
    dead = temp_of(tmp_path / "h", "a", DEAD)
    elsewhere = temp_of(tmp_path / "g", "a", DEAD)  # a directory this run never writes in
    others = [tmp_path / "h" / name for name in (".a.fetchcli-partial", ".a.fetchcli-partial.json")]
    others += [tmp_path / "h/.a.fetchcli-partial.json.1234abcd.tmp", tmp_path / "h/a"]
    for path in others:
        path.write_bytes(b"not a temporary file of a run")
    (result,) = await run_saver(Saver(tmp_path, save=True), ("h/b", b"x"))
    assert result[0] == str(tmp_path / "h/b")
    assert not dead.exists() and elsewhere.exists()
    assert all(path.exists() for path in others)
    assert run_locks(tmp_path) == []


async def test_a_live_runs_temporary_files_are_left_alone(tmp_path: Path):
    async with Saver(tmp_path, save=True) as first:
        body = first.body(PurePosixPath("h/big.bin"))
        for _ in range(2):  # the second spill waits for the first write: the temp exists
            body.feed(b"z" * SPILL_BYTES)
            await body.spill()
        (live,) = leftovers(tmp_path)
        assert len(run_locks(tmp_path)) == 1
        (second,) = await run_saver(Saver(tmp_path, save=True), ("h/small", b"x"))
        assert second[0] == str(tmp_path / "h/small")
        assert leftovers(tmp_path) == [live]
        path, _ = await body.finish()
    assert path is not None and Path(path).read_bytes() == b"z" * (2 * SPILL_BYTES)
    assert leftovers(tmp_path) == [] and run_locks(tmp_path) == []


async def test_a_run_that_writes_nothing_leaves_no_lock_file(tmp_path: Path):
    async with Saver(tmp_path, save=True) as saver:
        assert await saver.existing(PurePosixPath("h/a")) is None
    async with Saver(tmp_path, save=False) as saver:
        await saver.body(None).finish()
    assert list(tmp_path.iterdir()) == []


def test_a_url_under_a_symlink_fails_with_an_io_error_and_the_run_goes_on(
    server, unique, tmp_path: Path
):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    blocked, fine = f"/ok/{unique}/sub/a.txt", f"/ok/{unique}/b.txt"
    link = saved_path(out, server, blocked).parent
    link.parent.mkdir(parents=True)
    link.symlink_to(elsewhere)
    stdin = f"{server.url(blocked)}\n{server.url(fine)}\n".encode()
    result = cli("get", "-o", str(out), "--jsonl", "-", "-q", stdin=stdin)
    assert result.exit_code == 1
    by_url = {r["url"]: r for r in result.records()}
    failed = by_url[server.url(blocked)]
    assert (failed["ok"], failed["error_kind"], failed["path"]) == (False, "io", None)
    assert failed["error"] == f"cannot write {link}: a symlink in the output directory"
    assert by_url[server.url(fine)]["ok"] and saved_path(out, server, fine).exists()
    assert list(elsewhere.iterdir()) == []
