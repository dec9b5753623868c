"""The workloads (W1-W4, W4M): their sizes, the files and URL lists they need, and how a run of
one is checked for having fetched everything.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from bench_servers import LatencyServer, StaticServer

KIB = 1024
MIB = 1024 * 1024
LATENCY_DELAY = 0.1  # seconds the latency server waits before answering (W3)
LOG_SETTLE = 3.0  # seconds to wait for a server to log the last responses of a run


@dataclass(frozen=True)
class Workload:
    id: str
    title: str
    count: int  # URLs fetched
    size: int  # bytes per body (the latency server's bodies are 3 bytes)
    concurrency: int
    saved: bool  # bodies written to disk, else discarded
    stdin: bool  # URL list piped on stdin (`cat LIST | tool`), else given as a file
    latency: bool  # served by the latency server, else by the static server
    metric: str  # "req/s", "MiB/s" or "efficiency"
    timeout: float  # seconds, per run
    fetchcli_only: bool = False

    @property
    def ideal_seconds(self) -> float:
        """W3: the wall time of a perfect fetcher (every request in flight waits the delay)."""
        return math.ceil(self.count / self.concurrency) * LATENCY_DELAY

    def figure(self, wall: float) -> float:
        if self.metric == "req/s":
            return self.count / wall
        if self.metric == "MiB/s":
            return self.count * self.size / MIB / wall
        return self.ideal_seconds / wall

    def describe(self) -> str:
        extra = f", ideal wall {self.ideal_seconds:.1f} s" if self.latency else ""
        return f"{self.id}: {self.title} (c={self.concurrency}{extra})"


FULL: dict[str, Workload] = {
    w.id: w
    for w in (
        Workload("W1", "10,000 URLs x 1 KiB files, saved to disk",
                 10_000, KIB, 64, saved=True, stdin=False, latency=False,
                 metric="req/s", timeout=180),
        Workload("W2", "8 URLs x 64 MiB files, saved to disk",
                 8, 64 * MIB, 8, saved=True, stdin=False, latency=False,
                 metric="MiB/s", timeout=180),
        Workload("W3", "2,000 URLs to a server answering after 100 ms, not saved",
                 2_000, 3, 100, saved=False, stdin=False, latency=True,
                 metric="efficiency", timeout=60),
        Workload("W4", "200,000 distinct URLs (1 KiB files) piped on stdin, not saved",
                 200_000, KIB, 64, saved=False, stdin=True, latency=False,
                 metric="req/s", timeout=420),
        Workload("W4M", "memory: 1,000,000 distinct URLs piped on stdin, not saved",
                 1_000_000, KIB, 64, saved=False, stdin=True, latency=False,
                 metric="req/s", timeout=1800, fetchcli_only=True),
    )
}  # fmt: skip

# --quick: about 1/10 of the sizes (W4: 1/40, so that xargs+curl's process per URL fits).
QUICK: dict[str, Workload] = {
    "W1": replace(FULL["W1"], title="1,000 URLs x 1 KiB files, saved to disk",
                  count=1_000, timeout=60),
    "W2": replace(FULL["W2"], title="8 URLs x 8 MiB files, saved to disk",
                  size=8 * MIB, timeout=60),
    "W3": replace(FULL["W3"], title="200 URLs to a server answering after 100 ms, not saved",
                  count=200, timeout=30),
    "W4": replace(FULL["W4"], title="5,000 distinct URLs (1 KiB files) piped on stdin, not saved",
                  count=5_000, timeout=60),
    "W4M": replace(FULL["W4M"], title="memory: 100,000 distinct URLs piped on stdin, not saved",
                   count=100_000, timeout=300),
}  # fmt: skip

DEFAULT_WORKLOADS = ("W1", "W2", "W3", "W4")  # W4M is long: only when asked for


# --- files served -------------------------------------------------------------------------------


def small_file_count(workloads: list[Workload]) -> int:
    """How many 1 KiB files to serve: W1's count (W4 and W4M cycle through the same files)."""
    counts = [w.count for w in workloads if w.id == "W1"]
    return counts[0] if counts else min(10_000, max(w.count for w in workloads))


def make_site(root: Path, workloads: list[Workload]) -> None:
    """Write the files the static server serves: /w1/fNNNNN.bin and /w2/bigN.bin."""
    if any(not w.latency and w.size == KIB for w in workloads):
        (root / "w1").mkdir(parents=True)
        for i in range(small_file_count(workloads)):
            (root / "w1" / f"f{i:05d}.bin").write_bytes(os.urandom(KIB))
    for w in workloads:
        if w.id == "W2":
            (root / "w2").mkdir(parents=True)
            block = os.urandom(w.size)
            for i in range(w.count):  # distinct contents: a different first 16 bytes
                (root / "w2" / f"big{i}.bin").write_bytes(os.urandom(16) + block[16:])


