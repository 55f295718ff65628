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

if os.environ.get("SPECTRAL_JAX_TEST_XLA_DEFAULT") != "1":
  os.environ["XLA_FLAGS"] = " ".join(
      [os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0"]).strip()
