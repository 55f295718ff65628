"""Reading pictures, framing them to the model's size, masks, and framing
spectral volumes measured at another size."""

import math

import numpy as np
import pytest
from PIL import Image

from spectral_jax.data import pictures


def _save(array_or_image, path, **kwargs):
  image = (array_or_image if isinstance(array_or_image, Image.Image)
           else Image.fromarray(array_or_image))
  image.save(path, **kwargs)
  return path


def test_grayscale_gives_three_equal_channels(tmp_path):
  gray = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (8, 1))
  read = pictures.read_picture(_save(gray, tmp_path / "gray.png"))
  assert read.dtype == np.uint8 and read.shape == (8, 64, 3)
  for channel in range(3):
    np.testing.assert_array_equal(read[:, :, channel], gray)


def test_transparency_is_composited_over_white(tmp_path):
  rgba = np.zeros((10, 20, 4), np.uint8)
  rgba[:, 10:] = (200, 30, 60, 255)  # Opaque colour on the right.
  rgba[:, 5] = (0, 0, 0, 128)  # Half-transparent black.
  read = pictures.read_picture(_save(rgba, tmp_path / "rgba.png"))
  assert read.shape == (10, 20, 3)
  np.testing.assert_array_equal(read[:, :5], 255)
  np.testing.assert_array_equal(read[:, 10:], np.broadcast_to([200, 30, 60], (10, 10, 3)))
  np.testing.assert_array_equal(read[:, 5], 127)


def test_palette_with_and_without_transparency(tmp_path):
  indices = np.array([[0, 1, 2, 1]], np.uint8)
  image = Image.fromarray(indices, mode="P")
  image.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255])
  read = pictures.read_picture(_save(image, tmp_path / "palette.png"))
  np.testing.assert_array_equal(read[0], [[0, 0, 0], [255, 0, 0], [0, 0, 255], [255, 0, 0]])
  read = pictures.read_picture(_save(image, tmp_path / "clear.png", transparency=0))
  np.testing.assert_array_equal(read[0, 0], [255, 255, 255])
  np.testing.assert_array_equal(read[0, 1], [255, 0, 0])


def test_16_bit_is_scaled_by_the_format_range(tmp_path):
  # Not the full range, so scaling by the picture's own min/max would show.
  values = np.array([[25700, 32896], [51400, 65535]], np.uint16)
  image = Image.fromarray(values)
  assert image.mode == "I;16"
  read = pictures.read_picture(_save(image, tmp_path / "deep.png"))
  np.testing.assert_array_equal(read[:, :, 0], [[100, 128], [200, 255]])
  np.testing.assert_array_equal(read[:, :, 1], read[:, :, 2])


def test_float_is_read_as_unit_range(tmp_path):
  values = np.array([[0.0, 0.5, 1.0, 2.0]], np.float32)
  read = pictures.read_picture(_save(values, tmp_path / "float.tif"))
  np.testing.assert_array_equal(read[0, :, 1], [0, 128, 255, 255])


def test_cmyk_jpeg(tmp_path):
  cmyk = Image.new("CMYK", (32, 16), (255, 0, 0, 0))  # Cyan.
  cmyk.paste((0, 0, 0, 255), (16, 0, 32, 16))  # Black on the right.
  read = pictures.read_picture(_save(cmyk, tmp_path / "cmyk.jpg", quality=95))
  assert read.shape == (16, 32, 3)
  np.testing.assert_allclose(read[4:12, 2:12].reshape(-1, 3).mean(0), [0, 255, 255], atol=6)
  np.testing.assert_allclose(read[4:12, 20:30].reshape(-1, 3).mean(0), [0, 0, 0], atol=6)


@pytest.mark.parametrize("orientation, quarter_turns", [(6, -1), (8, 1)])
def test_exif_orientation_reads_upright(tmp_path, orientation, quarter_turns):
  """Tag 6: the viewer turns the stored picture a quarter clockwise; 8:
  counter-clockwise. np.rot90 turns counter-clockwise for k > 0."""
  stored = np.full((32, 48, 3), 30, np.uint8)
  stored[4:12, 4:12] = (250, 40, 40)  # A red block at the stored top-left.
  exif = Image.Exif()
  exif[0x0112] = orientation
  path = _save(stored, tmp_path / "turned.jpg", quality=95, exif=exif)
  read = pictures.read_picture(path)
  upright = np.rot90(stored, quarter_turns)
  assert read.shape == upright.shape == (48, 32, 3)
  assert np.abs(read.astype(int) - upright).mean() < 3
  marker = np.argwhere(upright[:, :, 0] > 200).mean(0)
  assert read[int(marker[0]), int(marker[1]), 0] > 200


