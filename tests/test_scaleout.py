"""Scaling out without Ray: N real fetchcli processes with --shard against one server, the
scheduler's variables for --shard auto, and `fetchcli merge` on what they wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fetchcli.config import Settings
from fetchcli.launch import engine_count
from fetchcli.shard import Shard
from tests.helpers import FETCHCLI, cli, job, write_list
from tests.servers import body_for

N = 3


Instance = tuple[dict[str, str], tuple[str, ...]]  # its environment and its own flags


def run_shards(tmp_path: Path, listing: Path, instances: list[Instance], *flags: str) -> list[Path]:
    """Start one fetchcli per instance at once (as a scheduler would), wait for all."""
    ledgers = [tmp_path / f"shard-{k}.jsonl" for k in range(len(instances))]
    children = [
        subprocess.Popen(
            [
                *FETCHCLI,
                "get",
                str(listing),
                "-q",
                "--backoff",
                "0",
                "--retries",
                "0",
                "-o",
                str(tmp_path / "out"),
                "--jsonl",
                str(ledger),
                *flags,
                *own,
            ],
            env={**os.environ, **env},
            stderr=subprocess.PIPE,
            text=True,
        )
        for ledger, (env, own) in zip(ledgers, instances, strict=True)
    ]
    for child in children:
        _, stderr = child.communicate(timeout=120)
        assert child.returncode in (0, 1), stderr
    return ledgers


def records(ledgers: list[Path]) -> list[list[dict]]:
    return [[json.loads(line) for line in path.read_text().splitlines()] for path in ledgers]


def merge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FETCHCLI, "merge", *args], capture_output=True, text=True, timeout=60, check=False
    )


SCHEDULERS: dict[str, list[Instance]] = {
    "K/N": [({}, (f"--shard={k}/{N}",)) for k in range(N)],
    # A Kubernetes Indexed Job: the pod's index, N from --shard auto/N (here from the
    # environment, as a Job template would set it for every pod).
    "kubernetes": [
        ({"JOB_COMPLETION_INDEX": str(k), "FETCHCLI_SHARD": f"auto/{N}"}, ()) for k in range(N)
    ],
    # A Slurm array submitted as --array=4-8:2: task IDs 4, 6, 8 are shards 0, 1, 2.
    "slurm": [
        (
            {
                "SLURM_ARRAY_TASK_ID": str(4 + 2 * k),
                "SLURM_ARRAY_TASK_MIN": "4",
                "SLURM_ARRAY_TASK_MAX": "8",
                "SLURM_ARRAY_TASK_STEP": "2",
                "SLURM_ARRAY_TASK_COUNT": str(N),
            },
            ("--shard=auto",),
        )
        for k in range(N)
    ],
}


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_n_processes_fetch_every_url_exactly_once(server, unique, tmp_path, scheduler):
    targets = [f"/ok/{unique}/{i}.txt" for i in range(150)]
    lines = ["# one list, read whole by every instance", *map(server.url, targets)]
    lines += ["", "not a url", server.url(targets[5])]  # a bad line and a repeat
    listing = write_list(tmp_path / "urls.txt", lines)
    # One host: --shard-by url spreads it.
    ledgers = run_shards(tmp_path, listing, SCHEDULERS[scheduler], "--shard-by", "url")
    shards = records(ledgers)

    assert [server.hits(target) for target in targets] == [1] * len(targets)
    assert all(shards), "every instance has a share of 150 URLs"
    numbers = sorted(record["line"] for shard in shards for record in shard)
    assert numbers == [n for n, line in enumerate(lines, start=1) if line and line[0] != "#"]
    for record in (record for shard in shards for record in shard if record["path"]):
        target = record["url"].removeprefix(server.base_url)
        assert Path(record["path"]).read_bytes() == body_for(target)
    # The repeat is in the same share as its first line, so it is a duplicate there.
    (repeat,) = [r for shard in shards for r in shard if r["line"] == len(lines)]
    assert repeat["skipped"] == "duplicate" and repeat["ok"]

    done = merge(*map(str, ledgers), "--input", str(listing))
    assert done.returncode == 1, done.stderr  # the line that is not a URL
    assert "152 lines" in done.stderr and "151 ok, 1 failed (1 not URLs)" in done.stderr


def test_shares_by_host_keep_each_host_on_one_instance(server, other_server, unique, tmp_path):
    targets = [f"/ok/{unique}/{i}" for i in range(40)]
    urls = [origin.url(target) for target in targets for origin in (server, other_server)]
    listing = write_list(tmp_path / "urls.txt", urls)
    instances = SCHEDULERS["kubernetes"]
    shards = records(run_shards(tmp_path, listing, instances))
    for origin in (server, other_server):
        assert [origin.hits(target) for target in targets] == [1] * len(targets)
        holders = [k for k, shard in enumerate(shards) if origin.base_url in str(shard)]
        assert len(holders) == 1  # the whole host, so --per-host holds across instances
    assert sum(map(len, shards)) == len(urls)


def test_merge_finds_a_missing_shard_and_a_failed_url(server, unique, tmp_path):
    targets = [f"/ok/{unique}/{i}" for i in range(60)] + [f"/status/404/{unique}"]
    listing = write_list(tmp_path / "urls.txt", [server.url(target) for target in targets])
    started = [SCHEDULERS["K/N"][k] for k in (0, 2)]  # shard 1 never ran
    ledgers = run_shards(tmp_path, listing, started, "--shard-by", "url")
    ran = records(ledgers)
    fetched = {record["url"] for shard in ran for record in shard}
    missing = [server.url(t) for t in targets if server.url(t) not in fetched]
    assert missing, "shard 1 owns some of the 61 URLs"
    failed = [server.url(targets[-1])] if server.url(targets[-1]) in fetched else []
    rerun = tmp_path / "rerun.txt"

    found = merge(*map(str, ledgers), "--input", str(listing), "--rerun", str(rerun))

    assert found.returncode == 1
    assert f"missing (no record) ({len(missing)}):" in found.stderr
    assert "incomplete" in found.stderr
    if failed:
        assert "failed (1):" in found.stderr and "http: HTTP 404" in found.stderr
    # In list order: the failed URL where it is listed, among the missing ones.
    assert rerun.read_text().splitlines() == [
        server.url(t) for t in targets if server.url(t) in {*missing, *failed}
    ]
    # The missing shard, run now, completes the list but for the 404.
    late = run_shards(tmp_path / "late", listing, [SCHEDULERS["K/N"][1]], "--shard-by", "url")
    again = merge(*map(str, [*ledgers, *late]), "--input", str(listing), "--rerun", str(rerun))
    assert again.returncode == 1 and "60 ok, 1 failed" in again.stderr
    assert rerun.read_text() == server.url(targets[-1]) + "\n"


def test_merge_exits_0_when_every_line_is_ok(server, unique, tmp_path):
    listing = write_list(
        tmp_path / "urls.txt", [server.url(f"/ok/{unique}/{i}") for i in range(20)]
    )
    instances: list[Instance] = [({}, (f"--shard={k}/2",)) for k in range(2)]
    ledgers = run_shards(tmp_path, listing, instances, "--shard-by", "url")
    done = merge(*map(str, ledgers), "--input", str(listing))
    assert done.returncode == 0, done.stderr
    assert "complete: every line ok" in done.stderr


@pytest.mark.parametrize("naming", ["flat", "rows"])
def test_shards_into_one_directory_give_the_names_one_run_would(server, unique, tmp_path, naming):
    # Names that meet (--layout flat, or a manifest's paths) of URLs fetched by different
    # instances: each instance names every line of the list, so all agree, as one run would.
    split = Shard(0, 2, "url")
    urls = [server.url(f"/ok/{unique}/{i}/data.bin") for i in range(40)]
    picked = [[url for url in urls if split.share(job(url)) == k][:3] for k in range(2)]
    targets = [
        url.removeprefix(server.base_url) for k in range(3) for url in (picked[0][k], picked[1][k])
    ]
    flags: tuple[str, ...] = ()
    if naming == "flat":
        listing, flags = (
            write_list(tmp_path / "urls.txt", [*map(server.url, targets)]),
            ("--layout", "flat"),
        )
    else:
        rows = ["url,path", *(f"{server.url(target)},data.bin" for target in targets)]
        listing = write_list(tmp_path / "rows.csv", rows)

    def fetch(out: Path, jsonl: Path, *more: str) -> dict[int, Path]:
        result = cli(
            "get", str(listing), "-q", "-o", str(out), "--jsonl", str(jsonl), *flags, *more
        )
        assert result.exit_code == 0, result.stderr
        records = map(json.loads, jsonl.read_text().splitlines())
        return {r["line"]: Path(r["path"]).relative_to(out) for r in records}

    one = fetch(tmp_path / "one", tmp_path / "one.jsonl")
    out = tmp_path / "out"
    shards = {
        **fetch(out, tmp_path / "0.jsonl", "--shard", "0/2", "--shard-by", "url"),
        **fetch(out, tmp_path / "1.jsonl", "--shard", "1/2", "--shard-by", "url"),
    }
    assert shards == one and len(set(one.values())) == len(targets)
    first = 2 if naming == "rows" else 1  # the line of targets[0]
    for line, name in shards.items():
        assert (out / name).read_bytes() == body_for(targets[line - first])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--shard", "3/3"), "--shard 3/3: K must be below N"),
        (("--shard", "auto"), "--shard auto: no scheduler index"),
        (("--shard", "0/2", "--shard-by", "path"), "--shard-by must be host or url"),
        (("--shards", "4"), "--shards N needs --ray ADDRESS"),
        (("--ray", "local", "--shard", "0/2"), "--shard and --ray do not mix"),
        (("--ray", "local", "-"), "--ray cannot read stdin (-)"),
    ],
)
def test_bad_scale_out_flags_are_usage_errors(args, message, tmp_path):
    listing = write_list(tmp_path / "urls.txt", ["http://127.0.0.1:9/x"])
    result = cli("get", str(listing), *args, stdin=b"http://127.0.0.1:9/y\n")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"fetchcli: error: {message}"), result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_the_library_takes_a_shard():
    assert Settings.from_options(shard="1/4", shard_by="url").input.shard is not None
    settings = Settings.from_options(ray="local", shards=8)
    assert (settings.ray.address, settings.ray.shards) == ("local", 8)


def test_engine_count_sees_the_shards_share_of_the_input():
    limits = Settings.create(concurrency=32).limits
    assert engine_count(limits, cpus=4, input_bytes=1 << 20) == 4
    # runner divides a file's size by N for --shard K/N: a 1 MiB list in 8 shares is small
    assert engine_count(limits, cpus=4, input_bytes=(1 << 20) // 8) == 1


def test_version_does_not_import_ray():
    code = "import sys; from fetchcli.cli import main; sys.argv = ['fetchcli', '--version']\n"
    code += "try:\n    main()\nexcept SystemExit:\n    pass\nassert 'ray' not in sys.modules, 'ray'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("fetchcli ")
