"""Continuing cut transfers against real loopback servers: within a run (a retry asks for the
rest with Range/If-Range) and across runs (--continue, --resume: a kept partial body and its
sidecar), with FaultServer's misbehaving variants and nginx as the reference."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

import fetchcli
from fetchcli.partial import (
    PARTIAL_SUFFIX,
    Held,
    parse_http_date,
    partial_path,
    read_sidecar,
    sidecar_path,
)
from tests.helpers import FETCHCLI, cli, put_sidecar
from tests.nginx import Nginx
from tests.servers import FaultServer, body_for

SIZE = 1_000_000
# Paced, so the client has read what was sent when the server resets the connection (a TCP
# RST discards what the client's kernel holds unread, and the server would count it as sent).
PACED = f"size={SIZE}&rate={SIZE}"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def get(url: str, out: Path, *args: str) -> dict:
    result = cli("get", "-", "-o", str(out), "--jsonl", "-", "--backoff", "0", *args,
                 stdin=(url + "\n").encode())  # fmt: skip
    (record,) = result.records()
    return record


def leftovers(out: Path) -> list[str]:
    """Kept or temporary files anywhere under `out`."""
    return sorted(p.name for p in out.rglob("*") if ".fetchcli-part" in p.name)


def version(target: str, n: int = 1, size: int = SIZE) -> bytes:
    return body_for(f"{target}#{n}", size)


# --- Within a run ---------------------------------------------------------------------------


def test_a_body_reset_at_half_is_finished_by_a_range_retry(server: FaultServer, unique, tmp_path):
    target = f"/range/{unique}/f.bin?{PACED}&fail=1"
    record = get(server.url(target), tmp_path)
    data = version(target)
    assert (record["ok"], record["status"], record["attempts"]) == (True, 206, 2)
    assert record["sha256"] == sha(data) and record["bytes"] == SIZE
    assert Path(record["path"]).read_bytes() == data
    last = server.last_headers(target)
    held = int(last["range"].removeprefix("bytes=").removesuffix("-"))
    assert SIZE // 4 <= held <= SIZE // 2 and last["if-range"] == record["etag"]
    assert server.bytes_sent(target) <= 1.1 * SIZE
    assert leftovers(tmp_path) == []
    # A body made of two responses still gets its mtime from Last-Modified.
    mtime = parse_http_date(record["last_modified"])
    assert mtime is not None and Path(record["path"]).stat().st_mtime == mtime


@pytest.mark.parametrize("end", ["fin", "stall"])
def test_a_body_cut_by_a_close_or_a_stall_is_finished_by_a_range_retry(
    server, unique, tmp_path, end
):
    # A clean close short of the Content-Length (truncation), and silence mid-body that
    # --read-timeout cuts: the retry asks for the rest, as after a reset.
    target = f"/range/{unique}/f.bin?{PACED}&fail=1&end={end}"
    record = get(server.url(target), tmp_path, "--read-timeout", "1")
    data = version(target)
    assert (record["ok"], record["status"]) == (True, 206) and record["attempts"] >= 2
    assert record["sha256"] == sha(data) and Path(record["path"]).read_bytes() == data
    last = server.last_headers(target)
    assert last["range"].startswith("bytes=") and last["if-range"] == record["etag"]
    assert server.bytes_sent(target) <= 1.1 * SIZE
    assert leftovers(tmp_path) == []


def test_a_server_that_ignores_range_is_read_again_in_full(server, unique, tmp_path):
    target = f"/norange/{unique}/f.bin?{PACED}&fail=1"
    record = get(server.url(target), tmp_path)
    assert (record["ok"], record["status"], record["attempts"]) == (True, 200, 2)
    assert "range" in server.last_headers(target)  # asked; the 200 replaced what was held
    assert Path(record["path"]).read_bytes() == version(target)
    assert record["sha256"] == sha(version(target))


def test_a_changed_body_fails_if_range_and_its_new_version_is_saved(server, unique, tmp_path):
    target = f"/changing/{unique}/f.bin?{PACED}&fail=1"
    record = get(server.url(target), tmp_path)
    assert (record["ok"], record["status"], record["etag"]) == (True, 200, '"v2"')
    assert server.last_headers(target)["if-range"] == '"v1"'
    assert Path(record["path"]).read_bytes() == version(target, 2)
    assert record["sha256"] == sha(version(target, 2))


def test_a_206_from_the_wrong_byte_is_refused_and_the_body_asked_for_from_zero(
    server, unique, tmp_path
):
    target = f"/wrong-range/{unique}/f.bin?{PACED}&fail=1"
    record = get(server.url(target), tmp_path)
    assert (record["ok"], record["status"], record["attempts"]) == (True, 200, 2)
    assert "range" not in server.last_headers(target)  # the request after the bad 206
    assert server.hits(target) == 3
    assert Path(record["path"]).read_bytes() == version(target)


@pytest.mark.parametrize(
    ("query", "ranged"),
    [
        ("validators=date", True),  # no ETag: If-Range carries the date
        ("validators=none", False),  # nothing to check the rest against
        ("validators=etag&weak=1", False),  # a weak ETag never goes in If-Range
    ],
)
def test_a_range_is_asked_for_only_under_a_strong_validator(
    server, unique, tmp_path, query, ranged
):
    target = f"/range/{unique}/f.bin?{PACED}&fail=1&{query}"
    record = get(server.url(target), tmp_path)
    assert record["ok"] and record["sha256"] == sha(version(target))
    assert ("range" in server.last_headers(target)) is ranged
    assert record["status"] == (206 if ranged else 200)


def test_an_encoded_body_continues_where_its_stream_stopped(server, unique, tmp_path):
    target = f"/range/{unique}/f.bin?{PACED}&fail=1&encoding=gzip"
    record = get(server.url(target), tmp_path)
    assert (record["ok"], record["status"], record["attempts"]) == (True, 206, 2)
    assert record["sha256"] == sha(version(target)) and record["bytes"] == SIZE
    encoded = len(gzip.compress(version(target), mtime=0))
    assert server.bytes_sent(target) <= 1.1 * encoded


def test_a_transfer_that_keeps_timing_out_is_completed_by_ranges(nginx: Nginx, unique, tmp_path):
    data = body_for(unique, 2_500_000)
    path = nginx.put(f"{unique}/slow.bin", data)
    uri = f"/slow{path}?rate=1m"
    record = get(nginx.url(uri), tmp_path, "-t", "1", "-r", "20")
    assert record["ok"] and record["status"] == 206 and record["attempts"] >= 3
    assert Path(record["path"]).read_bytes() == data
    entries = nginx.wait_for(uri, record["attempts"])
    assert entries[0].range == "" and all(e.range for e in entries[1:])
    # Each attempt asks for what follows the bytes held: never again for any it kept. (Not a
    # bound on the bytes nginx sent: what sat unread in the socket buffers at each cut, lost,
    # grows with the machine's load.)
    starts = [0] + [int(e.range.removeprefix("bytes=").removesuffix("-")) for e in entries[1:]]
    assert all(earlier < later for earlier, later in itertools.pairwise(starts))


# --- Across runs: --continue and --resume -----------------------------------------------------


@pytest.mark.parametrize("size", [100_000, SIZE])  # held in memory, or spilled to disk
def test_a_failed_transfer_is_kept_and_the_next_run_continues_it(server, unique, tmp_path, size):
    target = f"/range/{unique}/f.bin?size={size}&rate={size}&fail=1"
    first = get(server.url(target), tmp_path, "--continue", "-r", "0")
    assert not first["ok"] and first["path"] is None
    (saved,) = tmp_path.rglob("*" + PARTIAL_SUFFIX)
    held = read_sidecar(sidecar_path(saved), server.url(target))
    assert held is not None and held.size == saved.stat().st_size > 0 and held.total == size
    record = get(server.url(target), tmp_path, "--continue")
    assert (record["ok"], record["status"], record["attempts"]) == (True, 206, 1)
    assert server.last_headers(target)["range"] == f"bytes={held.size}-"
    assert Path(record["path"]).read_bytes() == version(target, size=size)
    assert Path(record["path"]).stat().st_mtime == parse_http_date(record["last_modified"])
    assert record["sha256"] == sha(version(target, size=size))
    assert server.bytes_sent(target) <= 1.1 * size
    assert leftovers(tmp_path) == []


def test_without_continue_a_failed_transfer_leaves_nothing(server, unique, tmp_path):
    target = f"/range/{unique}/f.bin?{PACED}&fail=1"
    assert not get(server.url(target), tmp_path, "-r", "0")["ok"]
    assert leftovers(tmp_path) == []


def keep_partial(
    nginx: Nginx, out: Path, uri: str, body: bytes, etag: str, last_modified: str | None = None
) -> Path:
    """A kept partial body of nginx's `uri` under `out`, as an earlier run leaves it."""
    partial = partial_path(out / f"127.0.0.1_{nginx.port}" / uri.lstrip("/"))
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(body)
    held = Held(
        url=nginx.url(uri), size=len(body), etag=etag, last_modified=last_modified, total=None
    )
    put_sidecar(sidecar_path(partial), held)
    return partial