def _text_file(path):
  path.write_text("not a picture\n")


def _empty_file(path):
  path.write_bytes(b"")


def _truncated_png(path):
  noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
  _save(noise, path)
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("make, reason", [(_text_file, "not a picture"),
                                          (_empty_file, "not a picture"),
                                          (_truncated_png, "not a readable picture"),
                                          (None, "no such file")])
def test_unreadable_pictures(tmp_path, make, reason):
  path = tmp_path / "x.png"
  if make is not None:
    make(path)
  with pytest.raises(pictures.PictureError) as error:
    pictures.read_picture(path)
  message = str(error.value)
  assert message.startswith(f"{path}: {reason}") and "\n" not in message


def test_decompression_bomb_is_too_large(tmp_path, monkeypatch):
  path = _save(np.zeros((30, 40, 3), np.uint8), tmp_path / "bomb.png")
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
  with pytest.raises(pictures.PictureError, match=r"bomb\.png: too large") as error:
    pictures.read_picture(path)
  assert "\n" not in str(error.value)
  # Past the limit but under twice it, PIL only warns; the picture is read.
  path = _save(np.zeros((20, 40, 3), np.uint8), tmp_path / "large.png")
  with pytest.warns(Image.DecompressionBombWarning):
    assert pictures.read_picture(path).shape == (20, 40, 3)


def test_large_sane_picture(tmp_path):
  big = np.zeros((4000, 6000, 3), np.uint8)
  big[:, 3000:] = 200
  read = pictures.read_picture(_save(big, tmp_path / "big.jpg", quality=80))
  assert read.shape == (4000, 6000, 3)
  model, framing = pictures.fit_picture(read, 256, 160)
  assert model.shape == (160, 256, 3)
  assert framing.describe() == "cropped 6000x3750 at (0, 125) of 6000x4000, resized to 256x160"


def test_list_pictures(tmp_path):
  (tmp_path / "sub").mkdir()
  for name in ["b.JPG", "a.png", "c.webp", "notes.txt", "sub/d.png", "._a.png"]:
    (tmp_path / name).write_bytes(b"")
  assert [p.name for p in pictures.list_pictures(tmp_path)] == ["a.png", "b.JPG", "c.webp"]
  with pytest.raises(pictures.PictureError, match="no such directory"):
    pictures.list_pictures(tmp_path / "missing")


def test_list_pictures_in_a_folder_without_any(tmp_path):
  (tmp_path / "notes.txt").write_text("")
  with pytest.raises(pictures.PictureError, match=f"^{tmp_path}: no pictures"):
    pictures.list_pictures(tmp_path)


def test_framing_crops_width_of_a_wide_picture():
  framing = pictures.Framing.fit(1200, 625, 256, 160)
  assert (framing.x0, framing.y0, framing.crop_width, framing.crop_height) == (100, 0, 1000, 625)
  assert framing.scale_x == framing.scale_y == pytest.approx(0.256)
  assert framing.describe() == "cropped 1000x625 at (100, 0) of 1200x625, resized to 256x160"
  # Crop box edges go to the model frame's edges, its centre to the centre.
  assert framing.to_model(99.5, -0.5) == pytest.approx((-0.5, -0.5))
  assert framing.to_model(1099.5, 624.5) == pytest.approx((255.5, 159.5))
  assert framing.to_model(599.5, 312.0) == pytest.approx((127.5, 79.5))
  # A pixel centre in closed form.
  assert framing.to_model(350, 10) == pytest.approx(((350 - 100 + 0.5) * 0.256 - 0.5,
                                                     (10 + 0.5) * 0.256 - 0.5))
  assert framing.vector_to_model(10.0, -4.0) == pytest.approx((2.56, -1.024))
  assert not framing.contains(50, 300) and not framing.contains(99, 300)
  assert framing.contains(100, 300) and framing.contains(1099, 624)
  assert not framing.contains(1100, 300) and not framing.contains(600, 625)


def test_framing_crops_height_of_a_square_picture():
  framing = pictures.Framing.fit(400, 400, 256, 160)
  assert (framing.x0, framing.y0, framing.crop_width, framing.crop_height) == (0, 75, 400, 250)
  assert framing.to_model(-0.5, 74.5) == pytest.approx((-0.5, -0.5))
  assert not framing.contains(200, 74) and framing.contains(200, 75)
  assert framing.contains(200, 324) and not framing.contains(200, 325)
  picture = np.zeros((400, 400, 3), np.uint8)
  picture[:75] = 255  # Only in the cropped-away top margin.
  assert framing.apply(picture).max() == 0


