"""Several engine processes: the same records as one, limits that hold across them, pauses
that reach all of them, and a lost engine that does not lose its URLs."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from fetchcli.config import Settings
from fetchcli.launch import engine_count, execute
from fetchcli.manifests import items_from
from fetchcli.models import Job, Record
from fetchcli.parallel.coordinator import _Engine, _Pool
from fetchcli.progress import transferred
from fetchcli.stats import SHOWN_TRANSFER_BYTES, RunStats
from tests.helpers import CLOCK_SLACK, cli
from tests.servers import body_for


def mixed(server, unique: str) -> list[str]:
    urls = [server.url(f"/ok/{unique}/{i}.txt") for i in range(60)]
    urls += [server.url(f"/status/404/{unique}-{i}") for i in range(5)]
    urls += [server.url(f"/flaky/{unique}/{i}?fail=1") for i in range(5)]
    urls += ["ftp://nope.test/x", server.url(f"/ok/{unique}/0.txt")]  # a bad line, a duplicate
    return urls


def outcome(records: list[dict]) -> list[tuple]:
    keep = ("line", "ok", "status", "attempts", "error_kind", "skipped", "bytes", "sha256")
    return sorted(tuple(r[k] for k in keep) for r in records)


def test_several_engines_give_the_same_records_as_one(server, unique, tmp_path):
    urls = mixed(server, unique)
    one = cli(
        "get",
        "-P",
        "1",
        "--backoff",
        "0",
        "-o",
        str(tmp_path / "one"),
        "--jsonl",
        "-",
        stdin="\n".join(urls).encode(),
    )
    urls = mixed(server, unique + "b")
    two = cli(
        "get",
        "-P",
        "2",
        "--backoff",
        "0",
        "-o",
        str(tmp_path / "two"),
        "--jsonl",
        "-",
        stdin="\n".join(urls).encode(),
    )
    assert one.exit_code == two.exit_code == 1
    first, second = outcome(one.records()), outcome(two.records())
    assert [r[:6] for r in first] == [r[:6] for r in second]
    assert len(second) == len(urls)
    saved = [r for r in two.records() if r["path"]]
    # 65 bodies, and the duplicate's record carries its first's path.
    assert len(saved) == 66 and all(Path(r["path"]).exists() for r in saved)
    assert len({r["path"] for r in saved}) == 65
    ok = next(r for r in saved if r["url"].endswith("/3.txt"))
    assert Path(ok["path"]).read_bytes() == body_for(f"/ok/{unique}b/3.txt")


def test_concurrency_holds_across_engines(server, unique):
    server.wait_idle()  # an earlier test's slow request would count here
    server.reset_stats()
    stdin = "\n".join(server.url(f"/slow/{unique}/{i}?delay=0.2") for i in range(40)).encode()
    result = cli("get", "--no-save", "-P", "2", "-c", "8", stdin=stdin)
    assert result.exit_code == 0
    assert server.max_in_flight == 8


def test_a_host_pause_reaches_every_engine(server, other_server, unique):
    paused = server.url(f"/retry-after/{unique}?fail=1&after=3&status=429")
    slow = other_server.url(f"/slow/{unique}/busy?delay=1.5")
    late = [server.url(f"/ok/{unique}/late{i}") for i in range(4)]
    # One request at a time per engine, jobs dealt in turn (no per-host limit): the first
    # engine gets the 429 and late0, late2; the second is busy for 1.5 s with `slow`, then
    # has late1 and late3, whose host's pause it hears of only through the coordinator.
    stdin = "\n".join([paused, slow, *late]).encode()
    result = cli("get", "--no-save", "-P", "2", "-c", "2", "--jsonl", "-", stdin=stdin)
    assert result.exit_code == 0
    # Whichever engine the late URLs went to, they began only after the pause, as the server
    # saw it.
    (_, _, asked), *_ = server.timeline(f"/retry-after/{unique}")
    began = [began for _, began, _ in server.timeline(f"/ok/{unique}/late")]
    assert len(began) == 4 and min(began) >= asked + 3 - CLOCK_SLACK


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and "fetchcli.parallel.engine" in Path(
                f"/proc/{entry}/cmdline"
            ).read_text(errors="replace"):
                found.append(int(entry))
    return found


_ENGINE_START = (
    "import sys; from fetchcli.parallel.engine import _die_with_the_coordinator as start; "
    "start(int(sys.argv[1])); print('serving')"
)


@pytest.mark.skipif(sys.platform != "linux", reason="prctl")
@pytest.mark.parametrize("orphaned", [False, True])
def test_an_engine_whose_coordinator_died_while_it_started_stops_at_once(orphaned):
    # A kill -9 of the coordinator while its engines import: no parent is left to send them
    # the death signal, so an engine that finds another parent than its coordinator goes
    # before it loads the pipeline or takes a job (before, it lived on for up to a second).
    coordinator = os.getpid() + 1_000_000 if orphaned else os.getpid()  # not its parent
    done = subprocess.run(
        [sys.executable, "-c", _ENGINE_START, str(coordinator)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    if orphaned:
        assert (done.returncode, done.stdout) == (1, b"")
        assert b"its coordinator is gone" in done.stderr  # a misfire would say why
    else:
        assert (done.returncode, done.stdout) == (0, b"serving\n")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="uses /proc")
def test_a_lost_engine_does_not_lose_its_urls(server, unique):
    hung = [server.url(f"/hang/{unique}/{i}") for i in range(6)]
    killed: list[int] = []

    def kill_one_engine() -> None:
        assert server.wait_in_flight(6, timeout=20)
        engines = children_of(os.getpid())
        os.kill(engines[0], signal.SIGKILL)
        killed.append(engines[0])

    killer = threading.Thread(target=kill_one_engine)
    killer.start()
    started = time.monotonic()
    result = cli(
        "get",
        "--no-save",
        "-P",
        "2",
        "-c",
        "8",
        "-t",
        "3",
        "-r",
        "0",
        "--jsonl",
        "-",
        stdin="\n".join(hung).encode(),
    )
    killer.join()
    assert killed and result.exit_code == 1
    records = result.records()
    assert sorted(r["url"] for r in records) == sorted(hung)  # every URL recorded, once
    lost = [r for r in records if r["error_kind"] == "internal"]
    assert lost and all(r["error"].startswith("engine process died") for r in lost)
    assert time.monotonic() - started < 15


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="uses /proc")
def test_when_every_engine_is_lost_the_run_stops_with_one_line(server, unique):
    hung = [server.url(f"/hang/{unique}/{i}") for i in range(60)]  # more than the engines hold

    def kill_every_engine() -> None:
        assert server.wait_in_flight(8, timeout=20)
        for pid in children_of(os.getpid()):
            os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_every_engine)
    killer.start()
    result = cli(
        "get", "--no-save", "-P", "2", "-c", "8", "-t", "30", "-r", "0", "--jsonl", "-",
        stdin="\n".join(hung).encode(),
    )  # fmt: skip
    killer.join()
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        "fetchcli: error: every engine process has stopped: the rest of the input has no records"
    )
    assert "Traceback" not in result.stderr and "--debug" not in result.stderr
    lost = result.records()
    assert lost and all(r["error_kind"] == "internal" for r in lost)  # those the engines held


@pytest.mark.parametrize(
    ("options", "cpus", "size", "expected"),
    [
        ({}, 8, None, 4),
        ({}, 2, None, 2),
        ({}, 1, None, 1),
        ({}, 8, 10_000_000, 4),
        ({}, 8, 50_000, 1),  # a short list of files: done before engines would start
        ({"processes": 3}, 2, 50_000, 3),
        ({"per_host": 2}, 8, None, 4),  # hosts dealt to engines: each keeps its limit whole
        ({"per_host": 2, "processes": 3}, 8, None, 3),
        ({"per_host": 8}, 8, None, 2),  # each engine has -c 8 of 16: one host's full limit
        ({"per_host": 16}, 8, None, 1),
        ({"concurrency": 4}, 8, None, 1),
        ({"processes": 6, "concurrency": 4}, 8, None, 4),
    ],
)
def test_engine_count(options, cpus, size, expected):
    assert engine_count(Settings.create(**options).limits, cpus=cpus, input_bytes=size) == expected


def test_engines_ignore_a_fetchcli_folder_in_the_current_directory(server, unique, tmp_path):
    # `python -m` puts the current directory first on the path: a user's own "fetchcli"
    # folder (a checkout, an output directory) must not be what the engines import.
    shadow = tmp_path / "fetchcli"
    (shadow / "parallel").mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('the wrong fetchcli')\n")
    (shadow / "parallel" / "__init__.py").write_text("")
    urls = "".join(server.url(f"/ok/{unique}/{i}") + "\n" for i in range(20))
    done = subprocess.run(
        [sys.executable, "-P", "-m", "fetchcli", "get", "-", "--no-save", "-P", "2", "-c", "8"],
        input=urls.encode(),
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()[-1000:]
    assert all(server.hits(f"/ok/{unique}/{i}") == 1 for i in range(20))


@pytest.mark.anyio
async def test_engines_count_each_body_once_while_their_records_come_back(nginx, unique):
    # A record reaches the coordinator before the engine's next report drops its transfer
    # from those in flight: the bytes counted must not hold its body twice meanwhile.
    size = 2 * SHOWN_TRANSFER_BYTES  # large enough for a row of its own: reported in flight
    urls = [nginx.url(nginx.put(f"{unique}/{i}.bin", os.urandom(size))) for i in range(8)]
    settings = Settings.create(processes=2, concurrency=4, save=False, limit_rate="8M")
    stats = RunStats()
    seen: list[int] = []
    failed: list[tuple[str, str | None]] = []

    async def emit(record: Record) -> None:
        stats.add(record)
        seen.append(transferred(stats))
        if not record.ok:
            failed.append((record.url, record.error))

    await execute(settings, items_from(urls), emit, stats, random=random.Random(1).random)
    assert failed == []  # (once, in a whole suite's run, one was not ok: this says why)
    assert stats.ok == len(urls) and stats.bytes == len(urls) * size
    assert max(seen) <= len(urls) * size
    assert transferred(stats) == len(urls) * size  # the engines' last count reaches us


@pytest.mark.anyio
async def test_the_coordinator_remembers_only_the_pauses_not_over():
    pool = _Pool(Settings.create(processes=2), 2, emit=_no_emit, stats=RunStats())
    pool._note_pause("a.test", 0)  # over at once
    pool._note_pause("b.test", 60)
    pool._note_pause("b.test", 1)  # a shorter one does not cut the longer
    pool._note_pause("c.test", 60)
    assert sorted(pool._pauses) == ["b.test", "c.test"]
    assert pool._pauses["b.test"] - asyncio.get_running_loop().time() > 50


@pytest.mark.anyio
async def test_the_display_learns_the_engines_paused_jobs_and_the_first_host_back():
    stats = RunStats()
    pool = _Pool(Settings.create(processes=2), 2, emit=_no_emit, stats=stats)
    stats.read_pauses = pool._read_pauses  # as start() sets it
    engines = [
        _Engine(i, None, None, _Pipe(), window=8, hungry=0)  # type: ignore[arg-type]
        for i in range(2)
    ]
    pool._engines.extend(engines)
    pool._note_pause("late.test", 60)
    assert stats.paused == 0  # a pause that holds back no job is not worth a line
    pool._note_pause("soon.test", 5)
    engines[0].paused, engines[1].paused = 3, 4  # as their stats reports say
    pauses = stats.pauses
    assert pauses is not None
    assert (pauses.waiting, pauses.hosts, pauses.first) == (7, 2, "soon.test")
    assert 4 < pauses.first_ends_in <= 5
    engines[1].finished = True  # a finished engine's last report no longer counts
    assert stats.paused == 3


class _Pipe:
    """An engine's end of the socket as the coordinator writes to it: it takes everything."""

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    async def drain(self) -> None:
        pass


@pytest.mark.anyio
async def test_a_paused_hosts_backlog_is_shared_even_by_an_engine_with_a_full_window():
    # The second engine is still starting: its window is full of jobs it was sent before the
    # pause (to the coordinator they could all start). The paused host's next jobs wait
    # anyway: dealing them must go on, half to each, not stop until that engine reports.
    pool = _Pool(Settings.create(processes=2), 2, emit=_no_emit, stats=RunStats())
    ready, starting = (
        _Engine(i, None, None, _Pipe(), window=8, hungry=0)  # type: ignore[arg-type]
        for i in range(2)
    )
    starting.pending = 8
    pool._engines += [ready, starting]
    pool._note_pause("a.test", 60)
    jobs = [Job("-", n, f"http://a.test/{n}", httpx.URL(f"http://a.test/{n}")) for n in range(20)]
    async with asyncio.timeout(10):  # a handoff waiting for the starting engine never returns
        for job in jobs:
            await pool.handoff(job)
    assert (ready.parked, starting.parked) == (10, 10)
    assert (ready.queued, starting.queued - 8) == (10, 10)


async def _no_emit(record: object) -> None:
    raise AssertionError("no record is emitted here")
