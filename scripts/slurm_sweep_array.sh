#!/bin/bash
# The granularity sweep as a SLURM array: one cell per array task, all writing into the same
# sweep directory (on a shared file system). Finished cells are skipped, so resubmitting the
# array after failures or pre-emption only runs what is missing; every task rewrites the
# results table and plot from all finished cells.
#
#   smora sweep-granularity configs/sweep.yaml --list-cells        # N cells: 0..N-1
#   sbatch --array=0-32 scripts/slurm_sweep_array.sh configs/sweep.yaml [flags or key=value ...]
#SBATCH --job-name=smora-sweep
#SBATCH --ntasks=1
#SBATCH --gpus=1
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --signal=B:TERM@120
#SBATCH --output=logs/%x-%A_%a.out
set -euo pipefail
RECIPE=${1:?usage: sbatch --array=0-N scripts/slurm_sweep_array.sh RECIPE.yaml [args ...]}
shift
# SIGTERM reaches smora, which checkpoints the cell; the next submission resumes it.
exec smora sweep-granularity "$RECIPE" "$@" --cell "$SLURM_ARRAY_TASK_ID"
