"""A `--ray` shard task without Ray: `run_shard` in this process against the loopback server,
with a funnel that keeps what is pushed. The shard is the CLI's run (`runner.drive`) with its
ledger as the records file: --update's ETags, --resume's idea of done, names and errors as
the CLI has them. tests/test_ray.py runs the same tasks on a real cluster.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest

from fetchcli.config import Settings
from fetchcli.errors import OutputError
from fetchcli.executor import from_wall, to_wall
from fetchcli.parallel.shard_task import Counters, Method, ShardResult, ShardSpec, run_shard
from fetchcli.records import Etags, RecordLog, load_etags
from fetchcli.shard import Shard
from tests.helpers import write_list
from tests.servers import FaultServer, body_for


class _Call:
    """What a call through `.remote` gives: awaitable on the task's loop, or a future for
    the ledger's writer thread."""

    def __init__(self, value: Any) -> None:
        self._future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._future.set_result(value)

    def __await__(self) -> Generator[Any, None, Any]:
        return asyncio.wrap_future(self._future).__await__()

    def future(self) -> concurrent.futures.Future[Any]:
        return self._future


class _Method:
    def __init__(self, function: Callable[..., Any]) -> None:
        self._function = function

    def remote(self, *args: Any) -> _Call:
        return _Call(self._function(*args))


class FakeFunnel:
    """The driver's funnel for one shard: a cursor, and the lines pushed past it."""

    def __init__(self, cursor: int = 0, start: int | None = None) -> None:
        self.lines: list[str] = []
        self._cursor = cursor
        self.begin: Method = _Method(lambda _index: (cursor, start))
        self.started: Method = _Method(lambda _index, count: count)
        self.push: Method = _Method(self._push)
        self.report: Method = _Method(lambda _index, _counters: None)

    def _push(self, _index: int, first: int, lines: list[str], _counters: Counters) -> None:
        assert first <= self._cursor, "records were never pushed"
        self.lines.extend(lines[self._cursor - first :])
        self._cursor = max(self._cursor, first + len(lines))

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]


def spec(tmp_path: Path, listing: Path, *, fresh: bool = True, **options: Any) -> ShardSpec:
    """Shard 0/1 of a run, as RayShards gives it (one process, no records file of its own)."""
    settings = Settings.create(
        sources=[str(listing)],
        shard=Shard(0, 1),
        processes=1,
        concurrency=1,
        retries=0,
        backoff=0,
        output_dir=tmp_path / "out",
        **options,
    )
    return ShardSpec(
        settings=settings,
        sources=((str(listing), str(listing)),),
        ledger=str(tmp_path / "ledger.jsonl"),
        fresh=fresh,
        deadline=None,
    )


def run(shard: ShardSpec, funnel: FakeFunnel, etags: Etags | None = None) -> ShardResult:
    return run_shard(shard, None, etags, funnel)


def test_update_sends_the_drivers_etags_and_resume_counts_a_304_as_done(
    server: FaultServer, unique: str, tmp_path: Path
):
    target, plain = f"/range/{unique}/a.bin?size=3000", f"/ok/{unique}/b.txt"
    listing = write_list(tmp_path / "urls.txt", [server.url(target), server.url(plain)])
    first = FakeFunnel()
    run(spec(tmp_path, listing), first)
    fetched = {record["line"]: record for record in first.records()}
    assert fetched[1]["status"] == 200 and fetched[1]["etag"]

    # --update: the ETags the driver read from its records go out as If-None-Match.
    etags = load_etags(str(tmp_path / "ledger.jsonl"))
    second = FakeFunnel()
    run(spec(tmp_path, listing, update=True), second, etags)
    assert server.last_headers(target)["if-none-match"] == fetched[1]["etag"]
    updated = {record["line"]: record for record in second.records()}
    assert (updated[1]["status"], updated[1]["skipped"]) == (304, "not_modified")
    assert Path(updated[1]["path"]).read_bytes() == body_for(f"{target}#1", 3000)

    # --resume: the 304 is done, as in the CLI's records; nothing is fetched again.
    hits = server.hits(target), server.hits(plain)
    third = FakeFunnel(cursor=2)  # the driver's records have the ledger's two
    result = run(spec(tmp_path, listing, fresh=False), third)
    assert (server.hits(target), server.hits(plain)) == hits
    assert result.resumed == 2 and third.lines == []


def test_a_retried_try_names_its_rows_as_the_first_try_did(
    server: FaultServer, unique: str, tmp_path: Path
):
    # Flat names meet: the second URL gets a hashed name. A retry that passes over the
    # first (recorded by the dead try) must still give the second that name, not the plain one.
    a, b = f"/ok/{unique}/a/data.txt", f"/ok/{unique}/b/data.txt"
    listing = write_list(tmp_path / "urls.txt", [server.url(a), server.url(b)])
    whole = FakeFunnel()
    run(spec(tmp_path, listing, layout="flat"), whole)
    names = {record["line"]: record["path"] for record in whole.records()}
    assert names[1] != names[2]

    # The dead try had recorded line 1 (the funnel has it) and not line 2.
    ledger = tmp_path / "ledger.jsonl"
    (line_1,) = [line for line in whole.lines if json.loads(line)["line"] == 1]
    ledger.write_text(line_1 + "\n")
    Path(names[2]).unlink()
    retry = FakeFunnel(cursor=1, start=0)
    run(spec(tmp_path, listing, layout="flat"), retry)

    (again,) = retry.records()
    assert (again["line"], again["path"]) == (2, names[2])
    assert Path(names[1]).read_bytes() == body_for(a)
    assert Path(names[2]).read_bytes() == body_for(b)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="a full disk is /dev/full")
def test_a_ledger_that_cannot_be_written_stops_the_shard_with_its_own_error(
    server: FaultServer, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # A full disk under the ledger: the shard's error is that one, never a task group's.
    listing = write_list(
        tmp_path / "urls.txt", [server.url(f"/ok/{unique}/{i}") for i in range(20)]
    )
    opened = RecordLog.open
    monkeypatch.setattr(RecordLog, "open", lambda _path, **options: opened("/dev/full", **options))
    funnel = FakeFunnel()
    with pytest.raises(OutputError, match="cannot write records to /dev/full: No space left"):
        run(spec(tmp_path, listing), funnel)
    assert funnel.lines == []  # nothing reaches the driver that is not in the ledger


def test_the_deadline_crosses_machines_as_wall_clock_time():
    # A node's monotonic clock is not the driver's: the task is given time.time().
    deadline_at = time.monotonic() + 30
    wall = to_wall(deadline_at)
    assert wall is not None and abs(wall - (time.time() + 30)) < 1
    back = from_wall(wall)
    assert back is not None and abs(back - deadline_at) < 1
    assert to_wall(None) is None and from_wall(None) is None
