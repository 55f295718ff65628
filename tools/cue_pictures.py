"""Pictures made by code to check the vegetation cue (`photo_scenes.vegetation_mask`).

  python tools/cue_pictures.py OUT_DIR [--size 256x160] [--seed 0]

writes ``OUT_DIR/not_plants/<name>.png`` (green things that must stay still:
a painted wall, a noisy stucco wall, a car, an awning, a picket fence,
painted planks, rippled water) and ``OUT_DIR/plants/<name>.png`` (a foliage
texture in several lights and seasons, and one big leaf filling the frame, a
macro shot: all must sway). Real photos cannot
show these cases one at a time, and the project's own drawings carry the
project's licence, so docs and tests can use them.

The foliage is many small leaf-shaped ellipses at random orientations over
a darker (or, backlit, brighter) background, the leaves further back drawn
darker: what makes foliage foliage at the model's scale, without its colour.
Lengths are for a picture 160 pixels on its short side and scale with it,
as the cue's do. Shapes (leaves, the car, the awning, the fence) are drawn
4 times larger and shrunk (area filter), so their edges are anti-aliased
as in a photo.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

# Lengths below are for a picture this many pixels on its short side.
REFERENCE_PX = 160.0
# Drawn this many times larger, then shrunk: anti-aliased edges.
_SUPERSAMPLE = 4

# Leaf colours (RGB) and the colour seen between the leaves, per foliage
# picture: fresh green, pale washed-out yellow-green (haze, overexposure),
# autumn (orange, red, brown, yellow), deep shade, and backlit (dark leaves
# against a bright overcast sky).
FOLIAGE = {
    "foliage_green": ([(70, 135, 45), (95, 150, 50), (50, 110, 40)], (20, 40, 15)),
    "foliage_pale": ([(200, 215, 160), (185, 200, 150), (215, 220, 175)], (135, 150, 110)),
    "foliage_autumn": ([(205, 110, 35), (165, 55, 30), (120, 80, 40), (215, 170, 50)],
                       (55, 35, 20)),
    "foliage_shade": ([(30, 55, 25), (38, 62, 30), (24, 45, 22)], (8, 14, 8)),
    "foliage_backlit": ([(40, 48, 32), (30, 36, 26), (52, 60, 40)], (228, 232, 236)),
}
# Paint (RGB) of the green things that are not plants.
_GREEN_PAINT = (70, 140, 60)
_WHITE_PAINT = (232, 232, 222)


def _canvas(height: int, width: int, colour) -> np.ndarray:
  return np.broadcast_to(np.float32(colour), (height, width, 3)).copy()


def _shrink(big: np.ndarray, height: int, width: int) -> np.ndarray:
  small = cv2.resize(big.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
  return np.clip(np.rint(small), 0, 255).astype(np.uint8)


def _noise(rng: np.random.Generator, height: int, width: int, sigma_px: float) -> np.ndarray:
  """float32 ``[H, W]``, zero mean, unit deviation: white noise blurred by ``sigma_px``."""
  field = rng.normal(0.0, 1.0, (height, width)).astype(np.float32)
  if sigma_px > 0:
    field = cv2.GaussianBlur(field, (0, 0), sigma_px)
  return (field - field.mean()) / max(float(field.std()), 1e-6)


def _lighting(height: int, width: int, low: float, high: float, angle: float) -> np.ndarray:
  """float32 ``[H, W, 1]``: brightness ramping from ``low`` to ``high`` across the
  picture along direction ``angle`` (radians): light falling off over a surface."""
  y, x = np.mgrid[0:height, 0:width].astype(np.float32)
  t = np.cos(angle) * x / width + np.sin(angle) * y / height
  t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
  return (low + (high - low) * t)[..., None]


def foliage(height: int, width: int, seed: int, leaves, gap, *, leaf_px: float = 10.0,
            cover: float = 2.5) -> np.ndarray:
  """uint8 ``[H, W, 3]``: a canopy of small leaves, nothing but foliage.

  Leaves are ellipses ``leaf_px`` long (x 0.6-1.4) and a third to a half as
  wide, at uniform random orientations, in clumps (twigs) about four leaves
  across; each is one of ``leaves``' colours times a brightness of
  0.75-1.25, and ``cover`` leaf areas fall on each unit of picture area.
  Later (front) leaves are brighter than earlier ones, by 0.7 to 1, unless
  the background ``gap`` is brighter than the leaves (backlit): then they
  are silhouettes, all alike, and half as many, so the sky shows through.
  """
  rng = np.random.default_rng(seed)
  s = _SUPERSAMPLE
  big_h, big_w = height * s, width * s
  length = leaf_px * min(height, width) / REFERENCE_PX * s
  backlit = np.mean(gap) > np.mean(leaves)
  big = _canvas(big_h, big_w, gap)
  # Light and shade over the canopy, a leaf and a bit across (made small).
  shade = _noise(rng, height, width, 1.2 * length / s)
  big *= 1 + 0.1 * cv2.resize(shade, (big_w, big_h), interpolation=cv2.INTER_LINEAR)[..., None]
  count = int(cover / (2 if backlit else 1) * big_h * big_w / (np.pi / 4 * 0.4 * length**2))
  clumps = rng.uniform((-length, -length), (big_w + length, big_h + length),
                       (max(1, count // 30), 2))
  centres = clumps[rng.integers(len(clumps), size=count)] + rng.normal(0, 2.0 * length, (count, 2))
  sizes = length * rng.uniform(0.6, 1.4, count)
  widths = sizes * rng.uniform(0.3, 0.5, count)
  angles = rng.uniform(0, 180, count)
  colours = np.float32(leaves)[rng.integers(len(leaves), size=count)]
  if not backlit:
    depth = 0.7 + 0.3 * np.arange(count) / count
    colours *= (depth * rng.uniform(0.75, 1.25, count))[:, None]
  colours = np.clip(colours, 0, 255).tolist()
  for i in range(count):
    cv2.ellipse(big, ((float(centres[i, 0]), float(centres[i, 1])),
                      (float(sizes[i]) / 2, float(widths[i]) / 2), float(angles[i])),
                colours[i], -1, cv2.LINE_AA)
  return _shrink(big, height, width)


def green_wall(height: int, width: int, seed: int) -> np.ndarray:
  """A flat wall in green paint: light falling off across it, faint blotches
  of uneven paint, and sensor noise of 3 grey levels."""
  rng = np.random.default_rng(seed)
  picture = _canvas(height, width, _GREEN_PAINT) * _lighting(height, width, 0.75, 1.15, 0.5)
  picture *= 1 + 0.04 * _noise(rng, height, width, 8 * min(height, width) / REFERENCE_PX)[
      ..., None]
  picture += rng.normal(0, 3.0, picture.shape)
  return np.clip(np.rint(picture), 0, 255).astype(np.uint8)


def green_stucco(height: int, width: int, seed: int) -> np.ndarray:
  """A green wall of rough plaster: grain a pixel across, of 8% contrast, and
  sensor noise of 4 grey levels. Busy but without leaves' structure."""
  rng = np.random.default_rng(seed)
  scale = min(height, width) / REFERENCE_PX
  picture = _canvas(height, width, _GREEN_PAINT) * _lighting(height, width, 0.8, 1.1, 2.0)
  picture *= 1 + 0.08 * _noise(rng, height, width, 0.6 * scale)[..., None]
  picture += rng.normal(0, 4.0, picture.shape)
  return np.clip(np.rint(picture), 0, 255).astype(np.uint8)


