"""--ray on a real local Ray cluster (two CPUs, started once for the session): shards as Ray
tasks, their records streamed back once each, and a task killed mid-run that continues.

A handful of tests on purpose: the cluster takes seconds to start, and each task a worker.
The Funnel's bookkeeping is tested without Ray, below.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import fetchcli
from fetchcli import session
from fetchcli.errors import IncompleteRun, OutputError
from fetchcli.parallel.shard_task import Counters
from fetchcli.shard import Shard
from tests.helpers import cli, job, write_list
from tests.servers import body_for

if os.environ.get("CI"):
    import ray  # CI installs the ray extra: there, a missing Ray is a failure, not a skip
else:
    ray = pytest.importorskip("ray", reason="pip install -e '.[test,ray]' for the Ray tests")

from ray.exceptions import RayTaskError

from fetchcli.parallel.ray_shards import Funnel, _cause  # after the check: it needs Ray

# One worker of pytest-xdist runs them all: one cluster, started once.
pytestmark = [pytest.mark.timeout(240), pytest.mark.xdist_group("ray")]


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One local cluster for every Ray test; fetchcli finds it connected and uses it."""
    import ray.cloudpickle

    from tests import ray_hooks

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # no usage report from a test run
    ray.cloudpickle.register_pickle_by_value(ray_hooks)  # the workers cannot import tests/
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        runtime_env={"worker_process_setup_hook": ray_hooks.install},
    )
    try:
        yield
    finally:
        ray.shutdown()


def test_2000_urls_in_8_shards_one_record_each_exact_bytes(ray_cluster, server, unique, tmp_path):
    # Flat names: URL i and i + 1000 share a name but not a shard (likely): the shards name
    # every line as one run would, so the second gets a hashed name and nothing is overwritten.
    sizes = [100 + i % 7 for i in range(1000)]
    targets = [f"/ok/{unique}/{d}/{i}.txt?size={sizes[i]}" for d in "ab" for i in range(1000)]
    listing = write_list(tmp_path / "urls.txt", ["# ray", *map(server.url, targets)])
    records = tmp_path / "records.jsonl"
    result = cli(
        "get", str(listing), "--ray", "local", "--shards", "8", "--shard-by", "url",
        "-o", str(tmp_path / "out"), "--jsonl", str(records), "-c", "32", "--layout", "flat",
    )  # fmt: skip

    assert result.exit_code == 0, result.stderr
    assert "2,000 URLs" in result.stderr and "2,000 ok" in result.stderr
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    assert sorted(record["line"] for record in lines) == list(range(2, 2002))
    assert all(record["ok"] and record["attempts"] == 1 for record in lines)
    assert len({record["path"] for record in lines}) == 2000
    for record in lines:
        target = record["url"].removeprefix(server.base_url)
        size = sizes[(record["line"] - 2) % 1000]
        assert Path(record["path"]).read_bytes() == body_for(target, size)
    assert [server.hits(target) for target in targets] == [1] * 2000
    # The shards' own records hold the same lines, byte for byte, each in one ledger.
    ledgers = sorted((tmp_path / "records.jsonl.shards").glob("shard-*-of-8.jsonl"))
    assert len(ledgers) == 8 and all(path.stat().st_size for path in ledgers)
    shard_lines = [line for path in ledgers for line in path.read_text().splitlines()]
    assert sorted(shard_lines) == sorted(records.read_text().splitlines())
    assert cli("merge", str(records), "--input", str(listing)).exit_code == 0


def test_a_shard_killed_mid_run_is_retried_and_continues(ray_cluster, server, unique, tmp_path):
    out = tmp_path / "out"
    marker = tmp_path / "crash"
    marker.write_text(str(out / ".fetchcli-shards"))  # where the library keeps the ledgers
    targets = [f"/ok/{unique}/{i}" for i in range(600)]
    targets[450] += f"?crash={marker}"  # late in its shard: much of it is recorded by then
    urls = [server.url(target) for target in targets]
    # A repeat, after the kill, of an early URL of the shard killed (recorded before it, likely).
    split = Shard(0, 4, "url")
    crashed = split.share(job(urls[450]))
    first = next(i for i, url in enumerate(urls) if split.share(job(url)) == crashed)
    urls.append(urls[first])  # as written: an earlier try's "done" must not swallow it

    async def run() -> list[fetchcli.Record]:
        return [
            record
            async for record in fetchcli.fetch(
                urls, ray="local", shards=4, shard_by="url", output_dir=out, concurrency=8
            )
        ]

    records = asyncio.run(run())

    assert not marker.exists(), "the worker was killed"
    before = dict(
        (int(line), url)
        for line, url in (
            row.split("\t") for row in (tmp_path / "crash.ok").read_text().splitlines()
        )
    )
    recorded_before = set(before.values())
    # The killed try had recorded part of its shard: how much depends on the machine's load
    # (its ledger's writer lags; a clean clone's CI once saw 19), not on the code.
    assert before
    assert sorted(Counter(record.line for record in records).items()) == [
        (line, 1) for line in range(1, 602)
    ]
    assert all(record.ok for record in records)
    hits = {url: server.hits(target) for url, target in zip(urls, targets, strict=False)}
    # Nothing recorded ok before the kill was fetched again; at most what was in flight was.
    # But for the repeat's first: a repeat recorded after the kill needs an outcome, and no
    # try keeps its first's, so it is fetched once more. (The producer reads ahead: the repeat
    # may have been recorded, with its first's outcome, before the kill.)
    assert {hits[url] for url in recorded_before - {urls[first]}} == {1}
    refetched = first + 1 in before and 601 not in before
    assert hits[urls[first]] == (2 if refetched else 1)
    (repeat,) = [record for record in records if record.line == 601]
    assert repeat.ok and repeat.path and Path(repeat.path).read_bytes() == body_for(targets[first])
    # What was fetched again is what the killed try had not recorded (in flight, or waiting
    # for its ledger's writer, which is how many depends on the machine's load): all of it
    # from the killed shard.
    again = {url for url, count in hits.items() if count > 1} - {urls[first]}
    assert again <= {url for url in urls if split.share(job(url)) == crashed} - recorded_before
    assert all(count >= 1 for count in hits.values())
    for record in records:
        target = record.url.removeprefix(server.base_url)
        assert Path(record.path or "").read_bytes() == body_for(target)


