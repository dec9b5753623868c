"""--limit-rate against nginx: the cap holds over the whole run (one transfer, ten at once, two
engine processes), is shared fairly, and its waits do not count against -t; and against a
server that logs when each piece of a body left it, the cap holds on the wire: reading pauses,
and the server is held back from its first byte on (nothing is read ahead but what the
socket buffers hold).

The first test is the issue's own acceptance (2M on a 10 MiB body: 4.5-5.5 s); the others
bound the rate from above only (never faster than the cap), which load cannot break. The
5 s windows are checked exactly on a virtual clock (tests/test_rate_windows.py) and on the
wall clock by benchmarks/rate_windows.py.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import fetchcli
from tests.helpers import cli, write_list
from tests.nginx import Nginx
from tests.send_log import SendLog, serve

MIB = 1 << 20


@pytest.fixture(scope="module")
def files(nginx: Nginx) -> dict[str, str]:
    """URLs of bodies on nginx: one of 10 MiB, ten of 1 MiB, four of 128 KiB, one of 3 MiB."""
    urls = {"ten": nginx.url(nginx.put("rate/ten.bin", os.urandom(10 * MIB)))}
    urls["three"] = nginx.url(nginx.put("rate/three.bin", os.urandom(3 * MIB)))
    for i in range(10):
        urls[f"one{i}"] = nginx.url(nginx.put(f"rate/one{i}.bin", os.urandom(MIB)))
    for i in range(4):
        urls[f"small{i}"] = nginx.url(nginx.put(f"rate/small{i}.bin", os.urandom(128 * 1024)))
    return urls


def fetch(urls: list[str], tmp_path: Path, *args: str) -> tuple[float, list[dict]]:
    """Run the CLI over `urls`; return its wall time and the records."""
    began = time.monotonic()
    result = cli("get", str(write_list(tmp_path / "list.txt", urls)), "--no-save",
                 "--jsonl", "-", *args)  # fmt: skip
    took = time.monotonic() - began
    assert result.exit_code == 0, result.stderr
    return took, result.records()


def test_2m_on_a_10_mib_body_takes_about_5_seconds(files, tmp_path):
    _, (record,) = fetch([files["ten"]], tmp_path, "--limit-rate", "2M")
    assert record["ok"] and record["bytes"] == 10 * MIB
    assert 4.5 <= record["elapsed"] <= 5.5, record["elapsed"]


@pytest.mark.parametrize("processes", ["1", "2"])
def test_ten_transfers_at_once_share_the_cap(files, tmp_path, processes):
    urls = [files[f"one{i}"] for i in range(10)]
    took, records = fetch(urls, tmp_path, "--limit-rate", "2M", "-c", "10", "-P", processes)
    assert all(r["ok"] for r in records) and sum(r["bytes"] for r in records) == 10 * MIB
    # 10 MiB at 2 MiB/s: never faster than 5 s, less the burst an idle link lends (0.1 s
    # per engine); in one process all ten ran side by side, so each took most of that. Two
    # engines may start seconds apart on a loaded machine, and the first one's five then
    # rightly have most of the cap (the split follows the work): then no transfer is faster
    # than the whole cap. The engines' split is checked exactly in tests/test_rate_windows.py.
    assert took >= 4.7
    assert min(r["elapsed"] for r in records) >= (3.0 if processes == "1" else 0.4)


def test_small_files_are_not_starved_by_a_big_one(files, tmp_path):
    urls = [files["three"]] + [files[f"small{i}"] for i in range(4)]
    _, records = fetch(urls, tmp_path, "--limit-rate", "1M", "-c", "5")
    by_url = {r["url"]: r for r in records}
    big = by_url[files["three"]]["elapsed"]
    small = max(by_url[files[f"small{i}"]]["elapsed"] for i in range(4))
    assert big >= 3 * 0.9  # 3 MiB at 1 MiB/s
    assert small < big / 3, (small, big)  # each small one had its share from the start


def test_waits_for_the_cap_do_not_count_against_the_timeout(files, tmp_path):
    _, (record,) = fetch([files["three"]], tmp_path, "--limit-rate", "1M", "-t", "1")
    assert (record["ok"], record["attempts"]) == (True, 1)
    assert record["elapsed"] >= 2.5


def test_a_bad_rate_is_a_usage_error():
    result = cli("get", "-", "--limit-rate", "fast", stdin=b"http://127.0.0.1:1/x\n")
    assert result.exit_code == 2
    assert "--limit-rate must be bytes per second" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.anyio
async def test_the_library_takes_limit_rate(files, tmp_path):
    began = time.monotonic()
    records = [r async for r in fetchcli.fetch([files["three"]], save=False, limit_rate="2M")]
    assert [r.ok for r in records] == [True]
    assert time.monotonic() - began >= 1.4  # 3 MiB at 2 MiB/s


def test_one_long_wait_for_the_cap_does_not_run_the_timeout_out(files, tmp_path):
    # At 64 KiB/s one network chunk can take longer to pay for than the whole -t.
    _, (record,) = fetch([files["small0"]], tmp_path, "--limit-rate", "64k", "-t", "0.5")
    assert (record["ok"], record["attempts"]) == (True, 1)


@pytest.fixture(scope="module")
def send_log() -> Iterator[SendLog]:
    with serve() as log:
        yield log


@pytest.mark.parametrize(("processes", "transfers"), [("1", 1), ("2", 2)])
def test_the_server_is_held_to_the_cap_from_its_first_byte(send_log, unique, processes, transfers):
    # 5 MiB at 1 MiB/s, in one transfer or one per engine. The server's sends may run ahead
    # of the cap's line by what the buffers below the reader hold (a quarter second of the
    # cap in the kernel, two reads in the client, the burst) and no more: without sized
    # buffers the kernel's own grow to megabytes, and the server sent all 5 MiB in 2 s.
    # Load only slows the reader, which cannot break this bound.
    size, rate = 5 * MIB, MIB
    urls = [send_log.url(unique, size // transfers) + f"?{i}" for i in range(transfers)]
    result = cli("get", "-", "--no-save", "--jsonl", "-", "--limit-rate", "1M",
                 "-P", processes, "-c", str(transfers),
                 stdin="".join(url + "\n" for url in urls).encode())  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert sum(r["bytes"] for r in result.records()) == size
    sends = send_log.sends(unique)
    first = sends[0][0]
    sent = itertools.accumulate(size for _, size in sends)
    ahead = max(total - rate * (when - first) for (when, _), total in zip(sends, sent, strict=True))
    assert ahead <= 1.25 * MIB, f"the server ran {ahead / MIB:.2f} MiB ahead of the cap"
