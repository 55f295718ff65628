"""Photo scenes: a photo's vegetation sways, everything else stays still."""

import functools
import importlib.util
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_synthetic import clip_defaults, most_uncovered_frame, paper_scene_defaults

from spectral_jax import cli, config_base
from spectral_jax.data import photo_scenes, sources, synthetic
from spectral_jax.data import video as video_io
from spectral_jax.motion.motion_file import Motion

T, H, W, K = 48, 64, 96, 8
CLIP = {"num_frames": T, "height": H, "width": W, "num_freqs": K}


def _skimage(name):
  import skimage.data
  return getattr(skimage.data, name)()


def _resize(image, height, width):
  return cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=cv2.INTER_AREA)


@functools.cache
def _cue_pictures():
  """tools/cue_pictures.py, loaded from its file: pictures made by code of
  green things that are not plants, and of foliage in several lights and
  colours."""
  path = Path(__file__).resolve().parent.parent / "tools" / "cue_pictures.py"
  spec = importlib.util.spec_from_file_location("cue_pictures", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _green_grass(height, width, tint=(0.55, 1.0, 0.35)):
  """uint8 ``[h, w, 3]``: scikit-image's grey photo of grass, tinted green:
  a real grass texture in foliage colours (no colour photo that ships with
  scikit-image shows foliage)."""
  grey = _resize(_skimage("grass"), height, width).astype(np.float32)
  return np.clip(grey[..., None] * np.float32(tint) * 1.2, 0, 255).astype(np.uint8)


@functools.cache
def _garden():
  """uint8 ``[192, 288, 3]``: rocket's evening sky (real), a strip of
  coffee's wooden table (real) as ground, and a bush of green grass
  rising from the bottom edge on the left, in front of both."""
  height, width = 192, 288
  picture = _resize(_skimage("rocket")[0:150, 90:165], height, width)
  picture[96:] = _resize(_skimage("coffee")[0:80, 430:600], height - 96, width)
  y, x = np.mgrid[0:height, 0:width]
  bush = ((x - 100) / 70.0) ** 2 + ((y - 191) / 130.0) ** 2 < 1
  picture[bush] = _green_grass(height, width)[bush]
  picture.setflags(write=False)
  return picture


@pytest.fixture(scope="module")
def scene():
  return photo_scenes.make_scene(_garden(), 3, **CLIP)


def _far_from(mask, distance_px):
  """Pixels further than ``distance_px`` from every pixel where ``mask`` is true."""
  return cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5) > distance_px


def test_mask_on_a_picture_with_known_regions():
  # Columns 60 px wide from tools/cue_pictures.py's pictures, and a sky. Not
  # colour but structure tells them apart: four of the six are green.
  pictures = _cue_pictures()
  height, width = 120, 360
  sky = np.float32([90, 150, 230]) * np.linspace(0.8, 1.1, height)[:, None, None]
  regions = {  # Name: (picture, expected high?)
      "leaves": (pictures.plant("foliage_green", height, width, 0), True),
      "autumn leaves": (pictures.plant("foliage_autumn", height, width, 0), True),
      "sky": (np.broadcast_to(sky, (height, width, 3)), False),
      "noisy green plaster": (pictures.green_stucco(height, width, 0), False),
      "green paint": (pictures.green_wall(height, width, 0), False),
      "green planks": (pictures.green_planks(height, width, 0), False),
  }
  picture = np.concatenate([image[:, 60 * i:60 * (i + 1)] for i, (image, _) in
                            enumerate(regions.values())], axis=1).astype(np.uint8)
  mask = photo_scenes.vegetation_mask(picture)
  assert mask.shape == (height, width) and mask.dtype == np.float32
  assert 0 <= mask.min() and mask.max() <= 1
  for i, (name, (_, high)) in enumerate(regions.items()):
    # Away from the column's edges, where one texture's edges meet another.
    inner = mask[10:-10, 60 * i + 12:60 * (i + 1) - 12]
    if high:  # Almost everywhere: a cluster of dark pixels may dip.
      assert np.median(inner) == 1 and np.percentile(inner, 1) > 0.8, name
    else:
      assert inner.max() < 0.05, name
  with pytest.raises(ValueError, match="uint8"):
    photo_scenes.vegetation_mask(picture.astype(np.float32))


