"""Synthetic scenes: deterministic, physically shaped, exactly rendered."""

import inspect
from pathlib import Path

import cv2
import numpy as np
import pytest

from spectral_jax import config_base
from spectral_jax.data import synthetic
from spectral_jax.data.video import parse_size

T, H, W, K = 48, 64, 96, 8
DATA_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "data.py"


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


def test_amplitude_bound_and_layer_smoothness():
  for seed in range(4):
    scene = synthetic.make_scene(seed, num_frames=T, height=H, width=W, num_freqs=K,
                                 max_amplitude_px=2.5, render=False)
    assert np.linalg.norm(scene.disp_px, axis=-1).max() <= 2.5 * (1 + 1e-6)
    # Each layer's field stretches by < 0.5 px/px: its forward map cannot fold.
    # (The picture's field D is sharp at layer edges, as real motion is.)
    layers = scene.layers
    for r in range(len(layers.alphas)):
      field = layers.motion[r][:, None, None, :] * layers.shapes[r][None, ..., None]
      jacobian = np.stack(np.gradient(field, axis=(1, 2)), -1)  # [T, H, W, 2, 2]
      assert np.linalg.norm(jacobian, ord=2, axis=(-2, -1)).max() < 0.5


def _far_from(mask, distance_px):
  """Pixels further than ``distance_px`` from every pixel where ``mask`` > 0."""
  outside = (mask == 0).astype(np.uint8)
  return cv2.distanceTransform(outside, cv2.DIST_L2, 5) > distance_px


def test_layers_move_and_background_stays(scene):
  swing = np.linalg.norm(scene.disp_px, axis=-1).max(0)  # [H, W] px
  moving, still = scene.moving_mask > 0.5, scene.moving_mask == 0
  assert moving.mean() > 0.05 and still.mean() > 0.1
  assert np.percentile(swing[moving], 90) > 1.0
  assert swing[still].max() == 0
  # Beyond the layers' reach the frames are the picture itself, bit for bit.
  untouched = _far_from(scene.moving_mask, swing.max() + 1.5)
  assert untouched.mean() > 0.1
  np.testing.assert_array_equal(scene.frames[:, untouched], np.broadcast_to(
      scene.frames[0][untouched], scene.frames[:, untouched].shape))
  assert np.abs(scene.frames[1:, moving].astype(int) - scene.frames[0][moving]).mean() > 1.0


def most_uncovered_frame(scene) -> tuple[int, np.ndarray]:
  """``(t, mask)``: the frame with most pixels that every layer has swung
  away from though one covered them at rest, and those pixels; checks that
  there are some and that the frame shows the background there."""
  layers = scene.layers
  uncovered = [(layers.coverage(t) < 1e-3) & (scene.moving_mask > 0.999)
               for t in range(len(scene.frames))]
  t = int(np.argmax([u.sum() for u in uncovered]))
  assert uncovered[t].sum() > 10
  np.testing.assert_allclose(scene.frames[t][uncovered[t]], layers.background[uncovered[t]],
                             atol=0.5)
  return t, uncovered[t]


def test_frames_follow_the_ground_truth_and_uncover_the_background():
  # A scene whose plants uncover more than a few pixels at this small size.
  scene = synthetic.make_scene(4, num_frames=T, height=H, width=W, num_freqs=K)
  layers = scene.layers
  # Frame t shows the background where the plants uncover it: what forward
  # warping the picture lacks.
  t, uncovered = most_uncovered_frame(scene)
  assert np.abs(scene.frames[0][uncovered] - layers.background[uncovered]).mean() > 10
  # Inside a layer seen whole, away from its edges, frame t is frame 0 moved
  # by D_t: warping the picture by the ground truth gives it, up to rounding.
  whole = (synthetic._visibility(layers.alphas) > 0.999).astype(np.uint8)  # [R, H, W]
  inner = np.any([cv2.erode(w, np.ones((9, 9), np.uint8)) > 0 for w in whole], axis=0)
  inner &= np.linalg.norm(scene.disp_px[t], axis=-1) > 1.0
  assert inner.sum() > 10
  warped = synthetic.warp_forward(scene.frames[0].astype(np.float32), scene.disp_px[t])
  np.testing.assert_allclose(warped[inner], scene.frames[t][inner], atol=1.0)
  assert np.abs(scene.frames[t][inner].astype(np.float32) - scene.frames[0][inner]).mean() > 5


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


def _layer_field(seed):
  """The field of a scene's layer at the frame and layer of its largest swing, px."""
  layers = synthetic.make_scene(seed, num_frames=20, height=H, width=W, num_freqs=4,
                                render=False).layers
  layer, t = np.unravel_index(np.argmax(np.abs(layers.motion).sum(-1)), layers.motion.shape[:2])
  return layers.field(layer, t)


def test_warp_inverts_the_forward_map():
  disp = _layer_field(5)
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
  disp = _layer_field(5)
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
  for t in (0, 7, T - 1):
    np.testing.assert_array_equal(synthetic.render_frame(fast.layers, t), scene.frames[t])
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


def test_defaults_are_the_data_configs():
  """A scene's clip defaults to configs/data.py's paper clips, its amplitude
  bound to the training configs' (`config_base`): one place sets them."""
  assert clip_defaults(synthetic.make_scene) == paper_scene_defaults()


def clip_defaults(function) -> dict:
  """A scene maker's defaults of its clip and its amplitude bound."""
  return {name: parameter.default
          for name, parameter in inspect.signature(function).parameters.items()
          if name in ("num_frames", "fps", "width", "height", "num_freqs", "max_amplitude_px")}


def paper_scene_defaults() -> dict:
  """What `clip_defaults` of a scene maker should be: the paper's."""
  paper = config_base.load_config_file(DATA_CONFIG, "paper")
  width, height = parse_size(paper.size)
  training = config_base.base_config("vae", "paper").data.synthetic
  return {"num_frames": paper.frames, "fps": paper.fps, "width": width, "height": height,
          "num_freqs": paper.K, "max_amplitude_px": training.max_amplitude_px}
