"""The networks a run's config describes, rebuilt the same way by training
(`spectral_jax.train`) and by loading a finished run (`spectral_jax.inference`)."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
from flax import nnx

from spectral_jax.models.renderer import Renderer
from spectral_jax.models.unet import MotionUNet
from spectral_jax.models.vae import SpectralVAE

MOTION_STAGES = ("ldm_pretrain", "ldm_freq_attn")

# What each motion stage meant before the frequency attention and the
# frequencies per example were config fields: the runs and exports saved
# then (the shipped default model among them) store only ``stage``, and must
# rebuild the network and batches they trained with.
_STAGE_FIELDS = {
    "ldm_pretrain": {"model": {"freq_attention": "none"}, "data": {"freqs_per_example": 1}},
    "ldm_freq_attn": {"model": {"freq_attention": "attention"},
                      "data": {"freqs_per_example": 0}},
}


def motion_config(config) -> ml_collections.ConfigDict:
  """An LDM run's ``config`` with ``model.freq_attention`` and
  ``data.freqs_per_example``: a config saved before they existed gets
  those its ``stage`` meant (in a copy); any other is returned as it is.
  The U-Net and the LDM task read their config through this, so that this
  is the one place that knows what old runs meant."""
  absent = {(block, name): value
            for block, fields in _STAGE_FIELDS.get(config.stage, {}).items()
            for name, value in fields.items() if name not in config[block]}
  if not absent:
    return config
  config = ml_collections.ConfigDict(config.to_dict())
  for (block, name), value in absent.items():
    config[block][name] = value
  return config


# Model settings that change how a network trains, not what it computes: a
# network loaded for inference (`for_inference`) is built with these, so
# that a run trained with cuDNN attention animates on a CPU.
TRAINING_ONLY_SETTINGS = {"attention_impl": "xla", "remat": "none"}


def _model_settings(config, inference: bool) -> dict:
  settings = config.model.to_dict()
  if inference:
    settings.update({name: value for name, value in TRAINING_ONLY_SETTINGS.items()
                     if name in settings})
  return settings


def build_vae(config, rngs: nnx.Rngs, *, inference: bool = False) -> SpectralVAE:
  """The VAE of a ``vae`` run (its ``model`` block and dtype; with
  ``inference``, `TRAINING_ONLY_SETTINGS` replace the block's)."""
  return SpectralVAE(**_model_settings(config, inference), dtype=jnp.dtype(config.dtype),
                     rngs=rngs)


def build_unet(config, rngs: nnx.Rngs, *, inference: bool = False) -> MotionUNet:
  """The U-Net of an LDM run (its ``model`` block, ``model.freq_attention``
  included, and dtype; with ``inference``, `TRAINING_ONLY_SETTINGS` replace
  the block's)."""
  config = motion_config(config)
  return MotionUNet(**_model_settings(config, inference), num_freqs=config.data.num_freqs,
                    dtype=jnp.dtype(config.dtype), rngs=rngs)


def build_renderer(config, rngs: nnx.Rngs) -> Renderer:
  """The renderer of a ``renderer`` run (its ``model`` block and dtype)."""
  return Renderer(**config.model.to_dict(), dtype=jnp.dtype(config.dtype), rngs=rngs)
