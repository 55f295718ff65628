"""Pictures of motion: flow colours, power spectra, modal images, X–t slices.

NumPy and OpenCV; matplotlib only for the spectrum plot, imported there.
Every file is written atomically.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from spectral_jax.atomic import atomic_output
from spectral_jax.motion.spectral import frequencies_hz


def _hsv_to_rgb(hue, saturation, value) -> np.ndarray:
  """Arrays in [0, 1] ``[H, W]`` → uint8 ``[H, W, 3]`` RGB."""
  hsv = np.stack([hue * 179.0, saturation * 255.0, value * 255.0], -1)
  return cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB)


def flow_to_color(flow_px: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
  """Optical-flow colour coding.

  Hue is the direction of motion, saturation its length relative to
  ``max_magnitude`` (the field's largest by default), so no motion is white.
  Non-finite flow is black.

  Args:
    flow_px: ``[H, W, 2]`` (dx, dy) in pixels.
  Returns:
    uint8 ``[H, W, 3]`` RGB.
  """
  flow_px = np.asarray(flow_px, np.float64)
  finite = np.isfinite(flow_px).all(-1)
  clean = np.where(finite[..., None], flow_px, 0.0)
  magnitude = np.linalg.norm(clean, axis=-1)
  if max_magnitude is None:
    max_magnitude = magnitude.max()
  hue = (np.arctan2(-clean[..., 1], -clean[..., 0]) / np.pi + 1.0) / 2.0
  saturation = np.clip(magnitude / max(max_magnitude, 1e-9), 0.0, 1.0)
  rgb = _hsv_to_rgb(hue, saturation, np.ones_like(hue))
  rgb[~finite] = 0
  return rgb


def power_spectrum(spectral: np.ndarray) -> np.ndarray:
  """float64 ``[K]``: mean over pixels of ``|S_k,x|^2 + |S_k,y|^2``, pixels^2.

  Args:
    spectral: complex ``[K, H, W, 2]``.
  """
  return np.mean(np.sum(np.abs(spectral.astype(np.complex128)) ** 2, axis=-1), axis=(1, 2))


def plot_power_spectrum(spectral: np.ndarray, fps: float, num_frames: int, path) -> None:
  """PNG of the power per frequency (log scale) for x, y and total motion."""
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  freqs = frequencies_hz(spectral.shape[0], num_frames, fps)
  power_xy = np.mean(np.abs(spectral.astype(np.complex128)) ** 2, axis=(1, 2))
  figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
  # Bin 0 is the mean displacement, not an oscillation: plotted from bin 1.
  axes.semilogy(freqs[1:], power_xy[1:, 0], "o-", label="x")
  axes.semilogy(freqs[1:], power_xy[1:, 1], "s-", label="y")
  axes.semilogy(freqs[1:], power_xy[1:].sum(-1), "k--", label="total")
  axes.set_xlabel("frequency (Hz)")
  axes.set_ylabel("mean power (px²)")
  axes.set_title("Power spectrum of the motion")
  axes.grid(True, which="both", alpha=0.3)
  axes.legend()
  figure.tight_layout()
  with atomic_output(path) as tmp:
    figure.savefig(tmp, format="png")
  plt.close(figure)


def modal_images(spectral: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
  """Magnitude and phase of every bin as colour: hue is the phase of
  ``S_k``, brightness its magnitude over ``max_magnitude`` (each bin's own
  maximum by default, so weak high frequencies stay visible).

  Args:
    spectral: complex ``[K, H, W, 2]``.
  Returns:
    uint8 ``[K, H, 2 W, 3]``: the x component left, y right.
  """
  images = []
  for coefficients in spectral:
    magnitude = np.abs(coefficients)
    scale = magnitude.max() if max_magnitude is None else max_magnitude
    value = np.clip(magnitude / max(scale, 1e-12), 0.0, 1.0)
    hue = (np.angle(coefficients) / np.pi + 1.0) / 2.0
    halves = [_hsv_to_rgb(hue[..., c], np.ones_like(hue[..., c]), value[..., c]) for c in (0, 1)]
    images.append(np.concatenate(halves, axis=1))
  return np.stack(images)


def xt_slice(frames: np.ndarray, row: int) -> np.ndarray:
  """uint8 ``[T, W, 3]``: row ``row`` of every frame ``[T, H, W, 3]``, time
  running downward."""
  if not 0 <= row < frames.shape[1]:
    raise ValueError(f"row {row} outside a frame of height {frames.shape[1]}")
  return np.ascontiguousarray(frames[:, row])


def _write_png(path: Path, rgb: np.ndarray) -> None:
  with atomic_output(path) as tmp:
    if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
      raise OSError(f"could not write {path}")


def _grid(images: np.ndarray, columns: int) -> np.ndarray:
  """``[N, h, w, 3]`` → one image, ``columns`` per row, padded with black."""
  count, height, width = images.shape[:3]
  rows = -(-count // columns)
  canvas = np.zeros((rows * height, columns * width, 3), np.uint8)
  for index, image in enumerate(images):
    row, column = divmod(index, columns)
    canvas[row * height:(row + 1) * height, column * width:(column + 1) * width] = image
  return canvas


def write_visualizations(out_dir, *, image: np.ndarray, disp_px: np.ndarray,
                         spectral: np.ndarray, fps: float, frames: np.ndarray | None = None,
                         num_flow_frames: int = 4) -> list[Path]:
  """Writes the pictures of one clip's motion into ``out_dir``.

  Args:
    image: uint8 ``[H, W, 3]`` reference frame.
    disp_px: float ``[T, H, W, 2]`` displacement, pixels.
    spectral: complex ``[K, H, W, 2]`` spectral volume of ``disp_px``.
    fps: frame rate, frames/s.
    frames: optional uint8 ``[T, H, W, 3]`` clip, for the X–t slice.
    num_flow_frames: flow images, evenly spaced over the clip.
  Returns:
    The written paths, sorted: reference.png, flow_tNNN.png (one shared
    colour scale), power_spectrum.png, modes.png (one row per bin), and
    xt_slice.png when ``frames`` is given.
  """
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  num_frames = disp_px.shape[0]
  written = [out_dir / "reference.png"]
  _write_png(written[-1], image)
  times = np.unique(np.linspace(1, num_frames - 1, num_flow_frames).round().astype(int))
  max_magnitude = float(np.linalg.norm(disp_px[times], axis=-1).max())
  for t in times:
    written.append(out_dir / f"flow_t{t:03d}.png")
    _write_png(written[-1], flow_to_color(disp_px[t], max_magnitude))
  written.append(out_dir / "power_spectrum.png")
  plot_power_spectrum(spectral, fps, num_frames, written[-1])
  written.append(out_dir / "modes.png")
  _write_png(written[-1], _grid(modal_images(spectral), columns=2))
  if frames is not None:
    written.append(out_dir / "xt_slice.png")
    _write_png(written[-1], xt_slice(frames, frames.shape[1] // 2))
  return sorted(written)
