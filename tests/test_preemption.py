"""Stopped runs through the command line, resumed by the same command,
which then logs the losses an uninterrupted run logs: SIGTERM (a
preemption notice) makes ``python -m spectral_jax.train`` save the step it
is at and exit 0; a checkpoint save that meets a full disk (a real one, a
small tmpfs) ends the run with one line saying to free space and run again.
"""

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
# The full-disk run: `OVERRIDES`, saving at steps 4, 8 and 12.
DISK_RUN = {"checkpoint_every": LOG_EVERY}


def _command(workdir: Path, **overrides) -> list[str]:
  return ([sys.executable, "-m", "spectral_jax.train", f"--config={CONFIG}",
           f"--workdir={workdir}", "--no_progress"]
          + [f"--config.{key}={value}" for key, value in {**OVERRIDES, **overrides}.items()])


def _start(workdir: Path, log: Path, cache: Path | None = None,
           **overrides) -> subprocess.Popen:
  """`_command` started, pinned to the CPU, its stderr to ``log``; with a
  JAX compilation cache in ``cache``, if given."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  if cache:
    env.update(train_configs.cache_environment(cache))
  with log.open("w") as stderr:
    return subprocess.Popen(_command(workdir, **overrides), env=env,
                            stdout=subprocess.DEVNULL, stderr=stderr)


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


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> Path:
  """The command's run never stopped, in its own workdir: what a stopped
  and resumed run must log. It saves at steps 4, 8 and 12 (`DISK_RUN`),
  which changes no loss. Its programs come from the session's compilation
  cache when `test_multihost`'s 1-process run compiled them."""
  workdir = tmp_path_factory.mktemp("straight") / "run"
  log = workdir.parent / "straight.log"
  process = _start(workdir, log, train_configs.session_cache(tmp_path_factory), **DISK_RUN)
  err = _finish(process, log)
  assert process.returncode == 0, err[-3000:]
  assert checkpoint.manager(workdir, read_only=True).all_steps() == [4, 8, 12], err[-3000:]
  return workdir


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_sigterm_saves_exits_0_and_the_same_command_resumes_with_the_same_losses(
    tmp_path, straight_run):
  """The signal comes once the trainer has its SIGTERM handler, while it
  builds and compiles (seconds before its first step): the first step is
  then trained and saved, step 1 of a logging window of 4 and no
  checkpoint step. Waiting for a handler, not for time to pass, makes
  that step the same on a loaded machine. The resumed run's first record
  averages steps 1-4, as the uninterrupted run's does."""
  preempted_dir = tmp_path / "preempted"
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
  initial = _initial_params()  # While the run goes on.
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

  logged = metrics.read_metrics(preempted_dir)
  expected = metrics.read_metrics(straight_run)
  steps = list(range(LOG_EVERY, NUM_STEPS + 1, LOG_EVERY))
  assert [r["step"] for r in expected] == [r["step"] for r in logged] == steps
  for name in ("loss", "grad_norm", "param_norm", "learning_rate"):
    np.testing.assert_allclose([r[name] for r in logged], [r[name] for r in expected],
                               rtol=_resumed_rtol(), err_msg=name)
  assert all(r["learning_rate"] > 0 for r in logged)
  assert checkpoint.manager(preempted_dir, read_only=True).all_steps() == [step, NUM_STEPS]
  final, final_straight = (train_configs.saved_params(d) for d in (preempted_dir, straight_run))
  for name, value in final_straight.items():
    np.testing.assert_allclose(final[name], value, rtol=_resumed_rtol(), atol=1e-7,
                               err_msg=name)
  # The resumed steps trained too.
  assert any(not np.array_equal(at_step[name], final[name]) for name in final)


@pytest.fixture
def small_disk(tmp_path):
  """A 16 MiB tmpfs mounted on ``tmp_path / "disk"``, unmounted after the
  test: a disk the test can fill."""
  if os.geteuid() != 0:
    pytest.skip("a real full disk needs root to mount a tmpfs")
  disk = tmp_path / "disk"
  disk.mkdir()
  done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)],
                        capture_output=True, text=True, check=False)
  if done.returncode:
    pytest.skip(f"a real full disk needs root to mount a tmpfs: {done.stderr.strip()}")
  try:
    yield disk
  finally:
    if subprocess.run(["umount", str(disk)], check=False).returncode:
      subprocess.run(["umount", "--lazy", str(disk)], check=True)


