#!/usr/bin/env bash
# Regenerates requirements.lock, the exact versions that CI installs and
# README's first command takes as constraints (`pip install -c
# requirements.lock ...`): every dependency of pyproject.toml with the `test`
# and `tpu` extras, resolved from PyPI for CPython 3.11 on Linux x86_64
# (glibc >= 2.31, which libtpu's wheels need), whatever machine runs it.
#
#   tools/lock.sh                           # keeps the locked versions where pyproject.toml allows
#   tools/lock.sh --upgrade                 # the newest versions pyproject.toml allows
#   tools/lock.sh --upgrade-package jax     # one package (and what it needs) to its newest
#
# Needs uv (`pip install uv`). After an upgrade, run the suite on the new lock
# (.ci/run) and update the versions README names ("Versions") before committing it.
set -euo pipefail
cd "$(dirname "$0")/.."
exec uv pip compile pyproject.toml --extra test --extra tpu \
  --python-version 3.11 --python-platform x86_64-manylinux_2_31 \
  --no-emit-index-url --custom-compile-command tools/lock.sh \
  --output-file requirements.lock "$@"
