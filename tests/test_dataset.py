"""The TFDS data set built from synthetic videos, end to end on small clips."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spectral_jax import cli, config_base
from spectral_jax.apps import prepare as prepare_app
from spectral_jax.data import clips, dataset, pipeline, prepare
from spectral_jax.data import video as video_io
from spectral_jax.motion import flow
from spectral_jax.motion.spectral import from_real_layout

CONFIG = clips.ClipConfig(num_frames=32, fps=30.0, width=64, height=48, num_freqs=8,
                          stride=8, num_render_frames=3, static_px=0.05)
OPTIONS = prepare.PrepareOptions(workers=1, test_fraction=0.0)
DATA_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "data.py"


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
  root = tmp_path_factory.mktemp("videos")
  assert cli.main(["synth", "-o", str(root), "--num", "3", "--frames", "48",
                   "--size", "64x48", "--K", "8"]) == 0
  (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 500)
  return root


@pytest.fixture(scope="module")
def data_dir(videos, tmp_path_factory):
  out = tmp_path_factory.mktemp("data") / "set"
  prepare.prepare(videos, out, CONFIG, OPTIONS, progress=False)
  return out


def test_report_counts_clips_and_skips_the_corrupt_video(data_dir):
  report = json.loads((data_dir / dataset.REPORT_FILE).read_text())
  # 48 frames, clips of 32 every 8 frames: starts 0, 8, 16 per video.
  assert report["clips"]["train"] + sum(report["dropped"].values()) == 9
  assert report["clips"]["train"] >= 6
  assert [f["video"] for f in report["failed_videos"]] == ["corrupt.mp4"]
  assert not (data_dir / prepare.CACHE_DIR).exists()


def test_reads_back_in_a_fresh_process(data_dir):
  script = f"""
import json, sys
from spectral_jax.data import dataset
source = dataset.open_split({str(data_dir)!r}, "train")
example = source[0]
print(json.dumps({{"n": len(source), "tf": "tensorflow" in sys.modules,
                  "shapes": {{k: [list(v.shape), str(v.dtype)] for k, v in example.items()
                              if getattr(v, "ndim", 0)}},
                  "scalars": {{k: type(example[k]).__name__ for k in ("video", "clip_start")}}}}))
