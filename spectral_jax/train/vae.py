"""Stage ``vae``: the spectral VAE, one frequency's 4-channel map at a time.

Each batch of B examples gives B*K maps ``[H, W, 4]`` (every frequency of
every example, frequency-normalized). Checkpoints carry, besides the data's
normalization scales, the per-channel mean and standard deviation of the
latents (posterior means over training examples): the LDM stages whiten
latents with them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from spectral_jax.data import sources
from spectral_jax.data.pipeline import normalized_spectral
from spectral_jax.models import functional
from spectral_jax.models.build import build_vae
from spectral_jax.models.vae import vae_loss
from spectral_jax.motion.normalize import denormalize
from spectral_jax.train import data as train_data


def frequency_maps(spectral: jax.Array) -> jax.Array:
  """``[B, K, H, W, 4]`` → ``[B*K, H, W, 4]``: every frequency a map."""
  return spectral.reshape((-1,) + spectral.shape[2:])


def random_frequencies(spectral: jax.Array, count: int, rng: jax.Array) -> jax.Array:
  """``[B, K, H, W, 4]`` → ``[B, count, H, W, 4]``: ``count`` distinct
  random frequencies of each example."""
  batch, num_freqs = spectral.shape[:2]
  keys = jax.random.split(rng, batch)
  chosen = jax.vmap(lambda key: jax.random.permutation(key, num_freqs)[:count])(keys)
  return jnp.take_along_axis(spectral, chosen[:, :, None, None, None], axis=1)


class VAEStep:
  """What the VAE's training step needs, from its config alone (no data):
  the model, the loss, and the shapes of its constants and batches."""

  def __init__(self, config):
    self.config = config

  def make_model(self, rngs):
    return build_vae(self.config, rngs)

  def abstract_constants(self):
    return {}

  def batch_shapes(self, batch_size: int) -> dict:
    """``{name: jax.ShapeDtypeStruct}`` of a batch of ``batch_size``
    examples as the loss receives it (frequency-normalized)."""
    data = self.config.data
    return {"spectral_volume": jax.ShapeDtypeStruct(
        (batch_size, data.num_freqs, data.height, data.width, 4), jnp.float32)}

  def loss(self, model, constants, batch, rng):
    del constants
    spectral = batch["spectral_volume"]
    count = self.config.maps_per_example
    if count and count < spectral.shape[1]:
      rng, pick_rng = jax.random.split(rng)
      spectral = random_frequencies(spectral, count, pick_rng)
    return vae_loss(model, frequency_maps(spectral), rng, **self.config.loss.to_dict())


class VAETask(VAEStep):
  """`VAEStep` with its data: training batches, evaluation, statistics."""

  def __init__(self, config, mesh):
    super().__init__(config)
    self.mesh = mesh
    self.normalization = sources.normalization(config.data)
    self._transform = normalized_spectral(self.normalization, ("spectral_volume",))
    self._train = sources.open_source(config.data, "train")
    self._test = train_data.open_test_source(config)

  def constants(self):
    return {}

  def train_batches(self, process_index, process_count):
    return train_data.train_batches(self._train, self.config, self._transform,
                                    process_index, process_count)

  def evaluate(self, graphdef, params, constants):
    """Reconstruction error (from the posterior mean) per frequency on the
    test split: L1 in normalized units and in pixels, beside the mean
    ``|coefficient|`` of the truth in pixels for scale."""
    del constants
    errors = self.reconstruction_errors(graphdef)
    results = [jax.device_get(errors(params, batch)) for batch in train_data.eval_batches(
        self._test, self.config, self._transform, self.mesh, self.config.eval.num_batches)]
    if not results:
      return {}
    l1, l1_px, truth_px = (np.mean(parts, axis=0) for parts in zip(*results))
    result = {"l1": float(l1.mean()), "l1_px": float(l1_px.mean()),
              "truth_l1_px": float(truth_px.mean())}
    result.update({f"l1_px/k{k:02d}": float(v) for k, v in enumerate(l1_px)})
    result.update({f"truth_l1_px/k{k:02d}": float(v) for k, v in enumerate(truth_px)})
    return result

  @functools.cache
  def reconstruction_errors(self, graphdef):
    """Jitted ``(params, batch) -> (l1 [K], l1_px [K], truth_px [K])``, one
    per network: every evaluation of a run reuses its compiled program."""
    scales = jnp.asarray(self.normalization.scales)
    power = self.normalization.power

    @jax.jit
    def errors(params, batch):
      model = functional.merge(graphdef, params)
      target = batch["spectral_volume"]  # [B, K, H, W, 4]
      mean, _ = model.encode(frequency_maps(target))
      recon = model.decode(mean).reshape(target.shape)
      l1 = jnp.abs(recon - target).mean(axis=(0, 2, 3, 4))
      truth = denormalize(target, scales, power)
      l1_px = jnp.abs(denormalize(recon, scales, power) - truth).mean(axis=(0, 2, 3, 4))
      truth_px = jnp.abs(truth).mean(axis=(0, 2, 3, 4))
      return l1, l1_px, truth_px

    return errors

  def stats(self, graphdef, params, constants):
    del constants
    return {"normalization": self.normalization.to_json(),
            "latent": self.latent_stats(graphdef, params)}

  def latent_stats(self, graphdef, params) -> dict:
    """Per-channel mean and std ``[latent_channels]`` of the posterior means
    of the first ``eval.whiten_batches`` training batches (fixed order).

    Each batch's moments are centred on the device (`batch_moments`) and
    combined in float64 on the host (`combine_moments`): the float32
    ``E[x²] - E[x]²`` this replaces cancels to noise, or to a negative
    variance, once a channel's mean is large against its spread.
    """
    moments = self.latent_moments(graphdef)
    parts = [jax.device_get(moments(params, batch)) for batch in train_data.eval_batches(
        self._train, self.config, self._transform, self.mesh, self.config.eval.whiten_batches)]
    count, mean, m2 = combine_moments(parts)
    std = np.sqrt(np.maximum(m2 / count, 1e-12))  # Population variance, floored.
    return {"mean": mean.tolist(), "std": std.tolist()}

  @functools.cache
  def latent_moments(self, graphdef):
    """Jitted ``(params, batch) -> batch_moments`` of the posterior means,
    one per network: every checkpoint save of a run reuses its program."""

    @jax.jit
    def moments(params, batch):
      model = functional.merge(graphdef, params)
      mean, _ = model.encode(frequency_maps(batch["spectral_volume"]))
      return batch_moments(mean)

    return moments


def batch_moments(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-channel moments of ``x [..., C]`` over all its leading axes, for
  `combine_moments`.

  Two passes around a shift: the first value of each channel is subtracted
  before anything is summed, so the sums see values of the data's spread
  rather than of its mean (the rounding of a float32 sum of a million values
  near 1e3 can exceed a spread of 1e-2), and ``m2`` sums squares centred on
  the mean of those shifted values, so no large terms cancel.

  Args:
    x: ``[..., C]`` values (e.g. latents ``[N, h, w, C]``).
  Returns:
    ``(count [] int32, mean [C], m2 [C])``: the number of values per channel,
    their mean, and the sum of their squared deviations from it (float32).
  """
  x = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
  shift = x[0]
  shifted = x - shift
  shifted_mean = shifted.mean(axis=0)
  m2 = jnp.square(shifted - shifted_mean).sum(axis=0)
  return jnp.asarray(x.shape[0], jnp.int32), shift + shifted_mean, m2


