"""`spectral-jax` commands: bad input gives one clear line, exit 2, no output;
the clip settings come from the data config (configs/data.py)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spectral_jax import cli, config_base
from spectral_jax.data import clips, defaults, prepare, video
from spectral_jax.motion import flow

DATA_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "data.py"


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


def test_building_the_parser_never_imports_jax():
  """The parser imports every command's module for its options: their
  top-level imports must stay light, the heavy ones in ``run``."""
  probe = ("import spectral_jax.cli, sys; spectral_jax.cli.build_parser(); "
           "print(sorted(m for m in sys.modules if m.split('.')[0] in "
           "('jax', 'flax', 'orbax', 'tensorflow_datasets', 'grain')))")
  result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
  assert result.stdout.strip() == "[]", result.stdout


def _data_config(variant: str = "paper") -> dict:
  return config_base.load_config_file(DATA_CONFIG, variant).to_dict()


def test_commands_default_to_the_data_config():
  """Every setting of `prepare` not given is configs/data.py's paper one;
  `motion` and `synth` cut clips of the same by default."""
  paper = _data_config()
  parsed = vars(cli.parse_args(["prepare", "videos", "-o", "data"]))
  assert {name: parsed[name] for name in paper} == paper
  clip = ("frames", "fps", "size", "K")
  parsed = vars(cli.parse_args(["motion", "clip.mp4", "-o", "S.npz"]))
  assert {name: parsed[name] for name in clip + ("preset", "fb_check")} == {
      name: paper[name] for name in clip + ("preset", "fb_check")}
  parsed = vars(cli.parse_args(["synth", "-o", "out", "--num", "1"]))
  assert {name: parsed[name] for name in clip} == {name: paper[name] for name in clip}


@pytest.fixture
def prepared_with(monkeypatch, tmp_path):
  """Runs `spectral-jax prepare` with the arguments given; returns the
  `ClipConfig` and `PrepareOptions` it prepared with (nothing is prepared)."""
  used = {}

  def fake_prepare(videos_dir, data_dir, config, options):
    used.update(config=config, options=options)
    return {"clips": {}, "dropped": {}, "failed_videos": []}

  monkeypatch.setattr(prepare, "prepare", fake_prepare)

  def run(*argv):
    assert cli.main(["prepare", str(tmp_path), "-o", str(tmp_path / "data"), *argv]) == 0
    return used["config"], used["options"]

  return run


def _write_data_config(path, settings: dict):
  path.write_text("import ml_collections\n\n\ndef get_config():\n"
                  f"  return ml_collections.ConfigDict({settings!r})\n")
  return path


def test_prepare_takes_its_settings_from_the_data_config(prepared_with, tmp_path):
  """Every setting of a data config reaches the clips and the run; options
  given override it; settings it leaves out are the paper's."""
  settings = {"frames": 48, "fps": 24.0, "size": "96x64", "K": 6, "preset": "fast",
              "fb_check": True, "stride": 5, "render_frames": 3, "static_px": 0.5,
              "camera_px": 2.0, "camera_fraction": 0.8, "scene_cut": 0.4, "percentile": 90.0,
              "test_fraction": 0.2, "workers": 3, "keep_cache": True}
  # All of them, none the paper's.
  assert settings.keys() == _data_config().keys()
  assert not {name for name, value in _data_config().items() if settings[name] == value}
  config = _write_data_config(tmp_path / "all.py", settings)
  clip, options = prepared_with("--config", str(config), "--stride", "3", "--K", "4")
  assert clip == clips.ClipConfig(
      num_frames=48, fps=24.0, width=96, height=64, num_freqs=4, stride=3,
      num_render_frames=3, static_px=0.5, camera_px=2.0, camera_fraction=0.8, scene_cut=0.4,
      flow=flow.FlowConfig(preset="fast", forward_backward=True))
  assert options == prepare.PrepareOptions(workers=3, percentile=90.0, test_fraction=0.2,
                                           keep_cache=True)
  config = _write_data_config(tmp_path / "one.py", {"percentile": 90.0})
  assert prepared_with("--config", str(config)) == (
      clips.ClipConfig(), prepare.PrepareOptions(percentile=90.0))
  paper = _data_config()
  _, options = prepared_with("--config", f"{DATA_CONFIG}:cvpr")
  assert options.percentile == _data_config("cvpr")["percentile"] != paper["percentile"]
  clip, _ = prepared_with("--config", f"{DATA_CONFIG}:hires")
  assert f"{clip.width}x{clip.height}" == _data_config("hires")["size"] != paper["size"]


def test_prepare_follows_a_change_of_the_papers_settings(prepared_with, monkeypatch):
  """configs/data.py and `prepare` without --config take the paper's
  settings from one place (`data/defaults.py`): a change there reaches both."""
  monkeypatch.setattr(defaults, "STRIDE", 7)
  monkeypatch.setattr(defaults, "PERCENTILE", 93.0)
  monkeypatch.setattr(defaults, "SCENE_CUT", 0.25)
  monkeypatch.setattr(defaults, "VARIANT_CLIPS", {"paper": {"num_frames": 64}})
  paper = _data_config()
  assert (paper["stride"], paper["percentile"], paper["scene_cut"], paper["frames"]) == (
      7, 93.0, 0.25, 64)
  clip, options = prepared_with()
  assert (clip.stride, options.percentile, clip.scene_cut, clip.num_frames) == (7, 93.0, 0.25, 64)


def test_prepare_refuses_a_setting_it_does_not_have(tmp_path, capsys):
  config = _write_data_config(tmp_path / "typo.py", {"stirde": 5})
  code, err = _run(capsys, "prepare", tmp_path, "-o", tmp_path / "data", "--config", config)
  assert code == 2 and "['stirde'] are not options of prepare" in err, err
  assert not (tmp_path / "data").exists()
