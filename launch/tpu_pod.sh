#!/usr/bin/env bash
# Trains on a Cloud TPU VM pod slice (e.g. v4-32: 4 workers). `train`
# creates the TPU VM or reuses it, copies this checkout to every worker and
# installs it there, mounts the bucket on every worker at the same path
# (gcsfuse), and starts the same training command on all workers; the
# workdir and the data set live in the bucket. jax.distributed finds the
# pod's workers by itself.
#
#   launch/tpu_pod.sh train CONFIG RUN [--config.key=value ...]
#   launch/tpu_pod.sh logs RUN      follow worker 0's output of run RUN
#   launch/tpu_pod.sh stop          SIGTERM on every worker: save the step, exit
#   launch/tpu_pod.sh delete        delete the TPU VM
#
#   launch/tpu_pod.sh train configs/vae.py:paper vae
#     trains in gs://$BUCKET/runs/vae on the data set gs://$BUCKET/$DATA
#
# Needs: gcloud, logged in (gcloud auth login) with PROJECT's TPU quota in
# ZONE; BUCKET in ZONE's region, readable and writable by the TPU VM's
# service account, holding the prepared data set at DATA (spectral-jax
# prepare, then gcloud storage cp -r DATA_DIR gs://BUCKET/DATA). Workers
# fetch uv, Python 3.11, JAX for TPU and gcsfuse from the internet.
# `train` with the same RUN again resumes the run (after `stop`, or after
# a spot VM was preempted: it is then created anew).
set -euo pipefail

# Change these (or set them in the environment).
PROJECT=${PROJECT:-my-gcp-project}
ZONE=${ZONE:-us-central2-b}
TPU_NAME=${TPU_NAME:-spectral-jax}
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-32}
RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
BUCKET=${BUCKET:-my-bucket}  # Without gs://.
DATA=${DATA-data}  # Empty (DATA=) for the variants with synthetic data: tiny, demo.
SPOT=${SPOT:-0}  # 1: a spot TPU VM (cheaper, preemptible).

# The same paths on every worker ($HOME expanded there).
MOUNT=/mnt/gcs/$BUCKET
# shellcheck disable=SC2016
CHECKOUT='$HOME/spectral_jax' PYTHON='$HOME/spectral_jax_venv/bin/python' \
    PID_FILE='$HOME/spectral_jax_train.pid'

usage() {
  cat >&2 <<EOF
usage: $0 train CONFIG RUN [--config.key=value ...]
       $0 logs RUN
       $0 stop
       $0 delete
EOF
  exit 2
}

tpu() {
  gcloud compute tpus tpu-vm "$@" --zone="$ZONE" --project="$PROJECT"
}

on_workers() {  # WORKER COMMAND: runs COMMAND on WORKER (a number or "all").
  tpu ssh "$TPU_NAME" --worker="$1" --command="$2"
}

create_or_reuse() {
  local state
  state=$(tpu describe "$TPU_NAME" --format='value(state)' 2>/dev/null || true)
  case $state in
    READY) echo "reusing TPU VM $TPU_NAME" ;;
    PREEMPTED | TERMINATED)
      echo "TPU VM $TPU_NAME is $state; creating it anew"
      tpu delete "$TPU_NAME" --quiet
      state="" ;;
    "") ;;
    *) echo "$0: TPU VM $TPU_NAME is $state; try again when it is READY" >&2; exit 1 ;;
  esac
  if [ -z "$state" ]; then
    local spot=()
    if [ "$SPOT" = 1 ]; then spot=(--spot); fi
    # The cloud-platform scope lets the VM's service account reach the
    # bucket (its IAM roles still decide what it may do there).
    tpu create "$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" \
        --version="$RUNTIME_VERSION" --scopes=https://www.googleapis.com/auth/cloud-platform \
        "${spot[@]}"
  fi
}

refuse_if_running() {
  # One run at a time, and the install below replaces the code a run uses.
  on_workers all "if [ -f $PID_FILE ] && kill -0 \$(cat $PID_FILE) 2>/dev/null; then
      echo 'a run is going on: launch/tpu_pod.sh stop first' >&2; exit 1
    fi"
}

install_package() {
  # The checkout's tracked files as they are (uncommitted edits included).
  local scratch
  scratch=$(mktemp -d)
  (cd "$(dirname "$0")/.." && git ls-files -z | tar --null -czf "$scratch/spectral_jax.tar.gz" -T -)
  tpu scp "$scratch/spectral_jax.tar.gz" "$TPU_NAME:spectral_jax.tar.gz" --worker=all
  rm -r "$scratch"
  on_workers all "set -euo pipefail
    rm -rf $CHECKOUT && mkdir -p $CHECKOUT && tar -xzf ~/spectral_jax.tar.gz -C $CHECKOUT
    [ -x ~/.local/bin/uv ] || curl -LsSf https://astral.sh/uv/install.sh | sh
    ~/.local/bin/uv venv --allow-existing --python 3.11 ~/spectral_jax_venv
    ~/.local/bin/uv pip install --python $PYTHON 'jax[tpu]' $CHECKOUT
    if ! command -v gcsfuse >/dev/null; then
      echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -cs) main\" |
        sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null
      curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg |
        sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null
      sudo apt-get update -q && sudo apt-get install -y -q gcsfuse
    fi
    if ! mountpoint -q $MOUNT; then
      sudo mkdir -p $MOUNT && sudo chown \"\$USER\" $MOUNT
      # Orbax finishes a checkpoint by renaming its directory: gcsfuse
      # renames directories (object by object) only below this limit.
      gcsfuse --implicit-dirs --rename-dir-limit=1000000 $BUCKET $MOUNT
    fi"
}

start() {  # CONFIG RUN [--config.key=value ...]
  local config=$1 run=$2
  shift 2
  local args=(--config "$config" --workdir "$MOUNT/runs/$run"
              --config.distributed.enabled=True --no_progress)
  if [ -n "$DATA" ]; then args+=("--config.data.dir=$MOUNT/$DATA"); fi
  args+=("$@")
  local quoted
  quoted=$(printf '%q ' "${args[@]}")
  # Detached from the ssh session, which may drop.
  on_workers all "set -euo pipefail
    cd $CHECKOUT
    setsid nohup $PYTHON -m spectral_jax.train $quoted \
        >~/spectral_jax_$run.log 2>&1 </dev/null &
    echo \$! >$PID_FILE"
}

logs() {  # RUN
  on_workers 0 "tail -n +1 -F ~/spectral_jax_$1.log"
}

[ $# -ge 1 ] || usage
command=$1
shift
case $command in
  train)
    [ $# -ge 2 ] || usage
    create_or_reuse
    refuse_if_running
    install_package
    start "$@"
    echo "started run $2 on every worker of $TPU_NAME; following worker 0 (Ctrl-C stops" \
         "following, not training)"
    logs "$2" ;;
  logs) [ $# -eq 1 ] || usage; logs "$1" ;;
  stop)
    [ $# -eq 0 ] || usage
    on_workers all "[ -f $PID_FILE ] && kill -TERM \$(cat $PID_FILE) 2>/dev/null || true" ;;
  delete) [ $# -eq 0 ] || usage; tpu delete "$TPU_NAME" --quiet ;;
  *) usage ;;
esac
