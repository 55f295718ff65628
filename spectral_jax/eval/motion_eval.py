"""A motion model measured on held-out examples: for each picture, a
spectral volume sampled by the model against the one measured on its video
(`motion_metrics`), summarised in a JSON-ready report, and the plot of the
error per frequency.

Example ``i`` is sampled with the key ``jax.random.key(seed + i)``, the key
``spectral-jax animate --seed`` uses for one picture, so its sample is the
one ``animate`` would make with that seed.
"""

from __future__ import annotations

import jax
import numpy as np
from tqdm.auto import tqdm

from spectral_jax.atomic import atomic_output
from spectral_jax.eval import motion_metrics
from spectral_jax.inference.motion_model import MotionModel, SamplingOptions
from spectral_jax.motion.normalize import denormalize
from spectral_jax.motion.spectral import frequencies_hz, from_real_layout


def evaluate(motion: MotionModel, source, *, count: int, options: SamplingOptions,
             seed: int, loop_frames: int, progress: bool = False) -> dict:
  """Metrics of ``motion`` on the first ``count`` examples of ``source``
  (a data set split, `spectral_jax.data.dataset.open_split`; its clips must
  be the model's K, T and size).

  Args:
    motion: the model; ``options`` how to sample (with ``loop_frames`` N
      set, loop self-guidance for N-frame videos).
    seed: example i is sampled from ``jax.random.key(seed + i)``.
    loop_frames: N, the video length whose loop-closure error is reported.
  Returns:
    ``end_point_error_px``; ``measured_motion_px`` and ``predicted_motion_px``
    (mean ``|D(t)|``, so the first is the error of predicting no motion);
    ``per_frequency`` lists over bins k (``frequency_hz``, ``error_px``,
    ``measured_px``, ``predicted_px``: `motion_metrics.frequency_error` and
    magnitudes); ``loop_closure`` (``frames`` N, position and velocity
    errors of the predicted and measured volumes); ``per_example`` (video,
    clip start, seed, end-point error). Means are over examples.
  """
  stats = motion.normalization
  sampler = motion.sampler(options)
  num_frames = motion.num_frames
  rows = []
  for index in tqdm(range(count), desc="evaluating", unit="example", disable=not progress):
    example = source[index]
    normalized = sampler(example["image"][None], jax.random.key(seed + index))
    predicted = from_real_layout(denormalize(np.asarray(normalized[0]), stats.scales,
                                             stats.power))
    measured = from_real_layout(np.asarray(example["spectral_volume"], np.float32))
    predicted_px = motion_metrics.displacements(predicted, num_frames)
    measured_px = motion_metrics.displacements(measured, num_frames)
    still = np.zeros_like(measured_px)
    closure = lambda volume: motion_metrics.loop_closure(volume, num_frames=num_frames,
                                                         loop_frames=loop_frames)
    rows.append({
        "video": _text(example["video"]), "clip_start": int(example["clip_start"]),
        "seed": seed + index,
        "end_point_error_px": motion_metrics.end_point_error(predicted_px, measured_px),
        "measured_motion_px": motion_metrics.end_point_error(measured_px, still),
        "predicted_motion_px": motion_metrics.end_point_error(predicted_px, still),
        "error_px": motion_metrics.frequency_error(predicted, measured),
        "measured_px": motion_metrics.frequency_magnitude(measured),
        "predicted_px": motion_metrics.frequency_magnitude(predicted),
        "predicted_closure": closure(predicted),  # (px, px per frame)
        "measured_closure": closure(measured),
    })
  mean = lambda name: np.mean([row[name] for row in rows], axis=0)
  num_freqs = len(rows[0]["error_px"])
  (predicted_px, predicted_velocity), (measured_px, measured_velocity) = (
      mean("predicted_closure"), mean("measured_closure"))
  return {
      "examples": count,
      "end_point_error_px": float(mean("end_point_error_px")),
      "measured_motion_px": float(mean("measured_motion_px")),
      "predicted_motion_px": float(mean("predicted_motion_px")),
      "per_frequency": {
          "frequency_hz": frequencies_hz(num_freqs, num_frames, motion.fps).tolist(),
          **{name: mean(name).tolist() for name in ("error_px", "measured_px", "predicted_px")},
      },
      "loop_closure": {
          "frames": loop_frames, "guided": bool(options.loop_frames),
          "predicted_px": float(predicted_px), "measured_px": float(measured_px),
          "predicted_velocity_px_per_frame": float(predicted_velocity),
          "measured_velocity_px_per_frame": float(measured_velocity),
      },
      "per_example": [{name: row[name] for name in ("video", "clip_start", "seed",
                                                    "end_point_error_px")} for row in rows],
  }


def _text(value) -> str:
  """A data set string (read back as bytes) as text."""
  return value.decode() if isinstance(value, bytes) else str(value)


def plot_frequency_error(per_frequency: dict, path, title: str) -> None:
  """Writes a PNG of the error per frequency, with the measured and
  predicted magnitudes for scale, from a report's ``per_frequency``."""
  # Figure + Agg canvas: no global backend switch (as `motion.viz`).
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  figure = Figure(figsize=(6, 4), dpi=100)
  FigureCanvasAgg(figure)
  axes = figure.add_subplot()
  hz = per_frequency["frequency_hz"]
  axes.plot(hz, per_frequency["error_px"], "o-", label="|predicted - measured|")
  axes.plot(hz, per_frequency["measured_px"], "s--", label="|measured|")
  axes.plot(hz, per_frequency["predicted_px"], "^:", label="|predicted|")
  # A log axis cannot show an all-zero curve (a still data set).
  if all(v > 0 for name in ("error_px", "measured_px") for v in per_frequency[name]):
    axes.set_yscale("log")
  axes.set_xlabel("frequency (Hz)")
  axes.set_ylabel("mean over pixels (px)")
  axes.set_title(title)
  axes.grid(True, which="both", alpha=0.3)
  axes.legend()
  figure.tight_layout()
  with atomic_output(path) as tmp:
    figure.savefig(tmp, format="png")
