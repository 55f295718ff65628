"""From videos to an animated picture: synthetic videos → a prepared data set
→ the four training stages on it → `spectral-jax animate`.

The default test trains every stage two steps from a data set prepared in
the test (the Python API); the slow one (``-m slow``) goes through the
command lines a user types: ``spectral-jax prepare``, ``python -m
spectral_jax.train`` for each stage, ``spectral-jax animate``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import orbax.checkpoint as ocp
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import train_configs  # noqa: E402

from spectral_jax import checkpoint, cli  # noqa: E402
from spectral_jax.data import clips, dataset, prepare  # noqa: E402
from spectral_jax.data import video as video_io  # noqa: E402
from spectral_jax.motion.motion_file import Motion  # noqa: E402
from spectral_jax.train import metrics, train  # noqa: E402

# Synthetic videos at 30 fps, 64x32. The clips are made at half their frame
# rate and size (so preparation resamples in time and space) and at a T/fps
# other than the training configs' synthetic scenes (32 frames at 30 fps, set
# below as a decoy): a run that fell back to synthetic data would show it.
VIDEO_FPS, VIDEO_FRAMES, VIDEO_SIZE = 30.0, 64, "64x32"
CLIP = clips.ClipConfig(num_frames=16, fps=15.0, width=32, height=16, num_freqs=4, stride=4,
                        num_render_frames=2, static_px=0.01)
# By the hash of its name, scene_00001.mp4 is the held-out video at 0.25
# (`prepare.split_of`): 2 training videos, 1 test video.
OPTIONS = prepare.PrepareOptions(workers=1, test_fraction=0.25)
DECOY_FRAMES = 32
RESIDUAL_BRANCH = re.compile(r"encoder/stages/\d+/layers/\d+/(conv1|conv2|norm1)/\w+")
STAGES = ("vae", "ldm_pretrain", "ldm_freq_attn", "renderer")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
  root = tmp_path_factory.mktemp("videos")
  assert cli.main(["synth", "-o", str(root), "--num", "3", "--frames", str(VIDEO_FRAMES),
                   "--fps", f"{VIDEO_FPS:g}", "--size", VIDEO_SIZE, "--K", "8"]) == 0
  return root


@pytest.fixture(scope="module")
def data_dir(videos, tmp_path_factory) -> Path:
  out = tmp_path_factory.mktemp("data") / "set"
  report = prepare.prepare(videos, out, CLIP, OPTIONS, progress=False)
  # 64 frames at 30 fps are 32 at 15 fps: clips of 16 start at 0, 4, .., 16.
  assert report["clips"] == {"train": 10, "test": 5}, report
  return out


def _stage_config(stage: str, data_dir: Path, runs: dict):
  """`train_configs.prepared_config` of ``stage``, chained to the runs
  before it: 2 steps, each logged and checkpointed, no evaluation."""
  config = train_configs.prepared_config(stage, data_dir)
  config.data.synthetic.num_frames = DECOY_FRAMES
  config.eval_every = 0
  assert config.num_steps == 2 and config.log_every == config.checkpoint_every == 1
  if stage.startswith("ldm"):
    config.vae_from = str(runs["vae"])
  if stage == "ldm_freq_attn":
    config.init_from = str(runs["ldm_pretrain"])
  if stage == "renderer":
    config.loss.perceptual_weight = 0.0  # VGG would be most of the test's time.
  return config


@pytest.fixture(scope="module")
def prepared_runs(data_dir, tmp_path_factory) -> dict:
  """Every stage trained 2 steps on ``data_dir``: {stage: (workdir, config)}."""
  out = tmp_path_factory.mktemp("runs")
  runs, configs = {}, {}
  for stage in STAGES:
    configs[stage] = _stage_config(stage, data_dir, runs)
    runs[stage] = out / stage
    train.run(configs[stage], runs[stage], progress=False)
  return {stage: (runs[stage], configs[stage]) for stage in STAGES}


def test_every_stage_trains_on_the_prepared_clips(prepared_runs, data_dir):
  """Each stage, trained from the prepared data set, logs a finite loss at a
  non-zero learning rate on both steps, reads its batches from the prepared
  clips, and its second step moved its parameters (step 1's checkpoint
  against step 2's; initialising each model again to compare with step 0
  would double this test's compile time): most arrays of the VAE, the
  renderer and the stage-1 U-Net, and in stage 2 frequency attention only,
  the rest being stage 1's parameters bit for bit."""
  train_clips = len(dataset.open_split(data_dir, "train"))
  for stage in STAGES:
    workdir, config = prepared_runs[stage]
    records = [r for r in metrics.read_metrics(workdir) if "loss" in r]
    assert [r["step"] for r in records] == [1, 2], stage
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in records), (stage, records)
    assert all(r["learning_rate"] > 0 for r in records), (stage, records)

    # The input pipeline went through the prepared set's clips: 2 batches of
    # B from its `train_clips` (synthetic scenes would be 64: 8 batches an
    # epoch, still in epoch 0 after 2).
    mngr = checkpoint.manager(workdir, read_only=True)
    position = mngr.restore(2, args=ocp.args.Composite(data=ocp.args.JsonRestore()))["data"]
    per_epoch = train_clips // config.batch_size
    assert position == {"epoch": 2 // per_epoch, "batch": 2 % per_epoch}, (stage, position)

    before, after = (train_configs.saved_params(workdir, step) for step in (1, 2))
    assert set(before) == set(after), stage
    assert all(np.isfinite(value).all() for value in after.values()), stage
    moved = {name for name in after if not np.array_equal(after[name], before[name])}
    if stage == "ldm_freq_attn":
      assert moved and all("freq_attn" in name for name in moved), sorted(moved)
      stage1 = train_configs.saved_params(prepared_runs["ldm_pretrain"][0])
      assert set(after) - set(stage1) == {name for name in after if "freq_attn" in name}
      for name, value in stage1.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)
    elif stage == "renderer":
      # A residual branch of the encoder ends in a zero-initialised GroupNorm
      # scale (`norm2`): its layers before it get a gradient only once that
      # scale has moved, after step 2 (measured: 72 of 88 arrays move).
      still = set(after) - moved
      assert all(RESIDUAL_BRANCH.fullmatch(name) for name in still), sorted(still)
      assert {name for name in moved if name.endswith("norm2/scale")}, sorted(moved)
      assert len(moved) > 0.75 * len(after), (len(moved), len(after))
    else:
      assert len(moved) > 0.9 * len(after), (stage, sorted(set(after) - moved))


