"""The TFDS data set of (picture, spectral volume) examples, and reading it.

Written as array_record with `tfds.features.Tensor` features only, so
neither writing nor reading needs TensorFlow. Layout of a prepared folder::

  DATA_DIR/spectral_volumes/1.1.0/   TFDS shards, dataset_info.json
  DATA_DIR/clip_config.json          the ClipConfig the clips were made with
  DATA_DIR/normalization.json        per-frequency scales (NormalizationStats) and
                                     the clip settings they were measured on
  DATA_DIR/abs_histogram.npz         histogram they came from (any percentile)
  DATA_DIR/report.json               videos, clips kept, clips dropped by reason
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
import tqdm

from spectral_jax.atomic import atomic_output
from spectral_jax.data.clips import ClipConfig
from spectral_jax.motion.normalize import NormalizationStats, PercentileAccumulator

NAME = "spectral_volumes"
VERSION = "1.1.0"
CLIP_CONFIG_FILE = "clip_config.json"
NORMALIZATION_FILE = "normalization.json"
HISTOGRAM_FILE = "abs_histogram.npz"
REPORT_FILE = "report.json"
# The clip settings the scales depend on: |x| in pixels grows with the frame
# size, S = rfft(D)[:K] / T depends on T, and there is one scale per bin.
SCALE_SETTINGS = ("num_frames", "width", "height", "num_freqs")


def features(config: ClipConfig) -> tfds.features.FeaturesDict:
  """The example schema; shapes follow `clips.make_example`."""
  height, width = config.height, config.width
  frames = config.num_render_frames
  tensor = tfds.features.Tensor
  # Arrays are stored as raw bytes: the default tf.Example lists would widen
  # float16 to float32 and take most of the writing time in Python.
  array = lambda shape, dtype: tensor(shape=shape, dtype=dtype, encoding="bytes")
  return tfds.features.FeaturesDict({
      "image": array((height, width, 3), np.uint8),
      "spectral_volume": array((config.num_freqs, height, width, 4), np.float16),
      "frames": array((frames, height, width, 3), np.uint8),
      "frame_times": tensor(shape=(frames,), dtype=np.int32),
      "displacements": array((frames, height, width, 2), np.float16),
      "video": tensor(shape=(), dtype=np.str_),
      "clip_start": tensor(shape=(), dtype=np.int32),
  })


class SpectralVolumes(tfds.core.GeneratorBasedBuilder):
  """Writes examples already extracted to per-clip ``.npz`` files.

  Extraction (flow, filtering, FFT) happens before, in parallel and
  resumably (`spectral_jax.data.prepare`); this builder only lays the clips
  out as a TFDS data set.
  """

  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = {
      "1.0.0": "First layout.",
      "1.1.0": "Arrays stored as raw bytes (float16 kept, 2x smaller, fast to write).",
  }

  def __init__(self, *, clip_config: ClipConfig, clip_files: dict[str, list[Path]], **kwargs):
    self._clip_config = clip_config
    self._clip_files = clip_files
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Reference frames and spectral volumes of natural oscillating motion.",
        features=features(self._clip_config),
        metadata=tfds.core.MetadataDict(clip_config=self._clip_config.to_json()),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded.
    return {split: self._generate_examples(files)
            for split, files in self._clip_files.items() if files}

  def _generate_examples(self, files):
    for path in tqdm.tqdm(files, desc="writing data set", unit="clip", leave=False):
      with np.load(path) as clip:
        example = {name: clip[name] for name in clip.files}
      example["video"] = str(example["video"])
      yield f"{example['video']}:{int(example['clip_start'])}", example


def builder_dir(data_dir) -> Path:
  return Path(data_dir) / NAME / VERSION


def is_prepared(data_dir) -> bool:
  return (builder_dir(data_dir) / "dataset_info.json").is_file()


def check_prepared(data_dir) -> None:
  """Raises FileNotFoundError, saying what to run, unless `is_prepared`."""
  if not is_prepared(data_dir):
    raise FileNotFoundError(f"{data_dir}: no prepared data set (run `spectral-jax prepare`)")


def open_split(data_dir, split: str = "train"):
  """Random-access source of one split's examples (dicts of NumPy arrays;
  ``video`` comes back as bytes)."""
  check_prepared(data_dir)
  builder = tfds.builder_from_directory(str(builder_dir(data_dir)))
  if split not in builder.info.splits:
    raise KeyError(f"{data_dir}: no split {split!r}; has {sorted(builder.info.splits)}")
  return builder.as_data_source(split)


def load_clip_config(data_dir) -> ClipConfig:
  return ClipConfig.from_json(json.loads((Path(data_dir) / CLIP_CONFIG_FILE).read_text()))


def save_normalization(data_dir, stats: NormalizationStats, config: ClipConfig) -> None:
  """Writes ``normalization.json``: ``stats`` and the `SCALE_SETTINGS` of
  ``config``, the clips they were measured on (`load_normalization` checks
  them)."""
  payload = {**stats.to_json(),
             "clip": {name: getattr(config, name) for name in SCALE_SETTINGS}}
  with atomic_output(Path(data_dir) / NORMALIZATION_FILE) as tmp:
    tmp.write_text(json.dumps(payload, indent=2) + "\n")


def load_normalization(data_dir, percentile: float | None = None) -> NormalizationStats:
  """The data set's per-frequency scales for ``percentile``.

  Args:
    data_dir: a prepared data set.
    percentile: of ``|x|`` per bin; None or the one the data set was
      prepared with: the saved scales. Another one: recomputed from the
      saved histogram of the training split, exactly what `prepare` with
      that percentile would have saved.

  Raises:
    ValueError: the saved scales (or histogram) were measured on other clips
      (T, size, K) than ``clip_config.json`` describes, or another
      percentile is asked of a data set that kept no histogram.
  """
  data_dir = Path(data_dir)
  clip = load_clip_config(data_dir)
  path = data_dir / NORMALIZATION_FILE
  saved = json.loads(path.read_text())
  stats = NormalizationStats.from_json(saved)
  # Data sets prepared before the settings were saved tell K only.
  measured_on = saved.get("clip", {"num_freqs": len(stats.scales)})
  _check_measured_on(path, measured_on, clip)
  if percentile is None or float(percentile) == stats.percentile:
    return stats
  histogram_path = data_dir / HISTOGRAM_FILE
  if not histogram_path.is_file():
    raise ValueError(
        f"{data_dir} was prepared with percentile {stats.percentile:g} and keeps no "
        f"{HISTOGRAM_FILE} to take percentile {float(percentile):g} from: prepare it again "
        f"with --percentile {float(percentile):g}, or train with percentile "
        f"{stats.percentile:g} (--config.data.percentile={stats.percentile:g})")
  histogram = PercentileAccumulator.load(histogram_path)
  # The histogram must be the one the saved scales came from: same bins,
  # same number of values.
  num_values = int(histogram.counts[0].sum())
  if histogram.num_freqs != clip.num_freqs or num_values != stats.num_values:
    raise ValueError(
        f"{histogram_path} holds {num_values} values in K={histogram.num_freqs} bins, but "
        f"{path.name} was measured on {stats.num_values} values in K={clip.num_freqs} bins: "
        "the two come from different preparations; prepare the data set again")
  return NormalizationStats.from_accumulator(histogram, percentile)


def _check_measured_on(path: Path, measured_on: dict, clip: ClipConfig) -> None:
  """Raises ValueError if the clips ``path`` was measured on differ from
  ``clip`` in any setting the scales depend on."""
  differ = {name: value for name, value in measured_on.items()
            if name in SCALE_SETTINGS and value != getattr(clip, name)}
  if differ:
    def describe(settings):
      return ", ".join(f"{name}={value}" for name, value in settings.items())
    raise ValueError(
        f"{path} was measured on clips with {describe(differ)}, but the data set's "
        f"{CLIP_CONFIG_FILE} has {describe({n: getattr(clip, n) for n in differ})}: the two "
        "come from different preparations; prepare the data set again")
