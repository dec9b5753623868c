"""fetchcli's shards as Ray tasks: one `fetchcli get --shard K/N` per task, retried when it dies.

    python ray_shards.py /shared/urls.txt --address HEAD_IP:6379 --shards 64 --dir /shared
    fetchcli merge /shared/records/shard-*.jsonl --input /shared/urls.txt --rerun /shared/rerun.txt

A task whose node is lost, or whose fetchcli is killed (out of memory), is run again by Ray and
continues from its shard's records (--resume): nothing already fetched ok is fetched twice.
The directory must be one that every node shares. Exits 0 when every shard fetched every URL
ok, 1 when some URLs failed (the merge lists them).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import ray


class ShardDied(Exception):
    """fetchcli ended otherwise than with 0 or 1 (all ok, some URLs failed): run it again."""


@ray.remote(num_cpus=1, max_retries=5, retry_exceptions=[ShardDied])
def shard(listing: str, index: int, count: int, directory: str) -> int:
    command = [
        sys.executable, "-m", "fetchcli", "get", listing,
        "--shard", f"{index}/{count}", "--resume", "-q",
        "--jsonl", f"{directory}/records/shard-{index}.jsonl",
        "-o", f"{directory}/out",
    ]  # fmt: skip
    code = subprocess.run(command, check=False).returncode
    if code not in (0, 1):
        msg = f"shard {index}/{count}: fetchcli exited with {code}"
        raise ShardDied(msg)
    return code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("listing", help="the list of URLs, at the same path on every node")
    parser.add_argument("--address", default="auto", help="the Ray cluster (default: auto)")
    parser.add_argument("--shards", type=int, default=64)
    parser.add_argument("--dir", default=".", help="shared directory for records/ and out/")
    args = parser.parse_args()
    ray.init(address=args.address)
    codes = ray.get(
        [shard.remote(args.listing, k, args.shards, args.dir) for k in range(args.shards)]
    )
    return int(max(codes))


if __name__ == "__main__":
    sys.exit(main())
