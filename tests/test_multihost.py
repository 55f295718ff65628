"""Multi-process training on one machine: ``launch/local.sh`` starts JAX
processes that talk over loopback, each with its own fake CPU devices.

The tests that train run the micro VAE of `test_preemption` (Adam, a
non-zero learning rate from step 1) through the command line. By default,
the smallest: 2 processes x 1 device train 2 steps as 1 process does. The
slow ones: 2 processes x 4 devices log the losses of 1 process x 8, a
checkpoint moves between the two topologies, and a killed process stops its
peer within a bound. The launcher's own behaviour (arguments, ranks, a
failed process, signals) and the distributed settings are checked by
default, in well under a second each.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import ml_collections
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import train_configs
from test_preemption import CONFIG, OVERRIDES, TIMEOUT_S, _initial_params
from test_topology import SAVED_STEP, _fork

from spectral_jax import checkpoint, distributed
from spectral_jax.config_base import base_config, check_config
from spectral_jax.train import metrics

LOCAL_SH = Path(__file__).resolve().parent.parent / "launch" / "local.sh"
NUM_STEPS = 4
# Every step logged; checkpoints at `SAVED_STEP` (2) and 4.
RUN = {**OVERRIDES, "num_steps": NUM_STEPS, "log_every": 1, "checkpoint_every": SAVED_STEP}
# The default test's run: 2 steps, each saved.
SMALL_RUN = {"num_steps": 2, "checkpoint_every": 1}
# The killed process's peer must be gone this long after the kill: a
# heartbeat timeout of `HEARTBEAT_S` and time to notice and abort (10 s
# in all here).
HEARTBEAT_S = 10
EXIT_BOUND_S = 60


def _launch(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(["bash", str(LOCAL_SH), *args], capture_output=True, text=True,
                        timeout=60)


@pytest.mark.parametrize("args, message", [
    ([], "--processes is required"),
    (["--processes", "0", "--", "true"], "--processes must be a positive integer, got '0'"),
    (["--processes", "2", "--devices-per-process", "x", "--", "true"],
     "--devices-per-process must be a positive integer, got 'x'"),
    (["--processes", "2"], "no command after --"),
    (["--processes", "2", "--nodes", "3", "--", "true"], "unknown argument '--nodes'"),
], ids=["no_processes", "zero_processes", "bad_devices", "no_command", "unknown"])
def test_local_sh_refuses_bad_arguments(args, message):
  done = _launch(*args)
  assert done.returncode == 2
  assert message in done.stderr and "usage:" in done.stderr, done.stderr


def test_local_sh_gives_each_process_its_rank_devices_and_coordinator():
  done = _launch("--processes", "3", "--devices-per-process", "4", "--port", "1234", "--",
                 "bash", "-c", 'echo "$SPECTRAL_JAX_PROCESS_ID/$SPECTRAL_JAX_NUM_PROCESSES '
                 '$SPECTRAL_JAX_COORDINATOR_ADDRESS $JAX_PLATFORMS $XLA_FLAGS"; echo err >&2')
  assert done.returncode == 0, done.stderr
  lines = sorted(done.stdout.splitlines())
  assert [line.split()[:4] for line in lines] == [
      [f"[{rank}]", f"{rank}/3", "127.0.0.1:1234", "cpu"] for rank in range(3)]
  assert all(line.endswith("--xla_force_host_platform_device_count=4") for line in lines)
  assert sorted(done.stderr.splitlines()) == ["[0] err", "[1] err", "[2] err"]


def test_local_sh_kills_the_others_when_one_fails(tmp_path):
  """A process that fails would leave its peers waiting in a collective:
  they are killed and the script exits with the failure's status."""
  start = time.monotonic()
  done = _launch("--processes", "3", "--", "bash", "-c",
                 f'echo $$ > {tmp_path}/$SPECTRAL_JAX_PROCESS_ID.pid; '
                 'if [ "$SPECTRAL_JAX_PROCESS_ID" = 1 ]; then sleep 0.5; exit 3; fi; '
                 'exec sleep 60')
  assert time.monotonic() - start < 30
  assert done.returncode == 3
  assert "process 1 exited with status 3; killing the others" in done.stderr, done.stderr
  for rank in (0, 2):
    pid = int((tmp_path / f"{rank}.pid").read_text())
    with pytest.raises(ProcessLookupError):
      os.kill(pid, 0)


