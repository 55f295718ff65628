"""Sharded, shuffled, resumable batches."""

import json
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pytest

from spectral_jax.data import pipeline, sources
from spectral_jax.motion.normalize import NormalizationStats


def _source(size):
  return [{"id": np.int32(i), "x": np.full((2,), i, np.float16)} for i in range(size)]


def _ids(batches, count):
  return [next(batches)["id"].tolist() for _ in range(count)]


def test_process_shards_are_disjoint_and_cover_each_epoch():
  source = _source(24)
  shards = [pipeline.ShardedBatches(source, global_batch_size=8, seed=3, process_index=p,
                                    process_count=2, num_epochs=1) for p in range(2)]
  seen = [sum((b["id"].tolist() for b in shard), []) for shard in shards]
  assert len(seen[0]) == len(seen[1]) == 12
  assert not set(seen[0]) & set(seen[1])
  assert sorted(seen[0] + seen[1]) == list(range(24))


def test_a_global_batch_is_the_same_row_for_row_on_any_number_of_processes():
  """Process p's rows are block p of the global batch, as its devices hold
  them: 2 processes x 4 devices train on the batches of 1 x 8, in order
  (per-example noise then falls on the same examples)."""
  make = lambda index, count: pipeline.ShardedBatches(
      _source(40), global_batch_size=8, seed=1, process_index=index, process_count=count)
  one = make(0, 1)
  two = [make(p, 2) for p in range(2)]
  for _ in range(7):  # Into a second epoch (5 batches each).
    assert next(one)["id"].tolist() == sum((next(b)["id"].tolist() for b in two), [])


def test_deterministic_by_seed_and_reshuffled_per_epoch():
  make = lambda seed: pipeline.ShardedBatches(_source(12), global_batch_size=4, seed=seed,
                                              process_index=0, process_count=1)
  first = _ids(make(0), 6)
  assert first == _ids(make(0), 6)
  assert first != _ids(make(1), 6)
  epoch0, epoch1 = sum(first[:3], []), sum(first[3:], [])
  assert sorted(epoch0) == sorted(epoch1) == list(range(12)) and epoch0 != epoch1


def test_resume_from_state_gives_the_same_stream():
  make = lambda: pipeline.ShardedBatches(_source(10), global_batch_size=4, seed=5,
                                         process_index=1, process_count=2)
  uninterrupted = _ids(make(), 7)
  first = make()
  _ids(first, 3)
  state = first.get_state()
  resumed = make()
  resumed.set_state(state)
  assert _ids(resumed, 4) == uninterrupted[3:]


def test_worker_processes_give_the_same_stream_and_resume_at_any_position():
  """Batches built in 2 worker processes (transform included) are those of
  one thread; a state saved without workers resumes with them."""
  keep_ids = pipeline.normalized_spectral(NormalizationStats(np.ones(1, np.float32), 97.0, 1),
                                          ("id",))
  make = lambda workers: pipeline.ShardedBatches(
      _source(40), global_batch_size=8, seed=1, process_index=1, process_count=2,
      transform=keep_ids, worker_count=workers)
  uninterrupted = _ids(make(0), 9)  # Into a second epoch (5 batches each).
  resumed = make(2)
  resumed.set_state({"epoch": 0, "batch": 3})
  try:
    batches = [next(resumed) for _ in range(6)]
    assert [b["id"].tolist() for b in batches] == uninterrupted[3:]
    assert all(list(b) == ["id"] for b in batches)  # Transformed in the workers.
    assert resumed.get_state() == {"epoch": 1, "batch": 4}
  finally:
    resumed.close()


# A process that reads batches with one worker, prints the worker's pid, and
# waits to be killed.
_KILLED_READER = """
import json, multiprocessing, time
import numpy as np
from spectral_jax.data import pipeline
source = [{"id": np.int32(i)} for i in range(8)]
if __name__ == "__main__":
  batches = pipeline.ShardedBatches(source, global_batch_size=2, seed=0, process_index=0,
                                    process_count=1, worker_count=1)
  next(batches)
  print(json.dumps([p.pid for p in multiprocessing.active_children()]), flush=True)
  time.sleep(600)
"""


def _running(pid: int) -> bool:
  stat = Path(f"/proc/{pid}/stat")
  try:
    return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"  # A zombie has exited.
  except (FileNotFoundError, ProcessLookupError):
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_when_the_training_process_is_killed():
  reader = subprocess.Popen([sys.executable, "-c", _KILLED_READER], stdout=subprocess.PIPE,
                            text=True)
  try:
    workers = json.loads(reader.stdout.readline())
  finally:
    reader.kill()
    reader.wait()
  assert workers
  deadline = time.monotonic() + 15
  while any(map(_running, workers)) and time.monotonic() < deadline:
    time.sleep(0.2)
  assert not any(map(_running, workers))


class _CountingSource:
  """A list source that records which indices were read."""

  def __init__(self, size):
    self.examples, self.read = _source(size), []

  def __len__(self):
    return len(self.examples)

  def __getitem__(self, index):
    self.read.append(int(index))
    return self.examples[index]


def test_a_process_reads_only_its_own_rows():
  source = _CountingSource(20)
  batches = pipeline.ShardedBatches(source, global_batch_size=8, seed=2, process_index=0,
                                    process_count=2, num_epochs=1)
  ids = sum((b["id"].tolist() for b in batches), [])
  assert sorted(source.read) == sorted(ids) and len(ids) == 8  # 2 batches of 4 rows.


def test_synthetic_source_survives_the_trip_to_a_worker():
  """Workers receive the source by cloudpickle (Grain's `mp_prefetch`)."""
  source = sources.SyntheticExamples("train", num_examples=3, num_frames=8, fps=30.0,
                                     height=16, width=16, num_freqs=2)
  copy = cloudpickle.loads(cloudpickle.dumps(source))
  for key, value in source[2].items():
    np.testing.assert_array_equal(copy[2][key], value)


def test_unshuffled_order_and_epoch_limit():
  batches = pipeline.ShardedBatches(_source(5), global_batch_size=2, seed=0, shuffle=False,
                                    process_index=0, process_count=1, num_epochs=2)
  assert [b["id"].tolist() for b in batches] == [[0, 1], [2, 3], [0, 1], [2, 3]]


def test_bad_batch_sizes():
  with pytest.raises(ValueError, match="does not split"):
    pipeline.ShardedBatches(_source(8), global_batch_size=3, seed=0, process_index=0,
                            process_count=2)
  with pytest.raises(ValueError, match="too few"):
    pipeline.ShardedBatches(_source(3), global_batch_size=4, seed=0, process_index=0,
                            process_count=1)
  with pytest.raises(ValueError, match="worker_count must be at least 0"):
    pipeline.ShardedBatches(_source(4), global_batch_size=4, seed=0, process_index=0,
                            process_count=1, worker_count=-1)


def test_normalized_spectral_transform():
  stats = NormalizationStats(np.array([4.0, 1.0], np.float32), 97.0, 10)
  batch = {"spectral_volume": np.full((1, 2, 1, 1, 4), 4.0, np.float16),
           "displacements": np.zeros((1, 3, 1, 1, 2), np.float16)}
  out = pipeline.normalized_spectral(stats)(batch)
  assert out["spectral_volume"].dtype == np.float32
  np.testing.assert_allclose(out["spectral_volume"][0, :, 0, 0, 0], [1.0, 2.0])
  assert out["displacements"].dtype == np.float32
  assert batch["spectral_volume"].dtype == np.float16  # Input left alone.
