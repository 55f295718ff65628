"""Reading the user's pictures and framing them to the model's size.

A picture of any size is centre-cropped to the model's aspect ratio (the
largest such box) and resized, as `spectral_jax.data.video` frames videos.
`Framing` records that map, so what the user gives in the picture's own
pixels (poke positions and directions, a mask) lands on the same spot in the
model's pixels.

Pixel-centre convention, in both pictures and model frames: pixel ``i``
covers ``[i - 0.5, i + 0.5]``, so the picture's left edge is ``x = -0.5``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from spectral_jax.checks import MAX_VIDEO_SIDE

PICTURE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# PIL modes of one channel deeper than 8 bits, and the value each maps to
# white. Pillow opens 16-bit grayscale as "I;16*", or as 32-bit "I" in older
# versions and some formats, so "I" is read as 16-bit data (clipped above);
# float pictures are taken to be in [0, 1], as in scikit-image.
_DEEP_MODE_WHITE = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535,
                    "I": 65535, "F": 1.0}

# Weights of R, G, B in gray, ITU-R BT.601 as in PIL's "L" mode.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


class PictureError(ValueError):
  """A picture or mask that cannot be used; the message is meant for the user."""


def list_pictures(directory) -> list[Path]:
  """The pictures directly in ``directory`` (not in sub-folders), sorted.

  Hidden files are skipped: macOS leaves ``._name.jpg`` companions that are
  not pictures.

  Raises:
    PictureError: not a directory, or no pictures in it.
  """
  directory = Path(directory)
  if not directory.is_dir():
    raise PictureError(f"{directory}: no such directory")
  pictures = sorted(p for p in directory.iterdir()
                    if p.is_file() and not p.name.startswith(".")
                    and p.suffix.lower() in PICTURE_SUFFIXES)
  if not pictures:
    raise PictureError(f"{directory}: no pictures ({', '.join(PICTURE_SUFFIXES)})")
  return pictures


def read_picture(path) -> np.ndarray:
  """A picture as the user sees it, uint8 ``[H, W, 3]`` RGB.

  The EXIF orientation is applied, so ``H, W`` are those of the upright
  picture. Grayscale, palette and CMYK pictures become RGB; 16-bit ones are
  scaled by the range of the format (``v / 257``), not by their own
  min/max, so a dark picture stays dark; float ones are read as [0, 1].
  Transparent pixels are composited over white. Multi-frame files (GIF,
  TIFF) give their first frame.

  Raises:
    PictureError: missing, not a readable picture, or too large to decode
      safely (PIL's decompression-bomb limit, ``PIL.Image.MAX_IMAGE_PIXELS``).
  """
  path = Path(path)
  if not path.is_file():
    raise PictureError(f"{path}: no such file")
  try:
    with Image.open(path) as image:
      return _to_rgb(ImageOps.exif_transpose(image))
  except Image.DecompressionBombError:
    # PIL refuses before it reports the size, so the limit is all there is
    # to tell.
    raise PictureError(f"{path}: too large (over {2 * Image.MAX_IMAGE_PIXELS} pixels, "
                       f"PIL's decompression-bomb limit)") from None
  except UnidentifiedImageError:
    raise PictureError(f"{path}: not a picture (no image format recognised)") from None
  except (OSError, SyntaxError, EOFError, ValueError) as error:
    raise PictureError(f"{path}: not a readable picture ({_first_line(error)})") from None


def _to_rgb(image: Image.Image) -> np.ndarray:
  """Any PIL image → uint8 ``[H, W, 3]`` RGB (see `read_picture`)."""
  if image.mode in _DEEP_MODE_WHITE:
    scaled = np.asarray(image, np.float64) * (255.0 / _DEEP_MODE_WHITE[image.mode])
    gray = np.clip(np.round(scaled), 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)
  if image.has_transparency_data:
    rgba = np.asarray(image.convert("RGBA"), np.uint32)
    alpha = rgba[:, :, 3:]
    # Over white rather than black: most pictures with transparency are
    # cut-outs or logos drawn to be shown on a white page.
    over_white = (rgba[:, :, :3] * alpha + 255 * (255 - alpha) + 127) // 255
    return over_white.astype(np.uint8)
  return np.asarray(image.convert("RGB"), np.uint8)


@dataclasses.dataclass(frozen=True)
class Framing:
  """How a picture of ``width x height`` pixels maps to the model's
  ``out_width x out_height``: the centre crop box ``(x0, y0, crop_width,
  crop_height)`` in picture pixels, the largest box of the model's aspect
  ratio, is resized to the model's size. All fields are integer pixels.
  """
  width: int
  height: int
  out_width: int
  out_height: int
  x0: int
  y0: int
  crop_width: int
  crop_height: int

  @classmethod
  def fit(cls, width: int, height: int, out_width: int, out_height: int) -> Framing:
    """The framing of a ``width x height`` picture to ``out_width x out_height``."""
    if min(width, height, out_width, out_height) < 1:
      raise ValueError(f"sizes must be positive, got {width}x{height} to "
                       f"{out_width}x{out_height}")
    crop_width = min(width, max(1, round(height * out_width / out_height)))
    crop_height = min(height, max(1, round(width * out_height / out_width)))
    return cls(width, height, out_width, out_height, (width - crop_width) // 2,
               (height - crop_height) // 2, crop_width, crop_height)

  @property
  def scale_x(self) -> float:
    """Model pixels per picture pixel along x."""
    return self.out_width / self.crop_width

  @property
  def scale_y(self) -> float:
    """Model pixels per picture pixel along y."""
    return self.out_height / self.crop_height

  def apply(self, picture: np.ndarray) -> np.ndarray:
    """uint8 ``[height, width, 3]`` picture → uint8 ``[out_height, out_width, 3]``."""
    picture = np.asarray(picture)
    if picture.dtype != np.uint8 or picture.shape != (self.height, self.width, 3):
      raise ValueError(f"picture must be uint8 [{self.height}, {self.width}, 3], "
                       f"got {picture.dtype} {list(picture.shape)}")
    return self._crop_resize(picture, enlarge=cv2.INTER_CUBIC)

  def to_model(self, x, y) -> tuple:
    """A point in picture pixels → model pixels, ``(x', y')``.

    ``x' = (x - x0 + 0.5) * scale_x - 0.5``: pixel edges, not centres, scale
    (pixel ``i`` covers ``[i - 0.5, i + 0.5]``). Floats or arrays.
    """
    return ((x - self.x0 + 0.5) * self.scale_x - 0.5,
            (y - self.y0 + 0.5) * self.scale_y - 0.5)

  def vector_to_model(self, dx, dy) -> tuple:
    """A displacement in picture pixels → model pixels, ``(dx', dy')``."""
    return dx * self.scale_x, dy * self.scale_y

  def contains(self, x, y) -> bool:
    """Whether the point ``(x, y)`` in picture pixels lies in the crop box,
    i.e. lands on a model pixel."""
    return bool(self.x0 - 0.5 <= x < self.x0 + self.crop_width - 0.5
                and self.y0 - 0.5 <= y < self.y0 + self.crop_height - 0.5)

  def describe(self) -> str:
    """One line for the user, e.g. ``"cropped 1000x625 at (100, 0) of
    1200x625, resized to 256x160"``."""
    if (self.crop_width, self.crop_height) == (self.width, self.height):
      source = f"{self.width}x{self.height}"
    else:
      source = (f"cropped {self.crop_width}x{self.crop_height} at ({self.x0}, {self.y0}) "
                f"of {self.width}x{self.height}")
    if (self.crop_width, self.crop_height) == (self.out_width, self.out_height):
      return f"{source}, the model's size"
    return f"{source}, resized to {self.out_width}x{self.out_height}"

  def resized(self, out_width: int, out_height: int) -> Framing:
    """The same crop box resized to ``out_width x out_height`` instead (a
    video at another size of the same framing)."""
    return dataclasses.replace(self, out_width=out_width, out_height=out_height)

  def _crop_resize(self, array: np.ndarray, *, enlarge: int) -> np.ndarray:
    """``[height, width]`` or ``[height, width, C]`` (C <= 512) uint8 or
    float32 → ``[out_height, out_width(, C)]``, same dtype; ``enlarge`` is
    the cv2 interpolation used unless shrinking."""
    crop = array[self.y0:self.y0 + self.crop_height, self.x0:self.x0 + self.crop_width]
    # Area averaging is the only cv2 filter that does not alias when
    # shrinking; it also puts each block's mean at the block's centre, the
    # convention of `to_model`.
    shrinking = self.scale_x < 1 or self.scale_y < 1
    return cv2.resize(np.ascontiguousarray(crop), (self.out_width, self.out_height),
                      interpolation=cv2.INTER_AREA if shrinking else enlarge)


# `video_size`: the longest side of a video by default (`checks.MAX_VIDEO_SIDE`
# bounds any).
DEFAULT_VIDEO_SIDE = 512


def video_size(framing: Framing, requested=None) -> tuple[int, int]:
  """The size ``(width, height)`` of a video of the picture ``framing``
  frames for a model of ``framing.out_width x out_height``.

  Videos keep the model's exact aspect ratio, so the crop the model sees is
  the crop the video shows, and have sides that are multiples of 8 (the
  renderer's coarsest stride): whole multiples of the smallest such size
  (64x40 for 256x160), as many as fit in the crop box.

  Args:
    framing: the picture's framing to the model's size.
    requested: ``None`` (the default: the crop box's own size, the longest
      side at most `DEFAULT_VIDEO_SIDE`), ``"full"`` (the crop box's own
      size, at most `checks.MAX_VIDEO_SIDE`), ``"model"`` (the model's size)
      or ``(width, height)`` (`checks.video_size`, of the model's aspect
      ratio).
  Raises:
    ValueError: a ``(width, height)`` of another aspect ratio than the
      model's; a ``full`` size above `checks.MAX_VIDEO_SIDE`.
  """
  model = (framing.out_width, framing.out_height)
  if requested == "model":
    return model
  divisor = math.gcd(*model)
  ratio = (model[0] // divisor, model[1] // divisor)
  unit = math.lcm(*(8 // math.gcd(8, side) for side in ratio))
  step = (ratio[0] * unit, ratio[1] * unit)  # The smallest size: (64, 40) for 8:5.
  if requested not in (None, "full"):
    width, height = requested
    if width * model[1] != height * model[0]:
      raise ValueError(f"--size {width}x{height} is not of the model's {model[0]}x{model[1]} "
                       f"shape; sizes of it are multiples of {step[0]}x{step[1]}, e.g. "
                       f"{step[0] * 8}x{step[1] * 8}")
    return width, height
  crop = (framing.crop_width, framing.crop_height)
  if requested == "full" and max(crop) > MAX_VIDEO_SIDE:
    raise ValueError(f"--size full: the picture's {crop[0]}x{crop[1]} crop is larger than "
                     f"{MAX_VIDEO_SIDE} px on a side; give --size WxH")
  longest = MAX_VIDEO_SIDE if requested == "full" else DEFAULT_VIDEO_SIDE
  count = max(1, min(crop[0] // step[0], crop[1] // step[1], longest // max(step)))
  return step[0] * count, step[1] * count


def video_framing(framing: Framing, requested=None) -> Framing:
  """The framing of a video of the picture ``framing`` frames for the model:
  the same crop box at `video_size` (``requested`` as there)."""
  return framing.resized(*video_size(framing, requested))


def fit_picture(picture: np.ndarray, out_width: int,
                out_height: int) -> tuple[np.ndarray, Framing]:
  """uint8 ``[H, W, 3]`` picture → (uint8 ``[out_height, out_width, 3]``, its
  `Framing`)."""
  framing = Framing.fit(picture.shape[1], picture.shape[0], out_width, out_height)
  return framing.apply(picture), framing


def read_mask(path, framing: Framing, *, feather_px: float) -> np.ndarray:
  """The mask of where the picture may move, framed to the model's size,
  float32 ``[out_height, out_width]`` in [0, 1].

  The mask is a picture of the same size as the one ``framing`` frames
  (read like it, EXIF orientation included), white where the picture
  moves and black where it stays still; gray levels are kept as weights.
  Transparent pixels count as white. Edges are feathered by a Gaussian
  blur of standard deviation ``feather_px`` model pixels (0: none), so
  motion fades out instead of tearing the picture at the mask's edge.

  Raises:
    PictureError: unreadable, or not the picture's size.
  """
  if feather_px < 0:
    raise ValueError(f"feather_px must be >= 0, got {feather_px}")
  rgb = read_picture(path)
  if rgb.shape[:2] != (framing.height, framing.width):
    raise PictureError(f"{path}: the mask is {rgb.shape[1]}x{rgb.shape[0]} but the "
                       f"picture is {framing.width}x{framing.height}")
  gray = (rgb.astype(np.float32) @ _LUMA) / 255.0
  mask = framing._crop_resize(gray, enlarge=cv2.INTER_LINEAR)
  if feather_px > 0:
    # Replicated borders: the mask goes on beyond the frame as at its edge,
    # so a mask that is white up to the border stays 1 there.
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=feather_px, sigmaY=feather_px,
                            borderType=cv2.BORDER_REPLICATE)
  return np.clip(mask, 0.0, 1.0).astype(np.float32)


def fit_spectral(spectral, out_width: int, out_height: int) -> np.ndarray:
  """A spectral volume measured at another size, framed to the model's size
  as its picture would be.

  Args:
    spectral: ``[K, H, W, 2]`` complex spectral volume, displacement
      ``(dx, dy)`` in pixels of the ``W x H`` frames.
    out_width, out_height: the model's size.
  Returns:
    ``[K, out_height, out_width, 2]`` complex64 in the model's pixels: each
    real component is cropped and resized (area averaging when shrinking,
    bilinear when enlarging), and dx is scaled by ``scale_x``, dy by
    ``scale_y``, since displacements grow with the picture.
  """
  spectral = np.asarray(spectral)
  if spectral.ndim != 4 or spectral.shape[-1] != 2:
    raise ValueError(f"spectral volume must be [K, H, W, 2], got {list(spectral.shape)}")
  framing = Framing.fit(spectral.shape[2], spectral.shape[1], out_width, out_height)
  # (Re dx, Re dy, Im dx, Im dy): resizing is linear, so resizing real and
  # imaginary parts apart resizes the complex field and keeps every phase.
  parts = np.concatenate([spectral.real, spectral.imag], axis=-1).astype(np.float32)
  resized = np.stack([framing._crop_resize(part, enlarge=cv2.INTER_LINEAR) for part in parts])
  resized *= np.array([framing.scale_x, framing.scale_y] * 2, np.float32)
  return (resized[..., :2] + 1j * resized[..., 2:]).astype(np.complex64)


def _first_line(error: Exception) -> str:
  lines = [line for line in str(error).splitlines() if line.strip()]
  return lines[0] if lines else type(error).__name__