def url_paths(w: Workload, small_files: int) -> Iterator[str]:
    """The path (and query) of every URL of the workload, in list order."""
    if w.id == "W1":
        return (f"/w1/f{i:05d}.bin" for i in range(w.count))
    if w.id == "W2":
        return (f"/w2/big{i}.bin" for i in range(w.count))
    if w.latency:
        return (f"/w3/{i:07d}" for i in range(w.count))
    return (f"/w1/f{i % small_files:05d}.bin?i={i}" for i in range(w.count))


@dataclass(frozen=True)
class UrlLists:
    """One workload's URL list, as plain lines and as a curl config, plus 1-URL warm-up lists."""

    plain: Path
    curl: Path
    warm_plain: Path
    warm_curl: Path


def write_lists(w: Workload, base_url: str, small_files: int, directory: Path) -> UrlLists:
    lists = UrlLists(
        plain=directory / f"{w.id}.txt",
        curl=directory / f"{w.id}.curl",
        warm_plain=directory / f"{w.id}-warm.txt",
        warm_curl=directory / f"{w.id}-warm.curl",
    )
    # curl reads many URLs only from a config file: `url = "..."`, plus `output = "/dev/null"`
    # for every URL when bodies are discarded (--remote-name-all saves them otherwise).
    curl_extra = "" if w.saved else 'output = "/dev/null"\n'
    with lists.plain.open("w") as plain, lists.curl.open("w") as curl:
        for path in url_paths(w, small_files):
            plain.write(f"{base_url}{path}\n")
            curl.write(f'url = "{base_url}{path}"\n{curl_extra}')
    first = next(url_paths(w, small_files))
    warm = first + ("&warm=1" if "?" in first else "")
    lists.warm_plain.write_text(f"{base_url}{warm}\n")
    lists.warm_curl.write_text(f'url = "{base_url}{warm}"\n{curl_extra}')
    return lists


# --- verification -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


def check_saved(w: Workload, out_dir: Path) -> Check:
    """Count files and bytes on disk (and, for W2, every file's size)."""
    sizes = [(Path(d) / name).stat().st_size for d, _, names in os.walk(out_dir) for name in names]
    total = sum(sizes)
    expected = w.count * w.size
    detail = f"{len(sizes)}/{w.count} files, {total}/{expected} bytes on disk"
    ok = len(sizes) == w.count and total == expected
    if ok and w.id == "W2" and any(s != w.size for s in sizes):
        ok, detail = False, f"{detail}, sizes {sorted(sizes)}"
    return Check(ok, detail)


def _settle(count: Callable[[], int], target: int) -> int:
    """Poll `count` until it reaches `target` or stops growing for LOG_SETTLE seconds."""
    last, deadline = count(), time.monotonic() + LOG_SETTLE
    while last < target and time.monotonic() < deadline:
        time.sleep(0.05)
        now = count()
        if now != last:
            last, deadline = now, time.monotonic() + LOG_SETTLE
    return last


def check_static_log(w: Workload, server: StaticServer, small_files: int) -> Check:
    """Every URL of the list must appear in the access log of the run as a complete 200."""
    _settle(server.count_log_lines, w.count)
    entries = server.read_log()
    done = {e.uri for e in entries if e.status == 200 and e.size == w.size}
    missing = sum(1 for p in url_paths(w, small_files) if p not in done)
    detail = f"{w.count - missing}/{w.count} URLs served in full ({len(entries)} requests logged)"
    return Check(missing == 0, detail)


def check_latency(w: Workload, server: LatencyServer) -> Check:
    """The latency server counts requests and distinct paths answered since its reset."""
    distinct = _settle(lambda: server.stats()[1], w.count)
    requests, distinct = server.stats()
    detail = f"{distinct}/{w.count} distinct URLs answered ({requests} requests)"
    return Check(distinct == w.count, detail)


def check_jsonl(w: Workload, jsonl: Path) -> Check:
    """fetchcli's own record: one object per URL, `"ok": true` for every one."""
    if not jsonl.exists():
        return Check(False, "no JSONL written")
    ok = total = 0
    with jsonl.open() as f:
        for line in f:
            record = json.loads(line) if line.strip() else {}
            if "url" in record:  # skip any non-URL record (a summary line, say)
                total += 1
                ok += record.get("ok") is True
    return Check(ok == w.count, f"JSONL: {ok}/{w.count} ok ({total} records)")
