"""`spectral-jax prepare VIDEOS_DIR -o DATA_DIR`: a TFDS data set of
spectral volumes and its normalization statistics."""

from __future__ import annotations

import json

from spectral_jax.apps.common import clip_config


def run(args) -> None:
  from spectral_jax.data import prepare
  config = clip_config(args, stride=args.stride, num_render_frames=args.render_frames,
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
