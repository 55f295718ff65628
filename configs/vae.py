"""Stage ``vae``: the spectral VAE (one frequency's 4-channel map → 4-channel latent).

  python -m spectral_jax.train --config configs/vae.py:tiny --workdir runs/vae

The paper: L1 + 0.2 multi-scale gradient consistency + 1e-6 KL; base 128
channels, multipliers (1, 2, 4), i.e. 4x downsampling (64x40 latents at
256x160).
"""

import ml_collections

from spectral_jax.config_base import base_config, demo


# The default model's VAE (`demo`): tiny's, on maps of 3x tiny's pixels, so
# half the width keeps its step affordable on a CPU; the demo's photo scenes
# are 0 wherever no plant grows, and without the pooling shortcut its VAE
# learns to decode every map to 0.
DEMO = {"model.base_channels": 16, "model.shortcut": True, "num_steps": 400}


def get_config(variant: str = "paper") -> ml_collections.ConfigDict:
  if variant == "demo":
    return demo(get_config("tiny"), DEMO)
  config = base_config("vae", variant)
  small = variant == "tiny"
  config.model = ml_collections.ConfigDict({
      "in_channels": 4, "latent_channels": 4,
      "base_channels": 32 if small else 128,
      "channel_mults": (1, 2, 4),
      "num_res_blocks": 1 if small else 2,
      # GroupNorm's epsilon; LDM's 1e-6 makes a still (all-0) map's
      # gradient overflow (models/vae.py).
      "norm_epsilon": 0.1,
      # Parameter-free pooling paths around encoder and decoder (models/vae.py).
      "shortcut": False,
      # jax.nn.dot_product_attention's kernel: "xla" (any platform) or
      # "cudnn" (NVIDIA GPUs, bfloat16).
      "attention_impl": "xla",
      # What blocks keep for the backward pass: "none", "dots" (matrix
      # products only) or "full" (only their inputs): less memory, more
      # compute (layers.REMAT_POLICIES).
      "remat": "none",
  })
  config.loss = ml_collections.ConfigDict({
      "l1_weight": 1.0, "gradient_weight": 0.2, "kl_weight": 1e-6, "num_scales": 3})
  # Frequency maps per example in a batch (0: all K): a few random ones keep
  # paper-sized batches of 256x160 maps affordable.
  config.maps_per_example = 2 if small else 4
  config.batch_size = 8 if small else 32
  config.num_steps = {"tiny": 600, "paper": 200_000, "hires": 20_000}[variant]
  config.optimizer.learning_rate = {"tiny": 1e-3, "paper": 1e-4, "hires": 2e-5}[variant]
  return config
