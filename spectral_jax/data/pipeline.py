"""Batches for training, read through Grain: each process its own rows,
deterministically.

Every process computes the same global permutation of the data set for an
epoch (from the seed and the epoch number), cuts it into global batches, and
takes its own block of rows of each: process ``p`` of ``P`` the rows
``[p * B/P, (p + 1) * B/P)`` of a global batch of ``B``, the rows its devices
hold in the global array (`sharding.global_batch`; devices are numbered
process by process). The shards are disjoint, cover the data set and need
no communication, and a global batch is the same row for row whatever the
number of processes: 2 processes x 4 devices train on what 1 x 8 does.

On Grain (`grain.MapDataset`): the source (a TFDS data source or
`sources.SyntheticExamples`, both random access) is wrapped by
``MapDataset.source``; `ProcessRows` puts this process's examples in order,
over all epochs; ``batch`` stacks them into local batches and ``map``
applies the transform. Reading goes through ``to_iter_dataset``: in this
process, one thread reads one batch ahead (``worker_count = 0``); or
``mp_prefetch`` spreads the batches over ``worker_count`` spawned processes,
worker ``w`` building batches ``w, w + n, ...``, which Grain hands back in
order: the stream is the same for any number of workers.

The position (epoch, batch) is the iterator's whole state: saving it with a
checkpoint and restoring it resumes the exact same stream, on any number of
processes and workers. (Grain's own iterator state records each worker's
position, so it restores only onto the same ``worker_count``.) Resuming
slices the batch dataset at the position.
"""

from __future__ import annotations

import functools
import gc
import os
import sys
import threading
import time
from typing import Callable, Sequence

import grain
import numpy as np
from absl import flags

from spectral_jax.motion.normalize import NormalizationStats, normalize


@functools.lru_cache(maxsize=2)
def _epoch_order(seed: int, epoch: int, size: int, shuffle: bool) -> np.ndarray:
  """int64 ``[size]``: the source indices of epoch ``epoch``, in order. Cached:
  every example of a batch looks up the same epoch."""
  if not shuffle:
    return np.arange(size)
  return np.random.default_rng([seed, epoch]).permutation(size)


class ProcessRows(grain.MapDataset):
  """This process's examples of the epochs' global batches, in order.

  Element ``n`` is row ``n mod L`` of this process's block (``L`` = global
  batch / process count) of global batch ``n // L`` (counted over epochs; an
  epoch's permutation beyond its last full global batch is never read).

  Args:
    parent: the examples, random access (``MapDataset.source(source)``).
    global_batch_size, seed, shuffle, process_index, process_count,
      num_epochs: as in `ShardedBatches`.
  """

  def __init__(self, parent: grain.MapDataset, *, global_batch_size: int, seed: int,
               shuffle: bool, process_index: int, process_count: int,
               num_epochs: int | None):
    super().__init__(parent)
    self._global_batch = global_batch_size
    self._local_batch = global_batch_size // process_count
    self._first_row = process_index * self._local_batch
    self._seed, self._shuffle = seed, shuffle
    self._batches_per_epoch = len(parent) // global_batch_size
    # An endless stream is as long as a Python sequence can be.
    self._length = (sys.maxsize if num_epochs is None
                    else num_epochs * self._batches_per_epoch * self._local_batch)

  def __len__(self) -> int:
    return self._length

  def __str__(self) -> str:
    return (f"ProcessRows(rows {self._first_row}..{self._first_row + self._local_batch - 1} "
            f"of global batches of {self._global_batch}, seed={self._seed}, "
            f"shuffle={self._shuffle})")

  def source_index(self, index: int) -> int:
    """The source index of element ``index``."""
    global_batch, row = divmod(index, self._local_batch)
    epoch, batch = divmod(global_batch, self._batches_per_epoch)
    order = _epoch_order(self._seed, epoch, len(self._parent), self._shuffle)
    return int(order[batch * self._global_batch + self._first_row + row])

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    if not 0 <= index < self._length:
      raise IndexError(f"element {index} of {self._length}")
    return self._parent[self.source_index(index)]


