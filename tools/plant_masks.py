"""Hand-drawn masks of the plants in the held-out photos (`plant_masks.json`).

The held-out evaluation (`tools/evaluate_demo.py held-out`) compares the
motion the model samples inside plants with the motion outside them. The
training data's vegetation cue (`photo_scenes.vegetation_mask`) cannot say
where the plants are for that purpose: the model learnt to move what the cue
marks, so scoring it against the cue would only measure how well it learnt
the cue. These masks were drawn by hand while looking at each photo instead:
polygons around the plants (leaves, grass, flowers, stems, trees: what could
sway in wind), less holes (what lies inside a polygon but is not a plant: a
ladybird, background seen between petals, a bare path). Everything else is
outside.

Vertices are normalized ``(x, y)`` in [0, 1] over the whole photo, ``(0, 0)``
its top-left corner and ``(1, 1)`` its bottom-right one (pixel edges, not
centres), so a mask applies at any resolution. `rasterise` maps them through
the centre crop and resize that `pictures.fit_picture` applies to the photo
(`pictures.Framing`), so the mask lands on the picture the model sees.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np

from spectral_jax.data.pictures import Framing

MASKS = Path(__file__).resolve().parent / "plant_masks.json"
# The photos no training stage sees (HELD_OUT in `tools/train_demo.sh`, which
# moves their ``NAME.jpg`` to photos/held_out); each has an entry in `MASKS`.
HELD_OUT = ("mate-LadyBird", "mate-YellowFlower", "kde-Path", "kde-BytheWater", "mate-Storm",
            "mate-Wood")
# Polygons are filled this many times finer per axis and a pixel is inside
# when at least half of its area is: `cv2.fillPoly` also fills the pixels its
# edges pass through, which at the model's size would grow every polygon by
# about half a pixel all round.
SUPERSAMPLING = 4
# fillPoly's fixed-point bits: vertices are placed to 1/256 of a (fine) pixel.
_SHIFT = 8


@dataclasses.dataclass(frozen=True)
class PlantMask:
  """One photo's mask: ``polygons`` and ``holes`` are tuples of float64
  ``[N, 2]`` arrays of normalized ``(x, y)`` vertices; ``photo_size`` is the
  ``(width, height)`` in pixels of the photo they were drawn on, whose
  aspect ratio decides the crop."""
  name: str
  photo_size: tuple[int, int]
  polygons: tuple[np.ndarray, ...]
  holes: tuple[np.ndarray, ...]
  description: str


def load_masks(path=MASKS) -> dict[str, PlantMask]:
  """The masks in the JSON file at ``path``, by photo name (file stem).

  Raises:
    ValueError: a polygon with fewer than 3 vertices or a vertex outside
      [0, 1]; a photo size that is not two positive integers.
  """
  photos = json.loads(Path(path).read_text())["photos"]
  masks = {}
  for name, entry in photos.items():
    size = tuple(entry["photo_size"])
    if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
      raise ValueError(f"{path}: {name}: photo_size must be [width, height], got {size}")
    shapes = {}
    for key in ("polygons", "holes"):
      shapes[key] = tuple(np.asarray(polygon, np.float64) for polygon in entry.get(key, []))
      for polygon in shapes[key]:
        if polygon.ndim != 2 or polygon.shape[0] < 3 or polygon.shape[1] != 2:
          raise ValueError(f"{path}: {name}: {key} need 3 or more [x, y] vertices, got "
                           f"shape {list(polygon.shape)}")
        if polygon.min() < 0 or polygon.max() > 1:
          raise ValueError(f"{path}: {name}: {key} vertices must lie in [0, 1]")
    masks[name] = PlantMask(name, size, shapes["polygons"], shapes["holes"],
                            entry["description"])
  return masks


def framing(mask: PlantMask, out_width: int, out_height: int) -> Framing:
  """The centre crop and resize of ``mask``'s photo to ``out_width x
  out_height``, as `pictures.fit_picture` frames the photo itself."""
  return Framing.fit(*mask.photo_size, out_width, out_height)


def to_model(points: np.ndarray, framing: Framing) -> np.ndarray:
  """Normalized photo points ``[N, 2]`` → model pixel coordinates ``[N, 2]``
  (pixel centres at integers, as `Framing.to_model`).

  ``x`` in [0, 1] covers the photo's pixel edges ``[0, width]``, i.e. its
  pixel-centre coordinate is ``x * width - 0.5``, which `Framing.to_model`
  takes through the crop and the resize."""
  points = np.asarray(points, np.float64)
  x, y = framing.to_model(points[:, 0] * framing.width - 0.5,
                          points[:, 1] * framing.height - 0.5)
  return np.stack([x, y], axis=1)


def _coverage(polygons, framing: Framing, supersampling: int) -> np.ndarray:
  """float64 ``[out_height, out_width]``: the fraction of each model pixel
  that the union of ``polygons`` (normalized) covers, to 1 / supersampling^2."""
  s = supersampling
  fine = np.zeros((framing.out_height * s, framing.out_width * s), np.uint8)
  for polygon in polygons:
    # A model coordinate u lands at (u + 0.5) * s - 0.5 in the fine grid:
    # model pixel i covers fine pixels i * s .. i * s + s - 1.
    points = (to_model(polygon, framing) + 0.5) * s - 0.5
    # One call per polygon: given several, fillPoly fills their overlaps by
    # the even-odd rule, i.e. leaves them empty.
    cv2.fillPoly(fine, [np.round(points * (1 << _SHIFT)).astype(np.int32)], 1, cv2.LINE_8,
                 _SHIFT)
  return fine.reshape(framing.out_height, s, framing.out_width, s).mean(axis=(1, 3),
                                                                       dtype=np.float64)


def rasterise(mask: PlantMask, out_width: int, out_height: int, *,
              supersampling: int = SUPERSAMPLING) -> np.ndarray:
  """bool ``[out_height, out_width]``: True on the plants of ``mask``'s photo
  as framed to the model's size (`framing`), i.e. where at least half of a
  pixel lies in a polygon and out of every hole."""
  frame = framing(mask, out_width, out_height)
  inside = _coverage(mask.polygons, frame, supersampling) >= 0.5
  return inside & ~(_coverage(mask.holes, frame, supersampling) >= 0.5)


def inside_outside(amplitude: np.ndarray, inside: np.ndarray) -> tuple[float, float, float]:
  """``(inside mean, outside mean, inside / outside)`` of a per-pixel motion
  amplitude, in float64, where ``inside`` is a bool mask of the same shape
  (several photos pool by concatenating both). An empty side's mean is NaN,
  and so is the ratio."""
  amplitude = np.asarray(amplitude, np.float64)
  inside = np.asarray(inside, bool)
  if amplitude.shape != inside.shape:
    raise ValueError(f"amplitude {amplitude.shape} and mask {inside.shape} differ in shape")
  mean_in = float(amplitude[inside].mean()) if inside.any() else float("nan")
  mean_out = float(amplitude[~inside].mean()) if not inside.all() else float("nan")
  with np.errstate(divide="ignore", invalid="ignore"):  # Still outside: inf.
    ratio = float(np.float64(mean_in) / mean_out)
  return mean_in, mean_out, ratio


def figure(photos, out, *, width: int = 256, height: int = 160) -> None:
  """Writes to ``out`` a PNG of the held-out photos in ``photos`` (a folder
  of ``NAME.jpg``) framed to ``width x height`` as the model sees them, 3 to
  a row, plants tinted magenta and outlined in yellow, each photo's name in
  its corner. Palette-quantized to keep it small (docs/images)."""
  from PIL import Image

  from spectral_jax.data.pictures import fit_picture, read_picture

  masks = load_masks()
  tiles = []
  for name in HELD_OUT:
    picture, frame = fit_picture(read_picture(Path(photos) / f"{name}.jpg"), width, height)
    if (frame.width, frame.height) != masks[name].photo_size:
      raise ValueError(f"{name}: the photo is {frame.width}x{frame.height}, its mask was drawn "
                       f"on {masks[name].photo_size[0]}x{masks[name].photo_size[1]}")
    inside = rasterise(masks[name], width, height)
    tile = picture.astype(np.float32)
    tile[inside] = 0.6 * tile[inside] + 0.4 * np.float32([255, 0, 255])
    tile = np.clip(np.rint(tile), 0, 255).astype(np.uint8)
    contours, _ = cv2.findContours(inside.astype(np.uint8), cv2.RETR_LIST,
                                   cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(tile, contours, -1, (255, 230, 0), 1)
    for colour, offset in (((0, 0, 0), 1), ((255, 255, 255), 0)):
      cv2.putText(tile, name, (4 + offset, 13 + offset), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1,
                  cv2.LINE_AA)
    tiles.append(tile)
  rows = [np.concatenate(tiles[i:i + 3], axis=1) for i in range(0, len(tiles), 3)]
  image = Image.fromarray(np.concatenate(rows, axis=0))
  image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)


if __name__ == "__main__":
  import argparse

  parser = argparse.ArgumentParser(description="Draws the held-out photos with their plant "
                                   "masks (docs/images/plant_masks.png).")
  parser.add_argument("photos", type=Path, help="the folder of the held-out NAME.jpg")
  parser.add_argument("out", type=Path, help="the PNG to write")
  arguments = parser.parse_args()
  figure(arguments.photos, arguments.out)
