"""The networks a run's config describes, rebuilt the same way by training
(`spectral_jax.train`) and by loading a finished run (`spectral_jax.inference`)."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from spectral_jax.models.renderer import Renderer
from spectral_jax.models.unet import MotionUNet
from spectral_jax.models.vae import SpectralVAE

MOTION_STAGES = ("ldm_pretrain", "ldm_freq_attn")


def build_vae(config, rngs: nnx.Rngs) -> SpectralVAE:
  """The VAE of a ``vae`` run (its ``model`` block and dtype)."""
  return SpectralVAE(**config.model.to_dict(), dtype=jnp.dtype(config.dtype), rngs=rngs)


def build_unet(config, rngs: nnx.Rngs) -> MotionUNet:
  """The U-Net of an LDM run; frequency attention in stage 2 only."""
  return MotionUNet(**config.model.to_dict(), num_freqs=config.data.num_freqs,
                    freq_attention=config.stage == "ldm_freq_attn",
                    dtype=jnp.dtype(config.dtype), rngs=rngs)


def build_renderer(config, rngs: nnx.Rngs) -> Renderer:
  """The renderer of a ``renderer`` run (its ``model`` block and dtype)."""
  return Renderer(**config.model.to_dict(), dtype=jnp.dtype(config.dtype), rngs=rngs)
