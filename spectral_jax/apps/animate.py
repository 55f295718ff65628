"""`spectral-jax animate IMAGE -o OUT.mp4|OUT.gif|OUT.html`: a picture (or a
folder of them) to a video of its predicted natural motion, or to a live
picture (a page that plays the motion and can be poked).

For each picture: frame it to the model's size (centre crop to the model's
aspect ratio, then resize), sample its spectral volume (DDIM over all K
frequencies jointly, classifier-free guidance, optional loop
self-guidance), or take one measured on a real video (``--motion``: motion
transfer); mask it; build the motion texture ``magnify * (D(t) - D(0))``
at the video's times; render, splatting with the metric of the (masked,
unmagnified) spectral volume, so ``--magnify`` and ``--slowmo`` leave it as
the renderer was trained with; write the video atomically. A page
(``.html``) holds the picture and the spectral volume instead, and the
browser draws the frames (`inference.live_picture`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import NamedTuple

from spectral_jax.apps.common import check_output
from spectral_jax.apps.options import NON_NEGATIVE, POSITIVE, add_model_arguments
from spectral_jax.checks import number

VIDEO_SUFFIXES = (".mp4", ".gif")
# A live picture: one HTML page that plays the motion and can be poked
# (`inference.live_picture`).
PAGE_SUFFIX = ".html"
OUTPUT_SUFFIXES = VIDEO_SUFFIXES + (PAGE_SUFFIX,)

HELP = "a video of a picture's natural motion"
DESCRIPTION = (
    "Animates a picture (or every picture of a folder): predicts its spectral "
    "volume, or takes one measured on a video (--motion), and renders the motion.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("image", help="a picture, or a folder of pictures")
  parser.add_argument("-o", "--output", required=True,
                      help="video .mp4 or .gif, or a live picture .html; a folder when IMAGE "
                      "is a folder")
  parser.add_argument("--format", choices=["mp4", "gif", "html"], default="mp4",
                      help="what to write per picture when IMAGE is a folder (default "
                      "%(default)s)")
  add_model_arguments(parser)
  parser.add_argument("--fps", type=POSITIVE,
                      help="frame rate of the video (default: the training clips', or the "
                      "--motion clip's)")
  parser.add_argument("--loop", action="store_true",
                      help="guide sampling so that the video loops seamlessly")
  parser.add_argument("--magnify", type=POSITIVE, default=1.0,
                      help="multiply the motion by this (default %(default)s)")
  parser.add_argument("--slowmo", type=number(low=1), default=1.0,
                      help="S frames per frame on the same path, exact (default %(default)s)")
  parser.add_argument("--guidance", type=NON_NEGATIVE,
                      help="classifier-free guidance scale w (default: the model's, "
                      "the paper's 1.75)")
  parser.add_argument("--save-motion", metavar="S.npz",
                      help="save the spectral volume used (a folder when IMAGE is one)")
  parser.add_argument("--viz", metavar="DIR", help="pictures of the spectral volume used")
  parser.add_argument("--mask", metavar="M.png",
                      help="motion only where this picture (same size as IMAGE) is white")
  parser.add_argument("--feather", type=NON_NEGATIVE, default=2.0,
                      help="blur of the mask's edge, model pixels (default %(default)s)")


def _check(args) -> None:
  """Numbers are checked by the parser (`add_arguments`); this is what
  options say together."""
  if args.motion and args.loop:
    raise ValueError("--loop guides sampling; a --motion file is not sampled")


def _jobs(args) -> list[tuple[Path, Path]]:
  """``(picture, video)`` pairs: one, or one per picture of a folder."""
  from spectral_jax.data.pictures import list_pictures
  image = Path(args.image)
  if image.is_dir():
    if args.output.lower().endswith(OUTPUT_SUFFIXES):
      raise ValueError(f"{image} is a folder: -o must be a folder too, not {args.output}")
    return [(p, Path(args.output) / f"{p.stem}.{args.format}") for p in list_pictures(image)]
  check_output(args.output, OUTPUT_SUFFIXES)
  return [(image, Path(args.output))]


def _per_picture(path, picture: Path, suffix: str, several: bool) -> Path | None:
  """Where a per-picture extra (``--save-motion``, ``--viz``) goes."""
  if not path:
    return None
  return Path(path) / f"{picture.stem}{suffix}" if several else Path(path)


class MeasuredMotion(NamedTuple):
  """A motion file's spectral volume ``[K, H, W, 2]`` px framed to the
  model's size, and the clock it was measured on: its T and fps."""
  spectral: object  # np.ndarray; NumPy is imported when a command runs.
  num_frames: int
  fps: float


