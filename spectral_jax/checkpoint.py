"""Orbax checkpoints of a training run, with named items.

``WORKDIR/checkpoints/<step>/`` holds:

* ``params``: the model parameters (a pytree of arrays);
* ``opt_state``: the optimizer state (none for frozen parameters);
* ``data``: the input pipeline's position (JSON), so a resumed run sees the
  examples the interrupted one would have seen next;
* ``config``: the run's config (JSON), enough to rebuild its model;
* ``stats``: statistics the run depends on (JSON): the data set's
  normalization scales, and e.g. the VAE's latent whitening.

Saves are asynchronous (Orbax writes a step to a temporary name and renames
it when complete); the newest ``keep`` are kept. A damaged newest step (a
file lost or cut short) is moved to ``WORKDIR/corrupt_checkpoints/`` and the
one before is resumed (`restore_newest`). Arrays are restored
onto whatever mesh the restoring run has (the abstract target carries the
shardings), so a run saved on 8 devices resumes on 1 and vice versa.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx

from spectral_jax import sharding
from spectral_jax.models import functional

CHECKPOINT_DIR = "checkpoints"
CORRUPT_DIR = "corrupt_checkpoints"
ARRAY_ITEMS = ("params", "opt_state")
JSON_ITEMS = ("data", "config", "stats")


def manager(workdir, *, every: int = 1, keep: int | None = None,
            read_only: bool = False) -> ocp.CheckpointManager:
  """The run's `CheckpointManager` (saves at multiples of ``every``);
  ``read_only`` for another run's checkpoints, which must exist."""
  directory = Path(workdir).absolute() / CHECKPOINT_DIR
  if read_only and not directory.is_dir():
    raise FileNotFoundError(f"{workdir}: no checkpoints (is it a training workdir?)")
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=every, max_to_keep=keep, create=not read_only,
      enable_async_checkpointing=not read_only)
  handlers = {name: ocp.StandardCheckpointHandler() for name in ARRAY_ITEMS}
  handlers.update({name: ocp.JsonCheckpointHandler() for name in JSON_ITEMS})
  return ocp.CheckpointManager(directory, item_handlers=handlers, options=options)


def has_checkpoint(workdir) -> bool:
  """Whether ``workdir`` holds a finished checkpoint (a run to resume)."""
  if not (Path(workdir) / CHECKPOINT_DIR).is_dir():
    return False
  return manager(workdir, read_only=True).latest_step() is not None


def save(mngr: ocp.CheckpointManager, step: int, *, params, opt_state, data: dict,
         config: ml_collections.ConfigDict, stats: dict, force: bool = False) -> bool:
  """Starts an asynchronous save (if ``step`` is due, or ``force``)."""
  return mngr.save(step, args=ocp.args.Composite(
      params=ocp.args.StandardSave(params),
      opt_state=ocp.args.StandardSave(opt_state),
      data=ocp.args.JsonSave(data),
      config=ocp.args.JsonSave(config.to_dict()),
      stats=ocp.args.JsonSave(stats)), force=force)


def restore(mngr: ocp.CheckpointManager, step: int, *, abstract_params,
            abstract_opt_state=None) -> dict:
  """Items of checkpoint ``step``: arrays onto the shardings of the abstract
  targets (`jax.ShapeDtypeStruct` trees); ``opt_state`` only if its target
  is given. JSON items as saved; ``config`` as a ConfigDict."""
  args = dict(params=ocp.args.StandardRestore(abstract_params),
              data=ocp.args.JsonRestore(), config=ocp.args.JsonRestore(),
              stats=ocp.args.JsonRestore())
  if abstract_opt_state is not None:
    args["opt_state"] = ocp.args.StandardRestore(abstract_opt_state)
  restored = mngr.restore(step, args=ocp.args.Composite(**args))
  items = {name: restored[name] for name in args}
  items["config"] = ml_collections.ConfigDict(items["config"])
  return items


def restore_newest(mngr: ocp.CheckpointManager, *, abstract_params,
                   abstract_opt_state) -> tuple[int | None, dict | None]:
  """``(step, items)`` (`restore`) of the newest checkpoint that can be
  read, or ``(None, None)`` when there is none.

  Newer steps that cannot be read are reported on stderr and moved to
  ``WORKDIR/corrupt_checkpoints/<step>`` (kept for inspection; their step
  numbers are free for the resumed run to save again). If no step can be
  read, the newest step's error is raised and nothing is moved: that is a
  run that changed (another model or mesh config), not a damaged file.
  """
  failed = []
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      items = restore(mngr, step, abstract_params=abstract_params,
                      abstract_opt_state=abstract_opt_state)
    # Orbax and TensorStore raise many kinds of errors for damaged files.
    except Exception as error:  # pylint: disable=broad-except
      failed.append((step, error))
      continue
    if failed:
      _move_aside(mngr, failed)
    return step, items
  if failed:
    raise failed[0][1]
  return None, None