def test_runs_record_the_prepared_sets_statistics_and_timing(prepared_runs, data_dir):
  """What `animate` reads from the runs is the prepared data set's: every
  checkpoint's normalization scales are those of `normalization.json`
  (synthetic scenes would measure others), and the motion runs and the
  renderer record T and fps of the prepared clips (16 at 15 fps), not the
  synthetic block's (32 at 30 fps) nor the source videos' frame rate."""
  normalization = dataset.load_normalization(data_dir)
  assert normalization.num_values > 0 and np.all(normalization.scales > 1e-6)
  for stage in STAGES:
    workdir, run_config = prepared_runs[stage]
    synthetic = run_config.data.synthetic
    assert (synthetic.num_frames, synthetic.fps) != (CLIP.num_frames, CLIP.fps)
    config, stats, step = checkpoint.read_config(workdir)
    assert step == 2 and config.stage == stage
    assert Path(config.data.dir) == data_dir.absolute()
    np.testing.assert_array_equal(np.float32(stats["normalization"]["scales"]),
                                  normalization.scales, err_msg=stage)
    assert stats["normalization"]["percentile"] == normalization.percentile == 97.0
    assert stats["normalization"]["num_values"] == normalization.num_values, stage
    if stage == "vae":
      assert "clip" not in stats
      assert min(stats["latent"]["std"]) > 0
      continue
    assert stats["clip"] == {"num_frames": CLIP.num_frames, "fps": CLIP.fps}, (stage, stats)
    if stage.startswith("ldm"):
      assert stats["vae"]["step"] == 2
      vae_latent = checkpoint.read_config(prepared_runs["vae"][0])[1]["latent"]
      for name in ("mean", "std"):
        np.testing.assert_allclose(stats["latent"][name], vae_latent[name], rtol=1e-6)


