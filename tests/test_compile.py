"""The parts of `spectral_jax.train.compile` that need no TPU compiler: the
search for the largest batch that fits, and the reading of collectives
from HLO text. (Compiling for TPU topologies: tests/test_compile_tpu.py.)"""

from __future__ import annotations

import pytest

from spectral_jax.train import compile as aot


def _fake_compiler(memory_gib, hbm_gib: float):
  """``compile_at`` whose batch ``b`` needs ``memory_gib(b)``; counts calls."""
  calls = []

  def compile_at(batch):
    calls.append(batch)
    total = memory_gib(batch)
    return {"fits": total <= hbm_gib, "memory_per_chip_gib": {"total": total}}

  return compile_at, calls


@pytest.mark.parametrize("memory_gib, name", [
    (lambda b: 3.0 + 0.5 * b, "linear"),
    # Rematerialisation near the limit: memory grows slower than the line
    # from batches 1 and 2 predicts.
    (lambda b: 3.0 + 0.5 * b if b < 20 else 13.0 + 0.05 * (b - 20), "flattening"),
    (lambda b: 3.0 + 0.5 * b + (100.0 if b >= 11 else 0.0), "a cliff"),
    (lambda b: 15.0 + 0.6 * b, "one"),
    (lambda b: 17.0 * b, "none"),
])
def test_find_batch_finds_the_largest_that_fits(memory_gib, name):
  hbm = 16.0
  largest = max([b for b in range(1, 1000) if memory_gib(b) <= hbm], default=0)
  compile_at, calls = _fake_compiler(memory_gib, hbm)
  batch, report = aot.find_batch(compile_at, hbm)
  assert batch == largest, name
  assert report["fits"] == (largest > 0)
  if name == "linear":  # 1, 2, the prediction and its neighbour.
    assert calls == [1, 2, 26, 27]
  if name == "none":  # Batch 1's report says by how much; no second compile.
    assert calls == [1]
  assert len(calls) <= 12, calls


@pytest.mark.parametrize("line, name", [
    ((3.5, 4.0), "the same"),
    ((3.6, 4.2), "pessimistic"),   # Predicts 20.
    ((3.2, 3.5), "optimistic"),    # Predicts 43.
    ((16.5, 17.0), "nothing"),     # Predicts 0: batch 1 is tried.
])
def test_find_batch_starts_from_a_line_measured_elsewhere(line, name):
  """``line``: the memory of batches 1 and 2 from another compile (another
  chip); the search compiles from its prediction on."""
  compile_at, calls = _fake_compiler(lambda b: 3.0 + 0.5 * b, 16.0)
  batch, report = aot.find_batch(compile_at, 16.0, line)
  assert batch == 26 and report["fits"], name
  assert 1 not in calls or name == "nothing", calls
  if name == "the same":
    assert calls == [26, 27]
  assert len(calls) <= 10, calls
  compile_at, calls = _fake_compiler(lambda b: 17.0 * b, 16.0)
  assert aot.find_batch(compile_at, 16.0, line)[0] == 0


def test_an_interrupted_search_goes_on_with_the_compiles_it_kept(tmp_path):
  probes = tmp_path / "probes.jsonl"
  compile_at, calls = _fake_compiler(lambda b: 3.0 + 0.5 * b, 16.0)

  def killed_after_two(batch):
    if len(calls) == 2:
      raise KeyboardInterrupt
    return compile_at(batch)

  with pytest.raises(KeyboardInterrupt):
    aot.find_batch(aot.remembered(killed_after_two, probes, "command A"), 16.0)
  assert calls == [1, 2]
  with probes.open("a") as cut:  # A line half written when it was killed.
    cut.write('{"command": "command A", "per_')
  batch, _ = aot.find_batch(aot.remembered(compile_at, probes, "command A"), 16.0)
  assert batch == 26 and calls == [1, 2, 26, 27]
  assert aot.find_batch(aot.remembered(compile_at, probes, "command A"), 16.0)[0] == 26
  assert len(calls) == 4
  # Another command's compiles are not its own.
  aot.find_batch(aot.remembered(compile_at, probes, "command B"), 16.0)
  assert calls[4:6] == [1, 2]


def test_collectives_are_counted_with_their_bytes_and_cross_slice_transfers_apart():
  hlo = "\n".join([
      "  %all-gather.1 = bf16[3,3,128,128]{3,2,1,0} all-gather(%p), channel_id=1",
      "  %all-reduce.2 = (f32[128,384]{0,1}, f32[16]{0}) all-reduce(%a, %b), channel_id=2",
      # An asynchronous start: its tuple is the operands, then the results.
      "  %ag-start = (f32[8]{0}, f32[32]{0}) all-gather-start(%c), channel_id=3",
      "  %ag-done = f32[32]{0} all-gather-done(%ag-start)",
      # One cross-slice all-reduce sent in two chunks.
      '  %send = (f32[96,4,128]{2,1,0}, u32[], token[]) send(%x, %t), frontend_attributes='
      '{_xla_host_transfer_rendezvous="all-reduce.9_0",_xla_megascale_transfer_type="ALL_REDUCE"}',
      '  %send.1 = (f32[4]{0}, u32[], token[]) send(%y, %t), frontend_attributes='
      '{_xla_host_transfer_rendezvous="all-reduce.9_1",_xla_megascale_transfer_type="ALL_REDUCE"}',
      '  %fusion = f32[8]{0} fusion(%z), metadata={op_name="all-reduce(x)"}',
  ])
  assert aot.collectives(hlo) == {
      "all-gather": {"count": 2, "bytes": 2 * 9 * 128 * 128 + 4 * 32},
      "all-reduce": {"count": 1, "bytes": 4 * (128 * 384 + 16)},
      "cross_slice/all-reduce": {"count": 1, "bytes": 4 * (96 * 4 * 128 + 4)},
  }


@pytest.mark.parametrize("topology", ["v5e:2x2", "v5p:4x4x4", "v6e:16x16", "v4:2x2x1"])
def test_known_chips(topology):
  assert aot.chip_of(topology).hbm_bytes > 0


@pytest.mark.parametrize("topology", ["v5e", "v5e:2", "v3:2x2", "v5e:2x2x2x2", "tpu:2x2"])
def test_unknown_topologies(topology):
  with pytest.raises(ValueError, match="unknown topology"):
    aot.chip_of(topology)
