#!/usr/bin/env bash
# Trains on a SLURM GPU cluster: one JAX process per GPU (the default) or
# one per node, all running the same command; jax.distributed finds its
# coordinator (the job's first node), process count and rank in SLURM's
# environment.
#
#   sbatch launch/slurm.sh CONFIG WORKDIR [--config.key=value ...]
#   sbatch --ntasks-per-node=1 launch/slurm.sh ...    # one process per node
#
#   sbatch launch/slurm.sh configs/vae.py:paper /shared/runs/vae \
#       --config.data.dir=/shared/data
#
# Needs: VENV (below) on a file system every node mounts, holding this
# package and JAX for CUDA (pip install -e . 'jax[cuda12]'); WORKDIR and the
# data set on a shared file system too. Change the #SBATCH lines to the
# cluster's nodes (and add its partition or account). Every process gets
# SIGTERM 5 minutes before the time limit (--signal): the run saves the step
# it is at and exits 0; submitting the same command again resumes it. If a
# process fails, srun stops the others (--kill-on-bad-exit).
#
#SBATCH --job-name=spectral-jax
#SBATCH --nodes=2
#SBATCH --gpus-per-node=8
#SBATCH --ntasks-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@300
#SBATCH --output=spectral-jax-%j.out
set -euo pipefail

# Change this: the virtual environment with the package installed.
VENV=${VENV:-$HOME/spectral_jax_venv}

if [ -z "${SLURM_JOB_ID:-}" ]; then
  echo "submit with sbatch: sbatch $0 CONFIG WORKDIR [--config.key=value ...]" >&2
  exit 2
fi
if [ $# -lt 2 ]; then
  echo "usage: sbatch $0 CONFIG WORKDIR [--config.key=value ...]" >&2
  exit 2
fi
config=$1 workdir=$2
shift 2

if [ "${SLURM_NTASKS_PER_NODE:-}" = 1 ]; then
  # One process per node sees every GPU of it; JAX's SLURM default is the
  # one GPU of the process's local rank. (Request GPUs per node, not per
  # task: a task whose CUDA_VISIBLE_DEVICES holds only its own GPU breaks
  # that default.)
  JAX_LOCAL_DEVICE_IDS=$(seq -s, 0 $((SLURM_GPUS_ON_NODE - 1)))
  export JAX_LOCAL_DEVICE_IDS
fi

srun --kill-on-bad-exit=1 "$VENV/bin/python" -m spectral_jax.train \
    --config "$config" --workdir "$workdir" --config.distributed.enabled=True \
    --no_progress "$@"