# --- The command lines, end to end (slow) -----------------------------------

# The slow test's clips: 48x32 (a centre crop of the 64x32 videos), K=4, T=16.
CLI_CLIP = {"size": "48x32", "frames": 16, "fps": 15, "K": 4, "stride": 4, "render_frames": 2}
CLI_STEPS = 3
ANIMATE_FRAMES = 6


def test_a_test_split_smaller_than_a_batch_fails_before_training(data_dir, tmp_path):
  """5 held-out clips cannot fill an evaluation batch of 8: said at once, not
  at the first evaluation after training; without evaluation it trains."""
  config = train_configs.prepared_config("vae", data_dir)
  config.eval_every = 1
  with pytest.raises(ValueError, match="the test split holds 5 examples, fewer than one batch "
                     "of 8"):
    train.run(config, tmp_path / "run", progress=False)
  assert not (tmp_path / "run" / "checkpoints").exists()


def _run(command: list, **kwargs) -> subprocess.CompletedProcess:
  done = subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)
  assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-4000:])
  return done


def _train_command(stage: str, workdir: Path, data_dir: Path, runs: dict) -> list:
  """``python -m spectral_jax.train`` of the ``tiny`` variant of ``stage``
  on ``data_dir``, shrunk by overrides: CLI_STEPS steps of batch 4 at no
  warm-up, evaluated once at the end on the held-out clips."""
  width, height = video_io.parse_size(CLI_CLIP["size"])
  overrides = {
      "data.dir": data_dir, "data.width": width, "data.height": height,
      "data.num_freqs": CLI_CLIP["K"], "num_steps": CLI_STEPS, "batch_size": 4,
      "log_every": 1, "eval_every": CLI_STEPS, "checkpoint_every": CLI_STEPS,
      "optimizer.warmup_steps": 0, "eval.num_batches": 1,
  }
  if stage == "vae":
    overrides.update({"eval.whiten_batches": 1, "model.base_channels": 8})
  if stage.startswith("ldm"):
    overrides.update({"vae_from": runs["vae"], "model.base_channels": 8,
                      "model.num_heads": 2, "model.image_encoder_channels": 8,
                      "eval.ddim_steps": 2, "sampling.num_steps": 4})
  if stage == "ldm_freq_attn":
    overrides["init_from"] = runs["ldm_pretrain"]
  if stage == "renderer":
    overrides.update({"model.style_dim": 16, "model.norm_groups": 4})
  return ([sys.executable, "-m", "spectral_jax.train",
           f"--config={train_configs.CONFIGS / stage}.py:tiny", f"--workdir={workdir}",
           "--no_progress"] + [f"--config.{key}={value}" for key, value in overrides.items()])


