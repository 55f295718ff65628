"""Batches for training: each process reads its own shard, deterministically.

Every process computes the same global permutation of the data set for an
epoch (from the seed and the epoch number), cuts it into global batches, and
takes its own block of rows of each: process ``p`` of ``P`` the rows
``[p * B/P, (p + 1) * B/P)`` of a global batch of ``B``, the rows its devices
hold in the global array (`sharding.global_batch`; devices are numbered
process by process). The shards are disjoint, cover the data set and need
no communication, and a global batch is the same row for row whatever the
number of processes: 2 processes x 4 devices train on what 1 x 8 does. The
position (epoch, batch) is the iterator's whole state: saving it with a
checkpoint and restoring it resumes the exact same stream, on any number
of processes.
"""

from __future__ import annotations

import concurrent.futures
from typing import Callable, Sequence

import numpy as np

from spectral_jax.motion.normalize import NormalizationStats, normalize


class ShardedBatches:
  """Iterator over this process's batches of a random-access source.

  Args:
    source: ``len()`` and ``source[i]`` → dict of arrays (a TFDS data source,
      or any sequence of such dicts).
    global_batch_size: examples per step over all processes; each process
      yields ``global_batch_size // process_count`` of them.
    seed: fixes the order of every epoch.
    shuffle: a new permutation per epoch; else the source's order.
    process_index, process_count: this process's place; default to JAX's.
    transform: applied to each stacked batch (e.g. `normalized_spectral`).
    num_epochs: stop after this many epochs (None: forever).
  """

  def __init__(self, source, *, global_batch_size: int, seed: int, shuffle: bool = True,
               process_index: int | None = None, process_count: int | None = None,
               transform: Callable[[dict], dict] | None = None,
               num_epochs: int | None = None):
    if process_index is None or process_count is None:
      import jax
      process_index, process_count = jax.process_index(), jax.process_count()
    if global_batch_size % process_count:
      raise ValueError(f"global batch {global_batch_size} does not split over "
                       f"{process_count} processes")
    self._source = source
    self._local_batch = global_batch_size // process_count
    self._global_batch = global_batch_size
    if len(source) < global_batch_size:
      raise ValueError(f"{len(source)} examples are too few for a global batch of "
                       f"{global_batch_size} over {process_count} processes")
    self._seed = seed
    self._shuffle = shuffle
    self._process_index = process_index
    self._process_count = process_count
    self._transform = transform
    self._num_epochs = num_epochs
    self._epoch = 0
    self._batch = 0
    self._prefetch = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    self._pending = None

  @property
  def batches_per_epoch(self) -> int:
    return len(self._source) // self._global_batch

  def shard_indices(self, epoch: int) -> np.ndarray:
    """int64 ``[batches_per_epoch * local_batch]`` source indices this
    process reads in ``epoch``, in order."""
    size = len(self._source)
    if self._shuffle:
      order = np.random.default_rng([self._seed, epoch]).permutation(size)
    else:
      order = np.arange(size)
    batches = order[:self.batches_per_epoch * self._global_batch].reshape(
        self.batches_per_epoch, self._process_count, self._local_batch)
    return batches[:, self._process_index].reshape(-1)

  def get_state(self) -> dict:
    """The position of the next batch; JSON-serializable."""
    return {"epoch": self._epoch, "batch": self._batch}

  def set_state(self, state: dict) -> None:
    self._epoch, self._batch = int(state["epoch"]), int(state["batch"])
    self._pending = None

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self._num_epochs is not None and self._epoch >= self._num_epochs:
      raise StopIteration
    position = (self._epoch, self._batch)
    pending, self._pending = self._pending, None
    batch = (pending[1].result() if pending and pending[0] == position
             else self._load(*position))
    self._batch += 1
    if self._batch == self.batches_per_epoch:
      self._epoch, self._batch = self._epoch + 1, 0
    # Reads the next batch while the caller trains on this one.
    if self._num_epochs is None or self._epoch < self._num_epochs:
      next_position = (self._epoch, self._batch)
      self._pending = (next_position, self._prefetch.submit(self._load, *next_position))
    return batch

  def _load(self, epoch: int, batch: int) -> dict:
    indices = self.shard_indices(epoch)[batch * self._local_batch:(batch + 1) * self._local_batch]
    stacked = stack_examples([self._source[int(i)] for i in indices])
    return self._transform(stacked) if self._transform else stacked


def stack_examples(examples: Sequence[dict]) -> dict:
  """List of example dicts → dict of ``[B, ...]`` arrays."""
  return {key: np.stack([np.asarray(e[key]) for e in examples]) for key in examples[0]}


def normalized_spectral(stats: NormalizationStats,
                        keys: Sequence[str] | None = None) -> Callable[[dict], dict]:
  """Batch transform: keeps ``keys`` (default all); ``spectral_volume``
  float16 pixels → float32 frequency-normalized ``[B, K, H, W, 4]``;
  ``displacements`` to float32 pixels."""
  def transform(batch: dict) -> dict:
    batch = {key: batch[key] for key in (batch if keys is None else keys)}
    if "spectral_volume" in batch:
      batch["spectral_volume"] = normalize(batch["spectral_volume"].astype(np.float32),
                                           stats.scales, stats.power)
    if "displacements" in batch:
      batch["displacements"] = batch["displacements"].astype(np.float32)
    return batch
  return transform
