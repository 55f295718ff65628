"""`spectral-jax prepare`: a folder of videos → a TFDS data set + statistics.

Two phases:

1. Extraction, one task per video on a pool of worker processes: decode,
   cut into clips, flow, filter, FFT; each finished video lands atomically in
   ``DATA_DIR/.cache/<config>/<video>/`` (one ``.npz`` per clip, the video's
   ``|x|`` histogram and a summary). An interrupted run is resumed by running
   the same command again: finished videos are not redone. A video that
   cannot be read is reported and skipped; one that can be read only in
   part (a truncated file) is used, with a warning.
2. Writing: normalization statistics from the training videos' merged
   histograms, then the TFDS data set from the cached clips; the cache is
   removed at the end.

Clips are assigned to ``train`` or ``test`` by video, never splitting one
video's overlapping clips across both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import io
import json
import multiprocessing
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
import tqdm

from spectral_jax.atomic import atomic_output
from spectral_jax.data import clips as clips_lib
from spectral_jax.data import dataset, defaults
from spectral_jax.data import video as video_io
from spectral_jax.motion.normalize import NormalizationStats, PercentileAccumulator

CACHE_DIR = ".cache"
SUMMARY_FILE = "summary.json"


class PrepareError(ValueError):
  """Preparation cannot go on; the message is meant for the user."""


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
  """Settings of a preparation run beyond what a clip is.

  Attributes:
    workers: extraction processes (one video each at a time).
    percentile: of ``|x|`` per frequency for the normalization scale.
    test_fraction: share of videos held out as the ``test`` split.
    keep_cache: keep the extracted clips after the data set is written.

  Defaults are the paper's (`defaults`).
  """
  workers: int = defaults.WORKERS
  percentile: float = defaults.PERCENTILE
  test_fraction: float = defaults.TEST_FRACTION
  keep_cache: bool = False


def video_key(videos_dir: Path, path: Path) -> str:
  """The video's name in the data set: its path relative to the folder."""
  return path.relative_to(videos_dir).as_posix()


def split_of(key: str, test_fraction: float) -> str:
  """``"test"`` for a stable ``test_fraction`` of video names, else ``"train"``."""
  digest = hashlib.sha256(key.encode()).digest()
  return "test" if int.from_bytes(digest[:8], "little") / 2.0**64 < test_fraction else "train"


def _fingerprint(payload) -> str:
  return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _cache_entry(cache_dir: Path, path: Path, key: str) -> Path:
  """A video's cache folder; a changed file (size, mtime) gets a new one."""
  stat = path.stat()
  return cache_dir / _fingerprint([key, stat.st_size, stat.st_mtime_ns])


def extract_video(path: Path, key: str, entry: Path, config: clips_lib.ClipConfig) -> dict:
  """Phase 1 for one video; runs in a worker. Returns its summary (with an
  ``error`` message instead if the video cannot be read; with ``warnings``
  if it could be read only in part)."""
  partial = entry.with_name(entry.name + ".partial")
  shutil.rmtree(partial, ignore_errors=True)
  partial.mkdir(parents=True)
  histogram = PercentileAccumulator.zeros(config.num_freqs)
  summary = {"video": key, "kept": 0, "dropped": dict.fromkeys(clips_lib.DROP_REASONS, 0)}
  try:
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always", video_io.VideoWarning)
      for start, example, reason in clips_lib.video_examples(path, config, video_key=key):
        if example is None:
          summary["dropped"][reason] += 1
          continue
        histogram.update(example["spectral_volume"])
        np.savez(partial / f"clip_{start:07d}.npz", **example)
        summary["kept"] += 1
    _pass_on_other_warnings(caught)
    notes = [str(w.message) for w in caught if issubclass(w.category, video_io.VideoWarning)]
    if notes:
      summary["warnings"] = notes
    histogram.save(partial / dataset.HISTOGRAM_FILE)
    (partial / SUMMARY_FILE).write_text(json.dumps(summary))
  except video_io.VideoError as error:
    shutil.rmtree(partial, ignore_errors=True)
    return {"video": key, "error": str(error)}
  except BaseException:
    # A full disk, say: free what this video took; the run stops.
    shutil.rmtree(partial, ignore_errors=True)
    raise
  shutil.rmtree(entry, ignore_errors=True)
  partial.rename(entry)
  return summary


