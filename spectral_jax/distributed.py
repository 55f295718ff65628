"""Starting JAX's distributed runtime for a multi-process training run.

A run is multi-process when ``config.distributed.enabled`` is True, or when
the environment names its processes (`ENV_VARS`, as ``launch/local.sh``
sets them). Each of the three settings (coordinator ``HOST:PORT``, number
of processes, this process's id) comes from the config if set there, else
from its environment variable, else from JAX's own cluster detection: on a
Cloud TPU pod, under SLURM or Open MPI, ``jax.distributed.initialize()``
needs no arguments.

A process that stops sending heartbeats for
``config.distributed.heartbeat_timeout_s`` is dead to the coordination
service, which then aborts every other process with a message saying so
(JAX's "Terminating process because the JAX distributed service detected
fatal errors ... another task died"). Without that, a survivor would wait
in its next collective forever.
"""

from __future__ import annotations

import os
from typing import Mapping

import ml_collections

# Config field → the environment variable that supplies it when the config
# leaves it unset.
ENV_VARS = {
    "coordinator_address": "SPECTRAL_JAX_COORDINATOR_ADDRESS",
    "num_processes": "SPECTRAL_JAX_NUM_PROCESSES",
    "process_id": "SPECTRAL_JAX_PROCESS_ID",
}
# What a config field holds when it is unset.
_UNSET = {"coordinator_address": "", "num_processes": 0, "process_id": -1}


def requested(config: ml_collections.ConfigDict,
              environ: Mapping[str, str] | None = None) -> bool:
  """Whether the run is multi-process (config or environment says so)."""
  environ = os.environ if environ is None else environ
  return bool(config.distributed.enabled) or any(
      environ.get(name) for name in ENV_VARS.values())


def initialize_arguments(config: ml_collections.ConfigDict,
                         environ: Mapping[str, str] | None = None) -> dict:
  """Keyword arguments of ``jax.distributed.initialize`` for ``config``:
  each setting from the config, else from `ENV_VARS`, else left to JAX
  (absent). Raises ValueError for an environment value that is no number."""
  environ = os.environ if environ is None else environ
  settings = config.distributed
  arguments = {
      "initialization_timeout": int(settings.initialization_timeout_s),
      "heartbeat_timeout_seconds": int(settings.heartbeat_timeout_s),
  }
  for field, variable in ENV_VARS.items():
    value = settings[field]
    if value == _UNSET[field] and environ.get(variable):
      value = environ[variable]
      if field != "coordinator_address":
        try:
          value = int(value)
        except ValueError:
          raise ValueError(f"{variable}={value!r} is not an integer") from None
    if value != _UNSET[field]:
      arguments[field] = value
  return arguments


def initialize(config: ml_collections.ConfigDict) -> None:
  """``jax.distributed.initialize`` with `initialize_arguments`, unless an
  earlier run in this process started it (a script that trains several
  stages); call it before anything touches a JAX device."""
  import jax
  if jax.distributed.is_initialized():
    return
  # Cross-process collectives on CPU devices (``launch/local.sh``) need an
  # implementation; gloo is the default of recent JAX, named here so that
  # a version whose default differs still runs them.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**initialize_arguments(config))
