"""A run resumed on another topology: a checkpoint saved on 8 (fake CPU)
devices resumes on 1, one saved on 1 resumes on 8, one saved on a ``data=8``
mesh resumes on ``data=4, fsdp=2`` with its parameters split, and on 4
devices one saved split over ``fsdp=4`` resumes split over ``fsdp=2``.

Each test trains a micro VAE run straight through 4 steps (checkpoints at
steps 2 and 4) on the saving topology, forks its workdir at step 2 and
resumes the fork on the other topology. The resumed run must read the
step-2 parameters and optimizer state bit for bit, onto the new mesh's
shardings, and start at step 3 with the losses of the straight run.

A process sees a fixed number of devices, so every run is a subprocess,
pinned to the CPU: this file run as a script, with ``XLA_FLAGS`` forcing 1,
4 or 8 host devices (as in `test_train.test_eight_devices_equal_one`). The
default test changes the mesh of the same 4 devices, both runs in one
subprocess; the device-count changes, two subprocesses each, are slow.
Several processes (1 process x 8 devices to 2 x 4 and back) are
`test_multihost`'s.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import train_configs

from spectral_jax import checkpoint, sharding

SAVED_STEP, FINAL_STEP = 2, 4
# The data=4 x fsdp=2 mesh splits arrays of at least this many elements (44
# of the micro VAE's 144 arrays; most biases and norm scales stay replicated).
FSDP_MIN_SIZE = 64
# The default test's mesh change, on the same 4 devices: arrays saved split
# in 4 are read back split in 2. (On 8 devices, as the slow tests have, the
# test took a third longer here.)
MESH_DEVICES, SAVE_MESH, RESUME_MESH = 4, {"data": 1, "fsdp": 4}, {"data": 2, "fsdp": 2}


def _config(mesh: dict | None = None):
  """The micro VAE (Adam, no warm-up: a non-zero learning rate from step 1),
  checkpointed every `SAVED_STEP` steps, on ``mesh`` (default: every device
  on ``data``)."""
  config = train_configs.load_config("vae")
  config.num_steps, config.checkpoint_every, config.eval_every = FINAL_STEP, SAVED_STEP, 0
  if mesh:
    config.mesh.update(mesh)
    config.fsdp_min_size = FSDP_MIN_SIZE
  return config


def _restore_here(workdir, step: int, config) -> dict:
  """Checkpoint ``step`` of ``workdir`` read as `train.run` reads it on this
  process's devices and ``config.mesh``: parameters and optimizer state
  onto their shardings there. Returns their flat values (NumPy) and
  sharding specs, and whether every array landed on its target sharding."""
  from flax import nnx

  from spectral_jax.models import functional
  from spectral_jax.models.build import build_vae
  from spectral_jax.train.optimizer import make_optimizer
  mesh = sharding.make_mesh(config.mesh)
  _, abstract_params = functional.abstract_split(lambda: build_vae(config, nnx.Rngs(0)))
  tx = make_optimizer(config.optimizer, abstract_params, config.trainable)
  abstract_opt_state = jax.eval_shape(tx.init, abstract_params)
  min_size = config.get("fsdp_min_size")
  targets = {"params": checkpoint.with_shardings(
                 abstract_params, sharding.tree_shardings(abstract_params, mesh, min_size)),
             "opt_state": checkpoint.with_shardings(
                 abstract_opt_state,
                 sharding.tree_shardings(abstract_opt_state, mesh, min_size))}
  items = checkpoint.restore(checkpoint.manager(workdir, read_only=True), step,
                             abstract_params=targets["params"],
                             abstract_opt_state=targets["opt_state"])
  result = {"on_target": True}
  for name, target in targets.items():
    restored = jax.tree.leaves(items[name])
    wanted = jax.tree.leaves(target)
    assert len(restored) == len(wanted), name
    result["on_target"] &= all(
        array.sharding.is_equivalent_to(want.sharding, array.ndim)
        for array, want in zip(restored, wanted))
    result[name] = train_configs.flat_params(items[name])
    result[f"{name}_specs"] = {
        key: tuple(getattr(leaf.sharding, "spec", ()))
        for key, leaf in zip(result[name], restored)}
  result["data"] = items["data"]
  return result


def _straight(workdir, mesh: dict | None = None, initial: bool = True) -> dict:
  """Trains `FINAL_STEP` steps on this process's devices; returns the logged
  records, checkpoint `SAVED_STEP` read back on the same mesh, and the
  initial parameters (unless not ``initial``: their initialisation is
  compiled again)."""
  from spectral_jax.train import train
  config = _config(mesh)
  records = train.run(config, workdir, progress=False)
  from spectral_jax.models.build import build_vae
  saved = _restore_here(workdir, SAVED_STEP, config)
  # The parameters as Orbax reads them by itself (onto the shardings they
  # were saved with), not through `checkpoint.restore`, which is under test.
  saved["params"] = train_configs.saved_params(workdir, SAVED_STEP)
  return {"records": records, "devices": jax.device_count(),
          "initial": train_configs.initial_params(config, build_vae) if initial else None,
          "saved": saved}


def _resume(workdir, mesh: dict | None = None) -> dict:
  """Reads the newest checkpoint of ``workdir`` (a fork at `SAVED_STEP`) on
  this process's devices and ``mesh``, then resumes the run there to
  `FINAL_STEP`."""
  from spectral_jax.train import train
  config = _config(mesh)
  restored = _restore_here(workdir, SAVED_STEP, config)
  records = train.run(config, workdir, progress=False)
  return {"records": records, "devices": jax.device_count(), "restored": restored,
          "final": train_configs.saved_params(workdir, FINAL_STEP)}


def _fork(workdir: Path, fork: Path) -> Path:
  """A copy of ``workdir`` as the run was at `SAVED_STEP`."""
  train_configs.fork(workdir, fork, SAVED_STEP)
  assert checkpoint.manager(fork, read_only=True).all_steps() == [SAVED_STEP]
  return fork


def _mesh_change(workdir: Path, mesh: dict | None = None) -> dict:
  """`_straight` on `SAVE_MESH`, then `_resume` of its fork at
  `SAVED_STEP` on `RESUME_MESH`: the same devices, in this one process."""
  del mesh  # The two above.
  straight = _straight(workdir / "saved", SAVE_MESH, initial=False)
  resumed = _resume(_fork(workdir / "saved", workdir / "resumed"), RESUME_MESH)
  return {"straight": straight, "resumed": resumed, "devices": jax.device_count()}


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory) -> Path:
  """A compilation cache the module's runs share: a resume compiles the
  programs a run on the same mesh compiled before it."""
  return tmp_path_factory.mktemp("compile_cache")


def _run(tmp_path: Path, devices: int, command: str, workdir: Path,
         mesh: dict | None = None, cache: Path | None = None) -> dict:
  """``_straight`` or ``_resume`` in a subprocess on ``devices`` CPU devices
  (fake ones beyond the first). Both sides run so, pinned to the CPU: on a
  machine with a GPU the 1-device side would otherwise train on it and
  differ from the 8 CPU devices by more than float rounding."""
  from spectral_jax.inference import compile_cache
  env = dict(os.environ)
  if cache:
    env[compile_cache.ENV_VAR] = str(cache)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      f" --xla_force_host_platform_device_count={devices}").strip()
  env["JAX_PLATFORMS"] = "cpu"
  out = tmp_path / f"{command}-{workdir.name}.pkl"
  done = subprocess.run([sys.executable, __file__, command, str(workdir), str(out),
                         repr(mesh)], env=env, capture_output=True, text=True, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  result = pickle.loads(out.read_bytes())
  assert result["devices"] == devices
  return result


def _split_specs(params: dict, specs: dict, count: int = 10) -> None:
  """The ``count`` largest arrays of ``params`` are split over ``fsdp``
  in ``specs``."""
  largest = sorted(params, key=lambda name: params[name].size)[-count:]
  assert all("fsdp" in specs[name] for name in largest), {n: specs[n] for n in largest}


def _losses(records) -> dict:
  return {r["step"]: r["loss"] for r in records}


def _check_resumed(straight: dict, resumed: dict) -> None:
  """What every topology change must keep."""
  saved, restored = straight["saved"], resumed["restored"]
  # The run trained before the save: the learning rate was not 0, and the
  # saved parameters are not the initial ones (where `_straight` read them).
  assert all(r["learning_rate"] > 0 for r in straight["records"])
  initial = straight["initial"]
  if initial is not None:
    moved = train_configs.moved(initial, saved["params"])
    assert len(moved) > 0.9 * len(initial), sorted(set(initial) - moved)

  # Read on the new topology: the saved bits, on the new mesh's shardings.
  assert restored["on_target"]
  assert restored["data"] == saved["data"]
  for item in ("params", "opt_state"):
    assert set(restored[item]) == set(saved[item]), item
    for name, value in saved[item].items():
      np.testing.assert_array_equal(restored[item][name], value, err_msg=f"{item}:{name}")

  # Training went on from step 3.
  assert [r["step"] for r in resumed["records"]] == [3, 4]
  final = resumed["final"]
  assert any(not np.array_equal(final[name], saved["params"][name]) for name in final)
  # Against the straight run on the saving topology: step 3's loss comes
  # from the same parameters and batch, step 4's also from the same Adam
  # moments and count; only the order of float sums differs (another
  # device count or mesh splits reductions otherwise), at float32
  # rounding: up to 2e-7 relative here (step 4, 1 -> 8 devices; data=8 ->
  # fsdp=2 came out bitwise equal). A resume bug (another batch, reset
  # moments or count, initial parameters) is off by percents.
  straight_losses = _losses(straight["records"])
  np.testing.assert_allclose([r["loss"] for r in resumed["records"]],
                             [straight_losses[3], straight_losses[4]], rtol=1e-5)


@pytest.fixture(scope="module")
def eight_device_run(tmp_path_factory, compile_cache):
  """The straight run on 8 devices (``data=8``)."""
  tmp = tmp_path_factory.mktemp("eight")
  workdir = tmp / "run"
  return workdir, _run(tmp, 8, "straight", workdir, cache=compile_cache)


@pytest.mark.slow
def test_eight_devices_resume_on_one(eight_device_run, tmp_path, compile_cache):
  workdir, straight = eight_device_run
  resumed = _run(tmp_path, 1, "resume", _fork(workdir, tmp_path / "one"), cache=compile_cache)
  _check_resumed(straight, resumed)


@pytest.mark.slow
def test_one_device_resumes_on_eight(tmp_path, compile_cache):
  straight = _run(tmp_path, 1, "straight", tmp_path / "one", cache=compile_cache)
  resumed = _run(tmp_path, 8, "resume", _fork(tmp_path / "one", tmp_path / "eight"),
                 cache=compile_cache)
  _check_resumed(straight, resumed)


def _check_moments_split_like_params(restored: dict) -> None:
  """Adam's two moments are split like their parameters."""
  specs = restored["params_specs"]
  assert sum("fsdp" in spec for spec in restored["opt_state_specs"].values()) == (
      2 * sum("fsdp" in spec for spec in specs.values()))


