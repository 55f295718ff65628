"""Optical flow recovers known sub-pixel motion."""

import cv2
import numpy as np
import pytest

from spectral_jax.motion import flow


def _texture(height, width, seed=0):
  rng = np.random.default_rng(seed)
  image = np.zeros((height, width, 3), np.float32)
  for sigma, weight in [(1.0, 0.3), (3.0, 0.4), (8.0, 0.3)]:
    noise = rng.random((height, width, 3)).astype(np.float32)
    image += weight * cv2.GaussianBlur(noise, (0, 0), sigma) / max(1e-6, sigma ** -0.5)
  image -= image.min()
  return (255 * image / image.max()).astype(np.uint8)


def _warp_forward(image, disp):
  """Frame where the pixel of ``image`` at x sits at x + disp(x): inverts the
  map by fixed-point iteration x = y - disp(x)."""
  height, width = image.shape[:2]
  grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32),
                               np.arange(height, dtype=np.float32))
  src_x, src_y = grid_x.copy(), grid_y.copy()
  for _ in range(20):
    d = cv2.remap(disp, src_x, src_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    src_x, src_y = grid_x - d[..., 0], grid_y - d[..., 1]
  return cv2.remap(image, src_x, src_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def _sinusoid_clip(num_frames=24, height=96, width=128, amplitude=2.3):
  """Known motion: each pixel sways on a sub-pixel sinusoid in time whose
  amplitude varies smoothly over the image."""
  image = _texture(height, width)
  x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
  y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
  profile_x = amplitude * (0.4 + 0.6 * np.sin(np.pi * x) * y)
  profile_y = 0.5 * amplitude * np.cos(np.pi * y) * np.ones_like(x)
  t = np.arange(num_frames, dtype=np.float32)
  wave = np.sin(2 * np.pi * 2 * t / num_frames)
  disp = np.stack([wave[:, None, None] * profile_x, wave[:, None, None] * profile_y], -1)
  frames = np.stack([_warp_forward(image, d.astype(np.float32)) for d in disp])
  frames[0] = image
  return frames, disp.astype(np.float32)


@pytest.mark.parametrize("init_from_previous", [False, True])
def test_recovers_subpixel_sinusoid(init_from_previous):
  frames, truth = _sinusoid_clip()
  disp, consistent = flow.displacements(
      frames, flow.FlowConfig(init_from_previous=init_from_previous))
  assert disp.shape == truth.shape and disp.dtype == np.float32
  np.testing.assert_array_equal(disp[0], 0)
  assert consistent.all()
  error = np.linalg.norm(disp - truth, axis=-1)[1:]
  # Over most of the image (borders excluded by the percentile).
  assert np.percentile(error, 90) < 0.2, np.percentile(error, [50, 90, 99])
  assert np.median(error) < 0.1


def test_forward_backward_marks_occluded_pixels():
  frames, _ = _sinusoid_clip(num_frames=6)
  # A block that appears in later frames has no counterpart in frame 0.
  frames[1:, 30:60, 40:80] = 255 - frames[1:, 30:60, 40:80, ::-1]
  _, consistent = flow.displacements(frames, flow.FlowConfig(forward_backward=True))
  assert consistent[0].all()
  inside = consistent[1:, 35:55, 45:75].mean()
  outside = consistent[1:, :, 90:].mean()
  assert outside > 0.9 and inside < outside - 0.3, (inside, outside)


def test_consistency_of_exact_inverse_flows():
  height, width = 20, 30
  forward = np.zeros((height, width, 2), np.float32)
  forward[..., 0] = 1.5
  backward = -forward
  mask = flow.forward_backward_consistent(forward, backward)
  assert mask[:, :-2].all() and not mask[:, -1].any()  # Last column leaves the image.
  assert not flow.forward_backward_consistent(forward, np.zeros_like(forward))[:, :-2].any()


def test_trajectory_magnitude():
  disp = np.zeros((4, 2, 2, 2), np.float32)
  disp[1:, 0, 0] = [3.0, 4.0]
  np.testing.assert_allclose(flow.trajectory_magnitude(disp), [[3.75, 0], [0, 0]])


def test_unknown_preset():
  with pytest.raises(ValueError, match="preset"):
    flow.FlowConfig(preset="slow")