def _space(files, disk: Path) -> int:
  """Bytes that ``files`` would take on ``disk`` (a tmpfs holds each file in
  whole blocks)."""
  block = os.statvfs(disk).f_frsize
  return sum(-(-f.stat().st_size // block) * block for f in files if f.is_file())


def _fill(disk: Path, keep: int) -> Path:
  """A file that leaves ``keep`` bytes of ``disk`` free; returns it."""
  stats = os.statvfs(disk)
  size = stats.f_bavail * stats.f_frsize - keep
  assert size > 0, "the disk is too small"
  filler = disk / "filler"
  with filler.open("wb") as f:
    os.posix_fallocate(f.fileno(), 0, size)
  return filler


def test_a_full_disk_ends_the_run_in_one_line_and_the_same_command_resumes(
    tmp_path, tmp_path_factory, small_disk, straight_run):
  """A run on a disk with room for its first checkpoint (step 4) and half
  the next: the save of step 8 fails for lack of space (in Orbax's writer
  threads; the error reaches the run at its next save or its end). The run
  exits 1 with the one-line message; checkpoint 4 is the last and holds
  the straight run's parameters bit for bit. Once the space is free again,
  the same command resumes from step 4 and logs the straight run's losses."""
  straight = straight_run
  # The programs of `straight_run`, compiled (or loaded) by it.
  cache = train_configs.session_cache(tmp_path_factory)

  # Room for every file the run has written once it saved step 4 (those of
  # the straight run then), and for half of the next checkpoint.
  steps = straight / checkpoint.CHECKPOINT_DIR
  first = [f for f in straight.rglob("*")
           if not f.is_relative_to(steps / "8") and not f.is_relative_to(steps / "12")]
  filler = _fill(small_disk,
                 _space(first, small_disk) + _space((steps / "4").rglob("*"), small_disk) // 2)
  workdir = small_disk / "run"
  log = tmp_path / "full.log"
  full = _start(workdir, log, cache, **DISK_RUN)
  err = _finish(full, log)
  assert full.returncode == 1, err[-3000:]
  assert err.splitlines()[-1] == (
      f"error: {workdir}: no space left on the device; free some and run the same command "
      "again: it resumes from the last finished checkpoint"), err[-3000:]
  # The last finished checkpoint is intact: step 4, as the straight run saved it.
  assert checkpoint.manager(workdir, read_only=True).all_steps() == [4]
  at_step_4 = train_configs.saved_params(workdir, 4)
  for name, value in train_configs.saved_params(straight, 4).items():
    np.testing.assert_array_equal(at_step_4[name], value, err_msg=name)

  filler.unlink()
  log = tmp_path / "resumed.log"
  resumed = _start(workdir, log, cache, **DISK_RUN)
  err = _finish(resumed, log)
  assert resumed.returncode == 0, err[-3000:]
  assert "resuming at step 4 of 12" in err, err[-3000:]
  assert checkpoint.manager(workdir, read_only=True).all_steps() == [4, 8, 12]
  logged, expected = metrics.read_metrics(workdir), metrics.read_metrics(straight)
  assert [r["step"] for r in logged] == [r["step"] for r in expected] == [4, 8, 12]
  for name in ("loss", "grad_norm", "param_norm", "learning_rate"):
    np.testing.assert_allclose([r[name] for r in logged], [r[name] for r in expected],
                               rtol=_resumed_rtol(), err_msg=name)
  assert all(r["learning_rate"] > 0 for r in logged)
  final = train_configs.saved_params(workdir)
  for name, value in train_configs.saved_params(straight).items():
    np.testing.assert_allclose(final[name], value, rtol=_resumed_rtol(), atol=1e-7,
                               err_msg=name)
  # The resumed steps trained.
  moved = train_configs.moved(at_step_4, final)
  assert len(moved) > 0.9 * len(final), sorted(set(final) - moved)