def test_green_things_that_are_not_plants_stay_still():
  # tools/cue_pictures.py's green wall, rough plaster, car, striped awning,
  # picket fence, planks and rippled water: smooth, noisy, or regular. The
  # old colour cue swayed all but the flat wall, in part or whole.
  pictures = _cue_pictures()
  for name, make in pictures.NOT_PLANTS.items():
    for seed in (0, 1):
      mask = photo_scenes.vegetation_mask(make(160, 256, seed))
      assert mask.mean() < 0.02 and (mask > 0.5).mean() < 0.02, (name, seed, mask.mean())
  # Nothing there to make a layer of: the clip stays still.
  for make in (pictures.green_wall, pictures.green_car, pictures.green_awning):
    scene = photo_scenes.make_scene(make(160, 256, 0), 0, num_frames=8, height=H, width=W,
                                    num_freqs=2, render=False)
    assert len(scene.layers.alphas) == 0 and not scene.disp_px.any()


def test_foliage_counts_in_any_light_and_colour():
  # Small leaves at random orientations: green, pale and washed out, autumn
  # orange, red and brown, in deep shade, and dark against a bright sky.
  pictures = _cue_pictures()
  for name in pictures.FOLIAGE:
    for seed in (0, 1):
      mask = photo_scenes.vegetation_mask(pictures.plant(name, 160, 256, seed))
      assert mask.mean() > 0.75 and (mask > 0.5).mean() > 0.75, (name, seed, mask.mean())


def test_a_big_leaf_filling_the_frame_counts():
  # tools/cue_pictures.py's macro leaf: smooth green with a midrib, side
  # veins and mottling, too few edges for the structure cue (its mean mask
  # is about 0.15); the colour-and-texture path counts it.
  pictures = _cue_pictures()
  for seed in (0, 1):
    mask = photo_scenes.vegetation_mask(pictures.big_leaf(160, 256, seed))
    assert mask.mean() > 0.55 and (mask > 0.5).mean() > 0.55, (seed, mask.mean())


def test_a_small_patch_of_leaf_colour_and_texture_stays_out():
  # The colour-and-texture path counts only over a large area (its extent
  # gate): a leaf-like patch 16 px across on a grey wall (a sign, a green
  # panel) is left to the structure cue, which finds too few edges there.
  # Without the gate the path marks all of it.
  pictures = _cue_pictures()
  picture = np.full((160, 256, 3), 150, np.uint8)
  picture[60:76, 100:116] = pictures.big_leaf(160, 256, 0)[60:76, 100:116]
  mask = photo_scenes.vegetation_mask(picture)
  assert mask.max() < 0.05, mask.max()


def test_mask_follows_the_picture_not_its_resolution():
  # The cue works at the model's height: the same picture twice as large
  # gives the same mask, twice as large, and a 1080p photo costs little more.
  pictures = _cue_pictures()
  picture = np.concatenate([pictures.plant("foliage_green", 160, 128, 0),
                            pictures.green_wall(160, 128, 0)], axis=1)
  mask = photo_scenes.vegetation_mask(picture)
  leaves = mask[:, 20:108]
  assert np.median(leaves) == 1 and np.percentile(leaves, 1) > 0.9 and mask[:, 148:].max() < 0.05
  large = cv2.resize(picture, (512, 320), interpolation=cv2.INTER_CUBIC)
  large_mask = photo_scenes.vegetation_mask(large)
  assert large_mask.shape == (320, 512)
  shrunk = cv2.resize(large_mask, (256, 160), interpolation=cv2.INTER_AREA)
  assert np.abs(shrunk - mask).mean() < 0.02
  full_hd = cv2.resize(picture, (1920, 1080), interpolation=cv2.INTER_LINEAR)
  start = time.perf_counter()
  photo_scenes.vegetation_mask(full_hd)
  assert time.perf_counter() - start < 2.0  # About 0.05 s on one core.