def etag_of(nginx: Nginx, uri: str) -> str:
    with closing(http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=10)) as conn:
        conn.request("HEAD", uri)
        etag = conn.getresponse().getheader("etag")
    assert etag
    return etag


def test_a_416_on_a_complete_kept_body_finishes_it(nginx, unique, tmp_path):
    data = body_for(unique, 300_000)
    uri = nginx.put(f"{unique}/done.bin", data, mtime=1_600_000_000)
    etag = etag_of(nginx, uri)
    modified = "Sun, 13 Sep 2020 12:26:40 GMT"  # the file's mtime, as the sidecar keeps it
    partial = keep_partial(nginx, tmp_path, uri, data, etag, modified)
    record = get(nginx.url(uri), tmp_path, "--continue")
    assert (record["ok"], record["status"], record["sha256"]) == (True, 200, sha(data))
    assert Path(record["path"]).read_bytes() == data and not partial.exists()
    entry = nginx.wait_for(uri, 2)[-1]
    assert (entry.status, entry.range, entry.if_range) == (416, f"bytes={len(data)}-", etag)
    assert Path(record["path"]).stat().st_mtime == 1_600_000_000
    assert leftovers(tmp_path) == []


def test_a_kept_body_whose_file_changed_is_replaced_in_full(nginx, unique, tmp_path):
    old = body_for(unique, 300_000)
    uri = nginx.put(f"{unique}/c.bin", old, mtime=1_600_000_000)
    etag = etag_of(nginx, uri)
    keep_partial(nginx, tmp_path, uri, old[:100_000], etag)
    new = body_for(unique + "new", 300_000)
    nginx.put(f"{unique}/c.bin", new, mtime=1_600_000_100)
    record = get(nginx.url(uri), tmp_path, "--continue")
    assert (record["ok"], record["status"]) == (True, 200)
    assert Path(record["path"]).read_bytes() == new and record["sha256"] == sha(new)
    entry = nginx.wait_for(uri, 2)[-1]
    assert entry.if_range == etag and entry.body_bytes_sent == len(new)


