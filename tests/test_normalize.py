"""Frequency-adaptive normalization: round trip and streaming percentiles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spectral_jax.motion import normalize as norm


def _volumes(rng, count, num_freqs=6):
  # Scales spread over decades, as real spectra fall with frequency.
  scale = np.logspace(1, -3, num_freqs)[:, None, None, None]
  return [(rng.standard_t(3, size=(num_freqs, 9, 11, 4)) * scale).astype(np.float32)
          for _ in range(count)]


def test_round_trip_to_float32_rounding():
  rng = np.random.default_rng(0)
  real = _volumes(rng, 1)[0]
  scales = np.abs(real).reshape(6, -1).max(1).astype(np.float32) / 3
  normalized = norm.normalize(real, scales)
  assert normalized.dtype == np.float32
  np.testing.assert_allclose(norm.denormalize(normalized, scales), real, rtol=2e-6, atol=1e-12)
  expected = np.sign(real) * np.sqrt(np.abs(real / scales[:, None, None, None]))
  np.testing.assert_allclose(normalized, expected, rtol=1e-6)


def test_batched_and_jax():
  rng = np.random.default_rng(1)
  batch = np.stack(_volumes(rng, 3))
  scales = np.linspace(0.5, 2, 6).astype(np.float32)
  normalized = jax.jit(norm.normalize)(jnp.asarray(batch), jnp.asarray(scales))
  np.testing.assert_allclose(normalized, norm.normalize(batch, scales), rtol=1e-6)
  np.testing.assert_allclose(jax.jit(norm.denormalize)(normalized, scales), batch,
                             rtol=2e-6, atol=1e-12)


@pytest.mark.parametrize("q", [50.0, 95.0, 97.0, 99.9])
def test_streaming_percentile_equals_numpy_on_whole_set(q):
  rng = np.random.default_rng(2)
  volumes = _volumes(rng, 7)
  accumulator = norm.PercentileAccumulator.zeros(6)
  for volume in volumes:
    accumulator.update(volume)
  whole = np.abs(np.stack(volumes)).transpose(1, 0, 2, 3, 4).reshape(6, -1)
  np.testing.assert_allclose(accumulator.percentile(q), np.percentile(whole, q, axis=1), rtol=5e-4)


def test_merged_accumulators_equal_one_pass_and_survive_saving(tmp_path):
  rng = np.random.default_rng(3)
  volumes = _volumes(rng, 4)
  whole = norm.PercentileAccumulator.zeros(6)
  whole.update(np.stack(volumes))
  first, second = norm.PercentileAccumulator.zeros(6), norm.PercentileAccumulator.zeros(6)
  for volume in volumes[:1]:
    first.update(volume)
  for volume in volumes[1:]:
    second.update(volume)
  second.save(tmp_path / "h.npz")
  merged = first.merge(norm.PercentileAccumulator.load(tmp_path / "h.npz"))
  np.testing.assert_array_equal(merged.counts, whole.counts)
  np.testing.assert_array_equal(merged.percentile(97), whole.percentile(97))


def test_stats_from_accumulator_guard_all_zero_bins_and_round_trip_json(tmp_path):
  accumulator = norm.PercentileAccumulator.zeros(2)
  volume = np.zeros((2, 4, 4, 4), np.float32)
  volume[1] = 2.0
  accumulator.update(volume)
  stats = norm.NormalizationStats.from_accumulator(accumulator, 97)
  assert stats.scales[0] == pytest.approx(norm.MIN_SCALE)
  assert stats.scales[1] == pytest.approx(2.0, rel=1e-3)
  assert np.isfinite(norm.normalize(volume, stats.scales)).all()
  stats.save(tmp_path / "n.json")
  loaded = norm.NormalizationStats.load(tmp_path / "n.json")
  np.testing.assert_array_equal(loaded.scales, stats.scales)
  assert loaded.percentile == 97 and loaded.num_values == 64


def test_plain_scaling_round_trip():
  rng = np.random.default_rng(3)
  real = rng.normal(size=(2, 3, 4, 5, 4)).astype(np.float32)
  stats = norm.NormalizationStats.image_size(3, width=64, height=48)
  normalized = norm.normalize(real, stats.scales, stats.power)
  np.testing.assert_allclose(normalized, real / 64.0, rtol=1e-6)
  np.testing.assert_allclose(norm.denormalize(normalized, stats.scales, stats.power), real,
                             rtol=1e-5)
  assert norm.NormalizationStats.from_json(stats.to_json()).power == 1.0
