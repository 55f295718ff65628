"""Stages ``ldm_pretrain`` and ``ldm_freq_attn``: the motion diffusion model.

Both train the U-Net to predict the noise added to whitened VAE latents of a
picture's spectral volume, conditioned on the picture (dropped with
probability ``diffusion.cond_drop`` for classifier-free guidance).

* ``ldm_pretrain`` (stage 1): one random frequency per example (F = 1), the
  frequency index embedded.
* ``ldm_freq_attn`` (stage 2): the stage-1 network plus frequency attention,
  all K frequencies of an example at once (F = K); starts from stage 1
  (``init_from``) and trains only ``freq_attn`` parameters (``trainable``).

The VAE (``vae_from``) is frozen: its parameters are a constant of the step,
and its checkpoint fixes the normalization and latent whitening. The run
pins that checkpoint (`spectral_jax.inference.loading`): a resumed run
trains on the same VAE step even if the VAE run has trained on since.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from spectral_jax import checkpoint, diffusion
from spectral_jax.data import sources
from spectral_jax.data.pipeline import normalized_spectral
from spectral_jax.diffusion import motion
from spectral_jax.inference.loading import load_vae, vae_pin
from spectral_jax.models import functional
from spectral_jax.models.build import build_unet
from spectral_jax.motion.normalize import denormalize
from spectral_jax.train import data as train_data


class LDMTask:

  def __init__(self, config, mesh, workdir):
    self.config, self.mesh = config, mesh
    self.joint = config.stage == "ldm_freq_attn"
    # A resumed run keeps the VAE step it started on.
    pinned_step = None
    if checkpoint.has_checkpoint(workdir):
      pinned_step = checkpoint.read_config(workdir)[1]["vae"]["step"]
    vae = load_vae(config.vae_from, mesh, pinned_step)
    self.normalization, self.latent_stats = vae.normalization, vae.latent_stats
    self.vae_pin = vae_pin(vae.workdir, vae.step, workdir)
    self.clip = sources.clip_timing(config.data)
    self.vae_graphdef, self._vae_params = functional.split_params(vae.vae)
    if len(self.normalization.scales) != config.data.num_freqs:
      raise ValueError(f"the VAE was trained on K={len(self.normalization.scales)} "
                       f"frequencies, this config has data.num_freqs={config.data.num_freqs}")
    self.schedule = diffusion.make_schedule(**config.diffusion.schedule.to_dict())
    self._transform = normalized_spectral(self.normalization, ("image", "spectral_volume"))
    self._train = sources.open_source(config.data, "train")
    self._test = sources.open_source(config.data, "test")

  def make_model(self, rngs):
    return build_unet(self.config, rngs)

  def constants(self):
    return {"vae": self._vae_params, "latent": self.latent_stats}

  def _vae(self, constants):
    return functional.merge(self.vae_graphdef, constants["vae"])

  def loss(self, model, constants, batch, rng):
    spectral = batch["spectral_volume"]  # [B, K, H, W, 4] normalized
    batch_size, num_freqs = spectral.shape[:2]
    freq_rng, t_rng, noise_rng, drop_rng = jax.random.split(rng, 4)
    if self.joint:
      freq_index = jnp.broadcast_to(jnp.arange(num_freqs, dtype=jnp.int32),
                                    (batch_size, num_freqs))
    else:
      freq_index = jax.random.randint(freq_rng, (batch_size, 1), 0, num_freqs)
      spectral = jnp.take_along_axis(spectral, freq_index[:, :, None, None, None], axis=1)
    z0 = jax.lax.stop_gradient(
        motion.encode(self._vae(constants), constants["latent"], spectral))
    t = diffusion.sample_timesteps(t_rng, batch_size, self.schedule.num_steps)
    noise = jax.random.normal(noise_rng, z0.shape, z0.dtype)
    z_t = diffusion.add_noise(self.schedule, z0, noise, t)
    cond_mask = jax.random.uniform(drop_rng, (batch_size,)) >= self.config.diffusion.cond_drop
    eps = model(z_t, t, motion.image_to_unit(batch["image"]), freq_index, cond_mask)
    loss = diffusion.epsilon_loss(eps, noise)
    return loss, {"eps_mse": loss}

  def train_batches(self, process_index, process_count):
    return train_data.train_batches(self._train, self.config, self._transform,
                                    process_index, process_count)

  def evaluate(self, graphdef, params, constants):
    """On held-out pictures: DDIM samples (all K frequencies jointly, or, for
    stage 1, all K sampled in one call with per-frequency indices) decoded
    to spectral volumes; their error against the ground truth in pixels per
    frequency, and the ground truth's own magnitude for scale."""
    scales = jnp.asarray(self.normalization.scales)
    evaluation = self.config.eval

    @jax.jit
    def errors(params, constants, batch, rng):
      unet = functional.merge(graphdef, params)
      sampled = motion.sample_spectral(
          unet, self._vae(constants), constants["latent"], self.schedule,
          motion.image_to_unit(batch["image"]), rng, num_freqs=self.config.data.num_freqs,
          num_steps=evaluation.ddim_steps, guidance_scale=evaluation.guidance_scale)
      power = self.normalization.power
      truth = denormalize(batch["spectral_volume"], scales, power)
      error = jnp.abs(denormalize(sampled, scales, power) - truth).mean(axis=(0, 2, 3, 4))
      return error, jnp.abs(truth).mean(axis=(0, 2, 3, 4))

    results = []
    for index, batch in enumerate(train_data.eval_batches(
        self._test, self.config, self._transform, self.mesh, evaluation.num_batches)):
      rng = jax.random.fold_in(jax.random.key(self.config.seed), index)
      results.append(jax.device_get(errors(params, constants, batch, rng)))
    if not results:
      return {}
    error, magnitude = (np.mean(parts, axis=0) for parts in zip(*results))
    result = {"sample_l1_px": float(error.mean()), "truth_l1_px": float(magnitude.mean())}
    result.update({f"sample_l1_px/k{k:02d}": float(v) for k, v in enumerate(error)})
    return result

  def stats(self, graphdef, params, constants):
    del graphdef, params, constants
    return {"normalization": self.normalization.to_json(),
            "latent": {name: value.tolist() for name, value in self.latent_stats.items()},
            "vae": self.vae_pin,
            "clip": {"num_frames": self.clip[0], "fps": self.clip[1]}}
