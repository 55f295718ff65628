"""Errors of predicted motion against measured motion, per example (NumPy,
float64 results).

Spectral volumes are complex ``[K, H, W, 2]`` in pixels (docs/DESIGN.md §1);
displacements ``[T, H, W, 2]`` px are their motion textures
``D(t) = sum_k w_k Re(S_k exp(2 pi i k t / T))`` at ``t = 0 .. T-1``.

* end-point error: ``mean_{t, y, x} |D_pred(t) - D_meas(t)|_2``, px;
* error per frequency: ``mean_{y, x} |S_pred,k - S_meas,k|_2``, px, the
  norm over the two complex components ``(dx, dy)``. By Parseval the
  squared errors add up to the mean squared end-point error:
  ``mean_t |dD(t)|^2 = sum_k w_k |dS_k|^2`` at each pixel;
* loop-closure error of an N-frame video (`spectral_jax.inference.loop`):
  ``mean_{y, x, axis} |D(N) - D(0)|`` px and ``|dD/dt(N) - dD/dt(0)|`` px
  per frame, the two terms that loop self-guidance (``animate --loop``)
  minimises. Both are 0 when N is a multiple of T (D has period T).
"""

from __future__ import annotations

import numpy as np

from spectral_jax.inference.loop import loop_closure_error
from spectral_jax.motion.spectral import motion_texture, motion_velocity


def displacements(spectral, num_frames: int) -> np.ndarray:
  """The motion texture ``[T, H, W, 2]`` px at frames ``0 .. T-1`` of a
  spectral volume over T = ``num_frames``."""
  return np.asarray(motion_texture(np.asarray(spectral), np.arange(num_frames, dtype=np.float32),
                                   num_frames))


def end_point_error(predicted_px, measured_px) -> float:
  """Mean Euclidean distance between displacements ``[..., 2]`` px."""
  difference = np.asarray(predicted_px, np.float64) - np.asarray(measured_px, np.float64)
  return float(np.sqrt((difference**2).sum(axis=-1)).mean())


def frequency_magnitude(spectral) -> np.ndarray:
  """``[K]`` mean over pixels of ``|S_k|_2`` (both complex components) px."""
  spectral = np.asarray(spectral, np.complex128)
  return np.sqrt((np.abs(spectral)**2).sum(axis=-1)).mean(axis=(1, 2))


def frequency_error(predicted, measured) -> np.ndarray:
  """``[K]`` `frequency_magnitude` of ``predicted - measured`` px."""
  return frequency_magnitude(np.asarray(predicted, np.complex128)
                             - np.asarray(measured, np.complex128))


def loop_closure(spectral, *, num_frames: int, loop_frames: int) -> tuple[float, float]:
  """``(position px, velocity px/frame)`` loop-closure errors of an N =
  ``loop_frames`` frame video of a spectral volume over T = ``num_frames``:
  how far its frame after the last, time N, is from frame 0, in
  displacement and in velocity (means over pixels and axes)."""
  velocity = np.asarray(motion_velocity(np.asarray(spectral), np.array([0.0, loop_frames]),
                                        num_frames), np.float64)
  return (loop_closure_error(spectral, num_frames=num_frames, loop_frames=loop_frames),
          float(np.abs(velocity[1] - velocity[0]).mean()))
