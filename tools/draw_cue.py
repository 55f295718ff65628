"""Draws the vegetation cue (`photo_scenes.vegetation_mask`) over pictures, for docs.

  python tools/draw_cue.py PHOTO_DIR OUT.png [--names kde-Path mate-Wood ...]
                           [--size 256x160] [--pairs-per-row 2] [--no-dither]

Each picture in PHOTO_DIR (or only those whose file names without suffix
are given in ``--names``) is framed as `animate` frames it (centre crop to
the model's aspect ratio, resized to ``--size``), and drawn twice side by
side: as it is, and with the mask over it (magenta where the cue says
vegetation, a white line where it crosses 0.5), labelled with the picture's
name, its mean mask and the share of pixels above 0.5. The same numbers are
printed as a Markdown table. The figure is saved as a PNG of 256 colours
(dithered unless ``--no-dither``), so a page of model-size tiles stays small.

The pictures made by ``tools/cue_pictures.py`` are drawn the same way:

  python tools/cue_pictures.py /tmp/cue
  python tools/draw_cue.py /tmp/cue/not_plants OUT.png --no-dither
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

# Tint of the mask (RGB) and how much of it covers a pixel where the mask is 1.
_TINT = np.float32([255, 0, 255])
_TINT_WEIGHT = 0.55
# Colours in the saved PNG: a palette this size keeps a page of tiles small.
_COLOURS = 256


def overlay(picture: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """uint8 ``[H, W, 3]``: ``picture`` tinted by ``mask`` (float ``[H, W]`` in
  [0, 1]), with the mask's 0.5 level drawn as a white line."""
  weight = _TINT_WEIGHT * mask[..., None]
  tinted = picture.astype(np.float32) * (1 - weight) + _TINT * weight
  core = (mask > 0.5).astype(np.uint8)
  line = core - cv2.erode(core, np.ones((3, 3), np.uint8))
  tinted[line > 0] = 255
  return np.clip(np.rint(tinted), 0, 255).astype(np.uint8)


def _label(tile: np.ndarray, text: str) -> None:
  """Writes ``text`` in the tile's top left corner, white on a black box."""
  font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.38
  (width, height), base = cv2.getTextSize(text, font, scale, 1)
  cv2.rectangle(tile, (0, 0), (width + 6, height + base + 4), (0, 0, 0), -1)
  cv2.putText(tile, text, (3, height + 2), font, scale, (255, 255, 255), 1, cv2.LINE_AA)


def draw(pictures: dict[str, np.ndarray], pairs_per_row: int = 2) -> tuple[np.ndarray, dict]:
  """The figure (uint8 ``[rows * H, pairs_per_row * 2 * W, 3]``, unused
  pairs black) and ``{name: (mean mask, share above 0.5)}`` for ``pictures``
  (``{name: uint8 [H, W, 3] RGB}``, all one size)."""
  from spectral_jax.data import photo_scenes
  pairs, numbers = [], {}
  for name, picture in pictures.items():
    mask = photo_scenes.vegetation_mask(picture)
    numbers[name] = (float(mask.mean()), float((mask > 0.5).mean()))
    drawn = overlay(picture, mask)
    _label(drawn, f"{name} mean {numbers[name][0]:.2f}, >0.5 {numbers[name][1]:.2f}")
    pairs.append(np.concatenate([picture, drawn], axis=1))
  pairs += [np.zeros_like(pairs[0])] * (-len(pairs) % pairs_per_row)
  rows = [np.concatenate(pairs[i:i + pairs_per_row], axis=1)
          for i in range(0, len(pairs), pairs_per_row)]
  return np.concatenate(rows, axis=0), numbers


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("photo_dir", type=Path)
  parser.add_argument("out", type=Path, help="the figure, a .png")
  parser.add_argument("--names", nargs="+", help="only these pictures (file names without suffix)")
  parser.add_argument("--size", default="256x160", help="WIDTHxHEIGHT (default 256x160)")
  parser.add_argument("--pairs-per-row", type=int, default=2)
  parser.add_argument("--no-dither", action="store_true",
                      help="no dithering: smaller files for pictures with no smooth gradients")
  args = parser.parse_args(argv)
  from spectral_jax.data import pictures
  width, height = (int(v) for v in args.size.lower().split("x"))
  paths = pictures.list_pictures(args.photo_dir)
  if args.names:
    missing = set(args.names) - {p.stem for p in paths}
    if missing:
      print(f"not in {args.photo_dir}: {', '.join(sorted(missing))}", file=sys.stderr)
      return 2
    paths = [p for p in paths if p.stem in args.names]
  framed = {p.stem: pictures.fit_picture(pictures.read_picture(p), width, height)[0]
            for p in paths}
  figure, numbers = draw(framed, args.pairs_per_row)
  args.out.parent.mkdir(parents=True, exist_ok=True)
  image = Image.fromarray(figure)
  palette = image.quantize(_COLOURS, method=Image.Quantize.MEDIANCUT)
  # Dithered to that palette: smooth skies without bands.
  dither = Image.Dither.NONE if args.no_dither else Image.Dither.FLOYDSTEINBERG
  image.quantize(palette=palette, dither=dither).save(args.out, optimize=True)
  print("| picture | mean mask | share > 0.5 |\n|---|---|---|")
  for name, (mean, share) in numbers.items():
    print(f"| {name} | {mean:.3f} | {share:.3f} |")
  print(f"{args.out}: {args.out.stat().st_size // 1024} KiB", file=sys.stderr)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
