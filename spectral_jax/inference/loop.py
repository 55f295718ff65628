"""Seamless loops: motion self-guidance and the loop-closure error.

A motion texture over exactly the T frames of the Fourier window is periodic
already; a video of N != T frames loops only if the displacement and its
velocity at the frame after the last (time N) equal those at the first
(time 0). The paper's self-guidance pushes each DDIM step towards that with
the gradient of

    L = |D(N) - D(0)|_1 + |dD/dt(N) - dD/dt(0)|_1

on the spectral volume decoded from the predicted clean latent.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from spectral_jax.motion.normalize import denormalize
from spectral_jax.motion.spectral import (
  from_real_layout,
  motion_texture,
  motion_velocity,
)


def loop_closure_loss(normalized, scales, power: float, *, num_frames: int,
                      loop_frames: int) -> jnp.ndarray:
  """Self-guidance loss of normalized spectral volumes ``[B, K, H, W, 4]``:
  per example the mean over pixels and axes of ``|D(N) - D(0)|`` plus
  ``|dD/dt(N) - dD/dt(0)|`` (pixels, pixels per frame), summed over the
  batch (so an example's gradient does not depend on B).

  Args:
    normalized: ``[B, K, H, W, 4]`` frequency-normalized real layout.
    scales: ``[K]`` normalization scales; ``power`` their power.
    num_frames: T of the Fourier window.
    loop_frames: N, the frames of the video that must loop.
  """
  spectral = from_real_layout(denormalize(normalized, jnp.asarray(scales), power))
  times = jnp.asarray([0.0, float(loop_frames)], jnp.float32)

  def one(volume):
    position = motion_texture(volume, times, num_frames)
    velocity = motion_velocity(volume, times, num_frames)
    return (jnp.abs(position[1] - position[0]).mean()
            + jnp.abs(velocity[1] - velocity[0]).mean())

  return sum(one(spectral[b]) for b in range(spectral.shape[0]))


def loop_closure_error(spectral, *, num_frames: int, loop_frames: int) -> float:
  """Mean ``|D(N) - D(0)|`` in pixels of a spectral volume ``[K, H, W, 2]``
  (complex): how far the frame after the last of an N-frame video is from
  the first."""
  position = motion_texture(np.asarray(spectral), np.array([0.0, loop_frames]), num_frames)
  return float(np.abs(position[1] - position[0]).mean())
