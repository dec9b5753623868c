"""The fetchers compared, each with its idiomatic command line for each workload.

Every command sets the workload's concurrency, keeps its tool quiet and leaves retries at the
tool's default. Saved workloads write into a fresh, empty directory per run (OUT); unsaved ones
discard bodies (/dev/null or the tool's own no-save mode), except aria2c, which cannot discard
and writes into a scratch directory that is deleted after the run.

W5 and W6 need a per-host limit across the whole list: a tool that cannot set one (aria2c's
--max-connection-per-server is per download; curl before --parallel-max-host, wget2, xargs, the
httpx script) does not take part. W6 needs Retry-After honoured as well.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench_workloads import Workload

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


@dataclass(frozen=True)
class RunPaths:
    """Where one run reads its URLs and writes its output."""

    list: Path  # plain URL list, one per line
    curl: Path  # the same URLs as a curl config file
    out: Path  # fresh empty directory: the output (saved) or a scratch directory (aria2c)
    jsonl: Path  # fetchcli's record of the run


PLACEHOLDERS = RunPaths(Path("LIST"), Path("LIST.curl"), Path("OUT"), Path("RUN.jsonl"))


@dataclass(frozen=True)
class Invocation:
    argv: list[str]
    stdin: Path | None = None  # file fed on standard input
    pipe: bool = False  # ... as `cat FILE | cmd` (the W4 shape), else as `cmd < FILE`
    cwd: Path | None = None

    def shell(self) -> str:
        """The equivalent shell command line, for the README and the logs."""
        # Executables as a user would type them: by name when that is what PATH finds.
        argv = [Path(a).name if a.startswith("/") and shutil.which(Path(a).name) == a else a
                for a in self.argv]  # fmt: skip
        argv[0] = Path(argv[0]).name
        if argv[0].startswith("python"):
            argv[0] = "python"
        if len(argv) > 1 and argv[1].endswith("_script.py"):
            argv[1] = f"benchmarks/{Path(argv[1]).name}"
        cmd = shlex.join(argv)
        if self.stdin is not None:
            cmd = f"cat {self.stdin} | {cmd}" if self.pipe else f"{cmd} < {self.stdin}"
        if self.cwd is not None:
            cmd = f"cd {self.cwd} && {cmd}"
        return cmd


Builder = Callable[[Workload, RunPaths], Invocation | None]


@dataclass(frozen=True)
class Tool:
    name: str
    build: Builder  # None for a workload the tool does not take part in
    version: str


# --- finding executables ------------------------------------------------------------------------


def _venv_bins() -> list[Path]:
    """bin/ directories where fetchcli and a Python with httpx may live, when not on PATH."""
    dirs = [Path(sys.executable).parent]
    if venv := os.environ.get("VIRTUAL_ENV"):
        dirs.append(Path(venv) / "bin")
    dirs += [REPO / ".venv" / "bin", REPO / "venv" / "bin", REPO.parent / "venv" / "bin"]
    return dirs


def find_fetchcli(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    if found := shutil.which("fetchcli"):
        return found
    for directory in _venv_bins():
        if os.access(directory / "fetchcli", os.X_OK):
            return str(directory / "fetchcli")
    return None


def find_python(module: str, explicit: str | None) -> str | None:
    """An interpreter that can import `module`: --python, this one, or a nearby venv's."""
    candidates = [explicit] if explicit else [sys.executable]
    if not explicit:
        candidates += [str(d / "python") for d in _venv_bins()]
    for python in dict.fromkeys(candidates):
        if python and _run([python, "-c", f"import {module}"]) is not None:
            return python
    return None


def _run(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout or done.stderr) if done.returncode == 0 else None


def _first_line(argv: list[str]) -> str:
    out = _run(argv)
    return out.strip().splitlines()[0] if out and out.strip() else "unknown version"


# --- command lines ------------------------------------------------------------------------------


def fetchcli_builder(exe: str) -> Builder:
    def build(w: Workload, p: RunPaths) -> Invocation:
        source = "-" if w.stdin else str(p.list)
        argv = [exe, "get", source, "-c", str(w.concurrency)]
        if w.per_host:
            argv += ["--per-host", str(w.per_host)]
        if w.saved:
            jsonl = p.out.with_name(p.out.name + ".jsonl")  # OUTDIR.jsonl
            argv += ["-o", str(p.out), "-q", "--jsonl", str(jsonl)]
        else:
            argv += ["--no-save", "-q", "--jsonl", str(p.jsonl)]
        return Invocation(argv, stdin=p.list if w.stdin else None, pipe=True)

    return build


def script_builder(
    python: str, script: str, *extra: str, w3_only: bool = False, per_host: bool = False
) -> Builder:
    def build(w: Workload, p: RunPaths) -> Invocation | None:
        if w.fetchcli_only or (w3_only and not w.latency):
            return None
        if w.hosts and (not per_host or w.pause_for):  # the scripts do not retry
            return None
        source = "-" if w.stdin else str(p.list)
        argv = [python, str(HERE / script), source, "-c", str(w.concurrency), *extra]
        if w.per_host:
            argv += ["--per-host", str(w.per_host)]
        if w.saved:
            argv += ["-o", str(p.out)]
        return Invocation(argv, stdin=p.list if w.stdin else None, pipe=True)

    return build


