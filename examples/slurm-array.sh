#!/bin/bash
# fetchcli on a Slurm job array: 16 tasks, task K fetches share K of 16 of one list
# (--shard auto reads SLURM_ARRAY_TASK_ID, _MIN, _MAX, _STEP and _COUNT). Submit from a
# directory every node sees, then merge when the array is over, however it ended:
#
#   mkdir -p logs records
#   jobid=$(sbatch --parsable slurm-array.sh)
#   sbatch --dependency=afterany:$jobid --output=logs/merge-%j.out --wrap \
#     'fetchcli merge records/shard-*.jsonl --input urls.txt --rerun rerun.txt'
#
# If the merge says "incomplete", submit the array again: every task continues from its own
# records (--resume), fetching nothing twice that was ok. Or fetch rerun.txt on its own.
#SBATCH --job-name=fetchcli
#SBATCH --array=0-15%8
#SBATCH --cpus-per-task=2
#SBATCH --mem=2G
#SBATCH --time=12:00:00
#SBATCH --output=logs/fetch-%A_%a.out

# Exit 1 means some URLs failed: they are in the records and the merge lists them, so the task
# counts as done. Any other failure (a crash, a signal) fails the task.
fetchcli get urls.txt --shard auto --resume -q \
  --jsonl "records/shard-${SLURM_ARRAY_TASK_ID}.jsonl" -o out \
  || [ $? -eq 1 ]
