"""The training loop every stage shares (VAE, LDM stages 1 and 2, renderer).

``run(config, workdir)`` reads top to bottom: mesh → task (data, model,
loss) → abstract init → shardings → jitted init → optimizer → jitted,
ahead-compiled train step with donated state → resume → loop (log, evaluate,
checkpoint). What differs between stages lives in their task
(`spectral_jax.train.stages`); nothing here knows what it trains.

The train state is a plain dict pytree::

  {"step": int32 [], "params": {...}, "opt_state": ..., "constants": {...}}

``constants`` holds frozen arrays the loss needs but never trains (the VAE
inside an LDM stage); they are rebuilt by the task on every start, not
checkpointed.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Self

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from flax import nnx

from spectral_jax import checkpoint, config_base, distributed, sharding
from spectral_jax.atomic import atomic_output
from spectral_jax.models import functional
from spectral_jax.train import stages
from spectral_jax.train.metrics import MetricWriter
from spectral_jax.train.optimizer import (
  FROZEN,
  learning_rate_schedule,
  make_optimizer,
  trainable_labels,
)


class TrainingDiverged(RuntimeError):
  """The loss became NaN or infinite; the message says where and what is kept."""


def make_train_step(graphdef, task, tx: optax.GradientTransformation, labels,
                    learning_rate: optax.Schedule):
  """Pure ``train_step(state, batch, rng) -> (state, metrics)``."""

  def loss_fn(params, constants, batch, rng):
    return task.loss(functional.merge(graphdef, params), constants, batch, rng)

  def train_step(state, batch, rng):
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"], state["constants"], batch, rng)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    new_params = optax.apply_updates(state["params"], updates)
    # Frozen parameters keep their exact bits (x + 0.0 would turn -0.0 into 0.0).
    params = jax.tree.map(lambda label, old, new: old if label == FROZEN else new,
                          labels, state["params"], new_params)
    trained = jax.tree.map(lambda label, g: g if label != FROZEN else jnp.zeros(()),
                           labels, grads)
    # The new parameters' norm catches a bad update before it is saved: the
    # loss only shows it one step later.
    metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(trained),
               "param_norm": optax.tree.norm(params),
               "learning_rate": learning_rate(state["step"])}
    return {**state, "step": state["step"] + 1, "params": params, "opt_state": opt_state}, metrics

  return train_step


# The metrics of the steps since the last logged one, at the newest save:
# a run resumed from a step that was not logged logs the same means as a
# run that was never stopped.
WINDOW_FILE = "log_window.json"


class _Sigterm:
  """SIGTERM as a preemption notice in a single-process run: noted here, and
  the loop saves and stops at the step it is at. (Multi-process runs get
  theirs from JAX's preemption sync manager, through
  ``reached_preemption``, which in a single process never fires.) The
  previous handler is back on exit."""

  def __init__(self, enabled: bool):
    self.received = False
    # Python sets handlers from the main thread only.
    self._enabled = enabled and threading.current_thread() is threading.main_thread()
    self._previous = None

  def __enter__(self) -> Self:
    if self._enabled:
      self._previous = signal.signal(signal.SIGTERM, self._note)
    return self

  def _note(self, signum, frame) -> None:
    del signum, frame
    self.received = True

  def __exit__(self, *exc) -> None:
    if self._enabled:
      signal.signal(signal.SIGTERM, self._previous)


def run(config: ml_collections.ConfigDict, workdir, *, progress: bool = True) -> list[dict]:
  """Trains ``config`` in ``workdir`` (resuming what is there); returns the
  logged records of this invocation.

  A preemption notice (SIGTERM in a single-process run) saves the step
  being trained and returns; the same call again resumes there."""
  config_base.check_config(config)  # Before anything is created.
  with _Sigterm(enabled=not distributed.requested(config)) as sigterm:
    return _run(config, workdir, progress, sigterm)


def _run(config: ml_collections.ConfigDict, workdir, progress: bool,
         sigterm: _Sigterm) -> list[dict]:
  workdir = Path(workdir).absolute()
  config = config_base.absolute_paths(config)
  if distributed.requested(config):
    distributed.initialize(config)
  is_main = jax.process_index() == 0

  # Mesh and task.
  mesh = sharding.make_mesh(config.mesh)
  task = stages.make_task(config, mesh, workdir)

  # Abstract model, optimizer, shardings: shapes only, nothing allocated.
  graphdef, abstract_params = functional.abstract_split(
      lambda: task.make_model(nnx.Rngs(config.seed)))
  labels = trainable_labels(abstract_params, config.trainable, graphdef)
  tx = make_optimizer(config.optimizer, abstract_params, config.trainable, graphdef)
  abstract_opt_state = jax.eval_shape(tx.init, abstract_params)
  min_size = config.get("fsdp_min_size")
  constants = task.constants()
  shardings = {
      "step": sharding.replicated(mesh),
      "params": sharding.tree_shardings(abstract_params, mesh, min_size),
      "opt_state": sharding.tree_shardings(abstract_opt_state, mesh, min_size),
      "constants": sharding.tree_shardings(constants, mesh, min_size),
  }

  # Parameters: resumed from this workdir, or initialised (then the task may
  # load some from another run, e.g. stage 1 into stage 2).
  mngr = checkpoint.manager(workdir, every=config.checkpoint_every,
                            keep=config.keep_checkpoints)
  resume_step, restored = checkpoint.restore_newest(
      mngr, abstract_params=checkpoint.with_shardings(abstract_params, shardings["params"]),
      abstract_opt_state=checkpoint.with_shardings(abstract_opt_state, shardings["opt_state"]))
  batches = task.train_batches(jax.process_index(), jax.process_count())
  if resume_step is None:
    def init(seed):
      return functional.split_params(task.make_model(nnx.Rngs(seed)))[1]
    params = jax.jit(init, out_shardings=shardings["params"], static_argnums=0)(config.seed)
    if config.init_from:
      params = checkpoint.load_into(config.init_from, params, shardings["params"])
    opt_state = jax.jit(tx.init, out_shardings=shardings["opt_state"])(params)
    start_step = 0
  else:
    params, opt_state = restored["params"], restored["opt_state"]
    batches.set_state(restored["data"])
    start_step = resume_step
  state = {
      "step": jax.device_put(jnp.int32(start_step), shardings["step"]),
      "params": params,
      "opt_state": opt_state,
      "constants": jax.device_put(constants, shardings["constants"]),
  }

  # The step, compiled before the first batch is trained on: a wrong shape
  # or a memory blow-up fails here.
  batch_sharding = sharding.batch_sharding(mesh)
  first_batch = next(batches)
  abstract_batch = {name: jax.ShapeDtypeStruct(
      (value.shape[0] * jax.process_count(),) + value.shape[1:], value.dtype,
      sharding=batch_sharding) for name, value in first_batch.items()}
  step_fn = jax.jit(
      make_train_step(graphdef, task, tx, labels, learning_rate_schedule(config.optimizer)),
      in_shardings=(shardings, batch_sharding, sharding.replicated(mesh)),
      out_shardings=(shardings, sharding.replicated(mesh)),
      donate_argnums=(0,))
  abstract_state = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
  compiled = step_fn.lower(abstract_state, abstract_batch, jax.random.key(0)).compile()
  if is_main:
    _describe(config, mesh, abstract_params, labels, compiled, start_step)

  writer = MetricWriter(workdir, enabled=is_main, resume_step=start_step)
  base_rng = jax.random.key(config.seed)
  records = []
  # (step, metrics) since the last logged step; a resumed run's first are
  # the saved ones of the steps before it resumed.
  pending = _load_window(workdir, start_step) if is_main else []
  bar = tqdm.tqdm(total=config.num_steps, initial=start_step, unit="step",
                  disable=not (progress and is_main), desc=f"training {config.stage}")
  step, batch = start_step, first_batch
  # Throughput over each logging window, evaluation and saving excluded.
  window_start, window_step, excluded = time.perf_counter(), step, 0.0
  try:
    while step < config.num_steps:
      state, metrics = compiled(state, sharding.global_batch(batch, mesh),
                                jax.random.fold_in(base_rng, step))
      step += 1
      pending.append((step, metrics))
      last = step == config.num_steps
      log = step % config.log_every == 0 or last
      stop = mngr.reached_preemption(step) or sigterm.received
      save = step % config.checkpoint_every == 0 or last or stop
      if log or save:
        _check(pending, mngr)  # Raises TrainingDiverged before any save.
        if log:
          record = _mean(pending)
          pending.clear()
          seconds = time.perf_counter() - window_start - excluded
          record["examples_per_s"] = config.batch_size * (step - window_step) / seconds
          window_start, window_step, excluded = time.perf_counter(), step, 0.0
          writer.write(step, record)
          records.append(record)
          bar.set_postfix(loss=f"{record['loss']:.4g}")
      aside = time.perf_counter()
      # Saved before evaluating, so that a failing evaluation loses no training.
      if save:
        checkpoint.save(mngr, step, params=state["params"], opt_state=state["opt_state"],
                        data=batches.get_state(), config=config,
                        stats=task.stats(graphdef, state["params"], state["constants"]),
                        force=True)
        if is_main:
          _save_window(workdir, step, pending)
      if config.eval_every and (step % config.eval_every == 0 or last) and not stop:
        evaluation = {f"eval/{name}": value for name, value in task.evaluate(
            graphdef, state["params"], state["constants"]).items()}
        writer.write(step, evaluation)
        records.append({"step": step, **evaluation})
      excluded += time.perf_counter() - aside
      bar.update(1)
      if stop:
        if is_main:
          print(f"preempted: saved step {step}; run the same command to resume",
                file=sys.stderr)
        break
      if not last:
        batch = next(batches)
  finally:
    bar.close()
    batches.close()  # Its worker processes, if any.
    mngr.wait_until_finished()
    mngr.close()
    writer.close()
  return records


def _check(pending: list, mngr) -> None:
  """Brings the pending steps' metrics to the host (in place); raises
  `TrainingDiverged` if any step's loss, gradient norm or new parameters are
  not finite.

  The gradient norm on its own: when its square overflows float32 while the
  loss and every gradient stay finite, global-norm clipping scales the step
  by 1/inf, and the run goes on with every update zeroed.
  """
  pending[:] = [(step, jax.device_get(metrics)) for step, metrics in pending]
  for step, metrics in pending:
    bad = [f"the {label} is {float(metrics[name])}" for name, label in (
        ("loss", "loss"), ("grad_norm", "gradient's norm"),
        ("param_norm", "parameters' norm")) if not np.isfinite(metrics[name])]
    if bad:
      kept = mngr.latest_step()
      raise TrainingDiverged(
          f"at step {step} {' and '.join(bad)}; stopped without saving the parameters. "
          + (f"The last good checkpoint is step {kept}; " if kept is not None
             else "No checkpoint was saved yet; ")
          + "lower the learning rate or check the data before resuming.")


def _mean(pending: list) -> dict:
  """Mean of the pending steps' (host) metrics as floats."""
  record = {name: float(np.mean([m[name] for _, m in pending])) for name in pending[-1][1]}
  return {"step": pending[-1][0], **record}


