"""The output tree: directories opened without following symlinks, the run's lock, and the
lazy sweep of dead runs' temporary files."""

from __future__ import annotations

import fcntl
import itertools
import os
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

from fetchcli import tree
from fetchcli.tree import LOCK_PREFIX, LOCK_SUFFIX, TEMP_SUFFIX, OutputTree, SymlinkInTree


def write_in(output: OutputTree, relpath: str, data: bytes) -> None:
    path = PurePosixPath(relpath)
    directory = output.directory(path.parent, create=True)
    try:
        fd = os.open(path.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666, dir_fd=directory)
        os.write(fd, data)
        os.close(fd)
    finally:
        os.close(directory)


def temp_of(directory: Path, token: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    temp = directory / f".a.{token}-7{TEMP_SUFFIX}"
    temp.write_bytes(b"half a body")
    return temp


def test_more_directories_than_it_keeps_open_all_land_inside(tmp_path: Path):
    output = OutputTree(tmp_path)
    count = tree.OPEN_DIRS * 2 + 5
    for round_ in range(2):  # the second round meets directories that fell out of the cache
        for i in range(count):
            write_in(output, f"h/d{i}/e/f{round_}", b"%d" % i)
    output.close()
    for i in range(count):
        assert [(tmp_path / f"h/d{i}/e/f{r}").read_bytes() for r in (0, 1)] == [b"%d" % i] * 2
    (tmp_path / "h/d3/e").rename(tmp_path / "moved")
    (tmp_path / "h/d3/e").symlink_to(tmp_path / "moved")
    output = OutputTree(tmp_path)  # a new run: the swapped-in symlink is refused
    with pytest.raises(SymlinkInTree) as caught:
        output.directory(PurePosixPath("h/d3/e"), create=True)
    assert caught.value.path == tmp_path / "h/d3/e"
    output.close()


def test_a_file_in_the_way_is_not_a_directory(tmp_path: Path):
    (tmp_path / "h").mkdir()
    (tmp_path / "h/a").write_bytes(b"a file")
    output = OutputTree(tmp_path)
    with pytest.raises(NotADirectoryError):
        output.directory(PurePosixPath("h/a"), create=True)
    output.close()


def test_a_directory_first_looked_into_is_swept_when_first_written(tmp_path: Path):
    dead = temp_of(tmp_path / "h", "0badc0de")
    output = OutputTree(tmp_path)
    os.close(output.directory(PurePosixPath("h"), create=False))  # --skip-existing looks
    assert dead.exists()
    write_in(output, "h/b", b"x")
    assert not dead.exists()
    output.close()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["b", "h"]


def test_only_regular_files_named_as_temporary_files_are_swept(tmp_path: Path):
    (tmp_path / "h").mkdir()
    kept = [tmp_path / f"h/.d.0badc0de-1{TEMP_SUFFIX}", tmp_path / f"h/.l.0badc0de-2{TEMP_SUFFIX}"]
    kept[0].mkdir()
    kept[1].symlink_to(tmp_path / "nowhere")
    kept.append(temp_of(tmp_path / "h", "0BADC0DE"))  # not a token of ours: upper case
    output = OutputTree(tmp_path)
    write_in(output, "h/b", b"x")
    output.close()
    assert all(os.path.lexists(path) for path in kept)


def test_a_token_in_use_is_not_taken_and_its_files_are_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # Another run, alive, holds the lock of the first token this run draws.
    tokens = itertools.chain(["aaaaaaaa", "bbbbbbbb"], itertools.repeat("cccccccc"))
    monkeypatch.setattr("fetchcli.tree.secrets.token_hex", lambda _: next(tokens))
    other = tmp_path / f"{LOCK_PREFIX}aaaaaaaa{LOCK_SUFFIX}"
    with other.open("wb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        live = temp_of(tmp_path / "h", "aaaaaaaa")
        output = OutputTree(tmp_path)
        write_in(output, "h/b", b"x")
        assert output.temp_name("b", 1) == f".b.bbbbbbbb-1{TEMP_SUFFIX}"
        assert live.exists() and other.exists()
        assert (tmp_path / f"{LOCK_PREFIX}bbbbbbbb{LOCK_SUFFIX}").exists()
        output.close()
    assert not (tmp_path / f"{LOCK_PREFIX}bbbbbbbb{LOCK_SUFFIX}").exists()
    assert live.exists() and other.exists()


def test_after_close_nothing_more_is_opened(tmp_path: Path):
    output = OutputTree(tmp_path)
    write_in(output, "h/a", b"x")
    output.close()
    output.close()
    with pytest.raises(OSError, match="shutting down"):
        output.directory(PurePosixPath("h"), create=True)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "h"]


def test_a_run_removes_the_lock_files_of_runs_killed_with_9_and_only_theirs(tmp_path: Path):
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD_A_LOCK, str(tmp_path)], stdout=subprocess.PIPE
    )
    with child, child.stdout as said:  # type: ignore[union-attr]
        assert said.readline() == b"locked\n"
        child.kill()  # SIGKILL: its lock file stays, its flock goes
    dead = [p for p in tmp_path.iterdir() if p.name.startswith(LOCK_PREFIX)]
    assert len(dead) == 1
    live = tmp_path / f"{LOCK_PREFIX}aaaaaaaa{LOCK_SUFFIX}"
    stranger = tmp_path / f"{LOCK_PREFIX}not-ours{LOCK_SUFFIX}"
    stranger.write_bytes(b"")
    with live.open("wb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        output = OutputTree(tmp_path)
        write_in(output, "h/b", b"x")
        assert not dead[0].exists()
        assert live.exists() and stranger.exists()
        output.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["h", live.name, stranger.name])


_HOLD_A_LOCK = """
import os, sys, time
from pathlib import Path, PurePosixPath
from fetchcli.tree import OutputTree
output = OutputTree(Path(sys.argv[1]))
os.close(output.directory(PurePosixPath("h"), create=True))
print("locked", flush=True)
time.sleep(60)
"""
