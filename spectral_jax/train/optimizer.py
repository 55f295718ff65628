"""The optimizer from the config, with frozen parameters.

``config.trainable`` names the parameters that train: a group of
`MODULE_GROUPS` (those of a kind of module, found in the model's graph), or
else a regular expression full-matched on each parameter's path
(``a/b/kernel``). The rest are frozen with ``optax.set_to_zero()`` inside
``optax.multi_transform``, so they carry no optimizer state and their values
stay bitwise unchanged.
"""

from __future__ import annotations

import re

import jax
import optax

from spectral_jax.models import freq_attention, functional

TRAINABLE, FROZEN = "trainable", "frozen"

# ``config.trainable`` values that select by module: name → the parameter
# paths of those modules in a model. "freq_attention": every frequency
# attention layer, of whichever variant (stage 2 trains them alone).
MODULE_GROUPS = {"freq_attention": freq_attention.param_paths}


def path_name(path) -> str:
  """``a/b/kernel`` for a pytree key path."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def trainable_labels(params, trainable: str, graphdef=None):
  """Pytree like ``params`` (a nested dict, `functional.split_params`) of
  `TRAINABLE` / `FROZEN`: the parameters of the `MODULE_GROUPS` group
  ``trainable`` in the model ``graphdef`` and ``params`` make, or those
  whose path the regex ``trainable`` full-matches."""
  selected = _selector(params, trainable, graphdef)
  return jax.tree_util.tree_map_with_path(
      lambda path, _: TRAINABLE if selected(path_name(path)) else FROZEN, params)


def _selector(params, trainable: str, graphdef):
  """Whether a parameter, by its path name ``a/b/kernel``, trains."""
  if trainable not in MODULE_GROUPS:
    return re.compile(trainable).fullmatch
  if graphdef is None:
    raise ValueError(f"trainable={trainable!r} selects modules: it needs the model's graphdef")
  model = functional.merge(graphdef, params)
  names = {"/".join(map(str, path)) for path in MODULE_GROUPS[trainable](model)}
  return lambda name: name in names


def learning_rate_schedule(config) -> optax.Schedule:
  """Linear warm-up to ``learning_rate``, then constant or cosine decay."""
  warmup = optax.linear_schedule(0.0, config.learning_rate, max(1, config.warmup_steps))
  if config.decay == "constant":
    after = optax.constant_schedule(config.learning_rate)
  elif config.decay == "cosine":
    after = optax.cosine_decay_schedule(config.learning_rate,
                                        max(1, config.decay_steps - config.warmup_steps))
  else:
    raise ValueError(f"unknown decay {config.decay!r}: 'constant' or 'cosine'")
  return optax.join_schedules([warmup, after], [config.warmup_steps])


def make_optimizer(config, params, trainable: str = ".*",
                   graphdef=None) -> optax.GradientTransformation:
  """``config``: the ``optimizer`` block (name, learning_rate, b1, b2,
  weight_decay, grad_clip, warmup_steps, decay, decay_steps); ``trainable``
  (with ``graphdef``, the model's): the parameters it updates, as
  `trainable_labels` reads it."""
  schedule = learning_rate_schedule(config)
  if config.name == "adam":
    base = optax.adam(schedule, b1=config.b1, b2=config.b2)
  elif config.name == "adamw":
    base = optax.adamw(schedule, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay)
  elif config.name == "sgd":
    base = optax.sgd(schedule)
  else:
    raise ValueError(f"unknown optimizer {config.name!r}: 'adam', 'adamw' or 'sgd'")
  if config.grad_clip:
    base = optax.chain(optax.clip_by_global_norm(config.grad_clip), base)
  labels = trainable_labels(params, trainable, graphdef)
  if FROZEN not in jax.tree.leaves(labels):
    return base
  if TRAINABLE not in jax.tree.leaves(labels):
    raise ValueError(f"no parameter matches trainable={trainable!r}")
  return optax.multi_transform({TRAINABLE: base, FROZEN: optax.set_to_zero()}, labels)
