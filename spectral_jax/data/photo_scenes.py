"""Synthetic training clips from real photos: what moves is what the picture
shows (docs/DESIGN.md §2).

`synthetic.make_scene` paints plant-like layers over a still photo; here the
photo's own vegetation sways instead, so a renderer trained on these clips
sees real textures move and real backgrounds uncovered:

1. `vegetation_mask` finds vegetation-like pixels by colour and texture
   (green to yellow, saturated enough, lit enough, and textured), smoothed.
   Sky, grey, skin, wood and smooth painted surfaces fail one of the cues
   and stay still.
2. `vegetation_layers` groups the mask into up to ``max_layers`` layers, one
   per plant-sized connected region; the rest of the picture is still.
3. Each layer is anchored where it meets still ground (`anchor_shape`): its
   mode shape is ``clip(s, 0, 1)^2`` of the distance ``s`` from the anchor,
   as `synthetic._cantilever`'s, and it sways with `synthetic._sway`'s
   spectrum (power ``exp(-f / 1 Hz)``, falling with frequency).
4. The background under the layers is inpainted (`cv2.inpaint`), and the
   layers' colours are the photo unmixed from that background at their soft
   edges, so frame 0 is the photo and a swaying plant uncovers a plausible
   background. Ground truth and frames come from `synthetic.assemble_scene`,
   exactly as for the painted layers.

Water is not detected: blue water and blue sky look alike to these cues, so
both stay still.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import cv2
import numpy as np

from spectral_jax.data import defaults, synthetic
from spectral_jax.data.synthetic import SyntheticScene

# Colour cues, on OpenCV's HSV of RGB in [0, 1] (hue in degrees). Each
# ``(low, high)`` is a linear ramp from 0 at ``low`` to 1 at ``high``.
# Green (yellow-green to blue-green) counts from a low saturation: leaves in
# shade or haze are greyish green. Cyan to blue (sky, water) is out.
_GREEN_HUE_DEG = ((55.0, 70.0), (160.0, 180.0))  # In, then out.
_GREEN_SATURATION = (0.12, 0.25)
# Yellow (golden grass, yellow leaves and flowers) shares its hue with
# wood, sand, sunset clouds and lit skin, which are less saturated, and with
# olive-brown (fur, eyes, wood in shade), which is darker: it counts only
# when strongly saturated and bright. Orange and red (skin, wood, brick,
# fallen autumn leaves) are out.
_YELLOW_HUE_DEG = ((32.0, 40.0), (60.0, 75.0))
_YELLOW_SATURATION = (0.55, 0.75)
_YELLOW_VALUE = (0.3, 0.5)
# Below this value (HSV V) hue is noise.
_VALUE = (0.06, 0.15)
# Texture: local mean of the luma gradient magnitude, grey levels per pixel
# at the paper's 160-pixel height. Foliage is busy; clear sky, painted walls
# and car bodies are smooth.
_TEXTURE = (1.5, 4.0)
_TEXTURE_SIGMA_PX = 2.0
# The cues' product is blurred by this (px at 160 high), then ramped: soft
# edges about a pixel wide, specks of a pixel or two gone.
_SMOOTH_SIGMA_PX = 1.5
_SMOOTH_RAMP = (0.2, 0.6)
# Lengths above are for a picture this many pixels on its short side.
_REFERENCE_PX = 160.0

# Share of the photos held out as the test split (at least one photo each).
TEST_FRACTION = 0.1

# A loaded photo is shrunk until its largest crop of the frame's aspect
# ratio is at most this many times the frame: crops (50-100% of that) are
# then never enlarged, and a folder of big photos stays small in memory.
_LOAD_SCALE = 2.0


def _ramp(x: np.ndarray, low: float, high: float) -> np.ndarray:
  return np.clip((x - low) / (high - low), 0.0, 1.0)


def _band(x: np.ndarray, rise, fall) -> np.ndarray:
  """1 between the ramps ``rise`` (0 -> 1) and ``fall`` (1 -> 0), else 0."""
  return _ramp(x, *rise) * (1.0 - _ramp(x, *fall))


def vegetation_mask(image: np.ndarray) -> np.ndarray:
  """float32 ``[H, W]`` in [0, 1]: how much each pixel looks like vegetation.

  The product of per-pixel cues, each a linear ramp (constants above):
  colour (green hue at any but grey saturation, or yellow hue at strong
  saturation and brightness; lit enough for the hue to mean something) times texture (the
  luma gradient's local mean). The product is blurred, which fills the
  dark gaps between leaves and softens edges, and ramped back to [0, 1].
  Lengths scale with the picture's short side (`_REFERENCE_PX`).

  Args:
    image: uint8 ``[H, W, 3]`` RGB.
  """
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise ValueError(f"vegetation_mask takes uint8 [H, W, 3] RGB, got {image.dtype} "
                     f"{image.shape}")
  scale = min(image.shape[:2]) / _REFERENCE_PX
  hsv = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)
  hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  green = _band(hue, *_GREEN_HUE_DEG) * _ramp(saturation, *_GREEN_SATURATION)
  yellow = (_band(hue, *_YELLOW_HUE_DEG) * _ramp(saturation, *_YELLOW_SATURATION)
            * _ramp(value, *_YELLOW_VALUE))
  colour = np.maximum(green, yellow) * _ramp(value, *_VALUE)

  luma = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
  # Sobel 3x3 sums 8 differences' worth: /8 gives grey levels per pixel.
  gradient = np.hypot(cv2.Sobel(luma, cv2.CV_32F, 1, 0, ksize=3),
                      cv2.Sobel(luma, cv2.CV_32F, 0, 1, ksize=3)) / 8.0
  energy = cv2.GaussianBlur(gradient, (0, 0), _TEXTURE_SIGMA_PX * scale)
  evidence = colour * _ramp(energy, *_TEXTURE)
  smooth = cv2.GaussianBlur(evidence, (0, 0), _SMOOTH_SIGMA_PX * scale)
  return _ramp(smooth, *_SMOOTH_RAMP).astype(np.float32)


def _disk(radius: int) -> np.ndarray:
  return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def vegetation_layers(mask: np.ndarray, *, max_layers: int = 6,
                      min_fraction: float = 0.01) -> np.ndarray:
  """float32 ``[R, H, W]``: ``mask`` split into plant-sized layers.

  The core of the vegetation (``mask > 0.5``) is grouped into regions, cores
  closer than ``2 g`` pixels joining one (``g`` = 3 smoothing sigmas, so
  leaves of one plant are one layer). A layer is its region's mask within
  ``g`` of its core: the layers never overlap, and together they hold the
  mask's soft edges. The ``max_layers`` largest regions with at least
  ``min_fraction`` of the frame in their core become layers, ordered by
  their lowest pixel (nearer the bottom, nearer the camera: in front); the
  rest of the mask stays still with the background.
  """
  height, width = mask.shape
  grow = max(2, round(3 * _SMOOTH_SIGMA_PX * min(height, width) / _REFERENCE_PX))
  core = (mask > 0.5).astype(np.uint8)
  count, groups = cv2.connectedComponents(cv2.dilate(core, _disk(grow)), connectivity=8)
  groups = np.where(core > 0, groups, 0)
  areas = np.bincount(groups.ravel(), minlength=count)[1:]  # Core pixels per group.
  kept = [g + 1 for g in np.argsort(-areas, kind="stable")[:max_layers]
          if areas[g] >= min_fraction * height * width]
  layers = [mask * cv2.dilate((groups == g).astype(np.uint8), _disk(grow)) for g in kept]
  if not layers:
    return np.zeros((0, height, width), np.float32)
  bottoms = [np.nonzero((groups == g).any(1))[0].max() for g in kept]
  return np.stack([layers[i] for i in np.argsort(bottoms, kind="stable")]).astype(np.float32)


def anchor_shape(rng: np.random.Generator, alpha: np.ndarray):
  """Where a vegetation layer is held still, and how it sways.

  The anchor is the side where the layer meets still ground: the bottom of
  the frame if the layer touches it; else the one side edge it enters
  from (a branch reaching in); else the top edge it hangs from; else (a
  plant wholly inside the frame) its own lowest row. ``s`` is the distance
  from the anchor over the layer's extent away from it, so the mode shape
  ``clip(s, 0, 1)^2`` is 0 at the anchor and 1 at the far end, smooth over
  the whole frame (the field never folds; `synthetic.fit_motion` bounds its
  strain).

  Args:
    alpha: float32 ``[H, W]`` the layer.
  Returns:
    shape: float32 ``[H, W]``, the mode shape.
    sway: float64 ``[2]`` unit vector, the first mode's direction: across
      the stalk (horizontal for plants held at the bottom or top, vertical
      for branches from the side), turned by a random angle (sd 0.3 rad),
      as in `synthetic._cantilever`.
  """
  height, width = alpha.shape
  rows, cols = np.nonzero(alpha > 0.5)
  top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
  y, x = np.mgrid[0:height, 0:width].astype(np.float32)
  # Positions are pixel centres: the far edge of pixel ``bottom`` is +0.5.
  vertical, horizontal = bottom - top + 1.0, right - left + 1.0
  at_left, at_right = left == 0, right == width - 1
  if bottom < height - 1 and at_left != at_right:
    s = (x + 0.5 - left) / horizontal if at_left else (right + 0.5 - x) / horizontal
    across = np.array([0.0, 1.0])
  elif bottom < height - 1 and top == 0:
    s = (y + 0.5) / vertical
    across = np.array([1.0, 0.0])
  else:
    s = (bottom + 0.5 - y) / vertical
    across = np.array([1.0, 0.0])
  turn = rng.normal(0.0, 0.3)
  sway = np.array([np.cos(turn) * across[0] - np.sin(turn) * across[1],
                   np.sin(turn) * across[0] + np.cos(turn) * across[1]])
  return (np.clip(s, 0, 1) ** 2).astype(np.float32), sway


def inpaint_background(picture: np.ndarray, coverage: np.ndarray) -> np.ndarray:
  """uint8 ``[H, W, 3]``: ``picture`` with what ``coverage`` ``[H, W]``
  covers (> 0) filled in from around it (`cv2.inpaint`, Telea): what a
  swaying plant uncovers. The hole is grown by a pixel so that no colour of
  the plant's soft edge leaks in; outside the coverage the background is the
  picture, bit for bit. With almost nothing left to fill from (a frame full
  of grass), a heavy blur of the picture stands in: dense vegetation behind
  vegetation."""
  height, width = coverage.shape
  covered = coverage > 0
  hole = cv2.dilate(covered.astype(np.uint8), _disk(1))
  if hole.mean() > 0.99:
    sigma = 0.1 * min(height, width)
    filled = cv2.GaussianBlur(picture, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
  else:
    radius = max(3, round(3 * min(height, width) / _REFERENCE_PX))
    filled = cv2.inpaint(picture, hole, radius, cv2.INPAINT_TELEA)
  return np.where(covered[..., None], filled, picture)


def unmix(picture: np.ndarray, background: np.ndarray, alpha: np.ndarray) -> np.ndarray:
  """float32 ``[H, W, 3]`` in [0, 255]: the foreground colour ``F`` with
  ``picture = alpha F + (1 - alpha) background`` (the compositing that
  `synthetic.render_frame` does), so frame 0 is the photo; at an edge pixel
  the layer carries only the plant's share of the colour, not a halo of
  what was behind it. Where ``alpha`` is below 0.02, ``F`` is the picture."""
  picture, background = picture.astype(np.float32), background.astype(np.float32)
  a = alpha[..., None]
  solved = (picture - (1.0 - a) * background) / np.maximum(a, 0.02)
  return np.where(a >= 0.02, np.clip(solved, 0.0, 255.0), picture).astype(np.float32)


def make_scene(photo: np.ndarray, seed: int, *, num_frames: int = defaults.NUM_FRAMES,
               height: int = defaults.HEIGHT, width: int = defaults.WIDTH,
               num_freqs: int = defaults.NUM_FREQS, fps: float = defaults.FPS,
               max_amplitude_px: float = defaults.MAX_AMPLITUDE_PX, render: bool = True,
               max_layers: int = 6,
               min_fraction: float = 0.01, modes_per_region: tuple[int, int] = (2, 4),
               freq_range_hz: tuple[float, float] = (0.2, 4.0), power_decay_hz: float = 1.0,
               gust_rate_hz: float = 0.3) -> SyntheticScene:
  """A clip of ``photo``'s vegetation swaying: same photo and seed, bitwise
  the same arrays.

  The seed picks a random crop of the photo (`synthetic.random_crop`: the
  frame's aspect ratio, 50-100% of the largest such crop, flipped half of the
  time), each layer's sway direction and its oscillators. A photo with no
  vegetation gives a still clip (all of ``disp_px`` 0).

  Args:
    photo: uint8 ``[h, w, 3]`` RGB, any size.
    seed: picks the crop and the motion.
    max_layers, min_fraction: `vegetation_layers`.
    Others: as `synthetic.make_scene`'s (the amplitude and strain bounds are
    the same).
  Returns:
    A `synthetic.SyntheticScene`; ``layers.background`` is the inpainted
    picture, ``layers.colours`` the unmixed photo, ``moving_mask`` the
    layers' coverage.
  """
  if photo.ndim != 3 or photo.shape[-1] != 3 or photo.dtype != np.uint8:
    raise ValueError(f"photo must be uint8 [H, W, 3] RGB, got {photo.dtype} {photo.shape}")
  rng = np.random.default_rng(seed)
  picture = synthetic.random_crop(rng, photo, height, width)
  alphas = vegetation_layers(vegetation_mask(picture), max_layers=max_layers,
                             min_fraction=min_fraction)
  anchors = [anchor_shape(rng, alpha) for alpha in alphas]
  shapes = np.stack([shape for shape, _ in anchors]) if anchors else np.zeros_like(alphas)
  sways = np.stack([sway for _, sway in anchors]) if anchors else np.zeros((0, 2))
  motion = synthetic.layer_motion(
      rng, sways, num_frames=num_frames, fps=fps, max_amplitude_px=max_amplitude_px,
      modes_per_region=modes_per_region, freq_range_hz=freq_range_hz,
      power_decay_hz=power_decay_hz, gust_rate_hz=gust_rate_hz)
  motion = synthetic.fit_motion(motion, alphas, shapes, max_amplitude_px)
  background = inpaint_background(picture, alphas.sum(0))
  # The layers do not overlap: one unmixed picture serves them all.
  foreground = unmix(picture, background, alphas.sum(0))
  colours = np.broadcast_to(foreground, (len(alphas), *foreground.shape))
  return synthetic.assemble_scene(background.astype(np.float32), colours, alphas, shapes,
                                  motion, num_freqs=num_freqs, fps=fps, render=render)


@functools.lru_cache(maxsize=256)
def load_photo(path, height: int, width: int) -> np.ndarray:
  """uint8 ``[h, w, 3]`` RGB: the photo at ``path`` (`read_picture`: EXIF
  orientation, grey and RGBA converted), shrunk (area filter) to at most
  `_LOAD_SCALE` times the largest crop ``make_scene`` resizes to
  ``height x width``. Cached (read-only), so a data source decodes each photo
  once."""
  from spectral_jax.data.pictures import read_picture
  image = read_picture(path)
  factor = _LOAD_SCALE / min(image.shape[0] / height, image.shape[1] / width)
  if factor < 1.0:
    size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
  image.setflags(write=False)
  return image


def list_photos(directory) -> list[Path]:
  """The pictures directly in ``directory``, sorted (`list_pictures`:
  .jpg, .png and other formats; raises if there are none)."""
  from spectral_jax.data.pictures import list_pictures
  return list_pictures(directory)


def split_photos(photos, test_fraction: float = TEST_FRACTION) -> dict[str, list[Path]]:
  """``{"train": [...], "test": [...]}``: ``photos`` split by a hash of their
  file names, so a photo stays in its split when others are added and a
  held-out photo is never trained on.

  A photo is in ``test`` when its hash, as a fraction of 2^64, is below
  ``test_fraction``; if that leaves a split empty, the photo with the
  smallest (or largest) hash moves over, so both have one.

  Raises:
    ValueError: fewer than 2 photos.
  """
  photos = sorted(Path(p) for p in photos)
  if len(photos) < 2:
    raise ValueError(f"photo scenes need at least 2 photos (1 to train on, 1 held out), "
                     f"got {len(photos)}")
  def position(path: Path) -> float:
    digest = hashlib.sha256(path.name.encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64
  by_hash = sorted(photos, key=lambda p: (position(p), p.name))
  num_test = sum(position(p) < test_fraction for p in photos)
  num_test = min(max(num_test, 1), len(photos) - 1)
  test = set(by_hash[:num_test])
  return {"train": [p for p in photos if p not in test], "test": [p for p in photos if p in test]}
