"""The JSONL file: whole lines only, even after a failed write or a crash."""

from __future__ import annotations

import asyncio
import io
import json
import os
from pathlib import Path

import pytest

from fetchcli.errors import OutputError
from fetchcli.kinds import Skipped
from fetchcli.models import Record
from fetchcli.records import MAX_BACKLOG, RecordLog, is_done, load_done, read_lines


def record(url: str, ok: bool = True, skipped: str | None = None) -> Record:
    kind = None if skipped is None else Skipped(skipped)
    return Record(url=url, ok=ok, skipped=kind, status=200 if ok else 404)


def test_records_are_written_as_json_lines(tmp_path: Path):
    path = tmp_path / "r.jsonl"
    log = RecordLog.open(str(path), append=False, stdout=io.BytesIO())
    assert log._write([record("http://a.test/1"), record("http://a.test/2", ok=False)]) == [
        None,
        None,
    ]
    log.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["url"], r["ok"]) for r in lines] == [
        ("http://a.test/1", True),
        ("http://a.test/2", False),
    ]
    assert set(lines[0]) >= {
        "url",
        "ok",
        "status",
        "path",
        "bytes",
        "sha256",
        "elapsed",
        "attempts",
        "error",
        "final_url",
        "content_type",
    }


class FullDisk(io.RawIOBase):
    """Accepts a few bytes, then fails like a full disk."""

    def __init__(self, room: int) -> None:
        self.data = bytearray()
        self.room = room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(self.data) >= self.room:
            raise OSError(28, "No space left on device")
        take = bytes(data[: self.room - len(self.data)])
        self.data += take
        return len(take)


def test_a_failed_write_reports_an_output_error():
    disk = FullDisk(room=50)
    log = RecordLog(disk, "records.jsonl", owned=False)  # type: ignore[arg-type]
    results = log._write([record("http://a.test/" + "x" * 100)])
    assert isinstance(results[0], OutputError)
    assert "No space left on device" in str(results[0])


def test_a_failed_write_is_cut_back_to_whole_lines(tmp_path: Path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"url": "http://a.test/0", "ok": True}) + "\n")
    stream = open(path, "ab", buffering=0)  # noqa: SIM115

    class Failing:
        def __init__(self) -> None:
            self.calls = 0

        def write(self, data) -> int:
            self.calls += 1
            if self.calls == 1:
                return stream.write(bytes(data[:10]))  # a partial line reaches the disk
            raise OSError(28, "No space left on device")

        def flush(self) -> None: ...

        def tell(self) -> int:
            return stream.tell()

        def fileno(self) -> int:
            return stream.fileno()

    log = RecordLog(Failing(), str(path), owned=False)  # type: ignore[arg-type]
    log._owned = log._seekable = True  # a real file: it may be cut back
    assert isinstance(log._write([record("http://a.test/1")])[0], OutputError)
    stream.close()
    assert [json.loads(line)["url"] for line in path.read_text().splitlines()] == [
        "http://a.test/0"
    ]


def test_load_done_reads_ok_records_and_drops_a_torn_last_line(tmp_path: Path):
    path = tmp_path / "r.jsonl"
    lines = [
        record("http://a.test/ok").to_json(),
        record("http://a.test/failed", ok=False).to_json(),
        record("http://a.test/dup", skipped="duplicate").to_json(),
        record("http://a.test/dup-failed", ok=False, skipped="duplicate").to_json(),
        record("http://a.test/exists", skipped="exists").to_json(),
        "not json at all",
    ]
    path.write_text("\n".join(lines) + "\n" + '{"url": "http://a.test/torn", "ok": tr')
    done = load_done(str(path))
    assert b"http://a.test/ok" in done and b"http://a.test/exists" in done
    assert b"http://a.test/dup" in done  # a repeat of a URL fetched ok
    assert b"http://a.test/failed" not in done and b"http://a.test/dup-failed" not in done
    assert b"http://a.test/torn" not in done
    assert path.read_text().endswith("not json at all\n")


def test_load_done_of_a_missing_file_is_empty(tmp_path: Path):
    assert len(load_done(str(tmp_path / "nothing.jsonl"))) == 0


def test_a_pipe_for_records_is_not_seeked(tmp_path: Path):
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "wb", buffering=0)
    log = RecordLog(stream, "pipe", owned=True)
    assert log._write([record("http://a.test/1")]) == [None]
    log.close()
    with os.fdopen(read_end, "rb") as reader:
        assert json.loads(reader.read())["url"] == "http://a.test/1"


@pytest.mark.anyio
async def test_adding_waits_when_the_writing_falls_far_behind():
    log = RecordLog(io.BytesIO(), "memory", owned=False)
    for i in range(MAX_BACKLOG):
        await log.add(record(f"http://a.test/{i}"))  # the writer is not running: they queue
    blocked = asyncio.ensure_future(log.add(record("http://a.test/over")))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not blocked.done()  # back-pressure: memory stays flat
    blocked.cancel()


@pytest.mark.parametrize(
    ("ok", "skipped", "done"),
    [
        (True, None, True),
        (True, "exists", True),
        (True, "duplicate", True),
        (True, "not_modified", True),  # a 304 kept the file: --resume and --ray agree
        (False, None, False),
        (False, "duplicate", False),
    ],
)
def test_what_counts_as_done_for_resume(tmp_path: Path, ok, skipped, done):
    raw = record("http://a.test/x", ok=ok, skipped=skipped).to_json()
    assert is_done(json.loads(raw)) is done
    path = tmp_path / "r.jsonl"
    path.write_text(raw + "\n")
    assert (b"http://a.test/x" in load_done(str(path))) is done


def test_read_lines_passes_over_a_torn_last_line_and_repairs_only_when_asked(tmp_path: Path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":2}\n{"c":')
    seen: list[bytes] = []
    assert read_lines(str(path), seen.append) == 2
    assert seen == [b'{"a":1}\n', b'{"b":2}\n'] and path.read_bytes().endswith(b'{"c":')
    assert read_lines(str(path), seen.append, repair=True) == 2
    assert path.read_bytes() == b'{"a":1}\n{"b":2}\n'
    assert read_lines(str(tmp_path / "missing.jsonl"), seen.append, repair=True) == 0


@pytest.mark.anyio
async def test_after_write_hears_each_batch_once_it_is_in_the_file(tmp_path: Path):
    path = tmp_path / "r.jsonl"
    heard: list[tuple[list[str], int]] = []

    def after_write(lines: list[str]) -> None:
        heard.append((lines, len(path.read_text().splitlines())))  # already written

    log = await asyncio.to_thread(RecordLog.open, str(path), append=False, after_write=after_write)
    async with log:
        for i in range(3):
            await log.add(record(f"http://a.test/{i}"))
    lines = path.read_text().splitlines()
    assert [line for batch, _ in heard for line in batch] == lines and len(lines) == 3
    assert all(written >= len(batch) for batch, written in heard)


@pytest.mark.anyio
async def test_a_failing_after_write_stops_the_run_with_its_error(tmp_path: Path):
    def after_write(lines: list[str]) -> None:
        raise OutputError("the driver is gone")

    log = RecordLog.open(str(tmp_path / "r.jsonl"), append=False, after_write=after_write)
    with pytest.raises(OutputError, match="the driver is gone"):
        async with log:
            await log.add(record("http://a.test/1"))
    assert (tmp_path / "r.jsonl").read_text().count("\n") == 1  # in the file: a retry replays it
