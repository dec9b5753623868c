"""Repeated URLs: fetched once, and every repeat's record tells its original's outcome."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import pytest

from fetchcli.dedupe import MEMORY_OUTCOMES, Dedupe
from fetchcli.kinds import ErrorKind, Skipped
from fetchcli.models import Expectation, Job, Record, shown_url
from tests.helpers import cli, job, write_list

# What a repeat copies from its original's record.
OUTCOME = (
    "ok",
    "status",
    "path",
    "bytes",
    "sha256",
    "final_url",
    "error",
    "error_kind",
    "content_type",
)


def by_line(records: list[dict]) -> list[dict]:
    return sorted(records, key=lambda r: r["line"])


def assert_repeats(repeat: dict, original: dict) -> None:
    assert repeat["skipped"] == "duplicate" and repeat["attempts"] == 0
    assert {k: repeat[k] for k in OUTCOME} == {k: original[k] for k in OUTCOME}


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_repeat_carries_its_originals_outcome(server, unique, tmp_path, processes):
    missing = server.url(f"/status/404/{unique}")
    saved = server.url(f"/ok/{unique}/page.txt")
    moved = server.url(f"/redirect/chain/{unique}/1")
    lines = [missing, saved, moved, missing, saved + "#again", moved, missing]
    urls = write_list(tmp_path / "urls.txt", lines)
    out = tmp_path / "out"
    result = cli("get", str(urls), "-o", str(out), "--jsonl", "-", "-P", processes)
    records = by_line(result.records())
    assert [r["line"] for r in records] == list(range(1, 8))
    assert [r["url"] for r in records] == lines
    assert records[0]["ok"] is False and records[0]["status"] == 404
    assert records[1]["ok"] and records[1]["path"] and records[1]["sha256"]
    assert records[2]["final_url"] == server.url(f"/redirect/chain/{unique}/0")
    for repeat, original in [(3, 0), (4, 1), (5, 2), (6, 0)]:
        assert_repeats(records[repeat], records[original])
    # `jq 'select(.ok) | .path'` never gets null for a saved body.
    assert all(r["path"] for r in records if r["ok"])
    assert server.hits(f"/status/404/{unique}") == 1
    assert server.hits(f"/ok/{unique}/page.txt") == 1
    assert result.exit_code == 1


def test_a_repeat_of_a_url_in_flight_waits_for_its_original(server, unique, tmp_path):
    slow = server.url(f"/slow/{unique}?delay=0.3")
    quick = [server.url(f"/ok/{unique}/{i}") for i in range(5)]
    lines = [slow, *quick, slow, slow + "#b"]
    result = cli(
        "get", "-o", str(tmp_path), "--jsonl", "-", "-c", "4", stdin="\n".join(lines).encode()
    )
    assert result.exit_code == 0, result.stderr
    records = result.records()
    order = [r["line"] for r in records]
    # Written when the original finishes, after it, never before.
    assert order.index(7) > order.index(1) and order.index(8) > order.index(1)
    first = next(r for r in records if r["line"] == 1)
    assert first["ok"] and first["path"] and first["bytes"] > 0
    for line in (7, 8):
        assert_repeats(next(r for r in records if r["line"] == line), first)
    assert server.hits(f"/slow/{unique}?delay=0.3") == 1


def test_a_repeat_of_an_existing_file_carries_its_path_and_digest(server, unique, tmp_path):
    target = f"/ok/{unique}/have.txt"
    first = cli("get", "-o", str(tmp_path), "--jsonl", "-", stdin=server.url(target).encode())
    (saved,) = first.records()
    stdin = f"{server.url(target)}\n{server.url(target)}\n".encode()
    again = cli("get", "--skip-existing", "-o", str(tmp_path), "--jsonl", "-", stdin=stdin)
    original, repeat = by_line(again.records())
    assert original["skipped"] == "exists" and original["sha256"] == saved["sha256"]
    assert_repeats(repeat, original)


def test_resume_skips_repeats_recorded_ok_and_fetches_nothing_again(server, unique, tmp_path):
    page = server.url(f"/ok/{unique}/page")
    urls = write_list(tmp_path / "urls.txt", [page, page, page + "#frag"])
    records = tmp_path / "records.jsonl"
    first = cli("get", str(urls), "--no-save", "--jsonl", str(records))
    assert first.exit_code == 0 and server.hits(f"/ok/{unique}/page") == 1
    second = cli("get", str(urls), "--no-save", "--jsonl", str(records), "--resume")
    assert second.exit_code == 0, second.stderr
    assert server.hits(f"/ok/{unique}/page") == 1
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    assert sorted(r["line"] for r in lines) == [1, 2, 3]  # no line recorded twice
    assert "3 already done" in second.stderr


# --- the Dedupe itself, without a network --------------------------------------------------


class Rig:
    """A Dedupe between a producer's handoff and an emit, both recorded."""

    def __init__(self, **options: int) -> None:
        self.handed: list[Job] = []
        self.emitted: list[Record] = []
        self.dedupe = Dedupe(self._emit, **options)

    async def _emit(self, record: Record) -> None:
        self.emitted.append(record)

    async def _handoff(self, job: Job) -> None:
        self.handed.append(job)

    async def admit(self, url: str, line: int) -> None:
        await self.dedupe.admit(job(url, line), self._handoff)

    async def finish(self, line: int, **outcome: Any) -> Record:
        """The original on `line` finishes with `outcome`; return its record."""
        original = next(j for j in self.handed if j.line == line)
        record = Record(url=shown_url(original.url), source=original.source, line=line, **outcome)
        await self.dedupe.emit(record)
        return record


