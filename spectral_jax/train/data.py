"""Batches for the training tasks: sharded, normalized, on the mesh."""

from __future__ import annotations

from typing import Iterator

import grain
import jax

from spectral_jax import sharding
from spectral_jax.data import sources
from spectral_jax.data.pipeline import ShardedBatches


def train_batches(source, config, transform, process_index: int,
                  process_count: int) -> ShardedBatches:
  """Shuffled, endless, resumable batches of ``config.batch_size`` examples
  over all processes, read by ``config.data.worker_count`` processes."""
  return ShardedBatches(source, global_batch_size=config.batch_size, seed=config.seed,
                        process_index=process_index, process_count=process_count,
                        transform=transform, worker_count=config.data.worker_count)


def open_test_source(config):
  """The held-out source the run evaluates on, or None when it never
  evaluates (``eval_every = 0``): a data set without a test split can then
  still be trained on. Raises ValueError, before any step, when evaluation
  could not fill one batch."""
  if not config.eval_every:
    return None
  try:
    source = sources.open_source(config.data, "test")
  except KeyError as error:  # A prepared set whose test split came out empty.
    raise ValueError(f"{error.args[0]}: prepare with a larger --test-fraction, or train "
                     "with --config.eval_every=0") from None
  if len(source) < config.batch_size:
    raise ValueError(
        f"the test split holds {len(source)} examples, fewer than one batch of "
        f"{config.batch_size}: lower --config.batch_size, prepare with a larger "
        "--test-fraction, or train with --config.eval_every=0")
  return source


def eval_batches(source, config, transform, mesh, num_batches: int) -> Iterator[dict]:
  """The first ``num_batches`` batches of a held-out ``source``, in order, as
  global arrays on ``mesh`` (fewer if the source is short)."""
  num_batches = min(num_batches, len(source) // config.batch_size)
  if not num_batches:
    return
  # Only the examples evaluated on: workers then read no batch beyond them.
  head = grain.MapDataset.source(source)[:num_batches * config.batch_size]
  batches = ShardedBatches(head, global_batch_size=config.batch_size, seed=0, shuffle=False,
                           process_index=jax.process_index(),
                           process_count=jax.process_count(), transform=transform,
                           num_epochs=1, worker_count=config.data.worker_count)
  try:
    for batch in batches:
      yield sharding.global_batch(batch, mesh)
  finally:
    batches.close()  # Also when the caller stops early.
