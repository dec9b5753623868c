"""--update against real loopback servers (nginx for ETag, Last-Modified and 304): a 304 leaves
the saved file untouched, a change is fetched again, a server without validators in full; and
saved files take their mtime from Last-Modified."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import httpx
import pytest

import fetchcli
from fetchcli.config import Settings
from fetchcli.models import Record
from fetchcli.partial import parse_http_date
from fetchcli.records import load_done, load_etags
from tests.helpers import cli, fetch_rig, job, write_list
from tests.nginx import Nginx
from tests.servers import FaultServer, body_for

MTIME = 1_600_000_000


def run(urls: list[str], out: Path, records: Path | None, *args: str) -> list[dict]:
    jsonl = ["--jsonl", str(records)] if records is not None else []
    result = cli("get", str(write_list(out.parent / "list.txt", urls)), "-o", str(out),
                 "-q", *jsonl, *args)  # fmt: skip
    assert result.exit_code in (0, 1), result.stderr
    if records is None:
        return []
    return [json.loads(line) for line in records.read_text().splitlines()]


def tree(nginx: Nginx, key: str, count: int) -> list[str]:
    """`count` files on nginx (one of them large enough to be spilled), their URLs."""
    urls = []
    for i in range(count):
        size = 600_000 if i == 0 else 100 + 37 * i
        urls.append(nginx.url(nginx.put(f"{key}/f{i}.bin", body_for(f"{key}{i}", size), MTIME + i)))
    return urls


def snapshot(out: Path) -> dict[Path, tuple[int, int, int]]:
    return {
        path: (path.stat().st_mtime_ns, path.stat().st_ino, path.stat().st_size)
        for path in out.rglob("*")
        if path.is_file()
    }


def test_an_unchanged_tree_is_all_304_and_no_file_is_rewritten(nginx, unique, tmp_path):
    urls = tree(nginx, unique, 12)
    out, records = tmp_path / "out", tmp_path / "r.jsonl"
    first = {r["url"]: r for r in run(urls, out, records)}
    assert all(r["ok"] and r["status"] == 200 and r["etag"] for r in first.values())
    before = snapshot(out)
    second = run(urls, out, records, "--update")
    assert len(second) == len(urls)
    for record in second:
        was = first[record["url"]]
        assert (record["ok"], record["status"], record["skipped"]) == (True, 304, "not_modified")
        assert (record["path"], record["bytes"], record["sha256"], record["etag"]) == (
            was["path"],
            was["bytes"],
            was["sha256"],
            was["etag"],
        )
    assert snapshot(out) == before  # mtime and inode of every file kept
    for url in urls:
        entry = nginx.wait_for(url.removeprefix(nginx.base_url), 2)[-1]
        assert (entry.status, entry.body_bytes_sent) == (304, 0)
        assert entry.if_none_match == first[url]["etag"]
        assert parse_http_date(entry.if_modified_since) == parse_http_date(
            first[url]["last_modified"]
        )


def test_a_changed_file_is_fetched_again_and_the_rest_are_304(nginx, unique, tmp_path):
    urls = tree(nginx, unique, 4)
    out, records = tmp_path / "out", tmp_path / "r.jsonl"
    first = {r["url"]: r for r in run(urls, out, records)}
    before = snapshot(out)
    new = body_for(unique + "new", 700_000)
    nginx.put(f"{unique}/f0.bin", new, MTIME + 3600)
    second = {r["url"]: r for r in run(urls, out, records, "--update")}
    changed = second[urls[0]]
    assert (changed["ok"], changed["status"], changed["skipped"]) == (True, 200, None)
    assert changed["sha256"] == hashlib.sha256(new).hexdigest()
    assert changed["etag"] != first[urls[0]]["etag"]
    path = Path(changed["path"])
    assert path.read_bytes() == new and path.stat().st_mtime == MTIME + 3600
    assert path.stat().st_ino != before[path][1]  # replaced by a rename, not rewritten
    assert all(second[url]["status"] == 304 for url in urls[1:])
    assert {p: v for p, v in snapshot(out).items() if p != path} == {
        p: v for p, v in before.items() if p != path
    }


def test_a_server_without_validators_is_fetched_in_full(server: FaultServer, unique, tmp_path):
    target = f"/range/{unique}/f.bin?size=300000&validators=none"
    out, records = tmp_path / "out", tmp_path / "r.jsonl"
    (first,) = run([server.url(target)], out, records)
    assert first["etag"] is None and first["last_modified"] is None
    (second,) = run([server.url(target)], out, records, "--update")
    assert (second["ok"], second["status"], second["skipped"]) == (True, 200, None)
    assert second["sha256"] == first["sha256"]
    asked = server.last_headers(target)
    assert "if-modified-since" in asked and "if-none-match" not in asked
    assert server.bytes_sent(target) == 2 * 300_000


def test_a_weak_etag_from_the_records_is_compared_weakly(server, unique, tmp_path):
    target = f"/range/{unique}/w.bin?size=5000&validators=etag&weak=1"
    out, records = tmp_path / "out", tmp_path / "r.jsonl"
    (first,) = run([server.url(target)], out, records)
    assert first["etag"].startswith('W/"')
    (second,) = run([server.url(target)], out, records, "--update")
    assert (second["status"], second["skipped"]) == (304, "not_modified")
    assert server.last_headers(target)["if-none-match"] == first["etag"]


def test_without_records_the_files_mtime_is_the_question(nginx, unique, tmp_path):
    urls = tree(nginx, unique, 3)
    out = tmp_path / "out"
    run(urls, out, None)
    before = snapshot(out)
    assert sorted(mtime for mtime, _, _ in before.values()) == [
        (MTIME + i) * 10**9 for i in range(3)
    ]  # Last-Modified, for the spilled body and the small ones alike
    records = tmp_path / "r.jsonl"
    second = run(urls, out, records, "--update")  # a records file that did not exist yet
    assert [r["status"] for r in second] == [304] * 3
    assert snapshot(out) == before
    for url in urls:
        entry = nginx.wait_for(url.removeprefix(nginx.base_url), 2)[-1]
        assert entry.if_none_match == "" and entry.if_modified_since


def test_a_url_with_no_saved_file_is_fetched_unconditionally(nginx, unique, tmp_path):
    urls = tree(nginx, unique, 2)
    out = tmp_path / "out"
    run(urls, out, None)
    (out / f"127.0.0.1_{nginx.port}" / unique / "f1.bin").unlink()
    records = run(urls, out, tmp_path / "r.jsonl", "--update")
    assert sorted(r["status"] for r in records) == [200, 304]
    entry = nginx.wait_for(urls[1].removeprefix(nginx.base_url), 2)[-1]
    assert entry.if_modified_since == "" and entry.status == 200


def test_the_etags_travel_with_the_jobs_to_engine_processes(nginx, unique, tmp_path):
    urls = tree(nginx, unique, 8)
    out, records = tmp_path / "out", tmp_path / "r.jsonl"
    first = {r["url"]: r for r in run(urls, out, records, "-P", "2", "-c", "8")}
    second = run(urls, out, records, "--update", "-P", "2", "-c", "8")
    assert [r["status"] for r in second] == [304] * len(urls)
    for url in urls:
        entry = nginx.wait_for(url.removeprefix(nginx.base_url), 2)[-1]
        assert entry.if_none_match == first[url]["etag"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--update", "--no-save"], "--update compares with the saved files"),
        (["--update", "--skip-existing"], "--update and --skip-existing exclude each other"),
    ],
)
def test_update_with_what_contradicts_it_is_a_usage_error(args, message):
    result = cli("get", "-", *args, stdin=b"http://127.0.0.1:1/x\n")
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.anyio
async def test_the_library_updates_by_mtime(nginx, unique, tmp_path):
    urls = tree(nginx, unique, 2)
    first = [r async for r in fetchcli.fetch(urls, output_dir=str(tmp_path))]
    assert all(r.ok and r.etag and r.last_modified for r in first)
    before = snapshot(tmp_path)
    second = [r async for r in fetchcli.fetch(urls, output_dir=str(tmp_path), update=True)]
    assert sorted((r.status, r.skipped) for r in second) == [(304, "not_modified")] * 2
    assert snapshot(tmp_path) == before
    assert {r.sha256 for r in second} == {r.sha256 for r in first}
    assert os.path.exists(second[0].path or "")


@pytest.mark.anyio
async def test_a_304_whose_file_went_meanwhile_fails_with_an_io_error(respx_mock, tmp_path):
    # The file is looked at before the request and hashed after the 304: gone by then, the
    # record says so instead of describing a file that is not there.
    url = "https://example.com/f.bin"
    route = respx_mock.get(url).mock(return_value=httpx.Response(304, headers={"ETag": '"a"'}))
    saved = tmp_path / "example.com" / "f.bin"
    saved.parent.mkdir()
    saved.write_bytes(b"old")
    async with fetch_rig(respx_mock, tmp_path, update=True, retries=0) as rig:
        pending = await rig.fetcher.prepare(job(url))
        assert not isinstance(pending, Record)
        saved.unlink()
        record = await rig.fetcher.attempt(pending)
    assert isinstance(record, Record) and route.call_count == 1
    assert "if-modified-since" in route.calls.last.request.headers
    assert (record.ok, record.status, record.error_kind) == (False, 304, "io")
    assert record.error == f"cannot read {saved}: it is gone or not a file"


# --- The pieces: options, the records' ETags --------------------------------------------------


def test_continue_is_implied_by_resume_and_needs_saving():
    assert Settings.create(jsonl="r.jsonl", resume=True).output.continue_partial
    assert Settings.create(continue_partial=True).output.continue_partial
    assert not Settings.create(continue_partial=True, save=False).output.continue_partial
    assert Settings.create(limit_rate="1.5M").limits.limit_rate == 1.5 * 1024 * 1024


def test_load_etags_keeps_the_last_ok_etag_of_each_url(tmp_path):
    path = tmp_path / "r.jsonl"
    lines = [
        {"url": "http://a/1", "ok": True, "etag": '"one"'},
        {"url": "http://a/2", "ok": True, "etag": 'W/"two"'},
        {"url": "http://a/1", "ok": True, "etag": '"newer"'},
        {"url": "http://a/3", "ok": False, "etag": '"failed"'},
        {"url": "http://a/2", "ok": True, "etag": None},  # a later run without one keeps it
    ]
    text = "".join(json.dumps(line).replace(" ", "") + "\n" for line in lines)
    path.write_text(text + '{"url":"http://a/4","ok":true,"etag":"\\"torn')
    etags = load_etags(str(path))
    assert (etags.get("http://a/1"), etags.get("http://a/2")) == ('"newer"', 'W/"two"')
    assert etags.get("http://a/3") is None and etags.get("http://a/4") is None
    assert len(etags) == 2 and len(load_etags(str(tmp_path / "missing"))) == 0


def test_a_304_counts_as_done_for_resume(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"url":"http://a/1","ok":true,"skipped":"not_modified"}\n')
    assert b"http://a/1" in load_done(str(path))