def green_car(height: int, width: int, seed: int) -> np.ndarray:
  """A green car from the side before a grey wall, on a road: a smooth body
  shaded as a cylinder, dark glass with a soft reflection, a panel line, a
  highlight, two wheels."""
  rng = np.random.default_rng(seed)
  s = _SUPERSAMPLE
  big_h, big_w = height * s, width * s
  u = min(height, width) / REFERENCE_PX * s  # Big pixels per reference pixel.
  big = _canvas(big_h, big_w, (150, 150, 146)) * _lighting(big_h, big_w, 0.85, 1.05, 0.2)
  road = int(0.72 * big_h)
  big[road:] = np.float32((90, 90, 92))
  y, x = np.mgrid[0:big_h, 0:big_w].astype(np.float32)
  left, right = 0.12 * big_w, 0.88 * big_w
  bottom, waist, roof = road - 12 * u, road - 50 * u, road - 82 * u
  body = np.zeros((big_h, big_w), np.uint8)
  cv2.rectangle(body, (int(left), int(waist)), (int(right), int(bottom)), 1, -1)
  cabin = np.int32([(left + 0.22 * (right - left), waist), (left + 0.36 * (right - left), roof),
                    (left + 0.70 * (right - left), roof), (left + 0.84 * (right - left), waist)])
  cv2.fillPoly(body, [cabin], 1)
  # Cylinder shading: brightest a third of the way down the body.
  t = np.clip((y - roof) / (bottom - roof), 0, 1)
  shade = 0.65 + 0.5 * np.cos(np.pi * (t - 0.35)) ** 2
  paint = np.float32(_GREEN_PAINT)[None, None] * shade[..., None]
  big = np.where(body[..., None] > 0, paint, big)
  glass = np.zeros_like(body)
  inset = 6 * u
  window = np.int32([(cabin[0][0] + 2 * inset, waist - inset), (cabin[1][0] + inset, roof + inset),
                     (cabin[2][0] - inset, roof + inset), (cabin[3][0] - 2 * inset, waist - inset)])
  cv2.fillPoly(glass, [window], 1)
  reflection = 40 + 30 * np.clip((x - left) / (right - left), 0, 1)
  big = np.where(glass[..., None] > 0, reflection[..., None] * np.float32([0.9, 1.0, 1.0]), big)
  cv2.line(big, (int((left + right) / 2), int(waist)), (int((left + right) / 2), int(bottom)),
           tuple(float(c) * 0.6 for c in _GREEN_PAINT), max(1, int(u)), cv2.LINE_AA)
  highlight = np.exp(-((y - (waist - 4 * u)) / (3 * u)) ** 2)[..., None] * (body[..., None] > 0)
  big = big + 70 * highlight * (1 - glass[..., None])
  for cx in (left + 0.2 * (right - left), left + 0.8 * (right - left)):
    cv2.circle(big, (int(cx), int(bottom)), int(17 * u), (25, 25, 25), -1, cv2.LINE_AA)
    cv2.circle(big, (int(cx), int(bottom)), int(8 * u), (140, 140, 140), -1, cv2.LINE_AA)
  picture = _shrink(big, height, width).astype(np.float32)
  picture += rng.normal(0, 2.0, picture.shape)
  return np.clip(np.rint(picture), 0, 255).astype(np.uint8)


