"""Interactive modal dynamics against closed forms and exact per-mode maps."""

from __future__ import annotations

import numpy as np
import pytest

from spectral_jax.inference import dynamics
from spectral_jax.inference.dynamics import Poke

FPS = 30.0
ALPHA, BETA = 0.4, 0.08  # The paper's Rayleigh damping.


def _single_mode_volume(shape, height=3, width=4):
  """``[2, H, W, 2]``: bin 1 equal to the complex vector ``shape`` everywhere."""
  volume = np.zeros((2, height, width, 2), np.complex64)
  volume[1] = shape
  return volume


def _energy_after(omega, gamma, h, steps):
  """Energy ratio of one mode after ``steps`` module Euler steps from (q, v) = (1, 0)."""
  q, v = np.ones(1, np.complex128), np.zeros(1, np.complex128)
  for _ in range(steps):
    q, v = dynamics.euler_step(q, v, omega, gamma, h)
  return float((abs(v[0]) ** 2 + omega ** 2 * abs(q[0]) ** 2) / omega ** 2)


def _frame_map_norms(omega, gamma, substeps):
  """``[M]`` energy-norm (``diag(omega, 1)``) 2-norm of each mode's Euler map
  over one output frame, built by stepping the basis states with the module."""
  h = 1.0 / (FPS * substeps)
  q = np.stack([np.ones_like(omega), np.zeros_like(omega)]).astype(np.complex128)
  v = np.stack([np.zeros_like(omega), np.ones_like(omega)]).astype(np.complex128)
  for _ in range(substeps):
    q, v = dynamics.euler_step(q, v, omega, gamma, h)
  frame_map = np.stack([q.real, v.real]).transpose(2, 0, 1)  # [M, state, basis]
  scale = np.stack([omega, np.ones_like(omega)], -1)  # [M, 2]
  scaled = scale[:, :, None] * frame_map / scale[:, None, :]
  return np.linalg.norm(scaled, 2, axis=(1, 2))


def test_single_mode_matches_damped_impulse_response_at_first_order():
  # One mode at 1 Hz (T = fps = 30): underdamped, gamma = 3.56 /s.
  shape = (0.6 + 0.8j) * np.array([1.0, 0.5])
  volume = _single_mode_volume(shape)
  poke = Poke(x=1.0, y=1.0, dx=2.0, dy=-1.0, frame=2.5)
  omega = 2 * np.pi
  gamma = ALPHA + BETA * omega ** 2
  damped = np.sqrt(omega ** 2 - gamma ** 2 / 4)
  # Kick from the stated model: c f = conj(S) . d / (|S|^2 / omega).
  kick = omega * (np.conj(shape) @ np.array([2.0, -1.0])) / np.sum(np.abs(shape) ** 2)
  t = (np.arange(60) - poke.frame) / FPS
  decay = kick * np.exp(-gamma * t / 2)
  exact = np.where(t >= 0, decay * np.sin(damped * t) / damped, 0)
  exact_velocity = np.where(
      t >= 0, decay * (np.cos(damped * t) - gamma / (2 * damped) * np.sin(damped * t)), 0)
  errors = []
  for substeps in (100, 200, 400):
    response = dynamics.simulate(volume, [poke], num_output_frames=60, fps=FPS, num_frames=30,
                                 substeps=substeps)
    errors.append(np.abs(response.modal_coordinates[:, 0] - exact).max() / np.abs(exact).max())
    exact_energy = (np.abs(exact_velocity) ** 2 + omega ** 2 * np.abs(exact) ** 2) / 2
    np.testing.assert_allclose(response.energy(), exact_energy,
                               atol=5 * errors[-1] * exact_energy.max())
    np.testing.assert_allclose(response.displacement[:, 1, 1],
                               np.real(shape[None] * exact[:, None]),
                               atol=errors[-1] * np.abs(exact).max() * np.abs(shape).max() + 1e-6)
  # Forward Euler's global error is O(h): about 0.2 / substeps of the peak here.
  assert errors[0] < 2.5e-3
  np.testing.assert_allclose(errors[0] / errors[1], 2.0, rtol=0.05)
  np.testing.assert_allclose(errors[1] / errors[2], 2.0, rtol=0.05)


@pytest.mark.parametrize("omega", [10.0, 40.0], ids=["underdamped", "overdamped"])
def test_euler_stability_bound_is_sharp(omega):
  gamma = ALPHA + BETA * omega ** 2
  if gamma < 2 * omega:
    expected = gamma / omega ** 2
  else:
    expected = 2 / (gamma / 2 + np.sqrt(gamma ** 2 / 4 - omega ** 2))
  bound = dynamics.euler_step_bound(np.array([omega]), np.array([gamma]))
  np.testing.assert_allclose(bound, expected, rtol=1e-12)
  assert _energy_after(omega, gamma, 0.9 * bound, 300) < 1e-3
  assert _energy_after(omega, gamma, 1.1 * bound, 300) > 1e3


