"""Synthetic oscillating scenes with exact ground-truth motion.

A scene is a still background (a real photo shipped with scikit-image, or
a generated texture) with a few plant-like layers over it that sway like
cantilevers: each is anchored at a base, and its displacement grows like
``clip(s, 0, 1)^2`` with the position ``s`` along the stalk (0 at the base,
1 at the tip), the shape of a cantilever's first mode near the base. Each
layer's motion in time is a sum of a few lightly damped harmonic oscillators,
swaying from before the clip starts and kicked again by gusts. Layers are
composited in order, later ones in front; the background never moves.

Frequency law: oscillator frequencies are uniform in ``freq_range_hz``
(0.2-4 Hz) and a mode's mean-square amplitude is ``exp(-f / power_decay_hz)``,
so the expected power spectrum of the motion falls exponentially with
frequency, the low-frequency-dominated fall-off the paper shows for motion
measured on real videos (its reason for keeping only the lowest K bins).
Modes ring down at a fixed damping ratio, so higher ones also die out faster,
which steepens the fall-off a little more.

Frames are composited from the layers, each warped by its own smooth
displacement field, so a swaying plant covers the background on one side
and uncovers it on the other, as in real footage: forward warping the
picture alone leaves holes there, which is what a renderer must learn to
fill. ``disp_px`` is the ground truth of every pixel of the picture: the
displacement of the layer seen at that pixel at rest (blended over the
anti-aliased edges), 0 on the background.
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools

import cv2
import numpy as np

from spectral_jax.data import defaults
from spectral_jax.motion.spectral import spectral_volume

# Photos inside the scikit-image package itself (skimage.data loads them
# without a download); grey ones are tinted into colour.
_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "grass", "gravel", "brick")

# Largest |grad M| (pixels per pixel) of a layer's displacement field M.
# Below 1 the layer's forward map x -> x + M(x) is one-to-one and the
# fixed-point inverse in `warp_forward` contracts by this factor per iteration.
_MAX_STRAIN = 0.5


@dataclasses.dataclass(frozen=True)
class Layers:
  """What a scene's frames are composited from (`render_frame`).

  Attributes:
    background: float32 ``[H, W, 3]`` in [0, 255], never moves.
    colours: float32 ``[R, H, W, 3]`` in [0, 255], each layer's foliage.
    alphas: float32 ``[R, H, W]`` in [0, 1], each layer's coverage at rest.
    shapes: float32 ``[R, H, W]`` mode shapes ``clip(s, 0, 1)^2``, smooth
      over the whole frame.
    motion: float32 ``[R, T, 2]`` pixels: layer r's field at frame t is
      ``motion[r, t] * shapes[r]``; ``motion[:, 0] == 0``.
  """
  background: np.ndarray
  colours: np.ndarray
  alphas: np.ndarray
  shapes: np.ndarray
  motion: np.ndarray

  def field(self, layer: int, t: int) -> np.ndarray:
    """float32 ``[H, W, 2]``: where layer ``layer`` moves at frame ``t``, px."""
    return self.motion[layer, t] * self.shapes[layer][..., None]

  def coverage(self, t: int) -> np.ndarray:
    """float32 ``[H, W]`` in [0, 1]: how much of each pixel the moved layers
    cover at frame ``t``; 0 where the background shows through."""
    bare = np.ones(self.alphas.shape[1:], np.float32)
    for r in range(len(self.alphas)):
      bare *= 1 - warp_forward(self.alphas[r], self.field(r, t))
    return 1 - bare


@dataclasses.dataclass(frozen=True)
class SyntheticScene:
  """A synthetic clip and its ground truth.

  Attributes:
    frames: uint8 ``[T, H, W, 3]`` RGB; ``frames[0]`` is the reference picture
      I0 (the layers at rest). ``[1, H, W, 3]`` when made with
      ``render=False``; `render_frame` makes any other frame on demand.
    disp_px: float32 ``[T, H, W, 2]`` ground-truth ``(dx, dy)`` in pixels from
      frame 0 to frame t; ``disp_px[0] == 0`` exactly.
    spectral: complex64 ``[K, H, W, 2]``, ``spectral_volume(disp_px, K)``.
    moving_mask: float32 ``[H, W]`` in [0, 1]: how much of each pixel the
      swaying layers cover at rest; ``disp_px`` is exactly 0 where it is 0.
    fps: frames per second of the clip.
    layers: what the frames are composited from.
  """
  frames: np.ndarray
  disp_px: np.ndarray
  spectral: np.ndarray
  moving_mask: np.ndarray
  fps: float
  layers: Layers


def texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """uint8 ``[H, W, 3]`` multi-scale smooth colour noise.

  Octaves of Gaussian noise on grids from 3 cells across down to 2-pixel
  cells, upsampled bicubically and summed with equal weight (the 1/f
  amplitude spectrum of natural images): coarse octaves lay out the picture,
  fine ones give optical flow detail to lock on to everywhere.
  """
  image = np.zeros((height, width, 3), np.float32)
  cell_px = max(height, width) / 3.0
  while cell_px >= 2.0:
    grid_shape = (max(2, round(height / cell_px)), max(2, round(width / cell_px)), 3)
    noise = rng.standard_normal(grid_shape).astype(np.float32)
    image += cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    cell_px /= 2.0
  # Correlated channels look like coloured surfaces rather than RGB static.
  mixing = 0.4 * np.eye(3) + rng.uniform(0.0, 0.6, (3, 3))
  image = image @ mixing.astype(np.float32)
  image = (image - image.mean((0, 1))) / (image.std((0, 1)) + 1e-6)
  base = rng.uniform(70.0, 180.0, 3)
  contrast = rng.uniform(35.0, 55.0)
  return np.clip(base + contrast * image, 0, 255).astype(np.uint8)


@functools.cache
def _load_photo(name: str) -> np.ndarray:
  import skimage.data  # Lazily: only photo backgrounds need it.
  image = getattr(skimage.data, name)()
  image.setflags(write=False)  # Shared by every call through the cache.
  return image


def photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """uint8 ``[H, W, 3]``: a random crop (`random_crop`) of a photo shipped
  with scikit-image; grey photos are tinted into colour."""
  image = random_crop(rng, _load_photo(_PHOTOS[rng.integers(len(_PHOTOS))]), height, width)
  if image.ndim == 2:
    tint = rng.uniform(0.75, 1.15, 3)
    image = np.clip(image[..., None] * tint, 0, 255).astype(np.uint8)
  return image


def random_crop(rng: np.random.Generator, source: np.ndarray, height: int,
                width: int) -> np.ndarray:
  """uint8 ``[H, W]`` or ``[H, W, C]``: a random crop of ``source``.

  The crop has the output's aspect ratio, covers 50-100% of the largest such
  crop, is flipped left-right half of the time and resized to ``H x W``.
  """
  src_h, src_w = source.shape[:2]
  scale = min(src_h / height, src_w / width) * rng.uniform(0.5, 1.0)
  crop_h = min(src_h, max(1, round(height * scale)))
  crop_w = min(src_w, max(1, round(width * scale)))
  top = rng.integers(src_h - crop_h + 1)
  left = rng.integers(src_w - crop_w + 1)
  crop = source[top:top + crop_h, left:left + crop_w]
  if rng.random() < 0.5:
    crop = crop[:, ::-1]
  interpolation = cv2.INTER_AREA if scale >= 1.0 else cv2.INTER_CUBIC
  return cv2.resize(np.ascontiguousarray(crop), (width, height), interpolation=interpolation)


def warp_forward(image: np.ndarray, disp_px: np.ndarray, iterations: int = 8) -> np.ndarray:
  """Render the frame in which the pixel of ``image`` at x has moved to x + D(x).

  Each output pixel y needs its source x with ``x + D(x) = y``, found by the
  fixed-point iteration ``x <- y - D(x)`` from ``x = y`` (D sampled
  bilinearly). The iteration map has Lipschitz constant ``L = max |grad D|``,
  so the error shrinks by at least L per step: for the layers' fields of
  `make_scene` (L <= 0.5, |D| <= a few pixels) 8 steps leave well under
  0.02 px, below the 1/32-pixel grid on which `cv2.remap` places samples.

  Args:
    image: ``[H, W]`` or ``[H, W, C]`` picture, uint8 or float.
    disp_px: ``[H, W, 2]`` forward displacement ``(dx, dy)``, pixels.
    iterations: fixed-point steps.
  Returns:
    The frame, same shape and dtype as ``image``; pixels whose source lies
    outside the picture are filled by reflection.
  """
  height, width = disp_px.shape[:2]
  disp_px = np.ascontiguousarray(disp_px, np.float32)
  grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32),
                               np.arange(height, dtype=np.float32))
  src_x, src_y = grid_x, grid_y
  for _ in range(iterations):
    at_src = cv2.remap(disp_px, src_x, src_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    src_x, src_y = grid_x - at_src[..., 0], grid_y - at_src[..., 1]
  return cv2.remap(image, src_x, src_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _cantilever(rng, height: int, width: int):
  """Geometry of one swaying layer.

  Most layers are plants growing up from near the bottom edge; one in five
  is a branch reaching in from a side edge.

  Returns:
    alpha: float32 ``[H, W]`` painted shape, edge anti-aliased over 1 px.
    shape: float32 ``[H, W]`` mode shape ``clip(s, 0, 1)^2``, defined (and
      smooth) over the whole frame, so the layer warps without folding.
    sway: ``[2]`` unit vector, the direction of the first mode: across the
      stalk, so mostly horizontal for upright plants.
  """
  if rng.random() < 0.2:
    from_left = rng.random() < 0.5
    base = np.array([-0.02 * width if from_left else 1.02 * width,
                     rng.uniform(0.15, 0.7) * height])
    rise = rng.uniform(0.0, 0.5)  # Image y points down: negative angles go up.
    angle = -rise if from_left else np.pi + rise
    length = rng.uniform(0.3, 0.6) * width
  else:
    base = np.array([rng.uniform(0.1, 0.9) * width, rng.uniform(0.8, 1.05) * height])
    angle = -np.pi / 2 + rng.normal(0.0, 0.3)
    length = rng.uniform(0.45, 0.85) * height
  half_width = rng.uniform(0.15, 0.35) * length
  lobes, lobe_phase = rng.integers(2, 6), rng.uniform(0, 2 * np.pi)

  stalk = np.array([np.cos(angle), np.sin(angle)])
  across = np.array([-stalk[1], stalk[0]])
  y, x = np.mgrid[0:height, 0:width].astype(np.float32)
  rel_x, rel_y = x - base[0], y - base[1]
  s = (rel_x * stalk[0] + rel_y * stalk[1]) / length
  r = rel_x * across[0] + rel_y * across[1]
  # Leaf-like outline, narrow at base and tip, with a few lobes.
  outline = (half_width * (0.15 + 0.85 * np.sin(np.pi * np.clip(s, 0, 1)))
             * (1 + 0.15 * np.sin(2 * np.pi * lobes * s + lobe_phase)))
  inside_px = np.minimum(np.minimum(outline - np.abs(r), s * length), (1 - s) * length)
  alpha = np.clip(inside_px + 0.5, 0, 1).astype(np.float32)
  shape = np.clip(s, 0, 1) ** 2
  sway_angle = rng.normal(0.0, 0.3)
  rotation = np.array([[np.cos(sway_angle), -np.sin(sway_angle)],
                       [np.sin(sway_angle), np.cos(sway_angle)]])
  return alpha, shape.astype(np.float32), rotation @ across


def _sway(rng, num_frames: int, fps: float, sway: np.ndarray, *, num_modes: int,
          freq_range_hz, power_decay_hz: float, gust_rate_hz: float) -> np.ndarray:
  """float64 ``[T, 2]`` motion of one layer, in units `make_scene` scales.

  A sum of damped harmonic oscillators (damping ratio 1-6%): each is already
  swaying at frame 0 with a random phase, and Poisson gusts, shared by the
  layer's modes as one push, kick them again. A mode's amplitude is
  ``exp(-f / (2 power_decay_hz))`` (power ``exp(-f / power_decay_hz)``); it
  moves along ``sway`` turned by a small random angle, so the modes trace
  out slightly different directions.
  """
  times_s = np.arange(num_frames) / fps
  freqs_hz = rng.uniform(*freq_range_hz, num_modes)
  damping_ratio = rng.uniform(0.01, 0.06, num_modes)
  omega = 2 * np.pi * freqs_hz
  decay = damping_ratio * omega
  omega_damped = omega * np.sqrt(1 - damping_ratio ** 2)
  amplitude = np.exp(-freqs_hz / (2 * power_decay_hz))
  phase = rng.uniform(0, 2 * np.pi, num_modes)
  free = np.exp(-decay * times_s[:, None]) * np.cos(omega_damped * times_s[:, None] + phase)

  num_gusts = rng.poisson(gust_rate_hz * num_frames / fps)
  gust_s = rng.uniform(0, num_frames / fps, num_gusts)
  push = rng.uniform(0.3, 1.0, num_gusts) * rng.choice([-1.0, 1.0], num_gusts)
  # Impulse response from rest; clamping the lag at 0 makes it vanish before
  # the gust (sin 0 = 0) without a mask.
  lag = np.maximum(times_s[:, None, None] - gust_s, 0.0)  # [T, 1, G]
  kicked = np.exp(-decay[:, None] * lag) * np.sin(omega_damped[:, None] * lag)  # [T, M, G]
  modes = amplitude * (free + kicked @ push)  # [T, M]

  turn = rng.normal(0.0, 0.3, num_modes)
  directions = np.stack([np.cos(turn) * sway[0] - np.sin(turn) * sway[1],
                         np.sin(turn) * sway[0] + np.cos(turn) * sway[1]], -1)  # [M, 2]
  return modes @ directions


def _foliage(rng, height: int, width: int, count: int) -> np.ndarray:
  """float32 ``[count, H, W, 3]`` in [0, 255]: one green to yellow tint per
  layer of one shared texture, so the layers look like foliage and carry
  detail for optical flow."""
  shade = texture(rng, height, width).mean(-1, keepdims=True) / 255.0
  colours = [np.array(colorsys.hsv_to_rgb(rng.uniform(0.12, 0.4), rng.uniform(0.45, 0.85),
                                          rng.uniform(0.35, 0.85))) for _ in range(count)]
  return np.stack([np.clip(255.0 * c * (0.4 + 1.2 * shade), 0, 255) for c in colours]).astype(
      np.float32)


def _visibility(alphas: np.ndarray) -> np.ndarray:
  """float32 ``[R, H, W]``: how much of each pixel layer r shows at rest,
  ``alpha_r * prod_{q > r} (1 - alpha_q)`` (later layers in front)."""
  visible = np.empty_like(alphas)
  in_front = np.ones(alphas.shape[1:], np.float32)  # Transmittance of the layers above.
  for r in reversed(range(len(alphas))):
    visible[r] = alphas[r] * in_front
    in_front = in_front * (1 - alphas[r])
  return visible


def render_frame(layers: Layers, t: int) -> np.ndarray:
  """uint8 ``[H, W, 3]``: frame ``t``, every layer warped by its field
  (`warp_forward`, colour premultiplied by alpha so the anti-aliased edges
  resample correctly) and composited over the background in order."""
  frame = layers.background  # Never written to: each step makes a new array.
  for r in range(len(layers.alphas)):
    alpha = layers.alphas[r][..., None]
    rgba = np.concatenate([layers.colours[r] * alpha, alpha], axis=-1)
    if np.any(layers.motion[r, t]):  # At rest the layer is used as it is, bit for bit.
      rgba = warp_forward(rgba, layers.field(r, t))
    frame = frame * (1 - rgba[..., 3:]) + rgba[..., :3]
  return np.round(np.clip(frame, 0, 255)).astype(np.uint8)


def make_scene(seed: int, *, num_frames: int = defaults.NUM_FRAMES,
               height: int = defaults.HEIGHT, width: int = defaults.WIDTH,
               num_freqs: int = defaults.NUM_FREQS, fps: float = defaults.FPS,
               background: str = "auto", max_amplitude_px: float = defaults.MAX_AMPLITUDE_PX,
               render: bool = True,
               num_regions: tuple[int, int] = (2, 6), modes_per_region: tuple[int, int] = (2, 4),
               freq_range_hz: tuple[float, float] = (0.2, 4.0), power_decay_hz: float = 1.0,
               gust_rate_hz: float = 0.3) -> SyntheticScene:
  """A deterministic synthetic scene: same seed, bitwise the same arrays.

  Args:
    seed: picks everything (background, layers, oscillators).
    num_frames: T. height, width: frame size in pixels. fps: frame rate.
      Clip settings default to the paper's (`defaults`).
    num_freqs: K, bins kept in ``spectral`` (K <= T // 2 + 1).
    background: "photo", "texture", or "auto" (either, chosen by the seed).
    max_amplitude_px: no pixel ever moves further than this (Euclidean,
      pixels) from its frame-0 position. Each layer's modes are scaled by
      0.3-0.7 times it; the whole scene is scaled down where a layer's
      largest swing would go beyond it, or where a layer's field would
      stretch by more than 0.5 px per px (small frames, large amplitudes).
    render: composite every frame; if False only ``frames[0]`` is made,
      for training on motion generated on the fly (`render_frame` makes
      single frames).
    num_regions, modes_per_region: inclusive ranges of the number of swaying
      layers and of oscillators per layer.
    freq_range_hz: oscillator frequencies are uniform in this range (Hz).
    power_decay_hz: a mode at f Hz has mean-square amplitude
      ``exp(-f / power_decay_hz)``.
    gust_rate_hz: mean number of gusts per second re-exciting each layer.
  """
  if background not in ("auto", "photo", "texture"):
    raise ValueError(f"background must be 'auto', 'photo' or 'texture', got {background!r}")
  rng = np.random.default_rng(seed)
  if background == "auto":
    background = "photo" if rng.random() < 0.5 else "texture"
  picture = (photo if background == "photo" else texture)(rng, height, width)

  count = int(rng.integers(num_regions[0], num_regions[1] + 1))
  alphas, shapes, sways = (np.stack(part) for part in zip(
      *[_cantilever(rng, height, width) for _ in range(count)]))
  motion = layer_motion(rng, sways, num_frames=num_frames, fps=fps,
                        max_amplitude_px=max_amplitude_px, modes_per_region=modes_per_region,
                        freq_range_hz=freq_range_hz, power_decay_hz=power_decay_hz,
                        gust_rate_hz=gust_rate_hz)
  motion = fit_motion(motion, alphas, shapes, max_amplitude_px)
  return assemble_scene(picture.astype(np.float32), _foliage(rng, height, width, count),
                        alphas, shapes, motion, num_freqs=num_freqs, fps=fps, render=render)


def layer_motion(rng, sways: np.ndarray, *, num_frames: int, fps: float,
                 max_amplitude_px: float, modes_per_region: tuple[int, int],
                 freq_range_hz: tuple[float, float], power_decay_hz: float,
                 gust_rate_hz: float) -> np.ndarray:
  """float64 ``[R, T, 2]`` pixels: each layer's sway (`_sway`) from frame 0.

  Args:
    sways: ``[R, 2]`` unit vectors, each layer's first-mode direction.
    Others: as `make_scene`'s. The modes of a layer share one gain, drawn
    independently of their frequencies; `fit_motion` then bounds the scene.
  """
  if not len(sways):
    return np.zeros((0, num_frames, 2))
  motion = np.stack([
      _sway(rng, num_frames, fps, sway,
            num_modes=int(rng.integers(modes_per_region[0], modes_per_region[1] + 1)),
            freq_range_hz=freq_range_hz, power_decay_hz=power_decay_hz,
            gust_rate_hz=gust_rate_hz)
      for sway in sways])  # [R, T, 2]
  motion -= motion[:, :1]  # Displacement from frame 0, exactly 0 there.
  # One gain for all of a layer's modes: normalising each layer to a peak
  # would undo the power law.
  motion *= max_amplitude_px * rng.uniform(0.3, 0.7, len(sways))[:, None, None]
  return motion


def fit_motion(motion: np.ndarray, alphas: np.ndarray, shapes: np.ndarray,
               max_amplitude_px: float) -> np.ndarray:
  """``motion`` ``[R, T, 2]`` scaled by one factor for the whole scene (so
  the layers keep their relative amplitudes) such that no pixel of a layer
  (``alphas`` > 0) moves further than ``max_amplitude_px`` and no layer's
  field ``motion[r, t] * shapes[r]`` stretches by more than `_MAX_STRAIN`
  px per px (its forward map then never folds); frame 0 is exactly 0.
  """
  # Strain: |grad M_r| <= |motion_r(t)| |grad shape_r| bounds every frame's.
  # Amplitude: a pixel moves by a blend (weights summing to <= 1) of the
  # fields of the layers it shows, each at most its swing over its own area.
  swings = np.linalg.norm(motion, axis=-1).max(1, initial=0.0)  # [R]
  strain = max((swing * np.hypot(*np.gradient(shape)).max()
                for swing, shape in zip(swings, shapes)), default=0.0)
  reach = max((swing * shape[alpha > 0].max(initial=0.0)
               for swing, shape, alpha in zip(swings, shapes, alphas)), default=0.0)
  motion = motion * min(1.0, _MAX_STRAIN / max(strain, 1e-12),
                        max_amplitude_px / max(reach, 1e-12))
  motion[:, 0] = 0.0
  return motion


def assemble_scene(background: np.ndarray, colours: np.ndarray, alphas: np.ndarray,
                   shapes: np.ndarray, motion: np.ndarray, *, num_freqs: int, fps: float,
                   render: bool) -> SyntheticScene:
  """The scene of these layers (`Layers`' shapes; ``motion`` from
  `fit_motion`): its ground truth and frames.

  ``disp_px`` at a pixel is the blend, by how much of it each layer shows at
  rest (`_visibility`), of the layers' fields there; 0 on the background.
  """
  count, height, width = alphas.shape
  num_frames = motion.shape[1]
  visible = _visibility(alphas)
  # [T * 2, R] @ [R, H * W]: one matmul for every frame's ground truth.
  planes = (motion.transpose(1, 2, 0).reshape(num_frames * 2, count).astype(np.float32)
            @ (visible * shapes).reshape(count, height * width))
  disp_px = np.ascontiguousarray(planes.reshape(num_frames, 2, height, width).transpose(0, 2, 3, 1))

  layers = Layers(background=background, colours=colours, alphas=alphas,
                  shapes=shapes, motion=motion.astype(np.float32))
  frames = np.stack([render_frame(layers, t) for t in range(num_frames if render else 1)])
  return SyntheticScene(frames=frames, disp_px=disp_px,
                        spectral=spectral_volume(disp_px, num_freqs),
                        moving_mask=np.clip(visible.sum(0), 0, 1), fps=fps, layers=layers)
