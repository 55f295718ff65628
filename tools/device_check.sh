#!/usr/bin/env bash
# The accelerator check, one command on a GPU machine (about 10 minutes on
# an H100, its start not counted):
#
#   tools/device_wheels.sh             # here, once: the wheels it installs (.whl)
#   tools/device_check.sh [OUT_DIR]    # there, from the repository, carrying .whl
#
# For a machine whose image has JAX with CUDA, Flax, Optax, Orbax, OpenCV and
# pytest but not the project's other dependencies and no network: it
# installs .whl into /tmp/site and runs the repository in place. Each part
# has its own time limit and writes its log to OUT_DIR (default $OUT, else
# /tmp/device_check), so a part that fails or runs out of time leaves the
# others' figures:
#
#   versions.txt   the GPU, driver, JAX, Flax, Optax, Orbax versions
#   tests.txt      the numerics tests on the GPU (attention, U-Net, VAE,
#                  renderer and splat against float64 references, bfloat16
#                  against float32, DDIM)
#   splat.txt      softmax_splat forward, 64 channels, batch 8, at 512x288
#                  and 1024x576 (targets: 1.3 and 4.5 ms)
#   train.txt      examples/s and MFU of the paper VAE and LDM stages in
#                  bfloat16 at their configs' batch (target: stage 1 >= 500),
#                  DDIM 250 steps with guidance (target: <= 2 s per picture)
#   render.txt     render_frames at 256x160 and 512x288 in bfloat16 (target:
#                  >= 1000 frames/s at 512x288)
#
# QUICK=1 shrinks every part to the tiny models (a dry run of the wiring,
# e.g. DEVICE=cpu QUICK=1 on a laptop); DEVICE=gpu is the default.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp/device_check}}
mkdir -p "$out"
device=${DEVICE:-gpu}
quick=${QUICK:-0}

if [[ -d .whl ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  echo "no .whl here (tools/device_wheels.sh makes it): using the installed packages"
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1

part() {  # NAME SECONDS COMMAND...: runs it with a time limit, logged to OUT/NAME.txt.
  local name=$1 limit=$2
  shift 2
  echo "== $name (at most ${limit} s): $*"
  local start=$SECONDS
  timeout "$limit" "$@" > "$out/$name.txt" 2>&1
  local status=$?
  echo "   exit $status after $((SECONDS - start)) s"
  tail -n 25 "$out/$name.txt"
}

part versions 60 bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv;
  python3 -c "import jax, flax, optax, orbax.checkpoint as ocp, sys;
print(sys.version.split()[0], \"jax\", jax.__version__, \"flax\", flax.__version__,
      \"optax\", optax.__version__, \"orbax\", ocp.__version__); print(jax.devices())"'

tests=(tests/test_models.py tests/test_splat.py tests/test_mixed_precision.py
       tests/test_diffusion.py)
part tests 240 python3 -m pytest -q -p no:cacheprovider -n 0 -m "not slow" "${tests[@]}"

if [[ $quick == 1 ]]; then
  variants=tiny; sizes=128x80; render_frames=16
else
  variants=paper; sizes=512x288,1024x576; render_frames=150
fi
part splat 120 python3 tools/benchmark.py splat --device "$device" --batch 8 \
    --sizes "$sizes" --fake-devices ''
part train 300 python3 tools/benchmark.py train --device "$device" --dtype bfloat16 \
    --variants "$variants" --stages vae,ldm_pretrain,ldm_freq_attn --steps 5
part render 120 python3 tools/benchmark.py render --device "$device" --dtype bfloat16 \
    --frames "$render_frames"
echo "logs in $out"