def test_a_repeat_in_a_shard_carries_its_firsts_outcome_and_update_sends_etags(
    ray_cluster, server, unique, tmp_path, monkeypatch
):
    saved, missing = f"/ok/{unique}/page.txt", f"/status/404/{unique}"
    tagged = f"/range/{unique}/tagged.bin?size=2000"  # an ETag, and 304 to If-None-Match
    lines = [server.url(saved), server.url(missing), server.url(saved), server.url(missing) + "#x"]
    listing = write_list(tmp_path / "urls.txt", [*lines, server.url(tagged)])
    jsonl = tmp_path / "records.jsonl"
    run = ("get", str(listing), "--ray", "local", "--shards", "2", "-o", str(tmp_path / "out"),
           "--jsonl", str(jsonl))  # fmt: skip
    assert cli(*run).exit_code == 1  # the 404
    records = sorted(map(json.loads, jsonl.read_text().splitlines()), key=lambda r: r["line"])
    assert [r["line"] for r in records] == [1, 2, 3, 4, 5]
    for first, repeat in ((records[0], records[2]), (records[1], records[3])):
        assert repeat["skipped"] == "duplicate" and repeat["attempts"] == 0
        keep = ("ok", "status", "path", "bytes", "sha256", "error", "error_kind")
        assert {k: repeat[k] for k in keep} == {k: first[k] for k in keep}
    assert records[2]["path"] and not records[3]["ok"]
    assert server.hits(saved) == server.hits(missing) == 1

    # --update: the driver's records give the tasks their ETags.
    assert cli(*run, "--update").exit_code == 1
    assert server.last_headers(tagged)["if-none-match"] == records[4]["etag"]
    (updated,) = [r for r in map(json.loads, jsonl.read_text().splitlines()) if r["line"] == 5]
    assert (updated["status"], updated["skipped"], updated["path"]) == (
        304, "not_modified", records[4]["path"],
    )  # fmt: skip

    # --resume: the shards go on from their ledgers; the driver reads no done set of its own.
    def unused(path: str) -> None:
        msg = f"the driver read {path}'s done set"
        raise AssertionError(msg)

    monkeypatch.setattr(session, "load_done", unused)
    hits = server.hits(saved), server.hits(missing)
    assert cli(*run, "--resume").exit_code == 1  # the 404, tried again
    assert (server.hits(saved), server.hits(missing)) == (hits[0], hits[1] + 1)


# The Funnel's bookkeeping and the tasks' errors, without Ray's cluster.


def test_a_task_that_raised_ends_the_run_with_one_of_our_errors():
    group = ExceptionGroup("unhandled errors in a TaskGroup", [OutputError("disk full")])
    assert str(_cause("1/4", RayTaskError("run_shard", "...", group))) == "disk full"
    error = _cause("2/4", RayTaskError("run_shard", "...", KeyError("x")))
    assert isinstance(error, IncompleteRun)  # exit 1, one line: the CLI prints it as it is
    assert str(error) == "shard 2/4 failed: KeyError: 'x'"


def test_the_funnel_drops_what_a_retry_replays():
    async def scenario() -> list[str]:
        funnel = Funnel({})
        assert await funnel.begin(0) == (0, None)
        assert await funnel.started(0, 0) == 0
        await funnel.push(0, 0, ["a", "b"], Counters())
        await funnel.push(0, 2, ["c"], Counters(in_flight=3))
        # The try dies; its last push had reached the ledger only. The next try replays
        # from what the funnel has: the cursor; a stale push of the dead try changes nothing.
        assert await funnel.begin(0) == (3, 0)
        await funnel.push(0, 3, ["d", "e"], Counters())
        await funnel.push(0, 2, ["c", "d"], Counters())
        await funnel.push(1, 0, ["x"], Counters())
        taken = await funnel.take()
        assert taken is not None
        await funnel.close()
        assert await funnel.take() is None
        return taken[0]

    assert asyncio.run(scenario()) == ["a", "b", "c", "d", "e", "x"]


def test_the_funnel_starts_a_resumed_run_after_what_the_driver_has():
    async def scenario() -> None:
        funnel = Funnel({2: 5})
        assert await funnel.begin(2) == (5, None)
        assert await funnel.started(2, 7) == 7  # records 0-6 are earlier runs'
        assert await funnel.started(2, 9) == 7  # a later try does not move it
        await funnel.push(2, 5, ["f", "g", "h"], Counters())
        taken = await funnel.take()
        assert taken is not None and taken[0] == ["f", "g", "h"]
        with pytest.raises(IncompleteRun, match="never pushed"):
            await funnel.push(2, 10, ["z"], Counters())

    asyncio.run(scenario())
