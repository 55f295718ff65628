"""What every training config has, for `configs/<stage>.py` to build on.

The paper's numbers live in the `configs/` files; this module only fixes the
shape of a config and the variants' data and run lengths:

  tiny   trains on a laptop CPU in minutes, on synthetic scenes made on the fly
         (64x48 pixels, T=32 frames, K=8), needing no prepared data set;
  paper  256x160, K=16, a data set from `spectral-jax prepare`;
  hires  512x288 fine-tuning from a `paper` run (``--config.init_from=DIR``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ml_collections

VARIANTS = ("tiny", "paper", "hires")


def base_config(stage: str, variant: str) -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; one of {VARIANTS}")
  tiny = variant == "tiny"
  config = ml_collections.ConfigDict()
  config.stage = stage
  config.variant = variant
  config.seed = 0
  config.num_steps = 1000
  config.batch_size = 8
  config.log_every = 25 if tiny else 100
  config.eval_every = 250 if tiny else 5000
  config.checkpoint_every = 250 if tiny else 5000
  config.keep_checkpoints = 3
  # Multi-host runs call jax.distributed.initialize() first.
  config.distributed = False
  config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1})
  # With fsdp > 1, parameters of at least this many elements are split.
  config.fsdp_min_size = 2**16
  # Full-match regex on parameter paths ("a/b/kernel"); the rest is frozen.
  config.trainable = ".*"
  # A finished run whose parameters start this one (same paths and shapes;
  # parameters it lacks keep their initialisation).
  config.init_from = ""
  config.dtype = "float32"

  config.optimizer = ml_collections.ConfigDict({
      "name": "adam", "learning_rate": 1e-4, "b1": 0.9, "b2": 0.999, "weight_decay": 0.0,
      "grad_clip": 1.0, "warmup_steps": 50 if tiny else 1000, "decay": "constant",
      "decay_steps": 0})

  size = {"tiny": (64, 48), "paper": (256, 160), "hires": (512, 288)}[variant]
  config.data = ml_collections.ConfigDict({
      # A prepared data set (`spectral-jax prepare`); empty: synthetic scenes.
      "dir": "",
      "width": size[0], "height": size[1], "num_freqs": 8 if tiny else 16,
      "percentile": 97.0,
      # "adaptive" (the paper: percentile per frequency, signed square root)
      # or "image_size" (the baseline it is compared against).
      "normalization": "adaptive",
      "synthetic": {"num_train": 4096, "num_test": 64, "seed": 0,
                    "num_frames": 32 if tiny else 150, "fps": 30.0,
                    "num_render_frames": 0, "max_amplitude_px": 4.0,
                    "stats_examples": 256},
  })
  config.eval = ml_collections.ConfigDict({"num_batches": 4, "whiten_batches": 8})
  return config


# Config fields that name other runs or data: made absolute when a run
# starts, so that what a run saves does not depend on the directory it was
# started from.
PATH_FIELDS = ("vae_from", "init_from", "data.dir")


def absolute_paths(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of ``config`` whose non-empty `PATH_FIELDS` are absolute."""
  config = ml_collections.ConfigDict(config.to_dict())
  for field in PATH_FIELDS:
    *parents, leaf = field.split(".")
    node = config
    for parent in parents:
      node = node.get(parent) or {}
    if node.get(leaf):
      node[leaf] = str(Path(node[leaf]).absolute())
  return config


def load_config_file(path, arg: str | None = None,
                     overrides: dict | None = None) -> ml_collections.ConfigDict:
  """``get_config(arg)`` of the config file at ``path`` (loaded by path, as
  ``--config`` does), then ``{"dotted.key": value}`` overrides applied."""
  path = Path(path)
  if not path.is_file():
    raise ValueError(f"config file {path} not found")
  spec = importlib.util.spec_from_file_location(f"{path.stem}_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg) if arg else module.get_config()
  for key, value in (overrides or {}).items():
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config