def test_mask_on_skimage_photos():
  # Checked by eye: rocket's top half is evening sky and steel towers,
  # astronaut a person, a flag and a grey backdrop, coffee a cup on wood,
  # chelsea a tabby cat. Nothing there is vegetation, but at the model's
  # scale hair, a cat's striped fur, the folds and badges of a suit and the
  # rim of a cup are busy too, and orange: the colour cue used to rule them
  # out by hue; the structure cue marks parts of them (a known limit, see
  # the cue's notes). Smooth surfaces and skin stay still.
  rocket = photo_scenes.vegetation_mask(_skimage("rocket"))
  assert (rocket[:250] > 0.5).mean() < 0.005 and rocket[:250, 100:540].max() == 0  # Sky.
  astronaut = photo_scenes.vegetation_mask(_skimage("astronaut"))
  assert astronaut[100:160, 200:250].mean() < 0.02  # Her face.
  coffee = photo_scenes.vegetation_mask(_skimage("coffee"))
  assert coffee[120:180, 250:330].mean() < 0.02  # The coffee in the cup.
  # scikit-image's (grey) photo of grass: vegetation all over, tinted green
  # or autumn orange or left grey.
  for tint in ((0.55, 1.0, 0.35), (1.0, 0.55, 0.2), (1.0, 1.0, 1.0)):
    grass = photo_scenes.vegetation_mask(_green_grass(160, 256, tint))
    assert np.median(grass) == 1.0 and (grass > 0.5).mean() > 0.9, tint
  # Sky blue is vetoed, whatever its texture: clouds' edges, glittering water.
  blue = photo_scenes.vegetation_mask(_green_grass(160, 256, (0.3, 0.6, 1.0)))
  assert blue.max() < 0.05


def test_shapes_and_ground_truth(scene):
  assert scene.frames.shape == (T, H, W, 3) and scene.frames.dtype == np.uint8
  assert scene.disp_px.shape == (T, H, W, 2) and scene.disp_px.dtype == np.float32
  assert scene.spectral.shape == (K, H, W, 2) and scene.spectral.dtype == np.complex64
  np.testing.assert_array_equal(scene.disp_px[0], 0)
  reference = np.fft.rfft(scene.disp_px.astype(np.float64), axis=0)[:K] / T
  np.testing.assert_allclose(scene.spectral, reference, atol=1e-5)
  assert np.linalg.norm(scene.disp_px, axis=-1).max() <= 4.0 * (1 + 1e-6)
  layers = scene.layers
  assert 1 <= len(layers.alphas) <= 6
  for r in range(len(layers.alphas)):  # Each layer's field stretches < 0.5 px/px.
    field = layers.motion[r][:, None, None, :] * layers.shapes[r][None, ..., None]
    jacobian = np.stack(np.gradient(field, axis=(1, 2)), -1)
    assert np.linalg.norm(jacobian, ord=2, axis=(-2, -1)).max() < 0.5


def test_deterministic_by_seed(scene):
  again = photo_scenes.make_scene(_garden(), 3, **CLIP)
  for name in ("frames", "disp_px", "spectral", "moving_mask"):
    np.testing.assert_array_equal(getattr(again, name), getattr(scene, name), err_msg=name)
  other = photo_scenes.make_scene(_garden(), 4, **CLIP)
  assert not np.array_equal(other.disp_px, scene.disp_px)


