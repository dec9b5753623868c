"""Run one fetcher command and measure it: wall seconds, CPU seconds and peak RSS.

The command runs in its own session (so a timeout or Ctrl-C kills it and all its children) and
is reaped with os.wait4: wall time is taken around it, CPU time from its rusage. For
`cat LIST | tool` only the tool is measured; cat is started before the clock.

Peak RSS is ru_maxrss, which on Linux is the largest of the process and of every descendant it
waited for: for xargs + curl, the largest single process, not a sum. It is read from GNU time
(/usr/bin/time -f %M) when installed: the harness cannot take it from its own wait4, because
Linux counts in a child's ru_maxrss the memory of the process it was forked from (here this
Python harness, tens of MiB) until it calls exec. Without GNU time, wait4's figure is used and
has that floor, which `rss_floor()` measures with `true`.

Summed RSS is the peak of the sum over the tool's processes (its engines, curl's many) of their
resident memory, sampled from /proc every 0.1 s (a peak shorter than that can be missed). Pages
shared between them (the interpreter, its libraries) count once per process: it overstates what
they take together, never understates it. Summed PSS, from the same samples, counts a shared
page in shares (/proc/PID/smaps_rollup): what the processes take together. Linux only; 0
elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bench_tools import Invocation


def _gnu_time() -> str | None:
    path = "/usr/bin/time"
    if not os.access(path, os.X_OK):
        return None
    done = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return path if "GNU" in done.stdout + done.stderr else None


GNU_TIME = _gnu_time()
RSS_METHOD = "GNU time %M" if GNU_TIME else "os.wait4 ru_maxrss (floored at the harness's RSS)"


@dataclass(frozen=True)
class Measurement:
    wall: float  # seconds
    cpu: float  # user + system seconds, the process and its reaped descendants
    max_rss_mib: float
    sum_rss_mib: float  # the peak of the sum over its processes, sampled (0: not on Linux)
    sum_pss_mib: float  # the same for PSS: shared pages in shares
    exit_code: int  # negative: killed by that signal
    timed_out: bool


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def run_measured(inv: Invocation, timeout: float, log: Path) -> Measurement:
    """Run `inv` to completion or until `timeout` seconds; stdout and stderr go to `log`."""
    argv = inv.argv
    rss_file = log.with_suffix(".rss")
    if GNU_TIME:
        argv = [GNU_TIME, "-f", "%M", "-o", str(rss_file), "--", *argv]
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(log.open("ab"))
        feeder: subprocess.Popen[bytes] | None = None
        stdin: IO[bytes] | int = subprocess.DEVNULL
        if inv.stdin is not None and inv.pipe:
            feeder = subprocess.Popen(
                ["cat", str(inv.stdin)], stdout=subprocess.PIPE, start_new_session=True
            )
            stack.callback(_reap, feeder)
            assert feeder.stdout is not None
            stdin = feeder.stdout
        elif inv.stdin is not None:
            stdin = stack.enter_context(inv.stdin.open("rb"))

        timed_out = threading.Event()
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdin=stdin, stdout=out, stderr=out, cwd=inv.cwd, start_new_session=True
        )
        if feeder is not None and feeder.stdout is not None:
            feeder.stdout.close()  # the tool holds the pipe now; cat gets SIGPIPE if it quits

        def expire() -> None:
            timed_out.set()
            _kill_group(proc.pid)

        timer = threading.Timer(timeout, expire)
        timer.start()
        # The GNU time wrapper is the harness's, not the tool's: only its descendants count.
        sampler = _TreeSampler(proc.pid, count_root=not GNU_TIME)
        sampler.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
        except BaseException:  # Ctrl-C or SIGTERM while waiting: kill the run, then re-raise
            _kill_group(proc.pid)
            proc.wait()
            raise
        finally:
            timer.cancel()
            sampler.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        _kill_group(proc.pid)  # children left behind by the tool, if any
    max_rss_kib = usage.ru_maxrss  # KiB on Linux
    if GNU_TIME:
        max_rss_kib = _read_gnu_time(rss_file)
        rss_file.unlink(missing_ok=True)
    return Measurement(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        max_rss_mib=max_rss_kib / 1024,
        sum_rss_mib=sampler.peak_rss / 2**20,
        sum_pss_mib=sampler.peak_pss / 2**20,
        exit_code=proc.returncode,
        timed_out=timed_out.is_set(),
    )


class _TreeSampler(threading.Thread):
    """Samples the summed RSS of a process and its descendants until stopped."""

    INTERVAL = 0.1
    PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def __init__(self, root: int, *, count_root: bool) -> None:
        super().__init__(daemon=True)
        self._root = root
        self._count_root = count_root
        self._stopped = threading.Event()
        self.peak_rss = self.peak_pss = 0  # bytes

    def run(self) -> None:
        if not Path("/proc/self/statm").exists():
            return
        while not self._stopped.is_set():
            tree = _descendants(self._root)
            if not self._count_root:
                tree.discard(self._root)
            self.peak_rss = max(self.peak_rss, sum(_rss_pages(p) for p in tree) * self.PAGE)
            self.peak_pss = max(self.peak_pss, sum(_pss_kib(p) for p in tree) * 1024)
            self._stopped.wait(self.INTERVAL)

    def stop(self) -> None:
        self._stopped.set()
        self.join()


def _descendants(root: int) -> set[int]:
    """`root` and every process below it, from each process's parent in /proc/PID/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(entry.path, "stat").read_text()
            parent = int(stat[stat.rindex(")") + 2 :].split()[1])  # after "(comm) state"
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def _pss_kib(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0  # gone meanwhile, or not readable


def _rss_pages(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return 0  # gone meanwhile


def _read_gnu_time(path: Path) -> int:
    """The %M figure (KiB): the last line of GNU time's output file; 0 if it wrote none."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(path.read_text().split()[-1])
    return 0


def rss_floor(work: Path) -> float:
    """Peak RSS measured for `true`: the smallest figure this method can report."""
    log = work / "rss-floor.log"
    m = run_measured(Invocation(["true"]), 10, log)
    log.unlink(missing_ok=True)
    return m.max_rss_mib


def _reap(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        _kill_group(proc.pid)
    proc.wait()
