"""Flax NNX modules seen functionally, as the training and inference code use them: a
graph plus its parameters as a plain nested dict of arrays, which shards,
checkpoints and passes through `jax.jit` like any pytree."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def split_params(model: nnx.Module) -> tuple[nnx.GraphDef, dict]:
  """``(graphdef, parameters as a nested dict)`` of ``model``.

  Raises:
    TypeError: the model holds variables other than `nnx.Param`, which the
      pure train step would silently drop.
  """
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  if jax.tree.leaves(rest):
    raise TypeError("models must hold only nnx.Param variables (no BatchNorm statistics, "
                    f"no stored RNG state); found {jax.tree.map(jnp.shape, rest)}")
  return graphdef, nnx.to_pure_dict(params)


def abstract_split(make_model) -> tuple[nnx.GraphDef, dict]:
  """`split_params` of ``make_model()`` built abstractly: the parameters
  are `jax.ShapeDtypeStruct`, nothing is allocated."""
  return split_params(nnx.eval_shape(make_model))


def merge(graphdef: nnx.GraphDef, params: dict) -> nnx.Module:
  """The module back from `split_params`' two halves (also inside jit)."""
  return nnx.merge(graphdef, nnx.State(params))
