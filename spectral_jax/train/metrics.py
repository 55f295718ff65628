"""Training metrics: ``WORKDIR/metrics.jsonl``, TensorBoard events, console.

Only process 0 writes. ``metrics.jsonl`` has one JSON object per logged step
with at least ``step`` and ``loss``; evaluation results are separate lines
whose keys start with ``eval/``. A resumed run appends, dropping nothing
before the step it resumes from.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping

import numpy as np

METRICS_FILE = "metrics.jsonl"


class MetricWriter:
  """Writes scalars to ``metrics.jsonl`` and TensorBoard under ``workdir``."""

  def __init__(self, workdir, *, enabled: bool = True, resume_step: int = 0):
    self._enabled = enabled
    if not enabled:
      return
    from tensorboardX import SummaryWriter  # Event files without TensorFlow.
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / METRICS_FILE
    # Lines logged after the checkpoint we resume from were never "kept":
    # the steps will be run again and logged again.
    if path.exists():
      lines = [line for line in path.read_text().splitlines()
               if line.strip() and json.loads(line)["step"] <= resume_step]
      path.write_text("".join(line + "\n" for line in lines))
    self._jsonl = path.open("a")
    self._tensorboard = SummaryWriter(str(workdir / "tensorboard"))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self._enabled:
      return
    values = {name: _to_float(value) for name, value in scalars.items() if name != "step"}
    self._jsonl.write(json.dumps({"step": int(step), **values}) + "\n")
    self._jsonl.flush()
    for name, value in values.items():
      if value is not None:
        self._tensorboard.add_scalar(name, value, int(step))
    self._tensorboard.flush()

  def close(self) -> None:
    if self._enabled:
      self._jsonl.close()
      self._tensorboard.close()


def _to_float(value) -> float | None:
  value = float(np.asarray(value))
  return value if math.isfinite(value) else None  # JSON has no NaN.


def read_metrics(workdir) -> list[dict]:
  """The records of ``WORKDIR/metrics.jsonl``, in order."""
  path = Path(workdir) / METRICS_FILE
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
