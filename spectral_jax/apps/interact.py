"""`spectral-jax interact IMAGE --poke X,Y,DX,DY[,T] -o OUT.mp4`: the
picture's response to pokes; ``-o OUT.html``: a live picture to poke in a
browser with the same dynamics (`inference.live_picture`), at rest until
poked, which replays the ``--poke``s given.

The spectral volume (sampled for the picture, or measured on a real video
with ``--motion``) is read as an image-space modal basis: bin k >= 1 is a
mode of angular frequency ``2 pi k fps / T`` and shape ``S_k``. Each poke's
force is projected on the mode shapes at the poked pixel, the modal
coordinates ring down as damped oscillators (`spectral_jax.inference.dynamics`),
and the displacement they make is rendered like an animation.

The splatting metric is the renderer's `splat_metric` of the modes (the
picture's spectral volume), not of the simulated displacement: which pixels
are foreground is a property of the picture's motion, the metric the
renderer was trained with, and it must not depend on where or how hard a
poke lands (the metric of a displacement that is zero before the first poke
and concentrated near it would sharpen, blunt or reorder occlusions).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from spectral_jax.apps.animate import (OUTPUT_SUFFIXES, PAGE_SUFFIX, VIDEO_SUFFIXES,
                                       load_motion_file)
from spectral_jax.apps.common import check_output
from spectral_jax.apps.options import NON_NEGATIVE, POSITIVE, add_model_arguments

HELP = "a picture's response to pokes"
DESCRIPTION = (
    "Pokes a picture: its spectral volume as a modal basis, each mode a "
    "damped oscillator driven by the pokes.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("image", help="a picture")
  parser.add_argument("-o", "--output", required=True,
                      help="video .mp4 or .gif, or a live picture .html to poke in a browser")
  parser.add_argument("--poke", action="append", metavar="X,Y,DX,DY[,T]",
                      help="push pixel (X, Y) of the picture by (DX, DY) pixels at frame T "
                      "(default 0); repeat for several pokes (optional for a page)")
  parser.add_argument("--alpha", type=NON_NEGATIVE, default=0.4,
                      help="Rayleigh damping, mass term (default %(default)s)")
  parser.add_argument("--beta", type=NON_NEGATIVE, default=0.08,
                      help="Rayleigh damping, stiffness term (default %(default)s)")
  parser.add_argument("--strength", type=POSITIVE, default=1.0,
                      help="scale of every poke's force (default %(default)s)")
  add_model_arguments(parser)


def parse_poke(text: str):
  """``"X,Y,DX,DY[,T]"`` → ``(x, y, dx, dy, frame)`` floats (frame 0 if T
  is left out)."""
  try:
    values = [float(part) for part in text.split(",")]
  except ValueError:
    values = []
  if len(values) not in (4, 5):
    raise ValueError(f"--poke {text}: expected X,Y,DX,DY or X,Y,DX,DY,T (numbers)")
  return tuple(values) if len(values) == 5 else tuple(values) + (0.0,)


def model_pokes(pokes, framing, num_frames: int):
  """The user's pokes (picture pixels) as `Poke`s in the model's pixels."""
  from spectral_jax.inference.dynamics import Poke
  result = []
  for x, y, dx, dy, frame in pokes:
    if not framing.contains(x, y):
      raise ValueError(f"poke at ({x:g}, {y:g}) is outside the animated picture "
                       f"({framing.describe()})")
    if not 0 <= frame < num_frames:
      raise ValueError(f"poke at frame {frame:g} is not within the video's "
                       f"{num_frames} frames")
    # A point within half a pixel of the picture's edge maps just outside
    # the model's pixel centres: it pokes the edge pixel.
    mx, my = framing.to_model(x, y)
    mx = min(max(mx, 0.0), framing.out_width - 1.0)
    my = min(max(my, 0.0), framing.out_height - 1.0)
    mdx, mdy = framing.vector_to_model(dx, dy)
    result.append(Poke(mx, my, mdx, mdy, frame))
  return result


def _check(args) -> None:
  check_output(args.output, OUTPUT_SUFFIXES)
  if not args.poke and Path(args.output).suffix.lower() in VIDEO_SUFFIXES:
    raise ValueError("give at least one --poke X,Y,DX,DY[,T] (a .html page needs none)")


def run(args) -> None:
  from spectral_jax.data.video import write_video
  from spectral_jax.data import pictures
  from spectral_jax.inference import compile_cache, dynamics
  from spectral_jax.inference.animator import Animator, resolve_checkpoint

  _check(args)
  pokes = [parse_poke(text) for text in args.poke or ()]
  image = pictures.read_picture(args.image)
  compile_cache.enable(args.cache_dir)
  animator = Animator.load(resolve_checkpoint(args.checkpoint),
                           with_motion=args.motion is None)
  started = time.perf_counter()
  picture, framing = pictures.fit_picture(image, animator.width, animator.height)
  shown = pictures.video_framing(framing, args.size)  # The model's crop box, video size.
  size = (shown.out_width, shown.out_height)
  frame_0 = shown.apply(image)
  # Modes measured on a clip ring at the frequencies of its clock; sampled
  # ones at the model's.
  if args.motion:
    spectral, period, fps = load_motion_file(args.motion, animator)
    origin = f"modes from {args.motion}"
  else:
    options = animator.motion.options(num_steps=args.steps)
    spectral = animator.spectral(picture, args.seed, options, progress=True)
    period, fps = animator.num_frames, animator.fps
    origin = f"modes sampled, seed {args.seed}"
  num_frames = args.frames or period
  poked = model_pokes(pokes, shown, num_frames)  # In the video's pixels.
  if Path(args.output).suffix.lower() == PAGE_SUFFIX:
    from spectral_jax.inference import live_picture
    page = live_picture.LivePicture.make(
        frame_0, spectral, num_frames=period, fps=fps,
        metric=animator.metric(spectral, num_frames=period, size=size)[..., 0],
        playing=False, alpha=args.alpha,
        beta=args.beta, strength=args.strength, title=f"{Path(args.image).name}, live",
        pokes=tuple((p.x, p.y, p.dx, p.dy, p.frame) for p in poked))
    page.write(args.output)
    print(f"{args.output}: a live picture to poke, {len(poked)} poke(s) to replay, "
          f"{size[0]}x{size[1]}; {origin}; {time.perf_counter() - started:.1f} s "
          f"({shown.describe()})")
    return
  response = dynamics.simulate(animator.at_size(frame_0, spectral), poked,
                               num_output_frames=num_frames, fps=fps, num_frames=period,
                               alpha=args.alpha, beta=args.beta, strength=args.strength)
  frames = animator.render(frame_0, response.displacement, spectral, num_frames=period,
                           batch_size=args.batch_size, progress=True)
  write_video(Path(args.output), frames, fps)
  print(f"{args.output}: {len(frames)} frames at {fps:g} fps, {len(poked)} poke(s); "
        f"{origin}; {response.substeps} Euler sub-steps per frame; "
        f"{size[0]}x{size[1]}; {time.perf_counter() - started:.1f} s ({shown.describe()})")
