"""Options several commands share, and the checks of option values
(argparse ``type=``): bad values are refused before any work.

`spectral_jax.cli` imports every command's module to build its parser, so
this module, like their top-level imports, must stay light: no JAX.
"""

from __future__ import annotations

import argparse

from spectral_jax.checks import number, video_size

POSITIVE_INT = number(int, low=1)
NON_NEGATIVE_INT = number(int, low=0)
POSITIVE = number(low=0, low_open=True)
NON_NEGATIVE = number(low=0)
FRACTION = number(low=0, high=1)

# Checks of the clip settings by name: of an option's text and, for
# `prepare`, of a data config's value alike (`prepare.SETTING_CHECKS`).
CLIP_CHECKS = {"frames": POSITIVE_INT, "fps": POSITIVE, "K": POSITIVE_INT}


def add_clip_arguments(parser: argparse.ArgumentParser, paper: dict, *,
                       from_config: bool = False) -> None:
  """Clip options, with ``paper``'s values (`defaults.prepare_settings`) as
  defaults; with ``from_config``, shown only: an option not given is None,
  for `prepare.finish_args` to take from the data config."""
  default = dict.fromkeys(paper) if from_config else paper
  parser.add_argument("--frames", type=CLIP_CHECKS["frames"], default=default["frames"],
                      help=f"T, frames per clip (default {paper['frames']})")
  parser.add_argument("--fps", type=CLIP_CHECKS["fps"], default=default["fps"],
                      help=f"frame rate the video is resampled to (default {paper['fps']})")
  parser.add_argument("--size", default=default["size"],
                      help=f"WIDTHxHEIGHT after centre crop and resize (default {paper['size']})")
  parser.add_argument("--K", type=CLIP_CHECKS["K"], default=default["K"],
                      help=f"frequency bins kept (default {paper['K']})")
  parser.add_argument("--preset", default=default["preset"],
                      choices=["ultrafast", "fast", "medium"],
                      help=f"DIS optical flow preset (default {paper['preset']})")
  parser.add_argument("--fb-check", action="store_true", default=default["fb_check"],
                      help="forward-backward flow consistency check (twice the flow cost)")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
  """Options of the commands that run the trained models."""
  parser.add_argument("--checkpoint", metavar="DIR",
                      help="the models: a folder of training runs (a renderer run and a "
                      "motion run; the motion run finds its VAE), or an export")
  parser.add_argument("--motion", metavar="S.npz",
                      help="a spectral volume from `spectral-jax motion` instead of a "
                      "prediction: any K, T and fps, played on its own clock")
  parser.add_argument("--frames", type=POSITIVE_INT,
                      help="frames of the video (default: T of the training clips, or of "
                      "the --motion clip)")
  parser.add_argument("--size", type=video_size, metavar="WxH|full|model",
                      help="output size, of the model's aspect ratio (default: the picture's "
                      "own, its longest side at most 512 px; full: the picture's own; model: "
                      "the model's)")
  parser.add_argument("--steps", type=POSITIVE_INT, help="DDIM steps (default: the model's)")
  parser.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="sampling seed (default 0)")
  parser.add_argument("--batch-size", type=POSITIVE_INT, default=8,
                      help="frames rendered per compiled call (default %(default)s)")
  add_cache_argument(parser)


def add_cache_argument(parser: argparse.ArgumentParser) -> None:
  """``--cache-dir``: where `inference.compile_cache` keeps compiled programs."""
  parser.add_argument("--cache-dir", metavar="DIR",
                      help="JAX compilation cache (default $SPECTRAL_JAX_CACHE_DIR or "
                      "~/.cache/spectral_jax/jax)")
