"""`spectral-jax eval --checkpoint DIR --data DATA_DIR`: a motion model's
errors on the test split of a prepared data set.

For each test picture, the model samples a spectral volume, compared with
the one measured on the picture's video: end-point error of the
displacements, error per frequency, loop-closure error
(`spectral_jax.eval.motion_eval`). Writes a JSON report and, beside it, a
PNG of the error per frequency, both atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from spectral_jax.apps.common import check_output
from spectral_jax.apps.options import (NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE_INT,
                                       add_cache_argument)

HELP = "a motion model's errors on the test split of a data set"
DESCRIPTION = (
    "Samples a spectral volume for every test picture of a prepared data set "
    "and compares it with the one measured on its video: end-point error, error per "
    "frequency, loop-closure error. Writes a JSON report and a plot of the error per "
    "frequency beside it (REPORT_per_frequency.png).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--checkpoint", metavar="DIR", required=True,
                      help="the model: a folder of training runs (a motion run; the motion "
                      "run finds its VAE), or an export")
  parser.add_argument("--data", metavar="DATA_DIR", required=True,
                      help="a data set of `spectral-jax prepare` with the model's K, T and size")
  parser.add_argument("-o", "--output", default="eval_report.json",
                      help="the JSON report (default %(default)s)")
  parser.add_argument("--num", type=POSITIVE_INT,
                      help="evaluate the first N test examples (default: all)")
  parser.add_argument("--steps", type=POSITIVE_INT, help="DDIM steps (default: the model's)")
  parser.add_argument("--guidance", type=NON_NEGATIVE,
                      help="classifier-free guidance scale w (default: the model's)")
  parser.add_argument("--seed", type=NON_NEGATIVE_INT, default=0,
                      help="example i is sampled with seed SEED + i (default 0)")
  parser.add_argument("--loop-frames", type=POSITIVE_INT,
                      help="N: report the loop-closure error of N-frame videos "
                      "(default: T/2)")
  parser.add_argument("--loop", action="store_true",
                      help="sample with loop self-guidance for N-frame videos")
  add_cache_argument(parser)


def load_motion_model(checkpoint):
  """The motion model of ``checkpoint``: an export, or a folder of runs
  (its motion run and the VAE that run pins; no renderer needed)."""
  from spectral_jax.inference import export, loading
  if export.is_export(checkpoint):
    return export.load_motion_model(checkpoint)
  runs = loading.find_runs(checkpoint)
  if "motion" not in runs:
    raise FileNotFoundError(f"{checkpoint}: no motion run in it (an ldm_freq_attn or "
                            "ldm_pretrain run), and not an export")
  return loading.load_motion_model(runs["motion"])


def _check_clips(motion, clip, data_dir) -> None:
  """Raises ValueError unless the data set's clips are the model's."""
  data = motion.config.data
  model = (motion.num_freqs, motion.num_frames, motion.fps, data.width, data.height)
  clips = (clip.num_freqs, clip.num_frames, clip.fps, clip.width, clip.height)
  if model != clips:
    describe = lambda k, t, fps, w, h: f"K={k} bins over T={t} frames at {fps:g} fps, {w}x{h}"
    raise ValueError(f"{data_dir} has clips of {describe(*clips)}; the model samples "
                     f"{describe(*model)}")


def plot_path(report: Path) -> Path:
  """The PNG written beside ``report``: ``NAME_per_frequency.png``."""
  return report.with_name(f"{report.stem}_per_frequency.png")


def run(args) -> None:
  import json

  from spectral_jax.atomic import atomic_output
  from spectral_jax.data import dataset
  from spectral_jax.eval import motion_eval
  from spectral_jax.inference import compile_cache

  check_output(args.output, (".json",))
  try:
    source = dataset.open_split(args.data, "test")
  except KeyError as error:  # No test split: a data set prepared with --test-fraction 0.
    raise ValueError(error.args[0]) from None
  clip = dataset.load_clip_config(args.data)
  compile_cache.enable(args.cache_dir)
  motion = load_motion_model(args.checkpoint)
  _check_clips(motion, clip, args.data)
  count = len(source) if args.num is None else min(args.num, len(source))
  if count == 0:
    raise ValueError(f"{args.data}: the test split is empty")
  loop_frames = args.loop_frames or max(motion.num_frames // 2, 1)
  options = motion.options(num_steps=args.steps, guidance_scale=args.guidance,
                           loop_frames=loop_frames if args.loop else 0)
  metrics = motion_eval.evaluate(motion, source, count=count, options=options,
                                 seed=args.seed, loop_frames=loop_frames, progress=True)
  report = {
      "checkpoint": str(args.checkpoint), "data": str(args.data), "split": "test",
      "clip": {"num_freqs": clip.num_freqs, "num_frames": clip.num_frames, "fps": clip.fps,
               "width": clip.width, "height": clip.height},
      "sampling": {"num_steps": options.num_steps, "guidance_scale": options.guidance_scale,
                   "eta": options.eta, "seed": args.seed},
      **metrics,
  }
  output = Path(args.output)
  with atomic_output(output) as tmp:
    tmp.write_text(json.dumps(report, indent=2) + "\n")
  plot = plot_path(output)
  motion_eval.plot_frequency_error(
      report["per_frequency"], plot,
      f"Motion error per frequency ({count} examples, EPE "
      f"{report['end_point_error_px']:.3g} px)")
  closure = report["loop_closure"]
  print(f"{output}: {count} test examples, end-point error {report['end_point_error_px']:.4g} "
        f"px (measured motion {report['measured_motion_px']:.4g} px); loop closure at "
        f"{loop_frames} frames {closure['predicted_px']:.4g} px (measured "
        f"{closure['measured_px']:.4g} px); plot {plot}")
