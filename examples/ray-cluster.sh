#!/bin/sh
# fetchcli on a Ray cluster. Every node: the same Python, Ray and fetchcli versions
# (pip install 'fetchcli[ray]'), and a filesystem they all share (/shared here): the shards'
# records and the fetched files are written by the nodes themselves.
#
#   on the head node:       ray start --head --port=6379
#   on each other node:     ray start --address=HEAD_IP:6379
#
# Then, on the head node (HEAD_IP:6379, or `local` for a one-machine cluster started on the spot):
set -u
fetchcli get /shared/urls.txt --ray HEAD_IP:6379 --shards 64 \
  --jsonl /shared/records.jsonl -o /shared/out

# Every line exactly once, and ok? Exit 0 if so; the URLs still to fetch go to rerun.txt.
fetchcli merge /shared/records.jsonl --input /shared/urls.txt --rerun /shared/rerun.txt

# Until `--ray` is in your fetchcli, ray_shards.py runs the same shards as plain Ray tasks
# (fetchcli get --shard K/64 in each), then the merge is over their records:
#   python ray_shards.py /shared/urls.txt --address HEAD_IP:6379 --shards 64 --dir /shared
#   fetchcli merge /shared/records/shard-*.jsonl --input /shared/urls.txt --rerun /shared/rerun.txt
