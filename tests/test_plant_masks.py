"""The hand-drawn plant masks of the held-out photos (`tools/plant_masks.py`)
that the held-out evaluation scores motion with: the file, the rasterising
at the model's size through the photo's centre crop, and the inside /
outside ratio. Fast: no model, no photos (the masks carry their photo's
size)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import plant_masks  # noqa: E402  (tools/ is not a package)
from spectral_jax.data.pictures import Framing  # noqa: E402


def _mask(polygons, holes=(), photo_size=(1600, 1000)) -> plant_masks.PlantMask:
  return plant_masks.PlantMask("test", photo_size, tuple(np.float64(p) for p in polygons),
                               tuple(np.float64(p) for p in holes), "")


UNIT_SQUARE = [(0, 0), (1, 0), (1, 1), (0, 1)]


def test_every_held_out_photo_has_a_mask_drawn_by_hand():
  masks = plant_masks.load_masks()
  assert set(plant_masks.HELD_OUT) <= set(masks)
  entries = json.loads(plant_masks.MASKS.read_text())["photos"]
  for name in plant_masks.HELD_OUT:
    assert entries[name]["drawn"] == "drawn by hand while looking at the photo"
    assert entries[name]["description"]
  # Plants everywhere but the ladybird; none on a painted board.
  assert len(masks["mate-LadyBird"].holes) == 1
  assert masks["mate-Wood"].polygons == ()


def test_the_held_out_masks_cover_plausible_fractions():
  """Loose bounds on each rasterised mask, so a broken file or mapping shows:
  e.g. the flower fills most of mate-YellowFlower but not its dark left."""
  masks = plant_masks.load_masks()
  covered = {name: plant_masks.rasterise(masks[name], 256, 160) for name in plant_masks.HELD_OUT}
  assert all(m.shape == (160, 256) and m.dtype == bool for m in covered.values())
  assert 0.95 < covered["mate-LadyBird"].mean() < 1
  assert 0.4 < covered["mate-YellowFlower"].mean() < 0.8
  assert not covered["mate-YellowFlower"][:, :40].any()  # The dark left tenth.
  assert covered["mate-YellowFlower"][100:, 200:].all()  # The stamens.
  assert 0.9 < covered["kde-Path"].mean() < 1
  assert 0.02 < covered["kde-BytheWater"].mean() < 0.15
  assert not covered["kde-BytheWater"][60:].any()  # Water and boardwalk.
  assert not covered["mate-Wood"].any()


def test_a_unit_square_covers_every_pixel_and_a_triangle_half():
  square = plant_masks.rasterise(_mask([UNIT_SQUARE]), 64, 40)
  assert square.shape == (40, 64) and square.all()
  triangle = plant_masks.rasterise(_mask([[(0, 0), (1, 0), (0, 1)]]), 64, 40)
  assert abs(triangle.mean() - 0.5) < 0.02
  assert triangle[0, 0] and not triangle[-1, -1]
  # Below the diagonal: the top-right triangle of a wide picture lies above
  # the line from (1, 0) to (0, 1), i.e. x / 64 + y / 40 > 1 is outside.
  y, x = np.mgrid[:40, :64]
  far = (x + 0.5) / 64 + (y + 0.5) / 40
  assert not triangle[far > 1.05].any() and triangle[far < 0.95].all()


def test_a_hole_removes_what_it_covers_and_overlaps_stay_filled():
  left = [(0, 0), (0.6, 0), (0.6, 1), (0, 1)]
  right = [(0.4, 0), (1, 0), (1, 1), (0.4, 1)]
  both = plant_masks.rasterise(_mask([left, right]), 50, 20)
  assert both.all()  # fillPoly's even-odd rule would empty the overlap.
  holed = plant_masks.rasterise(_mask([UNIT_SQUARE], [[(0.2, 0), (0.4, 0), (0.4, 1), (0.2, 1)]]),
                                50, 20)
  np.testing.assert_array_equal(holed.mean(axis=0), np.where((np.arange(50) >= 10)
                                                             & (np.arange(50) < 20), 0.0, 1.0))


def test_a_polygon_maps_through_the_centre_crop_of_its_photo():
  """A 4:3 photo (1200x900) framed to 16:10 (64x40) loses 75 rows at the top
  and 75 at the bottom: the crop is 1200x750 at y0 = 75. A band over the
  photo's rows y in [0, t] covers the model rows whose centres lie above
  ``(t * 900 - 75) * 40 / 750``, the closed form of the crop and resize, and
  none when t * 900 <= 75. Each t puts the band's edge 0.3 px or more from a
  row's centre: rasterising places an edge to within 1 / SUPERSAMPLING px."""
  framing = Framing.fit(1200, 900, 64, 40)
  assert (framing.x0, framing.y0, framing.crop_width, framing.crop_height) == (0, 75, 1200, 750)
  for t in (0.05, 0.1, 0.31, 0.5, 0.6, 0.77, 0.95):
    band = [(0, 0), (1, 0), (1, t), (0, t)]
    covered = plant_masks.rasterise(_mask([band], photo_size=(1200, 900)), 64, 40)
    edge = (t * 900 - 75) * 40 / 750  # The band's lower edge in model pixel edges.
    expected = np.clip(np.floor(edge + 0.5), 0, 40)  # Rows whose centre j + 0.5 < edge.
    assert covered.any(axis=1).sum() == expected, (t, edge)
    assert covered.all(axis=1).sum() == expected
  # A column band over x in [0.25, 0.75]: no crop along x, so half the columns.
  column = [(0.25, 0), (0.75, 0), (0.75, 1), (0.25, 1)]
  covered = plant_masks.rasterise(_mask([column], photo_size=(1200, 900)), 64, 40)
  np.testing.assert_array_equal(np.flatnonzero(covered[0]), np.arange(16, 48))