def aria2c_builder(exe: str) -> Builder:
    def build(w: Workload, p: RunPaths) -> Invocation | None:
        if w.fetchcli_only or w.hosts:
            return None
        # -x1 -s1: one connection per file, so that -j alone sets the concurrency;
        # --file-allocation=none: do not write 64 MiB of zeros before each W2 download.
        argv = [exe, "-i", "-" if w.stdin else str(p.list), "-j", str(w.concurrency),
                "-d", str(p.out), "--quiet=true", "--max-connection-per-server=1",
                "--split=1", "--file-allocation=none"]  # fmt: skip
        return Invocation(argv, stdin=p.list if w.stdin else None, pipe=True)

    return build


def curl_builder(exe: str, max_host: bool) -> Builder:
    def build(w: Workload, p: RunPaths) -> Invocation | None:
        if w.fetchcli_only or (w.hosts and not max_host):
            return None
        # -s only: curl 7.88 shows its parallel progress meter when -S is given too.
        argv = [exe, "-s", "--parallel", "--parallel-max", str(w.concurrency)]
        if w.hosts:
            argv += ["--parallel-max-host", str(w.per_host)]
        if w.pause_for:
            argv += ["--retry", "3"]  # curl's --retry waits as long as Retry-After says
        if w.saved:
            argv += ["--remote-name-all", "--create-dirs", "--output-dir", str(p.out)]
        argv += ["-K", "-" if w.stdin else str(p.curl)]
        return Invocation(argv, stdin=p.curl if w.stdin else None, pipe=True)

    return build


def wget2_builder(exe: str) -> Builder:
    def build(w: Workload, p: RunPaths) -> Invocation | None:
        if w.fetchcli_only or w.hosts:
            return None
        # -i /dev/stdin, not -i -: wget2 1.99.1 hangs after reading the list from `-i -`.
        argv = [exe, "-q", f"--max-threads={w.concurrency}",
                "-i", "/dev/stdin" if w.stdin else str(p.list)]  # fmt: skip
        argv += ["-P", str(p.out)] if w.saved else ["-O", "/dev/null"]
        return Invocation(argv, stdin=p.list if w.stdin else None, pipe=True)

    return build


def xargs_curl_builder(xargs: str, curl: str) -> Builder:
    def build(w: Workload, p: RunPaths) -> Invocation | None:
        if w.fetchcli_only or w.hosts:
            return None
        # The classic recipe: one curl process per URL (-n 1), 64 at a time (-P).
        argv = [xargs, "-P", str(w.concurrency), "-n", "1", curl, "-sS"]
        argv += ["-O"] if w.saved else ["-o", "/dev/null"]
        return Invocation(argv, stdin=p.list, pipe=w.stdin, cwd=p.out if w.saved else None)

    return build


# --- discovery ----------------------------------------------------------------------------------


ALL_TOOLS = (
    "fetchcli",
    "httpx-script",
    "httpx-shared",
    "aiohttp-script",
    "aria2c",
    "curl-parallel",
    "wget2",
    "xargs-curl",
)
BASELINE = "httpx-script"


def discover(
    fetchcli: str | None, python: str | None, log: Callable[[str], None]
) -> dict[str, Tool]:
    """Every fetcher found on this machine, by name; says on `log` what was not found."""
    tools: dict[str, Tool] = {}
    if exe := find_fetchcli(fetchcli):
        version = _first_line([exe, "--version"])
        tools["fetchcli"] = Tool("fetchcli", fetchcli_builder(exe), version)
    else:
        log("fetchcli: not found on PATH nor in a nearby venv (--fetchcli PATH): skipped")
    if py := find_python("httpx", python):
        v = _first_line([py, "-c", "import httpx,sys; print(httpx.__version__, sys.version)"])
        version = f"httpx {v.split()[0]} on Python {v.split()[1]}" if " " in v else v
        tools["httpx-script"] = Tool("httpx-script", script_builder(py, "httpx_script.py"), version)
        tools["httpx-shared"] = Tool(
            "httpx-shared",
            script_builder(py, "httpx_script.py", "--shared-client", w3_only=True),
            version + " (one shared AsyncClient; W3 only)",
        )
    else:
        log("httpx-script: no Python with httpx found (--python PATH): skipped")
    if py := find_python("aiohttp", python):
        v = _first_line([py, "-c", "import aiohttp,sys; print(aiohttp.__version__, sys.version)"])
        version = f"aiohttp {v.split()[0]} on Python {v.split()[1]}" if " " in v else v
        tools["aiohttp-script"] = Tool(
            "aiohttp-script", script_builder(py, "aiohttp_script.py", per_host=True), version
        )
    else:
        log("aiohttp-script: no Python with aiohttp found (--python PATH): skipped")
    curl = shutil.which("curl")
    curl_version = " ".join(_first_line([curl, "--version"]).split()[:2]) if curl else ""
    if exe := shutil.which("aria2c"):
        tools["aria2c"] = Tool("aria2c", aria2c_builder(exe), _first_line([exe, "--version"]))
    if curl:
        max_host = "--parallel-max-host" in (_run([curl, "--help", "all"]) or "")
        tools["curl-parallel"] = Tool("curl-parallel", curl_builder(curl, max_host), curl_version)
    if exe := shutil.which("wget2"):
        version = _first_line([exe, "--version"]).split(" - ")[0]
        tools["wget2"] = Tool("wget2", wget2_builder(exe), version)
    if (xargs := shutil.which("xargs")) and curl:
        version = f"{_first_line([xargs, '--version'])} + {curl_version}"
        tools["xargs-curl"] = Tool("xargs-curl", xargs_curl_builder(xargs, curl), version)
    for name in ("aria2c", "curl-parallel", "wget2", "xargs-curl"):
        if name not in tools:
            log(f"{name}: not found on PATH: skipped")
    return tools