def saved(n: int) -> dict[str, Any]:
    return {
        "ok": True,
        "status": 200,
        "path": f"out/a.test/{n}",
        "bytes": n,
        "sha256": f"{n:064x}",
        "final_url": f"http://a.test/{n}",
        "content_type": "text/plain",
        "attempts": 1,
        "elapsed": 0.5,
        "etag": f'"v{n}"',  # kept on disk too, as the repeat's record shows them
        "last_modified": "Sun, 13 Sep 2020 12:26:40 GMT",
    }


@pytest.mark.anyio
async def test_a_repeat_is_held_while_its_original_is_in_flight():
    rig = Rig()
    await rig.admit("http://a.test/x", 1)
    await rig.admit("http://a.test/x#frag", 2)
    await rig.admit("HTTP://A.test/x", 3)
    assert [j.line for j in rig.handed] == [1] and rig.emitted == []
    error = {"ok": False, "status": 404, "error": "HTTP 404 Not Found", "error_kind": "http"}
    original = await rig.finish(1, **error, attempts=1)
    assert [r.line for r in rig.emitted] == [1, 2, 3]
    for repeat in rig.emitted[1:]:
        assert repeat.skipped == "duplicate" and not repeat.ok and repeat.attempts == 0
        assert (repeat.status, repeat.error, repeat.error_kind) == (404, original.error, "http")
    assert [r.url for r in rig.emitted[1:]] == ["http://a.test/x#frag", "HTTP://A.test/x"]
    await rig.dedupe.aclose()


@pytest.mark.anyio
async def test_outcomes_beyond_the_memory_bound_come_back_from_disk():
    rig = Rig(memory_outcomes=4)
    for n in range(1, 101):
        await rig.admit(f"http://a.test/{n}", n)
        await rig.finish(n, **saved(n))
    assert rig.dedupe.outcomes_in_memory <= 4
    for n in range(1, 101):
        await rig.admit(f"http://a.test/{n}", 100 + n)
    await rig.dedupe.flush()  # the end of a batch of lines: what is looked up on disk comes
    repeats = sorted(rig.emitted[100:], key=lambda r: r.line)
    assert [r.line for r in repeats] == list(range(101, 201))
    for n, repeat in enumerate(repeats, start=1):
        fields = {k: getattr(repeat, k) for k in saved(n) if k not in ("attempts", "elapsed")}
        assert fields == {k: v for k, v in saved(n).items() if k not in ("attempts", "elapsed")}
        assert repeat.skipped == "duplicate" and repeat.url == f"http://a.test/{n}"
    assert len(rig.handed) == 100  # each fetched once
    await rig.dedupe.aclose()


