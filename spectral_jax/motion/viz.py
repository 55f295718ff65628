"""Pictures of motion: flow colours, power spectra, modal images, X–t slices.

NumPy and OpenCV, no JAX; matplotlib only for the spectrum plot and imported
there, so importing this module stays cheap. Every file is written through
`atomic_output`, so a failed write leaves nothing behind.

Colour conventions (both HSV):

* flow: hue is the direction of ``(dx, dy)`` with +x red, +y (down) yellow-
  green, -x cyan, -y (up) violet; saturation is the length, so no motion is
  white;
* modal images: hue is the phase of the complex coefficient (0 cyan, ±pi red),
  brightness its magnitude, so no motion is black.
"""

from __future__ import annotations

import operator
from pathlib import Path

import cv2
import numpy as np

from spectral_jax.atomic import atomic_output
from spectral_jax.motion.spectral import frequencies_hz

# Layout of modes.png: caption strip height and grey gap width, pixels.
_CAPTION_PX = 16
_GAP_PX = 2
_GAP_GREY = 96


def _hsv_to_rgb(hue, saturation, value) -> np.ndarray:
  """Arrays in [0, 1] of one shape ``[..., W]`` → uint8 ``[..., W, 3]`` RGB;
  hue wraps (0 and 1 are both red)."""
  hsv = np.stack([np.mod(hue, 1.0) * 360.0, np.clip(saturation, 0.0, 1.0),
                  np.clip(value, 0.0, 1.0)], axis=-1).astype(np.float32)
  # cv2 converts 2-D images only; float HSV keeps the full hue resolution
  # (8-bit HSV quantizes hue to 2 degrees).
  rgb = cv2.cvtColor(hsv.reshape(-1, hsv.shape[-2], 3), cv2.COLOR_HSV2RGB)
  return np.round(rgb * 255.0).astype(np.uint8).reshape(hsv.shape)


def _finite_max_magnitude(flow_px: np.ndarray) -> float:
  """Largest finite ``|(dx, dy)|`` of ``[..., 2]`` pixels, 0 if there is none."""
  magnitude = np.linalg.norm(np.asarray(flow_px, np.float64), axis=-1)
  magnitude = magnitude[np.isfinite(magnitude)]
  return float(magnitude.max()) if magnitude.size else 0.0


