#!/bin/sh
# fetchcli on a Ray cluster. Every node: the same Python, Ray and fetchcli versions
# (pip install 'fetchcli[ray]'), and a filesystem they all share (/shared here): the shards'
# records and the fetched files are written by the nodes themselves.
#
#   on the head node:       ray start --head --port=6379
#   on each other node:     ray start --address=HEAD_IP:6379
#
# Then, on the head node (HEAD_IP:6379, or `local` for a one-machine cluster started on the spot).
# Each shard is a Ray task running fetchcli's engine; its records go to
# /shared/records.jsonl.shards/shard-K-of-64.jsonl and stream back to /shared/records.jsonl.
# A task whose node dies is run again and continues from its shard's records. If the driver
# itself stops, the same command with --resume goes on from the shards' records.
set -u
fetchcli get /shared/urls.txt --ray HEAD_IP:6379 --shards 64 \
  --jsonl /shared/records.jsonl -o /shared/out

# Every line exactly once, and ok? Exit 0 if so; the URLs still to fetch go to rerun.txt.
# (The driver's file or the shards' files, records.jsonl.shards/*.jsonl: not both.)
fetchcli merge /shared/records.jsonl --input /shared/urls.txt --rerun /shared/rerun.txt

# Without --ray, ray_shards.py runs the shards as plain Ray tasks, each a `fetchcli get
# --shard K/64 --resume` process (no records streamed back), then the merge is over theirs:
#   python ray_shards.py /shared/urls.txt --address HEAD_IP:6379 --shards 64 --dir /shared
#   fetchcli merge /shared/records/shard-*.jsonl --input /shared/urls.txt --rerun /shared/rerun.txt