def _save_window(workdir: Path, step: int, pending: list) -> None:
  """`WINDOW_FILE`: the not yet logged steps' metrics at save ``step``,
  with their dtypes (a resumed mean is then the same to the bit)."""
  window = {"step": step, "metrics": [
      [s, {name: [np.asarray(value).item(), np.asarray(value).dtype.str]
           for name, value in metrics.items()}] for s, metrics in pending]}
  with atomic_output(workdir / WINDOW_FILE) as temporary:
    Path(temporary).write_text(json.dumps(window))


def _load_window(workdir: Path, step: int) -> list:
  """The pending steps `_save_window` saved at ``step``; none if the run
  starts, or resumes from another save (one that was not finished)."""
  path = workdir / WINDOW_FILE
  if not step or not path.exists():
    return []
  window = json.loads(path.read_text())
  if window["step"] != step:
    return []
  return [(s, {name: np.asarray(value, dtype) for name, (value, dtype) in metrics.items()})
          for s, metrics in window["metrics"]]


def _describe(config, mesh, abstract_params, labels, compiled, start_step) -> None:
  """One paragraph on the console: what is trained on what."""
  sizes = jax.tree.map(lambda x: math.prod(x.shape), abstract_params)
  total = sum(jax.tree.leaves(sizes))
  trained = sum(n for n, label in zip(jax.tree.leaves(sizes), jax.tree.leaves(labels))
                if label != FROZEN)
  memory = compiled.memory_analysis()
  peak = ""
  if memory is not None:
    used = (memory.argument_size_in_bytes + memory.output_size_in_bytes
            + memory.temp_size_in_bytes - memory.alias_size_in_bytes)
    peak = f", step memory {used / 2**20:.0f} MiB per device"
  where = "resuming at step" if start_step else "starting at step"
  print(f"{config.stage}: {total / 1e6:.2f}M parameters ({trained / 1e6:.2f}M trained), "
        f"mesh {dict(mesh.shape)} on {jax.device_count()} {jax.devices()[0].platform} "
        f"device(s){peak}; {where} {start_step} of {config.num_steps}", file=sys.stderr)
