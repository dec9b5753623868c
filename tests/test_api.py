"""The library API: fetchcli.fetch() as an async iterator of records."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

import fetchcli
from fetchcli.errors import UsageError
from tests.servers import body_for

pytestmark = pytest.mark.anyio


async def test_fetch_yields_a_record_per_url(server, unique, tmp_path: Path):
    targets = [f"/ok/{unique}/{i}.txt" for i in range(10)]
    urls = [server.url(t) for t in targets] + ["ftp://nope/x"]
    records = [r async for r in fetchcli.fetch(urls, concurrency=4, output_dir=tmp_path)]
    assert len(records) == 11
    by_url = {r.url: r for r in records}
    for target in targets:
        record = by_url[server.url(target)]
        assert record.ok and record.status == 200
        assert Path(record.path or "").read_bytes() == body_for(target)
    assert not by_url["ftp://nope/x"].ok and by_url["ftp://nope/x"].error_kind == "invalid_url"


async def test_fetch_takes_an_async_iterable_and_the_flags_options(server, unique):
    async def urls():
        for i in range(3):
            yield server.url(f"/flaky/{unique}/{i}?fail=1")

    records = [r async for r in fetchcli.fetch(urls(), save=False, retries=1, backoff=0)]
    assert all(r.ok and r.attempts == 2 for r in records) and len(records) == 3


async def test_leaving_early_stops_the_fetching(server, unique):
    urls = [server.url(f"/slow/{unique}/{i}?delay=0.2") for i in range(50)]
    async with contextlib.aclosing(fetchcli.fetch(urls, save=False, concurrency=2)) as stream:
        async for _record in stream:
            break
    hits = sum(server.hits(f"/slow/{unique}/{i}?delay=0.2") for i in range(50))
    assert hits < 10


async def test_bad_options_raise_usage_errors():
    with pytest.raises(UsageError, match="--concurrency must be at least 1"):
        async for _ in fetchcli.fetch([], concurrency=0):
            pass
    with pytest.raises(UsageError, match="not an option of fetch"):
        async for _ in fetchcli.fetch([], jsonl="x.jsonl"):
            pass
    with pytest.raises(UsageError, match="not an option of fetch\\(\\): concurency"):
        async for _ in fetchcli.fetch([], concurency=4):
            pass


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": "x"}, "concurrency must be an integer (got 'x')"),
        ({"retries": -1}, "--retries must be at least 0 (got -1)"),
        ({"max_bytes": "lots"}, "--max-bytes must be a number of bytes"),
        ({"headers": "X-A: 1"}, "headers must be a list of strings or a dict of strings"),
        ({"save": "no"}, "save must be True or False (got 'no')"),
    ],
)
async def test_wrong_types_and_values_are_usage_errors_as_on_the_command_line(options, message):
    with pytest.raises(UsageError) as raised:
        async for _ in fetchcli.fetch(["http://127.0.0.1:9/"], **options):
            pass
    assert str(raised.value).startswith(message)


async def test_max_bytes_takes_the_flags_sizes(server, unique):
    small, large = f"/ok/{unique}/small?size=1000", f"/big/{unique}/large?size=3000"
    urls = [server.url(small), server.url(large)]
    records = [r async for r in fetchcli.fetch(urls, save=False, max_bytes="2k")]
    by_url = {r.url: r for r in records}
    assert by_url[server.url(small)].ok
    assert by_url[server.url(large)].error_kind == "too_large"


async def test_headers_may_be_a_dict(server, unique):
    target = f"/headers/{unique}"
    records = [
        r async for r in fetchcli.fetch([server.url(target)], save=False, headers={"X-A": "1"})
    ]
    assert records[0].ok
    assert server.last_headers(target)["x-a"] == "1"


def test_the_package_exports_fetch_record_and_usage_error():
    assert fetchcli.fetch.__module__ == "fetchcli.api"
    assert fetchcli.Record.__name__ == "Record"
    assert fetchcli.UsageError is UsageError


async def test_fetch_runs_engine_processes_when_asked(server, unique, tmp_path: Path):
    targets = [f"/ok/{unique}/{i}.txt" for i in range(40)]
    records = [
        r
        async for r in fetchcli.fetch(
            [server.url(t) for t in targets], processes=2, concurrency=8, output_dir=tmp_path
        )
    ]
    by_url = {r.url: r for r in records}
    assert sorted(by_url) == sorted(server.url(t) for t in targets)
    for target in targets:
        record = by_url[server.url(target)]
        assert record.ok and Path(record.path or "").read_bytes() == body_for(target)


async def test_a_cancelled_consumer_leaves_no_task_pending(server, unique):
    # pytest turns "Task was destroyed but it is pending" into an error (filterwarnings).
    urls = [server.url(f"/hang/{unique}/{i}") for i in range(3)]

    async def consume() -> None:
        async for _ in fetchcli.fetch(urls, save=False):
            pass

    before = asyncio.all_tasks()
    task = asyncio.create_task(consume())
    assert await asyncio.to_thread(server.wait_in_flight, 3, 20)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert asyncio.all_tasks() - before == set()


async def test_an_output_dir_that_is_a_file_is_a_usage_error(server, unique, tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(UsageError):
        async for _ in fetchcli.fetch([server.url(f"/ok/{unique}/x")], output_dir=blocker):
            pass
    assert server.hits(f"/ok/{unique}/x") == 0