def _move_aside(mngr: ocp.CheckpointManager, failed: list) -> None:
  if jax.process_count() > 1:
    # Every process would move the same directory; resuming from an older
    # step is then the user's call.
    raise RuntimeError(f"checkpoint {failed[0][0]} cannot be read ({failed[0][1]}); move it "
                       f"out of {mngr.directory} and run again to resume from the one before")
  directory = Path(mngr.directory)
  aside = directory.parent / CORRUPT_DIR
  aside.mkdir(exist_ok=True)
  for step, error in failed:
    target = aside / str(step)
    if target.exists():
      shutil.rmtree(target)
    (directory / str(step)).rename(target)
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    print(f"warning: checkpoint {step} cannot be read ({reason}); moved to {target}",
          file=sys.stderr)
  mngr.reload()


def read_config(workdir, step: int | None = None) -> tuple[ml_collections.ConfigDict, dict, int]:
  """(config, stats, step) of a run's latest (or given) checkpoint, without
  its arrays: enough to rebuild the model and know its statistics."""
  mngr = manager(workdir, read_only=True)
  if step is None:
    step = mngr.latest_step()
    if step is None:
      raise FileNotFoundError(f"{workdir}: no finished checkpoint")
  elif step not in mngr.all_steps():
    raise FileNotFoundError(f"{workdir} has no checkpoint of step {step} (it has "
                            f"{sorted(mngr.all_steps()) or 'none'})")
  restored = mngr.restore(step, args=ocp.args.Composite(
      config=ocp.args.JsonRestore(), stats=ocp.args.JsonRestore()))
  return ml_collections.ConfigDict(restored["config"]), restored["stats"], step


def load_params(workdir, abstract_params, step: int | None = None):
  """A run's parameters, restored onto the shardings in ``abstract_params``."""
  mngr = manager(workdir, read_only=True)
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"{workdir}: no finished checkpoint")
  restored = mngr.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(abstract_params)))
  return restored["params"]


def load_model(workdir, build, stages: tuple[str, ...], mesh=None, step: int | None = None):
  """A finished run's model, rebuilt from its saved config and loaded with
  the parameters of checkpoint ``step`` (default: the latest), replicated
  over ``mesh`` (default: one device).

  Args:
    workdir: the run's directory.
    build: ``(config, rngs) -> nnx.Module``, the stage's model builder.
    stages: the stages whose runs ``build`` can rebuild.
    mesh: where the parameters go.
    step: the checkpoint to load.
  Returns:
    ``(model, config, stats, step)``.
  Raises:
    ValueError: the run is of another stage.
    FileNotFoundError: no such run, or it lacks checkpoint ``step``.
  """
  config, stats, step = read_config(workdir, step)
  if config.stage not in stages:
    raise ValueError(f"{workdir} is a {config.stage!r} run, not one of {stages}")
  mesh = mesh or sharding.make_mesh({"data": 1, "fsdp": 1}, jax.devices()[:1])
  graphdef, abstract = functional.abstract_split(lambda: build(config, nnx.Rngs(0)))
  target = with_shardings(abstract, sharding.tree_shardings(abstract, mesh, min_size=None))
  model = functional.merge(graphdef, load_params(workdir, target, step))
  return model, config, stats, step


def load_into(workdir, params: dict, shardings: dict) -> dict:
  """``params`` (a nested dict) with every parameter another run saved
  copied in, onto ``shardings``; parameters that run lacks keep their
  values (e.g. stage 2's new frequency attention).

  Raises:
    ValueError: the run has a parameter ``params`` lacks, or of another shape.
  """
  mngr = manager(workdir, read_only=True)
  step = mngr.latest_step()
  if step is None:
    raise FileNotFoundError(f"{workdir}: no finished checkpoint")
  saved = {_name(path): meta for path, meta in _flat(mngr.item_metadata(step)["params"]).items()}
  ours, our_shardings = _flat(params), _flat(shardings)
  # Saved keys are strings; ours may be ints (list indices) and stay so.
  by_name = {_name(path): path for path in ours}
  for name, meta in saved.items():
    if name not in by_name:
      raise ValueError(f"{workdir} has parameter {name} that this model lacks")
    ours_shape = tuple(ours[by_name[name]].shape)
    if tuple(meta.shape) != ours_shape:
      raise ValueError(f"{name}: {workdir} has shape {tuple(meta.shape)}, this model "
                       f"{ours_shape}")
  target = _nest({by_name[name]: jax.ShapeDtypeStruct(
      ours[by_name[name]].shape, ours[by_name[name]].dtype,
      sharding=our_shardings[by_name[name]]) for name in saved})
  loaded = _flat(load_params(workdir, target, step))
  return _nest({path: loaded.get(path, value) for path, value in ours.items()})


def _flat(tree) -> dict:
  """Nested dicts → ``{(key, ...): leaf}``."""
  return {tuple(getattr(k, "key", getattr(k, "idx", k)) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _name(path: tuple) -> str:
  return "/".join(str(key) for key in path)


def _nest(flat: dict) -> dict:
  tree = {}
  for path, leaf in flat.items():
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = leaf
  return tree


def with_shardings(abstract_tree, shardings):
  """`jax.ShapeDtypeStruct` tree carrying ``shardings``."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      abstract_tree, shardings)
