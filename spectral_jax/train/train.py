"""The training loop every stage shares (VAE, LDM stages 1 and 2, renderer).

``run(config, workdir)`` reads top to bottom: mesh → task (data, model,
loss) → `plan_step` (graph, optimizer, shardings: shapes only) → initial
state (resumed or initialised) → `compile_step` (ahead of time, state
donated) → loop (train, log, save, evaluate). What differs between stages
lives in their task (`spectral_jax.train.stages`); nothing here knows what
it trains.

The train state is a plain dict pytree::

  {"step": int32 [], "params": {...}, "opt_state": ..., "constants": {...}}

``constants`` holds frozen arrays the loss needs but never trains (the VAE
inside an LDM stage); they are rebuilt by the task on every start, not
checkpointed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Self

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
from spectral_jax.train import chips, stages
from spectral_jax.train.metrics import MetricWriter
from spectral_jax.train.optimizer import (
  FROZEN,
  learning_rate_schedule,
  make_optimizer,
  trainable_labels,
)


class TrainingDiverged(RuntimeError):
  """The loss became NaN or infinite; the message says where and what is kept."""


@dataclasses.dataclass(frozen=True)
class StepPlan:
  """The training step before any array exists, built from shapes alone
  (`plan_step`): the task whose loss it takes, the model's graph, which
  parameters train, the optimizer, and the mesh and sharding of every part
  of the state."""
  task: Any
  mesh: jax.sharding.Mesh
  graphdef: nnx.GraphDef
  abstract_params: dict  # jax.ShapeDtypeStruct leaves
  labels: dict  # like the parameters: the optimizer's label, or FROZEN
  tx: optax.GradientTransformation
  learning_rate: optax.Schedule  # of the step
  shardings: dict  # like the state: {"step", "params", "opt_state", "constants"}

  def parameter_counts(self) -> tuple[int, int]:
    """``(all, trained)``: how many parameter values the model has, and how
    many of them the optimizer updates."""
    sizes = [math.prod(x.shape) for x in jax.tree.leaves(self.abstract_params)]
    labels = jax.tree.leaves(self.labels)
    return sum(sizes), sum(n for n, label in zip(sizes, labels) if label != FROZEN)

  def abstract_state(self, constants) -> dict:
    """The state's shapes, dtypes and shardings (``constants``: arrays or
    shapes)."""
    shapes = {"step": jax.ShapeDtypeStruct((), jnp.int32), "params": self.abstract_params,
              "opt_state": jax.eval_shape(self.tx.init, self.abstract_params),
              "constants": constants}
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        shapes, self.shardings)


def plan_step(config: ml_collections.ConfigDict, task, mesh, constants) -> StepPlan:
  """`StepPlan` of ``config``'s stage on ``mesh`` (``constants``: the task's
  frozen arrays, or their shapes)."""
  graphdef, abstract_params = functional.abstract_split(
      lambda: task.make_model(nnx.Rngs(config.seed)))
  tx = make_optimizer(config.optimizer, abstract_params, config.trainable, graphdef)
  min_size, rules = config.get("fsdp_min_size"), tuple(config.get("sharding_rules", ()))
  shardings = {
      "step": sharding.replicated(mesh),
      "params": sharding.tree_shardings(abstract_params, mesh, min_size, rules),
      "opt_state": sharding.tree_shardings(jax.eval_shape(tx.init, abstract_params),
                                           mesh, min_size, rules),
      "constants": sharding.tree_shardings(constants, mesh, min_size),
  }
  return StepPlan(task, mesh, graphdef, abstract_params,
                  trainable_labels(abstract_params, config.trainable, graphdef), tx,
                  learning_rate_schedule(config.optimizer), shardings)


def make_train_step(plan: StepPlan):
  """Pure ``train_step(state, batch, key) -> (state, metrics)``: one
  optimizer step on ``batch``; the step's random key is ``key`` folded with
  the state's step, so a resumed run draws the same noise."""

  def loss_fn(params, constants, batch, key):
    return plan.task.loss(functional.merge(plan.graphdef, params), constants, batch, key)

  def train_step(state, batch, key):
    step_key = jax.random.fold_in(key, state["step"])
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"], state["constants"], batch, step_key)
    updates, opt_state = plan.tx.update(grads, state["opt_state"], state["params"])
    new_params = optax.apply_updates(state["params"], updates)
    # Frozen parameters keep their exact bits (x + 0.0 would turn -0.0 into 0.0).
    params = jax.tree.map(lambda label, old, new: old if label == FROZEN else new,
                          plan.labels, state["params"], new_params)
    trained = jax.tree.map(lambda label, g: g if label != FROZEN else jnp.zeros(()),
                           plan.labels, grads)
    # The new parameters' norm catches a bad update before it is saved: the
    # loss only shows it one step later.
    metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(trained),
               "param_norm": optax.tree.norm(params),
               "learning_rate": plan.learning_rate(state["step"])}
    return {**state, "step": state["step"] + 1, "params": params, "opt_state": opt_state}, metrics

  return train_step


