"""The spectral volume: temporal Fourier coefficients of per-pixel motion.

Conventions (DESIGN.md §1), shared by every module:

* displacement ``disp_px`` ``[T, H, W, 2]`` float, ``(dx, dy)`` in pixels from
  the reference frame 0 to frame ``t`` (so ``disp_px[0] == 0``);
* spectral volume ``S`` ``[K, H, W, 2]`` complex64,
  ``S_k = (1/T) sum_t D_t exp(-2 pi i k t / T)`` = ``rfft(D, axis=0)[:K] / T``;
  bin ``k`` oscillates at ``k * fps / T`` Hz;
* real layout for networks ``[K, H, W, 4]`` = ``(Re dx, Re dy, Im dx, Im dy)``.

Every function here takes NumPy or JAX arrays and returns the same kind, so
one implementation serves the data pipeline (NumPy, no JAX import) and jitted
models (JAX).
"""

from __future__ import annotations

import numpy as np


def array_module(x):
  """`jax.numpy` for JAX arrays and tracers, `numpy` for everything else."""
  if type(x).__module__.startswith(("jax", "jaxlib")):
    import jax.numpy as jnp  # Imported lazily: data workers never load JAX.
    return jnp
  return np


def spectral_volume(disp_px, num_freqs: int = 16):
  """Spectral volume ``[K, H, W, 2]`` complex64 of a motion texture.

  Args:
    disp_px: ``[T, H, W, 2]`` displacement from frame 0 to frame t, pixels.
    num_freqs: K, the number of lowest frequency bins kept (K <= T // 2 + 1).
  """
  xp = array_module(disp_px)
  num_frames = disp_px.shape[0]
  if not 1 <= num_freqs <= num_frames // 2 + 1:
    raise ValueError(f"num_freqs must be in [1, {num_frames // 2 + 1}] for "
                     f"T={num_frames}, got {num_freqs}")
  # Only K of the T/2+1 bins are kept, so a [K, T] DFT matrix product is
  # about 5x cheaper than a full FFT along T (and a single matmul on TPU).
  angle = 2.0 * np.pi * np.outer(np.arange(num_freqs), np.arange(num_frames)) / num_frames
  cos_basis = xp.asarray(np.cos(angle) / num_frames, xp.float32)
  sin_basis = xp.asarray(-np.sin(angle) / num_frames, xp.float32)
  flat = xp.asarray(disp_px, xp.float32).reshape(num_frames, -1)
  real = (cos_basis @ flat).reshape((num_freqs,) + disp_px.shape[1:])
  imag = (sin_basis @ flat).reshape((num_freqs,) + disp_px.shape[1:])
  return (real + 1j * imag).astype(xp.complex64)


def _bin_weights(num_freqs: int, num_frames: int, xp):
  """Weights of bins in the inverse transform: 1 for DC, 2 for bins whose
  conjugate twin is implied, 1 for the Nyquist bin (T even) that has none."""
  weights = np.full(num_freqs, 2.0, np.float32)
  weights[0] = 1.0
  if num_frames % 2 == 0 and num_freqs == num_frames // 2 + 1:
    weights[-1] = 1.0
  return xp.asarray(weights)


def motion_texture(spectral, times, num_frames: int, magnify: float = 1.0):
  """Displacement at any real times from a spectral volume.

  ``D(t) = Re(S_0) + 2 Re(sum_{k>=1} S_k exp(2 pi i k t / T))``: a fractional
  ``t`` gives exact slow motion, ``magnify`` scales every bin k >= 1.

  Args:
    spectral: ``[K, H, W, 2]`` complex spectral volume.
    times: ``[N]`` frame times in units of the original frames (float).
    num_frames: T, the clip length the spectral volume was computed over.
    magnify: motion magnification factor for the oscillating bins.
  Returns:
    ``[N, H, W, 2]`` float32 displacement in pixels.
  """
  xp = array_module(spectral)
  num_freqs = spectral.shape[0]
  times = xp.asarray(times, xp.float32).reshape(-1)
  weights = _bin_weights(num_freqs, num_frames, xp)
  weights = weights * xp.where(xp.arange(num_freqs) >= 1, magnify, 1.0)
  phase = (2.0 * np.pi / num_frames) * times[:, None] * xp.arange(num_freqs)
  # Re(S e^{i phi}) = Re(S) cos(phi) - Im(S) sin(phi), kept real so the
  # contraction is two real matmuls instead of a complex one.
  cos_basis = xp.cos(phase) * weights
  sin_basis = xp.sin(phase) * weights
  return (xp.einsum("nk,khwc->nhwc", cos_basis, xp.real(spectral).astype(xp.float32))
          - xp.einsum("nk,khwc->nhwc", sin_basis, xp.imag(spectral).astype(xp.float32)))


def to_real_layout(spectral):
  """``[..., K, H, W, 2]`` complex → ``[..., K, H, W, 4]`` real
  ``(Re dx, Re dy, Im dx, Im dy)``."""
  xp = array_module(spectral)
  return xp.concatenate([xp.real(spectral), xp.imag(spectral)], axis=-1)


def from_real_layout(real):
  """``[..., K, H, W, 4]`` real → ``[..., K, H, W, 2]`` complex64."""
  xp = array_module(real)
  real = real.astype(xp.float32)
  return (real[..., :2] + 1j * real[..., 2:]).astype(xp.complex64)


def frequencies_hz(num_freqs: int, num_frames: int, fps: float) -> np.ndarray:
  """``[K]`` frequency of each bin in Hz."""
  return np.arange(num_freqs) * fps / num_frames
