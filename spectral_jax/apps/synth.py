"""`spectral-jax synth -o DIR --num N [--from-photos PHOTOS]`: synthetic
oscillating videos with their ground-truth spectral volumes; with
``--from-photos``, the photos' own vegetation sways (`photo_scenes`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from spectral_jax.apps.options import NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT
from spectral_jax.data import defaults

HELP = "synthetic oscillating videos with ground truth"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  paper = defaults.prepare_settings()
  parser.add_argument("-o", "--output", required=True, help="output folder")
  parser.add_argument("--num", type=POSITIVE_INT, required=True, help="number of videos")
  parser.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="seed of the first video")
  parser.add_argument("--frames", type=POSITIVE_INT, default=paper["frames"])
  parser.add_argument("--fps", type=POSITIVE, default=paper["fps"])
  parser.add_argument("--size", default=paper["size"], help="WIDTHxHEIGHT")
  parser.add_argument("--K", type=POSITIVE_INT, default=paper["K"])
  parser.add_argument("--from-photos", metavar="DIR",
                      help="sway the vegetation of the photos in DIR (one per video, in turn) "
                      "instead of painting plants over a stock photo")


def run(args) -> None:
  import tqdm

  from spectral_jax.data import photo_scenes, synthetic
  from spectral_jax.data.video import parse_size, write_video
  from spectral_jax.motion.motion_file import Motion
  width, height = parse_size(args.size)
  out = Path(args.output)
  clip = {"num_frames": args.frames, "height": height, "width": width, "num_freqs": args.K,
          "fps": args.fps}
  # Listed before any work, so a folder without pictures fails at once.
  from_photos = getattr(args, "from_photos", None)
  photos = photo_scenes.list_photos(from_photos) if from_photos else []
  for index in tqdm.trange(args.num, desc="synthesising", unit="video"):
    seed = args.seed + index
    if photos:
      photo = photo_scenes.load_photo(photos[index % len(photos)], height, width)
      scene = photo_scenes.make_scene(photo, seed, **clip)
    else:
      scene = synthetic.make_scene(seed, **clip)
    stem = out / f"scene_{seed:05d}"
    write_video(stem.with_suffix(".mp4"), scene.frames, args.fps)
    Motion(scene.spectral, scene.frames[0], args.fps, args.frames).save(
        stem.with_name(stem.name + "_motion.npz"))
  source = f" from the photos in {from_photos}" if photos else ""
  print(f"{args.num} videos{source} with ground-truth motion in {out}")