def test_only_vegetation_moves(scene):
  swing = np.linalg.norm(scene.disp_px, axis=-1).max(0)  # [H, W] px
  vegetation = photo_scenes.vegetation_mask(scene.frames[0])
  # What moves is vegetation: still wherever the mask is 0, a pixel or two
  # from its edge (frame 0 is the photo up to rounding, not bit for bit).
  assert swing[_far_from(vegetation > 0, 2)].max() == 0
  core = vegetation > 0.99
  assert core.mean() > 0.15 and (swing[core] > 0.1).mean() > 0.5 and swing[core].max() > 0.8
  # The sky (blue) and the table (orange-brown) never move, but for the
  # bush's soft edge; beyond the bush's reach every frame shows them as in
  # frame 0, bit for bit.
  hue = cv2.cvtColor(scene.frames[0], cv2.COLOR_RGB2HSV_FULL)[..., 0].astype(int) * 360 // 256
  sky, table = (hue > 190) & (hue < 260), hue < 30
  assert sky.mean() > 0.2 and table.mean() > 0.05
  assert swing[(sky | table) & _far_from(vegetation > 0.5, 2)].max() == 0
  untouched = _far_from(scene.moving_mask > 0, swing.max() + 1.5)
  assert untouched.mean() > 0.2
  np.testing.assert_array_equal(scene.frames[:, untouched], np.broadcast_to(
      scene.frames[0][untouched], scene.frames[:, untouched].shape))


def test_amplitude_grows_away_from_the_anchor(scene):
  # The bush stands on the bottom edge: still there, swaying most at its top.
  layer = int(np.argmax(scene.layers.alphas.sum((1, 2))))
  alpha = scene.layers.alphas[layer]
  assert (alpha[-1] > 0.5).any()
  swing = np.linalg.norm(scene.disp_px, axis=-1).max(0)
  rows = [r for r in range(H) if (alpha[r] > 0.99).sum() >= 3]
  per_row = np.array([swing[r][alpha[r] > 0.99].mean() for r in rows])
  assert per_row[-1] < 0.05 * per_row.max()  # Bottom row: the anchor.
  assert np.all(np.diff(per_row) <= 1e-4)  # Never less further up.
  assert per_row[0] > 0.5


def test_anchor_shapes():
  rng = np.random.default_rng(0)
  height, width = 40, 60

  def box(top, bottom, left, right):
    alpha = np.zeros((height, width), np.float32)
    alpha[top:bottom + 1, left:right + 1] = 1
    return alpha

  # Touching the bottom: 0 at the bottom row, growing upwards, 1 at its top.
  shape, sway = photo_scenes.anchor_shape(rng, box(10, height - 1, 20, 40))
  assert shape[-1].max() < 0.01 and shape[10, 30] > 0.9
  assert np.all(np.diff(shape[:, 30]) <= 0) and abs(sway[0]) > abs(sway[1])
  # A branch from the left edge (not touching the bottom): grows to the right.
  shape, sway = photo_scenes.anchor_shape(rng, box(5, 15, 0, 30))
  assert shape[10, 0] < 0.01 and shape[10, 30] > 0.9
  assert np.all(np.diff(shape[10]) >= 0) and abs(sway[1]) > abs(sway[0])
  # Hanging from the top edge across the frame: grows downwards.
  shape, _ = photo_scenes.anchor_shape(rng, box(0, 12, 0, width - 1))
  assert shape[0].max() < 0.01 and shape[12].min() > 0.9
  # Wholly inside the frame: held at its own lowest row.
  shape, _ = photo_scenes.anchor_shape(rng, box(5, 25, 10, 30))
  assert shape[25].max() < 0.01 and shape[5, 20] > 0.9 and shape[30].max() == 0


def test_power_falls_with_frequency():
  power = sum(np.mean(np.abs(photo_scenes.make_scene(
      _garden(), seed, height=32, width=48, render=False).spectral) ** 2, axis=(1, 2, 3))
              for seed in range(8))
  # Bins of 0.2 Hz: 0.2-1 Hz, 1.2-2 Hz, 2.2-3 Hz.
  low, mid, high = power[1:6].mean(), power[6:11].mean(), power[11:16].mean()
  assert low > mid > high and low > 4 * high, power