def load_motion_file(path, animator) -> MeasuredMotion:
  """A `Motion` file of any K, T and fps (`spectral-jax motion` of any
  clip), framed to the model's size; it plays on its own clock.

  Raises:
    ValueError: not a motion file; fewer than 2 bins or 2 frames; more bins
      than its T has (K > T // 2 + 1); a frame rate that is not positive.
  """
  import math

  from spectral_jax.data.pictures import fit_spectral
  from spectral_jax.motion.motion_file import Motion
  try:
    motion = Motion.load(path)
  except (OSError, KeyError, ValueError) as error:
    raise ValueError(f"{path}: not a motion file of `spectral-jax motion` ({error})") from None
  if motion.spectral_volume.ndim != 4 or motion.spectral_volume.shape[-1] != 2:
    raise ValueError(f"{path}: its spectral volume is {list(motion.spectral_volume.shape)}, "
                     "not [K, H, W, 2]")
  if not (2 <= motion.num_freqs <= motion.num_frames // 2 + 1):
    raise ValueError(f"{path} has K={motion.num_freqs} bins over T={motion.num_frames} "
                     "frames; motion needs K >= 2 (bin 0 does not move) and K <= T // 2 + 1 "
                     "(the bins a clip of T frames has)")
  if not (math.isfinite(motion.fps) and motion.fps > 0):
    raise ValueError(f"{path}: fps must be positive, got {motion.fps:g}")
  return MeasuredMotion(fit_spectral(motion.spectral_volume, animator.width, animator.height),
                        motion.num_frames, motion.fps)


def run(args) -> None:
  import numpy as np

  from spectral_jax.data.video import write_video
  from spectral_jax.data import pictures
  from spectral_jax.inference import compile_cache, live_picture
  from spectral_jax.inference.animator import Animator, resolve_checkpoint, video_times
  from spectral_jax.motion.motion_file import Motion

  _check(args)
  jobs = _jobs(args)
  several = Path(args.image).is_dir()
  # Every picture is read once before the models load, so that a bad one
  # fails at once, and again when its turn comes (memory stays one picture).
  picture_sizes = [pictures.read_picture(picture_path).shape[1::-1] for picture_path, _ in jobs]
  compile_cache.enable(args.cache_dir)
  animator = Animator.load(resolve_checkpoint(args.checkpoint),
                           with_motion=args.motion is None)
  for width, height in picture_sizes:  # A size refused fails before any work.
    pictures.video_size(pictures.Framing.fit(width, height, animator.width, animator.height),
                        args.size)
  measured = load_motion_file(args.motion, animator) if args.motion else None
  # A measured motion plays on the clock of its clip, a sampled one on the model's.
  period, clock_fps = ((measured.num_frames, measured.fps) if measured
                       else (animator.num_frames, animator.fps))
  num_frames = args.frames or period
  fps = args.fps or clock_fps
  options = None
  if measured is None:
    options = animator.motion.options(
        num_steps=args.steps, guidance_scale=args.guidance,
        loop_frames=num_frames if args.loop else 0)
  times = video_times(num_frames, slowmo=args.slowmo, loop=args.loop)

  for picture_path, video_path in jobs:
    started = time.perf_counter()
    image = pictures.read_picture(picture_path)
    picture, framing = pictures.fit_picture(image, animator.width, animator.height)
    shown = pictures.video_framing(framing, args.size)  # The model's crop box, video size.
    size = (shown.out_width, shown.out_height)
    frame_0 = shown.apply(image)
    if measured is not None:
      spectral = measured.spectral
      origin = (f"from {args.motion} (K={len(spectral)} over T={period} frames at "
                f"{clock_fps:g} fps)")
    else:
      spectral = animator.spectral(picture, args.seed, options, progress=True)
      origin = f"sampled, {options.num_steps} DDIM steps, seed {args.seed}"
    if args.mask:
      mask = pictures.read_mask(args.mask, framing, feather_px=args.feather)
      spectral = spectral * mask[None, :, :, None]
    if video_path.suffix.lower() == PAGE_SUFFIX:
      page = live_picture.LivePicture.make(
          frame_0, spectral, num_frames=period, fps=clock_fps,
          metric=animator.metric(spectral, num_frames=period, size=size)[..., 0],
          loop_frames=num_frames if args.loop else period, magnify=args.magnify,
          speed=fps / clock_fps / args.slowmo, title=f"{picture_path.name}, live")
      page.write(video_path)
      frames = None
      described = (f"a live picture, {page.modes.shape[2]}x{page.modes.shape[1]} volume of "
                   f"{len(page.modes) + 1} bins, {video_path.stat().st_size / 1e6:.1f} MB")
    else:
      frames = animator.video(frame_0, spectral, times, args.magnify, num_frames=period,
                              batch_size=args.batch_size, progress=True)
      if args.viz:  # Its pictures need the whole video; otherwise it streams.
        frames = np.concatenate(list(frames))
      count = write_video(video_path, frames, fps)
      described = f"{count} frames at {fps:g} fps ({count / fps:.1f} s)"
    if args.save_motion:
      Motion(np.asarray(spectral, np.complex64), picture, clock_fps,
             period).save(_per_picture(args.save_motion, picture_path, ".npz", several))
    if args.viz:
      from spectral_jax.motion import viz
      viz.write_visualizations(
          _per_picture(args.viz, picture_path, "", several), image=picture,
          disp_px=animator.texture(spectral, np.arange(period), num_frames=period),
          spectral=spectral, fps=clock_fps, frames=frames)
    print(f"{video_path}: {described}, {size[0]}x{size[1]}; motion {origin}; "
          f"{time.perf_counter() - started:.1f} s ({shown.describe()})")