def test_a_checkpoint_split_four_ways_resumes_split_two_ways(tmp_path):
  """The default one: 4 devices, ``fsdp=4`` → ``data=2, fsdp=2``
  (`SAVE_MESH`, `RESUME_MESH`), in one subprocess. Each array of
  `FSDP_MIN_SIZE` elements or more is saved in 4 pieces and must be read
  onto the 2 pieces of the other mesh."""
  result = _run(tmp_path, MESH_DEVICES, "mesh_change", tmp_path / "run")
  straight, resumed = result["straight"], result["resumed"]
  _check_resumed(straight, resumed)
  # The resumed steps moved most parameters (checked here in place of the
  # steps before the save: the initial parameters would cost a compilation).
  final = resumed["final"]
  moved = train_configs.moved(straight["saved"]["params"], final)
  assert len(moved) > 0.9 * len(final), sorted(set(final) - moved)
  saved_specs = straight["saved"]["params_specs"]
  restored_specs = resumed["restored"]["params_specs"]
  _split_specs(straight["saved"]["params"], restored_specs)
  # The same arrays are split over fsdp on both meshes: over 4 devices as
  # saved, over 2 as read (`_check_resumed`: each array landed on the
  # resuming mesh's sharding).
  assert saved_specs == restored_specs
  _check_moments_split_like_params(resumed["restored"])


