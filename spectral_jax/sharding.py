"""One named device mesh, and where arrays live on it.

The mesh has two axes, ``data`` and ``fsdp``; their sizes come from the
config (``-1`` takes the devices left over). Batches are split along their
leading axis over both axes. Parameters and optimizer state are replicated,
or, FSDP-style, split along one of their dimensions over ``fsdp`` when the
config's rule asks for it (`param_sharding`). The same code serves 1 CPU, 8
fake CPU devices, a GPU node or a TPU pod.
"""

from __future__ import annotations

import math
import re
from typing import Mapping

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp")
BATCH_AXES = MESH_AXES  # The leading axis of a batch is split over both.


def make_mesh(axis_sizes: Mapping[str, int], devices=None) -> Mesh:
  """Mesh over ``devices`` (default: all) with ``MESH_AXES`` sized by
  ``axis_sizes`` (e.g. ``{"data": -1, "fsdp": 1}``; one size may be -1),
  laid out along the devices' physical interconnect (on a TPU slice,
  neighbours on an axis are neighbours on the torus).

  ``axis_sizes["dcn_data"]`` (default 1): how many slices (device groups
  joined by the data-centre network, not by the chips' interconnect) the
  ``data`` axis spans; ``fsdp``, whose all-gathers run every layer, and the
  rest of ``data`` stay within a slice, so only the gradients' all-reduce
  crosses slices.
  """
  devices = jax.devices() if devices is None else list(devices)
  unknown = set(axis_sizes) - set(MESH_AXES) - {"dcn_data"}
  if unknown:
    raise ValueError(f"unknown mesh axes {sorted(unknown)}; the mesh has {MESH_AXES} "
                     "and dcn_data")
  sizes = [int(axis_sizes.get(name, 1)) for name in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {dict(axis_sizes)}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices do not split into mesh {dict(axis_sizes)}")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
                     f"there are {len(devices)}")
  slices = int(axis_sizes.get("dcn_data", 1))
  if slices < 1 or sizes[0] % slices:
    raise ValueError(f"mesh.dcn_data={slices} does not divide the data axis of {sizes[0]}")
  if slices == 1:
    grid = mesh_utils.create_device_mesh(sizes, devices, allow_split_physical_axes=True)
  else:
    grid = mesh_utils.create_hybrid_device_mesh(
        [sizes[0] // slices, sizes[1]], [slices, 1], devices, allow_split_physical_axes=True)
  return Mesh(grid, MESH_AXES)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over every device."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def param_sharding(shape: tuple[int, ...], mesh: Mesh, min_size: int | None) -> NamedSharding:
  """Sharding of one parameter (or optimizer-state array) of ``shape``.

  With ``min_size`` None, or an ``fsdp`` axis of 1, everything is
  replicated. Otherwise an array of at least ``min_size`` elements is split
  over ``fsdp`` along its largest dimension that the axis divides (smaller
  ones and indivisible ones stay replicated: their all-gather would cost
  more than it saves).
  """
  fsdp = mesh.shape["fsdp"]
  if min_size is None or fsdp == 1 or math.prod(shape) < min_size:
    return replicated(mesh)
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp == 0:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return NamedSharding(mesh, PartitionSpec(*spec))
  return replicated(mesh)


def tree_shardings(abstract_tree, mesh: Mesh, min_size: int | None, rules=()):
  """The sharding of every array leaf of ``abstract_tree`` (scalars and
  other leaves are replicated).

  ``rules``: ``((regex, spec), ...)``, ``spec`` one mesh axis name or None
  per dimension. The first rule whose regex is found in a leaf's path
  (``"decoder/conv_in/kernel"``; an optimizer state's moments have their
  parameter's path inside theirs) and whose spec has the leaf's rank places
  it; leaves no rule places follow `param_sharding`.
  """
  compiled = [(re.compile(pattern), tuple(spec)) for pattern, spec in rules]

  def place(path, leaf):
    shape = tuple(getattr(leaf, "shape", ()))
    name = "/".join(str(getattr(key, "key", getattr(key, "idx", getattr(key, "name", key))))
                    for key in path)
    for pattern, spec in compiled:
      if len(spec) == len(shape) and pattern.search(name):
        for dim, axis in enumerate(spec):
          if axis is not None and shape[dim] % mesh.shape[axis]:
            raise ValueError(f"sharding rule {pattern.pattern!r}: dimension {dim} of {name} "
                             f"{shape} does not split over {axis}={mesh.shape[axis]}")
        return NamedSharding(mesh, PartitionSpec(*spec))
    return param_sharding(shape, mesh, min_size)

  return jax.tree_util.tree_map_with_path(place, abstract_tree)


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's ``[local_batch, ...]`` arrays → global arrays split along
  the batch axis (multi-host: each process brings its own shard)."""
  sharding = batch_sharding(mesh)
  return {name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
          for name, value in local_batch.items()}
