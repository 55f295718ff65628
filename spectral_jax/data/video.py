"""Reading videos resampled to a fixed frame rate and size, writing H.264.

Decoding, frame-rate resampling, centre cropping to the target aspect ratio
and resizing all run inside ffmpeg (shipped by imageio-ffmpeg), a separate
process, so they overlap with the optical flow computed here.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path
from typing import Iterator

import imageio_ffmpeg
import numpy as np

from spectral_jax.atomic import atomic_output

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".webm", ".mkv", ".m4v")

# imageio-ffmpeg warns on every read whose output size differs from the
# source size, which is every read here.
logging.getLogger("imageio_ffmpeg").setLevel(logging.ERROR)


class VideoError(ValueError):
  """A video that cannot be used; the message is meant for the user."""


class VideoWarning(UserWarning):
  """A video that can be used only in part (e.g. truncated); the message is
  meant for the user."""


# A stream this much shorter than its header's duration says is reported as
# truncated: frame-rate resampling and rounded durations differ by a frame
# or two, and an audio track may outlast the video by a little.
_TRUNCATED_FRACTION = 0.9
_TRUNCATED_FRAMES = 2


def parse_size(text: str) -> tuple[int, int]:
  """``"256x160"`` → ``(256, 160)`` as (width, height)."""
  match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
  if not match:
    raise ValueError(f"size must be WIDTHxHEIGHT, e.g. 256x160, got {text!r}")
  width, height = int(match.group(1)), int(match.group(2))
  if width < 8 or height < 8 or width % 2 or height % 2:
    raise ValueError(f"size must be even and at least 8x8, got {text!r}")
  return width, height


def iter_frames(path, *, fps: float, size: tuple[int, int]) -> Iterator[np.ndarray]:
  """Frames of a video as uint8 ``[H, W, 3]`` RGB, resampled to ``fps`` and
  centre-cropped to the aspect ratio of ``size = (W, H)`` then resized.

  Raises:
    VideoError: the file is missing or is not a readable video.
  Warns:
    VideoWarning: the stream ends well before the duration its header gives
      (a truncated file); the frames before that are yielded.
  """
  path = Path(path)
  if not path.is_file():
    raise VideoError(f"{path}: no such file")
  width, height = size
  crop = (f"crop='min(iw,ih*{width}/{height})':'min(ih,iw*{height}/{width})'")
  filters = f"fps={fps:g},{crop},scale={width}:{height}:flags=area,setsar=1"
  try:
    reader = imageio_ffmpeg.read_frames(str(path), output_params=["-vf", filters])
    meta = next(reader)  # Raises if ffmpeg cannot open the stream.
  except (OSError, RuntimeError, StopIteration) as error:
    raise VideoError(f"{path}: not a readable video ({_first_line(error)})") from None
  frame_bytes = width * height * 3
  num_frames = 0
  try:
    for buffer in reader:
      if len(buffer) != frame_bytes:
        raise VideoError(f"{path}: truncated frame from the decoder")
      num_frames += 1
      yield np.frombuffer(buffer, np.uint8).reshape(height, width, 3)
    _warn_if_truncated(path, num_frames, fps, meta.get("duration"))
  except (OSError, RuntimeError) as error:
    raise VideoError(f"{path}: decoding failed ({_first_line(error)})") from None
  finally:
    reader.close()


def _warn_if_truncated(path: Path, num_frames: int, fps: float, duration) -> None:
  """Warns (`VideoWarning`) when ``num_frames`` decoded at ``fps`` fall well
  short of the header's ``duration`` (seconds; None or 0 when unknown).
  ffmpeg decodes a file cut short up to the cut and exits without error."""
  try:
    expected = float(duration) * fps
  except (TypeError, ValueError):
    return
  if num_frames < min(_TRUNCATED_FRACTION * expected, expected - _TRUNCATED_FRAMES):
    warnings.warn(f"{path}: the stream ends after {num_frames} frames at {fps:g} fps, "
                  f"~{expected:.0f} expected from its {float(duration):g} s duration "
                  f"(truncated file?); using the {num_frames}", VideoWarning, stacklevel=3)


def read_clip(path, *, num_frames: int, fps: float, size: tuple[int, int],
              start_frame: int = 0) -> np.ndarray:
  """The ``num_frames`` frames from ``start_frame`` on (counted at ``fps``),
  uint8 ``[T, H, W, 3]``.

  Raises:
    VideoError: unreadable, or fewer frames than asked for.
  """
  frames = []
  num_read = 0
  for num_read, frame in enumerate(iter_frames(path, fps=fps, size=size), start=1):
    if num_read > start_frame:
      frames.append(frame)
      if len(frames) == num_frames:
        return np.stack(frames)
  if num_read == 0:
    raise VideoError(f"{path}: the video has no frames")
  raise VideoError(f"{path}: {num_read} frames at {fps:g} fps, fewer than the "
                   f"{start_frame + num_frames} needed for {num_frames} frames "
                   f"from frame {start_frame}")


def write_video(path, frames, fps: float, *, quality: float = 8.0) -> int:
  """Writes RGB frames as an H.264 mp4 (yuv420p, plays everywhere), or as a
  GIF when ``path`` ends in ``.gif``; atomically. Returns the frame count.

  ``frames``: uint8 ``[T, H, W, 3]``, or an iterable of such batches
  (`Animator.video`), encoded as they come, so that a long or large video
  never sits in memory whole (a GIF, small by nature, is gathered first).
  """
  batches = iter([frames] if isinstance(frames, np.ndarray) else frames)
  path = Path(path)
  count = 0
  with atomic_output(path) as tmp:
    if path.suffix.lower() == ".gif":
      import imageio.v3 as iio
      gathered = np.concatenate([_checked(batch) for batch in batches])
      iio.imwrite(tmp, gathered, duration=1000.0 / fps, loop=0)
      return len(gathered)
    writer = None
    try:
      for batch in batches:
        batch = _checked(batch)
        if writer is None:
          height, width = batch.shape[1:3]
          writer = imageio_ffmpeg.write_frames(
              str(tmp), (width, height), fps=fps, codec="libx264", quality=quality,
              pix_fmt_out="yuv420p", macro_block_size=2, ffmpeg_log_level="error")
          with warnings.catch_warnings():
            # JAX warns of any fork once it is loaded; ffmpeg's fork execs at once.
            warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
            writer.send(None)
        elif batch.shape[1:3] != (height, width):
          raise ValueError(f"frames of {batch.shape[2]}x{batch.shape[1]} after frames of "
                           f"{width}x{height}")
        for frame in batch:
          writer.send(np.ascontiguousarray(frame))
        count += len(batch)
    finally:
      if writer is not None:  # Ends ffmpeg, also when a batch failed.
        writer.close()
    if writer is None:
      raise ValueError("no frames to write")
  return count


def _checked(frames) -> np.ndarray:
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
  return frames


def list_videos(directory) -> list[Path]:
  """Video files under ``directory`` (recursively), sorted."""
  directory = Path(directory)
  if not directory.is_dir():
    raise VideoError(f"{directory}: no such directory")
  return sorted(p for p in directory.rglob("*")
                if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def _first_line(error: Exception) -> str:
  lines = [line for line in str(error).splitlines() if line.strip()]
  return lines[0] if lines else type(error).__name__
