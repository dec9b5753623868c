"""The workloads (W1-W6): their sizes, the files and URL lists they need, and how a run of one is
checked for having fetched everything.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from bench_servers import HostsServer, LatencyServer, StaticServer

KIB = 1024
MIB = 1024 * 1024
LATENCY_DELAY = 0.1  # seconds the latency server waits before answering (W3)
HOSTS = 20  # ports of the hosts server (W5, W6)
HOSTS_DELAY = 0.05  # seconds each of them waits before answering
RETRY_AFTER = 5  # seconds, in the paused host's 503s (W6)
SHUFFLE_SEED = 5  # the shuffled lists are the same in every run
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
    # W5, W6: URLs spread over HOSTS ports of the hosts server, at most `per_host` at once each.
    per_host: int = 0
    shuffled: bool = False  # else grouped by host, in host order
    pause_for: float = 0.0  # W6: the first host answers 503 + Retry-After this long

    @property
    def hosts(self) -> bool:
        return self.per_host > 0

    @property
    def ideal_seconds(self) -> float:
        """W3, W5: the wall time of a perfect fetcher (every request in flight waits the delay).

        W6: that of the hosts that are not paused.
        """
        if self.hosts:
            return math.ceil(self.count / HOSTS / self.per_host) * HOSTS_DELAY
        return math.ceil(self.count / self.concurrency) * LATENCY_DELAY

    @property
    def extra_columns(self) -> tuple[str, ...]:
        """Figures beyond the standard ones, taken from the server (see `check_hosts`)."""
        if self.pause_for:
            return ("others done s", "paused done s", "max in flight/host")
        return ("max in flight/host",) if self.hosts else ()

    def figure(self, wall: float, extras: dict[str, float] | None = None) -> float:
        if self.metric == "req/s":
            return self.count / wall
        if self.metric == "MiB/s":
            return self.count * self.size / MIB / wall
        if self.pause_for and extras:  # W6: how soon the hosts that were not paused finished
            return self.ideal_seconds / extras["others done s"]
        return self.ideal_seconds / wall

    def describe(self) -> str:
        extra = f", ideal wall {self.ideal_seconds:.1f} s" if self.latency else ""
        if self.hosts:
            ideal = "the other hosts' " if self.pause_for else ""
            extra = f", --per-host {self.per_host}, {ideal}ideal {self.ideal_seconds:.1f} s"
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
        Workload("W5G", "20 hosts x 200 URLs answering after 50 ms, list grouped by host",
                 4_000, 3, 100, saved=False, stdin=False, latency=False,
                 metric="efficiency", timeout=120, per_host=4),
        Workload("W5S", "20 hosts x 200 URLs answering after 50 ms, list shuffled",
                 4_000, 3, 100, saved=False, stdin=False, latency=False,
                 metric="efficiency", timeout=120, per_host=4, shuffled=True),
        Workload("W6G", "W5G, the first host paused (503 + Retry-After: 5 for its first second)",
                 4_000, 3, 100, saved=False, stdin=False, latency=False,
                 metric="efficiency", timeout=180, per_host=4, pause_for=1.0),
        Workload("W6S", "W5S, the first host paused (503 + Retry-After: 5 for its first second)",
                 4_000, 3, 100, saved=False, stdin=False, latency=False,
                 metric="efficiency", timeout=180, per_host=4, shuffled=True, pause_for=1.0),
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
    **{name: replace(FULL[name], title=FULL[name].title.replace("200 URLs", "20 URLs"),
                     count=400, timeout=60)
       for name in ("W5G", "W5S", "W6G", "W6S")},
}  # fmt: skip

# W4M is long: only when asked for.
DEFAULT_WORKLOADS = ("W1", "W2", "W3", "W4", "W5G", "W5S", "W6G", "W6S")


# --- files served -------------------------------------------------------------------------------


def small_file_count(workloads: list[Workload]) -> int:
    """How many 1 KiB files to serve: W1's count (W4 and W4M cycle through the same files)."""
    counts = [w.count for w in workloads if w.id == "W1"]
    static = [w.count for w in workloads if not w.latency and not w.hosts]
    return counts[0] if counts else min(10_000, max(static, default=1))


def make_site(root: Path, workloads: list[Workload]) -> None:
    """Write the files the static server serves: /w1/fNNNNN.bin and /w2/bigN.bin."""
    if any(not w.latency and not w.hosts and w.size == KIB for w in workloads):
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
    """The path (and query) of every URL of the workload, in list order (W5, W6: host order)."""
    if w.hosts:
        per_host = w.count // HOSTS
        return (f"/h{h:02d}/{i:04d}" for h in range(HOSTS) for i in range(per_host))
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


def urls(w: Workload, base_urls: list[str], small_files: int) -> list[str]:
    """Every URL of the list, in list order. W5, W6: host h's paths are on base_urls[h]."""
    if not w.hosts:
        return [f"{base_urls[0]}{path}" for path in url_paths(w, small_files)]
    per_host = w.count // HOSTS
    found = [f"{base_urls[i // per_host]}{path}" for i, path in enumerate(url_paths(w, 0))]
    if w.shuffled:
        random.Random(SHUFFLE_SEED).shuffle(found)
    return found


def write_lists(w: Workload, base_urls: list[str], small_files: int, directory: Path) -> UrlLists:
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
        for url in urls(w, base_urls, small_files):
            plain.write(f"{url}\n")
            curl.write(f'url = "{url}"\n{curl_extra}')
    # The warm-up URL goes to the last host: never the paused one, and not a URL of the list.
    first = next(url_paths(w, small_files))
    warm = first + ("&warm=1" if "?" in first else "?warm=1" if w.hosts else "")
    lists.warm_plain.write_text(f"{base_urls[-1]}{warm}\n")
    lists.warm_curl.write_text(f'url = "{base_urls[-1]}{warm}"\n{curl_extra}')
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


def check_hosts(w: Workload, server: HostsServer, started: float) -> tuple[Check, dict[str, float]]:
    """Every path answered 200 by its host; the most requests in flight at one host; for W6,
    when the hosts that were not paused and the paused one gave their last 200 (seconds after
    `started`, the `time.monotonic()` at which the tool was started)."""
    per_host = w.count // HOSTS
    _settle(lambda: sum(h.distinct_ok for h in server.stats()), w.count)
    hosts = server.stats()
    answered = sum(min(h.distinct_ok, per_host) for h in hosts)
    requests = sum(h.requests for h in hosts)
    most = max(h.max_in_flight for h in hosts)
    extras = {"max in flight/host": float(most)}
    detail = f"{answered}/{w.count} distinct URLs answered ({requests} requests); "
    detail += f"max in flight at one host {most} (limit {w.per_host})"
    ok = answered == w.count
    if w.pause_for:
        others = [h.last_ok for h in hosts[1:]]
        paused = hosts[0].last_ok
        if ok and None not in others and paused is not None:
            extras["others done s"] = max(t for t in others if t is not None) - started
            extras["paused done s"] = paused - started
            detail += f"; 503s sent {hosts[0].busy_sent}"
            detail += f"; others done at {extras['others done s']:.2f} s, "
            detail += f"the paused host at {extras['paused done s']:.2f} s"
        else:
            ok = False
    return Check(ok, detail), extras


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
