"""`spectral-jax motion VIDEO -o S.npz`: the spectral volume of one clip."""

from __future__ import annotations

import argparse

from spectral_jax.apps.common import check_output, clip_config
from spectral_jax.apps.options import NON_NEGATIVE_INT, add_clip_arguments
from spectral_jax.data import defaults

HELP = "spectral volume of one video clip"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("video")
  parser.add_argument("-o", "--output", required=True, help="output .npz")
  parser.add_argument("--start", type=NON_NEGATIVE_INT, default=0,
                      help="first frame (at --fps)")
  parser.add_argument("--viz", help="folder for pictures of the motion")
  add_clip_arguments(parser, defaults.prepare_settings())


def run(args) -> None:
  from spectral_jax.data.video import read_clip
  from spectral_jax.motion import flow
  from spectral_jax.motion.motion_file import Motion
  from spectral_jax.motion.spectral import spectral_volume
  config = clip_config(args)
  check_output(args.output, (".npz",))
  clip = read_clip(args.video, num_frames=config.num_frames, fps=config.fps,
                   size=config.size, start_frame=args.start)
  disp_px, consistent = flow.displacements(clip, config.flow)
  spectral = spectral_volume(disp_px, config.num_freqs)
  Motion(spectral, clip[0], config.fps, config.num_frames).save(args.output)
  magnitude = flow.trajectory_magnitude(disp_px)
  print(f"{args.output}: K={config.num_freqs} bins over {config.num_frames} frames at "
        f"{config.fps:g} fps; mean trajectory {magnitude.mean():.2f} px, "
        f"max {magnitude.max():.2f} px"
        + (f"; {100 * (1 - consistent[1:].mean()):.1f}% inconsistent flow"
           if config.flow.forward_backward else ""))
  if args.viz:
    from spectral_jax.motion import viz
    written = viz.write_visualizations(args.viz, image=clip[0], disp_px=disp_px,
                                       spectral=spectral, fps=config.fps, frames=clip)
    print(f"{len(written)} pictures in {args.viz}")
