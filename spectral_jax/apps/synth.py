"""`spectral-jax synth -o DIR --num N`: synthetic oscillating videos with
their ground-truth spectral volumes."""

from __future__ import annotations

from pathlib import Path


def run(args) -> None:
  import tqdm

  from spectral_jax.data import synthetic
  from spectral_jax.data.video import parse_size, write_video
  from spectral_jax.motion.motion_file import Motion
  width, height = parse_size(args.size)
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
