"""Manifests end to end: the CLI reads CSV, TSV, JSONL and .gz rows, saves each body where its
row says, checks sizes and digests (a row's and the server's) before the rename, and names
files by --layout and --cut-dirs; in one process and through engine processes."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import fetchcli
from fetchcli.dedupe import Dedupe
from fetchcli.manifests import items_of
from fetchcli.models import Job, Record
from fetchcli.names import Namer, Naming
from fetchcli.producer import produce
from fetchcli.sink import TEMP_SUFFIX
from fetchcli.sources import Source
from fetchcli.stats import RunStats
from tests.helpers import cli, saved_path
from tests.servers import FaultServer, body_for


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def records_of(path: Path) -> list[dict]:
    return sorted((json.loads(line) for line in path.read_text().splitlines()), key=_line)


def _line(record: dict) -> int:
    return int(record["line"])


def rows_for(server: FaultServer, unique: str) -> list[dict]:
    """Three rows: a path, a checksum and a size each, and a caption to keep in meta."""
    rows = []
    for n in range(3):
        target = f"/ok/{unique}/img{n}.jpg"
        body = body_for(target)
        rows.append(
            {
                "url": server.url(target),
                "path": f"train/{n:04d}.jpg",
                "sha256": sha(body),
                "size": str(len(body)),
                "caption": f"a cat, number {n}",
            }
        )
    return rows


def write_manifest(path: Path, rows: list[dict], fmt: str) -> Path:
    columns = list(rows[0])
    if fmt == "jsonl":
        text = "".join(json.dumps(row) + "\n" for row in rows)
    else:
        sep = "\t" if fmt == "tsv" else ","
        quote = (lambda v: v) if fmt == "tsv" else (lambda v: f'"{v}"' if "," in v else v)
        lines = [sep.join(columns)] + [sep.join(quote(row[c]) for c in columns) for row in rows]
        text = "\r\n".join(lines) + "\r\n"
    data = text.encode()
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("name", "fmt", "flag"),
    [
        ("m.csv", "csv", None),
        ("m.tsv", "tsv", None),
        ("m.jsonl", "jsonl", None),
        ("m.csv.gz", "csv", None),
        ("m.jsonl.gz", "jsonl", None),
        ("manifest", "tsv", "tsv"),  # no extension: --input-format says
    ],
)
def test_rows_land_where_they_say_checked_and_recorded_with_meta(
    server, unique, tmp_path, name, fmt, flag
):
    rows = rows_for(server, unique)
    manifest = write_manifest(tmp_path / name, rows, fmt)
    out, log = tmp_path / "out", tmp_path / "r.jsonl"
    args = ["get", str(manifest), "-o", str(out), "--jsonl", str(log)]
    result = cli(*args, *(["--input-format", flag] if flag else []))
    assert result.exit_code == 0, result.stderr
    assert files_under(out) == {
        f"train/{n:04d}.jpg": body_for(f"/ok/{unique}/img{n}.jpg") for n in range(3)
    }
    records = records_of(log)
    assert [r["line"] for r in records] == ([1, 2, 3] if fmt == "jsonl" else [2, 3, 4])
    for record, row in zip(records, rows, strict=True):
        assert record["ok"] and record["url"] == row["url"]
        assert record["path"] == str(out / row["path"]) and record["sha256"] == row["sha256"]
        assert record["meta"] == {"caption": row["caption"]}


def test_a_plain_list_keeps_its_records_as_they_were(server, unique, tmp_path):
    target = f"/ok/{unique}/x"
    result = cli("get", "-o", str(tmp_path), "--jsonl", "-", stdin=server.url(target).encode())
    (line,) = result.stdout.decode().splitlines()
    assert '"meta"' not in line and json.loads(line)["ok"]
    assert saved_path(tmp_path, server, target).read_bytes() == body_for(target)


def test_a_wrong_checksum_a_wrong_size_and_a_bad_row_fail_alone_and_keep_no_file(
    server, unique, tmp_path
):
    good, wrong_sum, wrong_size = (f"/ok/{unique}/{name}" for name in ("good", "sum", "size"))
    big = f"/big/{unique}/spilled?size=700000"  # spilled to a temporary file, then refused
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "url,sha256,size\n"
        f"{server.url(good)},{sha(body_for(good))},\n"
        f"{server.url(wrong_sum)},{'0' * 64},\n"
        f"{server.url(wrong_size)},,{len(body_for(wrong_size)) + 1}\n"
        f"{server.url(f'/ok/{unique}/bad-row')},not-a-digest,\n"
        f"{server.url(big)},{'1' * 64},\n"
    )
    out = tmp_path / "out"
    result = cli("get", str(manifest), "-o", str(out), "--jsonl", "-", "-r", "0")
    assert result.exit_code == 1
    by_line = {r["line"]: r for r in result.records()}
    assert by_line[2]["ok"] and Path(by_line[2]["path"]).read_bytes() == body_for(good)
    sum_failed, size_failed, bad_row, big_failed = by_line[3], by_line[4], by_line[5], by_line[6]
    assert sum_failed["error_kind"] == "checksum" and sum_failed["status"] == 200
    assert sum_failed["error"] == (
        f"sha256 mismatch: expected {'0' * 64}, got {sha(body_for(wrong_sum))}"
    )
    # Retried once, whatever -r says: a mirror may have served a bad copy.
    assert sum_failed["attempts"] == 2 and server.hits(wrong_sum) == 2
    size = len(body_for(wrong_size))
    assert size_failed["error_kind"] == "checksum"
    assert size_failed["error"] == f"size mismatch: expected {size + 1} bytes, got {size}"
    assert bad_row["error_kind"] == "invalid_url" and bad_row["attempts"] == 0
    assert bad_row["error"] == "bad sha256 'not-a-digest': not 64 hex digits"
    assert big_failed["error_kind"] == "checksum" and big_failed["path"] is None
    assert sorted(files_under(out)) == [f"127.0.0.1_{server.port}/ok/{unique}/good"]
    assert not [p for p in out.rglob("*") if p.name.endswith(TEMP_SUFFIX)]


def test_a_bad_copy_then_a_good_one_passes_on_the_retry(server, unique, tmp_path):
    target = f"/digest/{unique}/x?fail=1"
    result = cli(
        "get", "-o", str(tmp_path), "--jsonl", "-", "-r", "0", stdin=server.url(target).encode()
    )
    (record,) = result.records()
    assert record["ok"] and record["attempts"] == 2
    assert Path(record["path"]).read_bytes() == body_for(target)


@pytest.mark.parametrize(
    ("field", "algorithm"), [("Repr-Digest", "sha-256"), ("Content-Digest", "sha-512")]
)
def test_a_server_digest_passes_when_right_and_fails_when_tampered(
    server, unique, tmp_path, field, algorithm
):
    right = f"/digest/{unique}/right?field={field}&algorithm={algorithm}"
    tampered = f"/digest/{unique}/tampered?field={field}&algorithm={algorithm}&fail=99"
    stdin = f"{server.url(right)}\n{server.url(tampered)}\n".encode()
    result = cli("get", "-o", str(tmp_path), "--jsonl", "-", stdin=stdin)
    ok, failed = sorted(result.records(), key=_line)
    assert ok["ok"] and Path(ok["path"]).read_bytes() == body_for(right)
    body = body_for(tampered)
    digest = hashlib.new(algorithm.replace("-", ""), bytes([body[0] ^ 1]) + body[1:]).digest()
    assert not failed["ok"] and failed["error_kind"] == "checksum" and failed["attempts"] == 2
    assert failed["error"].startswith(f"{field} mismatch: expected {algorithm}=:")
    assert failed["error"].endswith(f"got {algorithm}=:{base64.b64encode(digest).decode()}:")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [Path(ok["path"])]


def test_skip_existing_skips_only_a_file_of_the_expected_size(server, unique, tmp_path):
    same, other = f"/ok/{unique}/same", f"/ok/{unique}/other"
    (tmp_path / "a").write_bytes(body_for(same))
    (tmp_path / "b").write_bytes(b"an older, shorter copy")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps({"url": server.url(same), "path": "a", "size": len(body_for(same))})
        + "\n"
        + json.dumps({"url": server.url(other), "path": "b", "size": len(body_for(other))})
        + "\n"
    )
    result = cli("get", str(manifest), "-o", str(tmp_path), "--skip-existing", "--jsonl", "-")
    skipped, fetched = sorted(result.records(), key=_line)
    assert skipped["skipped"] == "exists" and server.hits(same) == 0
    assert fetched["ok"] and fetched["skipped"] is None
    assert (tmp_path / "b").read_bytes() == body_for(other)


def test_flat_names_never_overwrite_and_cut_dirs_drops_directories(
    server, other_server, unique, tmp_path
):
    one, two = server.url(f"/ok/{unique}/a/data.bin"), other_server.url(f"/ok/{unique}/b/data.bin")
    flat = tmp_path / "flat"
    result = cli(
        "get", "--layout", "flat", "-o", str(flat), "--jsonl", "-", stdin=f"{one}\n{two}\n".encode()
    )
    first, second = sorted(result.records(), key=_line)
    assert Path(first["path"]) == flat / "data.bin"
    assert Path(second["path"]).parent == flat and Path(second["path"]).name.startswith("data~")
    assert Path(second["path"]).read_bytes() == body_for(f"/ok/{unique}/b/data.bin")
    cut = tmp_path / "cut"
    result = cli("get", "--cut-dirs", "2", "-o", str(cut), "--jsonl", "-", stdin=one.encode())
    (record,) = result.records()
    assert Path(record["path"]) == cut / f"127.0.0.1_{server.port}" / "a" / "data.bin"


def test_a_row_path_wins_and_one_url_may_be_wanted_under_two_names(server, unique, tmp_path):
    url = server.url(f"/ok/{unique}/shared")
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"url,path\n{url},one/copy.txt\n{url},two/copy.txt\n{url},one/copy.txt\n")
    result = cli("get", str(manifest), "-o", str(tmp_path / "out"), "--jsonl", "-")
    first, second, repeat = sorted(result.records(), key=_line)
    assert first["ok"] and second["ok"] and repeat["skipped"] == "duplicate"
    assert files_under(tmp_path / "out") == {
        "one/copy.txt": body_for(f"/ok/{unique}/shared"),
        "two/copy.txt": body_for(f"/ok/{unique}/shared"),
    }


def test_engine_processes_carry_expectations_and_the_coordinators_names(server, unique, tmp_path):
    rows = ["url,path,sha256"]
    for n in range(12):
        target = f"/ok/{unique}/{n}"
        digest = sha(body_for(target)) if n != 5 else "f" * 64
        rows.append(f"{server.url(target)},same.txt,{digest}")  # one name asked twelve times
    stdin = ("\n".join(rows) + "\n").encode()
    out = tmp_path / "out"
    args = ["get", "-", "--input-format", "csv", "-P", "2", "-c", "8", "-o", str(out)]
    result = cli(*args, "--jsonl", "-", stdin=stdin, cpu_count=2)
    records = sorted(result.records(), key=_line)
    assert result.exit_code == 1
    assert [r["line"] for r in records if not r["ok"]] == [7]
    assert records[5]["error_kind"] == "checksum"
    saved = [Path(r["path"]) for r in records if r["ok"]]
    assert len(set(saved)) == 11 and (out / "same.txt") in saved  # never one name twice
    for record in records:
        if record["ok"]:
            assert sha(Path(record["path"]).read_bytes()) == record["sha256"]


def test_a_header_without_a_url_column_is_a_usage_error(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("link,path\nhttp://a.test/x,y\n")
    result = cli("get", str(manifest), "--no-save")
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()  # one line, no summary of a run that could not start
    assert line.startswith("fetchcli: error: ") and "no 'url' column" in line


def test_the_library_takes_rows_too(server, unique, tmp_path):
    target = f"/ok/{unique}/lib"
    rows = [
        {"url": server.url(target), "path": "x/lib.txt", "sha256": sha(body_for(target))},
        {"url": server.url(target), "path": "x/bad.txt", "sha256": "0" * 64, "id": 7},
        server.url(f"/ok/{unique}/plain"),
    ]

    async def run() -> list[Record]:
        return [r async for r in fetchcli.fetch(rows, output_dir=str(tmp_path), retries=0)]

    records = sorted(asyncio.run(run()), key=lambda r: r.line)
    assert [r.ok for r in records] == [True, False, True]
    assert records[0].path == str(tmp_path / "x/lib.txt") and records[1].meta == {"id": 7}
    assert records[1].error_kind == "checksum" and not (tmp_path / "x/bad.txt").exists()


# --- a long manifest streams through the reading, naming and dedupe path ---------------------


class LazyCsv:
    """A CSV made as it is read (a stream for `Source`), counting the chunks taken."""

    ROWS_PER_CHUNK = 500

    def __init__(self, rows: int) -> None:
        self.taken = 0
        self._chunks = self._make(rows)

    def _make(self, rows: int) -> Iterator[bytes]:
        yield b"url,path,sha256,size,caption\n"
        for start in range(0, rows, self.ROWS_PER_CHUNK):
            yield b"".join(
                b"https://cdn.a.test/i/%d.jpg,img/%d.jpg,%064x,%d,cap %d\n" % (n, n, n, n, n)
                for n in range(start, min(start + self.ROWS_PER_CHUNK, rows))
            )

    def read1(self, size: int = -1) -> bytes:
        self.taken += 1
        return next(self._chunks, b"")

    def close(self) -> None:
        pass


@pytest.mark.anyio
async def test_a_long_manifest_is_read_only_as_fast_as_jobs_are_taken():
    # Flat memory: however long the manifest, the reader is never more than a few chunks
    # ahead of the jobs handed off (the parser's own peak is in test_manifests.py; a
    # million rows in benchmarks/manifest_memory.py).
    stream = LazyCsv(10_000)
    handed, lead = 0, 0

    async def handoff(job: Job) -> None:
        nonlocal handed, lead
        handed += 1
        lead = max(lead, stream.taken - handed // LazyCsv.ROWS_PER_CHUNK)
        if handed % 100 == 0:
            await asyncio.sleep(0.001)  # a slow consumer: the reader must wait for it

    async def emit(record: Record) -> None:
        raise AssertionError(record)

    await produce(
        items_of([Source("big.csv", stream)]),  # type: ignore[arg-type]
        handoff,
        emit=emit,
        stats=RunStats(),
        dedupe=Dedupe(emit),
        done=None,
        deadline_at=None,
        namer=Namer(Naming(), rows=True),
    )
    assert handed == 10_000
    assert lead <= 8  # 20 chunks in all: read as needed, not all first
