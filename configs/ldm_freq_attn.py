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

from spectral_jax.config_base import load_config_file


def get_config(variant: str = "paper") -> ml_collections.ConfigDict:
  # Stage 1's config (the file beside this one: configs are loaded by path).
  config = load_config_file(Path(__file__).with_name("ldm_pretrain.py"), variant)
  config.stage = "ldm_freq_attn"
  config.model.freq_attention = "attention"
  # Only the frequency-attention layers train (`train.optimizer.MODULE_GROUPS`).
  config.trainable = "freq_attention"
  # All K frequencies per example, for the layer to attend across: fewer
  # examples per batch.
  config.data.freqs_per_example = 0
  config.batch_size = {"tiny": 4, "demo": 4, "paper": 16, "hires": 8}[config.variant]
  if config.variant == "demo":
    config.num_steps = 200
  return config
