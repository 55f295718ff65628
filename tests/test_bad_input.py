"""Bad command-line input, given as a user would (the installed commands in a
subprocess): one error line naming the problem, a non-zero exit status,
nothing left on disk.

The checks run before anything heavy is imported, so each command here
takes a fraction of a second.
"""

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
], ids=["missing_file", "misspelt_override", "num_steps", "log_every", "adam_b2"])
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


@pytest.mark.parametrize("stage", ["vae", "ldm_pretrain", "ldm_freq_attn", "renderer"])
def test_shipped_configs_pass_the_range_checks(stage):
  for variant in VARIANTS:
    check_config(load_config_file(CONFIGS / f"{stage}.py", variant))
  with pytest.raises(ValueError, match="config.batch_size must be at least 1, got 0"):
    check_config(load_config_file(CONFIGS / f"{stage}.py", "tiny", {"batch_size": 0}))
