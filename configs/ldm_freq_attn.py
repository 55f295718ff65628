"""Stage ``ldm_freq_attn``: frequency attention over all K frequencies.

  python -m spectral_jax.train --config configs/ldm_freq_attn.py:tiny \
      --workdir runs/ldm2 --config.vae_from=runs/vae --config.init_from=runs/ldm1

Loads the stage-1 U-Net (``init_from``), adds frequency-attention layers
(``model.freq_attention``, a variant of `models/freq_attention.py`) after
its spatial blocks (the identity at initialisation, so step 0 predicts
exactly what stage 1 does) and trains only those: every other parameter is
frozen, without optimizer state.
"""

from pathlib import Path

import ml_collections

from spectral_jax.config_base import demo, load_config_file


# The default model's stage 2 (`demo`): tiny's on the demo's stage 1.
DEMO = {"num_steps": 200}


def get_config(variant: str = "paper") -> ml_collections.ConfigDict:
  if variant == "demo":
    return demo(get_config("tiny"), {**_stage1_demo_changes(), **DEMO})
  # Stage 1's config (the file beside this one: configs are loaded by path).
  config = load_config_file(_STAGE1, variant)
  config.stage = "ldm_freq_attn"
  config.model.freq_attention = "attention"
  # Only the frequency-attention layers train (`train.optimizer.MODULE_GROUPS`).
  config.trainable = "freq_attention"
  # All K frequencies per example, for the layer to attend across: fewer
  # examples per batch.
  config.data.freqs_per_example = 0
  config.batch_size = {"tiny": 4, "paper": 16, "hires": 8}[config.variant]
  return config


_STAGE1 = Path(__file__).with_name("ldm_pretrain.py")


def _stage1_demo_changes() -> dict:
  """Stage 1's ``DEMO`` (its file is loaded by path, not imported)."""
  import importlib.util
  spec = importlib.util.spec_from_file_location("ldm_pretrain_config", _STAGE1)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.DEMO
