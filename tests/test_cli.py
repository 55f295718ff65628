"""`spectral-jax` commands: bad input gives one clear line, exit 2, no output."""

import subprocess
import sys

import numpy as np
import pytest

from spectral_jax import cli
from spectral_jax.data import video


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  root = tmp_path_factory.mktemp("inputs")
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 255, (12, 48, 64, 3), dtype=np.uint8)
  video.write_video(root / "short.mp4", frames, fps=30)
  video.write_video(root / "one_frame.mp4", frames[:1], fps=30)
  (root / "text.mp4").write_text("this is not a video\n" * 50)
  (root / "empty.mp4").write_bytes(b"")
  return root


def _run(capsys, *argv):
  code = cli.main([str(a) for a in argv])
  captured = capsys.readouterr()
  return code, captured.err


@pytest.mark.parametrize("name, message", [
    ("text.mp4", "not a readable video"),
    ("empty.mp4", "not a readable video"),
    ("one_frame.mp4", "1 frames at 30 fps, fewer than the 8"),
    ("short.mp4", "12 frames at 30 fps, fewer than the 150"),
    ("missing.mp4", "no such file"),
])
def test_motion_bad_video(inputs, tmp_path, capsys, name, message):
  frames = "150" if name == "short.mp4" else "8"
  code, err = _run(capsys, "motion", inputs / name, "-o", tmp_path / "S.npz",
                   "--frames", frames, "--size", "64x48", "--K", "4")
  assert code == 2
  assert message in err and err.count("\n") == 1, err
  assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--size", "64by48"], "size must be WIDTHxHEIGHT"),
    (["--K", "40"], "K must be in"),
    (["-o", "{tmp}/S.txt"], "must end in .npz"),
])
def test_motion_bad_arguments(inputs, tmp_path, capsys, argv, message):
  argv = [a.format(tmp=tmp_path) for a in argv]
  if "-o" not in argv:
    argv += ["-o", str(tmp_path / "S.npz")]
  code, err = _run(capsys, "motion", inputs / "short.mp4", "--frames", "8", "--K", "4", *argv)
  assert code == 2 and message in err, err
  assert list(tmp_path.iterdir()) == []


def test_prepare_bad_inputs(inputs, tmp_path, capsys):
  code, err = _run(capsys, "prepare", tmp_path / "nope", "-o", tmp_path / "data")
  assert code == 2 and "no such directory" in err
  (tmp_path / "empty").mkdir()
  code, err = _run(capsys, "prepare", tmp_path / "empty", "-o", tmp_path / "data")
  assert code == 2 and "no videos" in err
  code, err = _run(capsys, "prepare", inputs, "-o", tmp_path / "data", "--frames", "150",
                   "--size", "64x48", "--workers", "1")
  assert code == 2 and "no usable clips" in err and "too_short" in err, err
  assert not (tmp_path / "data").exists()


def test_synth_bad_arguments(tmp_path, capsys):
  # Out-of-range numbers are refused by the parser (tests/test_bad_input.py).
  code, err = _run(capsys, "synth", "-o", tmp_path / "out", "--num", "1", "--size", "3x3")
  assert code == 2 and "size" in err
  assert not (tmp_path / "out").exists()


def test_console_script_entry_point_runs():
  result = subprocess.run([sys.executable, "-m", "spectral_jax.cli", "--help"],
                          capture_output=True, text=True, check=True)
  for command in ("motion", "synth", "prepare"):
    assert command in result.stdout
