"""The training objective: forward noising, the regression target, the loss,
and the clean latent and noise a network's output implies.

The network predicts one of (``diffusion.prediction`` in the config):

* ``"epsilon"``: the noise ``eps`` (DDPM, LDM, the paper);
* ``"v"``: the velocity ``v = sqrt(alphabar) eps - sqrt(1 - alphabar) z0``
  (Salimans & Ho, 2022), which stays informative where ``alphabar = 0``
  (zero-terminal-SNR schedules): there ``v = -z0``, while ``eps = z_t``.

Latents are any ``[B, ...]``; per-example quantities (timesteps ``t``,
weights) are ``[B]`` and broadcast over the trailing dimensions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from spectral_jax.diffusion.schedules import Schedule

PREDICTIONS = ("epsilon", "v")


def _per_example(values, like):
  """``[B]`` → ``[B, 1, ..., 1]`` with the rank and dtype of ``like``."""
  return values.reshape(values.shape + (1,) * (like.ndim - 1)).astype(like.dtype)


def add_noise(schedule: Schedule, z0, noise, t):
  """``z_t = sqrt(alphabar_t) z0 + sqrt(1 - alphabar_t) noise``.

  Args:
    schedule: the noise schedule.
    z0: ``[B, ...]`` clean latents.
    noise: ``[B, ...]`` standard normal noise, the ε regression target.
    t: ``[B]`` int32 timesteps in ``[0, N)``.
  Returns:
    ``[B, ...]`` noisy latents, dtype of ``z0``.
  """
  alphabar = schedule.alphas_cumprod[t]
  return (_per_example(jnp.sqrt(alphabar), z0) * z0
          + _per_example(jnp.sqrt(1.0 - alphabar), z0) * noise.astype(z0.dtype))


def sample_timesteps(rng: jax.Array, batch_size: int, num_steps: int):
  """``[B]`` int32 timesteps uniform over ``[0, num_steps)``."""
  return jax.random.randint(rng, (batch_size,), 0, num_steps, dtype=jnp.int32)


def fixed_noising(keys: jax.Array, shape: tuple[int, ...], num_steps: int):
  """Timesteps and noise for evaluation, drawn from one key per example.

  An example given the same key gets the same draw whatever batch it is in
  and however large that batch is, so losses of different networks, or of
  one network at different steps, compare on identical noisy inputs.

  Args:
    keys: ``[B]`` typed PRNG keys, one per example.
    shape: one example's latent shape (e.g. ``(F, h, w, C)``).
    num_steps: timesteps are uniform over ``[0, num_steps)``.
  Returns:
    ``t [B]`` int32 and ``noise [B, *shape]`` float32 standard normal.
  """
  def draw(key):
    t_key, noise_key = jax.random.split(key)
    return (jax.random.randint(t_key, (), 0, num_steps, dtype=jnp.int32),
            jax.random.normal(noise_key, shape, jnp.float32))

  return jax.vmap(draw)(keys)


def regression_target(schedule: Schedule, z0, noise, t, prediction: str):
  """The regression target of ``prediction`` for `add_noise` ``(z0, noise, t)``:
  ``noise`` for ``"epsilon"``, ``sqrt(alphabar_t) noise - sqrt(1 - alphabar_t)
  z0`` for ``"v"``; ``[B, ...]``, dtype of ``z0``."""
  check_prediction(prediction)
  if prediction == "epsilon":
    return noise.astype(z0.dtype)
  alphabar = schedule.alphas_cumprod[t]
  return (_per_example(jnp.sqrt(alphabar), z0) * noise.astype(z0.dtype)
          - _per_example(jnp.sqrt(1.0 - alphabar), z0) * z0)


def x0_and_eps(z_t, output, alphabar, prediction: str):
  """The clean latent and the noise that a network ``output`` implies.

  Args:
    z_t: ``[B, ...]`` noisy latents.
    output: ``[B, ...]`` the network's prediction of kind ``prediction``.
    alphabar: ``alphabar_t``, a scalar (one timestep for the batch, as in
      DDIM) or ``[B]``.
    prediction: ``"epsilon"`` or ``"v"``.
  Returns:
    ``(x0, eps)``, each like ``z_t``. For ``"epsilon"``, ``x0`` divides by
    ``sqrt(alphabar)`` and is undefined at ``alphabar = 0``; ``"v"`` is
    defined everywhere.
  """
  check_prediction(prediction)
  a = jnp.asarray(alphabar, z_t.dtype)
  if a.ndim:
    a = _per_example(a, z_t)
  output = output.astype(z_t.dtype)
  if prediction == "epsilon":
    return (z_t - jnp.sqrt(1.0 - a) * output) / jnp.sqrt(a), output
  return (jnp.sqrt(a) * z_t - jnp.sqrt(1.0 - a) * output,
          jnp.sqrt(1.0 - a) * z_t + jnp.sqrt(a) * output)


def prediction_of(diffusion_config) -> str:
  """What a run's network predicts, from its ``diffusion`` config block.
  Runs and exports saved before the setting existed predicted ε."""
  return diffusion_config.get("prediction", "epsilon")


def check_prediction(prediction: str) -> None:
  if prediction not in PREDICTIONS:
    raise ValueError(f"unknown diffusion prediction {prediction!r}; one of {PREDICTIONS}")


def predict_x0(schedule: Schedule, z_t, eps, t):
  """Clean latent implied by a noise prediction; inverse of `add_noise` in z0.

  Args:
    schedule: the noise schedule.
    z_t: ``[B, ...]`` noisy latents.
    eps: ``[B, ...]`` predicted noise.
    t: ``[B]`` int32 timesteps.
  Returns:
    ``[B, ...]`` ``(z_t - sqrt(1 - alphabar_t) eps) / sqrt(alphabar_t)``.
  """
  return x0_and_eps(z_t, eps, schedule.alphas_cumprod[t], "epsilon")[0]


def prediction_loss(output, target, weights=None):
  """Mean squared error of the network's prediction, a float32 scalar.

  Args:
    output: ``[B, ...]`` network output.
    target: ``[B, ...]`` what it should have predicted (`regression_target`).
    weights: optional ``[B]`` per-example weights (e.g. min-SNR weighting, or
      0 for padding examples). The loss is ``mean_b(weights_b * mse_b)``, so
      weights of 1 give the plain MSE and the scale does not depend on how
      many weights are 0.
  """
  squared = jnp.square(output.astype(jnp.float32) - target.astype(jnp.float32))
  per_example = squared.reshape(squared.shape[0], -1).mean(axis=1)
  if weights is not None:
    per_example = per_example * weights.astype(jnp.float32)
  return per_example.mean()
