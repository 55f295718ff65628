"""Inception-v3 (Szegedy et al. 2016, "Rethinking the Inception
Architecture") up to its 2048-d global average pool: the feature network of
FID.

No Inception-v3 weights ship in any package this project installs offline,
and nothing is downloaded: the weights load from a file you give
(``--inception-weights PATH`` or ``$SPECTRAL_JAX_INCEPTION_WEIGHTS``), a
NumPy ``.npz`` of a PyTorch Inception-v3 state dict, either pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth`` (the TF FID reference weights,
ported) or torchvision's ``inception_v3`` ``IMAGENET1K_V1``. To convert one
(in an environment with PyTorch)::

    import numpy as np
    import torch
    state = torch.load("pt_inception-2015-12-05-6726825d.pth", map_location="cpu")
    # or: state = torchvision.models.inception_v3(weights="IMAGENET1K_V1").state_dict()
    np.savez("inception_v3.npz", **{k: v.numpy() for k, v in state.items()})

Expected keys: for every convolution unit ``U`` below, ``U.conv.weight``
``[O, I, kh, kw]`` (PyTorch's OIHW, transposed here to HWIO) and
``U.bn.weight``, ``U.bn.bias``, ``U.bn.running_mean``, ``U.bn.running_var``
``[O]``; `weight_shapes` lists them all with their shapes. The units:

* ``Conv2d_1a_3x3``, ``Conv2d_2a_3x3``, ``Conv2d_2b_3x3``,
  ``Conv2d_3b_1x1``, ``Conv2d_4a_3x3``;
* ``Mixed_5b``, ``Mixed_5c``, ``Mixed_5d``: ``.branch1x1``,
  ``.branch5x5_1``, ``.branch5x5_2``, ``.branch3x3dbl_1`` .. ``_3``,
  ``.branch_pool``;
* ``Mixed_6a``: ``.branch3x3``, ``.branch3x3dbl_1`` .. ``_3``;
* ``Mixed_6b`` .. ``Mixed_6e``: ``.branch1x1``, ``.branch7x7_1`` .. ``_3``,
  ``.branch7x7dbl_1`` .. ``_5``, ``.branch_pool``;
* ``Mixed_7a``: ``.branch3x3_1``, ``.branch3x3_2``, ``.branch7x7x3_1`` ..
  ``_4``;
* ``Mixed_7b``, ``Mixed_7c``: ``.branch1x1``, ``.branch3x3_1``,
  ``.branch3x3_2a``, ``.branch3x3_2b``, ``.branch3x3dbl_1``,
  ``.branch3x3dbl_2``, ``.branch3x3dbl_3a``, ``.branch3x3dbl_3b``,
  ``.branch_pool``.

Other keys (``fc.*``, ``AuxLogits.*``, ``*.num_batches_tracked``) are
ignored: neither the logits nor the auxiliary head is built.

Two variants differ only in the pooling of the blocks' pool branches:

* ``"fid"`` (default), pytorch-fid's FID-Inception, which reproduces the TF
  graph of the FID reference: the 3x3 average pools of Mixed_5b..5d,
  6b..6e and 7b leave the zero padding out of the mean
  (``count_include_pad=False``), and Mixed_7c's pool branch max-pools.
* ``"torchvision"``: every pool branch averages with the padding counted,
  as torchvision's ``inception_v3``.

Input: RGB ``[N, 299, 299, 3]`` in ``[-1, 1]`` (torchvision's
``transform_input`` maps ImageNet-normalised input to this range; here the
input is already in it). Every convolution is followed by a BatchNorm on
running statistics (epsilon 1e-3: this network only runs inference) and a
ReLU; convolutions and pools pad as PyTorch (explicit zeros, floor
division), so 299 -> 149 -> 147 -> 73 -> 71 -> 35 -> 17 -> 8.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

IMAGE_SIZE = 299
FEATURE_CHANNELS = 2048
BATCH_NORM_EPSILON = 1e-3
WEIGHTS_ENV = "SPECTRAL_JAX_INCEPTION_WEIGHTS"
# Pool branch of each pooled block: (Mixed_5b..7b's average pools, Mixed_7c's).
VARIANTS = {"fid": ("avg_without_padding", "max"), "torchvision": ("avg", "avg")}
# Leaf names here -> PyTorch's: a unit's conv kernel and BatchNorm state.
TORCH_LEAVES = {("conv", "kernel"): "conv.weight", ("bn", "scale"): "bn.weight",
                ("bn", "bias"): "bn.bias", ("bn", "mean"): "bn.running_mean",
                ("bn", "var"): "bn.running_var"}


def _pair(value) -> tuple[int, int]:
  return (value, value) if isinstance(value, int) else tuple(value)


class BasicConv(nnx.Module):
  """``[N, H, W, Cin] -> [N, H', W', Cout]``: convolution without bias
  (PyTorch-style zero ``padding`` per side), BatchNorm, ReLU."""

  def __init__(self, in_channels: int, out_channels: int, kernel=1, stride=1, padding=0, *,
               precision, rngs: nnx.Rngs):
    self.conv = nnx.Conv(in_channels, out_channels, _pair(kernel), strides=_pair(stride),
                         padding=tuple((p, p) for p in _pair(padding)), use_bias=False,
                         precision=precision, rngs=rngs)
    self.bn = nnx.BatchNorm(out_channels, use_running_average=True,
                            epsilon=BATCH_NORM_EPSILON, rngs=rngs)

  def __call__(self, x):
    return nnx.relu(self.bn(self.conv(x)))


def pool_branch_input(x, kind: str):
  """The 3x3, stride 1, padding 1 pool of a block's pool branch:
  ``"avg"`` (padding counted), ``"avg_without_padding"`` or ``"max"``."""
  window, padding = (3, 3), ((1, 1), (1, 1))
  if kind == "max":
    return nnx.max_pool(x, window, strides=(1, 1), padding=padding)
  return nnx.avg_pool(x, window, strides=(1, 1), padding=padding,
                      count_include_pad=kind == "avg")


def _max_pool_3x3_stride_2(x):
  return nnx.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nnx.Module):
  """Mixed_5b..5d, 35 x 35: ``[..., Cin] -> [..., 224 + pool_features]``."""

  def __init__(self, in_channels: int, pool_features: int, pool: str, *, precision, rngs):
    conv = lambda *args, **kwargs: BasicConv(*args, **kwargs, precision=precision, rngs=rngs)
    self.pool = pool
    self.branch1x1 = conv(in_channels, 64)
    self.branch5x5_1 = conv(in_channels, 48)
    self.branch5x5_2 = conv(48, 64, 5, padding=2)
    self.branch3x3dbl_1 = conv(in_channels, 64)
    self.branch3x3dbl_2 = conv(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = conv(96, 96, 3, padding=1)
    self.branch_pool = conv(in_channels, pool_features)

  def __call__(self, x):
    return jnp.concatenate([
        self.branch1x1(x),
        self.branch5x5_2(self.branch5x5_1(x)),
        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
        self.branch_pool(pool_branch_input(x, self.pool)),
    ], axis=-1)


class InceptionB(nnx.Module):
  """Mixed_6a, 35 -> 17: ``[..., Cin] -> [..., 480 + Cin]``."""

  def __init__(self, in_channels: int, *, precision, rngs):
    conv = lambda *args, **kwargs: BasicConv(*args, **kwargs, precision=precision, rngs=rngs)
    self.branch3x3 = conv(in_channels, 384, 3, stride=2)
    self.branch3x3dbl_1 = conv(in_channels, 64)
    self.branch3x3dbl_2 = conv(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = conv(96, 96, 3, stride=2)

  def __call__(self, x):
    return jnp.concatenate([
        self.branch3x3(x),
        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
        _max_pool_3x3_stride_2(x),
    ], axis=-1)


class InceptionC(nnx.Module):
  """Mixed_6b..6e, 17 x 17, 7x7 factorised into 1x7 and 7x1:
  ``[..., Cin] -> [..., 768]``."""

  def __init__(self, in_channels: int, channels_7x7: int, pool: str, *, precision, rngs):
    conv = lambda *args, **kwargs: BasicConv(*args, **kwargs, precision=precision, rngs=rngs)
    c7 = channels_7x7
    self.pool = pool
    self.branch1x1 = conv(in_channels, 192)
    self.branch7x7_1 = conv(in_channels, c7)
    self.branch7x7_2 = conv(c7, c7, (1, 7), padding=(0, 3))
    self.branch7x7_3 = conv(c7, 192, (7, 1), padding=(3, 0))
    self.branch7x7dbl_1 = conv(in_channels, c7)
    self.branch7x7dbl_2 = conv(c7, c7, (7, 1), padding=(3, 0))
    self.branch7x7dbl_3 = conv(c7, c7, (1, 7), padding=(0, 3))
    self.branch7x7dbl_4 = conv(c7, c7, (7, 1), padding=(3, 0))
    self.branch7x7dbl_5 = conv(c7, 192, (1, 7), padding=(0, 3))
    self.branch_pool = conv(in_channels, 192)

  def __call__(self, x):
    double = x
    for unit in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                 self.branch7x7dbl_4, self.branch7x7dbl_5):
      double = unit(double)
    return jnp.concatenate([
        self.branch1x1(x),
        self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
        double,
        self.branch_pool(pool_branch_input(x, self.pool)),
    ], axis=-1)


class InceptionD(nnx.Module):
  """Mixed_7a, 17 -> 8: ``[..., Cin] -> [..., 512 + Cin]``."""

  def __init__(self, in_channels: int, *, precision, rngs):
    conv = lambda *args, **kwargs: BasicConv(*args, **kwargs, precision=precision, rngs=rngs)
    self.branch3x3_1 = conv(in_channels, 192)
    self.branch3x3_2 = conv(192, 320, 3, stride=2)
    self.branch7x7x3_1 = conv(in_channels, 192)
    self.branch7x7x3_2 = conv(192, 192, (1, 7), padding=(0, 3))
    self.branch7x7x3_3 = conv(192, 192, (7, 1), padding=(3, 0))
    self.branch7x7x3_4 = conv(192, 192, 3, stride=2)

  def __call__(self, x):
    seven = x
    for unit in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3,
                 self.branch7x7x3_4):
      seven = unit(seven)
    return jnp.concatenate([self.branch3x3_2(self.branch3x3_1(x)), seven,
                            _max_pool_3x3_stride_2(x)], axis=-1)


class InceptionE(nnx.Module):
  """Mixed_7b, 7c, 8 x 8, 3x3 split into parallel 1x3 and 3x1:
  ``[..., Cin] -> [..., 2048]``."""

  def __init__(self, in_channels: int, pool: str, *, precision, rngs):
    conv = lambda *args, **kwargs: BasicConv(*args, **kwargs, precision=precision, rngs=rngs)
    self.pool = pool
    self.branch1x1 = conv(in_channels, 320)
    self.branch3x3_1 = conv(in_channels, 384)
    self.branch3x3_2a = conv(384, 384, (1, 3), padding=(0, 1))
    self.branch3x3_2b = conv(384, 384, (3, 1), padding=(1, 0))
    self.branch3x3dbl_1 = conv(in_channels, 448)
    self.branch3x3dbl_2 = conv(448, 384, 3, padding=1)
    self.branch3x3dbl_3a = conv(384, 384, (1, 3), padding=(0, 1))
    self.branch3x3dbl_3b = conv(384, 384, (3, 1), padding=(1, 0))
    self.branch_pool = conv(in_channels, 192)

  def __call__(self, x):
    single = self.branch3x3_1(x)
    double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    return jnp.concatenate([
        self.branch1x1(x),
        self.branch3x3_2a(single), self.branch3x3_2b(single),
        self.branch3x3dbl_3a(double), self.branch3x3dbl_3b(double),
        self.branch_pool(pool_branch_input(x, self.pool)),
    ], axis=-1)


class InceptionV3(nnx.Module):
  """Inception-v3 without its heads: ``images [N, H, W, 3]`` in [-1, 1]
  (299 x 299 for FID; at least 75 x 75) ``-> [N, 2048]``, Mixed_7c averaged
  over positions ("pool3").

  Attributes carry PyTorch's module names, so a state dict's key is the
  attribute path (see `torch_key`). ``variant`` picks the pool branches
  (module docstring); ``precision`` applies to every convolution: the
  default, ``"highest"``, keeps float32 on GPUs, whose default is TF32
  (about 1e-3 relative error, which would move FID with the hardware).
  """

  def __init__(self, *, variant: str = "fid", precision="highest", rngs: nnx.Rngs):
    if variant not in VARIANTS:
      raise ValueError(f"Inception-v3 variant {variant!r}: expected one of {sorted(VARIANTS)}")
    pool, last_pool = VARIANTS[variant]
    conv = lambda *args, **kwargs: BasicConv(*args, **kwargs, precision=precision, rngs=rngs)
    blocks = dict(precision=precision, rngs=rngs)
    self.Conv2d_1a_3x3 = conv(3, 32, 3, stride=2)
    self.Conv2d_2a_3x3 = conv(32, 32, 3)
    self.Conv2d_2b_3x3 = conv(32, 64, 3, padding=1)
    self.Conv2d_3b_1x1 = conv(64, 80)
    self.Conv2d_4a_3x3 = conv(80, 192, 3)
    self.Mixed_5b = InceptionA(192, 32, pool, **blocks)
    self.Mixed_5c = InceptionA(256, 64, pool, **blocks)
    self.Mixed_5d = InceptionA(288, 64, pool, **blocks)
    self.Mixed_6a = InceptionB(288, **blocks)
    self.Mixed_6b = InceptionC(768, 128, pool, **blocks)
    self.Mixed_6c = InceptionC(768, 160, pool, **blocks)
    self.Mixed_6d = InceptionC(768, 160, pool, **blocks)
    self.Mixed_6e = InceptionC(768, 192, pool, **blocks)
    self.Mixed_7a = InceptionD(768, **blocks)
    self.Mixed_7b = InceptionE(1280, pool, **blocks)
    self.Mixed_7c = InceptionE(2048, last_pool, **blocks)

  def __call__(self, images):
    x = images.astype(jnp.float32)
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(_max_pool_3x3_stride_2(x)))
    x = _max_pool_3x3_stride_2(x)
    for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                  self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b,
                  self.Mixed_7c):
      x = block(x)
    return x.mean(axis=(1, 2))


def torch_key(path: tuple[str, ...]) -> str:
  """The state dict key of the variable at ``path`` in `InceptionV3`'s
  state, e.g. ``("Mixed_5b", "branch1x1", "bn", "mean")`` ->
  ``"Mixed_5b.branch1x1.bn.running_mean"``."""
  return ".".join((*path[:-2], TORCH_LEAVES[tuple(path[-2:])]))


def _torch_shape(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
  """PyTorch's shape of a variable of ``shape``: kernels are OIHW, not HWIO."""
  return tuple(shape[i] for i in (3, 2, 0, 1)) if path[-1] == "kernel" else tuple(shape)