def _pass_on_other_warnings(caught) -> None:
  """Re-issues the warnings `catch_warnings` recorded that are not
  `VideoWarning`s, which `extract_video` reports itself."""
  for w in caught:
    if not issubclass(w.category, video_io.VideoWarning):
      warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _extract_task(args):
  return extract_video(*args)


def prepare(videos_dir, data_dir, config: clips_lib.ClipConfig,
            options: PrepareOptions = PrepareOptions(), *, progress: bool = True) -> dict:
  """Builds the data set in ``data_dir`` from the videos under ``videos_dir``.

  Returns the report (also written to ``data_dir/report.json``).
  Raises:
    PrepareError: no videos, a data set of other settings already there, no
      clip survived, or the disk filled up (nothing is then left under a
      final name; the videos extracted so far are kept for the next run).
  """
  try:
    return _prepare(Path(videos_dir), Path(data_dir), config, options, progress)
  except OSError as error:
    if error.errno not in (errno.ENOSPC, errno.EDQUOT):
      raise
    # The file a write failed on is often not named (a plain write() does
    # not say); data_dir is where everything goes.
    where = f" (writing {error.filename})" if error.filename else ""
    raise PrepareError(
        f"{data_dir}: no space left on the device{where}; free some and run the same "
        "command again: the videos extracted so far are not redone") from error


def _prepare(videos_dir: Path, data_dir: Path, config: clips_lib.ClipConfig,
             options: PrepareOptions, progress: bool) -> dict:
  try:
    paths = video_io.list_videos(videos_dir)
  except video_io.VideoError as error:
    raise PrepareError(str(error)) from None
  if not paths:
    raise PrepareError(f"{videos_dir}: no videos ({', '.join(video_io.VIDEO_SUFFIXES)})")
  keys = [video_key(videos_dir, p) for p in paths]
  settings = {"clip_config": config.to_json(), "percentile": options.percentile,
              "test_fraction": options.test_fraction, "videos": keys}
  if dataset.is_prepared(data_dir):
    return _existing_report(data_dir, settings)

  cache_dir = data_dir / CACHE_DIR / _fingerprint(config.to_json())
  entries = [_cache_entry(cache_dir, p, k) for p, k in zip(paths, keys)]
  summaries = {k: json.loads((e / SUMMARY_FILE).read_text())
               for k, e in zip(keys, entries) if (e / SUMMARY_FILE).is_file()}
  pending = [(p, k, e, config) for p, k, e in zip(paths, keys, entries) if k not in summaries]
  failures = _extract_all(pending, summaries, options.workers, progress,
                          initial=len(summaries), total=len(paths))

  usable = [k for k in keys if k in summaries]
  clip_files = {"train": [], "test": []}
  histograms = {"train": PercentileAccumulator.zeros(config.num_freqs),
                "test": PercentileAccumulator.zeros(config.num_freqs)}
  for key, entry in zip(keys, entries):
    if key not in summaries:
      continue
    split = split_of(key, options.test_fraction)
    clip_files[split] += sorted(entry.glob("clip_*.npz"))
    histograms[split] = histograms[split].merge(
        PercentileAccumulator.load(entry / dataset.HISTOGRAM_FILE))
  report = _report(settings, [summaries[k] for k in usable], failures, clip_files)
  if not any(clip_files.values()):
    # Nothing worth resuming: leave no trace of this run.
    shutil.rmtree(data_dir / CACHE_DIR, ignore_errors=True)
    if data_dir.is_dir() and not any(data_dir.iterdir()):
      data_dir.rmdir()
    raise PrepareError(f"no usable clips in {videos_dir}: {_describe(report)}")

  # Statistics come from the training clips only; a data set whose every
  # video was held out falls back to all clips.
  stats_source = histograms["train"] if clip_files["train"] else histograms["test"]
  stats = NormalizationStats.from_accumulator(stats_source, options.percentile)
  stats_source.save(data_dir / dataset.HISTOGRAM_FILE)
  dataset.save_normalization(data_dir, stats, config)
  _write_json(data_dir / dataset.CLIP_CONFIG_FILE, config.to_json())
  _write_json(data_dir / dataset.REPORT_FILE, report)
  # TFDS renames its finished folder into place last, so a data set that
  # `is_prepared` always has the files above beside it.
  builder = dataset.SpectralVolumes(clip_config=config, clip_files=clip_files,
                                    data_dir=str(data_dir), file_format="array_record")
  tfds.disable_progress_bar()  # One bar per phase, ours.
  # TFDS prints download banners to stdout that say nothing true here.
  with contextlib.redirect_stdout(io.StringIO()):
    builder.download_and_prepare(download_dir=str(data_dir / CACHE_DIR / "tfds_downloads"))
  if not options.keep_cache:
    shutil.rmtree(data_dir / CACHE_DIR, ignore_errors=True)
  return report


