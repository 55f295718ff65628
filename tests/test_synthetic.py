"""Synthetic scenes: deterministic, physically shaped, exactly rendered."""

import cv2
import numpy as np
import pytest

from spectral_jax.data import synthetic

T, H, W, K = 48, 64, 96, 8


@pytest.fixture(scope="module")
def scene():
  return synthetic.make_scene(3, num_frames=T, height=H, width=W, num_freqs=K)


def _grid(height, width):
  return np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))


def _sample(image, x, y):
  """Bilinear ``image`` at float positions, edges reflected."""
  return cv2.remap(image, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def test_shapes_dtypes_and_ground_truth(scene):
  assert scene.frames.shape == (T, H, W, 3) and scene.frames.dtype == np.uint8
  assert scene.disp_px.shape == (T, H, W, 2) and scene.disp_px.dtype == np.float32
  assert scene.spectral.shape == (K, H, W, 2) and scene.spectral.dtype == np.complex64
  assert scene.moving_mask.shape == (H, W) and scene.moving_mask.dtype == np.float32
  assert 0 <= scene.moving_mask.min() and scene.moving_mask.max() <= 1
  assert scene.fps == 30.0
  np.testing.assert_array_equal(scene.disp_px[0], 0)
  reference = np.fft.rfft(scene.disp_px.astype(np.float64), axis=0)[:K] / T
  np.testing.assert_allclose(scene.spectral, reference, atol=1e-5)


def test_deterministic_by_seed(scene):
  again = synthetic.make_scene(3, num_frames=T, height=H, width=W, num_freqs=K)
  for name in ("frames", "disp_px", "spectral", "moving_mask"):
    np.testing.assert_array_equal(getattr(again, name), getattr(scene, name), err_msg=name)
  other = synthetic.make_scene(4, num_frames=T, height=H, width=W, num_freqs=K)
  assert not np.array_equal(other.disp_px, scene.disp_px)
  assert not np.array_equal(other.frames[0], scene.frames[0])


def test_amplitude_bound_and_smoothness():
  for seed in range(4):
    disp = synthetic.make_scene(seed, num_frames=T, height=H, width=W, num_freqs=K,
                                max_amplitude_px=2.5, render=False).disp_px
    assert np.linalg.norm(disp, axis=-1).max() <= 2.5 * (1 + 1e-6)
    # |grad D| stays below 0.5 px/px: the forward map cannot fold.
    jacobian = np.stack(np.gradient(disp, axis=(1, 2)), -1)  # [T, H, W, 2, 2]
    assert np.linalg.norm(jacobian, ord=2, axis=(-2, -1)).max() < 0.5


def test_regions_move_and_background_stays(scene):
  swing = np.linalg.norm(scene.disp_px, axis=-1).max(0)  # [H, W] px
  moving, still = scene.moving_mask > 0.5, scene.moving_mask == 0
  assert moving.mean() > 0.05 and still.mean() > 0.1
  assert np.percentile(swing[moving], 90) > 1.0
  assert swing[still].max() == 0
  # Where nothing moves the frames are the picture itself, bit for bit.
  np.testing.assert_array_equal(scene.frames[:, still], np.broadcast_to(
      scene.frames[0][still], scene.frames[:, still].shape))
  assert np.abs(scene.frames[1:, moving].astype(int) - scene.frames[0][moving]).mean() > 1.0


def test_power_falls_with_frequency():
  power = sum(np.mean(np.abs(synthetic.make_scene(
      seed, height=48, width=64, render=False).spectral) ** 2, axis=(1, 2, 3))
              for seed in range(8))
  # Bins of 0.2 Hz: 0.2-1 Hz, 1.2-2 Hz, 2.2-3 Hz.
  low, mid, high = power[1:6].mean(), power[6:11].mean(), power[11:16].mean()
  assert low > mid > high and low > 4 * high, power


def test_warp_integer_shift_is_exact():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
  disp = np.broadcast_to(np.float32([3.0, -2.0]), (32, 40, 2))
  warped = synthetic.warp_forward(image, disp)
  assert warped.dtype == np.uint8
  # Output y shows input y - (3, -2).
  np.testing.assert_array_equal(warped[5:27, 6:34], image[7:29, 3:31])


def test_warp_inverts_the_forward_map():
  disp = synthetic.make_scene(5, num_frames=20, height=H, width=W, num_freqs=4,
                              render=False).disp_px[11]
  assert np.abs(disp).max() > 1.0
  grid_x, grid_y = _grid(H, W)
  # Warping the coordinates gives, at each y, the source x of that pixel.
  source = synthetic.warp_forward(np.stack([grid_x, grid_y], -1), disp)
  moved = source + _sample(disp, source[..., 0], source[..., 1])
  interior = (slice(4, -4), slice(4, -4))
  np.testing.assert_allclose(moved[interior], np.stack([grid_x, grid_y], -1)[interior],
                             atol=0.05)


def test_warp_then_sample_back_returns_the_picture():
  rng = np.random.default_rng(1)
  image = cv2.GaussianBlur(synthetic.texture(rng, H, W).astype(np.float32), (0, 0), 2.0)
  disp = synthetic.make_scene(5, num_frames=20, height=H, width=W, num_freqs=4,
                              render=False).disp_px[11]
  warped = synthetic.warp_forward(image, disp)
  grid_x, grid_y = _grid(H, W)
  back = _sample(warped, grid_x + disp[..., 0], grid_y + disp[..., 1])
  interior = (slice(6, -6), slice(6, -6))
  error = np.abs(back[interior] - image[interior])
  # Two bilinear resamplings of a picture with std ~40 grey levels.
  assert error.mean() < 0.5 and error.max() < 5.0


def test_render_false_gives_one_frame_and_the_same_motion(scene):
  fast = synthetic.make_scene(3, num_frames=T, height=H, width=W, num_freqs=K, render=False)
  assert fast.frames.shape == (1, H, W, 3)
  np.testing.assert_array_equal(fast.frames[0], scene.frames[0])
  np.testing.assert_array_equal(fast.disp_px, scene.disp_px)
  tiny = synthetic.make_scene(1, num_frames=32, height=32, width=32, render=False)
  assert tiny.frames.shape == (1, 32, 32, 3) and tiny.spectral.shape == (16, 32, 32, 2)


def test_backgrounds():
  for background in ("photo", "texture"):
    image = synthetic.make_scene(2, num_frames=4, height=40, width=56, num_freqs=2,
                                 render=False, background=background).frames[0]
    assert image.shape == (40, 56, 3) and image.std() > 10
  rng = np.random.default_rng(7)
  for make in (synthetic.photo, synthetic.texture):
    picture = make(rng, 50, 70)
    assert picture.shape == (50, 70, 3) and picture.dtype == np.uint8 and picture.std() > 5
  np.testing.assert_array_equal(synthetic.photo(np.random.default_rng(9), 30, 40),
                                synthetic.photo(np.random.default_rng(9), 30, 40))
  with pytest.raises(ValueError, match="background"):
    synthetic.make_scene(0, background="sky")