class ShardedBatches:
  """Iterator over this process's batches of a random-access source.

  Args:
    source: ``len()`` and ``source[i]`` → dict of arrays (a TFDS data source,
      or any sequence of such dicts); sent to worker processes by pickling.
    global_batch_size: examples per step over all processes; each process
      yields ``global_batch_size // process_count`` of them.
    seed: fixes the order of every epoch.
    shuffle: a new permutation per epoch; else the source's order.
    process_index, process_count: this process's place; default to JAX's.
    transform: applied to each stacked batch (e.g. `normalized_spectral`),
      in the worker processes when there are some.
    num_epochs: stop after this many epochs (None: forever).
    worker_count: processes that read and transform batches
      (``config.data.worker_count``); 0: one thread of this process.
  """

  def __init__(self, source, *, global_batch_size: int, seed: int, shuffle: bool = True,
               process_index: int | None = None, process_count: int | None = None,
               transform: Callable[[dict], dict] | None = None,
               num_epochs: int | None = None, worker_count: int = 0):
    if process_index is None or process_count is None:
      import jax
      process_index, process_count = jax.process_index(), jax.process_count()
    if global_batch_size % process_count:
      raise ValueError(f"global batch {global_batch_size} does not split over "
                       f"{process_count} processes")
    if len(source) < global_batch_size:
      raise ValueError(f"{len(source)} examples are too few for a global batch of "
                       f"{global_batch_size} over {process_count} processes")
    if worker_count < 0:
      raise ValueError(f"worker_count must be at least 0, got {worker_count}")
    rows = ProcessRows(grain.MapDataset.source(source), global_batch_size=global_batch_size,
                       seed=seed, shuffle=shuffle, process_index=process_index,
                       process_count=process_count, num_epochs=num_epochs)
    batches = rows.batch(global_batch_size // process_count, drop_remainder=True,
                         batch_fn=stack_examples)
    self._batches = batches.map(transform) if transform else batches
    self._batches_per_epoch = len(source) // global_batch_size
    self._worker_count = worker_count
    self._position = 0  # Global batches yielded since the first epoch began.
    self._iterator = None

  def get_state(self) -> dict:
    """The position of the next batch; JSON-serializable."""
    epoch, batch = divmod(self._position, self._batches_per_epoch)
    return {"epoch": epoch, "batch": batch}

  def set_state(self, state: dict) -> None:
    self.close()
    self._position = int(state["epoch"]) * self._batches_per_epoch + int(state["batch"])

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self._iterator is None:
      self._iterator = self._read_from(self._position)
    batch = next(self._iterator)
    self._position += 1
    if self._worker_count:
      # A worker's arrays arrive in shared memory that Grain unmaps when they
      # are freed; a JAX array on the CPU may alias its input, so the batch
      # owns a copy.
      batch = {key: np.array(value) for key, value in batch.items()}
    return batch

  def close(self) -> None:
    """Stops the reading thread or worker processes; a later ``next`` starts
    them again at the position."""
    if self._iterator is not None:
      self._iterator.close()
      self._iterator = None
      if self._worker_count:
        # Grain's iterators keep the last batch of each worker in reference
        # cycles: collected now, its shared memory is freed now, not at exit
        # (where Python warns of leaked shared_memory objects).
        gc.collect()

  def _read_from(self, position: int) -> grain.DatasetIterator:
    remaining = self._batches[position:]
    if not self._worker_count:
      # Reads the next batch while the caller trains on this one.
      return iter(remaining.to_iter_dataset(
          grain.ReadOptions(num_threads=1, prefetch_buffer_size=1)))
    # Grain 0.2.18 reads one of its absl flags when it starts workers, which
    # raises unless absl has parsed the command line (`python -m
    # spectral_jax.train` has; pytest and tools/benchmark.py have not): the
    # flags then keep their defaults.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    # Each worker builds its batches one at a time and queues one ahead.
    return iter(remaining.to_iter_dataset(grain.ReadOptions(num_threads=0)).mp_prefetch(
        grain.MultiprocessingOptions(num_workers=self._worker_count,
                                     per_worker_buffer_size=1),
        worker_init_fn=_exit_with_parent))


def _exit_with_parent(worker_index: int, worker_count: int) -> None:
  """Worker start-up: the worker exits when the process that started it is
  gone. Grain's workers otherwise wait forever for a killed (SIGKILL, out of
  memory) training process to take their next batch."""
  del worker_index, worker_count
  parent = os.getppid()

  def watch():
    while os.getppid() == parent:  # An orphan is adopted by another process.
      time.sleep(1.0)
    os._exit(1)

  threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


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
