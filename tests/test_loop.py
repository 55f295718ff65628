"""Seamless loops (`inference/loop.py`, `animator.video_times`) against
closed forms: the self-guidance loss of sinusoids at the exact time N of
the frame after the last, its velocity term, and the times a looping or
slowed video shows."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spectral_jax import platforms
from spectral_jax.inference.animator import video_times
from spectral_jax.inference.loop import loop_closure_error, loop_closure_loss

T, K, H, W = 16, 4, 3, 5
BINS = (1, 3)  # The bins that carry motion; bin 0 is a constant offset.


def _sinusoids(seed: int):
  """Per pixel and axis, ``D(t) = c + sum_k A_k cos(2 pi k t / T + phi_k)``
  over `BINS`: ``(offset [H, W, 2], amplitude [2, H, W, 2], phase [...])``
  in px and radians, float64."""
  rng = np.random.default_rng(seed)
  return (rng.uniform(-1, 1, (H, W, 2)), rng.uniform(0.2, 2.0, (len(BINS), H, W, 2)),
          rng.uniform(-np.pi, np.pi, (len(BINS), H, W, 2)))


def _spectral(offset, amplitude, phase) -> np.ndarray:
  """``[K, H, W, 2]`` complex: ``S_0 = c`` and ``S_k = A_k e^{i phi_k} / 2``
  (`spectral.spectral_volume`'s convention, rfft / T)."""
  spectral = np.zeros((K, H, W, 2), np.complex128)
  spectral[0] = offset
  for i, k in enumerate(BINS):
    spectral[k] = amplitude[i] * np.exp(1j * phase[i]) / 2
  return spectral


def _closed_form_terms(offset, amplitude, phase, n: int) -> tuple[float, float]:
  """``(mean |D(N) - D(0)|, mean |D'(N) - D'(0)|)`` in px and px per frame."""
  def position(t):
    return offset + sum(amplitude[i] * np.cos(2 * np.pi * k * t / T + phase[i])
                        for i, k in enumerate(BINS))

  def velocity(t):
    return sum(-amplitude[i] * (2 * np.pi * k / T) * np.sin(2 * np.pi * k * t / T + phase[i])
               for i, k in enumerate(BINS))

  return (np.abs(position(n) - position(0)).mean(),
          np.abs(velocity(n) - velocity(0)).mean())


def _normalized(spectral, scales, power) -> np.ndarray:
  """The real layout ``(Re dx, Re dy, Im dx, Im dy)`` normalized as the
  networks see it: ``sign(x / c_k) |x / c_k|^power``."""
  real = np.concatenate([spectral.real, spectral.imag], axis=-1) / scales[:, None, None, None]
  return np.sign(real) * np.abs(real) ** power


@pytest.mark.parametrize("loop_frames", [10, 13])
def test_loop_loss_is_the_closure_of_position_and_velocity_at_time_n(loop_frames):
  """Two examples (the loss sums over the batch) of two sinusoids per
  pixel, normalized with the signed square root: the loss is their closed
  form at time N. Guiding D(N - 1), or dropping the velocity term, is off
  by tens of percents."""
  scales, power = np.array([0.5, 2.0, 1.0, 3.0]), 0.5
  examples = [_sinusoids(seed) for seed in (0, 1)]
  normalized = np.stack([_normalized(_spectral(*e), scales, power) for e in examples])
  loss = loop_closure_loss(jnp.asarray(normalized, jnp.float32), scales, power,
                           num_frames=T, loop_frames=loop_frames)
  terms = np.sum([_closed_form_terms(*e, loop_frames) for e in examples], axis=0)
  np.testing.assert_allclose(float(loss), terms.sum(), rtol=1e-5)
  # The two terms are of the same order here, so each one counts.
  assert np.all(terms > 0.2 * terms.sum()), terms


def test_a_motion_of_period_n_closes_exactly():
  """Bins whose period divides N (k N / T an integer) come back at time N:
  loss and closure error are 0; a bin that does not divide it is not."""
  offset, amplitude, phase = _sinusoids(2)
  spectral = _spectral(offset, amplitude, phase)  # Bins 1 and 3 of T = 16 frames.
  normalized = _normalized(spectral, np.ones(K), 1.0)[None]
  closing = float(loop_closure_loss(jnp.asarray(normalized, jnp.float32), np.ones(K), 1.0,
                                    num_frames=T, loop_frames=T))
  assert closing < 1e-5
  assert loop_closure_error(spectral, num_frames=T, loop_frames=T) < 1e-6
  error = loop_closure_error(spectral, num_frames=T, loop_frames=8)
  np.testing.assert_allclose(error, _closed_form_terms(offset, amplitude, phase, 8)[0],
                             rtol=1e-5)


@pytest.mark.parametrize("num_frames, slowmo, loop, expected", [
    (5, 1.0, False, [0, 1, 2, 3, 4]),
    (5, 1.0, True, [0, 1, 2, 3, 4]),
    (4, 2.0, False, [0, 0.5, 1, 1.5, 2, 2.5, 3]),
    # A loop's next frame would be time N = 4, which is time 0 again.
    (4, 2.0, True, [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5]),
    (2, 3.0, True, [0, 1 / 3, 2 / 3, 1, 4 / 3, 5 / 3]),
    (3, 2.5, False, [0, 0.4, 0.8, 1.2, 1.6, 2.0]),
    (1, 2.0, False, [0]),
])
def test_video_times(num_frames, slowmo, loop, expected):
  times = video_times(num_frames, slowmo=slowmo, loop=loop)
  assert times.dtype == np.float32
  np.testing.assert_allclose(times, expected, rtol=1e-6, atol=1e-7)


def test_guided_ddim_is_unrolled_only_on_a_cpu():
  """Loss-guided sampling runs one compiled step per call on a CPU only
  (`platforms`): the platform of the arrays, not the default backend."""
  assert platforms.platform_of({"w": jnp.ones(2)}) == jax.devices()[0].platform
  assert [platforms.unroll_guided_ddim(p) for p in ("cpu", "gpu", "tpu")] == [True, False, False]
