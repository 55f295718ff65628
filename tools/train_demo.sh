#!/usr/bin/env bash
# Trains the `demo` model (configs/*.py:demo), the candidate for a default
# model that ships with the package, from scratch with fixed seeds, and
# exports it:
#
#   tools/train_demo.sh WORKDIR
#
# 1. Fetches the nature photos (tools/fetch_photos.sh, needs apt-get) into
#    WORKDIR/photos/all and sets the held-out ones (HELD_OUT below) apart in
#    WORKDIR/photos/held_out: no stage ever sees them.
# 2. Trains the four `demo` stages (configs/*.py:demo) on photo scenes of
#    WORKDIR/photos/train in WORKDIR/runs/{vae,ldm1,ldm2,renderer}, printing
#    each stage's evaluation on the test split of its training photos.
# 3. Measures the model on the held-out photos (tools/evaluate_demo.py).
# 4. Exports it as float16 to WORKDIR/export (`spectral-jax export`); copy
#    that folder to spectral_jax/default_model/ to ship it (`animate`
#    uses it when no --checkpoint is given), then regenerate the golden
#    outputs its tests compare against: `python tests/test_default_model.py`.
#
# Every stage resumes where it stopped: run the same command again after an
# interruption. About 75 minutes on a 2-core CPU; on an accelerator the same
# command runs unchanged, only faster. Extra arguments go to every stage,
# e.g. --config.dtype=bfloat16.

set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 WORKDIR [--config.FIELD=VALUE ...]" >&2
  exit 2
fi
work=$1
shift
repo=$(cd "$(dirname "$0")/.." && pwd)
configs=$repo/configs
photos=$work/photos
runs=$work/runs

# Held out for evaluation (three with plants, three without) and the
# bundled example (LadyBird).
HELD_OUT="mate-LadyBird mate-YellowFlower kde-Path kde-BytheWater mate-Storm mate-Wood"

if [[ ! -d $photos/train ]]; then
  [[ -d $photos/all ]] || "$repo/tools/fetch_photos.sh" "$photos/all"
  mkdir -p "$photos/held_out" "$photos/train.partial"
  cp "$photos"/all/*.jpg "$photos/train.partial/"
  for name in $HELD_OUT; do
    mv "$photos/train.partial/$name.jpg" "$photos/held_out/"
  done
  mv "$photos/train.partial" "$photos/train"
fi

train() {  # STAGE_CONFIG RUN [FLAGS...]
  local config=$1 run=$2
  shift 2
  echo "== $run ($config)"
  python -m spectral_jax.train --config "$configs/$config" --workdir "$runs/$run" \
      --config.data.synthetic.photos="$photos/train" "$@"
  python "$repo/tools/evaluate_demo.py" evaluations "$runs/$run"
}

train vae.py:demo vae "$@"
train ldm_pretrain.py:demo ldm1 --config.vae_from="$runs/vae" "$@"
train ldm_freq_attn.py:demo ldm2 --config.vae_from="$runs/vae" \
    --config.init_from="$runs/ldm1" "$@"
train renderer.py:demo renderer "$@"

# The motion model (ldm2, with its pinned VAE) and the renderer, on photos
# no stage saw.
python "$repo/tools/evaluate_demo.py" held-out "$runs" "$photos/held_out" \
    --videos "$work/held_out_videos"
spectral-jax export --checkpoint "$runs" -o "$work/export" --dtype float16
