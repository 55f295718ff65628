"""Bad command-line input, given as a user would (the installed commands in a
subprocess): one error line naming the problem, a non-zero exit status,
nothing left on disk.

The checks run before anything heavy is imported, so each command here
takes a fraction of a second. The bad data and full disks at the end
(unreadable videos, ENOSPC mid-write, a data set smaller than one batch)
run a little more: a few seconds each.
"""

import errno
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spectral_jax.config_base import VARIANTS, check_config, load_config_file
from spectral_jax.data import video

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _spectral_jax() -> list[str]:
  """The installed `spectral-jax` console script (the venv's, beside Python)."""
  script = (shutil.which("spectral-jax", path=str(Path(sys.executable).parent))
            or shutil.which("spectral-jax"))
  return [script] if script else [sys.executable, "-m", "spectral_jax.cli"]


def _run(argv, cwd) -> subprocess.CompletedProcess:
  return subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                        timeout=120, check=False)


def _error_line(result: subprocess.CompletedProcess) -> str:
  """The one error line of a failed command (argparse prints its usage
  first); fails the test unless there is exactly one."""
  assert result.returncode != 0, result.stdout + result.stderr
  assert "Traceback" not in result.stderr, result.stderr
  lines = result.stderr.splitlines()
  errors = [line for line in lines if "error" in line.lower()]
  assert errors == lines[-1:], result.stderr
  return errors[0]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
  """A folder with one video that `prepare` and `motion` would accept."""
  root = tmp_path_factory.mktemp("videos")
  frames = np.random.default_rng(0).integers(0, 255, (12, 48, 64, 3), dtype=np.uint8)
  video.write_video(root / "noise.mp4", frames, fps=30)
  return root


# Options that would otherwise be accepted, or fail only after extraction.
@pytest.mark.parametrize("option, value, wanted", [
    ("--percentile", "150", "in (0, 100]"),
    ("--test-fraction", "2", "in [0, 1]"),
    ("--workers", "0", "at least 1"),
    ("--fps", "nan", "a finite number greater than 0"),
], ids=["percentile", "test_fraction", "workers", "fps"])
def test_prepare_refuses_out_of_range_option(videos, tmp_path, option, value, wanted):
  out = tmp_path / "data"
  result = _run([*_spectral_jax(), "prepare", videos, "-o", out, "--frames", "8",
                 "--size", "64x48", "--K", "4", "--workers", "1", "--static-px", "0",
                 option, value], cwd=tmp_path)
  assert result.returncode == 2
  error = _error_line(result)
  assert error.startswith("spectral-jax prepare: error:"), error
  assert f"{option}: must be {wanted}, got {value}" in error, error
  assert not (out / ".cache").exists() and not out.exists()


def test_prepare_refuses_out_of_range_config_file_value(videos, tmp_path):
  # A config file's values are defaults, which argparse does not check.
  config = tmp_path / "bad_data.py"
  config.write_text("import ml_collections\n\n\ndef get_config():\n"
                    "  return ml_collections.ConfigDict({'percentile': 150.0})\n")
  out = tmp_path / "data"
  result = _run([*_spectral_jax(), "prepare", videos, "-o", out, "--config", config,
                 "--frames", "8", "--size", "64x48", "--K", "4", "--workers", "1"],
                cwd=tmp_path)
  assert result.returncode == 2
  assert "percentile: must be in (0, 100], got 150" in _error_line(result)
  assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--num", "0"], "--num: must be at least 1, got 0"),
    (["--num", "1", "--fps", "-30"], "--fps: must be greater than 0, got -30"),
    (["--num", "1", "--frames", "nan"], "--frames: must be an integer at least 1, got 'nan'"),
], ids=["num", "fps", "frames"])
def test_synth_refuses_out_of_range_option(tmp_path, argv, message):
  result = _run([*_spectral_jax(), "synth", "-o", tmp_path / "out", *argv], cwd=tmp_path)
  assert result.returncode == 2
  assert message in _error_line(result)
  assert list(tmp_path.iterdir()) == []


