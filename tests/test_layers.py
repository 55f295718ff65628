"""Imports point one way: every module of spectral_jax imports only its own
package and the packages in the layers below its own (docs/DESIGN.md, "Layers").

Read from the source with `ast`, so that imports inside functions (the
commands import their heavy parts late) count as much as those at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "spectral_jax"

# Lowest first. A module may import from its own layer's packages only if
# it is in the same package (the core's small modules excepted: they are
# one layer of independent helpers).
LAYERS = (
    ("atomic", "checks", "distributed", "package_weights", "platforms", "sharding"),
    ("motion",),
    ("data",),
    ("config_base",),  # Training configs take their data defaults from `data.defaults`.
    ("diffusion",),
    ("render",),
    ("models",),
    ("checkpoint",),
    ("inference",),
    ("train",),
    ("eval",),
    ("apps",),
    ("cli",),
)
LAYER = {name: index for index, names in enumerate(LAYERS) for name in names}


def _package(module: str) -> str | None:
  """``spectral_jax.models.unet`` → ``models``; None for the top package."""
  parts = module.split(".")
  return parts[1] if len(parts) > 1 and parts[0] == "spectral_jax" else None


def _imported_packages(path: Path) -> set[str]:
  """The spectral_jax packages (first level below spectral_jax) ``path`` imports."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
    if isinstance(node, ast.Import):
      found.update(_package(alias.name) for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      if node.module == "spectral_jax":  # from spectral_jax import models, ...
        found.update(alias.name for alias in node.names)
      else:
        found.add(_package(node.module))
  return found - {None}


def _modules():
  return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def test_every_package_has_a_layer():
  packages = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in _modules()}
  packages -= {"__init__", "__main__"}
  assert packages <= set(LAYER), sorted(packages - set(LAYER))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
  own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
  upward = sorted(package for package in _imported_packages(path) - {own}
                  if LAYER[package] > LAYER[own]
                  or (LAYER[package] == LAYER[own] and LAYER[own] != 0))
  assert not upward, (f"{path.relative_to(PACKAGE)} ({own}, layer {LAYER[own]}) imports "
                      f"{', '.join(f'{p} (layer {LAYER[p]})' for p in upward)}")