def test_frames_are_the_layers_rendered_and_frame_0_is_the_photo(scene):
  for t in (0, 5, T - 1):
    np.testing.assert_array_equal(scene.frames[t], synthetic.render_frame(scene.layers, t))
  # The seed's first draw is the crop (see `make_scene`).
  crop = synthetic.random_crop(np.random.default_rng(3), _garden(), H, W)
  error = np.abs(scene.frames[0].astype(int) - crop)
  assert error.mean() < 0.3 and np.percentile(error, 99.9) <= 2


def test_uncovered_pixels_show_the_inpainted_background():
  scene = photo_scenes.make_scene(_garden(), 5, max_amplitude_px=6.0, **CLIP)
  layers = scene.layers
  _, uncovered = most_uncovered_frame(scene)  # Checks that the frame shows the background.
  # That background is not the bush: it is filled in from the sky and the
  # table around it (blue-grey or brown, not green).
  shown = layers.background[uncovered]
  assert np.abs(scene.frames[0][uncovered] - shown).mean() > 10
  assert np.mean(shown[:, 1] > np.maximum(shown[:, 0], shown[:, 2]) + 10) < 0.1
  # Where no layer is, the background is the photo itself.
  away = scene.moving_mask == 0
  np.testing.assert_allclose(layers.background[away], scene.frames[0][away], atol=0.5)


def test_unmix_keeps_frame_0_the_photo_for_any_soft_edge():
  # A soft edge need not lie on the picture's own edge (the cue's edges come
  # from texture, not colour): wherever the inpainted background would ask
  # for a colour outside [0, 255], the background gives way instead.
  rng = np.random.default_rng(0)
  picture = rng.integers(0, 256, (32, 48, 3)).astype(np.uint8)
  inpainted = rng.integers(0, 256, (32, 48, 3)).astype(np.uint8)
  alpha = rng.choice([0.0, 0.01, 0.1, 0.5, 0.9, 1.0], (32, 48)).astype(np.float32)
  inpainted[alpha == 0] = picture[alpha == 0]  # As `inpaint_background` leaves it.
  foreground, background = photo_scenes.unmix(picture, inpainted, alpha)
  a = alpha[..., None]
  np.testing.assert_allclose(a * foreground + (1 - a) * background, picture, atol=1e-3)
  for colours in (foreground, background):
    assert colours.dtype == np.float32 and colours.min() >= 0 and colours.max() <= 255
  # Under the plant's core and away from it, the background is the given one.
  solid = (alpha == 0) | (alpha == 1)
  np.testing.assert_allclose(background[solid], inpainted[solid], atol=1e-3)
  np.testing.assert_array_equal(foreground[alpha == 0], picture[alpha == 0])


def _write_photos(directory, tints):
  """One grass photo per tint, ``photo_<i>.png``; returns the tints' order."""
  directory.mkdir()
  for i, tint in enumerate(tints):
    cv2.imwrite(str(directory / f"photo_{i}.png"), _green_grass(96, 144, tint)[..., ::-1])
  return directory


def test_split_photos(tmp_path):
  names = [tmp_path / f"p{i}.jpg" for i in range(30)]
  split = photo_scenes.split_photos(names)
  # About TEST_FRACTION = 10% held out (a binomial count: 1 to 7 of 30).
  assert 1 <= len(split["test"]) <= 7
  assert sorted(split["test"] + split["train"]) == sorted(names)
  assert not set(split["test"]) & set(split["train"])
  # Adding photos leaves the others where they were.
  bigger = photo_scenes.split_photos(names + [tmp_path / f"q{i}.jpg" for i in range(10)])
  assert set(split["test"]) <= set(bigger["test"])
  two = photo_scenes.split_photos(names[:2])
  assert len(two["train"]) == len(two["test"]) == 1
  with pytest.raises(ValueError, match="at least 2 photos"):
    photo_scenes.split_photos(names[:1])