def test_points_map_to_model_pixels_by_the_closed_form():
  """x' = x * 1200 * 64 / 1200 - 0.5 and y' = (y * 900 - 75) * 40 / 750 - 0.5
  (pixel centres at integers) for the 1200x900 photo framed to 64x40."""
  framing = Framing.fit(1200, 900, 64, 40)
  points = np.float64([[0, 0], [1, 1], [0.3, 0.6], [0.9, 0.125]])
  expected = np.stack([points[:, 0] * 1200 * 64 / 1200 - 0.5,
                       (points[:, 1] * 900 - 75) * 40 / 750 - 0.5], axis=1)
  np.testing.assert_allclose(plant_masks.to_model(points, framing), expected, rtol=0, atol=1e-9)


def test_the_ratio_is_the_inside_mean_over_the_outside_mean():
  rng = np.random.default_rng(0)
  amplitude = rng.gamma(2.0, 0.1, (5, 7)).astype(np.float32)
  inside = rng.random((5, 7)) < 0.4
  reference = np.float64(amplitude)
  mean_in = reference[inside].sum() / inside.sum()
  mean_out = reference[~inside].sum() / (~inside).sum()
  got = plant_masks.inside_outside(amplitude, inside)
  np.testing.assert_allclose(got, (mean_in, mean_out, mean_in / mean_out), rtol=1e-12)
  # Pooling photos: their pixels concatenated.
  pooled = plant_masks.inside_outside(np.concatenate([amplitude.ravel(), [1.0, 3.0]]),
                                      np.concatenate([inside.ravel(), [True, False]]))
  expected_in = (reference[inside].sum() + 1.0) / (inside.sum() + 1)
  expected_out = (reference[~inside].sum() + 3.0) / ((~inside).sum() + 1)
  np.testing.assert_allclose(pooled, (expected_in, expected_out, expected_in / expected_out),
                             rtol=1e-12)


def test_an_empty_side_gives_nan():
  mean_in, mean_out, ratio = plant_masks.inside_outside(np.ones((2, 3)), np.zeros((2, 3), bool))
  assert np.isnan(mean_in) and mean_out == 1 and np.isnan(ratio)
  with pytest.raises(ValueError, match="shape"):
    plant_masks.inside_outside(np.ones((2, 3)), np.zeros((3, 2), bool))


def test_bad_polygons_are_refused(tmp_path):
  def write(polygons):
    path = tmp_path / "masks.json"
    path.write_text(json.dumps({"photos": {"x": {"photo_size": [4, 3], "description": "",
                                                 "polygons": polygons}}}))
    return path
  with pytest.raises(ValueError, match="3 or more"):
    plant_masks.load_masks(write([[[0, 0], [1, 1]]]))
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    plant_masks.load_masks(write([[[0, 0], [1.5, 0], [1, 1]]]))
  assert plant_masks.load_masks(write([[[0, 0], [1, 0], [1, 1]]]))["x"].holes == ()
