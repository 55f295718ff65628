"""Synthetic scenes: deterministic, physically shaped, exactly rendered."""

import numpy as np
import pytest

from spectral_jax.data import synthetic


@pytest.fixture(scope="module")
def scene():
  return synthetic.make_scene(3, num_frames=48, height=64, width=96, num_freqs=8)


def test_shapes_and_ground_truth(scene):
  assert scene.frames.shape == (48, 64, 96, 3) and scene.frames.dtype == np.uint8
  assert scene.disp_px.shape == (48, 64, 96, 2) and scene.disp_px.dtype == np.float32
  np.testing.assert_array_equal(scene.disp_px[0], 0)
  reference = np.fft.rfft(scene.disp_px.astype(np.float64), axis=0)[:8] / 48
  np.testing.assert_allclose(scene.spectral, reference, atol=1e-5)
  assert np.linalg.norm(scene.disp_px, axis=-1).max() <= 10.0 + 1e-4


def test_deterministic_by_seed(scene):
  again = synthetic.make_scene(3, num_frames=48, height=64, width=96, num_freqs=8)
  np.testing.assert_array_equal(again.frames, scene.frames)
  np.testing.assert_array_equal(again.disp_px, scene.disp_px)
  other = synthetic.make_scene(4, num_frames=48, height=64, width=96, num_freqs=8)
  assert not np.array_equal(other.disp_px, scene.disp_px)


def test_regions_move_and_background_stays(scene):
  magnitude = np.linalg.norm(scene.disp_px, axis=-1).max(0)
  assert magnitude[scene.moving_mask > 0.5].mean() > 1.0
  assert magnitude[scene.moving_mask < 1e-3].max() < 0.05


def test_power_falls_with_frequency():
  power = sum(np.mean(np.abs(synthetic.make_scene(s, render=False, num_freqs=16).spectral) ** 2,
                      axis=(1, 2, 3)) for s in range(6))
  low, mid, high = power[1:4].mean(), power[6:10].mean(), power[12:16].mean()
  assert low > 3 * mid > 9 * high, power


def test_warp_integer_shift_is_exact():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)
  disp = np.zeros((32, 40, 2), np.float32)
  disp[..., 0], disp[..., 1] = 3.0, -2.0
  warped = synthetic.warp_forward(image, disp)
  np.testing.assert_array_equal(warped[5:27, 6:34], image[7:29, 3:31])


def test_warp_then_sample_back_returns_the_picture():
  rng = np.random.default_rng(1)
  image = synthetic.texture(rng, 64, 96).astype(np.float32)
  scene = synthetic.make_scene(5, num_frames=20, height=64, width=96, num_freqs=4, render=False)
  disp = scene.disp_px[7]
  warped = synthetic.warp_forward(image, disp)
  import cv2
  grid_x, grid_y = np.meshgrid(np.arange(96, dtype=np.float32), np.arange(64, dtype=np.float32))
  back = cv2.remap(warped, grid_x + disp[..., 0], grid_y + disp[..., 1], cv2.INTER_LINEAR)
  interior = (slice(8, -8), slice(8, -8))
  assert np.abs(back[interior] - image[interior]).mean() < 2.0


def test_render_false_and_backgrounds():
  fast = synthetic.make_scene(1, num_frames=32, height=32, width=32, render=False)
  assert fast.frames.shape == (1, 32, 32, 3) and fast.disp_px.shape == (32, 32, 32, 2)
  for background in ("photo", "texture"):
    image = synthetic.make_scene(2, num_frames=4, height=32, width=48, num_freqs=2, render=False,
                                 background=background).frames[0]
    assert image.shape == (32, 48, 3) and image.std() > 10
  with pytest.raises(ValueError, match="background"):
    synthetic.make_scene(0, background="sky")