def green_awning(height: int, width: int, seed: int) -> np.ndarray:
  """A shop awning striped green and white (stripes 10 pixels wide), fanning
  out a little towards its scalloped hem (perspective), over a dark
  doorway: one regular pattern at one orientation."""
  rng = np.random.default_rng(seed)
  s = _SUPERSAMPLE
  big_h, big_w = height * s, width * s
  u = min(height, width) / REFERENCE_PX * s
  y, x = np.mgrid[0:big_h, 0:big_w].astype(np.float32)
  # Stripes fan out slightly towards the bottom (perspective).
  spread = 1 + 0.25 * y / big_h
  phase = ((x - big_w / 2) / spread + big_w / 2) / (10 * u)
  stripe = (np.floor(phase) % 2 == 0)[..., None]
  cloth = np.where(stripe, np.float32(_GREEN_PAINT), np.float32(_WHITE_PAINT))
  cloth = cloth * (0.8 + 0.25 * y / big_h)[..., None]
  # A scalloped hem two thirds down; below it the shadowed doorway.
  hem = 0.7 * big_h + 6 * u * np.abs(np.sin(np.pi * phase))
  big = np.where((y < hem)[..., None], cloth, np.float32((45, 40, 38)))
  picture = _shrink(big, height, width).astype(np.float32)
  picture += rng.normal(0, 2.0, picture.shape)
  return np.clip(np.rint(picture), 0, 255).astype(np.uint8)


