"""The `spectral-jax` command.

Each subcommand imports what it needs when it runs, so `spectral-jax --help`
and the NumPy/OpenCV commands start fast and never load JAX.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _add_clip_arguments(parser: argparse.ArgumentParser, paper) -> None:
  """Clip options; defaults from ``paper``, a default `ClipConfig`."""
  parser.add_argument("--frames", type=int, default=paper.num_frames,
                      help="T, frames per clip (default %(default)s)")
  parser.add_argument("--fps", type=float, default=paper.fps,
                      help="frame rate the video is resampled to (default %(default)s)")
  parser.add_argument("--size", default=f"{paper.width}x{paper.height}",
                      help="WIDTHxHEIGHT after centre crop and resize (default %(default)s)")
  parser.add_argument("--K", type=int, default=paper.num_freqs,
                      help="frequency bins kept (default %(default)s)")
  parser.add_argument("--preset", default="medium", choices=["ultrafast", "fast", "medium"],
                      help="DIS optical flow preset (default %(default)s)")
  parser.add_argument("--fb-check", action="store_true",
                      help="forward-backward flow consistency check (twice the flow cost)")


def _clip_config(args, **overrides):
  from spectral_jax.data.clips import ClipConfig
  from spectral_jax.data.video import parse_size
  from spectral_jax.motion.flow import FlowConfig
  width, height = parse_size(args.size)
  return ClipConfig(num_frames=args.frames, fps=args.fps, width=width, height=height,
                    num_freqs=args.K,
                    flow=FlowConfig(preset=args.preset, forward_backward=args.fb_check),
                    **overrides)


def _motion(args) -> None:
  from spectral_jax.data.video import read_clip
  from spectral_jax.motion import flow
  from spectral_jax.motion.motion_file import Motion
  from spectral_jax.motion.spectral import spectral_volume
  config = _clip_config(args)
  _check_output(args.output, (".npz",))
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


def _synth(args) -> None:
  from spectral_jax.data import synthetic
  from spectral_jax.data.video import parse_size, write_video
  from spectral_jax.motion.motion_file import Motion
  import tqdm
  width, height = parse_size(args.size)
  if args.num < 1:
    raise ValueError(f"--num must be at least 1, got {args.num}")
  out = Path(args.output)
  for index in tqdm.trange(args.num, desc="synthesising", unit="video"):
    seed = args.seed + index
    scene = synthetic.make_scene(seed, num_frames=args.frames, height=height, width=width,
                                 num_freqs=args.K, fps=args.fps)
    stem = out / f"scene_{seed:05d}"
    write_video(stem.with_suffix(".mp4"), scene.frames, args.fps)
    Motion(scene.spectral, scene.frames[0], args.fps, args.frames).save(
        stem.with_name(stem.name + "_motion.npz"))
  print(f"{args.num} videos with ground-truth motion in {out}")


def _prepare(args) -> None:
  import json
  from spectral_jax.data import prepare
  config = _clip_config(args, stride=args.stride, num_render_frames=args.render_frames,
                        static_px=args.static_px, camera_px=args.camera_px,
                        camera_fraction=args.camera_fraction, scene_cut=args.scene_cut)
  options = prepare.PrepareOptions(workers=args.workers, percentile=args.percentile,
                                   test_fraction=args.test_fraction,
                                   keep_cache=args.keep_cache)
  report = prepare.prepare(args.videos_dir, args.output, config, options)
  summary = {"clips": report["clips"], "dropped": report["dropped"],
             "failed_videos": len(report["failed_videos"])}
  state = "already prepared" if report.get("already_prepared") else "prepared"
  print(f"{args.output}: {state}; {json.dumps(summary)}")


def _check_output(path, suffixes) -> None:
  if Path(path).suffix.lower() not in suffixes:
    raise ValueError(f"output {path} must end in {' or '.join(suffixes)}")


def build_parser() -> argparse.ArgumentParser:
  from spectral_jax.data.clips import ClipConfig
  paper = ClipConfig()  # The defaults users see are the paper's clips.
  parser = argparse.ArgumentParser(
      prog="spectral-jax",
      description="Animate still pictures with predicted spectral volumes of natural motion.")
  parser.add_argument("--debug", action="store_true",
                      help="show the full traceback of an error")
  commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

  motion = commands.add_parser("motion", help="spectral volume of one video clip")
  motion.add_argument("video")
  motion.add_argument("-o", "--output", required=True, help="output .npz")
  motion.add_argument("--start", type=int, default=0, help="first frame (at --fps)")
  motion.add_argument("--viz", help="folder for pictures of the motion")
  _add_clip_arguments(motion, paper)
  motion.set_defaults(run=_motion)

  synth = commands.add_parser("synth", help="synthetic oscillating videos with ground truth")
  synth.add_argument("-o", "--output", required=True, help="output folder")
  synth.add_argument("--num", type=int, required=True, help="number of videos")
  synth.add_argument("--seed", type=int, default=0, help="seed of the first video")
  synth.add_argument("--frames", type=int, default=paper.num_frames)
  synth.add_argument("--fps", type=float, default=paper.fps)
  synth.add_argument("--size", default=f"{paper.width}x{paper.height}", help="WIDTHxHEIGHT")
  synth.add_argument("--K", type=int, default=paper.num_freqs)
  synth.set_defaults(run=_synth)

  prepare = commands.add_parser("prepare", help="TFDS data set from a folder of videos")
  prepare.add_argument("videos_dir")
  prepare.add_argument("-o", "--output", required=True, help="data set folder")
  prepare.add_argument("--config", metavar="FILE.py[:VARIANT]",
                       help="defaults from a config file, e.g. configs/data.py:hires")
  prepare.add_argument("--stride", type=int, default=paper.stride,
                       help="frames between clip starts (default %(default)s)")
  prepare.add_argument("--workers", type=int, default=2,
                       help="extraction processes (default %(default)s)")
  prepare.add_argument("--percentile", type=float, default=97.0,
                       help="normalization percentile per frequency (default %(default)s)")
  prepare.add_argument("--test-fraction", type=float, default=0.05,
                       help="share of videos held out as the test split (default %(default)s)")
  prepare.add_argument("--keep-cache", action="store_true",
                       help="keep the extracted clips after writing the data set")
  prepare.add_argument("--render-frames", type=int, default=paper.num_render_frames,
                       help="frames kept per clip for renderer training (default %(default)s)")
  prepare.add_argument("--static-px", type=float, default=paper.static_px,
                       help="drop clips whose mean trajectory magnitude is below this "
                       "(pixels, default %(default)s)")
  prepare.add_argument("--camera-px", type=float, default=paper.camera_px,
                       help="mean trajectory magnitude that counts a pixel as moving "
                       "for the camera-motion filter (pixels, default %(default)s)")
  prepare.add_argument("--camera-fraction", type=float, default=paper.camera_fraction,
                       help="drop clips where more than this fraction of pixels moves "
                       "over --camera-px on average: camera motion (default %(default)s)")
  prepare.add_argument("--scene-cut", type=float, default=paper.scene_cut,
                       help="colour-histogram change (1 - correlation) that counts as a "
                       "scene cut (default %(default)s)")
  _add_clip_arguments(prepare, paper)
  prepare.set_defaults(run=_prepare)
  return parser


def load_config_file(spec: str) -> dict:
  """``path.py[:arg]`` → the dict of ``get_config(arg)`` in that file."""
  from spectral_jax.train.config_base import load_config_file as load
  path, _, arg = spec.partition(":")
  return load(path, arg or None).to_dict()


def parse_args(argv=None) -> argparse.Namespace:
  """Parses ``argv``; a ``--config FILE[:VARIANT]`` supplies the defaults
  that flags on the command line then override."""
  parser = build_parser()
  args = parser.parse_args(argv)
  if getattr(args, "config", None):
    values = load_config_file(args.config)
    subparser = parser._subparsers._group_actions[0].choices[args.command]  # pylint: disable=protected-access
    known = {action.dest for action in subparser._actions}  # pylint: disable=protected-access
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"{args.config}: settings {unknown} are not options of {args.command}")
    subparser.set_defaults(**values)
    args = parser.parse_args(argv)
  return args


def main(argv=None) -> int:
  try:
    args = parse_args(argv)
  except ValueError as error:
    print(f"spectral-jax: error: {error}", file=sys.stderr)
    return 2
  try:
    args.run(args)
  # Bad input (VideoError, PrepareError and argument checks are ValueErrors)
  # and unwritable outputs get one line, not a traceback.
  except (ValueError, OSError) as error:
    if args.debug:
      raise
    print(f"spectral-jax {args.command}: error: {error}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print(f"spectral-jax {args.command}: interrupted", file=sys.stderr)
    return 130
  return 0


if __name__ == "__main__":
  sys.exit(main())
