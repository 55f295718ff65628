"""Stages ``ldm_pretrain`` and ``ldm_freq_attn``: the motion diffusion model.

Both train the U-Net to denoise whitened VAE latents of a picture's spectral
volume, predicting the noise (ε) or ``v`` (``diffusion.prediction``),
conditioned on the picture (dropped with probability ``diffusion.cond_drop``
for classifier-free guidance).

* ``ldm_pretrain`` (stage 1): one random frequency per example (F = 1,
  ``data.freqs_per_example = 1``), the frequency index embedded.
* ``ldm_freq_attn`` (stage 2): the stage-1 network plus frequency attention
  (``model.freq_attention``), all K frequencies of an example at once (F = K,
  ``data.freqs_per_example = 0``); starts from stage 1 (``init_from``) and
  trains only the frequency-attention layers (``trainable =
  "freq_attention"``).

The VAE (``vae_from``) is frozen: its parameters are a constant of the step,
and its checkpoint fixes the normalization and latent whitening. The run
pins that checkpoint (`spectral_jax.inference.loading`): a resumed run
trains on the same VAE step even if the VAE run has trained on since.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spectral_jax import checkpoint, diffusion
from spectral_jax.data import sources
from spectral_jax.data.pipeline import normalized_spectral
from spectral_jax.diffusion import latents
from spectral_jax.diffusion.training import fixed_noising
from spectral_jax.inference.loading import load_vae, vae_pin
from spectral_jax.models import functional
from spectral_jax.models.build import build_unet, build_vae, motion_config
from spectral_jax.motion.normalize import denormalize
from spectral_jax.train import data as train_data
from spectral_jax.train.optimizer import TRAINABLE, trainable_labels


class LDMStep:
  """What an LDM stage's training step needs, without data or other runs:
  the U-Net, the loss, and the shapes of its constants (the frozen VAE
  ``vae_graphdef`` with parameters like ``abstract_vae_params``, and the
  latent whitening) and batches."""

  def __init__(self, config, vae_graphdef, abstract_vae_params):
    # A run saved before `model.freq_attention` and `data.freqs_per_example`
    # existed (evaluated again, resumed) trains and evaluates as it did.
    config = motion_config(config)
    self.config = config
    # 0: all K frequencies of an example, in order; 1: one random bin.
    self.all_freqs = config.data.freqs_per_example == 0
    self.vae_graphdef = vae_graphdef
    self._abstract_vae_params = abstract_vae_params
    self.schedule = diffusion.make_schedule(**config.diffusion.schedule.to_dict())
    self.prediction = diffusion.prediction_of(config.diffusion)
    self.loss_name = f"{'eps' if self.prediction == 'epsilon' else self.prediction}_mse"

  @classmethod
  def from_vae_config(cls, config, vae_config):
    """The step of ``config`` on a VAE of ``vae_config`` (built abstractly)."""
    graphdef, abstract = functional.abstract_split(lambda: build_vae(vae_config, nnx.Rngs(0)))
    return cls(config, graphdef, abstract)

  def make_model(self, rngs):
    return build_unet(self.config, rngs)

  def abstract_constants(self):
    stat = jax.ShapeDtypeStruct((self.config.model.latent_channels,), jnp.float32)
    return {"vae": self._abstract_vae_params, "latent": {"mean": stat, "std": stat}}

  def batch_shapes(self, batch_size: int) -> dict:
    """``{name: jax.ShapeDtypeStruct}`` of a batch of ``batch_size``
    examples as the loss receives it (spectral volumes frequency-normalized)."""
    data = self.config.data
    return {"image": jax.ShapeDtypeStruct((batch_size, data.height, data.width, 3), jnp.uint8),
            "spectral_volume": jax.ShapeDtypeStruct(
                (batch_size, data.num_freqs, data.height, data.width, 4), jnp.float32)}

  def _vae(self, constants):
    return functional.merge(self.vae_graphdef, constants["vae"])

  def loss(self, model, constants, batch, rng):
    spectral = batch["spectral_volume"]  # [B, K, H, W, 4] normalized
    batch_size, num_freqs = spectral.shape[:2]
    freq_rng, t_rng, noise_rng, drop_rng = jax.random.split(rng, 4)
    if self.all_freqs:
      freq_index = jnp.broadcast_to(jnp.arange(num_freqs, dtype=jnp.int32),
                                    (batch_size, num_freqs))
    else:
      freq_index = jax.random.randint(freq_rng, (batch_size, 1), 0, num_freqs)
      spectral = jnp.take_along_axis(spectral, freq_index[:, :, None, None, None], axis=1)
    z0 = jax.lax.stop_gradient(
        latents.encode(self._vae(constants), constants["latent"], spectral))
    t = diffusion.sample_timesteps(t_rng, batch_size, self.schedule.num_steps)
    noise = jax.random.normal(noise_rng, z0.shape, z0.dtype)
    z_t = diffusion.add_noise(self.schedule, z0, noise, t)
    cond_mask = jax.random.uniform(drop_rng, (batch_size,)) >= self.config.diffusion.cond_drop
    output = model(z_t, t, latents.image_to_unit(batch["image"]), freq_index, cond_mask)
    loss = diffusion.prediction_loss(
        output, diffusion.regression_target(self.schedule, z0, noise, t, self.prediction))
    return loss, {self.loss_name: loss}


class LDMTask(LDMStep):
  """`LDMStep` on the VAE of ``config.vae_from``, with its data: training
  batches, evaluation, statistics."""

  def __init__(self, config, mesh, workdir):
    # A resumed run keeps the VAE step it started on.
    pinned_step = None
    if checkpoint.has_checkpoint(workdir):
      pinned_step = checkpoint.read_config(workdir)[1]["vae"]["step"]
    vae = load_vae(config.vae_from, mesh, pinned_step)
    vae_graphdef, self._vae_params = functional.split_params(vae.vae)
    super().__init__(config, vae_graphdef, jax.eval_shape(lambda: self._vae_params))
    config = self.config
    self.mesh = mesh
    self.normalization, self.latent_stats = vae.normalization, vae.latent_stats
    self.vae_pin = vae_pin(vae.workdir, vae.step, workdir)
    self.clip = sources.clip_timing(config.data)
    if len(self.normalization.scales) != config.data.num_freqs:
      raise ValueError(f"the VAE was trained on K={len(self.normalization.scales)} "
                       f"frequencies, this config has data.num_freqs={config.data.num_freqs}")
    if config.init_from:
      _check_same_diffusion(config, checkpoint.read_config(config.init_from)[0])
    self._transform = normalized_spectral(self.normalization, ("image", "spectral_volume"))
    self._train = sources.open_source(config.data, "train")
    self._test = train_data.open_test_source(config)

  def constants(self):
    return {"vae": self._vae_params, "latent": self.latent_stats}

  def train_batches(self, process_index, process_count):
    return train_data.train_batches(self._train, self.config, self._transform,
                                    process_index, process_count)

  def evaluate(self, graphdef, params, constants):
    """On the first ``eval.num_batches`` held-out batches:

    * ``heldout_eps_mse`` (``heldout_v_mse`` for v-prediction): the MSE of
      the network's prediction on all K frequencies of each picture (stage 1
      sees them as F = K maps with per-frequency indices, which its spatial
      layers treat independently; stage 2 jointly), conditioned on the
      picture. Each example's timestep and
      noise come from a key fixed by its position in the held-out order
      (`heldout_inputs`), so unlike the training loss this does not move
      with random draws: its changes between evaluations are the network's.
    * ``heldout_eps_mse_stage1`` (stage 2, when only frequency attention
      trains): the same on the same inputs for the network stage 2 started
      from, stage 1's (its frequency-attention layers skipped), so that
      whether frequency attention helps is one comparison within one
      record.
    * DDIM samples (all K frequencies jointly, or, for stage 1, all K
      sampled in one call with per-frequency indices) decoded to spectral
      volumes: their error against the ground truth in pixels per
      frequency, and the ground truth's own magnitude for scale.
    """
    compare = self._backbone_frozen(graphdef, params)
    evaluate_batch = self.evaluation_fn(graphdef, compare)
    results = []
    for index, batch in enumerate(train_data.eval_batches(
        self._test, self.config, self._transform, self.mesh, self.config.eval.num_batches)):
      results.append(jax.device_get(evaluate_batch(params, constants, batch, index)))
    if not results:
      return {}
    # Every batch has the same size: the mean of batch means is the mean.
    mean = {name: np.mean([r[name] for r in results], axis=0) for name in results[0]}
    # Per-frequency arrays [K] are summarised by their mean, and kept per k
    # for the samples' error.
    result = {name: float(value.mean()) for name, value in mean.items()}
    result.update({f"sample_l1_px/k{k:02d}": float(v)
                   for k, v in enumerate(mean["sample_l1_px"])})
    return result

  def heldout_inputs(self, constants, batch, keys):
    """The noisy U-Net inputs of the held-out ε-MSE, and the noise.

    Args:
      constants: the task's constants (VAE, latent whitening).
      batch: ``image [B, H, W, 3]`` uint8, ``spectral_volume [B, K, H, W, 4]``
        normalized.
      keys: ``[B]`` PRNG keys, one per example: its timestep and noise.
    Returns:
      ``(z_t [B, K, h, w, C], t [B], image [B, H, W, 3] in [-1, 1],
      freq_index [B, K], cond_mask [B] all True)`` and the regression target
      (`diffusion.regression_target`) like ``z_t``.
    """
    spectral = batch["spectral_volume"]
    batch_size, num_freqs = spectral.shape[:2]
    z0 = latents.encode(self._vae(constants), constants["latent"], spectral)
    t, noise = fixed_noising(keys, z0.shape[1:], self.schedule.num_steps)
    z_t = diffusion.add_noise(self.schedule, z0, noise, t)
    target = diffusion.regression_target(self.schedule, z0, noise, t, self.prediction)
    freq_index = jnp.broadcast_to(jnp.arange(num_freqs, dtype=jnp.int32),
                                  (batch_size, num_freqs))
    # Conditional only: the dropped condition is there for guidance, and the
    # conditional prediction is the one sampling relies on.
    cond_mask = jnp.ones((batch_size,), bool)
    return (z_t, t, latents.image_to_unit(batch["image"]), freq_index, cond_mask), target

  @functools.cache
  def evaluation_fn(self, graphdef, compare_stage1: bool):
    """``f(params, constants, batch, index) -> {name: array}``, jitted once
    per network (every evaluation of a run reuses the compiled program)."""
    scales = jnp.asarray(self.normalization.scales)
    power = self.normalization.power
    evaluation = self.config.eval
    # Two independent streams from the seed: DDIM's noise, one key per
    # batch; the held-out noising, one key per example.
    sample_key, heldout_key = jax.random.split(jax.random.key(self.config.seed))

    @jax.jit
    def evaluate_batch(params, constants, batch, index):
      unet = functional.merge(graphdef, params)
      vae = self._vae(constants)
      batch_size = batch["image"].shape[0]
      result = {}

      # An example's key is fixed by its row in the (unshuffled) evaluation
      # batches, whatever the network and the step.
      positions = index * batch_size + jnp.arange(batch_size)
      keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(heldout_key, positions)
      inputs, target = self.heldout_inputs(constants, batch, keys)
      result[f"heldout_{self.loss_name}"] = diffusion.prediction_loss(unet(*inputs), target)
      if compare_stage1:
        # The network stage 2 started from (stage 1's, from `init_from`) is
        # stage 2's without its frequency-attention layers: every other
        # parameter is frozen, bit for bit (only frequency attention trains,
        # checked by the caller). Unlike keeping stage 1's parameters as a
        # constant, this needs no second copy of the U-Net in memory and no
        # access to the stage-1 run, which a resumed stage 2 never reads.
        result[f"heldout_{self.loss_name}_stage1"] = diffusion.prediction_loss(
            unet(*inputs, use_freq_attention=False), target)

      sampled = latents.sample_spectral(
          unet, vae, constants["latent"], self.schedule, inputs[2],
          jax.random.fold_in(sample_key, index), num_freqs=self.config.data.num_freqs,
          num_steps=evaluation.ddim_steps, guidance_scale=evaluation.guidance_scale,
          prediction=self.prediction)
      truth = denormalize(batch["spectral_volume"], scales, power)
      result["sample_l1_px"] = jnp.abs(
          denormalize(sampled, scales, power) - truth).mean(axis=(0, 2, 3, 4))
      result["truth_l1_px"] = jnp.abs(truth).mean(axis=(0, 2, 3, 4))
      return result

    return evaluate_batch

  def _backbone_frozen(self, graphdef, params) -> bool:
    """Whether only frequency-attention parameters train (the stage-2
    default): then the backbone is still stage 1's, and skipping frequency
    attention gives stage 1's network. A run that fine-tunes the backbone
    too logs no stage-1 value (it would be neither stage 1 nor stage 2),
    and neither does stage 1 itself."""
    trained = jax.tree.leaves(trainable_labels(params, self.config.trainable, graphdef))
    attention = jax.tree.leaves(trainable_labels(params, "freq_attention", graphdef))
    return all(own == TRAINABLE for label, own in zip(trained, attention) if label == TRAINABLE)

  def stats(self, graphdef, params, constants):
    del graphdef, params, constants
    return {"normalization": self.normalization.to_json(),
            "latent": {name: value.tolist() for name, value in self.latent_stats.items()},
            "vae": self.vae_pin,
            "clip": {"num_frames": self.clip[0], "fps": self.clip[1]}}


def _check_same_diffusion(config, init_config) -> None:
  """Stage 2 starts from stage 1's network: it must keep its noise schedule
  and what it predicts, or it starts from a network trained for another
  task."""
  ours = (config.diffusion.schedule.to_dict(), diffusion.prediction_of(config.diffusion))
  theirs = (init_config.diffusion.schedule.to_dict(),
            diffusion.prediction_of(init_config.diffusion))
  # A saved config predating zero_terminal_snr used the plain schedule.
  for schedule, _ in (ours, theirs):
    schedule.setdefault("zero_terminal_snr", False)
  if ours != theirs:
    raise ValueError(f"{config.init_from} was trained with diffusion schedule {theirs[0]} "
                     f"predicting {theirs[1]!r}; this config has {ours[0]} predicting "
                     f"{ours[1]!r}")
