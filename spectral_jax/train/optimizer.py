"""The optimizer from the config, with frozen parameters.

Parameters whose path (``a/b/kernel``) matches ``config.trainable`` are
trained; the rest are frozen with ``optax.set_to_zero()`` inside
``optax.multi_transform``, so they carry no optimizer state and their values
stay bitwise unchanged.
"""

from __future__ import annotations

import re

import jax
import optax

TRAINABLE, FROZEN = "trainable", "frozen"


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


def trainable_labels(params, pattern: str):
  """Pytree like ``params`` of `TRAINABLE` / `FROZEN` by full-match of
  ``pattern`` on each parameter's path."""
  regex = re.compile(pattern)
  return jax.tree_util.tree_map_with_path(
      lambda path, _: TRAINABLE if regex.fullmatch(path_name(path)) else FROZEN, params)


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


def make_optimizer(config, params, trainable: str = ".*") -> optax.GradientTransformation:
  """``config``: the ``optimizer`` block (name, learning_rate, b1, b2,
  weight_decay, grad_clip, warmup_steps, decay, decay_steps); ``trainable``:
  the path pattern of the parameters it updates."""
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
  labels = trainable_labels(params, trainable)
  if FROZEN not in jax.tree.leaves(labels):
    return base
  if TRAINABLE not in jax.tree.leaves(labels):
    raise ValueError(f"no parameter path matches trainable={trainable!r}")
  return optax.multi_transform({TRAINABLE: base, FROZEN: optax.set_to_zero()}, labels)
