#!/bin/bash
# Multi-node training with SLURM + Accelerate: one `accelerate launch` per node, each starting
# one process per GPU. Pre-emption safe: SLURM sends SIGTERM 120 s before the end, smora
# checkpoints and exits 143, and the requeued job continues with --resume.
#
#   sbatch scripts/slurm_multinode.sh configs/flan_mix.yaml train.lr=2e-4
#SBATCH --job-name=smora
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1          # one launcher per node
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=24:00:00
#SBATCH --signal=B:TERM@120
#SBATCH --requeue
#SBATCH --output=logs/%x-%j.out
set -euo pipefail
RECIPE=${1:?usage: sbatch scripts/slurm_multinode.sh RECIPE.yaml [key=value ...]}
shift
GPUS_PER_NODE=${SLURM_GPUS_PER_NODE:-8}
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=${MASTER_PORT:-29500}

# Forward SLURM's SIGTERM to the launchers so every rank checkpoints at the same step.
trap 'kill -TERM $SRUN_PID; wait $SRUN_PID' TERM
srun --kill-on-bad-exit=1 bash -c "accelerate launch \
    --config_file scripts/accelerate/ddp.yaml \
    --num_machines $SLURM_NNODES \
    --num_processes $((SLURM_NNODES * GPUS_PER_NODE)) \
    --machine_rank \$SLURM_NODEID \
    --main_process_ip $MASTER_ADDR \
    --main_process_port $MASTER_PORT \
    -m smora_cli train $RECIPE $* --resume --quiet" &
SRUN_PID=$!
wait $SRUN_PID
status=$?
if [ "$status" -eq 143 ]; then  # checkpointed on SIGTERM: put the job back in the queue
    scontrol requeue "$SLURM_JOB_ID"
fi
exit $status