def test_motion_refuses_negative_start(videos, tmp_path):
  result = _run([*_spectral_jax(), "motion", videos / "noise.mp4", "-o", tmp_path / "S.npz",
                 "--viz", tmp_path / "viz", "--frames", "8", "--size", "64x48", "--K", "4",
                 "--start", "-3"], cwd=tmp_path)
  assert result.returncode == 2
  assert "--start: must be at least 0, got -3" in _error_line(result)
  assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("config, override, message", [
    ("missing_file.py:tiny", None, "--config: no such file missing_file.py"),
    (f"{CONFIGS / 'vae.py'}:tiny", "--config.optimizer.learnin_rate=1",
     "--config.optimizer.learnin_rate: "),
    (f"{CONFIGS / 'vae.py'}:tiny", "--config.num_steps=-1",
     "config.num_steps must be at least 1, got -1"),
    (f"{CONFIGS / 'renderer.py'}:tiny", "--config.log_every=0",
     "config.log_every must be at least 1, got 0"),
    (f"{CONFIGS / 'ldm_pretrain.py'}:tiny", "--config.optimizer.b2=1.0",
     "config.optimizer.b2 must be in [0, 1), got 1.0"),
    (f"{CONFIGS / 'vae.py'}:tiny", "--config.profile_steps=(550,700)",
     "config.profile_steps must be (first, last) with 1 <= first <= last <= num_steps=600"),
], ids=["missing_file", "misspelt_override", "num_steps", "log_every", "adam_b2",
        "profile_steps"])
def test_train_refuses_bad_config(tmp_path, config, override, message):
  result = _run([sys.executable, "-m", "spectral_jax.train", "--config", config,
                 "--workdir", tmp_path / "run", *([override] if override else [])],
                cwd=tmp_path)
  assert result.returncode == 2
  error = _error_line(result)
  assert result.stderr == error + "\n", result.stderr  # No usage either.
  assert message in error, error
  if "learnin_rate" in (override or ""):
    assert "did you mean 'optimizer.learning_rate'?" in error, error
  assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--topology", "v5e:2x2", "--config.batch_size=0"],
     "config.batch_size must be at least 1, got 0"),
    (["--topology", "tpu7:2x2"], "unknown topology 'tpu7:2x2'"),
    (["--topology", "v5e:2x2", "--find-batch", "--memory-line=4"],
     "--memory-line takes two numbers, GiB at per-chip batches 1 and 2; got 4"),
    (["--topology", "v5e:2x2", "--probes=x.jsonl", "--find-batch", "--memory-line=5,3"],
     "--memory-line 5,3: GiB at batch 1 must be positive and at most that at batch 2"),
    (["--topology", "v5e:2x2"], "libtpu is not installed, and compiling for a TPU needs it: "
                                "pip install -e '.[tpu]'"),
], ids=["config", "topology", "memory_line", "memory_line_order", "libtpu"])
def test_compile_for_a_tpu_refuses_bad_input(tmp_path, argv, message):
  """`python -m spectral_jax.train.compile` in this environment, which has
  no libtpu (the tpu extra's tests, tests/test_compile_tpu.py, run in one
  that has it)."""
  if message.startswith("libtpu") and importlib.util.find_spec("libtpu"):
    pytest.skip("libtpu is installed here")
  result = _run([sys.executable, "-m", "spectral_jax.train.compile", "--config",
                 f"{CONFIGS / 'vae.py'}:tiny", *argv], cwd=tmp_path)
  assert result.returncode == 2
  assert result.stderr == _error_line(result) + "\n", result.stderr
  assert message in result.stderr, result.stderr
  assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stage", ["vae", "ldm_pretrain", "ldm_freq_attn", "renderer"])
def test_shipped_configs_pass_the_range_checks(stage):
  for variant in VARIANTS:
    check_config(load_config_file(CONFIGS / f"{stage}.py", variant))
  with pytest.raises(ValueError, match="config.batch_size must be at least 1, got 0"):
    check_config(load_config_file(CONFIGS / f"{stage}.py", "tiny", {"batch_size": 0}))


# Bad data and full disks: the rest of the work goes on, or one clear error
# and nothing half-written under a final name.

_PREPARE_ARGS = ["--frames", "16", "--size", "64x48", "--K", "4", "--stride", "8",
                 "--workers", "1", "--static-px", "0.05", "--test-fraction", "0"]


