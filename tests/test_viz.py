"""Motion pictures: colour coding and written files."""

import cv2
import numpy as np
import pytest

from spectral_jax.motion import spectral, viz


def test_flow_to_color():
  flow = np.zeros((4, 6, 2), np.float32)
  flow[0, 0] = [2.0, 0.0]
  flow[0, 1] = [-2.0, 0.0]
  flow[0, 2] = [1.0, 0.0]
  flow[0, 3] = [np.nan, 0.0]
  rgb = viz.flow_to_color(flow)
  assert rgb.shape == (4, 6, 3) and rgb.dtype == np.uint8
  np.testing.assert_array_equal(rgb[3, 5], [255, 255, 255])
  assert not np.array_equal(rgb[0, 0], rgb[0, 1])
  saturation = lambda c: int(c.max()) - int(c.min())
  assert saturation(rgb[0, 2]) < saturation(rgb[0, 0])
  np.testing.assert_array_equal(rgb[0, 3], [0, 0, 0])


def test_power_spectrum_matches_loop():
  rng = np.random.default_rng(0)
  volume = rng.normal(size=(3, 2, 4, 2)) + 1j * rng.normal(size=(3, 2, 4, 2))
  expected = [np.mean([abs(volume[k, y, x, 0]) ** 2 + abs(volume[k, y, x, 1]) ** 2
                       for y in range(2) for x in range(4)]) for k in range(3)]
  np.testing.assert_allclose(viz.power_spectrum(volume), expected)


def test_power_spectrum_peaks_at_the_cosine_bin():
  t = np.arange(60)[:, None, None, None]
  disp = np.broadcast_to(2.0 * np.cos(2 * np.pi * 4 * t / 60), (60, 3, 3, 2)).astype(np.float32)
  power = viz.power_spectrum(spectral.spectral_volume(disp - disp[:1], 8))
  assert np.argmax(power[1:]) + 1 == 4


def test_modal_images_map_phase_to_hue():
  volume = np.zeros((2, 3, 3, 2), np.complex64)
  volume[1, 0, 0] = 1.0
  volume[1, 0, 1] = -1.0  # Same magnitude, phase pi.
  images = viz.modal_images(volume)
  assert images.shape == (2, 3, 6, 3) and images.dtype == np.uint8
  a, b = images[1, 0, 0], images[1, 0, 1]
  assert not np.array_equal(a, b) and a.max() == b.max() == 255
  np.testing.assert_array_equal(images[1, 2, 2], [0, 0, 0])


def test_xt_slice():
  frames = np.random.default_rng(0).integers(0, 255, (5, 4, 6, 3), dtype=np.uint8)
  np.testing.assert_array_equal(viz.xt_slice(frames, 2), frames[:, 2])
  with pytest.raises(ValueError, match="row"):
    viz.xt_slice(frames, 4)


def test_write_visualizations(tmp_path):
  rng = np.random.default_rng(1)
  frames = rng.integers(0, 255, (12, 16, 20, 3), dtype=np.uint8)
  disp = rng.normal(size=(12, 16, 20, 2)).astype(np.float32)
  disp[0] = 0
  volume = spectral.spectral_volume(disp, 4)
  written = viz.write_visualizations(tmp_path / "viz", image=frames[0], disp_px=disp,
                                     spectral=volume, fps=30, frames=frames)
  names = [p.name for p in written]
  assert names == sorted(["reference.png", "flow_t001.png", "flow_t004.png", "flow_t008.png",
                          "flow_t011.png", "power_spectrum.png", "modes.png", "xt_slice.png"])
  assert sorted(p.name for p in (tmp_path / "viz").iterdir()) == names
  shapes = {p.name: cv2.imread(str(p)).shape for p in written}
  assert shapes["modes.png"] == (2 * 16, 2 * 40, 3)
  assert shapes["xt_slice.png"] == (12, 20, 3)
  assert shapes["power_spectrum.png"][0] > 100
