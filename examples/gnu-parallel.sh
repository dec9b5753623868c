#!/bin/sh
# fetchcli on several machines over ssh with GNU parallel: 8 shards of one list.
# hosts.txt has one ssh login a line ("user@host"). Every machine mounts /shared (NFS or the
# like) and has fetchcli on its PATH. A shard that fails is run again (--retries, perhaps on
# another machine) and continues from its own records (--resume).
set -u
N=8
mkdir -p /shared/records
# Exit 1 (some URLs failed: they are in the records) is a finished shard, not one to retry.
parallel --sshloginfile hosts.txt --jobs 1 --retries 3 --joblog shards.log \
  "fetchcli get /shared/urls.txt --shard {}/$N --resume -q" \
  "--jsonl /shared/records/shard-{}.jsonl -o /shared/out || [ \$? -eq 1 ]" \
  ::: $(seq 0 $((N - 1)))

# Every line exactly once, and ok? Exit 0 if so; the URLs still to fetch go to rerun.txt.
fetchcli merge /shared/records/shard-*.jsonl --input /shared/urls.txt --rerun /shared/rerun.txt
