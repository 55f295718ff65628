"""Test-wide settings.

XLA's CPU backend optimizations are turned down: the tests compile many
small programs and run each a few times, so compile time, not run time,
dominates (about 40% less wall time for a training test here). Numerics are
unaffected beyond float rounding, which every tolerance allows for; the
bitwise checks (resume, batched against one by one, sharded against not)
compare two programs compiled alike. ``SPECTRAL_JAX_TEST_XLA_DEFAULT=1``
keeps XLA's default level, to run the suite as users' code compiles.
"""

import os

import pytest

# Parallel test processes (pytest-xdist) share a GPU: each allocates what
# it uses instead of most of the GPU's memory at its start.
if os.environ.get("PYTEST_XDIST_WORKER"):
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

if os.environ.get("SPECTRAL_JAX_TEST_XLA_DEFAULT") != "1":
  os.environ["XLA_FLAGS"] = " ".join(
      [os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0"]).strip()


@pytest.fixture(autouse=True, scope="session")
def _compile_cache_of_this_run(tmp_path_factory):
  """The commands' persistent compilation cache (`inference.compile_cache`)
  in a folder of this run, never ~/.cache."""
  os.environ.setdefault("SPECTRAL_JAX_CACHE_DIR", str(tmp_path_factory.mktemp("jax_cache")))


# A test process peaks at a few GiB (8 fake devices compiling a training
# step); one per core would swap on a machine with many cores and little
# memory per core.
GIB_PER_WORKER = 6
MAX_WORKERS = 8


def pytest_xdist_auto_num_workers(config):
  """``-n auto``: one test process per core, as memory allows."""
  del config
  memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
  # The cores this process may run on (Linux), else all (macOS).
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return max(1, min(cores, int(memory_gib // GIB_PER_WORKER), MAX_WORKERS))


# The files that take longest (`pytest --durations`), longest first: started
# before the rest, so that parallel test processes finish together.
LONGEST_FILES = ("test_train.py", "test_animate.py", "test_end_to_end.py", "test_multihost.py",
                 "test_topology.py", "test_renderer_training.py", "test_preemption.py",
                 "test_default_model.py")


def pytest_collection_modifyitems(config, items):
  del config
  rank = {name: i for i, name in enumerate(LONGEST_FILES)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # Stable: file order kept.