# Slow, with the device-count changes above: the suite's time budget. The
# default test above shares its restore path, onto another mesh.
@pytest.mark.slow
def test_data_mesh_resumes_on_fsdp_mesh(eight_device_run, tmp_path, compile_cache):
  """8 devices, ``data=8`` (parameters replicated) → ``data=4, fsdp=2``
  (arrays of `FSDP_MIN_SIZE` elements or more split in two)."""
  workdir, straight = eight_device_run
  resumed = _run(tmp_path, 8, "resume", _fork(workdir, tmp_path / "fsdp"),
                 {"data": 4, "fsdp": 2}, cache=compile_cache)
  _check_resumed(straight, resumed)
  assert not any("fsdp" in spec for spec in straight["saved"]["params_specs"].values())
  _split_specs(straight["saved"]["params"], resumed["restored"]["params_specs"])
  _check_moments_split_like_params(resumed["restored"])


if __name__ == "__main__":
  import ast

  from spectral_jax.inference import compile_cache as persistent_cache
  if os.environ.get(persistent_cache.ENV_VAR):
    persistent_cache.enable()
  command, workdir, out, mesh = sys.argv[1:]
  run = {"straight": _straight, "resume": _resume, "mesh_change": _mesh_change}[command]
  result = run(Path(workdir), ast.literal_eval(mesh))
  Path(out).write_bytes(pickle.dumps(result))
