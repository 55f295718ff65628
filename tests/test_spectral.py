"""Spectral volume and motion texture against closed forms and NumPy float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spectral_jax.motion import spectral


def _cosine_motion(num_frames, height, width, k0, amplitude, phase=0.0):
  t = np.arange(num_frames)[:, None, None]
  dx = amplitude * np.cos(2 * np.pi * k0 * t / num_frames + phase) * np.ones((height, width))
  dy = 0.5 * amplitude * np.sin(2 * np.pi * k0 * t / num_frames) * np.ones((height, width))
  disp = np.stack([dx, dy], -1)
  return (disp - disp[:1]).astype(np.float32)


def test_cosine_gives_half_amplitude_in_its_bin_only():
  amplitude, k0, num_frames = 3.0, 5, 150
  disp = _cosine_motion(num_frames, 4, 6, k0, amplitude)
  volume = spectral.spectral_volume(disp, 16)
  assert volume.shape == (16, 4, 6, 2) and volume.dtype == np.complex64
  np.testing.assert_allclose(np.abs(volume[k0, ..., 0]), amplitude / 2, rtol=1e-5)
  np.testing.assert_allclose(np.abs(volume[k0, ..., 1]), amplitude / 4, rtol=1e-5)
  others = np.delete(np.arange(16), [0, k0])
  assert np.abs(volume[others]).max() < 1e-5
  # D[0] = 0 puts the negative mean in bin 0.
  np.testing.assert_allclose(volume[0, ..., 0].real, -amplitude, rtol=1e-5)


def test_matches_float64_dft_definition():
  rng = np.random.default_rng(0)
  disp = rng.normal(size=(24, 3, 5, 2)).astype(np.float32)
  volume = spectral.spectral_volume(disp, 7)
  t = np.arange(24)
  reference = np.stack([np.tensordot(np.exp(-2j * np.pi * k * t / 24), disp.astype(np.float64),
                                     axes=(0, 0)) / 24 for k in range(7)])
  np.testing.assert_allclose(volume, reference, atol=1e-6)


@pytest.mark.parametrize("num_frames", [16, 15])
def test_round_trip_is_exact_with_all_bins(num_frames):
  rng = np.random.default_rng(1)
  disp = rng.normal(size=(num_frames, 4, 3, 2)).astype(np.float32)
  num_freqs = num_frames // 2 + 1
  volume = spectral.spectral_volume(disp, num_freqs)
  texture = spectral.motion_texture(volume, np.arange(num_frames), num_frames)
  np.testing.assert_allclose(texture, disp, atol=1e-5)
  np.testing.assert_allclose(spectral.spectral_volume(texture, num_freqs), volume, atol=1e-6)


def test_fractional_times_follow_the_cosine_and_velocity_its_derivative():
  num_frames, k0, amplitude = 60, 3, 2.0
  disp = _cosine_motion(num_frames, 2, 2, k0, amplitude, phase=0.4)
  volume = spectral.spectral_volume(disp, 8)
  times = np.linspace(0, 7.3, 41)
  texture = spectral.motion_texture(volume, times, num_frames)
  mean = -amplitude * np.cos(0.4)
  expected = mean + amplitude * np.cos(2 * np.pi * k0 * times / num_frames + 0.4)
  np.testing.assert_allclose(texture[:, 0, 0, 0], expected, atol=1e-5)
  rate = 2 * np.pi * k0 / num_frames
  velocity = spectral.motion_velocity(volume, times, num_frames)
  assert velocity.dtype == np.float32
  np.testing.assert_allclose(velocity[:, 0, 0, 0],
                             -amplitude * rate * np.sin(rate * times + 0.4), atol=1e-5)


def test_animation_texture_starts_at_rest_and_magnify_scales_it():
  """K < T/2 + 1 bins leave D(0) != 0 (the mean bin and truncation); the
  video's texture is magnify * (D(t) - D(0)) whatever K."""
  rng = np.random.default_rng(4)
  disp = rng.normal(size=(30, 3, 2, 2)).astype(np.float32)
  disp[0] = 0
  volume = spectral.spectral_volume(disp, 5)
  times = np.array([0.0, 0.5, 3.0, 29.0])
  raw = spectral.motion_texture(volume, times, 30)
  assert np.abs(raw[0]).max() > 0.1
  for magnify in (1.0, 2.5):
    texture = spectral.animation_texture(volume, times, 30, magnify)
    assert texture.dtype == np.float32
    np.testing.assert_array_equal(texture[0], 0)
    np.testing.assert_allclose(texture, magnify * (raw - raw[:1]), atol=1e-5)


def test_real_layout_round_trip_and_channel_order():
  rng = np.random.default_rng(2)
  volume = (rng.normal(size=(4, 3, 2, 2)) + 1j * rng.normal(size=(4, 3, 2, 2))).astype(np.complex64)
  real = spectral.to_real_layout(volume)
  assert real.shape == (4, 3, 2, 4)
  np.testing.assert_array_equal(real[..., 0], volume[..., 0].real)
  np.testing.assert_array_equal(real[..., 1], volume[..., 1].real)
  np.testing.assert_array_equal(real[..., 2], volume[..., 0].imag)
  np.testing.assert_array_equal(real[..., 3], volume[..., 1].imag)
  np.testing.assert_array_equal(spectral.from_real_layout(real), volume)


def test_jax_versions_jit_and_agree_with_numpy():
  rng = np.random.default_rng(3)
  disp = rng.normal(size=(20, 3, 4, 2)).astype(np.float32)
  volume = spectral.spectral_volume(disp, 6)
  jax_volume = jax.jit(lambda d: spectral.spectral_volume(d, 6))(jnp.asarray(disp))
  assert isinstance(jax_volume, jax.Array)
  np.testing.assert_allclose(jax_volume, volume, atol=1e-5)
  times = np.array([0.0, 1.5, 7.25])
  for function in (spectral.motion_texture, spectral.motion_velocity,
                   spectral.animation_texture):
    result = jax.jit(lambda s, t: function(s, t, 20))(jnp.asarray(volume), jnp.asarray(times))
    assert result.dtype == jnp.float32
    np.testing.assert_allclose(result, function(volume, times, 20), atol=1e-5)
  real = jax.jit(spectral.to_real_layout)(jnp.asarray(volume))
  np.testing.assert_allclose(jax.jit(spectral.from_real_layout)(real), volume)


def test_rejects_too_many_bins():
  with pytest.raises(ValueError, match="num_freqs"):
    spectral.spectral_volume(np.zeros((10, 2, 2, 2), np.float32), 7)


def test_frequencies_in_hz():
  np.testing.assert_allclose(spectral.frequencies_hz(4, 150, 30.0), [0, 0.2, 0.4, 0.6])


def test_a_texture_computed_batch_by_batch_is_the_whole_ones_bit_for_bit():
  """A video rendered batch by batch (`Animator.video`) shows exactly the
  displacements of the whole video's texture."""
  rng = np.random.default_rng(0)
  volume = (rng.normal(size=(16, 40, 64, 2)) + 1j * rng.normal(size=(16, 40, 64, 2))).astype(
      np.complex64)
  times = np.arange(150, dtype=np.float32) / 2
  whole = spectral.animation_texture(volume, times, 150, 2.5)
  batches = [spectral.animation_texture(volume, times[s:s + 8], 150, 2.5)
             for s in range(0, 150, 8)]
  np.testing.assert_array_equal(np.concatenate(batches), whole)
