"""Stage ``vae``: the spectral VAE (one frequency's 4-channel map → 4-channel latent).

  python -m spectral_jax.train --config configs/vae.py:tiny --workdir runs/vae

The paper: L1 + 0.2 multi-scale gradient consistency + 1e-6 KL; base 128
channels, multipliers (1, 2, 4), i.e. 4x downsampling (64x40 latents at
256x160).
"""

import ml_collections

from spectral_jax.config_base import base_config


def get_config(variant: str = "paper") -> ml_collections.ConfigDict:
  config = base_config("vae", variant)
  small = variant in ("tiny", "demo")
  config.model = ml_collections.ConfigDict({
      "in_channels": 4, "latent_channels": 4,
      # The demo's maps are 3x tiny's pixels: half the width keeps its step
      # affordable on a CPU.
      "base_channels": {"tiny": 32, "demo": 16}.get(variant, 128),
      "channel_mults": (1, 2, 4),
      "num_res_blocks": 1 if small else 2,
      # GroupNorm's epsilon; LDM's 1e-6 makes a still (all-0) map's
      # gradient overflow (models/vae.py).
      "norm_epsilon": 0.1,
      # Parameter-free pooling paths around encoder and decoder (models/vae.py):
      # the demo's photo scenes are 0 wherever no plant grows, and without
      # them its VAE learns to decode every map to 0.
      "shortcut": variant == "demo",
  })
  config.loss = ml_collections.ConfigDict({
      "l1_weight": 1.0, "gradient_weight": 0.2, "kl_weight": 1e-6, "num_scales": 3})
  # Frequency maps per example in a batch (0: all K): a few random ones keep
  # paper-sized batches of 256x160 maps affordable.
  config.maps_per_example = 2 if small else 4
  config.batch_size = 8 if small else 32
  config.num_steps = {"tiny": 600, "demo": 400, "paper": 200_000, "hires": 20_000}[variant]
  config.optimizer.learning_rate = {"tiny": 1e-3, "demo": 1e-3, "paper": 1e-4,
                                    "hires": 2e-5}[variant]
  return config
