"""Stage ``ldm_pretrain``: the denoising U-Net, one frequency per example.

  python -m spectral_jax.train --config configs/ldm_pretrain.py:tiny \
      --workdir runs/ldm1 --config.vae_from=runs/vae

The paper: LDM U-Net with base 128 channels, multipliers (1, 4, 8), attention
at resolutions 32, 16, 8 (of a 64x40 latent these are the levels after one
and two downsamplings: ``attention_levels=(1, 2)``, plus the middle block);
1000 scaled-linear diffusion steps (beta 0.00085..0.012); ε-prediction;
Adam, learning rate 5e-5, batch 96, 750K steps; DDIM with 250 steps.
"""

import ml_collections

from spectral_jax.config_base import base_config, demo


# The default model's U-Net (`demo`): tiny's, trained longer, predicting v on
# a schedule that ends at zero SNR. With the paper's (alphabar = 0.0047 at
# the top step, ε), a short run learns to find the moving regions in the
# residue of z_t rather than in the picture, and samples motion everywhere
# (docs/DESIGN.md §2).
DEMO = {"diffusion.schedule.zero_terminal_snr": True, "diffusion.prediction": "v",
        "num_steps": 1500}


def get_config(variant: str = "paper") -> ml_collections.ConfigDict:
  if variant == "demo":
    return demo(get_config("tiny"), DEMO)
  config = base_config("ldm_pretrain", variant)
  tiny = variant == "tiny"
  config.vae_from = ""
  config.model = ml_collections.ConfigDict({
      "latent_channels": 4, "cond_channels": 16,
      "base_channels": 32 if tiny else 128,
      "channel_mults": (1, 2) if tiny else (1, 4, 8),
      "num_res_blocks": 1 if tiny else 2,
      "attention_levels": (1,) if tiny else (1, 2),
      "num_heads": 4 if tiny else 8,
      "image_encoder_channels": 16 if tiny else 64,
      # The image encoder must reach the VAE's latent resolution (4x down).
      "image_downsamples": 2,
      # GroupNorm groups of at least 4 channels after the timestep and
      # frequency embeddings are added: a group of one channel erases them
      # (tiny's 32-channel level otherwise ignores t and the frequency).
      "min_channels_per_group": 4,
      # The layer across frequencies (models/freq_attention.py): none in
      # stage 1, whose spatial layers see each frequency on its own.
      "freq_attention": "none",
      # jax.nn.dot_product_attention's kernel for spatial and frequency
      # attention: "xla" (any platform) or "cudnn" (NVIDIA GPUs, bfloat16).
      "attention_impl": "xla",
      # What U-Net units keep for the backward pass: "none", "dots" (matrix
      # products only) or "full" (only their inputs): less memory, more
      # compute (layers.REMAT_POLICIES).
      "remat": "none",
  })
  # Frequencies of each training example: one random bin (0: all K).
  config.data.freqs_per_example = 1
  config.diffusion = ml_collections.ConfigDict({
      "schedule": {"kind": "scaled_linear", "num_steps": 1000,
                   "beta_start": 0.00085, "beta_end": 0.012, "zero_terminal_snr": False},
      "prediction": "epsilon",
      # Probability of dropping the picture, for classifier-free guidance.
      "cond_drop": 0.1,
  })
  # What `spectral-jax animate` samples with unless told otherwise: DDIM
  # steps and eta, classifier-free guidance w, and for --loop the
  # self-guidance weight u, self-recurrence iterations and the guidance
  # gradient: through the network (the paper: 250 steps, w = 1.75, u = 200,
  # 2 iterations), or "x0", the clean-latent formula alone, several times
  # cheaper (docs/DESIGN.md §4).
  config.sampling = ml_collections.ConfigDict({
      "num_steps": 25 if tiny else 250, "eta": 0.0, "guidance_scale": 1.75,
      "loop_weight": 200.0, "recurrence_steps": 2, "loop_gradient": "network"})
  config.eval.ddim_steps = 25 if tiny else 250
  config.eval.guidance_scale = 0.0
  config.eval.num_batches = 1 if tiny else 4
  config.batch_size = 16 if tiny else 96
  config.num_steps = {"tiny": 1000, "paper": 750_000, "hires": 50_000}[variant]
  config.optimizer.learning_rate = {"tiny": 5e-4, "paper": 5e-5, "hires": 1e-5}[variant]
  return config
