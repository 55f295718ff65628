"""Sharding rules (`spectral_jax.sharding`): mesh sizing, batch and FSDP
parameter placement.

No test needs several real devices: meshes are built over stand-in device
objects (a `Mesh` only arranges them, and a `NamedSharding` on it computes
which slice of an array each one holds) or are `AbstractMesh`es, so the rules
are checked without a subprocess with fake CPU devices. End-to-end training
on 8 such devices is `test_train.test_eight_devices_equal_one`.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.sharding import AbstractMesh, PartitionSpec

from spectral_jax import sharding


class FakeDevice:
  """Enough of a device for a `Mesh` to arrange and a sharding to index."""

  def __init__(self, index: int):
    self.id = index
    self.platform = self.device_kind = "cpu"
    self.process_index = 0

  def __repr__(self):
    return f"FakeDevice({self.id})"


DEVICES = [FakeDevice(i) for i in range(8)]


def _abstract_mesh(data: int, fsdp: int) -> AbstractMesh:
  return AbstractMesh((data, fsdp), sharding.MESH_AXES)


def _rows(named_sharding, shape):
  """``{device id: (first row, end row)}`` of the leading axis each device holds."""
  return {device.id: (index[0].start or 0, index[0].stop or shape[0])
          for device, index in named_sharding.devices_indices_map(shape).items()}


# make_mesh.

@pytest.mark.parametrize("sizes, expected", [
    ({"data": -1, "fsdp": 1}, (8, 1)),
    ({"data": -1, "fsdp": 2}, (4, 2)),
    ({"data": 2, "fsdp": -1}, (2, 4)),
    ({"data": 4, "fsdp": 2}, (4, 2)),
    ({"fsdp": 8}, (1, 8)),  # A missing axis has size 1.
    ({}, None),             # Both 1: needs 1 device, there are 8.
])
def test_make_mesh_sizes(sizes, expected):
  if expected is None:
    with pytest.raises(ValueError, match="needs 1 devices, there are 8"):
      sharding.make_mesh(sizes, DEVICES)
    return
  mesh = sharding.make_mesh(sizes, DEVICES)
  assert mesh.axis_names == ("data", "fsdp")
  assert (mesh.shape["data"], mesh.shape["fsdp"]) == expected


def test_make_mesh_orders_devices_data_major():
  """Devices without a physical topology (CPUs) fill the mesh in the order
  given, ``fsdp`` fastest: an ``fsdp`` group is consecutive devices. (TPU
  slices are laid out along their torus: tests/test_compile_tpu.py.)"""
  mesh = sharding.make_mesh({"data": 4, "fsdp": 2}, DEVICES)
  ids = np.vectorize(lambda device: device.id)(mesh.devices)
  np.testing.assert_array_equal(ids, np.arange(8).reshape(4, 2))


@pytest.mark.parametrize("sizes, message", [
    ({"data": -1, "model": 2}, "unknown mesh axes \\['model'\\]"),
    ({"data": -1, "fsdp": -1}, "at most one mesh axis may be -1"),
    ({"data": -1, "fsdp": 3}, "8 devices do not split into mesh"),
    ({"data": 2, "fsdp": 2}, "needs 4 devices, there are 8"),
    ({"data": 4, "fsdp": 4}, "needs 16 devices, there are 8"),
    ({"data": 4, "fsdp": 2, "dcn_data": 3}, "mesh.dcn_data=3 does not divide the data axis"),
])
def test_make_mesh_refuses_bad_sizes(sizes, message):
  with pytest.raises(ValueError, match=message):
    sharding.make_mesh(sizes, DEVICES)


def test_make_mesh_defaults_to_every_device(monkeypatch):
  monkeypatch.setattr(jax, "devices", lambda: DEVICES)
  mesh = sharding.make_mesh({"data": -1, "fsdp": 2})
  assert mesh.devices.size == 8 and mesh.shape["data"] == 4


# Batches.

def test_batch_splits_its_leading_axis_over_every_device():
  """Device ``(i, j)`` of a 4x2 mesh holds rows ``[2k, 2k + 2)`` with
  ``k = 2i + j``: consecutive blocks in device order, other axes whole."""
  mesh = sharding.make_mesh({"data": 4, "fsdp": 2}, DEVICES)
  batch = sharding.batch_sharding(mesh)
  assert batch.spec == PartitionSpec(("data", "fsdp"))
  assert _rows(batch, (16, 5, 3)) == {k: (2 * k, 2 * k + 2) for k in range(8)}
  shards = batch.devices_indices_map((16, 5, 3))
  assert all(index[1:] == (slice(None),) * 2 for index in shards.values())
  assert batch.shard_shape((16, 5, 3)) == (2, 5, 3)


def test_global_batch_places_host_arrays_with_the_batch_sharding():
  """On one process, the global batch is the local one, split as above."""
  mesh = sharding.make_mesh({"data": -1, "fsdp": 1})
  local = {"image": np.arange(2 * jax.device_count() * 6, dtype=np.uint8).reshape(-1, 2, 3),
           "t": np.arange(2 * jax.device_count(), dtype=np.int32)}
  arrays = sharding.global_batch(local, mesh)
  assert set(arrays) == set(local)
  for name, value in local.items():
    assert arrays[name].sharding == sharding.batch_sharding(mesh), name
    assert arrays[name].dtype == value.dtype
    np.testing.assert_array_equal(np.asarray(arrays[name]), value)


def test_replicated_splits_nothing():
  mesh = sharding.make_mesh({"data": 4, "fsdp": 2}, DEVICES)
  replicated = sharding.replicated(mesh)
  assert replicated.spec == PartitionSpec()
  assert set(_rows(replicated, (16, 3)).values()) == {(0, 16)}


# Parameters.

@pytest.mark.parametrize("shape, spec", [
    ((3, 3, 64, 128), (None, None, None, "fsdp")),  # The largest dimension.
    ((128, 64), ("fsdp", None)),
    ((3, 3, 129, 64), (None, None, None, "fsdp")),  # The largest is indivisible: the next.
    ((64, 64, 3), ("fsdp", None, None)),            # A tie: the first of the largest.
    ((1024,), ("fsdp",)),
    ((3, 5, 7, 9, 11), ()),                         # None divisible: replicated.
])
def test_fsdp_splits_the_largest_divisible_dimension(shape, spec):
  mesh = _abstract_mesh(4, 2)
  placed = sharding.param_sharding(shape, mesh, min_size=1)
  assert placed.spec == PartitionSpec(*spec)
  if spec:  # Split over fsdp only, never over data.
    split = [dim for dim, axis in enumerate(spec) if axis]
    assert placed.shard_shape(shape) == tuple(
        size // 2 if dim in split else size for dim, size in enumerate(shape))


def test_fsdp_splits_only_by_the_fsdp_size():
  """Divisibility is by the ``fsdp`` size (4 here), not the device count."""
  placed = sharding.param_sharding((6, 8, 12), _abstract_mesh(2, 4), min_size=1)
  assert placed.spec == PartitionSpec(None, None, "fsdp")
  placed = sharding.param_sharding((6, 10, 2), _abstract_mesh(2, 4), min_size=1)
  assert placed.spec == PartitionSpec()


@pytest.mark.parametrize("min_size, fsdp, sharded", [
    (None, 2, False),     # No rule: everything replicated.
    (0, 1, False),        # An fsdp axis of 1 has nothing to split over.
    (4097, 2, False),     # Smaller than min_size.
    (4096, 2, True),      # Exactly min_size elements: split.
    (0, 2, True),
])
def test_fsdp_replicates_small_arrays_and_without_an_fsdp_axis(min_size, fsdp, sharded):
  placed = sharding.param_sharding((64, 64), _abstract_mesh(8 // fsdp, fsdp), min_size)
  assert placed.spec == (PartitionSpec("fsdp", None) if sharded else PartitionSpec())


def test_tree_shardings_place_every_leaf():
  """Arrays and abstract arrays by `param_sharding`; scalars, arrays of
  shape ``()`` and leaves without a shape replicated; the tree kept."""
  mesh = _abstract_mesh(4, 2)
  tree = {
      "conv": {"kernel": jax.ShapeDtypeStruct((3, 3, 8, 16), np.float32),
               "bias": np.zeros((16,), np.float32)},
      "odd": jax.ShapeDtypeStruct((3, 5), np.float32),
      "step": np.int32(3),
      "scale": 0.5,
      "layers": [np.zeros((4, 6), np.float32)],
  }
  placed = sharding.tree_shardings(tree, mesh, min_size=16)
  assert jax.tree.structure(placed) == jax.tree.structure(tree)
  assert placed["conv"]["kernel"].spec == PartitionSpec(None, None, None, "fsdp")
  assert placed["conv"]["bias"].spec == PartitionSpec("fsdp")  # 16 elements: not below.
  assert placed["layers"][0].spec == PartitionSpec(None, "fsdp")
  for name in ("odd", "step", "scale"):
    assert placed[name].spec == PartitionSpec(), name
  assert all(leaf.mesh == mesh for leaf in jax.tree.leaves(placed))
  replicated = sharding.tree_shardings(tree, mesh, min_size=None)
  assert all(leaf.spec == PartitionSpec() for leaf in jax.tree.leaves(replicated))


def test_sharding_rules_override_the_default_by_path():
  """A rule places the arrays whose path it matches and whose rank its spec
  has (the parameter and its optimizer moments); the others keep the
  largest-divisible-dimension rule; a spec the shape cannot take is an
  error naming the rule and the array."""
  mesh = _abstract_mesh(2, 4)
  leaf = lambda *shape: jax.ShapeDtypeStruct(shape, np.float32)
  tree = {"attn": {"qkv": {"kernel": leaf(64, 192), "bias": leaf(192)}},
          "conv": {"kernel": leaf(3, 3, 64, 64)},
          "opt": {"mu": {"attn": {"qkv": {"kernel": leaf(64, 192)}}}}}
  rules = ((r"attn/qkv/kernel$", ("fsdp", None)), (r"qkv/bias", (None,)))
  placed = sharding.tree_shardings(tree, mesh, 1, rules)
  assert placed["attn"]["qkv"]["kernel"].spec == PartitionSpec("fsdp", None)
  assert placed["opt"]["mu"]["attn"]["qkv"]["kernel"].spec == PartitionSpec("fsdp", None)
  assert placed["attn"]["qkv"]["bias"].spec == PartitionSpec(None)
  # The default: the largest dimension the axis divides.
  assert placed["conv"]["kernel"].spec == PartitionSpec(None, None, "fsdp", None)
  with pytest.raises(ValueError, match="sharding rule 'conv': dimension 0 of conv/kernel"):
    sharding.tree_shardings(tree, mesh, 1, (("conv", ("fsdp", None, None, None)),))
