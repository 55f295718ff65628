"""`spectral-jax fvd REAL_DIR FAKE_DIR`: the Fréchet Video Distance between
two folders of videos, printed as JSON (``{"fvd": ...}``).

FVD compares the first 16 frames of every video (`spectral_jax.eval.fvd`);
``--stride S`` adds the sliding-window FVD of the windows starting every S
frames (``"fvd_windows": {"start": [...], "fvd": [...]}``), and ``--features
NAME`` the FID and KID of the videos' frames (every ``--frame-step``-th)
with that feature network (`spectral_jax.eval.features`):
``--features inception_v3 --inception-weights PATH`` for FID proper.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from spectral_jax.apps.options import POSITIVE_INT, add_cache_argument

HELP = "Fréchet Video Distance between two folders of videos"
DESCRIPTION = (
    "Prints {\"fvd\": ...}: the Fréchet distance between the I3D (Kinetics-400) "
    "logits of the first 16 frames of the real and of the generated videos (at least 2 "
    "in each folder).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("real_dir", help="a folder of real videos (mp4, ...)")
  parser.add_argument("fake_dir", help="a folder of generated videos")
  parser.add_argument("--stride", type=POSITIVE_INT,
                      help="also the FVD of the 16-frame windows starting every STRIDE frames "
                      "(sliding-window FVD over time)")
  parser.add_argument("--features", metavar="NAME",
                      help="also FID and KID of the frames with this feature network "
                      "(inception_v3 for FID proper, with --inception-weights; "
                      "inception_v3_torchvision; vgg16)")
  parser.add_argument("--inception-weights", metavar="PATH",
                      help="Inception-v3 weights for --features inception_v3: an .npz "
                      "converted from pytorch-fid's pt_inception-2015-12-05 state dict (none "
                      "ship offline; see spectral_jax/eval/inception.py; default "
                      "$SPECTRAL_JAX_INCEPTION_WEIGHTS)")
  parser.add_argument("--frame-step", type=POSITIVE_INT, default=1,
                      help="FID and KID on every N-th frame (default %(default)s)")
  parser.add_argument("--batch-size", type=POSITIVE_INT, default=8,
                      help="clips per compiled I3D call (default %(default)s)")
  add_cache_argument(parser)


def read_video(path: Path):
  """All frames of a video, uint8 ``[T, H, W, 3]``, as stored (no
  resampling).

  Raises:
    ValueError: not a readable video.
  """
  import warnings

  import imageio.v3 as iio
  import numpy as np
  try:
    with warnings.catch_warnings():
      # JAX warns of any fork once it is loaded; ffmpeg's fork execs at once.
      warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
      return np.stack(list(iio.imiter(path)))[..., :3]
  except (OSError, RuntimeError, ValueError) as error:
    first = next((line for line in str(error).splitlines() if line.strip()), "")
    raise ValueError(f"{path}: not a readable video ({first})") from None


def _list_videos(directory) -> list[Path]:
  from spectral_jax.data.video import list_videos
  videos = list_videos(directory)
  if len(videos) < 2:
    raise ValueError(f"{directory}: {len(videos)} video(s); FVD needs at least 2 per folder "
                     "(a covariance)")
  return videos


def run(args) -> None:
  import json

  import numpy as np

  from spectral_jax.eval import distances, features, fvd
  from spectral_jax.inference import compile_cache

  if args.inception_weights and not (args.features or "").startswith("inception_v3"):
    raise ValueError("--inception-weights is for --features inception_v3 (or "
                     "inception_v3_torchvision)")
  real, fake = _list_videos(args.real_dir), _list_videos(args.fake_dir)
  compile_cache.enable(args.cache_dir)  # I3D's compile is a third of a small call.
  network = (features.load_network(args.features, args.inception_weights)
             if args.features else None)
  embed = fvd.ClipEmbedder(batch_size=args.batch_size)
  frame_features = {"real": [], "fake": []}

  def videos(paths, name):
    """Each video read once: its frames' features on the way (``--features``)."""
    for path in paths:
      video = read_video(path)
      if network is not None:
        frame_features[name].append(network(video[::args.frame_step]))
      yield str(path), video

  real_windows = fvd.window_features(videos(real, "real"), embed, args.stride)
  fake_windows = fvd.window_features(videos(fake, "fake"), embed, args.stride)
  starts, values = fvd.sliding_fvd(real_windows, fake_windows)
  result = {"fvd": values[0]}
  if args.stride:
    result["fvd_windows"] = {"start": starts, "fvd": values}
  if network is not None:
    real_frames, fake_frames = (np.concatenate(frame_features[name]) for name in ("real", "fake"))
    kid, kid_std = distances.kernel_distance(real_frames, fake_frames)
    result.update(
        features=args.features,
        fid=distances.frechet_distance(distances.gaussian_fit(real_frames),
                                       distances.gaussian_fit(fake_frames)),
        kid=kid, kid_std=kid_std)
  print(json.dumps(result))
