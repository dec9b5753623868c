#!/usr/bin/env python3
"""Benchmark fetchcli against the fetchers users would pick instead. See benchmarks/README.md.

    python benchmarks/run.py                      # W1-W6, 3 interleaved runs of every tool
    python benchmarks/run.py --quick              # smoke version, about a minute
    python benchmarks/run.py --workloads W1,W3 --runs 5 --tools fetchcli,httpx-script
    python benchmarks/run.py --workloads W4M      # fetchcli's peak RSS on 1,000,000 URLs

Stdlib only. Starts its own loopback servers (nginx if installed, else a slow Python fallback;
the latency server for W3; the hosts server for W5 and W6), generates the files in a temporary
directory, and stops and removes everything on exit, error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_measure import RSS_METHOD, rss_floor, run_measured
from bench_report import RunResult, notes, render_markdown, render_plain, table_rows
from bench_servers import (
    HostsServer,
    LatencyServer,
    StaticServer,
    hosts_server,
    latency_server,
    nginx_path,
    nginx_server,
    python_static_server,
)
from bench_tools import ALL_TOOLS, BASELINE, PLACEHOLDERS, RunPaths, Tool, discover, extra_fetchcli
from bench_workloads import (
    DEFAULT_WORKLOADS,
    FULL,
    HOSTS,
    HOSTS_DELAY,
    LATENCY_DELAY,
    QUICK,
    RETRY_AFTER,
    Check,
    UrlLists,
    Workload,
    check_hosts,
    check_jsonl,
    check_latency,
    check_saved,
    check_static_log,
    make_site,
    small_file_count,
    write_lists,
)


def say(text: str = "") -> None:
    print(text, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark fetchcli against other fetchers on loopback servers.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"workloads: {', '.join(FULL)} (default {','.join(DEFAULT_WORKLOADS)}; "
        f"W4M only when named)\ntools: {', '.join(ALL_TOOLS)} (default: all found)",
    )
    parser.add_argument("--runs", type=int, help="runs of every tool (default 3; --quick: 1)")
    parser.add_argument("--workloads", help="comma-separated, e.g. W1,W3")
    parser.add_argument("--tools", help="comma-separated, e.g. fetchcli,httpx-script,curl")
    parser.add_argument("--quick", action="store_true", help="about 1/10 sizes, 1 run")
    parser.add_argument("--markdown", action="store_true", help="also print Markdown tables")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every run's data here")
    parser.add_argument("--timeout", type=float, help="seconds per run (default: per workload)")
    parser.add_argument(
        "--server", choices=["auto", "nginx", "python"], default="auto",
        help="static file server (auto: nginx when installed, else the slow Python fallback)",
    )  # fmt: skip
    parser.add_argument("--fetchcli", metavar="PATH", help="fetchcli executable to test")
    parser.add_argument("--python", metavar="PATH", help="Python with httpx/aiohttp (scripts)")
    parser.add_argument(
        "--also", action="append", default=[], metavar="NAME=PATH",
        help="another fetchcli build to run as tool NAME (e.g. fetchcli-main=/path/to/fetchcli)",
    )  # fmt: skip
    parser.add_argument(
        "--baseline", default=BASELINE, metavar="TOOL",
        help=f"the tool the ratios are taken against (default {BASELINE})",
    )  # fmt: skip
    parser.add_argument("--tmpdir", type=Path, help="where to make the temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--print-commands", action="store_true", help="print each tool's command lines and exit"
    )
    args = parser.parse_args()
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    table = QUICK if args.quick else FULL
    names = args.workloads.upper().split(",") if args.workloads else list(DEFAULT_WORKLOADS)
    if unknown := [n for n in names if n not in table]:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(table)}")
    args.selected = [table[n] for n in dict.fromkeys(names)]
    if args.timeout:
        args.selected = [replace(w, timeout=args.timeout) for w in args.selected]
    args.extra = {}
    for spec in args.also:
        name, sep, path = spec.partition("=")
        if not sep or not name.startswith("fetchcli-") or not path:
            parser.error(f"--also must be fetchcli-NAME=PATH (got {spec!r})")
        args.extra[name] = path
    if args.tools:
        aliases = {"curl": "curl-parallel", "httpx": "httpx-script", "aiohttp": "aiohttp-script"}
        args.tool_names = [aliases.get(t, t) for t in args.tools.split(",")]
        if unknown := [t for t in args.tool_names if t not in (*ALL_TOOLS, *args.extra)]:
            parser.error(
                f"unknown tool(s) {', '.join(unknown)}; choose from {', '.join(ALL_TOOLS)}"
            )
    else:
        args.tool_names = [*ALL_TOOLS, *args.extra]
    return args


# --- the machine ------------------------------------------------------------------------------


def machine_lines(tools: dict[str, Tool], server: str, floor: float) -> list[str]:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        f"machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, "
        f"load average at the start {load}",
        f"harness: Python {platform.python_version()}",
        f"server: {server}",
        f"peak RSS: {RSS_METHOD}; `true` measures {floor:.1f} MiB",
        "tools:",
    ]
    lines += [f"  {name}: {tool.version}" for name, tool in tools.items()]
    return lines


# --- one workload -----------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, tools: dict[str, Tool], work: Path) -> None:
        self.args = args
        self.tools = tools
        self.work = work
        self.results: list[RunResult] = []
        self.static: StaticServer | None = None
        self.latency: LatencyServer | None = None
        self.hosts: HostsServer | None = None
        self.small_files = small_file_count(args.selected)
        self.machine: list[str] = []

    def tools_for(self, w: Workload) -> list[Tool]:
        return [t for t in self.tools.values() if t.build(w, PLACEHOLDERS) is not None]

    def run_workload(self, w: Workload) -> None:
        say(f"\n== {w.describe()}")
        tools = self.tools_for(w)
        if not tools:
            say("   no selected tool takes part in this workload")
            return
        if w.hosts:
            assert self.hosts is not None
            bases = self.hosts.base_urls
        elif w.latency:
            assert self.latency is not None
            bases = [self.latency.base_url]
        else:
            assert self.static is not None
            bases = [self.static.base_url]
        lists_dir = self.work / "lists"
        lists_dir.mkdir(exist_ok=True)
        lists = write_lists(w, bases, self.small_files, lists_dir)
        runs_dir = self.work / "runs" / w.id
        runs_dir.mkdir(parents=True)
        self.warm_up(w, lists, tools, runs_dir)
        given_up: set[str] = set()
        for run in range(1, self.args.runs + 1):
            shift = (run - 1) % len(tools)  # rotate the order: nobody always goes first
            for tool in tools[shift:] + tools[:shift]:
                if tool.name in given_up:
                    result = RunResult(w.id, tool.name, run, "skipped", "timed out in a run before")
                else:
                    result = self.run_once(w, tool, run, lists, runs_dir)
                    if result.status == "timeout":
                        given_up.add(tool.name)
                self.results.append(result)
                self.progress(w, result)

    def warm_up(self, w: Workload, lists: UrlLists, tools: list[Tool], runs_dir: Path) -> None:
        """One request to the server, then every tool once on a 1-URL list, untimed."""
        url = lists.warm_plain.read_text().strip()
        with urllib.request.urlopen(url, timeout=30) as response:
            response.read()
        for tool in tools:
            out = runs_dir / f"{tool.name}-warmup"
            out.mkdir()
            paths = RunPaths(lists.warm_plain, lists.warm_curl, out, runs_dir / f"{out.name}.jsonl")
            inv = tool.build(w, paths)
            assert inv is not None
            log = self.work / "logs" / f"{w.id}-{out.name}.log"
            log.write_text(f"$ {inv.shell()}\n")
            m = run_measured(inv, min(w.timeout, 60), log)
            if m.exit_code != 0 or m.timed_out:
                tail = _tail(log)
                say(f"   warm-up of {tool.name} failed (exit code {m.exit_code}){tail}")
            _remove(out, paths.jsonl)

    def run_once(
        self, w: Workload, tool: Tool, run: int, lists: UrlLists, runs_dir: Path
    ) -> RunResult:
        out = runs_dir / f"{tool.name}-r{run}"
        out.mkdir()
        paths = RunPaths(lists.plain, lists.curl, out, runs_dir / f"{out.name}.jsonl")
        inv = tool.build(w, paths)
        assert inv is not None
        log = self.work / "logs" / f"{w.id}-{out.name}.log"
        log.write_text(f"$ {inv.shell()}\n")
        if w.hosts:
            assert self.hosts is not None
            self.hosts.reset(w.pause_for)
        elif w.latency:
            assert self.latency is not None
            self.latency.reset()
        else:
            assert self.static is not None
            self.static.reset_log()
        started = time.monotonic()  # the hosts server's clock: when its hosts finished
        m = run_measured(inv, w.timeout, log)
        try:
            if m.timed_out:
                return RunResult(w.id, tool.name, run, "timeout",
                                 f"killed after {w.timeout:.0f} s", m)  # fmt: skip
            check, extras = self.verify(w, tool, paths, started)
            if m.exit_code != 0:
                detail = f"exit code {m.exit_code}; {check.detail}{_tail(log)}"
                return RunResult(w.id, tool.name, run, "failed", detail, m, extras=extras)
            if not check.ok:
                detail = check.detail + _tail(log)
                return RunResult(w.id, tool.name, run, "failed", detail, m, extras=extras)
            figure = w.figure(m.wall, extras)
            return RunResult(w.id, tool.name, run, "ok", check.detail, m, figure, extras)
        finally:
            _remove(out, paths.jsonl)
            if w.saved:
                os.sync()  # so this run's dirty pages are not written during the next one

    def verify(
        self, w: Workload, tool: Tool, paths: RunPaths, started: float
    ) -> tuple[Check, dict[str, float]]:
        extras: dict[str, float] = {}
        if w.hosts:
            assert self.hosts is not None
            check, extras = check_hosts(w, self.hosts, started)
        elif w.saved:
            check = check_saved(w, paths.out)
        elif w.latency:
            assert self.latency is not None
            check = check_latency(w, self.latency)
        else:
            assert self.static is not None
            check = check_static_log(w, self.static, self.small_files)
        if tool.name.startswith("fetchcli") and check.ok:
            record = check_jsonl(w, paths.jsonl)
            check = Check(record.ok, f"{check.detail}; {record.detail}")
        return check, extras

    def progress(self, w: Workload, r: RunResult) -> None:
        label = f"   run {r.run}/{self.args.runs}  {r.tool:<15}"
        if r.measurement is None or r.figure is None:
            say(f"{label} {r.status.upper()}: {r.detail}")
            return
        m = r.measurement
        figure = f"{r.figure:.2f}" if w.metric == "efficiency" else f"{r.figure:,.0f}"
        extras = "".join(f"  {name} {value:g}" for name, value in r.extras.items())
        say(f"{label} {m.wall:8.2f} s  {figure:>8} {w.metric:<10} CPU {m.cpu:6.2f} s  "
            f"RSS {m.max_rss_mib:6.0f} MiB (summed {m.sum_rss_mib:.0f}, PSS {m.sum_pss_mib:.0f})"
            f"{extras}")  # fmt: skip


def _tail(log: Path) -> str:
    """The last line the tool printed, to explain a failure."""
    with contextlib.suppress(OSError):
        lines = [ln for ln in log.read_text(errors="replace").splitlines()[1:] if ln.strip()]
        if lines:
            return f' (last output: "{lines[-1].strip()[:160]}")'
    return ""


def _remove(out: Path, jsonl: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    jsonl.unlink(missing_ok=True)


# --- the whole run ----------------------------------------------------------------------------


@contextlib.contextmanager
def servers(bench: Bench, site: Path, choice: str) -> Iterator[str]:
    """Start the servers the selected workloads need; yield a description of the static one."""
    with contextlib.ExitStack() as stack:
        description = "none"
        workloads = bench.args.selected
        if any(not w.latency and not w.hosts for w in workloads):
            nginx = nginx_path() if choice in ("auto", "nginx") else None
            if choice == "nginx" and nginx is None:
                msg = "--server nginx: nginx is not installed"
                raise SystemExit(msg)
            if nginx is not None:
                bench.static = stack.enter_context(nginx_server(nginx, site, bench.work))
            else:
                bench.static = stack.enter_context(
                    python_static_server(sys.executable, site, bench.work)
                )
            description = bench.static.description
        if any(w.latency for w in workloads):
            bench.latency = stack.enter_context(latency_server(sys.executable, LATENCY_DELAY))
            description += f"; latency server (benchmarks/latency_server.py, {LATENCY_DELAY} s)"
        if any(w.hosts for w in workloads):
            bench.hosts = stack.enter_context(
                hosts_server(sys.executable, HOSTS, HOSTS_DELAY, RETRY_AFTER)
            )
            description += (
                f"; hosts server (benchmarks/hosts_server.py, {HOSTS} ports, {HOSTS_DELAY} s)"
            )
        yield description


def print_tables(bench: Bench, markdown: bool) -> None:
    done = [w for w in bench.args.selected if any(r.workload == w.id for r in bench.results)]
    say("")
    for line in bench.machine:
        say(line)
    say(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if bench.static is not None and bench.static.kind != "nginx":
        say(
            "WARNING: the static server is the slow Python fallback; install nginx for real numbers"
        )
    for w in done:
        header, rows = table_rows(w, bench.results, list(bench.tools), bench.args.baseline)
        say(f"\n{w.describe()}")
        say(render_plain(header, rows))
        for line in notes(w, bench.results):
            say(f"  note: {line}")
    if markdown:
        say("\n--- Markdown ---\n\n```")
        say("\n".join(bench.machine))
        say("```")
        for w in done:
            header, rows = table_rows(w, bench.results, list(bench.tools), bench.args.baseline)
            say(f"\n**{w.describe()}**\n")
            say(render_markdown(header, rows))
            for line in notes(w, bench.results):
                say(f"\n- {line}")


def print_commands(tools: dict[str, Tool], workloads: list[Workload]) -> None:
    for w in workloads:
        say(f"\n{w.describe()}")
        for tool in tools.values():
            inv = tool.build(w, PLACEHOLDERS)
            if inv is not None:
                say(f"  {tool.name:<15} {inv.shell()}")


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so that every `finally` stops its servers and children


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    # Python tools are measured as installed, with their bytecode cached (pip compiles it):
    # under this variable an editable install would compile its modules at every start.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    found = discover(args.fetchcli, args.python, lambda text: say(f"note: {text}"))
    found.update({name: extra_fetchcli(name, path) for name, path in args.extra.items()})
    order = ["fetchcli", *args.extra, *ALL_TOOLS[1:]]
    tools = {name: found[name] for name in order if name in found and name in args.tool_names}
    if args.print_commands:
        print_commands(tools, args.selected)
        return 0
    if not tools:
        say("no fetcher to run")
        return 1
    work = Path(tempfile.mkdtemp(prefix="fetchcli-bench-", dir=args.tmpdir))
    bench = Bench(args, tools, work)
    interrupted = False
    started = time.monotonic()
    try:
        (work / "logs").mkdir()
        say(f"generating files in {work} ...")
        site = work / "site"
        site.mkdir()
        make_site(site, args.selected)
        with servers(bench, site, args.server) as description:
            bench.machine = machine_lines(tools, description, rss_floor(work))
            for line in bench.machine:
                say(line)
            for w in args.selected:
                bench.run_workload(w)
    except KeyboardInterrupt:
        interrupted = True
        say("\ninterrupted: servers stopped; results so far:")
    finally:
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print_tables(bench, args.markdown)
    say(f"\ntotal time {time.monotonic() - started:.0f} s; medians and ratios are what to quote "
        "(the machine is shared and noisy)")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in bench.results], indent=1))
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