"""
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
  info = json.loads(result.stdout.strip().splitlines()[-1])
  assert not info["tf"]
  assert info["shapes"] == {
      "image": [[48, 64, 3], "uint8"],
      "spectral_volume": [[8, 48, 64, 4], "float16"],
      "frames": [[3, 48, 64, 3], "uint8"],
      "frame_times": [[3], "int32"],
      "displacements": [[3, 48, 64, 2], "float16"],
  }
  assert info["scalars"]["video"] == "bytes"
  assert info["scalars"]["clip_start"] in ("int", "int32")


def test_examples_hold_the_clip_they_came_from(data_dir, videos):
  source = dataset.open_split(data_dir, "train")
  example = source[len(source) - 1]
  key, start = example["video"].decode(), int(example["clip_start"])
  times = example["frame_times"]
  assert np.all(np.diff(times) > 0) and times.min() >= 1 and times.max() < 32
  np.testing.assert_array_equal(times, clips.render_frame_times(key, start, CONFIG))
  decoded = np.stack(list(video_io.iter_frames(videos / key, fps=30.0, size=(64, 48))))
  np.testing.assert_array_equal(example["image"], decoded[start])
  np.testing.assert_array_equal(example["frames"], decoded[start + times])
  volume = from_real_layout(example["spectral_volume"].astype(np.float32))
  assert np.isfinite(volume).all() and np.abs(volume[1:]).max() > 0.01
  assert np.isfinite(example["displacements"]).all()


def test_normalization_statistics_equal_numpy_over_the_train_split(data_dir):
  source = dataset.open_split(data_dir, "train")
  values = np.stack([source[i]["spectral_volume"].astype(np.float64) for i in range(len(source))])
  per_freq = np.abs(values).transpose(1, 0, 2, 3, 4).reshape(8, -1)
  stats = dataset.load_normalization(data_dir)
  assert stats.percentile == 97.0 and stats.num_values == per_freq.shape[1]
  np.testing.assert_allclose(stats.scales, np.percentile(per_freq, 97, axis=1), rtol=1e-3)
  assert dataset.load_clip_config(data_dir) == CONFIG


def test_two_processes_shards_are_disjoint_and_cover(data_dir):
  source = dataset.open_split(data_dir, "train")
  shards = [pipeline.ShardedBatches(source, global_batch_size=2, seed=7, process_index=p,
                                    process_count=2, num_epochs=1,
                                    transform=pipeline.normalized_spectral(
                                        dataset.load_normalization(data_dir)))
            for p in range(2)]
  seen = []
  for shard in shards:
    keys = []
    for batch in shard:
      assert batch["spectral_volume"].shape == (1, 8, 48, 64, 4)
      assert batch["spectral_volume"].dtype == np.float32
      keys += [f"{v.decode()}:{s}" for v, s in zip(batch["video"], batch["clip_start"])]
    seen.append(keys)
  assert not set(seen[0]) & set(seen[1])
  assert len(seen[0]) == len(seen[1]) == len(source) // 2
  assert len(set(seen[0]) | set(seen[1])) == 2 * (len(source) // 2)


def test_resumes_without_redoing_finished_videos(videos, tmp_path, monkeypatch):
  out = tmp_path / "set"
  original = prepare.extract_video
  calls = []

  def counting(*args):
    calls.append(args[1])
    return original(*args)

  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(prepare, "extract_video", counting)
  monkeypatch.setattr(dataset.SpectralVolumes, "download_and_prepare", interrupted)
  with pytest.raises(KeyboardInterrupt):
    prepare.prepare(videos, out, CONFIG, OPTIONS, progress=False)
  assert sorted(calls) == ["corrupt.mp4", "scene_00000.mp4", "scene_00001.mp4", "scene_00002.mp4"]
  assert not dataset.is_prepared(out)

  calls.clear()
  monkeypatch.undo()
  monkeypatch.setattr(prepare, "extract_video", counting)
  report = prepare.prepare(videos, out, CONFIG, OPTIONS, progress=False)
  assert calls == ["corrupt.mp4"]  # Only the unreadable one is tried again.
  assert dataset.is_prepared(out) and report["clips"]["train"] >= 6

  # The same command once more: nothing to do. Other settings: refused.
  assert prepare.prepare(videos, out, CONFIG, OPTIONS, progress=False)["already_prepared"]
  with pytest.raises(prepare.PrepareError, match="other videos or settings"):
    prepare.prepare(videos, out, CONFIG, prepare.PrepareOptions(workers=1, percentile=95.0),
                    progress=False)


def test_split_assignment_is_stable_by_video():
  keys = [f"v{i}.mp4" for i in range(400)]
  test = [k for k in keys if prepare.split_of(k, 0.25) == "test"]
  assert 70 < len(test) < 130
  assert test == [k for k in keys if prepare.split_of(k, 0.25) == "test"]
  assert all(prepare.split_of(k, 0.0) == "train" for k in keys)


def test_filters_drop_static_camera_motion_and_cuts():
  rng = np.random.default_rng(0)
  config = clips.ClipConfig(num_frames=8, width=32, height=32, num_freqs=4, stride=4)
  still = np.repeat(rng.integers(0, 255, (1, 32, 32, 3), dtype=np.uint8), 8, axis=0)
  assert clips.make_example(still, config, video_key="v", start=0) == (None, clips.STATIC)
  texture = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
  import cv2
  texture = cv2.GaussianBlur(texture, (0, 0), 1.5)
  panning = np.stack([texture[8:40, 8 + 2 * t:40 + 2 * t] for t in range(8)])
  assert clips.make_example(panning, config, video_key="v", start=0) == (None, clips.CAMERA_MOTION)
  other_shot = np.full((32, 32, 3), (250, 10, 10), np.uint8)
  stream = [still[0]] * 6 + [other_shot] * 6
  cuts = [(start, has_cut) for start, _, has_cut in clips.windows(iter(stream), config)]
  assert cuts == [(0, True), (4, True)]
  disp, _ = flow.displacements(panning)
  assert flow.trajectory_magnitude(disp).mean() > 2


def test_training_source_checks_the_clip_shape(data_dir):
  import ml_collections

  from spectral_jax.data import sources
  config = ml_collections.ConfigDict({"dir": str(data_dir), "width": CONFIG.width,
                                      "height": CONFIG.height, "num_freqs": CONFIG.num_freqs})
  assert len(sources.open_source(config, "train")) > 0
  config.num_freqs = CONFIG.num_freqs + 1
  with pytest.raises(ValueError, match="num_freqs"):
    sources.open_source(config, "train")


def _data_config(data_dir, **overrides):
  import ml_collections
  return ml_collections.ConfigDict({"dir": str(data_dir), "width": CONFIG.width,
                                    "height": CONFIG.height, "num_freqs": CONFIG.num_freqs,
                                    "percentile": 97.0, **overrides})


def _train_magnitudes(data_dir) -> np.ndarray:
  """float64 ``[K, N]``: every |x| of the train split, per bin."""
  source = dataset.open_split(data_dir, "train")
  values = np.stack([source[i]["spectral_volume"].astype(np.float64) for i in range(len(source))])
  return np.abs(values).transpose(1, 0, 2, 3, 4).reshape(CONFIG.num_freqs, -1)


def test_another_percentile_is_taken_from_the_saved_histogram(data_dir, videos, tmp_path):
  from spectral_jax.data import sources
  stats = sources.normalization(_data_config(data_dir, percentile=90.0))
  assert stats.percentile == 90.0
  np.testing.assert_allclose(stats.scales, np.percentile(_train_magnitudes(data_dir), 90, axis=1),
                             rtol=1e-3)
  saved = dataset.load_normalization(data_dir)
  assert saved.percentile == 97.0 and np.all(stats.scales < saved.scales)
  # Exactly what preparing with that percentile saves.
  other = tmp_path / "p90"
  prepare.prepare(videos, other, CONFIG, prepare.PrepareOptions(workers=1, test_fraction=0.0,
                                                                percentile=90.0), progress=False)
  np.testing.assert_array_equal(stats.scales, dataset.load_normalization(other).scales)
  assert stats.num_values == dataset.load_normalization(other).num_values


@pytest.mark.parametrize("override, message", [
    ({"num_freqs": CONFIG.num_freqs + 1}, "K=8; the config asks for 64x48, K=9"),
    ({"width": 96}, "holds 64x48 clips with K=8; the config asks for 96x48, K=8"),
], ids=["K", "size"])
def test_normalization_refuses_clips_other_than_the_config(data_dir, override, message):
  from spectral_jax.data import sources
  with pytest.raises(ValueError, match=message) as error:
    sources.normalization(_data_config(data_dir, **override))
  assert "--config.data.width/height/num_freqs or prepare another data set" in str(error.value)


def _copy_small_files(data_dir, out, *names):
  """A data set folder with some of ``data_dir``'s small files and its TFDS
  metadata (enough for `is_prepared`), not its shards."""
  import shutil
  out.mkdir()
  for name in names:
    shutil.copy(data_dir / name, out / name)
  info = dataset.builder_dir(out)
  info.mkdir(parents=True)
  shutil.copy(dataset.builder_dir(data_dir) / "dataset_info.json", info)
  return out


def test_scales_measured_on_other_clips_are_refused(data_dir, tmp_path):
  out = _copy_small_files(data_dir, tmp_path / "set", dataset.NORMALIZATION_FILE,
                          dataset.HISTOGRAM_FILE)
  # clip_config.json of a preparation with longer clips (other T).
  (out / dataset.CLIP_CONFIG_FILE).write_text(
      json.dumps(dataclasses.replace(CONFIG, num_frames=40).to_json()))
  with pytest.raises(ValueError, match=r"clips with num_frames=32, but the data set's "
                     r"clip_config.json has num_frames=40: .* prepare the data set again"):
    dataset.load_normalization(out)


def test_old_data_set_without_histogram_refuses_another_percentile(data_dir, tmp_path):
  from spectral_jax.data import sources
  out = _copy_small_files(data_dir, tmp_path / "old", dataset.CLIP_CONFIG_FILE)
  # As written before the clip settings were saved beside the scales.
  saved = json.loads((data_dir / dataset.NORMALIZATION_FILE).read_text())
  del saved["clip"]
  (out / dataset.NORMALIZATION_FILE).write_text(json.dumps(saved))
  np.testing.assert_array_equal(sources.normalization(_data_config(out)).scales,
                                dataset.load_normalization(data_dir).scales)
  with pytest.raises(ValueError, match=r"prepared with percentile 97 and keeps no "
                     r"abs_histogram.npz to take percentile 95 from: prepare it again with "
                     r"--percentile 95, or .* \(--config.data.percentile=97\)"):
    sources.normalization(_data_config(out, percentile=95.0))
  # Its K is still checked against its clips.
  saved["scales"] = saved["scales"][:-1]
  (out / dataset.NORMALIZATION_FILE).write_text(json.dumps(saved))
  with pytest.raises(ValueError, match="clips with num_freqs=7, but .* has num_freqs=8"):
    sources.normalization(_data_config(out))


def test_a_histogram_from_another_preparation_is_refused(data_dir, tmp_path):
  from spectral_jax.motion.normalize import PercentileAccumulator
  out = _copy_small_files(data_dir, tmp_path / "set", dataset.NORMALIZATION_FILE,
                          dataset.CLIP_CONFIG_FILE)
  histogram = PercentileAccumulator.load(data_dir / dataset.HISTOGRAM_FILE)
  histogram.merge(histogram).save(out / dataset.HISTOGRAM_FILE)  # Twice the values.
  assert dataset.load_normalization(out, 97.0).percentile == 97.0  # Not needed: not read.
  with pytest.raises(ValueError, match="different preparations"):
    dataset.load_normalization(out, 95.0)


def test_clip_and_prepare_defaults_are_the_data_configs():
  """`ClipConfig` and `PrepareOptions` default to what `prepare` makes of
  configs/data.py's paper config: one place sets the paper's data."""
  paper = config_base.load_config_file(DATA_CONFIG, "paper")
  assert prepare_app.settings(paper) == (clips.ClipConfig(), prepare.PrepareOptions())


@pytest.mark.parametrize("variant", ["tiny", "paper", "hires"])
def test_training_configs_train_on_the_data_configs_clips(variant):
  """The training variants' data (`config_base`) is the clips configs/data.py
  prepares for the variant of the same name, normalized alike."""
  clip = config_base.load_config_file(DATA_CONFIG, variant)
  data = config_base.base_config("vae", variant).data
  assert (f"{data.width}x{data.height}", data.num_freqs, data.percentile) == (
      clip.size, clip.K, clip.percentile)
  assert (data.synthetic.num_frames, data.synthetic.fps) == (clip.frames, clip.fps)