@functools.lru_cache(maxsize=None)
def _abstract_split(variant: str, precision) -> tuple[nnx.GraphDef, nnx.State]:
  """`InceptionV3`'s graph and state of shapes, built once per process and
  variant: tracing the 94 units' construction takes seconds."""
  # Built abstractly: the random initialisation would be overwritten anyway.
  return nnx.split(nnx.eval_shape(lambda: InceptionV3(variant=variant, precision=precision,
                                                      rngs=nnx.Rngs(0))))


def _names(keys) -> tuple[str, ...]:
  """A pytree path in a pure state dict as attribute names."""
  return tuple(str(key.key) for key in keys)


def weight_shapes() -> dict[str, tuple[int, ...]]:
  """Every key `load_inception` reads, with its shape in PyTorch's layout
  (the same for both variants)."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(
      nnx.to_pure_dict(_abstract_split("fid", "highest")[1]))
  return {torch_key(_names(keys)): _torch_shape(_names(keys), leaf.shape)
          for keys, leaf in leaves}


def weights_path(path: str | os.PathLike | None = None) -> Path:
  """``path``, else ``$SPECTRAL_JAX_INCEPTION_WEIGHTS``.

  Raises:
    ValueError: neither is given.
  """
  path = path or os.environ.get(WEIGHTS_ENV)
  if not path:
    raise ValueError("no Inception-v3 weights ship offline; pass --inception-weights PATH (an "
                     ".npz converted from pytorch-fid's pt_inception-2015-12-05 or "
                     "torchvision's inception_v3 state dict, see "
                     f"spectral_jax/eval/inception.py) or set ${WEIGHTS_ENV}")
  return Path(path)


def _read_array(stored, file: Path, path: tuple[str, ...], shape: tuple[int, ...]):
  """The variable at ``path`` from the state dict, in this model's layout.

  Raises:
    ValueError: its key is missing or its shape is not Inception-v3's.
  """
  key, expected = torch_key(path), _torch_shape(path, shape)
  if key not in stored.files:
    raise ValueError(f"{file}: no {key!r}; not an Inception-v3 state dict (see "
                     "spectral_jax/eval/inception.py for the keys)")
  array = stored[key]
  if array.shape != expected:
    raise ValueError(f"{file}: {key!r} has shape {array.shape}; Inception-v3's is {expected}")
  array = np.asarray(array, np.float32)
  return jnp.asarray(array.transpose(2, 3, 1, 0) if path[-1] == "kernel" else array)


def load_inception(path: str | os.PathLike | None = None, *, variant: str = "fid",
                   precision="highest") -> InceptionV3:
  """`InceptionV3` with the weights of the ``.npz`` at ``path`` (default
  ``$SPECTRAL_JAX_INCEPTION_WEIGHTS``).

  Raises:
    ValueError: no path, a file that is not an ``.npz`` of arrays, or a key
      missing or of another shape (the message names it).
  """
  file = weights_path(path)
  graphdef, abstract = _abstract_split(variant, precision)
  state = jax.tree.map(lambda leaf: leaf, abstract)  # A copy: the cached one stays abstract.
  # allow_pickle=False: a weights file is arrays only, never code.
  stored = np.load(file, allow_pickle=False)
  if not isinstance(stored, np.lib.npyio.NpzFile):
    raise ValueError(f"{file}: not an .npz of named arrays")
  with stored:
    pure = jax.tree_util.tree_map_with_path(
        lambda keys, leaf: _read_array(stored, file, _names(keys), leaf.shape),
        nnx.to_pure_dict(state))
  nnx.replace_by_pure_dict(state, pure)
  return nnx.merge(graphdef, state)
