"""`spectral-jax prepare VIDEOS_DIR -o DATA_DIR`: a TFDS data set of
spectral volumes and its normalization statistics."""

from __future__ import annotations

import json

from spectral_jax.apps.common import clip_config


def settings(config):
  """``(ClipConfig, PrepareOptions)`` of `prepare`'s settings, named alike
  in ``config``: a data config (`configs/data.py`), or the parsed command
  line, which `cli.parse_args` completes from one."""
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
