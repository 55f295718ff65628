"""Pictures of motion: colour coding, power spectra, slices and written files."""

import colorsys
import subprocess
import sys

import cv2
import numpy as np
import pytest

from spectral_jax.motion import spectral, viz


def _hsv(rgb):
  """uint8 RGB triple → (hue, saturation, value) in [0, 1]."""
  return colorsys.rgb_to_hsv(*(np.asarray(rgb) / 255.0))


def _hue_distance(a, b):
  d = abs(_hsv(a)[0] - _hsv(b)[0])
  return min(d, 1.0 - d)


def test_flow_to_color_shape_and_white_for_no_motion():
  rgb = viz.flow_to_color(np.zeros((4, 6, 2), np.float32))
  assert rgb.shape == (4, 6, 3) and rgb.dtype == np.uint8
  assert (rgb == 255).all()


def test_flow_to_color_direction_magnitude_and_non_finite():
  flow = np.zeros((2, 5, 2), np.float32)
  flow[0, 0] = [2.0, 0.0]
  flow[0, 1] = [-2.0, 0.0]
  flow[0, 2] = [1.0, 0.0]
  flow[0, 3] = [np.nan, 0.0]
  flow[0, 4] = [0.0, np.inf]
  rgb = viz.flow_to_color(flow)
  # Opposite directions sit on opposite sides of the wheel.
  assert _hue_distance(rgb[0, 0], rgb[0, 1]) == pytest.approx(0.5, abs=0.01)
  # Same direction, half the length: same hue, half the saturation.
  assert _hue_distance(rgb[0, 0], rgb[0, 2]) < 0.01
  assert _hsv(rgb[0, 0])[1] == pytest.approx(1.0, abs=0.01)
  assert _hsv(rgb[0, 2])[1] == pytest.approx(0.5, abs=0.01)
  np.testing.assert_array_equal(rgb[0, 3:], 0)
  np.testing.assert_array_equal(rgb[1], 255)


def test_flow_to_color_explicit_max_magnitude_clips():
  flow = np.array([[[1.0, 0.0], [8.0, 0.0]]])
  rgb = viz.flow_to_color(flow, max_magnitude=2.0)
  assert _hsv(rgb[0, 0])[1] == pytest.approx(0.5, abs=0.01)
  assert _hsv(rgb[0, 1])[1] == pytest.approx(1.0)


def test_power_spectrum_matches_loop():
  rng = np.random.default_rng(0)
  volume = (rng.normal(size=(3, 2, 4, 2)) + 1j * rng.normal(size=(3, 2, 4, 2))).astype(np.complex64)
  expected = np.zeros(3)
  for k in range(3):
    for y in range(2):
      for x in range(4):
        expected[k] += (abs(complex(volume[k, y, x, 0])) ** 2
                        + abs(complex(volume[k, y, x, 1])) ** 2) / 8
  power = viz.power_spectrum(volume)
  assert power.dtype == np.float64 and power.shape == (3,)
  np.testing.assert_allclose(power, expected, rtol=1e-12)


def test_power_spectrum_peaks_at_the_cosine_bin():
  num_frames, k0, amplitude = 60, 4, 2.0
  t = np.arange(num_frames)[:, None, None, None]
  disp = np.broadcast_to(amplitude * np.cos(2 * np.pi * k0 * t / num_frames),
                         (num_frames, 3, 3, 2)).astype(np.float32)
  power = viz.power_spectrum(spectral.spectral_volume(disp, 8))
  assert np.argmax(power) == k0
  # |S_k0| = A/2 on each of the two axes.
  assert power[k0] == pytest.approx(2 * (amplitude / 2) ** 2, rel=1e-5)