def combine_moments(parts) -> tuple[float, np.ndarray, np.ndarray]:
  """Pooled moments of several batches, in float64 (Chan, Golub & LeVeque's
  pairwise update: exact in exact arithmetic, no cancellation).

  For batches A and B with ``n = n_A + n_B`` and ``d = mean_B - mean_A``::

    mean = mean_A + d * n_B / n
    M2   = M2_A + M2_B + d² * n_A * n_B / n

  Args:
    parts: ``(count, mean [C], m2 [C])`` per batch, as `batch_moments`
      returns them (arrays or numbers; at least one batch).
  Returns:
    ``(count, mean [C], m2 [C])`` float64 for all batches together; the
    variance is ``m2 / count`` (population) or ``m2 / (count - 1)`` (sample).
  """
  parts = list(parts)
  if not parts:
    raise ValueError("no batches to combine")
  count, mean, m2 = (np.asarray(v, np.float64) for v in parts[0])
  for part_count, part_mean, part_m2 in parts[1:]:
    part_count = np.float64(part_count)
    part_mean, part_m2 = np.asarray(part_mean, np.float64), np.asarray(part_m2, np.float64)
    total = count + part_count
    delta = part_mean - mean
    mean = mean + delta * (part_count / total)
    m2 = m2 + part_m2 + delta ** 2 * (count * part_count / total)
    count = total
  return float(count), mean, m2
