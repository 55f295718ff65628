"""JAX's persistent compilation cache for the commands.

Compiling the sampler and the renderer takes most of a first `animate` on a
CPU (and tens of seconds for the 250-step sampler on a GPU); with the cache
on, a second run in a new process loads the compiled programs instead. The
compiled functions take the networks' parameters as arguments, so the
programs (and their cache keys) do not depend on the weights.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "SPECTRAL_JAX_CACHE_DIR"


def default_dir() -> Path:
  """``$SPECTRAL_JAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/spectral_jax/jax``
  (``~/.cache/spectral_jax/jax``)."""
  if os.environ.get(ENV_VAR):
    return Path(os.environ[ENV_VAR])
  base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
  return base / "spectral_jax" / "jax"


def enable(directory=None) -> Path:
  """Turns the cache on in ``directory`` (default: `default_dir`); returns it."""
  import jax
  directory = Path(directory or default_dir()).expanduser()
  directory.mkdir(parents=True, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", str(directory))
  # Every program, however quick to compile: a command compiles many small
  # ones (encoder, decoder, texture) whose sum is what a user waits for.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return directory