def green_fence(height: int, width: int, seed: int) -> np.ndarray:
  """A picket fence in green paint before a pale wall: pickets 9 pixels wide
  with 5-pixel gaps and pointed tops, each a little lighter or darker, and
  two rails: a regular pattern at two orientations."""
  rng = np.random.default_rng(seed)
  s = _SUPERSAMPLE
  big_h, big_w = height * s, width * s
  u = min(height, width) / REFERENCE_PX * s
  big = _canvas(big_h, big_w, (200, 195, 180)) * _lighting(big_h, big_w, 0.8, 1.05, 0.0)
  paint = tuple(float(c) for c in _GREEN_PAINT)
  top, bottom = int(0.2 * big_h), big_h
  for rail in (0.4, 0.8):
    cv2.rectangle(big, (0, int(rail * big_h)), (big_w, int(rail * big_h + 7 * u)),
                  tuple(0.7 * c for c in paint), -1, cv2.LINE_AA)
  pitch, picket = 14 * u, 9 * u
  for left in np.arange(-pitch, big_w + pitch, pitch):
    shade = 0.85 + 0.3 * rng.uniform()
    points = np.int32([(left, bottom), (left, top + picket), (left + picket / 2, top),
                       (left + picket, top + picket), (left + picket, bottom)])
    cv2.fillPoly(big, [points], tuple(shade * c for c in paint), cv2.LINE_AA)
  picture = _shrink(big, height, width).astype(np.float32)
  picture += rng.normal(0, 2.0, picture.shape)
  return np.clip(np.rint(picture), 0, 255).astype(np.uint8)


def green_planks(height: int, width: int, seed: int) -> np.ndarray:
  """Planks painted green: wood grain along them (fine streaks, one
  orientation) and a dark seam every 40 pixels."""
  rng = np.random.default_rng(seed)
  scale = min(height, width) / REFERENCE_PX
  grain = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0),
                           sigmaX=25 * scale, sigmaY=0.8 * scale)
  grain /= grain.std()
  picture = _canvas(height, width, _GREEN_PAINT) * _lighting(height, width, 0.8, 1.1, 1.2)
  picture *= 1 + 0.12 * grain[..., None]
  rows = np.arange(height)
  seam = (rows % max(4, round(40 * scale))) < max(1, round(1.5 * scale))
  picture[seam] *= 0.45
  picture += rng.normal(0, 2.5, picture.shape)
  return np.clip(np.rint(picture), 0, 255).astype(np.uint8)


def green_water(height: int, width: int, seed: int) -> np.ndarray:
  """A green lake's surface seen at a low angle: wind ripples, their crests
  across the view and closer together towards the horizon, brighter where
  they tilt towards the sky, and the water darker nearer the camera."""
  rng = np.random.default_rng(seed)
  scale = min(height, width) / REFERENCE_PX
  y, x = np.mgrid[0:height, 0:width].astype(np.float32)
  depth = 0.25 + y / height  # Nearer the bottom: closer, so larger ripples.
  slope = np.zeros((height, width), np.float32)
  for _ in range(6):
    wavelength = rng.uniform(6, 14) * scale * depth
    tilt = rng.normal(0, 0.15)  # Crests within a few degrees of horizontal.
    phase = (np.cos(tilt) * y + np.sin(tilt) * x * depth) * 2 * np.pi / wavelength
    slope += np.sin(phase + rng.uniform(0, 2 * np.pi)).astype(np.float32)
  slope /= 6 ** 0.5
  colour = np.float32((45, 110, 85)) * (0.85 + 0.12 * slope[..., None])
  colour *= (1.2 - 0.35 * y / height)[..., None]
  picture = colour + rng.normal(0, 2.0, colour.shape)
  return np.clip(np.rint(picture), 0, 255).astype(np.uint8)