def test_local_sh_passes_sigterm_on_to_every_process(tmp_path):
  """SIGTERM (a preemption notice) reaches every process. Not SIGINT: a test
  run started as a background job (`pytest &`, some CI runners) inherits
  SIGINT ignored, and bash cannot trap a signal ignored when it starts."""
  # Short sleeps: a long one would outlive its shell and hold the output
  # open. At most 30 s of them: nothing is left running if the signal is lost.
  script = (f'trap "echo saved; exit 0" TERM; touch {tmp_path}/$SPECTRAL_JAX_PROCESS_ID; '
            'for _ in $(seq 600); do sleep 0.05; done')
  launcher = subprocess.Popen(["bash", str(LOCAL_SH), "--processes", "2", "--", "bash", "-c",
                               script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
  try:
    deadline = time.monotonic() + 30
    while not ((tmp_path / "0").exists() and (tmp_path / "1").exists()):
      assert time.monotonic() < deadline and launcher.poll() is None
      time.sleep(0.05)
    launcher.send_signal(signal.SIGTERM)
    out, err = launcher.communicate(timeout=30)
  finally:
    if launcher.poll() is None:
      launcher.kill()
      launcher.communicate()
  assert launcher.returncode == 0, err
  assert sorted(out.splitlines()) == ["[0] saved", "[1] saved"]
  assert "sending SIGTERM to every process" in err


def _settings(**values) -> ml_collections.ConfigDict:
  config = base_config("vae", "tiny")
  config.distributed.update(values)
  return config


def test_distributed_settings_come_from_the_config_then_the_environment():
  environ = {"SPECTRAL_JAX_COORDINATOR_ADDRESS": "127.0.0.1:5000",
             "SPECTRAL_JAX_NUM_PROCESSES": "2", "SPECTRAL_JAX_PROCESS_ID": "0"}
  assert not distributed.requested(_settings(), {})
  assert distributed.requested(_settings(enabled=True), {})
  assert distributed.requested(_settings(), environ)
  # Nothing set: everything is left to JAX's cluster detection.
  assert distributed.initialize_arguments(_settings(heartbeat_timeout_s=7), {}) == {
      "initialization_timeout": 300, "heartbeat_timeout_seconds": 7}
  arguments = distributed.initialize_arguments(_settings(process_id=1), environ)
  assert (arguments["coordinator_address"], arguments["num_processes"],
          arguments["process_id"]) == ("127.0.0.1:5000", 2, 1)
  with pytest.raises(ValueError, match="SPECTRAL_JAX_PROCESS_ID='one' is not an integer"):
    distributed.initialize_arguments(_settings(), {**environ, "SPECTRAL_JAX_PROCESS_ID": "one"})


@pytest.mark.parametrize("values, message", [
    ({"coordinator_address": "10.0.0.1"}, "coordinator_address must be HOST:PORT"),
    ({"coordinator_address": "10.0.0.1:99999"}, "coordinator_address must be HOST:PORT"),
    ({"num_processes": 2, "process_id": 2}, "process_id 2 is not below num_processes 2"),
    ({"process_id": -2}, "config.distributed.process_id must be at least -1, got -2"),
    ({"heartbeat_timeout_s": 0}, "config.distributed.heartbeat_timeout_s must be at least 1"),
], ids=["no_port", "bad_port", "process_id", "negative_id", "heartbeat"])
def test_check_config_refuses_bad_distributed_settings(values, message):
  check_config(_settings(coordinator_address="localhost:1234", num_processes=2, process_id=1))
  with pytest.raises(ValueError, match=message):
    check_config(_settings(**values))


def _command(workdir: Path, **overrides) -> list[str]:
  return ([sys.executable, "-m", "spectral_jax.train", f"--config={CONFIG}",
           f"--workdir={workdir}", "--no_progress"]
          + [f"--config.{key}={value}" for key, value in {**RUN, **overrides}.items()])


def _environment(devices: int | None, cache: Path | None = None, **variables) -> dict:
  """This environment pinned to the CPU, with ``devices`` devices (None:
  ``launch/local.sh`` says how many), none of `distributed.ENV_VARS` but
  ``variables``, and JAX's compilation cache in ``cache`` (every program,
  however quick to compile)."""
  env = {name: value for name, value in os.environ.items()
         if name not in distributed.ENV_VARS.values()}
  if devices:
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        f" --xla_force_host_platform_device_count={devices}").strip()
  env["JAX_PLATFORMS"] = "cpu"
  if cache:
    env.update(train_configs.cache_environment(cache))
  return {**env, **variables}


def _train(workdir: Path, processes: int, devices: int, cache: Path | None,
           **overrides) -> str:
  """The micro VAE run in ``workdir`` (started or resumed) on ``processes``
  x ``devices``, with `RUN`'s settings but ``overrides``: one process as a
  user starts it, several through ``launch/local.sh``. Returns its
  stderr."""
  return _wait(_start(workdir, processes, devices, cache, **overrides))


def _start(workdir: Path, processes: int, devices: int, cache: Path | None,
           **overrides) -> subprocess.Popen:
  """`_train`'s run, started."""
  command = _command(workdir, **overrides)
  if processes > 1:
    command = ["bash", str(LOCAL_SH), "--processes", str(processes),
               "--devices-per-process", str(devices), "--", *command]
  # A session of its own: a run past its time is killed with every process
  # the launcher started, not the launcher alone.
  return subprocess.Popen(command, env=_environment(devices if processes == 1 else None, cache),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          start_new_session=True)


def _wait(run: subprocess.Popen) -> str:
  """The stderr of a `_start`ed run, which must end well in `TIMEOUT_S`."""
  try:
    _, stderr = run.communicate(timeout=TIMEOUT_S)
  except subprocess.TimeoutExpired:
    os.killpg(run.pid, signal.SIGKILL)
    _, stderr = run.communicate()
    pytest.fail(f"no exit in {TIMEOUT_S} s:\n{stderr[-3000:]}")
  assert run.returncode == 0, stderr[-3000:]
  return stderr


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory) -> Path:
  """Shared by the module's runs: a resumed run loads the programs the run
  on the same topology compiled."""
  return tmp_path_factory.mktemp("compile_cache")