def flow_to_color(flow_px: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
  """Optical-flow colour coding of one displacement field.

  Hue is the direction of motion, saturation its length relative to
  ``max_magnitude`` (clipped at 1), so no motion is white. Pixels with a
  non-finite component are black.

  Args:
    flow_px: ``[H, W, 2]`` (dx, dy) in pixels.
    max_magnitude: length in pixels shown fully saturated; the field's largest
      finite length by default. Pass one value to several fields to make their
      pictures comparable.
  Returns:
    uint8 ``[H, W, 3]`` RGB.
  """
  flow_px = np.asarray(flow_px, np.float64)
  if flow_px.ndim != 3 or flow_px.shape[-1] != 2:
    raise ValueError(f"flow_px must be [H, W, 2], got shape {flow_px.shape}")
  finite = np.isfinite(flow_px).all(axis=-1)
  clean = np.where(finite[..., None], flow_px, 0.0)
  if max_magnitude is None:
    max_magnitude = _finite_max_magnitude(clean)
  # A zero or empty field would divide by zero; any positive floor keeps it white.
  saturation = np.linalg.norm(clean, axis=-1) / max(max_magnitude, 1e-12)
  hue = np.arctan2(clean[..., 1], clean[..., 0]) / (2.0 * np.pi)
  rgb = _hsv_to_rgb(hue, saturation, np.ones_like(hue))
  rgb[~finite] = 0
  return rgb


def _power_xy(spectral) -> np.ndarray:
  """float64 ``[K, 2]``: mean over pixels of ``|S_k,x|^2`` and ``|S_k,y|^2``."""
  spectral = np.asarray(spectral).astype(np.complex128)
  return np.mean(spectral.real ** 2 + spectral.imag ** 2, axis=(1, 2))


def power_spectrum(spectral) -> np.ndarray:
  """Motion power per frequency bin.

  Args:
    spectral: complex ``[K, H, W, 2]`` spectral volume, pixels.
  Returns:
    float64 ``[K]``: mean over pixels of ``|S_k,x|^2 + |S_k,y|^2``, pixels^2.
  """
  return _power_xy(spectral).sum(axis=-1)


def plot_power_spectrum(spectral, fps: float, num_frames: int, path) -> None:
  """Writes a PNG of the power per frequency for x, y and total motion.

  Args:
    spectral: complex ``[K, H, W, 2]`` spectral volume, pixels.
    fps: frame rate of the clip, frames/s.
    num_frames: T, the clip length the volume was computed over (bin k is at
      ``k * fps / T`` Hz).
    path: the ``.png`` to write.
  """
  # Figure + Agg canvas instead of pyplot: no global backend switch, no
  # figure registry to leak into, safe beside a user's interactive session.
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  power = _power_xy(spectral)
  freqs = frequencies_hz(power.shape[0], num_frames, fps)
  # Bin 0 is the mean displacement, not an oscillation, and would dwarf the rest.
  first = 1 if power.shape[0] > 1 else 0
  figure = Figure(figsize=(6, 4), dpi=100)
  FigureCanvasAgg(figure)
  axes = figure.add_subplot()
  axes.plot(freqs[first:], power[first:, 0], "o-", label="x")
  axes.plot(freqs[first:], power[first:, 1], "s-", label="y")
  axes.plot(freqs[first:], power[first:].sum(axis=-1), "k--", label="total")
  # A motionless clip has no positive power, which a log axis cannot show.
  if (power[first:] > 0).any():
    axes.set_yscale("log")
  axes.set_xlabel("frequency (Hz)")
  axes.set_ylabel("mean power (px²)")
  axes.set_title(f"Motion power spectrum ({num_frames} frames at {fps:g} fps)")
  axes.grid(True, which="both", alpha=0.3)
  axes.legend()
  figure.tight_layout()
  with atomic_output(path) as tmp:
    figure.savefig(tmp, format="png")


def modal_images(spectral, max_magnitude: float | None = None) -> np.ndarray:
  """Every frequency bin as colour: hue is the phase of ``S_k``, brightness
  ``|S_k| / max_magnitude``.

  Args:
    spectral: complex ``[K, H, W, 2]`` spectral volume, pixels.
    max_magnitude: ``|S_k|`` in pixels shown at full brightness; by default
      each bin's own maximum over both components, so that the weak high
      frequencies stay visible.
  Returns:
    uint8 ``[K, H, 2 W, 3]`` RGB: the x component left, y right.
  """
  spectral = np.asarray(spectral)
  if spectral.ndim != 4 or spectral.shape[-1] != 2:
    raise ValueError(f"spectral must be [K, H, W, 2], got shape {spectral.shape}")
  num_freqs, height, width, _ = spectral.shape
  # [K, H, W, 2] → [K, H, 2, W] → [K, H, 2 W]: x and y side by side.
  tiles = np.moveaxis(spectral.astype(np.complex128), -1, 2).reshape(num_freqs, height, 2 * width)
  magnitude = np.abs(tiles)
  if max_magnitude is None:
    scale = magnitude.max(axis=(1, 2), keepdims=True) if magnitude.size else 0.0
  else:
    scale = max_magnitude
  value = magnitude / np.maximum(scale, 1e-12)
  hue = np.angle(tiles) / (2.0 * np.pi) + 0.5
  return _hsv_to_rgb(hue, np.ones_like(hue), value)


def xt_slice(frames: np.ndarray, row: int) -> np.ndarray:
  """The X–t slice: one image row through time.

  Args:
    frames: uint8 ``[T, H, W, 3]`` clip.
    row: image row y, ``0 <= row < H``.
  Returns:
    uint8 ``[T, W, 3]``, time running downward.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4:
    raise ValueError(f"frames must be [T, H, W, C], got shape {frames.shape}")
  row = operator.index(row)
  if not 0 <= row < frames.shape[1]:
    raise ValueError(f"row {row} is outside frames of height {frames.shape[1]}")
  return np.ascontiguousarray(frames[:, row])


def _write_png(path: Path, rgb: np.ndarray) -> None:
  with atomic_output(path) as tmp:
    if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
      raise OSError(f"could not write {path}")


def _modes_grid(spectral, fps: float, num_frames: int, columns: int = 2) -> np.ndarray:
  """uint8 RGB grid of the modal images of all K bins, ``columns`` per row,
  each under a caption with its bin index and frequency.

  Grey gaps of ``_GAP_PX`` separate the x and y halves and the cells: both
  are black where nothing moves, so without them the borders are invisible.
  """
  tiles = modal_images(spectral)
  num_freqs, height, double_width = tiles.shape[:3]
  width = double_width // 2
  freqs = frequencies_hz(num_freqs, num_frames, fps)
  cell_height = _CAPTION_PX + height + _GAP_PX
  cell_width = double_width + 2 * _GAP_PX
  rows = -(-num_freqs // columns)
  canvas = np.full((rows * cell_height, columns * cell_width, 3), _GAP_GREY, np.uint8)
  for k, tile in enumerate(tiles):
    top, left = (k // columns) * cell_height, (k % columns) * cell_width
    canvas[top:top + _CAPTION_PX, left:left + cell_width - _GAP_PX] = 0
    image_top = top + _CAPTION_PX
    canvas[image_top:image_top + height, left:left + width] = tile[:, :width]
    canvas[image_top:image_top + height, left + width + _GAP_PX:left + double_width + _GAP_PX] = (
        tile[:, width:])
    cv2.putText(canvas, f"k={k}  {freqs[k]:.2f} Hz   x | y", (left + 3, top + _CAPTION_PX - 4),
                cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
  return canvas


def write_visualizations(out_dir, *, image: np.ndarray, disp_px: np.ndarray, spectral,
                         fps: float, frames: np.ndarray | None = None,
                         num_flow_frames: int = 4) -> list[Path]:
  """Writes the pictures of one clip's motion into ``out_dir`` (created).

  Args:
    image: uint8 ``[H, W, 3]`` RGB reference frame.
    disp_px: float ``[T, H, W, 2]`` displacement from frame 0, pixels.
    spectral: complex ``[K, H, W, 2]`` spectral volume of ``disp_px``.
    fps: frame rate, frames/s.
    frames: optional uint8 ``[T, H, W, 3]`` RGB clip, for the X–t slice.
    num_flow_frames: number of flow pictures, at times evenly spaced over
      frames 1..T-1 (frame 0 has no motion by definition).
  Returns:
    The written paths, sorted: ``reference.png``; ``flow_tNNN.png`` at frame
    NNN, all on one colour scale (the largest displacement among them);
    ``power_spectrum.png``; ``modes.png``, the modal images of all K bins with
    their frequencies; and ``xt_slice.png`` of the middle row when ``frames``
    is given.
  """
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  disp_px = np.asarray(disp_px)
  num_frames = disp_px.shape[0]
  written = [out_dir / "reference.png"]
  _write_png(written[-1], np.asarray(image))
  times = np.linspace(min(1, num_frames - 1), num_frames - 1, num_flow_frames)
  times = np.unique(np.round(times).astype(int))
  max_magnitude = _finite_max_magnitude(disp_px[times])
  for t in times:
    written.append(out_dir / f"flow_t{t:03d}.png")
    _write_png(written[-1], flow_to_color(disp_px[t], max_magnitude))
  written.append(out_dir / "power_spectrum.png")
  plot_power_spectrum(spectral, fps, num_frames, written[-1])
  written.append(out_dir / "modes.png")
  _write_png(written[-1], _modes_grid(spectral, fps, num_frames))
  if frames is not None:
    frames = np.asarray(frames)
    written.append(out_dir / "xt_slice.png")
    _write_png(written[-1], xt_slice(frames, frames.shape[1] // 2))
  return sorted(written)
