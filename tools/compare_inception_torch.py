"""Optional check: `spectral_jax.eval.inception` against PyTorch's
Inception-v3 on the same random weights and images.

PyTorch is no dependency of this project, so this runs in two steps, the
first in any environment with ``torch`` and ``torchvision`` (plus
``pytorch-fid`` for ``--variant fid``), the second in the project's::

  python -m venv /tmp/torchref
  /tmp/torchref/bin/pip install torch torchvision pytorch-fid \\
      --extra-index-url https://download.pytorch.org/whl/cpu
  /tmp/torchref/bin/python tools/compare_inception_torch.py reference DIR [--variant fid]
  python tools/compare_inception_torch.py compare DIR [--variant fid]

``reference`` builds torchvision's ``inception_v3(weights=None,
aux_logits=False, init_weights=True)`` (seed 0; for ``--variant fid`` its
Mixed blocks swapped for pytorch-fid's FID-Inception ones, as pytorch-fid
builds its network), rescales the convolutions to He's scale and gives the
BatchNorms random statistics (with torchvision's initial identity
statistics a mix-up of mean, variance, scale and bias would not show), and
writes DIR/weights.npz (its state dict), DIR/images.npy (2 random images
``[2, 299, 299, 3]`` in [-1, 1]) and DIR/features.npy (its 2048-d pool
features, ``fc`` replaced by an identity). ``compare`` prints the largest
absolute and relative differences of this project's features.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _torchvision_models():
  """``torchvision.models``; where torchvision's C extension fails to load (a
  wheel built for CUDA beside a CPU-only torch), its pure-Python models
  alone, which is all Inception-v3 needs."""
  try:
    import torchvision
  except (OSError, RuntimeError):
    import importlib.util
    import sys
    import types
    package = types.ModuleType("torchvision")
    package.__path__ = list(importlib.util.find_spec("torchvision").submodule_search_locations)
    sys.modules["torchvision"] = package
  import torchvision.models
  return torchvision.models


def reference(directory: Path, variant: str) -> None:
  from importlib.metadata import version

  import numpy as np
  import torch

  models = _torchvision_models()
  torch.manual_seed(0)
  model = models.inception_v3(weights=None, aux_logits=False, init_weights=True)
  if variant == "fid":
    from pytorch_fid import inception as fid
    model.Mixed_5b = fid.FIDInceptionA(192, pool_features=32)
    model.Mixed_5c = fid.FIDInceptionA(256, pool_features=64)
    model.Mixed_5d = fid.FIDInceptionA(288, pool_features=64)
    for name, channels in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160),
                           ("Mixed_6e", 192)):
      setattr(model, name, fid.FIDInceptionC(768, channels_7x7=channels))
    model.Mixed_7b = fid.FIDInceptionE_1(1280)
    model.Mixed_7c = fid.FIDInceptionE_2(2048)
  model.fc = torch.nn.Identity()
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.Conv2d):
        fan_in = module.weight[0].numel()
        module.weight.normal_(0, (2 / fan_in)**0.5)
      elif isinstance(module, torch.nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0, 0.1)
        module.running_mean.normal_(0, 0.1)
        module.running_var.uniform_(0.5, 1.5)
  model.eval()
  images = np.random.default_rng(0).uniform(-1, 1, (2, 299, 299, 3)).astype(np.float32)
  with torch.no_grad():
    pooled = model(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
  directory.mkdir(parents=True, exist_ok=True)
  np.savez(directory / "weights.npz", **{k: v.numpy() for k, v in model.state_dict().items()})
  np.save(directory / "images.npy", images)
  np.save(directory / "features.npy", pooled)
  print(f"torch {torch.__version__}, torchvision {version('torchvision')}: features "
        f"{pooled.shape}, mean {pooled.mean():.4g}")


def compare(directory: Path, variant: str) -> None:
  import jax.numpy as jnp
  import numpy as np

  from spectral_jax.eval import inception

  model = inception.load_inception(directory / "weights.npz", variant=variant)
  expected = np.load(directory / "features.npy").astype(np.float64)
  actual = np.asarray(model(jnp.asarray(np.load(directory / "images.npy"))), np.float64)
  difference = np.abs(actual - expected)
  # Elementwise relative differences of features near 0 say nothing: those
  # above 1% of the largest only.
  large = np.abs(expected) > 0.01 * np.abs(expected).max()
  print(f"{variant}: features {actual.shape}, largest {np.abs(expected).max():.3g}; "
        f"max |difference| {difference.max():.3g}, relative L2 "
        f"{np.linalg.norm(actual - expected) / np.linalg.norm(expected):.3g}, max relative "
        f"(features above 1% of the largest) "
        f"{(difference[large] / np.abs(expected[large])).max():.3g}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("step", choices=("reference", "compare"))
  parser.add_argument("directory", type=Path)
  parser.add_argument("--variant", choices=("torchvision", "fid"), default="torchvision")
  args = parser.parse_args()
  (reference if args.step == "reference" else compare)(args.directory, args.variant)


if __name__ == "__main__":
  main()