def test_framing_of_the_model_size_is_the_identity():
  framing = pictures.Framing.fit(64, 48, 64, 48)
  assert framing.describe() == "64x48, the model's size"
  picture = np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8)
  np.testing.assert_array_equal(framing.apply(picture), picture)
  assert framing.to_model(3.0, 7.0) == pytest.approx((3.0, 7.0))


@pytest.mark.parametrize("row, col", [(0, 0), (37, 101), (159, 255)])
def test_a_bright_block_lands_where_to_model_says(row, col):
  """600x320 to 256x160: a 44-pixel margin is cropped each side, then 2x2
  blocks average to one model pixel, so a bright block is one pixel."""
  picture = np.zeros((320, 600, 3), np.uint8)
  x, y = 44 + 2 * col, 2 * row
  picture[y:y + 2, x:x + 2] = 200
  model, framing = pictures.fit_picture(picture, 256, 160)
  assert model.shape == (160, 256, 3)
  assert np.argwhere(model[:, :, 0] > 0).tolist() == [[row, col]]
  assert model[row, col, 0] == 200
  assert framing.to_model(x + 0.5, y + 0.5) == pytest.approx((col, row))


def test_enlarging_keeps_pixel_centres():
  """A picture smaller than the model is enlarged; a linear ramp stays a
  ramp whose value at each model pixel is the picture x it came from."""
  ramp = np.tile(np.arange(0, 160, 10, dtype=np.uint8), (10, 1))  # 16x10.
  model, framing = pictures.fit_picture(np.repeat(ramp[:, :, None], 3, axis=2), 64, 40)
  source_x = (np.arange(64) + 0.5) / framing.scale_x - 0.5
  inside = (source_x > 1) & (source_x < 14)  # Away from the replicated border.
  np.testing.assert_allclose(model[20, inside, 0], 10 * source_x[inside], atol=1)


def _spectral_with_phase(dx, dy, num_freqs=3, bin_index=1):
  """``[K, H, W, 2]`` complex64, zero except bin ``bin_index`` = (dx, dy)
  times a phase that is neither real nor imaginary."""
  dx, dy = np.broadcast_arrays(dx, dy)
  spectral = np.zeros((num_freqs,) + dx.shape + (2,), np.complex64)
  spectral[bin_index] = np.stack([dx, dy], axis=-1) * np.exp(0.7j)
  return spectral


def test_fit_spectral_scales_a_uniform_displacement():
  spectral = _spectral_with_phase(np.full((200, 512), 3.0), np.full((200, 512), 2.0))
  spectral[2] = (0.5 - 1.5j, 1.0j)
  fitted = pictures.fit_spectral(spectral, 256, 160)
  framing = pictures.Framing.fit(512, 200, 256, 160)
  assert fitted.dtype == np.complex64 and fitted.shape == (3, 160, 256, 2)
  scale = np.array([framing.scale_x, framing.scale_y])
  np.testing.assert_allclose(fitted[0], 0, atol=1e-6)
  np.testing.assert_allclose(fitted[1], np.broadcast_to([3, 2] * scale * np.exp(0.7j),
                                                        (160, 256, 2)), rtol=1e-5)
  np.testing.assert_allclose(fitted[2], np.broadcast_to([0.5 - 1.5j, 1.0j] * scale,
                                                        (160, 256, 2)), rtol=1e-5)


def test_fit_spectral_shrinks_by_block_means():
  """72x32 to 32x16: 4 columns cropped each side, then exact 2x2 means."""
  rng = np.random.default_rng(0)
  spectral = (rng.normal(size=(2, 32, 72, 2))
              + 1j * rng.normal(size=(2, 32, 72, 2))).astype(np.complex64)
  fitted = pictures.fit_spectral(spectral, 32, 16)
  block_means = spectral[:, :, 4:68].reshape(2, 16, 2, 32, 2, 2).mean(axis=(2, 4))
  np.testing.assert_allclose(fitted, 0.5 * block_means, atol=1e-5)


def test_fit_spectral_enlarges_a_ramp():
  """16x10 to 32x20: dx growing linearly with x stays linear, sampled at
  the model's pixel centres, and doubles, counted in pixels half as wide."""
  x = np.arange(16, dtype=np.float32)
  dx = np.broadcast_to(0.1 * x + 1.0, (10, 16))
  fitted = pictures.fit_spectral(_spectral_with_phase(dx, np.ones((10, 16))), 32, 20)
  source_x = (np.arange(32) + 0.5) / 2 - 0.5
  inside = slice(1, 31)  # Bilinear is exact for a ramp away from the border.
  expected_dx = 2 * (0.1 * source_x[inside] + 1.0) * np.exp(0.7j)
  np.testing.assert_allclose(fitted[1, 10, inside, 0], expected_dx, rtol=1e-5)
  np.testing.assert_allclose(fitted[1, :, :, 1], 2 * np.exp(0.7j), rtol=1e-5)