@pytest.fixture(scope="module")
def damaged_videos(tmp_path_factory):
  """A folder of one good video and three damaged copies: random bytes, cut
  in half as an interrupted download is (the index at the end is lost:
  unreadable), and cut in half with the index first (readable up to the
  cut)."""
  import imageio_ffmpeg

  from spectral_jax import cli
  root = tmp_path_factory.mktemp("damaged")
  assert cli.main(["synth", "-o", str(root), "--num", "1", "--frames", "32", "--size", "64x48",
                   "--K", "4"]) == 0
  good = (root / "scene_00000.mp4").read_bytes()
  (root / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
  (root / "cut_download.mp4").write_bytes(good[:len(good) // 2])
  faststart = root.parent / "faststart.mp4"
  subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-i",
                  root / "scene_00000.mp4", "-c", "copy", "-movflags", "+faststart", faststart],
                 check=True)
  (root / "cut_faststart.mp4").write_bytes(faststart.read_bytes()[:len(good) // 2])
  return root


def test_prepare_skips_unreadable_videos_and_warns_of_a_truncated_one(damaged_videos, tmp_path):
  out = tmp_path / "data"
  result = _run([*_spectral_jax(), "prepare", damaged_videos, "-o", out, *_PREPARE_ARGS],
                cwd=tmp_path)
  assert result.returncode == 0, result.stderr
  assert "Traceback" not in result.stderr, result.stderr
  for name in ("garbage.mp4", "cut_download.mp4"):
    assert f"skipped {damaged_videos / name}: not a readable video" in result.stderr
  assert (f"warning: {damaged_videos / 'cut_faststart.mp4'}: the stream ends after "
          in result.stderr), result.stderr
  assert result.stdout.startswith(f"{out}: prepared;"), result.stdout
  report = json.loads((out / "report.json").read_text())
  assert sorted(f["video"] for f in report["failed_videos"]) == ["cut_download.mp4",
                                                                 "garbage.mp4"]
  assert len(report["warnings"]) == 1 and "truncated file?" in report["warnings"][0]
  kept = {s["video"]: s["kept"] for s in report["per_video"]}
  assert kept["scene_00000.mp4"] == 3 and kept["cut_faststart.mp4"] == 0  # 32 frames; ~16.


def test_prepare_of_only_unreadable_videos_fails_in_one_line(damaged_videos, tmp_path):
  videos = tmp_path / "videos"
  videos.mkdir()
  for name in ("garbage.mp4", "cut_download.mp4"):
    shutil.copy(damaged_videos / name, videos)
  out = tmp_path / "data"
  result = _run([*_spectral_jax(), "prepare", videos, "-o", out, *_PREPARE_ARGS], cwd=tmp_path)
  assert result.returncode == 2
  error = _error_line(result)
  assert error == (f"spectral-jax prepare: error: no usable clips in {videos}: clips dropped: "
                   "none; unreadable videos: 2"), error
  assert not out.exists()


def _disk_full(*args, **kwargs):
  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_atomic_output_on_a_full_disk_keeps_the_old_file(tmp_path):
  from spectral_jax.atomic import atomic_output
  path = tmp_path / "stats.json"
  path.write_text("old")
  with pytest.raises(OSError) as error:
    with atomic_output(path) as tmp:
      tmp.write_text("half of the ne")
      _disk_full()
  # Named by the file being written, not the temporary one.
  assert error.value.errno == errno.ENOSPC and error.value.filename == str(path)
  assert os.listdir(tmp_path) == ["stats.json"] and path.read_text() == "old"
  with pytest.raises(OSError, match="No space left on device: '.*new.json'"):
    with atomic_output(tmp_path / "new.json") as tmp:
      _disk_full()
  assert os.listdir(tmp_path) == ["stats.json"]


def test_export_on_a_full_disk_keeps_the_old_export(tmp_path):
  # The folder `spectral-jax export` writes, the way `export.write` does.
  from spectral_jax.atomic import atomic_directory
  out = tmp_path / "export"
  out.mkdir()
  (out / "model.json").write_text("old")
  with pytest.raises(OSError, match="No space left on device"):
    with atomic_directory(out) as tmp:
      (tmp / "motion.safetensors").write_bytes(b"half")
      _disk_full()
  assert os.listdir(tmp_path) == ["export"] and os.listdir(out) == ["model.json"]
  assert (out / "model.json").read_text() == "old"


def test_a_finished_folder_replaces_the_old_one_with_plain_modes(tmp_path):
  from spectral_jax.atomic import atomic_directory
  out = tmp_path / "export"
  out.mkdir()
  (out / "stale.json").write_text("old")
  with atomic_directory(out) as tmp:
    (tmp / "model.json").write_text("new")
    os.chmod(tmp / "model.json", 0o600)  # As safetensors leaves its files.
  assert os.listdir(tmp_path) == ["export"] and os.listdir(out) == ["model.json"]
  umask = os.umask(0)
  os.umask(umask)
  assert (out.stat().st_mode & 0o777, (out / "model.json").stat().st_mode & 0o777) == (
      0o777 & ~umask, 0o666 & ~umask)


def _fill_disk_at(stage: str, out: Path, monkeypatch) -> None:
  """Makes ``prepare`` into ``out`` run out of disk while writing ``stage``:
  the clips of the second video extracted, the statistics (histogram)
  beside the data set, or the data set's shards after 2 examples."""
  from spectral_jax.atomic import atomic_output
  from spectral_jax.data import dataset
  from spectral_jax.motion.normalize import PercentileAccumulator
  if stage == "clips":
    calls = []
    savez = np.savez

    def half_written_savez(file, *args, **kwargs):
      calls.append(file)
      if len(calls) == 4:  # The first video has 3 clips.
        Path(file).write_bytes(b"PK half")
        _disk_full()
      savez(file, *args, **kwargs)
    monkeypatch.setattr(np, "savez", half_written_savez)
  elif stage == "statistics":
    save = PercentileAccumulator.save

    def save_on_a_full_disk(self, path):
      if Path(path).parent != out:
        return save(self, path)
      with atomic_output(path) as tmp:
        tmp.write_bytes(b"PK half")
        _disk_full()
    monkeypatch.setattr(PercentileAccumulator, "save", save_on_a_full_disk)
  else:
    generate = dataset.SpectralVolumes._generate_examples

    def generate_on_a_full_disk(self, files):
      for index, example in enumerate(generate(self, files)):
        if index == 2:
          _disk_full()
        yield example
    monkeypatch.setattr(dataset.SpectralVolumes, "_generate_examples", generate_on_a_full_disk)


@pytest.mark.parametrize("stage", ["clips", "statistics", "data_set"])
def test_prepare_on_a_full_disk_fails_cleanly_and_resumes(damaged_videos, tmp_path, monkeypatch,
                                                          capsys, stage):
  from spectral_jax import cli
  from spectral_jax.data import dataset
  videos = tmp_path / "videos"
  videos.mkdir()
  for copy in ("a.mp4", "b.mp4"):
    shutil.copy(damaged_videos / "scene_00000.mp4", videos / copy)
  out = tmp_path / "data"
  argv = ["prepare", str(videos), "-o", str(out), *_PREPARE_ARGS]
  with monkeypatch.context() as patch:
    _fill_disk_at(stage, out, patch)
    assert cli.main(argv) == 2
  stderr = capsys.readouterr().err
  assert "Traceback" not in stderr
  error = stderr.splitlines()[-1]
  assert error.startswith(f"spectral-jax prepare: error: {out}: no space left on the device"), error
  assert error.endswith("free some and run the same command again: the videos extracted so "
                        "far are not redone"), error
  if stage == "statistics":
    assert f"(writing {out / dataset.HISTOGRAM_FILE})" in error, error
  assert not dataset.is_prepared(out)
  leftovers = [p.relative_to(out).as_posix() for p in out.rglob("*")]
  assert not [p for p in leftovers if ".tmp" in p or p.endswith(".partial")], leftovers
  if stage != "data_set":
    assert not (out / dataset.NORMALIZATION_FILE).exists()
  # With space again, the same command finishes the job.
  assert cli.main(argv) == 0
  assert dataset.is_prepared(out) and len(dataset.open_split(out, "train")) == 6


def test_train_on_fewer_examples_than_one_batch_fails_in_one_line(tmp_path):
  result = _run([sys.executable, "-m", "spectral_jax.train", "--config",
                 f"{CONFIGS / 'vae.py'}:tiny", "--workdir", tmp_path / "run", "--no_progress",
                 "--config.data.synthetic.num_train=1", "--config.batch_size=2"], cwd=tmp_path)
  assert result.returncode == 1
  error = _error_line(result)
  assert error == "error: 1 examples are too few for a global batch of 2 over 1 processes", error


def test_train_on_a_full_disk_fails_in_one_line(tmp_path):
  # A checkpoint save that meets a full disk (simulated: the run raises
  # ENOSPC as Orbax's write would) is one line saying how to go on.
  script = (
      "import errno, sys\n"
      "from absl import app\n"
      "from spectral_jax.train import __main__ as cli, train\n"
      "def full(*args, **kwargs):\n"
      "  raise OSError(errno.ENOSPC, 'No space left on device')\n"
      "train.run = full\n"
      "app.run(cli.main, flags_parser=cli.parse_flags)\n")
  workdir = tmp_path / "run"
  result = _run([sys.executable, "-c", script, "--config", f"{CONFIGS / 'vae.py'}:tiny",
                 "--workdir", workdir], cwd=tmp_path)
  assert result.returncode == 1
  assert _error_line(result) == (
      f"error: {workdir}: no space left on the device; free some and run the same command "
      "again: it resumes from the last finished checkpoint"), result.stderr
