"""Feeding frames to the feature networks: resized, scaled, in batches."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def network_input(frames, size: int) -> jax.Array:
  """uint8 frames ``[..., H, W, 3]`` -> float32 ``[..., size, size, 3]`` in
  [-1, 1]: resized without keeping the aspect ratio (as the FID and FVD
  references), bilinear with half-pixel centres and no anti-aliasing
  (PyTorch's ``interpolate(..., align_corners=False)``)."""
  frames = jnp.asarray(frames, jnp.float32)
  shape = frames.shape[:-3] + (size, size, frames.shape[-1])
  return jax.image.resize(frames, shape, "bilinear", antialias=False) * (2.0 / 255.0) - 1.0


def map_batches(fn, inputs: np.ndarray, batch_size: int) -> np.ndarray:
  """``fn`` over ``inputs [N, ...]`` in batches of ``batch_size`` rows,
  concatenated ``[N, ...]`` as float64 NumPy.

  A last, shorter batch is padded (with copies of its first row) to the next
  power of two and its padding dropped: a jitted ``fn`` compiles at most
  ``log2(batch_size) + 2`` times per input shape whatever N, and a call on
  one video's few clips computes less than twice what it needs, not a whole
  batch.
  """
  inputs = np.asarray(inputs)
  outputs = []
  for first in range(0, len(inputs), batch_size):
    batch = inputs[first:first + batch_size]
    count = len(batch)
    padded = min(batch_size, 1 << (count - 1).bit_length())
    if count < padded:
      batch = np.concatenate([batch, np.repeat(batch[:1], padded - count, axis=0)])
    outputs.append(np.asarray(fn(batch), np.float64)[:count])
  return np.concatenate(outputs)