def test_source_splits_by_photo_and_is_deterministic(tmp_path):
  # Each photo has its own tint: an example's mean colour tells its photo.
  tints = [(0.55, 1.0, 0.35), (0.9, 1.0, 0.2), (0.3, 0.8, 0.5), (0.7, 0.9, 0.6), (0.4, 1.0, 0.1)]
  folder = _write_photos(tmp_path / "photos", tints)
  split = photo_scenes.split_photos(photo_scenes.list_photos(folder))
  held_out = {int(p.stem.split("_")[1]) for p in split["test"]}
  assert held_out and len(held_out) < len(tints)

  def source(split_name):
    return sources.SyntheticExamples(split_name, num_examples=6, num_frames=16, fps=30.0,
                                     height=32, width=48, num_freqs=4, num_render_frames=2,
                                     photos=str(folder))

  def photo_of(example):
    colour = example["image"].reshape(-1, 3).mean(0)
    means = [_green_grass(96, 144, tint).reshape(-1, 3).mean(0) for tint in tints]
    return int(np.argmin([np.abs(colour - m).sum() for m in means]))

  for split_name in ("train", "test"):
    used = {photo_of(source(split_name)[i]) for i in range(6)}
    assert (used <= held_out) if split_name == "test" else not used & held_out, split_name
  train, again = source("train"), source("train")
  example = train[1]
  painted = sources.SyntheticExamples("train", num_examples=2, num_frames=16, fps=30.0,
                                      height=32, width=48, num_freqs=4, num_render_frames=2)[1]
  assert {k: (v.shape, v.dtype) for k, v in example.items()} == {
      k: (v.shape, v.dtype) for k, v in painted.items()}
  for key, value in again[1].items():
    np.testing.assert_array_equal(value, example[key], err_msg=key)
  assert np.abs(example["spectral_volume"].astype(np.float32)).max() > 0.1
  # Through the config: `data.synthetic.photos` names the folder.
  config = config_base.base_config("vae", "tiny")
  assert config.data.synthetic.photos == ""
  config.data.synthetic.photos = str(folder)
  config.data.synthetic.num_frames = 16
  opened = sources.open_source(config.data, "test")
  assert {photo_of(opened[i]) for i in range(3)} <= held_out
  assert config_base.absolute_paths(config).data.synthetic.photos == str(folder.absolute())


def test_synth_from_photos_writes_videos_and_motion(tmp_path, capsys):
  folder = _write_photos(tmp_path / "photos", [(0.55, 1.0, 0.35), (0.9, 1.0, 0.2)])
  out = tmp_path / "out"
  frames, size = 16, (64, 48)
  assert cli.main(["synth", "--from-photos", str(folder), "-o", str(out), "--num", "2",
                   "--seed", "7", "--frames", str(frames), "--size", "64x48", "--K", "4"]) == 0
  assert "from the photos" in capsys.readouterr().out
  for seed in (7, 8):
    clip = video_io.read_clip(out / f"scene_{seed:05d}.mp4", num_frames=frames, fps=30.0,
                              size=size)
    motion = Motion.load(out / f"scene_{seed:05d}_motion.npz")
    assert clip.shape == (frames, 48, 64, 3)
    assert motion.spectral_volume.shape == (4, 48, 64, 2) and motion.num_frames == frames
    # The picture is (a crop of) a grass photo, and the grass sways.
    image = motion.image.astype(int)
    assert np.mean((image[..., 1] > image[..., 0]) & (image[..., 1] > image[..., 2])) > 0.9
    assert np.mean(np.abs(motion.spectral_volume[1:]).max((0, 3)) > 0.01) > 0.5
    # The video starts on the motion file's picture (H.264 is lossy).
    assert np.abs(clip[0].astype(int) - motion.image).mean() < 6
  empty = tmp_path / "empty"
  empty.mkdir()
  assert cli.main(["synth", "--from-photos", str(empty), "-o", str(out), "--num", "1"]) == 2
  assert "no pictures" in capsys.readouterr().err


def test_defaults_are_the_data_configs():
  """A photo scene's clip defaults to configs/data.py's paper clips, its
  amplitude bound to the training configs', as a painted scene's."""
  assert clip_defaults(photo_scenes.make_scene) == paper_scene_defaults()
