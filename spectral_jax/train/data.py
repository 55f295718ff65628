"""Batches for the training tasks: sharded, normalized, on the mesh."""

from __future__ import annotations

from typing import Iterator

import jax

from spectral_jax import sharding
from spectral_jax.data.pipeline import ShardedBatches


def train_batches(source, config, transform, process_index: int,
                  process_count: int) -> ShardedBatches:
  """Shuffled, endless, resumable batches of ``config.batch_size`` examples
  over all processes."""
  return ShardedBatches(source, global_batch_size=config.batch_size, seed=config.seed,
                        process_index=process_index, process_count=process_count,
                        transform=transform)


def eval_batches(source, config, transform, mesh, num_batches: int) -> Iterator[dict]:
  """The first ``num_batches`` batches of a held-out ``source``, in order, as
  global arrays on ``mesh`` (fewer if the source is short)."""
  batches = ShardedBatches(source, global_batch_size=config.batch_size, seed=0, shuffle=False,
                           process_index=jax.process_index(),
                           process_count=jax.process_count(), transform=transform,
                           num_epochs=1)
  for _, batch in zip(range(min(num_batches, batches.batches_per_epoch)), batches):
    yield sharding.global_batch(batch, mesh)
