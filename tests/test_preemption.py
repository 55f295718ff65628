"""Preemption through the command line: SIGTERM makes ``python -m
spectral_jax.train`` save the step it is at and exit 0; the same command
again resumes, and logs the losses an uninterrupted run logs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import train_configs
from test_train import _resumed_rtol

from spectral_jax import checkpoint
from spectral_jax.config_base import load_config_file
from spectral_jax.train import metrics

NUM_STEPS, LOG_EVERY = 12, 4
# Saves at the last step and on preemption only.
CHECKPOINT_EVERY = 1000
# `train_configs.load_config("vae")`'s micro VAE, as command-line overrides.
OVERRIDES = {
    "data.width": 32, "data.height": 16, "data.num_freqs": 4,
    "data.synthetic.num_frames": 16, "data.synthetic.num_train": 64,
    "data.synthetic.num_test": 8, "data.synthetic.stats_examples": 16,
    "batch_size": 8, "model.base_channels": 8, "model.num_res_blocks": 1,
    # No warm-up: step 1 trains at the full learning rate.
    "optimizer.warmup_steps": 0,
    "num_steps": NUM_STEPS, "log_every": LOG_EVERY,
    "checkpoint_every": CHECKPOINT_EVERY, "eval_every": 0,
}
CONFIG = f"{train_configs.CONFIGS / 'vae.py'}:tiny"
# Every wait is bounded by this (the runs take about 20 s each here).
TIMEOUT_S = 300


def _command(workdir: Path) -> list[str]:
  return ([sys.executable, "-m", "spectral_jax.train", f"--config={CONFIG}",
           f"--workdir={workdir}", "--no_progress"]
          + [f"--config.{key}={value}" for key, value in OVERRIDES.items()])


def _start(workdir: Path, log: Path) -> subprocess.Popen:
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  with log.open("w") as stderr:
    return subprocess.Popen(_command(workdir), env=env, stdout=subprocess.DEVNULL,
                            stderr=stderr)


def _catches_sigterm(pid: int) -> bool:
  """Whether process ``pid`` has a handler for SIGTERM (Linux /proc)."""
  for line in Path(f"/proc/{pid}/status").read_text().splitlines():
    if line.startswith("SigCgt:"):
      return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
  return False


def _finish(process: subprocess.Popen, log: Path) -> str:
  try:
    process.wait(timeout=TIMEOUT_S)
  except subprocess.TimeoutExpired:
    process.kill()
    process.wait()
    pytest.fail(f"no exit in {TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
  return log.read_text()


def _initial_params() -> dict:
  """The parameters the command's run starts from (flat)."""
  from spectral_jax.models.build import build_vae
  config = load_config_file(train_configs.CONFIGS / "vae.py", "tiny", OVERRIDES)
  return train_configs.initial_params(config, build_vae)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_sigterm_saves_exits_0_and_the_same_command_resumes_with_the_same_losses(tmp_path):
  """The signal comes once the trainer has its SIGTERM handler, while it
  builds and compiles (seconds before its first step): the first step is
  then trained and saved, step 1 of a logging window of 4 and no
  checkpoint step. Waiting for a handler, not for time to pass, makes
  that step the same on a loaded machine. The resumed run's first record
  averages steps 1-4, as the uninterrupted run's does."""
  straight_dir, preempted_dir = tmp_path / "straight", tmp_path / "preempted"
  # The uninterrupted run, beside the preempted one.
  straight = _start(straight_dir, tmp_path / "straight.log")
  preempted = _start(preempted_dir, tmp_path / "preempted.log")

  deadline = time.monotonic() + TIMEOUT_S
  while not _catches_sigterm(preempted.pid):
    if preempted.poll() is not None:
      pytest.fail("the run ended without ever handling SIGTERM (rc "
                  f"{preempted.returncode}):\n{(tmp_path / 'preempted.log').read_text()[-3000:]}")
    if time.monotonic() > deadline:
      preempted.kill()
      pytest.fail(f"no SIGTERM handler after {TIMEOUT_S} s")
    time.sleep(0.02)
  preempted.send_signal(signal.SIGTERM)
  initial = _initial_params()  # While the runs go on.
  err = _finish(preempted, tmp_path / "preempted.log")
  assert preempted.returncode == 0, err[-3000:]
  saved = re.findall(r"preempted: saved step (\d+); run the same command to resume", err)
  assert len(saved) == 1, err[-3000:]
  step = int(saved[0])
  # Not a step the run would have logged or saved at anyway.
  assert 0 < step < NUM_STEPS and step % LOG_EVERY and step % CHECKPOINT_EVERY, step
  assert checkpoint.manager(preempted_dir, read_only=True).all_steps() == [step]
  # Nothing logged yet (the preempted step's window is not complete).
  assert not [r for r in metrics.read_metrics(preempted_dir) if r["step"] > step]
  # The preempted step trained: its parameters moved from the initial ones.
  at_step = train_configs.saved_params(preempted_dir, step)
  assert set(initial) == set(at_step)
  moved = {name for name in initial if not np.array_equal(initial[name], at_step[name])}
  assert len(moved) > 0.9 * len(initial), sorted(set(initial) - moved)

  # The same command again.
  resumed = _start(preempted_dir, tmp_path / "resumed.log")
  err = _finish(resumed, tmp_path / "resumed.log")
  assert resumed.returncode == 0, err[-3000:]
  assert f"resuming at step {step} of {NUM_STEPS}" in err, err[-3000:]
  assert "preempted" not in err
  err = _finish(straight, tmp_path / "straight.log")
  assert straight.returncode == 0, err[-3000:]

  logged = metrics.read_metrics(preempted_dir)
  expected = metrics.read_metrics(straight_dir)
  steps = list(range(LOG_EVERY, NUM_STEPS + 1, LOG_EVERY))
  assert [r["step"] for r in expected] == [r["step"] for r in logged] == steps
  for name in ("loss", "grad_norm", "param_norm", "learning_rate"):
    np.testing.assert_allclose([r[name] for r in logged], [r[name] for r in expected],
                               rtol=_resumed_rtol(), err_msg=name)
  assert all(r["learning_rate"] > 0 for r in logged)
  assert checkpoint.manager(preempted_dir, read_only=True).all_steps() == [step, NUM_STEPS]
  final, final_straight = (train_configs.saved_params(d) for d in (preempted_dir, straight_dir))
  for name, value in final_straight.items():
    np.testing.assert_allclose(final[name], value, rtol=_resumed_rtol(), atol=1e-7,
                               err_msg=name)
  # The resumed steps trained too.
  assert any(not np.array_equal(at_step[name], final[name]) for name in final)

