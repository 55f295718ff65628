"""One object with everything a picture needs to become a video: the motion
model (U-Net, pinned VAE, latent whitening, normalization), the renderer
and its splatting metric scale, and the clip length T and fps the models
learned.

    animator = Animator.load("runs")                     # or an export
    spectral = animator.spectral(picture, seed=0)        # [K, H, W, 2] complex64 px
    texture = animator.texture(spectral, times)          # [N, H, W, 2] px
    frames = animator.render(picture, texture, spectral) # [N, H, W, 3] uint8

Videos may be larger than the models (`data.pictures.video_size`): the
picture at the video's size, the spectral volume at the model's, upsampled
(`fit_spectral`), and the splatting metric in the model's pixels whatever
the video's size.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import jax
import numpy as np

from spectral_jax.inference import export, loading
from spectral_jax.inference.motion_model import MotionModel, SamplingOptions
from spectral_jax.data.pictures import fit_picture, fit_spectral
from spectral_jax.motion.normalize import denormalize
from spectral_jax.motion.spectral import animation_texture, from_real_layout
from spectral_jax.render.frames import render_frame_batches, render_frames
from spectral_jax.render.splat_metric import splat_metric


def video_times(num_frames: int, *, slowmo: float = 1.0, loop: bool = False) -> np.ndarray:
  """Times ``[M]`` (in the model's frames) of the video's frames.

  N frames at times 0 .. N-1; slow motion by ``slowmo`` S puts S frames per
  frame on the same path: ``S (N - 1) + 1`` frames from 0 to N-1, or, for a
  loop, ``S N`` frames from 0 to N - 1/S (the next would be time N, which a
  loop brings back to time 0).
  """
  if num_frames < 1:
    raise ValueError(f"the video needs at least 1 frame, got {num_frames}")
  if not slowmo >= 1:
    raise ValueError(f"slow motion must be at least 1, got {slowmo}")
  count = round(slowmo * num_frames) if loop else round(slowmo * (num_frames - 1)) + 1
  return (np.arange(count, dtype=np.float64) / slowmo).astype(np.float32)


@dataclasses.dataclass
class Animator:
  """Loaded models (`load`) and what they agree on: picture size ``width x
  height`` (the renderer's; the motion model may work at a smaller size of
  the same shape, see `spectral`), K frequency bins over T = ``num_frames``
  at ``fps``."""
  renderer: loading.LoadedRenderer
  motion: MotionModel | None
  width: int
  height: int
  num_freqs: int
  num_frames: int
  fps: float
  _samplers: dict = dataclasses.field(default_factory=dict, repr=False)

  @classmethod
  def load(cls, directory, *, with_motion: bool = True) -> "Animator":
    """The models in ``directory``: an export (`export.is_export`: it holds
    ``model.json``) or a folder of training runs (`loading.find_runs`);
    without ``with_motion`` only the renderer is loaded (motion comes from a
    file).

    Raises:
      FileNotFoundError: a needed run is missing.
      ValueError: the models disagree on the picture size; a bad export.
    """
    if export.is_export(directory):
      renderer, motion = export.load(directory, with_motion=with_motion)
    else:
      runs = loading.find_runs(directory)
      needed = ("motion", "renderer") if with_motion else ("renderer",)
      missing = [role for role in needed if role not in runs]
      if missing:
        raise FileNotFoundError(
            f"{directory}: no {' and no '.join(missing)} run in it (a directory of training "
            "runs: a renderer run and an ldm_freq_attn or ldm_pretrain run; or an export)")
      renderer = loading.load_renderer(runs["renderer"])
      motion = loading.load_motion_model(runs["motion"]) if with_motion else None
    data = renderer.config.data
    size, num_freqs = (data.width, data.height), data.num_freqs
    num_frames, fps = renderer.num_frames, renderer.fps
    if motion is not None:
      motion_size = (motion.config.data.width, motion.config.data.height)
      if motion_size[0] * size[1] != motion_size[1] * size[0] or motion_size[0] > size[0]:
        raise ValueError(f"{directory}: the motion model works at {motion_size[0]}x"
                         f"{motion_size[1]}, the renderer at {size[0]}x{size[1]} (the motion "
                         "model's size must be the renderer's or a smaller one of its shape)")
      num_freqs, num_frames, fps = motion.num_freqs, motion.num_frames, motion.fps
    return cls(renderer, motion, size[0], size[1], num_freqs, num_frames, fps)

  def spectral(self, picture: np.ndarray, seed: int = 0, options: SamplingOptions | None = None,
               *, progress: bool = False) -> np.ndarray:
    """The spectral volume ``[K, H, W, 2]`` complex64 (pixels) sampled for
    ``picture`` uint8 ``[H, W, 3]`` at the animator's size. Each distinct
    ``options`` compiles once per process (and is cached across processes
    when JAX's persistent cache is on).

    A motion model smaller than the renderer (the `demo` configs': 128x80
    against 256x160) samples for the picture shrunk to its size, and its
    spectral volume is upsampled to the picture's, displacements scaled to
    the picture's pixels: motion is smooth, so this loses little, and DDIM
    at a quarter of the pixels is about 4x faster."""
    if self.motion is None:
      raise ValueError("this animator was loaded without a motion model")
    if picture.shape != (self.height, self.width, 3):
      raise ValueError(f"picture {picture.shape} is not the model's "
                       f"{(self.height, self.width, 3)}")
    options = options or self.motion.options()
    if options not in self._samplers:
      self._samplers[options] = self.motion.sampler(options)
    data = self.motion.config.data
    upsampled = (data.width, data.height) != (self.width, self.height)
    if upsampled:  # Same shape, so no crop: area averaging only.
      picture, _ = fit_picture(picture, data.width, data.height)
    normalized = self._samplers[options](picture[None], jax.random.key(seed), progress)
    stats = self.motion.normalization
    spectral = from_real_layout(denormalize(np.asarray(normalized[0]), stats.scales, stats.power))
    return fit_spectral(spectral, self.width, self.height) if upsampled else spectral

  def texture(self, spectral: np.ndarray, times: np.ndarray, magnify: float = 1.0, *,
              num_frames: int | None = None) -> np.ndarray:
    """``magnify * (D(t) - D(0))`` ``[N, H, W, 2]`` float32 px at ``times``
    ``[N]`` (frames) of a spectral volume over ``num_frames`` T (default:
    the model's; a volume measured on another clip has its own)."""
    return animation_texture(spectral, times, num_frames or self.num_frames, magnify)

  def metric(self, spectral: np.ndarray, *, num_frames: int | None = None,
             size: tuple[int, int] | None = None) -> np.ndarray:
    """The renderer's splatting metric ``[H, W, 1]`` float32 of a spectral
    volume ``[K, H, W, 2]`` (the model's pixels, unmagnified) over
    ``num_frames`` T (default: the model's), with the renderer's
    ``metric_scale`` (`splat_metric`). With ``size`` ``(width, height)``
    it is resized (bilinear) to that size, its values kept: the metric
    counts the model's pixels, so a larger video is splatted as sharply as
    the renderer learned."""
    metric = splat_metric(spectral, num_frames or self.num_frames, self.renderer.metric_scale)
    if size is None or tuple(size) == metric.shape[1::-1]:
      return metric
    return cv2.resize(metric[..., 0], tuple(size), interpolation=cv2.INTER_LINEAR)[..., None]

  def at_size(self, picture: np.ndarray, spectral: np.ndarray) -> np.ndarray:
    """``spectral`` ``[K, H, W, 2]`` (the model's size and pixels) for a
    ``picture`` of another size of the model's shape: upsampled, in the
    picture's pixels (`fit_spectral`).

    Raises:
      ValueError: the picture is not of the model's aspect ratio.
    """
    height, width = picture.shape[:2]
    if (width, height) == spectral.shape[2:0:-1]:
      return spectral
    if width * self.height != height * self.width:
      raise ValueError(f"a {width}x{height} picture is not of the model's "
                       f"{self.width}x{self.height} shape")
    return fit_spectral(spectral, width, height)

  def render(self, picture: np.ndarray, texture: np.ndarray, spectral: np.ndarray, *,
             num_frames: int | None = None, batch_size: int = 8,
             progress: bool = False) -> np.ndarray:
    """Frames ``[N, H', W', 3]`` uint8 of ``picture`` (``[H', W', 3]``, the
    model's size or another of its shape) moved by ``texture`` (its
    pixels), splatted with the `metric` of ``spectral`` ``[K, H, W, 2]``
    (the model's size) over ``num_frames`` T, the volume of the motion
    (unmagnified): the metric the renderer was trained with, whatever the
    magnification, frame times or size of ``texture``."""
    size = picture.shape[1::-1]
    return render_frames(self.renderer.renderer, picture, texture,
                         self.metric(spectral, num_frames=num_frames, size=size),
                         batch_size=batch_size, progress=progress)

  def video(self, picture: np.ndarray, spectral: np.ndarray, times: np.ndarray,
            magnify: float = 1.0, *, num_frames: int | None = None, batch_size: int = 8,
            progress: bool = False):
    """The frames `render` gives for ``texture(at_size(picture, spectral),
    times, magnify)``, bit for bit, yielded as uint8 batches ``[n, H', W',
    3]`` and computed as they are asked for: memory holds a batch's texture
    and frames, not the video's, whatever its length and size. ``picture``
    is at the video's size, ``spectral`` at the model's."""
    period = num_frames or self.num_frames
    moving = self.at_size(picture, spectral)
    textures = (self.texture(moving, times[start:start + batch_size], magnify,
                             num_frames=period)
                for start in range(0, len(times), batch_size))
    metric = self.metric(spectral, num_frames=period, size=picture.shape[1::-1])
    yield from render_frame_batches(
        self.renderer.renderer, picture, textures, metric,
        batch_size=min(batch_size, len(times)), total=len(times), progress=progress)


# Where the default model goes: an export (`export.write`) inside the package,
# made by tools/train_demo.sh (none ships yet).
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "default_model"


def resolve_checkpoint(checkpoint) -> Path:
  """The models to animate with: ``checkpoint`` if given, else the default
  model installed with the package (`DEFAULT_MODEL`).

  Raises:
    FileNotFoundError: none given and none installed.
  """
  if checkpoint:
    return Path(checkpoint)
  if export.is_export(DEFAULT_MODEL):
    return DEFAULT_MODEL
  raise FileNotFoundError(
      f"no --checkpoint given and no default model in {DEFAULT_MODEL}: train the stages "
      "(docs/TRAINING.md) and pass --checkpoint DIR, the directory of the runs or an export")