def test_fit_spectral_rejects_the_real_layout():
  with pytest.raises(ValueError, match=r"\[K, H, W, 2\]"):
    pictures.fit_spectral(np.zeros((3, 16, 16, 4), np.float32), 8, 8)


def _half_white_mask(path, width=200, height=100):
  mask = np.zeros((height, width), np.uint8)
  mask[:, :width // 2] = 255
  return _save(mask, path)


def test_mask_is_feathered_across_the_edge(tmp_path):
  """200x100 to 64x32 (scale 0.32): the white half's edge at picture x =
  99.5 lands between model pixels 31 and 32, at x' = 31.5."""
  framing = pictures.Framing.fit(200, 100, 64, 32)
  sigma = 2.0
  mask = pictures.read_mask(_half_white_mask(tmp_path / "mask.png"), framing,
                            feather_px=sigma)
  assert mask.dtype == np.float32 and mask.shape == (32, 64)
  assert mask.min() >= 0 and mask.max() <= 1
  edge = framing.to_model(99.5, 0)[0]
  assert edge == pytest.approx(31.5)
  assert mask[:, :int(edge - 3 * sigma)].min() > 0.99
  assert mask[:, int(edge + 3 * sigma) + 1:].max() < 0.01
  assert np.all(np.diff(mask, axis=1) <= 1e-6)  # Monotone across the edge.
  # A Gaussian blur of a step is the normal CDF of the distance to the step.
  expected = [0.5 * math.erfc((x - edge) / (sigma * math.sqrt(2))) for x in range(64)]
  np.testing.assert_allclose(mask[16], expected, atol=0.02)
  np.testing.assert_allclose(mask[0], mask[16], atol=1e-6)


def test_unfeathered_mask_and_gray_levels(tmp_path):
  framing = pictures.Framing.fit(200, 100, 64, 32)
  hard = pictures.read_mask(_half_white_mask(tmp_path / "mask.png"), framing, feather_px=0)
  np.testing.assert_allclose(hard[:, :32], 1, atol=1e-6)
  np.testing.assert_allclose(hard[:, 32:], 0, atol=1e-6)
  gray = _save(np.full((100, 200), 64, np.uint8), tmp_path / "gray.png")
  np.testing.assert_allclose(pictures.read_mask(gray, framing, feather_px=3), 64 / 255,
                             atol=1e-6)


def test_mask_of_another_size(tmp_path):
  framing = pictures.Framing.fit(200, 100, 64, 32)
  path = _half_white_mask(tmp_path / "small.png", width=100, height=50)
  with pytest.raises(pictures.PictureError,
                     match=r"small\.png: the mask is 100x50 but the picture is 200x100"):
    pictures.read_mask(path, framing, feather_px=2)


# The resizes of the exported sampler (`inference.stablehlo`), which runs
# where OpenCV is not: the same as animate's OpenCV ones.
@pytest.mark.parametrize("size, out_size", [((160, 256), (80, 128)), ((150, 250), (60, 100))])
def test_the_exported_programs_shrink_a_picture_as_opencv_does(size, out_size):
  from spectral_jax.inference.stablehlo import shrink_picture

  picture = np.random.default_rng(0).integers(0, 256, size + (3,)).astype(np.uint8)
  expected, _ = pictures.fit_picture(picture, out_size[1], out_size[0])
  shrunk = np.asarray(shrink_picture(picture, *out_size))
  if size[0] % out_size[0] == 0:  # Integer factors: bit for bit.
    np.testing.assert_array_equal(shrunk, expected)
  else:  # OpenCV's fixed-point weights round differently: by a level at most.
    assert np.abs(shrunk.astype(int) - expected).max() <= 1
    assert np.mean(shrunk != expected) < 0.05


def test_the_exported_programs_enlarge_a_spectral_volume_as_opencv_does():
  from spectral_jax.inference.stablehlo import enlarge_spectral

  rng = np.random.default_rng(1)
  small = (rng.normal(size=(3, 40, 64, 2)) + 1j * rng.normal(size=(3, 40, 64, 2))).astype(
      np.complex64)
  expected = pictures.fit_spectral(small, 128, 80)
  enlarged = np.asarray(enlarge_spectral(small, 80, 128))
  assert enlarged.dtype == np.complex64
  np.testing.assert_allclose(enlarged, expected, rtol=0, atol=1e-5)
