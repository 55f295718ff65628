"""Synthetic oscillating scenes with exact ground-truth motion.

A picture (a real photo shipped with scikit-image, or a generated texture)
holds a few plant-like regions that sway like cantilevers: anchored at a
base, displaced more the further from it (the first cantilever mode grows
like ``(s / L)^2`` along the stalk), with soft edges so the field is smooth.
Each region is driven by a few damped harmonic oscillators forced by smooth
random wind, simulated in time; each oscillator's RMS amplitude falls
exponentially with its natural frequency, as the paper observed for the
power spectra of real scenes. Frames are rendered by warping the picture
with the known displacement, so the displacement and spectral volume are
the ground truth for every frame.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from spectral_jax.motion.spectral import spectral_volume

# Colour photos in skimage.data, bundled with the package (no download).
_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
           "immunohistochemistry", "retina")
# Oscillator natural frequencies (Hz) are drawn log-uniformly from this range;
# RMS amplitude goes like exp(-f / _DECAY_HZ).
_FREQ_RANGE_HZ = (0.2, 4.0)
_DECAY_HZ = 1.0
_OSCILLATORS_PER_REGION = 3
# Steps of the oscillator simulation per video frame, and seconds simulated
# before frame 0 so the oscillators are in their steady state.
_SUBSTEPS = 8
_WARMUP_S = 4.0


@dataclasses.dataclass(frozen=True)
class SyntheticScene:
  """A scene and its ground truth.

  Attributes:
    frames: uint8 ``[T, H, W, 3]`` RGB (``[1, H, W, 3]`` if not rendered);
      ``frames[0]`` is the reference picture.
    disp_px: float32 ``[T, H, W, 2]`` (dx, dy) in pixels from frame 0 to t.
    spectral: complex64 ``[K, H, W, 2]``, ``spectral_volume(disp_px, K)``.
    moving_mask: float32 ``[H, W]`` in [0, 1], where regions oscillate.
    fps: frames per second.
  """
  frames: np.ndarray
  disp_px: np.ndarray
  spectral: np.ndarray
  moving_mask: np.ndarray
  fps: float


def texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """uint8 ``[H, W, 3]``: colour noise summed over several scales, which
  has structure at every scale for optical flow to lock on to."""
  image = np.zeros((height, width, 3), np.float32)
  for sigma in (1.0, 2.0, 4.0, 8.0, 16.0):
    noise = rng.standard_normal((height, width, 3)).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), sigma)
    image += blurred / (blurred.std() + 1e-6) * sigma ** 0.3
  mixing = rng.uniform(0.2, 1.0, (3, 3)).astype(np.float32)
  image = image @ mixing
  image -= image.min((0, 1))
  image /= image.max((0, 1)) + 1e-6
  return (255 * image).astype(np.uint8)


def photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """uint8 ``[H, W, 3]``: a random crop of a scikit-image photo with the
  aspect ratio of ``width x height``, resized."""
  import skimage.data
  source = getattr(skimage.data, _PHOTOS[rng.integers(len(_PHOTOS))])()
  src_h, src_w = source.shape[:2]
  scale = rng.uniform(0.6, 1.0) * min(src_h / height, src_w / width)
  crop_h, crop_w = int(height * scale), int(width * scale)
  top = rng.integers(src_h - crop_h + 1)
  left = rng.integers(src_w - crop_w + 1)
  crop = source[top:top + crop_h, left:left + crop_w]
  return cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)


def _region_field(rng, height, width):
  """float32 ``[H, W]`` mode shape of one cantilever region: 0 at its base,
  growing like ``s^2`` to 1 at its tip, fading smoothly at its sides."""
  y, x = np.mgrid[0:height, 0:width].astype(np.float32)
  base_x = rng.uniform(0.1, 0.9) * width
  base_y = rng.uniform(0.6, 1.05) * height
  length = rng.uniform(0.4, 0.8) * height
  half_width = rng.uniform(0.08, 0.2) * width
  lean = rng.uniform(-0.4, 0.4)
  s = (base_y - y) / length  # 0 at the base, 1 at the tip.
  lateral = (x - base_x - lean * length * np.clip(s, 0, 1)) / half_width
  along = np.clip(s, 0.0, 1.0) ** 2 * np.clip((1.3 - s) / 0.3, 0.0, 1.0)
  across = np.exp(-0.5 * lateral ** 2)
  return (along * across).astype(np.float32)


def _oscillations(rng, num_frames: int, fps: float, num_oscillators: int) -> np.ndarray:
  """float64 ``[T, N]`` positions of N wind-driven damped oscillators, each
  with unit RMS times an amplitude that decays with its frequency."""
  freqs = np.exp(rng.uniform(*np.log(_FREQ_RANGE_HZ), num_oscillators))
  omega = 2 * np.pi * freqs
  damping = rng.uniform(0.03, 0.12, num_oscillators)  # Ratio to critical.
  dt = 1.0 / (fps * _SUBSTEPS)
  warmup = int(_WARMUP_S * fps * _SUBSTEPS)
  steps = warmup + num_frames * _SUBSTEPS
  # Wind: white noise smoothed over ~0.1 s, a different gust pattern each.
  wind = rng.standard_normal((steps, num_oscillators))
  wind = cv2.GaussianBlur(wind, (1, 0), sigmaX=1e-3, sigmaY=0.1 / dt)
  position = np.zeros(num_oscillators)
  velocity = np.zeros(num_oscillators)
  track = np.empty((num_frames, num_oscillators))
  for step in range(steps):
    # Semi-implicit Euler: stable for these stiffnesses at this step size.
    accel = wind[step] * omega ** 2 - 2 * damping * omega * velocity - omega ** 2 * position
    velocity += dt * accel
    position += dt * velocity
    frame, sub = divmod(step - warmup, _SUBSTEPS)
    if step >= warmup and sub == 0:
      track[frame] = position
  track /= track.std(0) + 1e-12
  return track * np.exp(-freqs / _DECAY_HZ)


def warp_forward(image: np.ndarray, disp_px: np.ndarray, iterations: int = 8) -> np.ndarray:
  """The frame in which the pixel of ``image`` at x has moved to x + D(x).

  Rendering needs the inverse map: for each output pixel y the source x with
  ``x + D(x) = y``, found by the fixed-point iteration ``x <- y - D(x)``. It
  converges when ``|grad D| < 1``, which holds by a wide margin for the
  smooth, few-pixel fields here (each step shrinks the error by |grad D|).

  Args:
    image: ``[H, W, C]`` uint8 or float picture.
    disp_px: float32 ``[H, W, 2]`` forward displacement, pixels.
  Returns:
    ``[H, W, C]`` frame, same dtype as ``image``.
  """
  height, width = disp_px.shape[:2]
  grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32),
                               np.arange(height, dtype=np.float32))
  disp_px = np.ascontiguousarray(disp_px, np.float32)
  src_x, src_y = grid_x, grid_y
  for _ in range(iterations):
    at_src = cv2.remap(disp_px, src_x, src_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    src_x, src_y = grid_x - at_src[..., 0], grid_y - at_src[..., 1]
  return cv2.remap(image, src_x, src_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def make_scene(seed: int, *, num_frames: int = 150, height: int = 160, width: int = 256,
               num_freqs: int = 16, fps: float = 30.0, background: str = "auto",
               max_amplitude_px: float = 10.0, num_regions: tuple[int, int] = (3, 7),
               render: bool = True) -> SyntheticScene:
  """A deterministic scene for ``seed``.

  Args:
    background: "photo", "texture", or "auto" (either, by seed).
    max_amplitude_px: no pixel moves further than this from its frame-0
      position.
    num_regions: inclusive range of the number of swaying regions.
    render: warp every frame; if False only ``frames[0]`` is made (for
      training on spectral volumes generated on the fly).
  """
  if background not in ("auto", "photo", "texture"):
    raise ValueError(f"background must be auto, photo or texture, got {background!r}")
  rng = np.random.default_rng(seed)
  if background == "auto":
    background = "photo" if rng.random() < 0.5 else "texture"
  image = (photo if background == "photo" else texture)(rng, height, width)

  count = int(rng.integers(num_regions[0], num_regions[1] + 1))
  fields = np.stack([_region_field(rng, height, width) for _ in range(count)])
  signals = _oscillations(rng, num_frames, fps, count * _OSCILLATORS_PER_REGION)
  # Each oscillator pushes along its own direction, mostly sideways.
  angles = rng.normal(0.0, 0.35, count * _OSCILLATORS_PER_REGION)
  directions = np.stack([np.cos(angles) * rng.choice([-1, 1], angles.size), np.sin(angles)], -1)
  motion = (signals[:, :, None] * directions).reshape(num_frames, count, -1, 2).sum(2)
  motion -= motion[0]
  motion *= rng.uniform(0.5, 1.0, count)[:, None] / (np.abs(motion).max((0, 2)) + 1e-12)[:, None]
  disp_px = np.einsum("rhw,trc->thwc", fields, motion.astype(np.float32))
  peak = np.linalg.norm(disp_px, axis=-1).max()
  disp_px *= max_amplitude_px / max(peak, 1e-12) if peak > 0 else 1.0
  disp_px = disp_px.astype(np.float32)

  if render:
    frames = np.stack([image] + [warp_forward(image, d) for d in disp_px[1:]])
  else:
    frames = image[None]
  return SyntheticScene(frames=frames, disp_px=disp_px,
                        spectral=spectral_volume(disp_px, num_freqs),
                        moving_mask=np.clip(fields.sum(0) * 4, 0, 1).astype(np.float32),
                        fps=fps)
