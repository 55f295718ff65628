"""The spectral volume: temporal Fourier coefficients of per-pixel motion.

Conventions (docs/DESIGN.md §1), shared by every module:

* displacement ``disp_px`` ``[T, H, W, 2]`` float, ``(dx, dy)`` in pixels from
  the reference frame 0 to frame ``t`` (so ``disp_px[0] == 0``);
* spectral volume ``S`` ``[K, H, W, 2]`` complex64,
  ``S_k = (1/T) sum_t D_t exp(-2 pi i k t / T)`` = ``rfft(D, axis=0)[:K] / T``;
  bin ``k`` oscillates at ``k * fps / T`` Hz;
* real layout for networks ``[K, H, W, 4]`` = ``(Re dx, Re dy, Im dx, Im dy)``.

Every function here takes NumPy or JAX arrays and returns the same kind, so
one implementation serves the data pipeline (NumPy) and jitted models (JAX).
"""

from __future__ import annotations

import numpy as np


def array_module(x):
  """`jax.numpy` for JAX arrays and tracers, `numpy` for everything else."""
  if type(x).__module__.startswith(("jax", "jaxlib")):
    import jax.numpy as jnp  # Lazily: `prepare`'s workers compute without JAX.
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
  real = _matmul(xp, cos_basis, flat).reshape((num_freqs,) + disp_px.shape[1:])
  imag = _matmul(xp, sin_basis, flat).reshape((num_freqs,) + disp_px.shape[1:])
  return (real + 1j * imag).astype(xp.complex64)


def bin_weights(num_freqs: int, num_frames: int, xp=np):
  """Weights of bins in the inverse transform: 1 for DC, 2 for bins whose
  conjugate twin is implied, 1 for the Nyquist bin (T even) that has none."""
  weights = np.full(num_freqs, 2.0, np.float32)
  weights[0] = 1.0
  if num_frames % 2 == 0 and num_freqs == num_frames // 2 + 1:
    weights[-1] = 1.0
  return xp.asarray(weights)


def _matmul(xp, a, b):
  """``a @ b`` in full float32: on GPUs and TPUs JAX's default precision
  rounds float32 matmul inputs (TF32 / bfloat16), ~1e-3 relative here."""
  if xp is np:
    return a @ b
  import jax
  return xp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def _fourier_sum(spectral, cos_basis, sin_basis):
  """``Re(sum_k S_k (cos + i sin)_{nk})`` = ``[N, H, W, 2]`` float32 for
  ``[N, K]`` bases: two real matmuls instead of a complex one.

  With NumPy, one row (time) at a time: a matrix product's rounding depends
  on how many rows it has, and a video rendered batch by batch must show
  the displacements of the whole video's texture bit for bit."""
  xp = array_module(spectral)
  shape = spectral.shape
  re = xp.real(spectral).astype(xp.float32).reshape(shape[0], -1)
  im = xp.imag(spectral).astype(xp.float32).reshape(shape[0], -1)
  cos_basis, sin_basis = cos_basis.astype(xp.float32), sin_basis.astype(xp.float32)
  if xp is np:
    real = np.stack([c @ re - s @ im for c, s in zip(cos_basis, sin_basis)]).reshape(
        (len(cos_basis), re.shape[1]))
  else:
    real = _matmul(xp, cos_basis, re) - _matmul(xp, sin_basis, im)
  return real.reshape((cos_basis.shape[0],) + shape[1:])


def _phases(spectral, times, num_frames: int):
  """Bin weights ``[K]`` and phases ``2 pi k t / T`` ``[N, K]`` (float32)."""
  xp = array_module(spectral)
  num_freqs = spectral.shape[0]
  times = xp.asarray(times, xp.float32).reshape(-1)
  weights = bin_weights(num_freqs, num_frames, xp)
  phase = (2.0 * np.pi / num_frames) * times[:, None] * xp.arange(num_freqs, dtype=xp.float32)
  return weights, phase


def motion_texture(spectral, times, num_frames: int):
  """Displacement at any real times from a spectral volume.

  ``D(t) = Re(S_0) + 2 Re(sum_{k>=1} S_k exp(2 pi i k t / T))``: a fractional
  ``t`` gives exact slow motion. With K < T/2 + 1 bins D(0) is not exactly
  0; `animation_texture` is what a video shows.

  Args:
    spectral: ``[K, H, W, 2]`` complex spectral volume.
    times: ``[N]`` frame times in units of the original frames (float).
    num_frames: T, the clip length the spectral volume was computed over.
  Returns:
    ``[N, H, W, 2]`` float32 displacement in pixels.
  """
  weights, phase = _phases(spectral, times, num_frames)
  xp = array_module(spectral)
  return _fourier_sum(spectral, xp.cos(phase) * weights, xp.sin(phase) * weights)


def motion_velocity(spectral, times, num_frames: int):
  """``dD/dt`` ``[N, H, W, 2]`` float32 of `motion_texture`, in pixels per
  frame, exactly (the derivative of each Fourier term)."""
  weights, phase = _phases(spectral, times, num_frames)
  xp = array_module(spectral)
  rate = weights * (2.0 * np.pi / num_frames) * xp.arange(spectral.shape[0], dtype=xp.float32)
  # d/dt Re(S e^{i phi}) = Re(S i phi' e^{i phi}) = Re(S (-sin + i cos)) phi'.
  return _fourier_sum(spectral, -xp.sin(phase) * rate, xp.cos(phase) * rate)


def animation_texture(spectral, times, num_frames: int, magnify: float = 1.0):
  """What a video shows: ``magnify * (D(t) - D(0))`` ``[N, H, W, 2]`` px.

  Every video starts at rest on the picture (D = 0 at t = 0 whatever K
  and ``magnify``), and magnification multiplies the whole displacement.
  """
  xp = array_module(spectral)
  times = xp.concatenate([xp.zeros((1,), xp.float32),
                          xp.asarray(times, xp.float32).reshape(-1)])
  texture = motion_texture(spectral, times, num_frames)
  return magnify * (texture[1:] - texture[:1])


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
