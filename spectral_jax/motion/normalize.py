"""Frequency-adaptive normalization of spectral volumes (docs/DESIGN.md §1).

For each frequency bin k the scale ``c_k`` is a percentile (97 by default, 95
in the CVPR version of the paper) of ``|x|`` over every real-layout channel of
every training sample at that bin. Forward ``y = sign(x/c) sqrt(|x/c|)``,
inverse ``x = c sign(y) y^2``.

The percentile is computed streaming from a fine log-spaced histogram of
``|x|`` per bin. Histograms add, so workers, shards and resumed runs merge
exactly, and the histogram is saved with the data set so that any percentile
can be taken later without a pass over the data. Its bins are 0.035% wide in
relative terms, which bounds the error against an exact percentile.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from spectral_jax.atomic import atomic_output
from spectral_jax.motion.spectral import array_module

# |x| in pixels is binned over [LOG10_MIN, LOG10_MAX); smaller values count as
# 0 (far below anything visible), larger ones are clipped to the largest seen.
LOG10_MIN = -6.0
LOG10_MAX = 4.0
NUM_BINS = 1 << 16
# Keeps the forward transform finite for a bin whose motion is all zero.
MIN_SCALE = 1e-8


def normalize(real, scales, power: float = 0.5):
  """Real-layout spectral volume ``[..., K, H, W, 4]`` → normalized values
  ``sign(x/c_k) |x/c_k|^power``.

  Args:
    real: ``[..., K, H, W, 4]`` coefficients in pixels.
    scales: ``[K]`` per-frequency scales ``c_k`` in pixels.
    power: 0.5 is the paper's signed square root; 1 is plain scaling (the
      image-size baseline the paper compares against).
  """
  xp = array_module(real)
  scaled = real / xp.asarray(scales, real.dtype)[:, None, None, None]
  if power == 0.5:
    return xp.sign(scaled) * xp.sqrt(xp.abs(scaled))
  return xp.sign(scaled) * xp.abs(scaled) ** power


def denormalize(normalized, scales, power: float = 0.5):
  """Inverse of `normalize`: ``[..., K, H, W, 4]`` → coefficients in pixels."""
  xp = array_module(normalized)
  scales = xp.asarray(scales, normalized.dtype)[:, None, None, None]
  if power == 0.5:
    return scales * xp.sign(normalized) * normalized * normalized
  return scales * xp.sign(normalized) * xp.abs(normalized) ** (1.0 / power)


@dataclasses.dataclass
class PercentileAccumulator:
  """Streaming per-frequency histogram of ``|coefficient|``.

  Attributes:
    counts: ``[K, NUM_BINS + 1]`` int64; column 0 counts values below
      ``10**LOG10_MIN`` (treated as zero), column ``1 + i`` the i-th log bin.
    max_abs: ``[K]`` largest ``|x|`` seen per bin, pixels.
  """
  counts: np.ndarray
  max_abs: np.ndarray

  @classmethod
  def zeros(cls, num_freqs: int) -> "PercentileAccumulator":
    return cls(np.zeros((num_freqs, NUM_BINS + 1), np.int64),
               np.zeros(num_freqs, np.float64))

  @property
  def num_freqs(self) -> int:
    return self.counts.shape[0]

  def update(self, real) -> None:
    """Adds one or more real-layout volumes ``[..., K, H, W, 4]``."""
    real = np.asarray(real)
    if real.shape[-4] != self.num_freqs:
      raise ValueError(f"expected K={self.num_freqs} bins, got shape {real.shape}")
    per_freq = np.moveaxis(real, -4, 0).reshape(self.num_freqs, -1)
    for k, values in enumerate(np.abs(per_freq.astype(np.float64))):
      self.counts[k] += np.bincount(_bin_index(values), minlength=NUM_BINS + 1)
      if values.size:
        self.max_abs[k] = max(self.max_abs[k], float(values.max()))

  def merge(self, other: "PercentileAccumulator") -> "PercentileAccumulator":
    return PercentileAccumulator(self.counts + other.counts,
                                 np.maximum(self.max_abs, other.max_abs))

  def percentile(self, q: float) -> np.ndarray:
    """``[K]`` q-th percentile of ``|x|`` per bin, as `np.percentile` defines it
    (linear interpolation between order statistics)."""
    return np.array([self._percentile_one(k, q) for k in range(self.num_freqs)])

  def _percentile_one(self, k: int, q: float) -> float:
    counts = self.counts[k]
    total = int(counts.sum())
    if total == 0:
      raise ValueError("no values accumulated")
    rank = q / 100.0 * (total - 1)
    lower, upper = int(np.floor(rank)), int(np.ceil(rank))
    lo_value = self._order_statistic(k, lower)
    hi_value = self._order_statistic(k, upper)
    return lo_value + (rank - lower) * (hi_value - lo_value)

  def _order_statistic(self, k: int, rank: int) -> float:
    """Approximates the rank-th smallest value: values are assumed spread
    evenly in log space inside their bin."""
    cumulative = np.cumsum(self.counts[k])
    bin_index = int(np.searchsorted(cumulative, rank, side="right"))
    if bin_index == 0:
      return 0.0
    in_bin = self.counts[k, bin_index]
    before = cumulative[bin_index] - in_bin
    fraction = (rank - before + 0.5) / in_bin
    width = (LOG10_MAX - LOG10_MIN) / NUM_BINS
    log_value = LOG10_MIN + (bin_index - 1 + fraction) * width
    return float(min(10.0 ** log_value, self.max_abs[k]))

  def save(self, path) -> None:
    with atomic_output(path) as tmp:
      np.savez_compressed(tmp, counts=self.counts, max_abs=self.max_abs)

  @classmethod
  def load(cls, path) -> "PercentileAccumulator":
    with np.load(path) as data:
      return cls(data["counts"], data["max_abs"])


def _bin_index(abs_values: np.ndarray) -> np.ndarray:
  with np.errstate(divide="ignore"):
    log_values = np.log10(abs_values)
  index = np.floor((log_values - LOG10_MIN) * (NUM_BINS / (LOG10_MAX - LOG10_MIN)))
  index = np.clip(np.nan_to_num(index, nan=-1.0, neginf=-1.0), -1, NUM_BINS - 1)
  return index.astype(np.int64) + 1


@dataclasses.dataclass(frozen=True)
class NormalizationStats:
  """What a model needs to (de)normalize: per-bin scales, the power, and
  their origin (``percentile`` is NaN for scales not measured from data)."""
  scales: np.ndarray  # [K] float32, pixels.
  percentile: float
  num_values: int     # |x| values per bin the percentile was taken over.
  power: float = 0.5

  @classmethod
  def image_size(cls, num_freqs: int, width: int, height: int) -> "NormalizationStats":
    """The baseline the paper compares against: every coefficient divided by
    the image size (``max(width, height)`` pixels), no square root."""
    return cls(np.full(num_freqs, max(width, height), np.float32), float("nan"), 0, 1.0)

  @classmethod
  def from_accumulator(cls, acc: PercentileAccumulator, percentile: float) -> "NormalizationStats":
    scales = np.maximum(acc.percentile(percentile), MIN_SCALE).astype(np.float32)
    return cls(scales, float(percentile), int(acc.counts[0].sum()))

  def to_json(self) -> dict:
    return {"scales": [float(s) for s in self.scales], "percentile": self.percentile,
            "num_values": self.num_values, "power": self.power}

  @classmethod
  def from_json(cls, data: dict) -> "NormalizationStats":
    return cls(np.asarray(data["scales"], np.float32), float(data["percentile"]),
               int(data["num_values"]), float(data.get("power", 0.5)))

  def save(self, path) -> None:
    with atomic_output(path) as tmp:
      Path(tmp).write_text(json.dumps(self.to_json(), indent=2) + "\n")

  @classmethod
  def load(cls, path) -> "NormalizationStats":
    return cls.from_json(json.loads(Path(path).read_text()))
