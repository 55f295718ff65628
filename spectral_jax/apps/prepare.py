"""`spectral-jax prepare VIDEOS_DIR -o DATA_DIR`: a TFDS data set of
spectral volumes and its normalization statistics.

Its settings come from the command line, then from a data config
(``--config FILE.py[:VARIANT]``, `configs/data.py`), then the paper's
(`defaults.prepare_settings`): `finish_args` fills in what was not given.
"""

from __future__ import annotations

import argparse
import json

from spectral_jax.apps.common import clip_config
from spectral_jax.apps.options import (CLIP_CHECKS, FRACTION, NON_NEGATIVE, NON_NEGATIVE_INT,
                                      POSITIVE_INT, add_clip_arguments)
from spectral_jax.checks import number
from spectral_jax.data import defaults

HELP = "TFDS data set from a folder of videos"
DESCRIPTION = (
    "Cuts the videos into clips, measures their motion and writes a TFDS data "
    "set of spectral volumes. Settings not given come from the data config (--config), "
    "without one from the paper's (the defaults shown).")

# Checks of the settings by name: of an option's text (argparse ``type=``)
# and of a data config's value alike.
SETTING_CHECKS = {
    **CLIP_CHECKS,
    "stride": POSITIVE_INT,
    "workers": POSITIVE_INT,
    # The 0th percentile of |x| is 0: a scale that divides by zero.
    "percentile": number(low=0, high=100, low_open=True),
    # 1 holds every video out: an evaluation-only data set (no train split).
    "test_fraction": FRACTION,
    "render_frames": NON_NEGATIVE_INT,
    "static_px": NON_NEGATIVE,
    "camera_px": NON_NEGATIVE,
    "camera_fraction": FRACTION,
    "scene_cut": NON_NEGATIVE,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """The options; a setting not given is None, for `finish_args`."""
  paper = defaults.prepare_settings()  # The defaults users see are the paper's.
  parser.add_argument("videos_dir")
  parser.add_argument("-o", "--output", required=True, help="data set folder")
  parser.add_argument("--config", metavar="FILE.py[:VARIANT]",
                      help="the data config, e.g. configs/data.py:hires (default: the paper's)")
  parser.add_argument("--stride", type=SETTING_CHECKS["stride"],
                      help=f"frames between clip starts (default {paper['stride']})")
  parser.add_argument("--workers", type=SETTING_CHECKS["workers"],
                      help=f"extraction processes (default {paper['workers']})")
  parser.add_argument("--percentile", type=SETTING_CHECKS["percentile"],
                      help=f"normalization percentile per frequency "
                      f"(default {paper['percentile']})")
  parser.add_argument("--test-fraction", type=SETTING_CHECKS["test_fraction"],
                      help=f"share of videos held out as the test split "
                      f"(default {paper['test_fraction']})")
  parser.add_argument("--keep-cache", action="store_true", default=None,
                      help="keep the extracted clips after writing the data set")
  parser.add_argument("--render-frames", type=SETTING_CHECKS["render_frames"],
                      help=f"frames kept per clip for renderer training "
                      f"(default {paper['render_frames']})")
  parser.add_argument("--static-px", type=SETTING_CHECKS["static_px"],
                      help=f"drop clips whose mean trajectory magnitude is below this "
                      f"(pixels, default {paper['static_px']})")
  parser.add_argument("--camera-px", type=SETTING_CHECKS["camera_px"],
                      help=f"mean trajectory magnitude that counts a pixel as moving "
                      f"for the camera-motion filter (pixels, default {paper['camera_px']})")
  parser.add_argument("--camera-fraction", type=SETTING_CHECKS["camera_fraction"],
                      help=f"drop clips where more than this fraction of pixels moves "
                      f"over --camera-px on average: camera motion "
                      f"(default {paper['camera_fraction']})")
  parser.add_argument("--scene-cut", type=SETTING_CHECKS["scene_cut"],
                      help=f"colour-histogram change (1 - correlation) that counts as a "
                      f"scene cut (default {paper['scene_cut']})")
  add_clip_arguments(parser, paper, from_config=True)


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
    if name in SETTING_CHECKS:
      try:
        values[name] = SETTING_CHECKS[name](value)
      except argparse.ArgumentTypeError as error:
        raise ValueError(f"{spec}: {name}: {error}") from None
  return {**settings, **values}


def finish_args(args) -> None:
  """Fills in the settings not given on the command line from the data
  config (``--config``, else the paper's); `cli.parse_args` calls it.

  Raises:
    ValueError: a bad data config (`data_config`).
  """
  for name, value in data_config(args.config).items():
    if getattr(args, name) is None:
      setattr(args, name, value)


def settings(config):
  """``(ClipConfig, PrepareOptions)`` of `prepare`'s settings, named alike
  in ``config``: a data config (`configs/data.py`), or the parsed command
  line, which `finish_args` completes from one."""
  from spectral_jax.data import prepare
  clip = clip_config(config, stride=config.stride, num_render_frames=config.render_frames,
                     static_px=config.static_px, camera_px=config.camera_px,
                     camera_fraction=config.camera_fraction, scene_cut=config.scene_cut)
  options = prepare.PrepareOptions(workers=config.workers, percentile=config.percentile,
                                   test_fraction=config.test_fraction,
                                   keep_cache=config.keep_cache)
  return clip, options


def run(args) -> None:
  from spectral_jax.data import prepare
  clip, options = settings(args)
  report = prepare.prepare(args.videos_dir, args.output, clip, options)
  summary = {"clips": report["clips"], "dropped": report["dropped"],
             "failed_videos": len(report["failed_videos"])}
  state = "already prepared" if report.get("already_prepared") else "prepared"
  print(f"{args.output}: {state}; {json.dumps(summary)}")