def _extract_all(pending, summaries: dict, workers: int, progress: bool, *,
                 initial: int, total: int) -> list[dict]:
  """Runs `extract_video` over ``pending``; fills ``summaries``, returns the
  failures."""
  failures = []
  kept = sum(s["kept"] for s in summaries.values())
  # Workers are spawned, not forked: the parent may hold threads (TFDS,
  # imageio readers) that must not be copied mid-state.
  context = multiprocessing.get_context("spawn")
  # The bar is closed whatever happens, so that an error message starts its
  # own line.
  with (tqdm.tqdm(total=total, initial=initial, unit="video", disable=not progress,
                  desc="extracting clips") as bar,
        context.Pool(max(1, workers)) if pending and workers > 1 else _InlinePool() as pool):
    bar.set_postfix(clips=kept, failed=0)
    for summary in pool.imap_unordered(_extract_task, pending):
      if "error" in summary:
        failures.append(summary)
        tqdm.tqdm.write(f"skipped {summary['error']}", file=sys.stderr)
      else:
        summaries[summary["video"]] = summary
        kept += summary["kept"]
        for note in summary.get("warnings", []):
          tqdm.tqdm.write(f"warning: {note}", file=sys.stderr)
      bar.update(1)
      bar.set_postfix(clips=kept, failed=len(failures))
  return failures


class _InlinePool:
  """The Pool interface in-process, for one worker (no spawn cost)."""

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False

  def imap_unordered(self, fn, items):
    return map(fn, items)


def _report(settings: dict, summaries: list[dict], failures: list[dict], clip_files) -> dict:
  dropped = dict.fromkeys(clips_lib.DROP_REASONS, 0)
  for summary in summaries:
    for reason, count in summary["dropped"].items():
      dropped[reason] += count
  return {
      **settings,
      "clips": {split: len(files) for split, files in clip_files.items()},
      "dropped": dropped,
      "failed_videos": failures,
      "warnings": [note for summary in summaries for note in summary.get("warnings", [])],
      "per_video": summaries,
  }


def _describe(report: dict) -> str:
  dropped = ", ".join(f"{n} {reason}" for reason, n in report["dropped"].items() if n)
  failed = len(report["failed_videos"])
  return f"clips dropped: {dropped or 'none'}; unreadable videos: {failed}"


def _existing_report(data_dir: Path, settings: dict) -> dict:
  report = json.loads((data_dir / dataset.REPORT_FILE).read_text())
  if {k: report.get(k) for k in settings} != settings:
    raise PrepareError(f"{data_dir} already holds a data set prepared from other videos "
                       "or settings; choose another output folder or delete it")
  report["already_prepared"] = True
  return report


def _write_json(path: Path, payload) -> None:
  with atomic_output(path) as tmp:
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