@pytest.mark.slow
# The commands run in subprocesses (fork, then exec at once) of a process
# that has loaded JAX, which warns of any fork.
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
def test_videos_to_animation_through_the_command_lines(videos, tmp_path):
  """The workflow of docs/TRAINING.md, each step through its command line:
  `spectral-jax prepare` of synthetic videos; the four `tiny` stages trained
  from the prepared set (chained by --config.vae_from/init_from, evaluated on
  its test split); `spectral-jax animate --checkpoint RUNS` of a held-out
  picture. The video has the asked number of frames at the models' size and
  at the prepared clips' frame rate, starts on the picture (within H.264's
  error), and the saved spectral volume has the models' K, T and size."""
  # The commands' compilation cache in the test's folder, not ~/.cache.
  env = dict(os.environ, SPECTRAL_JAX_CACHE_DIR=str(tmp_path / "jax_cache"))
  spectral_jax = [sys.executable, "-m", "spectral_jax.cli"]
  width, height = video_io.parse_size(CLI_CLIP["size"])
  K, T, fps = CLI_CLIP["K"], CLI_CLIP["frames"], float(CLI_CLIP["fps"])

  data_dir = tmp_path / "data"
  _run(spectral_jax + ["prepare", videos, "-o", data_dir, "--size", CLI_CLIP["size"],
                       "--frames", T, "--fps", CLI_CLIP["fps"], "--K", K,
                       "--stride", CLI_CLIP["stride"], "--render-frames",
                       CLI_CLIP["render_frames"], "--static-px", 0.01, "--workers", 1,
                       "--test-fraction", 0.25], env=env)
  report = json.loads((data_dir / dataset.REPORT_FILE).read_text())
  assert report["clips"]["train"] >= 8 and report["clips"]["test"] >= 4, report
  assert dataset.load_clip_config(data_dir).num_render_frames == CLI_CLIP["render_frames"]

  runs_dir = tmp_path / "runs"
  runs = {stage: runs_dir / name for stage, name in
          zip(STAGES, ("vae", "ldm1", "ldm2", "renderer"))}
  for stage in STAGES:
    _run(_train_command(stage, runs[stage], data_dir, runs), env=env)
    records = metrics.read_metrics(runs[stage])
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == CLI_STEPS and np.all(np.isfinite(losses)), (stage, records)
    assert all(r["learning_rate"] > 0 for r in records if "learning_rate" in r), stage
    evaluation = {k: v for r in records for k, v in r.items() if k.startswith("eval/")}
    assert evaluation and all(np.isfinite(v) for v in evaluation.values()), (stage, records)
    _, stats, step = checkpoint.read_config(runs[stage])
    assert step == CLI_STEPS
    np.testing.assert_array_equal(np.float32(stats["normalization"]["scales"]),
                                  dataset.load_normalization(data_dir).scales)
    if stage != "vae":
      assert stats["clip"] == {"num_frames": T, "fps": fps}, stage

  # A held-out clip's first frame, at the models' size: framing keeps it as
  # it is, so frame 0 of the video must be this picture.
  picture = np.asarray(dataset.open_split(data_dir, "test")[0]["image"])
  assert picture.shape == (height, width, 3)
  picture_path = tmp_path / "picture.png"
  iio.imwrite(picture_path, picture)
  out = tmp_path / "out.mp4"
  done = _run(spectral_jax + ["animate", picture_path, "-o", out, "--checkpoint", runs_dir,
                              "--steps", 2, "--frames", ANIMATE_FRAMES, "--seed", 0,
                              "--save-motion", tmp_path / "S.npz"], env=env)
  assert f"{out}: {ANIMATE_FRAMES} frames at {fps:g} fps" in done.stdout, done.stdout

  frames = np.stack(list(video_io.iter_frames(out, fps=fps, size=(width, height))))
  assert frames.shape == (ANIMATE_FRAMES, height, width, 3)
  reader = imageio_ffmpeg.read_frames(str(out))
  try:
    assert next(reader)["fps"] == pytest.approx(fps)  # The prepared clips' rate.
  finally:
    reader.close()
  # H.264 (yuv420p) alone, on the picture as a still video of as many
  # frames: measured 1.75 grey levels of mean absolute error at 48x32, and
  # frame 0 of the animation the same 1.75 (max 9): nothing but the codec.
  video_io.write_video(tmp_path / "still.mp4",
                       np.repeat(picture[None], ANIMATE_FRAMES, axis=0), fps)
  still = next(video_io.iter_frames(tmp_path / "still.mp4", fps=fps, size=(width, height)))
  codec_error = np.abs(still.astype(np.float64) - picture).mean()
  error = np.abs(frames[0].astype(np.float64) - picture).mean()
  assert error < 2.5 and error <= codec_error + 0.25, (error, codec_error)
  # And the picture moves: later frames differ from frame 0 by up to 2.7
  # grey levels on average (a still video's frames decode identical).
  change = [np.abs(frame.astype(np.float64) - frames[0]).mean() for frame in frames[1:]]
  assert max(change) > 0.5, change

  motion = Motion.load(tmp_path / "S.npz")
  assert motion.spectral_volume.shape == (K, height, width, 2)
  assert motion.spectral_volume.dtype == np.complex64
  assert (motion.num_freqs, motion.num_frames, motion.fps) == (K, T, fps)
  np.testing.assert_array_equal(motion.image, picture)
  assert np.isfinite(motion.spectral_volume).all()
  assert np.abs(motion.spectral_volume).max() > 0