@pytest.fixture(scope="module")
def straight_runs(tmp_path_factory, compile_cache) -> dict:
  """`NUM_STEPS` steps straight through on 1 process x 8 devices and on 2
  processes x 4: ``{"1x8": (workdir, stderr), "2x4": ...}``."""
  tmp = tmp_path_factory.mktemp("straight")
  return {name: (tmp / name, _train(tmp / name, processes, devices, compile_cache))
          for name, processes, devices in (("1x8", 1, 8), ("2x4", 2, 4))}


def _logged(workdir: Path, name: str) -> dict:
  return {r["step"]: r[name] for r in metrics.read_metrics(workdir)}


def _check_same_training(one: Path, two: Path, num_steps: int, before: dict) -> None:
  """Runs ``one`` and ``two`` trained on the same global batches: each of
  the ``num_steps`` steps logged once, with the same losses, gradient and
  parameter norms to float32 rounding (the sums are split another way), at
  a non-zero learning rate; and parameters that moved from ``before`` to
  ``two``'s last.

  The parameters themselves are not compared one by one: a gradient that
  is 0 but for rounding (a bias before a GroupNorm) gets an Adam step of up
  to the learning rate whose sign is the rounding's
  (`train_configs.use_sgd`); their norm agrees."""
  for name in ("loss", "grad_norm", "param_norm"):
    expected, logged = _logged(one, name), _logged(two, name)
    assert list(logged) == list(range(1, num_steps + 1)), name
    np.testing.assert_allclose(list(logged.values()), list(expected.values()), rtol=1e-5,
                               err_msg=name)
  assert all(rate > 0 for rate in _logged(two, "learning_rate").values())
  after = _final_params(two)
  moved = train_configs.moved(before, after)
  assert len(moved) > 0.9 * len(after), sorted(set(after) - moved)


def _check_process_0_describes(stderr: str, devices: int) -> None:
  """The launcher's output: process 0 alone described the run (and writes
  metrics and windows), which spans ``devices`` devices."""
  described = [line for line in stderr.splitlines() if "starting at step 0" in line]
  assert len(described) == 1 and described[0].startswith("[0] "), described
  assert f"on {devices} cpu device(s)" in described[0], described


def test_two_processes_of_one_device_train_as_one_process(tmp_path, tmp_path_factory):
  """The smallest multi-process run: 2 processes x 1 device, each reading
  its half of every global batch, train `SMALL_RUN`'s 2 steps as 1 process
  with 1 device does (both pinned to the CPU). The run spans 2 devices, one
  per process: both joined it; and the losses show that each fed its own
  half of the batch."""
  one, two = tmp_path / "one", tmp_path / "two"
  cache = train_configs.session_cache(tmp_path_factory)
  # Side by side: the one process keeps a core busy where the two would
  # leave it idle (starting, waiting for each other).
  reference = _start(one, 1, 1, cache, **SMALL_RUN)
  try:
    stderr = _train(two, 2, 1, cache, **SMALL_RUN)
    _wait(reference)
  finally:
    if reference.poll() is None:
      os.killpg(reference.pid, signal.SIGKILL)
      reference.communicate()
  _check_process_0_describes(stderr, devices=2)
  # Moved by step 2, from step 1's checkpoint (the initial parameters would
  # cost a compilation more).
  _check_same_training(one, two, SMALL_RUN["num_steps"], _final_params(two, 1))


