"""Training clips from one video: windows, filters, spectral volumes.

A video, resampled to ``fps`` and ``width x height``, is cut into windows of
``num_frames`` frames, one starting every ``stride`` frames, so a long
video gives many overlapping clips. A window is kept unless it crosses a
scene cut, barely moves, or moves everywhere (camera motion); each kept
window becomes one example.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from typing import Iterator

import cv2
import numpy as np

from spectral_jax.data import defaults
from spectral_jax.data import video as video_io
from spectral_jax.motion import flow as flow_lib
from spectral_jax.motion.spectral import spectral_volume, to_real_layout

# Why a window was dropped; counted per reason in the preparation report.
TOO_SHORT = "too_short"
SCENE_CUT = "scene_cut"
STATIC = "static"
CAMERA_MOTION = "camera_motion"
UNRELIABLE_FLOW = "unreliable_flow"
DROP_REASONS = (TOO_SHORT, SCENE_CUT, STATIC, CAMERA_MOTION, UNRELIABLE_FLOW)


@dataclasses.dataclass(frozen=True)
class ClipConfig:
  """What a clip is and which clips are kept. Defaults are the paper's
  (`defaults`).

  Attributes:
    num_frames: T, frames per clip.
    fps: frame rate the video is resampled to, frames/s.
    width, height: frame size in pixels after centre crop and resize.
    num_freqs: K, frequency bins kept in the spectral volume.
    stride: frames between the starts of consecutive clips.
    num_render_frames: frames (with their displacement) kept per clip for
      training the renderer.
    flow: how displacement is measured.
    static_px: drop a clip whose mean trajectory magnitude, averaged over
      pixels, is below this (pixels).
    camera_px, camera_fraction: drop a clip where more than this fraction of
      pixels has a mean trajectory magnitude above ``camera_px`` pixels.
    scene_cut: a frame starts a new shot when ``1 - correlation`` of its
      colour histogram with the previous frame's exceeds this.
    max_inconsistent: with forward–backward checking on, drop a clip whose
      fraction of inconsistent pixel-frames exceeds this.
  """
  num_frames: int = defaults.NUM_FRAMES
  fps: float = defaults.FPS
  width: int = defaults.WIDTH
  height: int = defaults.HEIGHT
  num_freqs: int = defaults.NUM_FREQS
  stride: int = defaults.STRIDE
  num_render_frames: int = defaults.NUM_RENDER_FRAMES
  flow: flow_lib.FlowConfig = flow_lib.FlowConfig()
  static_px: float = defaults.STATIC_PX
  camera_px: float = defaults.CAMERA_PX
  camera_fraction: float = defaults.CAMERA_FRACTION
  scene_cut: float = defaults.SCENE_CUT
  max_inconsistent: float = defaults.MAX_INCONSISTENT

  def __post_init__(self):
    if self.num_frames < 2:
      raise ValueError(f"a clip needs at least 2 frames, got {self.num_frames}")
    if not 1 <= self.num_freqs <= self.num_frames // 2 + 1:
      raise ValueError(f"K must be in [1, {self.num_frames // 2 + 1}] for "
                       f"{self.num_frames} frames, got {self.num_freqs}")
    if not 0 <= self.num_render_frames < self.num_frames:
      raise ValueError(f"num_render_frames must be in [0, {self.num_frames - 1}]")
    if self.stride < 1 or self.fps <= 0:
      raise ValueError("stride and fps must be positive")
    video_io.parse_size(f"{self.width}x{self.height}")

  @property
  def size(self) -> tuple[int, int]:
    return self.width, self.height

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, data: dict) -> "ClipConfig":
    data = dict(data)
    data["flow"] = flow_lib.FlowConfig(**data.get("flow", {}))
    return cls(**data)


def color_histogram(frame: np.ndarray) -> np.ndarray:
  """float32 ``[512]`` 8x8x8-bin RGB histogram of a uint8 ``[H, W, 3]`` frame."""
  hist = cv2.calcHist([frame], [0, 1, 2], None, [8, 8, 8], [0, 256] * 3)
  return hist.reshape(-1)


def is_scene_cut(previous_hist: np.ndarray, hist: np.ndarray, threshold: float) -> bool:
  return 1.0 - cv2.compareHist(previous_hist, hist, cv2.HISTCMP_CORREL) > threshold


def windows(frames: Iterator[np.ndarray], config: ClipConfig):
  """Slides over a frame stream; yields ``(start, clip, has_cut)`` for every
  window of ``num_frames`` frames starting at a multiple of ``stride``.

  Holds at most ``num_frames`` frames in memory, whatever the video's length.
  ``clip`` is uint8 ``[T, H, W, 3]``; ``has_cut`` says whether a scene cut
  falls inside it.
  """
  buffer = collections.deque(maxlen=config.num_frames)
  # cuts[i] is True when buffer[i] starts a new shot.
  cuts = collections.deque(maxlen=config.num_frames)
  previous_hist = None
  for index, frame in enumerate(frames):
    hist = color_histogram(frame)
    cuts.append(previous_hist is not None
                and is_scene_cut(previous_hist, hist, config.scene_cut))
    previous_hist = hist
    buffer.append(frame)
    start = index + 1 - config.num_frames
    if start >= 0 and start % config.stride == 0:
      yield start, np.stack(buffer), any(list(cuts)[1:])


def render_frame_times(video_key: str, start: int, config: ClipConfig) -> np.ndarray:
  """int32 ``[F]`` sorted frame times in ``1..T-1`` kept for the renderer,
  the same for the same video, clip and config on every run."""
  digest = hashlib.sha256(f"{video_key}:{start}".encode()).digest()
  rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
  times = rng.choice(np.arange(1, config.num_frames), config.num_render_frames,
                     replace=False)
  return np.sort(times).astype(np.int32)


def make_example(clip: np.ndarray, config: ClipConfig, *, video_key: str, start: int):
  """One clip → ``(example, None)``, or ``(None, reason)`` if it is dropped.

  The example holds:
    image: uint8 ``[H, W, 3]``, the reference frame;
    spectral_volume: float16 ``[K, H, W, 4]``, real layout, pixels;
    frames: uint8 ``[F, H, W, 3]`` at ``frame_times`` int32 ``[F]``;
    displacements: float16 ``[F, H, W, 2]`` of the reference at those times;
    video: str; clip_start: int32 first frame of the clip (at ``fps``).
  """
  disp_px, consistent = flow_lib.displacements(clip, config.flow)
  magnitude = flow_lib.trajectory_magnitude(disp_px)
  if magnitude.mean() < config.static_px:
    return None, STATIC
  if np.mean(magnitude > config.camera_px) > config.camera_fraction:
    return None, CAMERA_MOTION
  if config.flow.forward_backward and 1.0 - consistent[1:].mean() > config.max_inconsistent:
    return None, UNRELIABLE_FLOW
  spectral = to_real_layout(spectral_volume(disp_px, config.num_freqs))
  times = render_frame_times(video_key, start, config)
  example = {
      "image": clip[0],
      "spectral_volume": spectral.astype(np.float16),
      "frames": clip[times],
      "frame_times": times,
      "displacements": disp_px[times].astype(np.float16),
      "video": video_key,
      "clip_start": np.int32(start),
  }
  return example, None


def video_examples(path, config: ClipConfig, *, video_key: str):
  """Yields ``(start, example, reason)`` for every window of a video, with
  exactly one of example/reason set; a video shorter than one clip yields a
  single ``(0, None, TOO_SHORT)``.

  Raises:
    video_io.VideoError: the file is not a readable video.
  """
  frames = video_io.iter_frames(path, fps=config.fps, size=config.size)
  any_window = False
  for start, clip, has_cut in windows(frames, config):
    any_window = True
    if has_cut:
      yield start, None, SCENE_CUT
      continue
    example, reason = make_example(clip, config, video_key=video_key, start=start)
    yield start, example, reason
  if not any_window:
    yield 0, None, TOO_SHORT
