"""`spectral-jax fvd` and `spectral-jax eval`: reports, bad input.

The default tests run `fvd` with a stand-in clip embedding (each frame's
mean colour) in place of I3D, whose numerics `test_eval_metrics.py` checks;
with ``-m slow``, `fvd` runs I3D and VGG16, and `eval` a motion model
trained two steps on a prepared data set.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import train_configs  # noqa: E402

from spectral_jax import cli  # noqa: E402
from spectral_jax.apps import eval as eval_app  # noqa: E402
from spectral_jax.apps import fvd as fvd_app  # noqa: E402
from spectral_jax.data import clips, dataset, prepare  # noqa: E402
from spectral_jax.data.video import write_video  # noqa: E402
from spectral_jax.eval import distances, features, fvd, motion_metrics  # noqa: E402
from spectral_jax.motion.spectral import from_real_layout  # noqa: E402


def _main(capsys, *argv) -> tuple[int, str, str]:
  code = cli.main([str(a) for a in argv])
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def _write_videos(folder: Path, lengths, seed: int, size=(32, 24)) -> list[np.ndarray]:
  """Smooth random videos (H.264 keeps them close), one per length; returns
  the frames as read back."""
  rng = np.random.default_rng(seed)
  folder.mkdir(parents=True)
  frames = []
  for index, length in enumerate(lengths):
    colour = rng.uniform(40, 215, 3)
    ramp = np.linspace(-30, 30, length)[:, None, None, None]
    video = np.broadcast_to(colour + ramp * rng.uniform(-1, 1, 3), (length, size[1], size[0], 3))
    write_video(folder / f"video_{index}.mp4", np.clip(video, 0, 255).astype(np.uint8), 30)
    frames.append(fvd_app.read_video(folder / f"video_{index}.mp4"))
  return frames


class MeanColour:
  """Stand-in for `fvd.ClipEmbedder`: each frame's mean colour, ``[N, 48]``."""

  def __init__(self, *, batch_size: int):
    self.batch_size = batch_size

  def __call__(self, clips):
    return np.asarray(clips, np.float64).mean(axis=(2, 3)).reshape(len(clips), -1)


@pytest.fixture(scope="module")
def video_sets(tmp_path_factory):
  root = tmp_path_factory.mktemp("fvd")
  real = _write_videos(root / "real", (24, 24, 40), seed=0)
  fake = _write_videos(root / "fake", (40, 32), seed=1)
  return root / "real", root / "fake", real, fake


def test_fvd_prints_json(video_sets, capsys, monkeypatch):
  """The first window's FVD; with --stride, one per window start that 2
  videos of each folder reach; the same folder twice gives 0."""
  monkeypatch.setattr(fvd, "ClipEmbedder", MeanColour)
  real_dir, fake_dir, real, fake = video_sets
  code, out, err = _main(capsys, "fvd", real_dir, fake_dir)
  assert code == 0, err
  result = json.loads(out)
  embed = MeanColour(batch_size=1)
  first = lambda videos, start: embed(np.stack([v[start:start + 16] for v in videos
                                                if len(v) >= start + 16]))
  fit = distances.gaussian_fit
  assert result == {"fvd": pytest.approx(distances.frechet_distance(
      fit(first(real, 0)), fit(first(fake, 0))))} and result["fvd"] > 0

  code, out, err = _main(capsys, "fvd", real_dir, fake_dir, "--stride", "8")
  windows = json.loads(out)["fvd_windows"]
  assert windows["start"] == [0, 8]  # Start 16 has 2 fake videos but 1 real one.
  assert windows["fvd"][1] == pytest.approx(distances.frechet_distance(
      fit(first(real, 8)), fit(first(fake, 8))))
  code, out, err = _main(capsys, "fvd", real_dir, real_dir, "--stride", "8")
  assert json.loads(out)["fvd_windows"] == {"start": [0, 8], "fvd": [0.0, 0.0]}