@pytest.mark.slow
def test_two_processes_train_as_one_process_with_eight_devices(straight_runs):
  """Same global batches, same steps: the losses, gradient and parameter
  norms agree to float32 rounding (1.1e-7 relative here), and the
  parameters moved."""
  (one, _), (two, stderr) = straight_runs["1x8"], straight_runs["2x4"]
  _check_same_training(one, two, NUM_STEPS, _initial_params())
  _check_process_0_describes(stderr, devices=8)
  assert json.loads((two / "log_window.json").read_text())["step"] == NUM_STEPS


def _final_params(workdir: Path, step: int | None = None) -> dict:
  """The run's last parameters (or those of checkpoint ``step``) as an app
  loads them, onto this process's one device (whatever topology saved
  them)."""
  from spectral_jax.models import functional
  from spectral_jax.models.build import build_vae
  model, *_ = checkpoint.load_model(workdir, build_vae, ("vae",), step=step)
  return train_configs.flat_params(functional.split_params(model)[1])


def _check_resumed(straight: Path, resumed: Path, stderr: str) -> None:
  """The fork resumed at `SAVED_STEP` and logged the straight run's losses."""
  assert f"resuming at step {SAVED_STEP} of {NUM_STEPS}" in stderr, stderr[-3000:]
  expected, logged = _logged(straight, "loss"), _logged(resumed, "loss")
  assert list(logged) == list(range(1, NUM_STEPS + 1))
  np.testing.assert_allclose([logged[s] for s in range(SAVED_STEP + 1, NUM_STEPS + 1)],
                             [expected[s] for s in range(SAVED_STEP + 1, NUM_STEPS + 1)],
                             rtol=1e-5)
  assert checkpoint.manager(resumed, read_only=True).all_steps() == [SAVED_STEP, NUM_STEPS]


@pytest.mark.slow
def test_a_checkpoint_of_one_process_resumes_on_two(straight_runs, tmp_path, compile_cache):
  one, _ = straight_runs["1x8"]
  fork = _fork(one, tmp_path / "fork")
  _check_resumed(one, fork, _train(fork, 2, 4, compile_cache))


@pytest.mark.slow
def test_a_checkpoint_of_two_processes_resumes_on_one(straight_runs, tmp_path, compile_cache):
  two, _ = straight_runs["2x4"]
  fork = _fork(two, tmp_path / "fork")
  _check_resumed(two, fork, _train(fork, 1, 8, compile_cache))


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


@pytest.mark.slow
def test_a_killed_process_stops_the_other_with_an_error(tmp_path, compile_cache):
  """Two processes started by hand (no launcher to kill the survivor):
  process 1 is killed mid-run, and process 0, which would otherwise wait
  for it in its next step's collectives, exits non-zero saying why within
  `EXIT_BOUND_S`."""
  workdir = tmp_path / "run"
  command = _command(workdir, num_steps=100_000, checkpoint_every=100_000,
                     **{"distributed.heartbeat_timeout_s": HEARTBEAT_S})
  port = _free_port()
  processes, logs = [], [tmp_path / f"{rank}.log" for rank in range(2)]
  for rank, log in enumerate(logs):
    env = _environment(4, compile_cache, SPECTRAL_JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                       SPECTRAL_JAX_NUM_PROCESSES="2", SPECTRAL_JAX_PROCESS_ID=str(rank))
    with log.open("w") as stderr:
      processes.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                        stderr=stderr))
  try:
    # A logged step: both processes are in the training loop.
    deadline = time.monotonic() + TIMEOUT_S
    while not ((workdir / metrics.METRICS_FILE).exists()
               and (workdir / metrics.METRICS_FILE).read_text()):
      ended = [p.returncode for p in processes if p.poll() is not None]
      assert not ended, f"ended (rc {ended}) before training:\n{logs[0].read_text()[-3000:]}"
      assert time.monotonic() < deadline, f"no step logged in {TIMEOUT_S} s"
      time.sleep(0.1)
    processes[1].kill()
    killed = time.monotonic()
    try:
      processes[0].wait(timeout=EXIT_BOUND_S)
    except subprocess.TimeoutExpired:
      pytest.fail(f"process 0 still runs {EXIT_BOUND_S} s after its peer was killed")
    elapsed = time.monotonic() - killed
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
        process.wait()
  err = logs[0].read_text()
  assert processes[0].returncode != 0
  # JAX's coordination service says what happened before it aborts.
  assert "another task died" in err and "stopped sending heartbeats" in err, err[-3000:]
  print(f"process 0 exited {elapsed:.1f} s after process 1 was killed")
