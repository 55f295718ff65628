"""Synthetic training clips from real photos: what moves is what the picture
shows (docs/DESIGN.md §2).

`synthetic.make_scene` paints plant-like layers over a still photo; here the
photo's own vegetation sways instead, so a renderer trained on these clips
sees real textures move and real backgrounds uncovered:

1. `vegetation_mask` finds vegetation by its structure: leaves and grass
   are many small edges of every orientation, packed close, at any
   brightness and in any colour (green, pale, backlit, autumn). Smooth
   surfaces (sky, walls, skin, car bodies), lone outlines and corners, and
   parallel or periodic patterns (wood grain, stripes, fences, ripples)
   fail a structural test and stay still; colour vetoes sky blue and skin
   tones. Big smooth plants (a leaf filling the frame, broad blades,
   petals) have too few edges for that test: a second path counts plant
   colour with moderate texture inside it, over a large area, under the
   same vetoes against grain, stripes and repeats.
2. `vegetation_layers` groups the mask into up to ``max_layers`` layers, one
   per plant-sized connected region; the rest of the picture is still.
3. Each layer is anchored where it meets still ground (`anchor_shape`): its
   mode shape is ``clip(s, 0, 1)^2`` of the distance ``s`` from the anchor,
   as `synthetic._cantilever`'s, and it sways with `synthetic._sway`'s
   spectrum (power ``exp(-f / 1 Hz)``, falling with frequency).
4. The background under the layers is inpainted (`cv2.inpaint`), and the
   layers' colours are the photo unmixed from that background at their soft
   edges (`unmix`), so frame 0 is the photo and a swaying plant uncovers a
   plausible background. Ground truth and frames come from `synthetic.assemble_scene`,
   exactly as for the painted layers.

Water stays still: its ripples are smooth or parallel, and blue is vetoed.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import cv2
import numpy as np

from spectral_jax.data import defaults, synthetic
from spectral_jax.data.synthetic import SyntheticScene

# Lengths below are for a picture this many pixels on its short side (the
# model's height) and scale with it. `vegetation_mask` works on the picture
# resized to that size and resizes its mask back: it sees the same
# structures at any resolution, and a 1080p photo costs it little more.
_REFERENCE_PX = 160.0
# Contrast is measured on log luma, a ratio of brightnesses: leaves in shade
# or dark against a bright sky count as much as sunlit ones. This many grey
# levels are added first, so that sensor noise in near-black regions is not
# blown up into contrast.
_LOG_OFFSET = 20.0
# Leaf scale: the log luma is blurred by this (px) before its edges are
# found. Pixel-sized grain (plaster, sensor noise, JPEG blocks) averages
# away; leaves and blades, a few pixels across at this size, remain.
_DETAIL_SIGMA_PX = 1.4
# Edges: Canny's hysteresis thresholds on the blurred log luma's gradient,
# in natural-log units per pixel (0.02: brightness changing 2% a pixel). The
# detail of pale, washed-out foliage is above them, a noisy wall's below.
_EDGE_THRESHOLDS = (0.02, 0.04)
# Density: the share of pixels on an edge, Gaussian-averaged. Foliage is a
# mesh of short edges, 0.2-0.3; along one outline the share is about 0.08,
# where two meet about 0.15, so the share must be high both over a few
# leaves (`_DENSITY_SIGMA_PX`) and over a clump (`_CLUMP_SIGMA_PX`), around
# which a lone corner is thin. Ramps as ``_ramp``'s ``(low, high)``.
_DENSITY_SIGMA_PX = 5.0
_DENSITY = (0.08, 0.18)
_CLUMP_SIGMA_PX = 10.0
_CLUMP_DENSITY = (0.08, 0.16)
# Orientation: the coherence of the log luma's structure tensor over this
# Gaussian (0: gradients every way, 1: all parallel). Foliage is 0.1-0.5,
# a close-up of grass up to about 0.9; wood grain, stripes, weatherboard and
# ripples are 0.95-1, and count less from `_COHERENCE`'s low end.
_ORIENTATION_SIGMA_PX = 6.0
_COHERENCE = (0.85, 0.97)
# Regularity: a fence of pickets with cross rails has two orientations, so
# it passes the coherence test; what sets it apart from grass is that it
# repeats. The detail (log luma minus its blur by `_REGULARITY_BAND_PX`) is
# correlated with itself shifted by each of `_PERIODS_PX` across the
# dominant orientation (that of the structure tensor averaged over
# `_PERIOD_DIRECTION_SIGMA_PX`, a clump, so that on a fence's rails it is
# still the pickets'), products averaged over `_ORIENTATION_SIGMA_PX`. The
# best correlation is about 0.9 for a fence or an awning's stripes, 0.2-0.5
# for grass and foliage. Detail repeating at a shorter period is pixel grain.
_REGULARITY_BAND_PX = 3.0
_PERIOD_DIRECTION_SIGMA_PX = 12.0
_PERIODS_PX = (4, 5, 6, 7, 8, 10, 12, 14, 17, 20, 24)
_REGULARITY = (0.6, 0.85)
# Colour vetoes, on OpenCV's HSV of RGB in [0, 1] (hue in degrees): each
# ``(low, high)`` is a linear ramp from 0 at ``low`` to 1 at ``high``, each
# ``(rise, fall)`` pair a band. Colour never makes a pixel vegetation; it
# only rules out two things that texture can look like foliage in: blue
# sky and water (clouds' edges, glittering ripples, gravel in blue light)
# and skin tones (faces, fur, bare wood: light, moderately saturated orange
# to pink; autumn leaves are more saturated, or darker).
_BLUE_HUE_DEG = ((175.0, 195.0), (255.0, 275.0))
_BLUE_SATURATION = (0.15, 0.3)
_SKIN_HUE_DEG = ((-20.0, -10.0), (25.0, 40.0))  # Hue in [-180, 180).
_SKIN_SATURATION = ((0.12, 0.2), (0.5, 0.6))
_SKIN_VALUE = (0.3, 0.45)
# Colour-and-texture path (`_colour_texture`): plants that are not busy at
# the model's scale (one leaf filling the frame, broad blades, large petals)
# have too few edges for the density cue. Where the colour is a plant's and
# the texture is moderate, neither grain nor stripes nor repeating, this
# path counts them; its evidence joins the structure cue's by a maximum, so
# it only ever adds. Plant colours: green to yellow-green at any but grey
# saturation (the hue band stops short of teal, which is water and paint
# more often than leaves), and vivid, lit colour of any hue (petals: HSV
# saturation above 0.75-0.9, value above 0.5-0.65; a red saucer or wood in
# shade is darker); the blue and skin vetoes below still apply.
_PLANT_HUE_DEG = ((50.0, 65.0), (130.0, 145.0))
_PLANT_SATURATION = (0.15, 0.3)
_VIVID_SATURATION = (0.75, 0.9)
_VIVID_VALUE = (0.5, 0.65)
# Below this HSV value hue is noise.
_COLOUR_VALUE = (0.06, 0.15)
# Texture is counted only inside plant colour: the gradient is weighted by
# the plant colour eroded by this (px), so the outline where a green car or
# a green stripe meets grey or white adds nothing; a leaf's veins and a
# petal's streaks, plant colour on both sides, do.
_WITHIN_PX = 2
# Texture energy: that weighted gradient of the leaf-scale log luma (log
# units per px) averaged over `_ENERGY_SIGMA_PX`. Leaves, petals and blades
# (training photos: median 0.02-0.04) are above the ramp's top; a painted
# wall (0.004) below its bottom.
_ENERGY_SIGMA_PX = 3.0
_ENERGY = (0.008, 0.018)
# Grain: the same energy on the unblurred log luma over the leaf-scale one.
# Random grain a pixel across (stucco, sensor noise) mostly averages away in
# the blur (ratio about 3.3); leaves, petals and blades keep their energy
# (1-1.5; a frame of fine dry grass 2.3, which the structure cue counts).
_GRAIN = (2.2, 2.7)
# The path's orientation veto is looser than the structure cue's: a pleated
# leaf or a stand of broad blades is 0.8-0.92, wood grain, stripes and
# ripples 0.95-1. (The regularity veto is the structure cue's.)
_PATH_COHERENCE = (0.93, 0.98)
# Extent: a macro plant fills much of the frame, so the path counts only
# where its own evidence, averaged over `_EXTENT_SIGMA_PX`, is high. Small
# patches of plant colour with some texture, a car body's highlight meeting
# its panel line, a few green slats, stay out; small plants are the
# structure cue's.
_EXTENT_SIGMA_PX = 10.0
_EXTENT = (0.5, 0.8)

# The evidence is blurred by this (px), then ramped: soft edges about a
# pixel wide, the dark gaps between leaves filled, specks gone.
_SMOOTH_SIGMA_PX = 1.5
_SMOOTH_RAMP = (0.25, 0.6)

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


def _blur(x: np.ndarray, sigma_px: float) -> np.ndarray:
  return cv2.GaussianBlur(x, (0, 0), sigma_px, borderType=cv2.BORDER_REFLECT)


def _regularity(detail: np.ndarray, normal: np.ndarray) -> np.ndarray:
  """float32 ``[H, W]``, about -1 to 1: how well ``detail`` repeats across
  its stripes, the best normalised correlation of ``detail`` with itself shifted
  by one of `_PERIODS_PX` along ``normal`` (``[2, H, W]`` unit x, y), each
  product Gaussian-averaged over `_ORIENTATION_SIGMA_PX`."""
  energy = _blur(detail * detail, _ORIENTATION_SIGMA_PX) + 1e-8
  y, x = np.mgrid[0:detail.shape[0], 0:detail.shape[1]].astype(np.float32)
  best = np.full(detail.shape, -1.0, np.float32)
  for period in _PERIODS_PX:
    map_x, map_y = x + period * normal[0], y + period * normal[1]
    shifted, shifted_energy = (cv2.remap(v, map_x, map_y, cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_REFLECT)
                               for v in (detail, energy))
    correlation = _blur(detail * shifted, _ORIENTATION_SIGMA_PX) / np.sqrt(
        energy * shifted_energy)
    best = np.maximum(best, correlation)
  return best


def _colour_texture(image_hsv: np.ndarray, luma: np.ndarray, log_luma: np.ndarray,
                    gradient: np.ndarray, coherence: np.ndarray,
                    vetoes: np.ndarray) -> np.ndarray:
  """float32 ``[H, W]`` in [0, 1]: the colour-and-texture path's evidence.

  Plant colour (green, or vivid and lit) times moderate texture inside that
  colour, less fine grain, strong orientation, and ``vetoes`` (the product
  of the other vetoes' ``1 - v``: regularity, blue, skin), kept only where
  the path holds over a large area (`_EXTENT`). Constants and reasons are at
  the module's top.

  Args:
    image_hsv: float32 ``[H, W, 3]`` OpenCV HSV (hue in degrees).
    luma: float32 ``[H, W]`` grey levels; ``log_luma`` its log at leaf scale.
    gradient: float32 ``[H, W]`` ``log_luma``'s gradient magnitude (per px).
    coherence: float32 ``[H, W]`` the structure tensor's coherence.
  """
  hue, saturation, value = image_hsv[..., 0], image_hsv[..., 1], image_hsv[..., 2]
  green = _band(hue, *_PLANT_HUE_DEG) * _ramp(saturation, *_PLANT_SATURATION)
  vivid = _ramp(saturation, *_VIVID_SATURATION) * _ramp(value, *_VIVID_VALUE)
  colour = np.maximum(green, vivid) * _ramp(value, *_COLOUR_VALUE)
  within = cv2.erode(colour, _disk(_WITHIN_PX))
  energy = _blur(gradient * within, _ENERGY_SIGMA_PX)
  raw = np.log(luma + _LOG_OFFSET)
  raw_gradient = np.hypot(cv2.Sobel(raw, cv2.CV_32F, 1, 0, ksize=3),
                          cv2.Sobel(raw, cv2.CV_32F, 0, 1, ksize=3)) / 8.0
  grain = _blur(raw_gradient * within, _ENERGY_SIGMA_PX) / (energy + 1e-3)
  path = (colour * _ramp(energy, *_ENERGY) * (1.0 - _ramp(grain, *_GRAIN))
          * (1.0 - _ramp(coherence, *_PATH_COHERENCE)) * vetoes)
  return path * _ramp(_blur(path, _EXTENT_SIGMA_PX), *_EXTENT)


def vegetation_mask(image: np.ndarray) -> np.ndarray:
  """float32 ``[H, W]`` in [0, 1]: how much each pixel looks like vegetation.

  Foliage and grass at the model's scale are many small details of high
  contrast, packed close, at every orientation; that holds in sun, shade,
  haze and backlight and for green, yellow and autumn leaves alike, so
  structure decides first. On the picture resized to
  `_REFERENCE_PX` on its short side (lengths and constants above), the
  product of cues, each a linear ramp:

  * density: edges (Canny on the log luma blurred to leaf scale) are dense
    over a few leaves and over a clump. Rules out smooth surfaces (sky,
    walls, skin, car bodies, bokeh), pixel noise, and lone outlines and
    corners.
  * orientation: the structure tensor is not coherent. Rules out wood grain,
    stripes, ripples.
  * regularity: the detail does not repeat across its stripes. Rules out
    fences and awnings.
  * colour: not sky blue, not skin (vetoes only).

  Big smooth plants (a leaf filling the frame, broad blades, petals) have
  too few edges for the density cue; a second path (`_colour_texture`)
  counts plant colour (green, or vivid and lit) with moderate texture inside
  it, less fine grain, strong orientation, the regularity and colour vetoes,
  over a large area. The mask takes the larger of the two.

  The result is blurred, which fills the dark gaps between leaves and
  softens edges, ramped back to [0, 1] and resized to the picture.

  Args:
    image: uint8 ``[H, W, 3]`` RGB.
  """
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise ValueError(f"vegetation_mask takes uint8 [H, W, 3] RGB, got {image.dtype} "
                     f"{image.shape}")
  height, width = image.shape[:2]
  factor = _REFERENCE_PX / min(height, width)
  if factor != 1.0:
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if factor < 1
                       else cv2.INTER_LINEAR)

  luma = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
  log_luma = _blur(np.log(luma + _LOG_OFFSET), _DETAIL_SIGMA_PX)
  # Sobel 3x3 sums 8 differences' worth: /8 gives log units per pixel.
  grad_x = cv2.Sobel(log_luma, cv2.CV_32F, 1, 0, ksize=3) / 8.0
  grad_y = cv2.Sobel(log_luma, cv2.CV_32F, 0, 1, ksize=3) / 8.0
  # Canny on given gradients takes them as int16: in thousandths.
  edges = cv2.Canny(np.round(grad_x * 1000).astype(np.int16),
                    np.round(grad_y * 1000).astype(np.int16),
                    1000 * _EDGE_THRESHOLDS[0], 1000 * _EDGE_THRESHOLDS[1], L2gradient=True)
  density = _blur((edges > 0).astype(np.float32), _DENSITY_SIGMA_PX)
  clump = _blur(density, (_CLUMP_SIGMA_PX**2 - _DENSITY_SIGMA_PX**2) ** 0.5)

  xx, xy, yy = (_blur(v, _ORIENTATION_SIGMA_PX)
                for v in (grad_x * grad_x, grad_x * grad_y, grad_y * grad_y))
  coherence = np.hypot(xx - yy, 2 * xy) / (xx + yy + 1e-8)
  # The dominant gradient's direction, over a clump: across the pickets even
  # on a fence's cross rails.
  wide = (_PERIOD_DIRECTION_SIGMA_PX**2 - _ORIENTATION_SIGMA_PX**2) ** 0.5
  wide_xx, wide_xy, wide_yy = (_blur(v, wide) for v in (xx, xy, yy))
  angle = 0.5 * np.arctan2(2 * wide_xy, wide_xx - wide_yy)
  detail = log_luma - _blur(log_luma, _REGULARITY_BAND_PX)
  regularity = _regularity(detail, np.stack([np.cos(angle), np.sin(angle)]))

  hsv = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)
  hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  blue = _band(hue, *_BLUE_HUE_DEG) * _ramp(saturation, *_BLUE_SATURATION)
  skin = (_band((hue + 180.0) % 360.0 - 180.0, *_SKIN_HUE_DEG)
          * _band(saturation, *_SKIN_SATURATION) * _ramp(value, *_SKIN_VALUE))

  vetoes = (1.0 - _ramp(regularity, *_REGULARITY)) * (1.0 - blue) * (1.0 - skin)
  structure = (_ramp(density, *_DENSITY) * _ramp(clump, *_CLUMP_DENSITY)
               * (1.0 - _ramp(coherence, *_COHERENCE)) * vetoes)
  path = _colour_texture(hsv, luma, log_luma, np.hypot(grad_x, grad_y), coherence, vetoes)
  evidence = np.maximum(structure, path)
  mask = _ramp(_blur(evidence, _SMOOTH_SIGMA_PX), *_SMOOTH_RAMP).astype(np.float32)
  if factor != 1.0:
    mask = np.clip(cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR), 0, 1)
  return mask


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


def unmix(picture: np.ndarray, background: np.ndarray,
          alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """``(foreground, background)``, float32 ``[H, W, 3]`` in [0, 255], with
  ``picture = alpha F + (1 - alpha) B`` (the compositing that
  `synthetic.render_frame` does), so frame 0 is the photo; at an edge pixel
  the layer carries only the plant's share of the colour, not a halo of
  what was behind it.

  ``B`` is the given (inpainted) background wherever the ``F`` it implies,
  ``picture + (1 - alpha) / alpha (picture - B)``, stays within [0, 255].
  Where it would not (a soft edge that does not lie on an edge of the
  picture, or ``alpha`` near 0, where the difference is magnified), ``B``
  there is moved towards the picture just far enough that it does, the
  same share of the way in all three channels. Where ``alpha`` is 0, ``F``
  is the picture and ``B`` the given background."""
  picture, background = picture.astype(np.float32), background.astype(np.float32)
  a = alpha[..., None].astype(np.float32)
  difference = picture - background
  gain = (1.0 - a) / np.maximum(a, 1e-6)
  # F moves from the picture by gain * share * difference: the largest
  # share in [0, 1] that keeps every channel within [0, 255].
  room = np.where(difference > 0, 255.0 - picture, picture)
  reach = gain * np.abs(difference)
  share = np.min(np.where(reach > room, room / np.maximum(reach, 1e-6), 1.0), axis=-1,
                 keepdims=True)
  covered = a > 0
  foreground = np.where(covered, np.clip(picture + gain * share * difference, 0, 255), picture)
  background = np.where(covered, picture - share * difference, background)
  return foreground.astype(np.float32), background.astype(np.float32)


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
    picture and ``layers.colours`` the photo, unmixed (`unmix`);
    ``moving_mask`` is the layers' coverage.
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
  coverage = alphas.sum(0)
  # The layers do not overlap: one unmixed picture serves them all.
  foreground, background = unmix(picture, inpaint_background(picture, coverage), coverage)
  colours = np.broadcast_to(foreground, (len(alphas), *foreground.shape))
  return synthetic.assemble_scene(background, colours, alphas, shapes,
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
