"""Losses of the renderer stage: VGG16 perceptual loss and L1 (docs/DESIGN.md §2).

The perceptual loss compares `spectral_jax.models.vgg16.VGG16` features of the
rendered and the true frame at relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3
(Johnson et al. 2016, the loss the paper names): the mean absolute (``"l1"``,
default) or squared (``"l2"``) difference per layer, weighted and summed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from spectral_jax.models.vgg16 import LAYERS

# Equal weights on the five layers; a config can weight them otherwise.
DEFAULT_LAYER_WEIGHTS = (1.0,) * len(LAYERS)


def l1_loss(pred, target):
  """Mean absolute difference over all elements (scalar)."""
  return jnp.mean(jnp.abs(pred.astype(jnp.float32) - target.astype(jnp.float32)))


def perceptual_loss(vgg, pred, target, *, layer_weights=DEFAULT_LAYER_WEIGHTS,
                    distance: str = "l1"):
  """VGG16 feature distance between frames (scalar).

  Args:
    vgg: the `VGG16` from `load_vgg16()`, kept frozen by the caller.
    pred, target: ``[B, H, W, 3]`` RGB in ``[-1, 1]``; no gradient flows
      into ``target``.
    layer_weights: one weight per layer of `LAYERS`.
    distance: ``"l1"`` (mean ``|f_pred - f_target|``) or ``"l2"`` (mean
      squared difference), averaged over batch, positions and channels.
  """
  if len(layer_weights) != len(LAYERS):
    raise ValueError(f"layer_weights needs one weight per layer of {LAYERS}, got {layer_weights}")
  if distance not in ("l1", "l2"):
    raise ValueError(f"distance must be 'l1' or 'l2', got {distance!r}")
  # One VGG pass over both batches; the target side is a constant.
  features = vgg(jnp.concatenate([pred, jax.lax.stop_gradient(target)], axis=0))
  batch = pred.shape[0]
  total = 0.0
  for weight, feature in zip(layer_weights, features):
    diff = feature[:batch].astype(jnp.float32) - feature[batch:].astype(jnp.float32)
    total = total + weight * jnp.mean(jnp.abs(diff) if distance == "l1" else diff * diff)
  return total