def test_modal_images_map_phase_to_hue():
  volume = np.zeros((2, 3, 4, 2), np.complex64)
  volume[1, 0, 0, 0] = 1.5
  volume[1, 0, 1, 0] = 1.5 * np.exp(1j * np.pi)
  volume[1, 1, 1, 1] = 0.75
  images = viz.modal_images(volume)
  assert images.shape == (2, 3, 8, 3) and images.dtype == np.uint8
  a, b = images[1, 0, 0], images[1, 0, 1]
  assert _hue_distance(a, b) == pytest.approx(0.5, abs=0.01)
  assert _hsv(a)[2] == _hsv(b)[2] == 1.0
  # The y component sits in the right half, at half this bin's maximum.
  assert _hsv(images[1, 1, 4 + 1])[2] == pytest.approx(0.5, abs=0.01)
  assert _hue_distance(images[1, 1, 4 + 1], a) < 0.01
  np.testing.assert_array_equal(images[1, 2], 0)
  np.testing.assert_array_equal(images[0], 0)  # An all-zero bin is black.
  dimmer = viz.modal_images(volume, max_magnitude=3.0)
  assert _hsv(dimmer[1, 0, 0])[2] == pytest.approx(0.5, abs=0.01)


def test_xt_slice():
  frames = np.random.default_rng(0).integers(0, 256, (5, 4, 6, 3), dtype=np.uint8)
  np.testing.assert_array_equal(viz.xt_slice(frames, 2), frames[:, 2])
  assert viz.xt_slice(frames, np.int64(3)).shape == (5, 6, 3)
  for row in (4, -1):
    with pytest.raises(ValueError, match="row"):
      viz.xt_slice(frames, row)
  with pytest.raises(TypeError):
    viz.xt_slice(frames, 1.5)


def test_write_visualizations(tmp_path):
  rng = np.random.default_rng(1)
  frames = rng.integers(0, 256, (12, 16, 20, 3), dtype=np.uint8)
  disp = rng.normal(size=(12, 16, 20, 2)).astype(np.float32)
  disp[0] = 0
  volume = spectral.spectral_volume(disp, 4)
  out_dir = tmp_path / "viz"
  written = viz.write_visualizations(out_dir, image=frames[0], disp_px=disp,
                                     spectral=volume, fps=30, frames=frames)
  names = [p.name for p in written]
  assert names == sorted(["reference.png", "flow_t001.png", "flow_t004.png", "flow_t008.png",
                          "flow_t011.png", "power_spectrum.png", "modes.png", "xt_slice.png"])
  # Nothing else, in particular no temporary files, is left in the folder.
  assert sorted(p.name for p in out_dir.iterdir()) == names
  images = {p.name: cv2.imread(str(p)) for p in written}
  assert all(image is not None for image in images.values())
  np.testing.assert_array_equal(images["reference.png"][..., ::-1], frames[0])
  assert images["flow_t004.png"].shape == (16, 20, 3)
  # 4 bins, 2 per row, each a caption strip over the x and y halves, with 2-pixel gaps.
  assert images["modes.png"].shape == (2 * (16 + 16 + 2), 2 * (20 + 2 + 20 + 2), 3)
  np.testing.assert_array_equal(images["xt_slice.png"][..., ::-1], frames[:, 8])
  height, width = images["power_spectrum.png"].shape[:2]
  assert height > 100 and width > 100


def test_write_visualizations_static_clip_without_frames(tmp_path):
  disp = np.zeros((6, 8, 10, 2), np.float32)
  written = viz.write_visualizations(tmp_path, image=np.zeros((8, 10, 3), np.uint8),
                                     disp_px=disp, spectral=spectral.spectral_volume(disp, 3),
                                     fps=24, num_flow_frames=10)
  names = [p.name for p in written]
  assert "xt_slice.png" not in names
  # More flow pictures asked for than frames 1..5: each frame once.
  assert [n for n in names if n.startswith("flow_")] == [f"flow_t00{t}.png" for t in range(1, 6)]
  assert (cv2.imread(str(tmp_path / "flow_t003.png")) == 255).all()


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
  def half_write(path, image):
    with open(path, "wb") as f:
      f.write(b"\x89PNG partial")
    return False
  monkeypatch.setattr(cv2, "imwrite", half_write)
  with pytest.raises(OSError, match="reference.png"):
    viz.write_visualizations(tmp_path, image=np.zeros((4, 4, 3), np.uint8),
                             disp_px=np.zeros((4, 4, 4, 2), np.float32),
                             spectral=np.zeros((2, 4, 4, 2), np.complex64), fps=30)
  assert list(tmp_path.iterdir()) == []


def test_import_is_cheap():
  code = ("import sys, spectral_jax.motion.viz; "
          "print(any(m.split('.')[0] in ('jax', 'matplotlib') for m in sys.modules))")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert result.stdout.strip() == "False"