def test_a_kept_body_of_a_url_that_is_now_gone_is_removed(nginx, unique, tmp_path):
    uri = f"/{unique}/gone.bin"
    partial = keep_partial(nginx, tmp_path, uri, b"x" * 1000, '"abc"')
    record = get(nginx.url(uri), tmp_path, "--continue")
    assert (record["ok"], record["status"]) == (False, 404)
    assert not partial.exists() and not sidecar_path(partial).exists()


def test_a_kept_body_is_left_alone_without_continue(nginx, unique, tmp_path):
    data = body_for(unique, 300_000)
    uri = nginx.put(f"{unique}/a.bin", data)
    partial = keep_partial(nginx, tmp_path, uri, data[:1000], etag_of(nginx, uri))
    record = get(nginx.url(uri), tmp_path)
    assert record["ok"] and Path(record["path"]).read_bytes() == data
    assert partial.exists() and nginx.wait_for(uri, 2)[-1].range == ""


REAPER = Path(__file__).with_name("reaper.py")


@contextmanager
def started(args: list[str], url: str, signum: int) -> Iterator[subprocess.Popen[bytes]]:
    """fetchcli on `url` under the reaper, whose SIGUSR1 sends fetchcli `signum`."""
    process = subprocess.Popen(
        [sys.executable, str(REAPER), str(signum), *FETCHCLI, "get", "-", "-q", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(url.encode() + b"\n")
    process.stdin.close()
    try:
        yield process
    finally:
        process.kill()
        process.wait()
        process.stdout.close()


def ended_as(reaper: subprocess.Popen[bytes]) -> dict[str, Any]:
    """How fetchcli and what it left behind ended, once the reaper has said it."""
    reaper.wait(timeout=15)
    assert reaper.stdout is not None
    ended: dict[str, Any] = json.loads(reaper.stdout.read())
    return ended


def wait_for_partial(out: Path, at_least: int, timeout: float = 30) -> Path:
    """The kept partial body under `out` once it holds `at_least` bytes (bounded wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in out.rglob("*" + PARTIAL_SUFFIX):
            if path.stat().st_size >= at_least:
                return path
        time.sleep(0.05)  # a condition on disk, polled with a deadline
    msg = f"no partial body of {at_least} bytes under {out}"
    raise AssertionError(msg)


@pytest.mark.skipif(sys.platform != "linux", reason="the reaper uses prctl")
@pytest.mark.parametrize(
    ("signum", "exit_code", "flag"),
    [(signal.SIGINT, 130, "--resume"), (signal.SIGKILL, -9, "--continue")],
)
def test_a_stopped_download_is_continued_by_the_next_run(
    nginx, unique, tmp_path, signum, exit_code, flag
):
    data = body_for(unique, 6_000_000)
    uri = f"/slow{nginx.put(f'{unique}/big.bin', data)}?rate=2m"
    out, records = tmp_path / "out", tmp_path / "r.jsonl"
    args = ["-o", str(out), "--jsonl", str(records), "-t", "0", "-P", "2", flag]
    with started(args, nginx.url(uri), signum) as process:
        partial = wait_for_partial(out, 1 << 20)
        process.send_signal(signal.SIGUSR1)
        ended = ended_as(process)
    assert ended["status"] == exit_code
    # Nothing is left running, so nothing still writes to the partial body: a Ctrl-C stops
    # the engines in order, and a kill -9 takes the engine that holds the download with it
    # (before, it went on to write what it held, while the next run may be continuing the
    # file). The other engine has no job: it has ended on its own (0), dies the same way, or,
    # on a busy machine still starting, finds itself orphaned and exits (1).
    if signum == signal.SIGINT or (os.cpu_count() or 1) < 2:  # -P is capped at the cores
        assert ended["orphans"] == []
    else:
        assert -signal.SIGKILL in ended["orphans"]
        assert set(ended["orphans"]) <= {0, 1, -signal.SIGKILL}
    held = read_sidecar(sidecar_path(partial), nginx.url(uri))
    assert held is not None and held.etag and held.total == len(data)  # kill -9 too
    kept = partial.stat().st_size
    done = subprocess.run([*FETCHCLI, "get", "-", "-q", *args], input=nginx.url(uri).encode(),
                          timeout=120)  # fmt: skip
    assert done.returncode == 0
    first, second = nginx.wait_for(uri, 2)[:2]
    assert first.range == "" and first.body_bytes_sent >= kept
    assert (second.status, second.range) == (206, f"bytes={kept}-")
    assert second.if_range == held.etag and second.body_bytes_sent == len(data) - kept
    record = json.loads(records.read_text().splitlines()[-1])
    assert (record["ok"], record["sha256"], record["bytes"]) == (True, sha(data), len(data))
    assert Path(record["path"]).read_bytes() == data
    assert leftovers(out) == []


def test_a_transfer_cut_by_the_deadline_is_kept_and_continued(nginx, unique, tmp_path):
    data = body_for(unique, 3_000_000)
    uri = f"/slow{nginx.put(f'{unique}/late.bin', data)}?rate=1m"
    # One process: engine processes would spend the deadline starting up on a loaded machine.
    first = get(nginx.url(uri), tmp_path, "--continue", "--deadline", "1.5", "-t", "0", "-P", "1")
    assert (first["ok"], first["error_kind"]) == (False, "deadline")
    (partial,) = tmp_path.rglob("*" + PARTIAL_SUFFIX)
    held = read_sidecar(sidecar_path(partial), nginx.url(uri))
    assert held is not None and 0 < held.size == partial.stat().st_size < len(data)
    record = get(nginx.url(uri), tmp_path, "--continue", "-t", "0")
    assert (record["ok"], record["status"], record["sha256"]) == (True, 206, sha(data))
    entry = nginx.wait_for(uri, 2)[-1]
    assert (entry.range, entry.body_bytes_sent) == (f"bytes={held.size}-", len(data) - held.size)
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(sys.platform != "linux", reason="the reaper uses prctl")
def test_ctrl_c_without_continue_keeps_no_partial_body(nginx, unique, tmp_path):
    uri = f"/slow{nginx.put(f'{unique}/big.bin', body_for(unique, 6_000_000))}?rate=2m"
    out = tmp_path / "out"
    with started(["-o", str(out), "-t", "0"], nginx.url(uri), signal.SIGINT) as process:
        deadline = time.monotonic() + 30
        while not leftovers(out) and time.monotonic() < deadline:
            time.sleep(0.05)  # until the body reached the disk, bounded
        assert leftovers(out) and not list(out.rglob("*" + PARTIAL_SUFFIX))
        process.send_signal(signal.SIGUSR1)
        assert ended_as(process) == {"status": 130, "orphans": []}
    assert leftovers(out) == []


# --- The library ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_library_continues_with_continue_partial(nginx, unique, tmp_path):
    data = body_for(unique, 300_000)
    uri = nginx.put(f"{unique}/lib.bin", data)
    keep_partial(nginx, tmp_path, uri, data[:120_000], etag_of(nginx, uri))
    records = [
        record
        async for record in fetchcli.fetch(
            [nginx.url(uri)], output_dir=str(tmp_path), continue_partial=True
        )
    ]
    assert [(r.ok, r.status, r.sha256) for r in records] == [(True, 206, sha(data))]
    entry = nginx.wait_for(uri, 2)[-1]
    assert entry.range == "bytes=120000-" and entry.body_bytes_sent == len(data) - 120_000


@pytest.mark.anyio
async def test_a_continued_body_is_checked_whole_against_its_rows_sha256(nginx, unique, tmp_path):
    data = body_for(unique, 300_000)
    uri = nginx.put(f"{unique}/row.bin", data)
    etag = etag_of(nginx, uri)
    row = {"url": nginx.url(uri), "sha256": sha(data), "size": str(len(data))}
    keep_partial(nginx, tmp_path, uri, data[:100_000], etag)
    (record,) = [
        r async for r in fetchcli.fetch([row], output_dir=str(tmp_path), continue_partial=True)
    ]
    assert (record.ok, record.status, record.sha256) == (True, 206, sha(data))
    # A kept body that does not make the row's sha256 is thrown away, not kept again.
    partial = keep_partial(nginx, tmp_path, uri, b"x" * 100_000, etag)
    (record,) = [
        r async for r in fetchcli.fetch([row], output_dir=str(tmp_path), continue_partial=True)
    ]
    assert record.ok  # the retry after the mismatch fetched it whole
    assert record.attempts == 2 and record.status == 200 and record.sha256 == sha(data)
    assert not partial.exists() and not sidecar_path(partial).exists()


def test_the_summary_counts_the_bytes_sent_in_this_run_not_those_held(nginx, unique, tmp_path):
    data = body_for(unique, 3_000_000)
    uri = nginx.put(f"{unique}/held.bin", data)
    keep_partial(nginx, tmp_path, uri, data[:1_200_000], etag_of(nginx, uri))
    result = cli("get", "-", "-o", str(tmp_path), "--continue", stdin=nginx.url(uri).encode())
    assert result.exit_code == 0
    entry = nginx.wait_for(uri, 2)[-1]
    assert (entry.status, entry.body_bytes_sent) == (206, 1_800_000)
    assert ", 1.8 MB, " in result.stderr and "3.0 MB" not in result.stderr