def test_bound_over_modes_is_the_smallest():
  omega = dynamics.modal_frequencies(8, 32, FPS)
  np.testing.assert_allclose(omega, 2 * np.pi * np.arange(8) * FPS / 32)
  gamma = dynamics.rayleigh_damping(omega[1:], ALPHA, BETA)
  each = [dynamics.euler_step_bound(omega[k:k + 1], gamma[k - 1:k]) for k in range(1, 8)]
  assert dynamics.euler_step_bound(omega[1:], gamma) == min(each)


@pytest.mark.parametrize("num_frames, num_freqs, expected", [(150, 16, 684), (32, 8, 114)])
def test_substeps_make_every_frame_lose_energy(num_frames, num_freqs, expected):
  omega = dynamics.modal_frequencies(num_freqs, num_frames, FPS)[1:]
  gamma = dynamics.rayleigh_damping(omega, ALPHA, BETA)
  substeps = dynamics.substeps_per_frame(omega, gamma, FPS)
  assert substeps == expected
  # Over one frame no state of any mode gains energy, so E falls for any
  # spectral volume and pokes...
  assert _frame_map_norms(omega, gamma, substeps).max() < 1
  # ...while 80% of the leading-order energy bound's sub-steps lets the
  # lowest mode gain: the bound is tight, and the stability bound alone
  # (1 and 3 sub-steps here) is far from enough.
  too_few = int(0.8 / (FPS * dynamics.frame_energy_step_bound(gamma, FPS)))
  assert _frame_map_norms(omega, gamma, too_few)[0] > 1


def test_poke_moves_its_blob_first_along_the_push():
  # Three Gaussian blob modes (sigma 3 px) of different frequencies and
  # phases; bin 1's phase 0.4 pi would make a poke without conj move
  # backwards (cos 0.8 pi < 0).
  height, width = 40, 40
  rows, cols = np.mgrid[:height, :width]
  volume = np.zeros((8, height, width, 2), np.complex64)
  blobs = {1: (10, 12, 0.4 * np.pi, (1.0, 0.3)), 2: (30, 28, 0.1, (0.2, 1.0)),
           4: (28, 8, -1.0, (1.0, -1.0))}
  for k, (x, y, phase, direction) in blobs.items():
    gauss = np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * 3.0 ** 2))
    volume[k] = 2.0 * np.exp(1j * phase) * gauss[..., None] * np.array(direction)
  push = np.array([1.5, -1.0])
  poke = Poke(x=10.4, y=12.3, dx=push[0], dy=push[1], frame=1.0)
  response = dynamics.simulate(volume, [poke], num_output_frames=40, fps=FPS, num_frames=32)
  peak = np.linalg.norm(response.displacement, axis=-1).max(0)  # [H, W]
  row, col = np.unravel_index(np.argmax(peak), peak.shape)
  assert abs(col - poke.x) <= 1 and abs(row - poke.y) <= 1
  assert peak[28, 30] < 1e-3 * peak.max() and peak[8, 28] < 1e-3 * peak.max()
  # The poked pixel first moves along the push, by at most |d|.
  along = response.displacement[2:7, 12, 10] @ push
  assert np.all(along > 0)
  assert peak.max() <= np.linalg.norm(push)


def test_force_reads_the_mode_shape_bilinearly():
  # A bilinear amplitude is interpolated exactly: S(x, y) = (1 + x + 2y) e.
  height, width = 6, 9
  rows, cols = np.mgrid[:height, :width]
  direction = np.exp(0.2j) * np.array([0.3, 1.0])
  volume = np.zeros((2, height, width, 2), np.complex64)
  volume[1] = (1 + cols + 2 * rows)[..., None] * direction
  poke = Poke(x=5.5, y=2.25, dx=0.0, dy=1.0, frame=3.0)
  response = dynamics.simulate(volume, [poke], num_output_frames=5, fps=FPS, num_frames=30,
                               strength=2.0)
  shape = (1 + 5.5 + 2 * 2.25) * direction
  omega = 2 * np.pi
  expected = 2.0 * omega * np.conj(shape)[1] / np.sum(np.abs(shape) ** 2)
  np.testing.assert_allclose(response.modal_velocities[3, 0], expected, rtol=1e-6)


def _decaying_volume(rng, num_freqs, height=8, width=10):
  """Random complex volume whose amplitude falls as 1/k^2, like real motion."""
  shape = (num_freqs, height, width, 2)
  volume = rng.normal(size=shape) + 1j * rng.normal(size=shape)
  bins = np.maximum(np.arange(num_freqs), 1)[:, None, None, None]
  return (volume / bins ** 2).astype(np.complex64)


