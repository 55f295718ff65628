"""The `spectral-jax` command: parses the command line and hands it to the
command's module in `spectral_jax.apps` (``run(args)``).

Each command's module is imported only when it runs, so `spectral-jax --help`
and the NumPy/OpenCV commands start fast and never load JAX.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from spectral_jax.checks import number
from spectral_jax.data import defaults

# Option checks (argparse ``type=``): bad values are refused before any work.
_POSITIVE_INT = number(int, low=1)
_NON_NEGATIVE_INT = number(int, low=0)
_POSITIVE = number(low=0, low_open=True)
_NON_NEGATIVE = number(low=0)
_FRACTION = number(low=0, high=1)

# Checks of the settings `prepare` takes from a data config too, by name:
# of an option's text (argparse ``type=``) and of a data config's value alike.
_SETTING_CHECKS = {
    "frames": _POSITIVE_INT,
    "fps": _POSITIVE,
    "K": _POSITIVE_INT,
    "stride": _POSITIVE_INT,
    "workers": _POSITIVE_INT,
    # The 0th percentile of |x| is 0: a scale that divides by zero.
    "percentile": number(low=0, high=100, low_open=True),
    # 1 holds every video out: an evaluation-only data set (no train split).
    "test_fraction": _FRACTION,
    "render_frames": _NON_NEGATIVE_INT,
    "static_px": _NON_NEGATIVE,
    "camera_px": _NON_NEGATIVE,
    "camera_fraction": _FRACTION,
    "scene_cut": _NON_NEGATIVE,
}


def _add_clip_arguments(parser: argparse.ArgumentParser, paper: dict, *,
                        from_config: bool = False) -> None:
  """Clip options, with ``paper``'s values (`defaults.prepare_settings`) as
  defaults; with ``from_config``, shown only: an option not given is None,
  for `parse_args` to take from the data config."""
  default = dict.fromkeys(paper) if from_config else paper
  parser.add_argument("--frames", type=_SETTING_CHECKS["frames"], default=default["frames"],
                      help=f"T, frames per clip (default {paper['frames']})")
  parser.add_argument("--fps", type=_SETTING_CHECKS["fps"], default=default["fps"],
                      help=f"frame rate the video is resampled to (default {paper['fps']})")
  parser.add_argument("--size", default=default["size"],
                      help=f"WIDTHxHEIGHT after centre crop and resize (default {paper['size']})")
  parser.add_argument("--K", type=_SETTING_CHECKS["K"], default=default["K"],
                      help=f"frequency bins kept (default {paper['K']})")
  parser.add_argument("--preset", default=default["preset"],
                      choices=["ultrafast", "fast", "medium"],
                      help=f"DIS optical flow preset (default {paper['preset']})")
  parser.add_argument("--fb-check", action="store_true", default=default["fb_check"],
                      help="forward-backward flow consistency check (twice the flow cost)")


def build_parser() -> argparse.ArgumentParser:
  paper = defaults.prepare_settings()  # The defaults users see are the paper's.
  parser = argparse.ArgumentParser(
      prog="spectral-jax",
      description="Animate still pictures with predicted spectral volumes of natural motion.")
  parser.add_argument("--debug", action="store_true",
                      help="show the full traceback of an error")
  commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

  motion = commands.add_parser("motion", help="spectral volume of one video clip")
  motion.add_argument("video")
  motion.add_argument("-o", "--output", required=True, help="output .npz")
  motion.add_argument("--start", type=_NON_NEGATIVE_INT, default=0,
                      help="first frame (at --fps)")
  motion.add_argument("--viz", help="folder for pictures of the motion")
  _add_clip_arguments(motion, paper)
  motion.set_defaults(app="motion")

  synth = commands.add_parser("synth", help="synthetic oscillating videos with ground truth")
  synth.add_argument("-o", "--output", required=True, help="output folder")
  synth.add_argument("--num", type=_POSITIVE_INT, required=True, help="number of videos")
  synth.add_argument("--seed", type=_NON_NEGATIVE_INT, default=0, help="seed of the first video")
  synth.add_argument("--frames", type=_POSITIVE_INT, default=paper["frames"])
  synth.add_argument("--fps", type=_POSITIVE, default=paper["fps"])
  synth.add_argument("--size", default=paper["size"], help="WIDTHxHEIGHT")
  synth.add_argument("--K", type=_POSITIVE_INT, default=paper["K"])
  synth.add_argument("--from-photos", metavar="DIR",
                     help="sway the vegetation of the photos in DIR (one per video, in turn) "
                     "instead of painting plants over a stock photo")
  synth.set_defaults(app="synth")

  # A setting not given is None here: `parse_args` takes it from the data
  # config (`data_config`).
  prepare = commands.add_parser(
      "prepare", help="TFDS data set from a folder of videos",
      description="Cuts the videos into clips, measures their motion and writes a TFDS data "
      "set of spectral volumes. Settings not given come from the data config (--config), "
      "without one from the paper's (the defaults shown).")
  prepare.add_argument("videos_dir")
  prepare.add_argument("-o", "--output", required=True, help="data set folder")
  prepare.add_argument("--config", metavar="FILE.py[:VARIANT]",
                       help="the data config, e.g. configs/data.py:hires (default: the paper's)")
  prepare.add_argument("--stride", type=_SETTING_CHECKS["stride"],
                       help=f"frames between clip starts (default {paper['stride']})")
  prepare.add_argument("--workers", type=_SETTING_CHECKS["workers"],
                       help=f"extraction processes (default {paper['workers']})")
  prepare.add_argument("--percentile", type=_SETTING_CHECKS["percentile"],
                       help=f"normalization percentile per frequency "
                       f"(default {paper['percentile']})")
  prepare.add_argument("--test-fraction", type=_SETTING_CHECKS["test_fraction"],
                       help=f"share of videos held out as the test split "
                       f"(default {paper['test_fraction']})")
  prepare.add_argument("--keep-cache", action="store_true", default=None,
                       help="keep the extracted clips after writing the data set")
  prepare.add_argument("--render-frames", type=_SETTING_CHECKS["render_frames"],
                       help=f"frames kept per clip for renderer training "
                       f"(default {paper['render_frames']})")
  prepare.add_argument("--static-px", type=_SETTING_CHECKS["static_px"],
                       help=f"drop clips whose mean trajectory magnitude is below this "
                       f"(pixels, default {paper['static_px']})")
  prepare.add_argument("--camera-px", type=_SETTING_CHECKS["camera_px"],
                       help=f"mean trajectory magnitude that counts a pixel as moving "
                       f"for the camera-motion filter (pixels, default {paper['camera_px']})")
  prepare.add_argument("--camera-fraction", type=_SETTING_CHECKS["camera_fraction"],
                       help=f"drop clips where more than this fraction of pixels moves "
                       f"over --camera-px on average: camera motion "
                       f"(default {paper['camera_fraction']})")
  prepare.add_argument("--scene-cut", type=_SETTING_CHECKS["scene_cut"],
                       help=f"colour-histogram change (1 - correlation) that counts as a "
                       f"scene cut (default {paper['scene_cut']})")
  _add_clip_arguments(prepare, paper, from_config=True)
  prepare.set_defaults(app="prepare")

  animate = commands.add_parser(
      "animate", help="a video of a picture's natural motion",
      description="Animates a picture (or every picture of a folder): predicts its spectral "
      "volume, or takes one measured on a video (--motion), and renders the motion.")
  animate.add_argument("image", help="a picture, or a folder of pictures")
  animate.add_argument("-o", "--output", required=True,
                       help="video .mp4 or .gif; a folder when IMAGE is a folder")
  animate.add_argument("--format", choices=["mp4", "gif"], default="mp4",
                       help="video format when IMAGE is a folder (default %(default)s)")
  _add_model_arguments(animate)
  animate.add_argument("--fps", type=_POSITIVE,
                       help="frame rate of the video (default: the training clips')")
  animate.add_argument("--loop", action="store_true",
                       help="guide sampling so that the video loops seamlessly")
  animate.add_argument("--magnify", type=_POSITIVE, default=1.0,
                       help="multiply the motion by this (default %(default)s)")
  animate.add_argument("--slowmo", type=number(low=1), default=1.0,
                       help="S frames per frame on the same path, exact (default %(default)s)")
  animate.add_argument("--guidance", type=_NON_NEGATIVE,
                       help="classifier-free guidance scale w (default: the model's, "
                       "the paper's 1.75)")
  animate.add_argument("--save-motion", metavar="S.npz",
                       help="save the spectral volume used (a folder when IMAGE is one)")
  animate.add_argument("--viz", metavar="DIR", help="pictures of the spectral volume used")
  animate.add_argument("--mask", metavar="M.png",
                       help="motion only where this picture (same size as IMAGE) is white")
  animate.add_argument("--feather", type=_NON_NEGATIVE, default=2.0,
                       help="blur of the mask's edge, model pixels (default %(default)s)")
  animate.set_defaults(app="animate")

  interact = commands.add_parser(
      "interact", help="a picture's response to pokes",
      description="Pokes a picture: its spectral volume as a modal basis, each mode a "
      "damped oscillator driven by the pokes.")
  interact.add_argument("image", help="a picture")
  interact.add_argument("-o", "--output", required=True, help="video .mp4 or .gif")
  interact.add_argument("--poke", action="append", metavar="X,Y,DX,DY[,T]",
                        help="push pixel (X, Y) of the picture by (DX, DY) pixels at frame T "
                        "(default 0); repeat for several pokes")
  interact.add_argument("--alpha", type=_NON_NEGATIVE, default=0.4,
                        help="Rayleigh damping, mass term (default %(default)s)")
  interact.add_argument("--beta", type=_NON_NEGATIVE, default=0.08,
                        help="Rayleigh damping, stiffness term (default %(default)s)")
  interact.add_argument("--strength", type=_POSITIVE, default=1.0,
                        help="scale of every poke's force (default %(default)s)")
  _add_model_arguments(interact)
  interact.set_defaults(app="interact")

  export = commands.add_parser(
      "export", help="trained models as safetensors and one JSON, loadable without Orbax",
      description="Writes the models of a folder of training runs (the motion run, the VAE "
      "it pins, the renderer run) to OUT_DIR: safetensors weights and model.json, which "
      "animate and interact take as --checkpoint.")
  export.add_argument("--checkpoint", metavar="DIR", required=True,
                      help="a folder of training runs (a renderer run and a motion run)")
  export.add_argument("-o", "--output", metavar="OUT_DIR", required=True,
                      help="the export's folder (new, or an earlier export to replace)")
  export.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                      help="weights' dtype: float32 exact, float16 half the size "
                      "(default %(default)s)")
  export.set_defaults(app="export")

  evaluate = commands.add_parser(
      "eval", help="a motion model's errors on the test split of a data set",
      description="Samples a spectral volume for every test picture of a prepared data set "
      "and compares it with the one measured on its video: end-point error, error per "
      "frequency, loop-closure error. Writes a JSON report and a plot of the error per "
      "frequency beside it (REPORT_per_frequency.png).")
  evaluate.add_argument("--checkpoint", metavar="DIR", required=True,
                        help="the model: a folder of training runs (a motion run; the motion "
                        "run finds its VAE), or an export")
  evaluate.add_argument("--data", metavar="DATA_DIR", required=True,
                        help="a data set of `spectral-jax prepare` with the model's K, T and size")
  evaluate.add_argument("-o", "--output", default="eval_report.json",
                        help="the JSON report (default %(default)s)")
  evaluate.add_argument("--num", type=_POSITIVE_INT,
                        help="evaluate the first N test examples (default: all)")
  evaluate.add_argument("--steps", type=_POSITIVE_INT, help="DDIM steps (default: the model's)")
  evaluate.add_argument("--guidance", type=_NON_NEGATIVE,
                        help="classifier-free guidance scale w (default: the model's)")
  evaluate.add_argument("--seed", type=_NON_NEGATIVE_INT, default=0,
                        help="example i is sampled with seed SEED + i (default 0)")
  evaluate.add_argument("--loop-frames", type=_POSITIVE_INT,
                        help="N: report the loop-closure error of N-frame videos "
                        "(default: T/2)")
  evaluate.add_argument("--loop", action="store_true",
                        help="sample with loop self-guidance for N-frame videos")
  evaluate.add_argument("--cache-dir", metavar="DIR",
                        help="JAX compilation cache (default $SPECTRAL_JAX_CACHE_DIR or "
                        "~/.cache/spectral_jax/jax)")
  evaluate.set_defaults(app="eval")

  fvd = commands.add_parser(
      "fvd", help="Fréchet Video Distance between two folders of videos",
      description="Prints {\"fvd\": ...}: the Fréchet distance between the I3D (Kinetics-400) "
      "logits of the first 16 frames of the real and of the generated videos (at least 2 "
      "in each folder).")
  fvd.add_argument("real_dir", help="a folder of real videos (mp4, ...)")
  fvd.add_argument("fake_dir", help="a folder of generated videos")
  fvd.add_argument("--stride", type=_POSITIVE_INT,
                   help="also the FVD of the 16-frame windows starting every STRIDE frames "
                   "(sliding-window FVD over time)")
  fvd.add_argument("--features", metavar="NAME",
                   help="also FID and KID of the frames with this feature network "
                   "(inception_v3 for FID proper, with --inception-weights; "
                   "inception_v3_torchvision; vgg16)")
  fvd.add_argument("--inception-weights", metavar="PATH",
                   help="Inception-v3 weights for --features inception_v3: an .npz converted "
                   "from pytorch-fid's pt_inception-2015-12-05 state dict (none ship "
                   "offline; see spectral_jax/eval/inception.py; default "
                   "$SPECTRAL_JAX_INCEPTION_WEIGHTS)")
  fvd.add_argument("--frame-step", type=_POSITIVE_INT, default=1,
                   help="FID and KID on every N-th frame (default %(default)s)")
  fvd.add_argument("--batch-size", type=_POSITIVE_INT, default=8,
                   help="clips per compiled I3D call (default %(default)s)")
  fvd.set_defaults(app="fvd")
  return parser


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
  """Options of the commands that run the trained models."""
  parser.add_argument("--checkpoint", metavar="DIR",
                      help="the models: a folder of training runs (a renderer run and a "
                      "motion run; the motion run finds its VAE), or an export")
  parser.add_argument("--motion", metavar="S.npz",
                      help="a spectral volume from `spectral-jax motion` instead of a "
                      "prediction (same K and T as the model)")
  parser.add_argument("--frames", type=_POSITIVE_INT,
                      help="frames of the video (default: T of the training clips)")
  parser.add_argument("--steps", type=_POSITIVE_INT, help="DDIM steps (default: the model's)")
  parser.add_argument("--seed", type=_NON_NEGATIVE_INT, default=0, help="sampling seed (default 0)")
  parser.add_argument("--batch-size", type=_POSITIVE_INT, default=8,
                      help="frames rendered per compiled call (default %(default)s)")
  parser.add_argument("--cache-dir", metavar="DIR",
                      help="JAX compilation cache (default $SPECTRAL_JAX_CACHE_DIR or "
                      "~/.cache/spectral_jax/jax)")


def load_config_file(spec: str) -> dict:
  """``path.py[:arg]`` → the dict of ``get_config(arg)`` in that file."""
  from spectral_jax.config_base import load_config_file as load
  path, _, arg = spec.partition(":")
  return load(path, arg or None).to_dict()


def data_config(spec: str | None = None) -> dict:
  """`prepare`'s settings, named as its options: the paper's
  (`defaults.prepare_settings`), with those of the data config file
  ``path.py[:VARIANT]`` over them, each checked as its option is.

  Raises:
    ValueError: the file names a setting `prepare` does not have, or a value
      its option would refuse.
  """
  settings = defaults.prepare_settings()
  if spec is None:
    return settings
  values = load_config_file(spec)
  unknown = sorted(set(values) - set(settings))
  if unknown:
    raise ValueError(f"{spec}: settings {unknown} are not options of prepare")
  for name, value in values.items():
    if name in _SETTING_CHECKS:
      try:
        values[name] = _SETTING_CHECKS[name](value)
      except argparse.ArgumentTypeError as error:
        raise ValueError(f"{spec}: {name}: {error}") from None
  return {**settings, **values}


def parse_args(argv=None) -> argparse.Namespace:
  """Parses ``argv``; `prepare`'s settings not given on the command line
  come from its data config (``--config FILE[:VARIANT]``, else the paper's)."""
  args = build_parser().parse_args(argv)
  if args.command == "prepare":
    for name, value in data_config(args.config).items():
      if getattr(args, name) is None:
        setattr(args, name, value)
  return args


def main(argv=None) -> int:
  try:
    args = parse_args(argv)
  except ValueError as error:
    print(f"spectral-jax: error: {error}", file=sys.stderr)
    return 2
  try:
    importlib.import_module(f"spectral_jax.apps.{args.app}").run(args)
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
