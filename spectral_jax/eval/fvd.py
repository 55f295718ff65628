"""Fréchet Video Distance (Unterthiner et al. 2018) and its sliding-window
form over time.

FVD is the Fréchet distance (`distances.frechet_distance`) between Gaussian
fits of the I3D features of real and of generated 16-frame clips. The
features are the 400 Kinetics logits of I3D (`spectral_jax.eval.i3d`), the
embedding of the reference implementation (``frechet_video_distance.py`` of
google-research, which uses TF-Hub's ``i3d-kinetics-400`` output) and of
later reimplementations, not the 1024 pre-logit features.

Preprocessing, as the reference: every frame resized to 224 x 224 (the
aspect ratio is not kept) and uint8 ``[0, 255]`` mapped linearly to
``[-1, 1]`` (`inputs.network_input`). The resize is bilinear with half-pixel
centres and no anti-aliasing, as the StyleGAN-V reimplementation's; the TF1
reference's ``resize_bilinear`` samples without half-pixel centres, so values
differ from it slightly: compare FVDs computed by one implementation.

Sliding-window FVD (the paper's plot of quality over a long video): the
clips of frames ``[s, s + 16)`` at window starts ``s = 0, stride, 2 stride,
...``, one FVD per start, over the videos long enough to have that window.
"""

from __future__ import annotations

from typing import Callable, Iterable

import jax
import numpy as np
from flax import nnx

from spectral_jax.eval.distances import frechet_distance, gaussian_fit
from spectral_jax.eval.i3d import load_i3d
from spectral_jax.eval.inputs import map_batches, network_input

CLIP_FRAMES = 16
RESOLUTION = 224


class ClipEmbedder:
  """I3D logits ``[N, 400]`` float64 of uint8 clips ``[N, 16, H, W, 3]``.

  One compiled function per frame size (padded batches of ``batch_size``
  clips, see `map_batches`); the I3D weights are its arguments, not
  constants, so compiling does not copy them.
  """

  def __init__(self, model=None, *, batch_size: int = 8):
    graphdef, state = nnx.split(model if model is not None else load_i3d())
    self._state = state
    self._embed = jax.jit(
        lambda state, clips: nnx.merge(graphdef, state)(network_input(clips, RESOLUTION)))
    self.batch_size = batch_size

  def __call__(self, clips) -> np.ndarray:
    clips = np.asarray(clips)
    if clips.ndim != 5 or clips.shape[1] != CLIP_FRAMES or clips.shape[-1] != 3:
      raise ValueError(f"clips must be [N, {CLIP_FRAMES}, H, W, 3], got {clips.shape}")
    return map_batches(lambda batch: self._embed(self._state, batch), clips, self.batch_size)


def window_starts(num_frames: int, stride: int | None) -> range:
  """Starts of the 16-frame windows of a ``num_frames`` video: every
  ``stride`` frames, or only the first window for None."""
  # A step of num_frames leaves only start 0.
  return range(0, num_frames - CLIP_FRAMES + 1, stride or max(num_frames, 1))


def window_features(videos: Iterable[tuple[str, np.ndarray]], embed: Callable,
                    stride: int | None = None) -> dict[int, list[np.ndarray]]:
  """``{start: [features [D] of each video long enough]}`` of the windows
  (`window_starts`) of ``videos``, pairs ``(name, uint8 [T, H, W, 3])``
  read one at a time; ``embed`` maps clips ``[N, 16, H, W, 3]`` to
  ``[N, D]`` (a `ClipEmbedder`).

  Raises:
    ValueError: a video shorter than one window.
  """
  features: dict[int, list[np.ndarray]] = {}
  for name, video in videos:
    starts = window_starts(len(video), stride)
    if not starts:
      raise ValueError(f"{name}: {len(video)} frames, fewer than the {CLIP_FRAMES} of an "
                       "FVD clip")
    rows = embed(np.stack([video[s:s + CLIP_FRAMES] for s in starts]))
    for start, row in zip(starts, rows):
      features.setdefault(start, []).append(row)
  return features


def sliding_fvd(real: dict[int, list], fake: dict[int, list]) -> tuple[list[int], list[float]]:
  """``(starts, FVDs)`` at every window start that at least 2 real and 2
  generated videos reach (a covariance needs 2), from `window_features`."""
  starts = [s for s in sorted(set(real) & set(fake))
            if len(real[s]) >= 2 and len(fake[s]) >= 2]
  return starts, [frechet_distance(gaussian_fit(np.stack(real[s])),
                                   gaussian_fit(np.stack(fake[s]))) for s in starts]