@pytest.mark.parametrize("num_frames, num_freqs", [(150, 16), (32, 8)])
def test_energy_falls_after_the_last_poke(num_frames, num_freqs):
  volume = _decaying_volume(np.random.default_rng(num_frames), num_freqs)
  pokes = [Poke(2.0, 3.0, 1.0, 0.5, frame=1.5), Poke(6.7, 4.2, -0.5, 1.0, frame=4.2)]
  response = dynamics.simulate(volume, pokes, num_output_frames=160, fps=FPS,
                               num_frames=num_frames)
  energy = response.energy()
  assert np.all(response.displacement[:2] == 0) and energy[0] == 0
  assert np.abs(response.displacement[2]).max() > 0
  assert np.all(np.diff(energy[5:]) < 0)


def test_lowest_mode_alone_loses_energy_every_frame():
  # The hardest case for Euler: only the lowest, least damped mode, whose
  # turning points gain energy when sub-steps are too few.
  volume = _decaying_volume(np.random.default_rng(1), 16)
  volume[2:] = 0
  response = dynamics.simulate(volume, [Poke(3.0, 3.0, 1.0, 1.0)], num_output_frames=160,
                               fps=FPS, num_frames=150)
  assert np.all(np.diff(response.energy()) < 0)


def test_pokes_superpose_and_shift_in_time():
  volume = _decaying_volume(np.random.default_rng(2), 8)
  first, second = Poke(2.0, 3.0, 1.0, 0.5, frame=1.5), Poke(6.7, 4.2, -0.5, 1.0, frame=4.2)
  same_time = Poke(1.0, 6.0, 0.3, -0.2, frame=1.5)

  def run(pokes, frames=30):
    return dynamics.simulate(volume, pokes, num_output_frames=frames, fps=FPS, num_frames=32)

  both = run([first, second, same_time])
  parts = [run([poke]) for poke in (first, second, same_time)]
  np.testing.assert_allclose(both.modal_coordinates,
                             sum(part.modal_coordinates for part in parts), rtol=1e-10, atol=1e-14)
  np.testing.assert_allclose(both.displacement, sum(part.displacement for part in parts),
                             atol=1e-5 * np.abs(both.displacement).max())
  # A poke 2 frames before the clip starts is a poke at frame 0 seen 2 frames on.
  early = run([Poke(2.0, 3.0, 1.0, 0.5, frame=-2.0)])
  late = run([Poke(2.0, 3.0, 1.0, 0.5, frame=0.0)], frames=32)
  np.testing.assert_allclose(early.modal_coordinates, late.modal_coordinates[2:], rtol=1e-12)
  # A poke lands on the nearest sub-step: 0.6 of one after frame 1 is 1.
  substep = 1 / both.substeps
  nearest = run([Poke(2.0, 3.0, 1.0, 0.5, frame=1 + 0.6 * substep)])
  exact = run([Poke(2.0, 3.0, 1.0, 0.5, frame=1 + substep)])
  np.testing.assert_array_equal(nearest.modal_coordinates, exact.modal_coordinates)


@pytest.mark.parametrize("poke, kwargs, message", [
    (Poke(-0.1, 1.0, 1.0, 0.0), {}, "outside"),
    (Poke(3.01, 1.0, 1.0, 0.0), {}, "outside"),
    (Poke(1.0, 5.0, 1.0, 0.0), {}, "outside"),
    (Poke(0.0, 0.0, 1.0, 0.0), {}, "nothing moves"),
    (Poke(1.0, 1.0, 1.0, 0.0), {"num_output_frames": 0}, "num_output_frames"),
    (Poke(1.0, 1.0, 1.0, 0.0), {"fps": 0.0}, "fps"),
    (Poke(1.0, 1.0, 1.0, 0.0), {"alpha": -0.1}, "alpha"),
    (Poke(1.0, 1.0, 1.0, 0.0), {"beta": -0.1}, "beta"),
    (Poke(1.0, 1.0, 1.0, 0.0), {"substeps": 1, "alpha": 0.0, "beta": 0.0}, "unstable"),
])
def test_bad_input_raises(poke, kwargs, message):
  volume = _single_mode_volume(np.array([1.0, 0.0]), height=5, width=4)
  volume[:, 0, 0] = 0  # A still pixel.
  options = dict(num_output_frames=10, fps=FPS, num_frames=30) | kwargs
  with pytest.raises(ValueError, match=message):
    dynamics.simulate(volume, [poke], **options)


def test_a_single_bin_is_no_mode():
  with pytest.raises(ValueError, match="K"):
    dynamics.simulate(np.ones((1, 4, 4, 2), np.complex64), [Poke(1.0, 1.0, 1.0, 0.0)],
                      num_output_frames=5, fps=FPS, num_frames=30)