def test_fvd_adds_fid_and_kid_of_frames(video_sets, capsys, monkeypatch):
  """--features: FID and KID of every --frame-step-th frame of every video."""
  monkeypatch.setattr(fvd, "ClipEmbedder", MeanColour)
  monkeypatch.setitem(features.NETWORKS, "mean", lambda: lambda f: f.mean(axis=(1, 2)))
  real_dir, fake_dir, real, fake = video_sets
  code, out, err = _main(capsys, "fvd", real_dir, fake_dir, "--features", "mean",
                         "--frame-step", "3")
  assert code == 0, err
  result = json.loads(out)
  frames = lambda videos: np.concatenate([v[::3].mean(axis=(1, 2)) for v in videos])
  assert result["features"] == "mean"
  assert result["fid"] == pytest.approx(distances.frechet_distance(
      distances.gaussian_fit(frames(real)), distances.gaussian_fit(frames(fake))))
  assert (result["kid"], result["kid_std"]) == pytest.approx(
      distances.kernel_distance(frames(real), frames(fake)))


def test_fvd_bad_input(video_sets, tmp_path, capsys, monkeypatch):
  """One line on stderr and exit status 2, nothing on stdout."""
  monkeypatch.setattr(fvd, "ClipEmbedder", MeanColour)
  real_dir, fake_dir, _, _ = video_sets
  one = tmp_path / "one"
  one.mkdir()
  (one / "a.mp4").write_bytes((real_dir / "video_0.mp4").read_bytes())
  unreadable = tmp_path / "unreadable"
  unreadable.mkdir()
  for name in ("a.mp4", "b.mp4"):
    (unreadable / name).write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 300)
  short = tmp_path / "short"
  _write_videos(short, (16, 15), seed=2)
  cases = {
      (tmp_path / "missing", fake_dir): "no such directory",
      (one, fake_dir): "1 video(s); FVD needs at least 2",
      (real_dir, unreadable): "a.mp4: not a readable video",
      (short, fake_dir): "video_1.mp4: 15 frames, fewer than the 16",
  }
  for (real, fake), message in cases.items():
    code, out, err = _main(capsys, "fvd", real, fake)
    assert (code, out) == (2, ""), err
    assert message in err and len(err.strip().splitlines()) == 1, err
  code, out, err = _main(capsys, "fvd", real_dir, fake_dir, "--features", "inception_v3")
  assert code == 2 and "no Inception-v3 weights ship offline" in err


def test_eval_bad_input(tmp_path, capsys):
  code, _, err = _main(capsys, "eval", "--checkpoint", tmp_path, "--data", tmp_path / "none")
  assert code == 2 and "no prepared data set" in err and len(err.strip().splitlines()) == 1
  code, _, err = _main(capsys, "eval", "--checkpoint", tmp_path, "--data", tmp_path,
                       "-o", tmp_path / "report.txt")
  assert code == 2 and "must end in .json" in err
  with pytest.raises(SystemExit) as exit_info:  # argparse's usage and error.
    cli.main(["eval", "--checkpoint", str(tmp_path), "--data", str(tmp_path), "--num", "0"])
  assert exit_info.value.code == 2 and "--num: must be at least 1" in capsys.readouterr().err


def test_eval_refuses_a_data_set_of_other_clips():
  motion = SimpleNamespace(num_freqs=4, num_frames=16, fps=30.0,
                           config=SimpleNamespace(data=SimpleNamespace(width=48, height=32)))
  clip = clips.ClipConfig(num_frames=16, fps=30.0, width=48, height=32, num_freqs=4)
  eval_app._check_clips(motion, clip, "data")
  with pytest.raises(ValueError, match="K=8 bins over T=16 frames at 30 fps, 48x32; the model "
                     "samples K=4"):
    eval_app._check_clips(motion, clips.ClipConfig(num_frames=16, fps=30.0, width=48,
                                                   height=32, num_freqs=8), "data")


