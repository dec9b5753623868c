"""The real CLI against real HTTP servers on 127.0.0.1 (tests/servers.py)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.helpers import FETCHCLI, cli, run_measured, saved_path, write_list
from tests.servers import body_for


def test_a_file_of_urls_is_fetched_saved_and_recorded(server, unique, tmp_path):
    targets = [f"/ok/{unique}/page{i}.html" for i in range(20)] + [f"/ok/{unique}/big?size=300000"]
    urls = write_list(tmp_path / "urls.txt", [server.url(t) for t in targets])
    out, records = tmp_path / "out", tmp_path / "records.jsonl"
    result = cli("get", str(urls), "-o", str(out), "--jsonl", str(records), "-c", "8")
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    assert sorted(r["line"] for r in lines) == list(range(1, 22))
    for target in targets[:-1]:
        assert saved_path(out, server, target).read_bytes() == body_for(target)
    big = next(r for r in lines if "big" in r["url"])
    body = body_for(targets[-1], 300000)
    assert Path(big["path"]).read_bytes() == body
    assert big["sha256"] == hashlib.sha256(body).hexdigest() and big["bytes"] == 300000
    assert big["status"] == 200 and big["attempts"] == 1 and big["error"] is None
    assert big["final_url"] == server.url(targets[-1])
    assert big["content_type"] == "text/plain" and big["source"] == str(urls)
    assert all(server.hits(t) == 1 for t in targets)


def test_urls_on_stdin(server, unique, tmp_path):
    targets = [f"/ok/{unique}/{i}" for i in range(5)]
    stdin = "".join(server.url(t) + "\n" for t in targets).encode()
    result = cli("get", "-o", str(tmp_path), "--jsonl", "-", stdin=stdin)
    assert result.exit_code == 0
    assert {r["url"] for r in result.records()} == {server.url(t) for t in targets}
    assert all(r["ok"] and r["source"] == "-" for r in result.records())


def test_no_save_writes_nothing_but_still_hashes(server, unique, tmp_path):
    target = f"/ok/{unique}/x?size=5000"
    result = cli(
        "get", "--no-save", "-o", str(tmp_path), "--jsonl", "-", stdin=server.url(target).encode()
    )
    (record,) = result.records()
    assert record["ok"] and record["path"] is None
    assert record["sha256"] == hashlib.sha256(body_for(target, 5000)).hexdigest()
    assert list(tmp_path.iterdir()) == []


def test_skip_existing_does_not_fetch_what_is_on_disk(server, unique, tmp_path):
    have, need = f"/ok/{unique}/have.txt", f"/ok/{unique}/need.txt"
    existing = saved_path(tmp_path, server, have)
    existing.parent.mkdir(parents=True)
    existing.write_bytes(b"already here")
    stdin = f"{server.url(have)}\n{server.url(need)}\n".encode()
    result = cli("get", "--skip-existing", "-o", str(tmp_path), "--jsonl", "-", stdin=stdin)
    assert result.exit_code == 0
    by_url = {r["url"]: r for r in result.records()}
    assert by_url[server.url(have)]["skipped"] == "exists"
    assert server.hits(have) == 0 and server.hits(need) == 1
    assert existing.read_bytes() == b"already here"
    kept = by_url[server.url(have)]
    assert kept["ok"] and kept["path"] == str(existing) and kept["bytes"] == 12
    assert kept["sha256"] == hashlib.sha256(b"already here").hexdigest()
    assert ", 2 ok (1 already there), 0 failed," in result.stderr


def test_a_redirect_to_a_refusal_records_the_url_that_answered(server, unique):
    forbidden = server.url(f"/status/403/{unique}")
    moved = server.url(f"/redirect/to/{unique}?url={quote(forbidden, safe='')}")
    result = cli("get", "--no-save", "--jsonl", "-", stdin=moved.encode())
    (record,) = result.records()
    assert (record["ok"], record["status"], record["final_url"]) == (False, 403, forbidden)


def test_a_bad_line_is_recorded_as_written(tmp_path):
    long = "http://long.test/" + "x" * 10_000
    lines = ["http://tab.test/a\tb", long, "http://esc.test/\x1b[2J", " ftp://x.test/ "]
    source = tmp_path / "urls.txt"
    source.write_text("\n".join(lines) + "\n")
    result = cli("get", str(source), "--no-save", "--jsonl", "-")
    records = sorted(result.records(), key=lambda r: r["line"])
    assert [r["url"] for r in records] == [
        lines[0],
        long[: 8 * 1024] + "…[cut]",
        lines[2],
        "ftp://x.test/",
    ]
    assert records[1]["error"] == "line of 10,017 bytes is longer than 8 KiB"
    assert b"\\t" in result.stdout and b"\\u001b" in result.stdout  # JSON's own escapes


def test_resume_fetches_only_what_is_not_done(server, unique, tmp_path):
    good = [f"/ok/{unique}/{i}" for i in range(5)]
    flaky = f"/flaky/{unique}/once?fail=1&status=500"
    urls = write_list(tmp_path / "urls.txt", [server.url(t) for t in [*good, flaky]])
    records = tmp_path / "records.jsonl"
    first = cli("get", str(urls), "--no-save", "-r", "0", "--jsonl", str(records))
    assert first.exit_code == 1
    second = cli("get", str(urls), "--no-save", "-r", "0", "--jsonl", str(records), "--resume")
    assert second.exit_code == 0
    assert all(server.hits(t) == 1 for t in good)  # not fetched again
    assert server.hits(flaky) == 2
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    assert len(lines) == 7  # 6 from the first run, 1 appended by the resumed one
    assert "5 already done" in second.stderr


def test_headers_reach_the_server(server, unique):
    target = f"/headers/{unique}"
    result = cli(
        "get",
        "--no-save",
        "-H",
        "X-Api-Key: s3cret",
        "-A",
        "probe/1.0",
        stdin=server.url(target).encode(),
    )
    assert result.exit_code == 0
    seen = server.last_headers(target)
    assert seen["x-api-key"] == "s3cret" and seen["user-agent"] == "probe/1.0"
    assert seen["accept-encoding"] == "gzip, deflate"


def test_default_user_agent_names_fetchcli(server, unique):
    target = f"/headers/{unique}"
    cli("get", "--no-save", stdin=server.url(target).encode())
    assert server.last_headers(target)["user-agent"].startswith("fetchcli/")


def test_the_first_url_is_fetched_while_a_slow_pipe_is_still_writing(server, unique, tmp_path):
    first, rest = f"/ok/{unique}/first", [f"/ok/{unique}/later{i}" for i in range(3)]
    process = subprocess.Popen(
        [*FETCHCLI, "get", "-", "--no-save", "-q"], stdin=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdin is not None
    try:
        process.stdin.write((server.url(first) + "\n").encode())
        process.stdin.flush()
        assert server.wait_for_hits(first, 1, timeout=20), "the first URL waited for the pipe"
        assert process.poll() is None  # still running: the pipe is open
        for target in rest:
            process.stdin.write((server.url(target) + "\n").encode())
        process.stdin.close()
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        process.wait()
        if process.stderr:
            process.stderr.close()
    assert all(server.hits(t) == 1 for t in rest)


def test_max_bytes_fails_a_large_body_and_keeps_nothing(server, unique, tmp_path):
    small, large = f"/ok/{unique}/small?size=1000", f"/big/{unique}/large?size=5000000"
    stdin = f"{server.url(small)}\n{server.url(large)}\n".encode()
    result = cli("get", "--max-bytes", "1M", "-o", str(tmp_path), "--jsonl", "-", stdin=stdin)
    assert result.exit_code == 1
    by_url = {r["url"]: r for r in result.records()}
    assert by_url[server.url(small)]["ok"]
    assert by_url[server.url(large)]["error_kind"] == "too_large"
    assert by_url[server.url(large)]["attempts"] == 1
    files = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].startswith("small~")


def test_the_deadline_stops_the_run_and_records_what_was_unfinished(server, unique):
    hung = [f"/hang/{unique}/{i}" for i in range(3)]
    quick = f"/ok/{unique}/quick"
    stdin = "".join(server.url(t) + "\n" for t in [quick, *hung]).encode()
    started = time.monotonic()
    result = cli("get", "--no-save", "-P", "1", "--deadline", "1", "--jsonl", "-", stdin=stdin)
    elapsed = time.monotonic() - started
    assert result.exit_code == 1
    assert elapsed < 10  # a hung server would otherwise hold the run for 30 s x 4 attempts
    by_url = {r["url"]: r for r in result.records()}
    assert by_url[server.url(quick)]["ok"]
    for target in hung:
        assert by_url[server.url(target)]["error"] == "deadline exceeded"


def test_concurrency_bounds_requests_in_flight(server, unique):
    server.wait_idle()  # an earlier test's slow request would count here
    server.reset_stats()
    stdin = "".join(server.url(f"/slow/{unique}/{i}?delay=0.2") + "\n" for i in range(24)).encode()
    result = cli("get", "--no-save", "-c", "4", stdin=stdin)
    assert result.exit_code == 0
    assert server.max_in_flight == 4


def test_per_host_bounds_each_host(server, other_server, unique):
    server.wait_idle()  # an earlier test's slow request would count here
    server.reset_stats()
    other_server.wait_idle()  # an earlier test's slow request would count here
    other_server.reset_stats()
    urls = []
    for i in range(12):
        urls += [
            server.url(f"/slow/{unique}/{i}?delay=0.2"),
            other_server.url(f"/slow/{unique}/{i}?delay=0.2"),
        ]
    result = cli(
        "get",
        "--no-save",
        "-c",
        "16",
        "-w",
        "16",
        "--per-host",
        "2",
        stdin="\n".join(urls).encode(),
    )
    assert result.exit_code == 0
    assert server.max_in_flight == 2 and other_server.max_in_flight == 2


def test_exit_codes(server, unique):
    ok = cli("get", "--no-save", stdin=server.url(f"/ok/{unique}/a").encode())
    failed = cli("get", "--no-save", stdin=server.url(f"/status/404/{unique}").encode())
    usage = cli("get", "--no-save", "-c", "0", stdin=b"")
    assert (ok.exit_code, failed.exit_code, usage.exit_code) == (0, 1, 2)


def test_a_large_body_is_fetched_with_flat_memory(server, unique, tmp_path):
    size = 400 * 1024 * 1024
    target = f"/big/{unique}/huge.bin?size={size}"
    records = tmp_path / "r.jsonl"
    code, peak_mib = run_measured(
        ["get", "-", "-o", str(tmp_path), "-q", "--jsonl", str(records)], server.url(target)
    )
    assert code == 0
    (record,) = [json.loads(line) for line in records.read_text().splitlines()]
    assert record["bytes"] == size and Path(record["path"]).stat().st_size == size
    assert peak_mib < 150, f"peak RSS {peak_mib:.0f} MiB for a {size >> 20} MiB body"


def test_a_gzip_body_is_saved_decoded(server, unique, tmp_path):
    target = f"/gzip/{unique}/doc.txt"
    result = cli("get", "-o", str(tmp_path), "--jsonl", "-", stdin=server.url(target).encode())
    (record,) = result.records()
    assert Path(record["path"]).read_bytes() == body_for(target)


def test_redirects_across_origins_drop_credentials(server, other_server, unique):
    landing = f"/headers/{unique}"
    start = f"/redirect/to/{unique}?url={quote(other_server.url(landing), safe='')}"
    result = cli(
        "get",
        "--no-save",
        "-H",
        "Authorization: Bearer top-secret",
        "-H",
        "Cookie: session=1",
        "-H",
        "X-Trace: 7",
        "--jsonl",
        "-",
        stdin=server.url(start).encode(),
    )
    (record,) = result.records()
    assert record["ok"] and record["final_url"] == other_server.url(landing)
    seen = other_server.last_headers(landing)
    assert "authorization" not in seen and "cookie" not in seen
    assert seen["x-trace"] == "7"


def test_no_follow_records_the_redirect(server, unique, tmp_path):
    target = f"/redirect/chain/{unique}/1"
    result = cli(
        "get", "--no-follow", "-o", str(tmp_path), "--jsonl", "-", stdin=server.url(target).encode()
    )
    (record,) = result.records()
    assert (record["ok"], record["status"], record["path"]) == (False, 302, None)
    assert result.exit_code == 1 and list(tmp_path.iterdir()) == []


def test_head_requests(server, unique, tmp_path):
    target = f"/ok/{unique}/h"
    result = cli(
        "get", "-X", "HEAD", "-o", str(tmp_path), "--jsonl", "-", stdin=server.url(target).encode()
    )
    (record,) = result.records()
    assert record["ok"] and record["bytes"] == 0 and list(tmp_path.iterdir()) == []


def test_duplicates_are_fetched_once_and_recorded(server, unique):
    target = f"/ok/{unique}/same"
    stdin = (server.url(target) + "\n" + server.url(target) + "#frag\n").encode()
    result = cli("get", "--no-save", "--jsonl", "-", stdin=stdin)
    assert result.exit_code == 0 and server.hits(target) == 1
    assert sorted(str(r["skipped"]) for r in result.records()) == ["None", "duplicate"]
    again = cli("get", "--no-save", "--no-dedupe", "--jsonl", "-", stdin=stdin)
    assert again.exit_code == 0 and server.hits(target) == 3


@pytest.mark.parametrize("jsonl_to_stdout", [True, False])
def test_stdout_carries_only_what_was_asked_for(server, unique, tmp_path, jsonl_to_stdout):
    args = ["--jsonl", "-"] if jsonl_to_stdout else []
    result = cli("get", "--no-save", *args, stdin=server.url(f"/ok/{unique}/o").encode())
    assert (result.stdout != b"") is jsonl_to_stdout