@pytest.mark.anyio
async def test_a_repeat_of_a_first_on_disk_gets_every_field_a_repeat_in_memory_gets():
    # Every field set, none to its default: a field the disk drops, or a field
    # `duplicate` sets that the disk keeps of the first, shows as a difference.
    first = {
        "ok": False,
        "status": 503,
        "path": "out/a.test/x",
        "bytes": 7,
        "sha256": "ab" * 32,
        "elapsed": 1.25,
        "attempts": 3,
        "error": "HTTP 503 Service Unavailable (é)",
        "error_kind": ErrorKind.HTTP,
        "final_url": "http://a.test/moved",
        "content_type": "text/html",
        "skipped": Skipped.NOT_MODIFIED,
        "etag": 'W/"v1"',
        "last_modified": "Sun, 13 Sep 2020 12:26:40 GMT",
        "meta": {"n": 1},
    }
    own = {"url", "source", "line"}  # set by `finish` and by `admit`
    assert set(first) | own == {field.name for field in dataclasses.fields(Record)}
    repeats = []
    for memory_outcomes in (MEMORY_OUTCOMES, 2):
        rig = Rig(memory_outcomes=memory_outcomes)
        await rig.admit("http://a.test/x", 1)
        await rig.finish(1, **first)
        for n in range(2, 6):  # with a bound of 2 these push the first's outcome to disk
            await rig.admit(f"http://a.test/{n}", n)
            await rig.finish(n, **saved(n))
        await rig.admit("http://a.test/x", 9)
        await rig.dedupe.flush()
        repeats.append(next(r for r in rig.emitted if r.line == 9))
        await rig.dedupe.aclose()
    in_memory, from_disk = repeats
    assert from_disk == in_memory
    assert in_memory.error_kind is ErrorKind.HTTP and in_memory.skipped is Skipped.DUPLICATE
    assert (in_memory.status, in_memory.etag, in_memory.meta) == (503, 'W/"v1"', None)


@pytest.mark.anyio
async def test_the_producer_waits_when_too_many_repeats_are_held():
    rig = Rig(max_held=2)
    await rig.admit("http://a.test/slow", 1)
    await rig.admit("http://a.test/slow", 2)
    await rig.admit("http://a.test/slow", 3)
    third = asyncio.ensure_future(rig.admit("http://a.test/slow", 4))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not third.done()  # held, and the producer waits
    await rig.finish(1, **saved(1))
    await third
    assert [r.line for r in rig.emitted] == [1, 2, 3, 4]
    await rig.dedupe.aclose()


@pytest.mark.anyio
async def test_records_of_other_lines_pass_through():
    rig = Rig()
    invalid = Record.invalid("-", 1, "ftp://x", "unsupported scheme 'ftp'")
    await rig.dedupe.emit(invalid)
    assert rig.emitted == [invalid]
    await rig.dedupe.aclose()
    await rig.dedupe.aclose()  # idempotent


@pytest.mark.anyio
async def test_a_url_with_a_password_or_a_row_path_is_matched_as_its_record_shows_it():
    rig = Rig()
    await rig.admit("https://alice:pw@a.test/x", 1)
    await rig.admit("https://alice:pw@a.test/x", 2)
    row = job("http://a.test/y", 3)
    named = Job(row.source, 3, row.url, row.parsed, Expectation(path="one.bin", meta={"n": 3}))
    again = Job(row.source, 4, row.url, row.parsed, Expectation(path="one.bin", meta={"n": 4}))
    other = Job(row.source, 5, row.url, row.parsed, Expectation(path="two.bin"))
    for item in (named, again, other):
        await rig.dedupe.admit(item, rig._handoff)
    assert [j.line for j in rig.handed] == [1, 3, 5]  # another path: another body to save
    await rig.finish(1, **saved(1))
    await rig.finish(3, **saved(3))
    repeats = {r.line: r for r in rig.emitted if r.skipped == "duplicate"}
    assert repeats[2].url == "https://***@a.test/x" and repeats[2].path == "out/a.test/1"
    assert repeats[4].path == "out/a.test/3" and repeats[4].meta == {"n": 4}
    await rig.dedupe.aclose()
