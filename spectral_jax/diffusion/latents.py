"""Latent diffusion of spectral volumes: the VAE, the U-Net and DDIM together.

Latents of the spectral VAE are whitened per channel with the statistics
saved in the VAE's checkpoint (mean and std of its posterior means), so the
diffusion model sees roughly unit-variance latents whatever the VAE learned.
"""

from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp

from spectral_jax.diffusion.ddim import ddim_sample
from spectral_jax.diffusion.schedules import Schedule


def image_to_unit(image: jax.Array) -> jax.Array:
  """uint8 ``[..., 3]`` picture → float32 in [-1, 1], as the U-Net takes it."""
  return image.astype(jnp.float32) / 127.5 - 1.0


def encode(vae, latent_stats: Mapping[str, jax.Array], spectral: jax.Array) -> jax.Array:
  """Normalized spectral volume ``[B, F, H, W, 4]`` → whitened latents
  ``[B, F, h, w, C]`` (the VAE's posterior mean)."""
  batch, num_freqs = spectral.shape[:2]
  mean, _ = vae.encode(spectral.reshape((-1,) + spectral.shape[2:]))
  z = (mean - latent_stats["mean"]) / latent_stats["std"]
  return z.reshape((batch, num_freqs) + z.shape[1:])


def decode(vae, latent_stats: Mapping[str, jax.Array], z: jax.Array) -> jax.Array:
  """Whitened latents ``[B, F, h, w, C]`` → normalized spectral volume
  ``[B, F, H, W, 4]``."""
  batch, num_freqs = z.shape[:2]
  z = z.reshape((-1,) + z.shape[2:]) * latent_stats["std"] + latent_stats["mean"]
  spectral = vae.decode(z)
  return spectral.reshape((batch, num_freqs) + spectral.shape[1:])


def conditional_eps(unet, image: jax.Array, num_freqs: int):
  """The `ddim.EpsFn` of ``unet`` for pictures ``image`` ``[B, H, W, 3]`` in
  [-1, 1], all K frequencies of each denoised together: latents
  ``[B, K, h, w, C]`` (``[2B, ...]`` with classifier-free guidance, rows 2i
  and 2i + 1 for picture i, the second masked: `ddim_steps`' layout)."""
  batch = image.shape[0]
  freq_index = jnp.broadcast_to(jnp.arange(num_freqs, dtype=jnp.int32), (batch, num_freqs))

  def eps_fn(z_t, t, cond_mask):
    repeats = z_t.shape[0] // batch
    return unet(z_t, t, jnp.repeat(image, repeats, axis=0),
                jnp.repeat(freq_index, repeats, axis=0), cond_mask)

  return eps_fn


def on_latents(loss: Callable[[jax.Array], jax.Array], vae,
               latent_stats: Mapping[str, jax.Array]):
  """A loss of normalized spectral volumes ``[B, K, H, W, 4]`` as a loss of
  the whitened latents they decode from (DDIM's guidance loss)."""
  return lambda z0: loss(decode(vae, latent_stats, z0))


def sample_spectral(unet, vae, latent_stats: Mapping[str, jax.Array], schedule: Schedule,
                    image: jax.Array, rng: jax.Array, *, num_freqs: int, num_steps: int,
                    guidance_loss: Callable[[jax.Array], jax.Array] | None = None,
                    **options) -> jax.Array:
  """Normalized spectral volumes ``[B, K, H, W, 4]`` sampled for pictures
  ``image [B, H, W, 3]`` in [-1, 1].

  All K frequencies of a picture are denoised together: one network call per
  step on ``[B, K, h, w, C]`` (``[2B, ...]`` with classifier-free guidance).
  ``guidance_loss``, if given, is a differentiable loss of the decoded
  normalized spectral volume ``[B, K, H, W, 4]`` (e.g. loop self-guidance);
  ``options`` go to `ddim_sample` (eta, guidance_scale, guidance_weight,
  recurrence_steps). Jit the caller, with the networks closed over or
  merged inside.
  """
  factor = vae.downsample_factor
  latent_shape = (image.shape[0], num_freqs, image.shape[1] // factor,
                  image.shape[2] // factor, latent_stats["mean"].shape[-1])
  if guidance_loss is not None:
    guidance_loss = on_latents(guidance_loss, vae, latent_stats)
  z0 = ddim_sample(conditional_eps(unet, image, num_freqs), schedule, rng, latent_shape,
                   num_steps=num_steps, guidance_loss=guidance_loss, **options)
  return decode(vae, latent_stats, z0)
