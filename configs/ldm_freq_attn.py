"""Stage ``ldm_freq_attn``: frequency attention over all K frequencies.

  python -m spectral_jax.train --config configs/ldm_freq_attn.py:tiny \
      --workdir runs/ldm2 --config.vae_from=runs/vae --config.init_from=runs/ldm1

Loads the stage-1 U-Net (``init_from``), adds frequency-attention layers
after its spatial blocks (output projections zero-initialised, so step 0
predicts exactly what stage 1 does) and trains only those: every other
parameter is frozen, without optimizer state.
"""

import importlib.util
from pathlib import Path

import ml_collections


def _stage1_module():
  """``ldm_pretrain.py`` beside this file (configs are loaded by path)."""
  spec = importlib.util.spec_from_file_location(
      "ldm_pretrain_config", Path(__file__).with_name("ldm_pretrain.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(variant: str = "paper") -> ml_collections.ConfigDict:
  config = _stage1_module().ldm_config("ldm_freq_attn", variant)
  config.trainable = ".*freq_attn.*"
  # All K frequencies per example: fewer examples per batch.
  config.batch_size = {"tiny": 4, "paper": 16, "hires": 8}[config.variant]
  return config