def compile_step(plan: StepPlan, abstract_state: dict, batch_shapes: dict):
  """`make_train_step` compiled ahead of time for ``plan``'s mesh, the state
  donated. ``batch_shapes``: the global batch's ``{name: (shape, dtype)}``
  (anything with ``.shape`` and ``.dtype``)."""
  batch_sharding = sharding.batch_sharding(plan.mesh)
  replicated = sharding.replicated(plan.mesh)
  step = jax.jit(make_train_step(plan),
                 in_shardings=(plan.shardings, batch_sharding, replicated),
                 out_shardings=(plan.shardings, replicated), donate_argnums=(0,))
  abstract_batch = {name: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=batch_sharding)
                    for name, x in batch_shapes.items()}
  key = jax.eval_shape(jax.random.key, 0)
  return step.lower(abstract_state, abstract_batch, key).compile()


@dataclasses.dataclass(frozen=True)
class StepCost:
  """What one compiled step costs a device, by XLA's cost analysis, and the
  device's published peak (`chips`), for throughput and MFU in the logs."""
  flops_per_device: float | None
  peak_flops_per_device: float | None

  @classmethod
  def of(cls, compiled, device) -> Self:
    """The cost of ``compiled`` (a partitioned program: one device's share)
    on ``device``; None for what the backend or the table does not tell."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # Older JAX: one per program.
      analysis = analysis[0] if analysis else None
    flops = float(analysis["flops"]) if analysis and analysis.get("flops", 0) > 0 else None
    chip = chips.chip_of_device(device.device_kind)
    return cls(flops, chip.peak_bf16_flops if chip else None)

  def rates(self, step_seconds: float) -> dict:
    """``flops_per_step_per_device`` and ``mfu`` (the achieved fraction of
    the peak) at ``step_seconds`` a step, those that are known."""
    if self.flops_per_device is None:
      return {}
    rates = {"flops_per_step_per_device": self.flops_per_device}
    if self.peak_flops_per_device:
      rates["mfu"] = self.flops_per_device / step_seconds / self.peak_flops_per_device
    return rates


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
  mesh = sharding.make_mesh(config.mesh)
  task = stages.make_task(config, mesh, workdir)
  constants = task.constants()
  plan = plan_step(config, task, mesh, constants)
  mngr = checkpoint.manager(workdir, every=config.checkpoint_every,
                            keep=config.keep_checkpoints)
  batches = task.train_batches(jax.process_index(), jax.process_count())
  try:
    abstract_state = plan.abstract_state(constants)
    state, start_step = _initial_state(config, plan, abstract_state, mngr, batches, constants)
    first_batch = next(batches)
    # Compiled before the first batch is trained on: a wrong shape or a
    # memory blow-up fails here.
    compiled = compile_step(plan, abstract_state, {
        name: jax.ShapeDtypeStruct((x.shape[0] * jax.process_count(),) + x.shape[1:], x.dtype)
        for name, x in first_batch.items()})
    cost = StepCost.of(compiled, plan.mesh.devices.flat[0])
    if jax.process_index() == 0:
      _describe(config, plan, compiled, cost, start_step)
    return _train(config, workdir, plan, compiled, cost, state, start_step, batches,
                  first_batch, mngr, progress, sigterm)
  finally:
    batches.close()  # Its worker processes, if any.
    mngr.wait_until_finished()
    mngr.close()


def _initial_state(config, plan: StepPlan, abstract: dict, mngr, batches,
                   constants) -> tuple[dict, int]:
  """The state on the mesh and its step: resumed from the newest checkpoint
  in the run's workdir (``batches`` then continue where it saved them), or
  initialised (then the task may load some parameters from another run,
  e.g. stage 1 into stage 2). ``abstract``: `StepPlan.abstract_state`."""
  shardings = plan.shardings
  step, restored = checkpoint.restore_newest(
      mngr, abstract_params=abstract["params"], abstract_opt_state=abstract["opt_state"])
  if step is None:
    def init(seed):
      return functional.split_params(plan.task.make_model(nnx.Rngs(seed)))[1]
    params = jax.jit(init, out_shardings=shardings["params"], static_argnums=0)(config.seed)
    if config.init_from:
      params = checkpoint.load_into(config.init_from, params, shardings["params"])
    opt_state = jax.jit(plan.tx.init, out_shardings=shardings["opt_state"])(params)
    step = 0
  else:
    params, opt_state = restored["params"], restored["opt_state"]
    batches.set_state(restored["data"])
  return {"step": jax.device_put(jnp.int32(step), shardings["step"]), "params": params,
          "opt_state": opt_state,
          "constants": jax.device_put(constants, shardings["constants"])}, step


def _train(config, workdir: Path, plan: StepPlan, compiled, cost: StepCost, state: dict,
           step: int, batches, batch: dict, mngr, progress: bool,
           sigterm: _Sigterm) -> list[dict]:
  """The loop from ``step`` with ``batch`` first: train, log, save, evaluate,
  until ``config.num_steps`` or a preemption notice (saved, then returns).
  Returns the logged records."""
  is_main = jax.process_index() == 0
  writer = MetricWriter(workdir, enabled=is_main, resume_step=step)
  window = _LogWindow.resumed(workdir, step) if is_main else _LogWindow(step)
  key = jax.random.key(config.seed)
  records = []
  bar = tqdm.tqdm(total=config.num_steps, initial=step, unit="step",
                  disable=not (progress and is_main), desc=f"training {config.stage}")
  profile = _Profile(workdir / PROFILE_DIR, *config.get("profile_steps", (0, 0)))
  try:
    while step < config.num_steps:
      with profile.step(step + 1, lambda: state):
        state, metrics = compiled(state, sharding.global_batch(batch, plan.mesh), key)
      step += 1
      window.add(step, metrics)
      last = step == config.num_steps
      log = step % config.log_every == 0 or last
      stop = mngr.reached_preemption(step) or sigterm.received
      save = step % config.checkpoint_every == 0 or last or stop
      if log or save:
        window.check(mngr)  # Raises TrainingDiverged before any save.
      if log:
        record = window.flush(config.batch_size, cost)
        writer.write(step, record)
        records.append(record)
        bar.set_postfix(loss=f"{record['loss']:.4g}")
      with window.paused():
        # Saved before evaluating, so that a failing evaluation loses no training.
        if save:
          _save(mngr, step, state, batches, config, plan)
          if is_main:
            window.save(workdir, step)
        if config.eval_every and (step % config.eval_every == 0 or last) and not stop:
          evaluation = {f"eval/{name}": value for name, value in plan.task.evaluate(
              plan.graphdef, state["params"], state["constants"]).items()}
          writer.write(step, evaluation)
          records.append({"step": step, **evaluation})
      bar.update(1)
      if stop:
        if is_main:
          print(f"preempted: saved step {step}; run the same command to resume",
                file=sys.stderr)
        break
      if not last:
        batch = next(batches)
  finally:
    profile.stop()
    bar.close()
    writer.close()
  return records


PROFILE_DIR = "profile"


class _Profile:
  """A `jax.profiler` trace of steps ``first..last`` (1-based; 0: none)
  into ``directory`` (TensorBoard's profile plugin reads it), each step
  annotated with its number; the trace ends once the last step's work is
  done."""

  def __init__(self, directory: Path, first: int, last: int):
    self.directory, self.first, self.last = directory, first, last
    self.tracing = False

  @contextlib.contextmanager
  def step(self, number: int, state):
    """Around step ``number``; ``state()``: its result, waited for when the
    trace ends."""
    if self.first <= number <= self.last and not self.tracing:
      # Also a perfetto_trace.json.gz, which ui.perfetto.dev opens.
      jax.profiler.start_trace(str(self.directory), create_perfetto_trace=True)
      self.tracing = True
    if not self.tracing:
      yield
      return
    with jax.profiler.StepTraceAnnotation("train_step", step_num=number):
      yield
    if number >= self.last:
      jax.block_until_ready(state())
      self.stop()

  def stop(self) -> None:
    if self.tracing:
      jax.profiler.stop_trace()
      self.tracing = False


def _save(mngr, step: int, state: dict, batches, config, plan: StepPlan) -> None:
  """Checkpoint ``step``: parameters, optimizer state, the data iterator's
  position, the config and the task's statistics."""
  checkpoint.save(mngr, step, params=state["params"], opt_state=state["opt_state"],
                  data=batches.get_state(), config=config,
                  stats=plan.task.stats(plan.graphdef, state["params"], state["constants"]),
                  force=True)


# The metrics of the steps since the last logged one, at the newest save:
# a run resumed from a step that was not logged logs the same means as a
# run that was never stopped.
WINDOW_FILE = "log_window.json"


class _LogWindow:
  """The steps since the last logged one: their metrics (on the device
  until checked), and the time they took, saving and evaluating excluded."""

  def __init__(self, step: int, pending: list | None = None):
    self.pending = pending or []  # [(step, metrics)]
    self._restart(step)

  def _restart(self, step: int) -> None:
    self._start, self._start_step, self._excluded = time.perf_counter(), step, 0.0

  @classmethod
  def resumed(cls, workdir: Path, step: int) -> Self:
    """The window `save` wrote at ``step``; empty if the run starts, or
    resumes from another save (one that was not finished)."""
    path = workdir / WINDOW_FILE
    if not step or not path.exists():
      return cls(step)
    window = json.loads(path.read_text())
    if window["step"] != step:
      return cls(step)
    return cls(step, [(s, {name: np.asarray(value, dtype)
                           for name, (value, dtype) in metrics.items()})
                      for s, metrics in window["metrics"]])

  def add(self, step: int, metrics: dict) -> None:
    self.pending.append((step, metrics))

  def check(self, mngr) -> None:
    """`_check` of the pending steps."""
    _check(self.pending, mngr)

  def flush(self, batch_size: int, cost: StepCost) -> dict:
    """The record to log: the pending steps' mean metrics and the window's
    throughput (``examples_per_s``, ``step_seconds`` and ``cost``'s rates);
    the next window starts."""
    record = _mean(self.pending)
    seconds = time.perf_counter() - self._start - self._excluded
    steps = record["step"] - self._start_step
    record["examples_per_s"] = batch_size * steps / seconds
    record["step_seconds"] = seconds / steps
    record.update(cost.rates(seconds / steps))
    self.pending.clear()
    self._restart(record["step"])
    return record

  @contextlib.contextmanager
  def paused(self):
    """Time spent inside is not training time."""
    aside = time.perf_counter()
    try:
      yield
    finally:
      self._excluded += time.perf_counter() - aside

  def save(self, workdir: Path, step: int) -> None:
    """`WINDOW_FILE` at save ``step``: the pending steps' metrics, with
    their dtypes (a resumed mean is then the same to the bit)."""
    window = {"step": step, "metrics": [
        [s, {name: [np.asarray(value).item(), np.asarray(value).dtype.str]
             for name, value in metrics.items()}] for s, metrics in self.pending]}
    with atomic_output(workdir / WINDOW_FILE) as temporary:
      Path(temporary).write_text(json.dumps(window))


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


def _describe(config, plan: StepPlan, compiled, cost: StepCost, start_step: int) -> None:
  """One paragraph on the console: what is trained on what."""
  total, trained = plan.parameter_counts()
  memory = compiled.memory_analysis()
  peak = ""
  if memory is not None:
    used = (memory.argument_size_in_bytes + memory.output_size_in_bytes
            + memory.temp_size_in_bytes - memory.alias_size_in_bytes)
    peak = f", step memory {used / 2**20:.0f} MiB"
  if cost.flops_per_device:
    peak += f"{',' if peak else ''} {cost.flops_per_device / 1e9:.3g} GFLOP"
  if peak:
    peak += " per device"
  where = "resuming at step" if start_step else "starting at step"
  print(f"{config.stage}: {total / 1e6:.2f}M parameters ({trained / 1e6:.2f}M trained), "
        f"mesh {dict(plan.mesh.shape)} on {jax.device_count()} {jax.devices()[0].platform} "
        f"device(s){peak}; {where} {start_step} of {config.num_steps}", file=sys.stderr)