def big_leaf(height: int, width: int, seed: int) -> np.ndarray:
  """A macro shot: one broad green leaf fills the frame, a midrib across it
  and side veins branching off it, soft light and mottling. Few edges: the
  structure cue's density test misses it, the colour-and-texture path must
  not."""
  rng = np.random.default_rng(seed)
  s = _SUPERSAMPLE
  big_h, big_w = height * s, width * s
  u = min(height, width) / REFERENCE_PX * s
  big = _canvas(big_h, big_w, (95, 160, 50)) * _lighting(big_h, big_w, 0.75, 1.1,
                                                        rng.uniform(0, np.pi))
  mottle = cv2.resize(_noise(rng, height, width, 3.0), (big_w, big_h))
  big *= 1 + 0.08 * mottle[..., None]
  vein = tuple(0.75 * c for c in (95, 160, 50))
  tilt = rng.uniform(-0.3, 0.3)
  y_mid = big_h * rng.uniform(0.4, 0.6)
  def rib_y(x):
    return y_mid + np.tan(tilt) * (x - big_w / 2)
  cv2.line(big, (0, int(rib_y(0))), (big_w, int(rib_y(big_w))), (160, 200, 110), int(3 * u),
           cv2.LINE_AA)
  # Side veins 8-20 px apart at 30-70 degrees to the midrib, each its own:
  # a leaf's veins neither repeat nor run parallel as wood grain does.
  x = -big_w / 2
  while x < 1.5 * big_w:
    x += rng.uniform(8, 20) * u
    for side in (-1, 1):
      angle = tilt + side * np.radians(rng.uniform(30, 70))
      reach = rng.uniform(0.3, 0.8) * big_h / abs(np.sin(angle))
      start = (int(x), int(rib_y(x)))
      end = (int(x + reach * np.cos(angle)), int(rib_y(x) + reach * np.sin(angle)))
      cv2.line(big, start, end, vein, max(1, int(u)), cv2.LINE_AA)
  picture = _shrink(big, height, width).astype(np.float32) + rng.normal(0, 1.5, (height, width, 3))
  return np.clip(np.rint(picture), 0, 255).astype(np.uint8)


NOT_PLANTS = {
    "green_wall": green_wall,
    "green_stucco": green_stucco,
    "green_car": green_car,
    "green_awning": green_awning,
    "green_fence": green_fence,
    "green_planks": green_planks,
    "green_water": green_water,
}
# Macro plants: too smooth for the structure cue, counted by its
# colour-and-texture path.
MACRO = {"big_leaf": big_leaf}


def plant(name: str, height: int, width: int, seed: int) -> np.ndarray:
  """The foliage picture ``name`` (a key of `FOLIAGE`)."""
  leaves, gap = FOLIAGE[name]
  return foliage(height, width, seed, leaves, gap)


def all_pictures(height: int = 160, width: int = 256,
                 seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
  """``{"not_plants": {name: picture}, "plants": {name: picture}}``, uint8
  ``[H, W, 3]`` RGB."""
  return {"not_plants": {name: make(height, width, seed) for name, make in NOT_PLANTS.items()},
          "plants": {**{name: plant(name, height, width, seed) for name in FOLIAGE},
                     **{name: make(height, width, seed) for name, make in MACRO.items()}}}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("out_dir", type=Path)
  parser.add_argument("--size", default="256x160", help="WIDTHxHEIGHT (default 256x160)")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  width, height = (int(v) for v in args.size.lower().split("x"))
  for group, pictures in all_pictures(height, width, args.seed).items():
    folder = args.out_dir / group
    folder.mkdir(parents=True, exist_ok=True)
    for name, picture in pictures.items():
      cv2.imwrite(str(folder / f"{name}.png"), picture[..., ::-1])
      print(folder / f"{name}.png")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