@pytest.mark.slow
def test_fvd_with_i3d_and_vgg16(video_sets, capsys):
  """The real networks: identical folders are 0 apart, different ones not."""
  real_dir, fake_dir, _, _ = video_sets
  code, out, err = _main(capsys, "fvd", real_dir, real_dir, "--features", "vgg16",
                         "--frame-step", "8")
  assert code == 0, err
  same = json.loads(out)
  assert same["fvd"] == pytest.approx(0, abs=1e-6) and same["fid"] == pytest.approx(0, abs=1e-6)
  code, out, err = _main(capsys, "fvd", real_dir, fake_dir)
  assert code == 0, err
  assert json.loads(out)["fvd"] > 1


# Clips of the micro motion models (`train_configs.load_config`: 32x16, K = 4)
# made from 3 synthetic videos of 64 frames at 30 fps, 64x32, as in
# test_end_to_end.py: scene_00001.mp4 is held out (5 test clips, 10 train).
CLIP = clips.ClipConfig(num_frames=16, fps=15.0, width=32, height=16, num_freqs=4, stride=4,
                        num_render_frames=2, static_px=0.01)


@pytest.fixture(scope="module")
def motion_data(tmp_path_factory):
  """The prepared data set, and a VAE and a stage-1 U-Net trained on it 2
  steps."""
  root = tmp_path_factory.mktemp("eval")
  assert cli.main(["synth", "-o", str(root / "videos"), "--num", "3", "--frames", "64",
                   "--size", "64x32", "--K", "8"]) == 0
  report = prepare.prepare(root / "videos", root / "data", CLIP,
                           prepare.PrepareOptions(workers=1, test_fraction=0.25),
                           progress=False)
  assert report["clips"] == {"train": 10, "test": 5}, report
  from spectral_jax.train import train
  for stage, workdir in (("vae", "vae"), ("ldm_pretrain", "ldm1")):
    config = train_configs.prepared_config(stage, root / "data")
    config.eval_every = 0
    if stage == "ldm_pretrain":
      config.vae_from = str(root / "runs" / "vae")
    train.run(config, root / "runs" / workdir, progress=False)
  return root


@pytest.mark.slow
def test_eval_writes_report_and_plot(motion_data, capsys):
  """The report's measured side equals the metrics of the data set's own
  volumes; a second run with the same seed gives the same report."""
  data, runs = motion_data / "data", motion_data / "runs"
  report_path = motion_data / "out" / "report.json"
  argv = ("eval", "--checkpoint", runs, "--data", data, "-o", report_path, "--num", "3",
          "--steps", "2", "--loop-frames", "6")
  code, out, err = _main(capsys, *argv)
  assert code == 0, err
  report = json.loads(report_path.read_text())
  assert eval_app.plot_path(report_path).stat().st_size > 1000
  assert report["examples"] == len(report["per_example"]) == 3
  assert report["sampling"]["num_steps"] == 2 and report["loop_closure"]["frames"] == 6
  assert len(report["per_frequency"]["error_px"]) == CLIP.num_freqs
  source = dataset.open_split(data, "test")
  measured = [from_real_layout(source[i]["spectral_volume"].astype(np.float32))
              for i in range(3)]
  np.testing.assert_allclose(report["per_frequency"]["measured_px"],
                             np.mean([motion_metrics.frequency_magnitude(m) for m in measured],
                                     axis=0), rtol=1e-6)
  closure = np.mean([motion_metrics.loop_closure(m, num_frames=16, loop_frames=6)
                     for m in measured], axis=0)
  assert (report["loop_closure"]["measured_px"],
          report["loop_closure"]["measured_velocity_px_per_frame"]) == pytest.approx(closure)
  assert np.isfinite(report["end_point_error_px"]) and report["end_point_error_px"] > 0
  code, _, err = _main(capsys, *argv)
  assert code == 0, err
  assert json.loads(report_path.read_text()) == report
