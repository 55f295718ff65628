"""Schedules, objective and DDIM against closed forms on a Gaussian data set.

For data ``x0 ~ N(mu, diag(s^2))`` the optimal noise predictor is linear,
``eps*(x_t, t) = sqrt(1 - a) (x_t - sqrt(a) mu) / (a s^2 + 1 - a)`` with
``a = alphabar_t``, so samplers can be checked without a network, and the
ancestral DDPM chain driven by it has moments computable exactly in float64.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spectral_jax import diffusion

MU = np.array([1.5, -0.5, 0.3])
VAR = np.array([0.25, 1.0, 4.0])
NUM_SAMPLES = 8192

# The sampler as a caller jits it: network and options static, so each
# configuration compiles once (eagerly, `lax.scan` retraces every call).
_sample = jax.jit(diffusion.ddim_sample, static_argnums=(0, 3), static_argnames=(
    "num_steps", "eta", "guidance_scale", "guidance_loss", "recurrence_steps", "clip_x0",
    "prediction", "unroll", "guidance_gradient"))


def _gaussian_eps(schedule, mu, var):
  """Optimal ``eps(z [B, D], t [B]) -> [B, D]`` for data ``N(mu, diag(var))``."""
  mu, var = jnp.asarray(mu, jnp.float32), jnp.asarray(var, jnp.float32)

  def eps(z, t):
    a = schedule.alphas_cumprod[t][:, None]
    return jnp.sqrt(1 - a) * (z - jnp.sqrt(a) * mu) / (a * var + 1 - a)
  return eps


def _gaussian_v(schedule, mu, var):
  """Optimal ``v(z [B, D], t [B]) -> [B, D]`` for data ``N(mu, diag(var))``:
  ``sqrt(a) eps* - sqrt(1 - a) E[x0 | z]``, defined at ``a = 0`` too (where
  it is ``-mu``)."""
  mu, var = jnp.asarray(mu, jnp.float32), jnp.asarray(var, jnp.float32)
  eps = _gaussian_eps(schedule, mu, var)

  def v(z, t):
    a = schedule.alphas_cumprod[t][:, None]
    x0 = mu + jnp.sqrt(a) * var * (z - jnp.sqrt(a) * mu) / (a * var + 1 - a)
    return jnp.sqrt(a) * eps(z, t) - jnp.sqrt(1 - a) * x0
  return v


def _unconditional(eps):
  return lambda z, t, cond_mask: eps(z, t)


def _ddpm_moments(alphas_cumprod, mu, var):
  """Exact mean and variance ``[D]`` of ancestral DDPM from ``N(0, 1)``.

  Written in DDPM's own form (Ho et al. 2020, Alg. 2): ``x_{t-1} =
  (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(1 - beta_t) + sqrt(beta~_t) n``.
  The optimal eps is affine in ``x_t``, so the chain stays Gaussian.
  """
  abar = np.asarray(alphas_cumprod, np.float64)
  mean, variance = np.zeros_like(mu), np.ones_like(var)
  for t in range(len(abar) - 1, -1, -1):
    a = abar[t]
    a_prev = abar[t - 1] if t > 0 else 1.0
    beta = 1 - a / a_prev
    eps_slope = math.sqrt(1 - a) / (a * var + 1 - a)
    eps_offset = -eps_slope * math.sqrt(a) * mu
    scale = 1 / math.sqrt(1 - beta)
    slope = scale * (1 - beta / math.sqrt(1 - a) * eps_slope)
    offset = -scale * beta / math.sqrt(1 - a) * eps_offset
    posterior_var = (1 - a_prev) / (1 - a) * beta
    mean = slope * mean + offset
    variance = slope**2 * variance + posterior_var
  return mean, variance


def _assert_moments(samples, mean, var, bias=0.0):
  """Sample moments within 4 standard errors (plus a known ``bias``) of truth."""
  samples = np.asarray(samples, np.float64)
  n = samples.shape[0]
  np.testing.assert_array_less(np.abs(samples.mean(0) - mean), 4 * np.sqrt(var / n) + bias)
  np.testing.assert_array_less(np.abs(samples.var(0) / var - 1), 4 * np.sqrt(2 / n) + bias)


def test_scaled_linear_schedule_known_values_and_pytree():
  schedule = diffusion.make_schedule("scaled_linear")
  assert schedule.num_steps == 1000
  assert schedule.betas.dtype == jnp.float32 and schedule.alphas_cumprod.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(schedule.betas)[[0, -1]], [0.00085, 0.012], rtol=1e-6)
  np.testing.assert_allclose(np.diff(np.sqrt(np.float64(schedule.betas))),
                             (math.sqrt(0.012) - math.sqrt(0.00085)) / 999, rtol=1e-4)
  abar = np.asarray(schedule.alphas_cumprod)
  assert np.all(np.diff(abar) < 0) and 0 < abar[-1] < 0.005 and abar[0] == np.float32(1 - 0.00085)
  assert len(jax.tree.leaves(schedule)) == 2
  doubled = jax.jit(lambda s: s.alphas_cumprod * 2)(schedule)
  np.testing.assert_array_equal(doubled, abar * 2)


def test_linear_schedule_and_custom_range():
  schedule = diffusion.make_schedule("linear", num_steps=50, beta_start=1e-3, beta_end=0.3)
  np.testing.assert_allclose(schedule.betas, np.linspace(1e-3, 0.3, 50), rtol=1e-6)
  np.testing.assert_allclose(schedule.alphas_cumprod, np.cumprod(1 - np.linspace(1e-3, 0.3, 50)),
                             rtol=1e-5)
  np.testing.assert_allclose(np.asarray(diffusion.make_schedule("linear").betas)[[0, -1]],
                             [1e-4, 0.02], rtol=1e-6)


def test_cosine_schedule_follows_squared_cosine_and_clips_betas():
  num_steps, offset = 1000, 0.008
  schedule = diffusion.make_schedule("cosine", num_steps)
  f = lambda u: np.cos((u + offset) / (1 + offset) * np.pi / 2) ** 2
  expected = f(np.arange(1, num_steps + 1) / num_steps) / f(0.0)
  # The final beta is clipped to 0.999, so the last alphabar is not ~0 exactly.
  np.testing.assert_allclose(schedule.alphas_cumprod[:-1], expected[:-1], rtol=1e-4, atol=1e-7)
  assert schedule.betas.max() == np.float32(0.999) and schedule.alphas_cumprod[-1] > 0


def test_unknown_schedule_is_rejected():
  with pytest.raises(ValueError, match="unknown noise schedule 'sigmoid'"):
    diffusion.make_schedule("sigmoid")


def test_add_noise_and_predict_x0_invert_each_other():
  schedule = diffusion.make_schedule("scaled_linear")
  keys = jax.random.split(jax.random.key(0), 3)
  z0 = jax.random.normal(keys[0], (6, 5, 4, 3))
  noise = jax.random.normal(keys[1], z0.shape)
  t = diffusion.sample_timesteps(keys[2], 6, 1000)
  assert t.dtype == jnp.int32 and t.shape == (6,)
  z_t = diffusion.add_noise(schedule, z0, noise, t)
  a = float(schedule.alphas_cumprod[t[2]])
  np.testing.assert_allclose(z_t[2], math.sqrt(a) * z0[2] + math.sqrt(1 - a) * noise[2],
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(diffusion.predict_x0(schedule, z_t, noise, t), z0, atol=2e-5)


def test_sample_timesteps_cover_the_range():
  t = np.asarray(diffusion.sample_timesteps(jax.random.key(1), 20000, 10))
  assert t.min() == 0 and t.max() == 9
  np.testing.assert_allclose(np.bincount(t) / t.size, 0.1, atol=0.01)


def test_prediction_loss_is_mse_with_optional_per_example_weights():
  output = jnp.arange(24.0).reshape(2, 3, 4)
  target = jnp.zeros_like(output)
  per_example = np.square(np.arange(24.0)).reshape(2, 12).mean(1)
  np.testing.assert_allclose(diffusion.prediction_loss(output, target), per_example.mean())
  weighted = diffusion.prediction_loss(output, target, jnp.array([0.0, 2.0]))
  np.testing.assert_allclose(weighted, per_example[1])


def test_zero_terminal_snr_rescales_sqrt_alphabar_to_end_at_zero():
  plain = diffusion.make_schedule("scaled_linear")
  schedule = diffusion.make_schedule("scaled_linear", zero_terminal_snr=True)
  # Reference in float64: sqrt(alphabar) mapped affinely, first value kept,
  # last sent to 0 (Lin et al. 2024, Algorithm 1).
  betas = np.linspace(math.sqrt(0.00085), math.sqrt(0.012), 1000, dtype=np.float64) ** 2
  root = np.sqrt(np.cumprod(1 - betas))
  expected = ((root - root[-1]) * root[0] / (root[0] - root[-1])) ** 2
  np.testing.assert_allclose(schedule.alphas_cumprod, expected, rtol=1e-5, atol=1e-9)
  assert float(schedule.alphas_cumprod[-1]) == 0.0 and float(schedule.betas[-1]) == 1.0
  np.testing.assert_allclose(schedule.alphas_cumprod[0], plain.alphas_cumprod[0], rtol=1e-6)
  np.testing.assert_allclose(np.cumprod(1 - np.asarray(schedule.betas, np.float64)),
                             expected, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("zero_terminal_snr", [False, True])
def test_v_target_implies_the_clean_latent_and_the_noise(zero_terminal_snr):
  schedule = diffusion.make_schedule("linear", zero_terminal_snr=zero_terminal_snr)
  keys = jax.random.split(jax.random.key(0), 2)
  z0 = jax.random.normal(keys[0], (4, 5, 3))
  noise = jax.random.normal(keys[1], z0.shape)
  t = jnp.array([0, 400, 998, 999], jnp.int32)
  z_t = diffusion.add_noise(schedule, z0, noise, t)
  v = diffusion.regression_target(schedule, z0, noise, t, "v")
  a = np.asarray(schedule.alphas_cumprod, np.float64)[np.asarray(t)][:, None, None]
  np.testing.assert_allclose(v, np.sqrt(a) * noise - np.sqrt(1 - a) * z0, rtol=1e-5, atol=1e-6)
  x0, eps = diffusion.x0_and_eps(z_t, v, schedule.alphas_cumprod[t], "v")
  np.testing.assert_allclose(x0, z0, atol=1e-5)
  np.testing.assert_allclose(eps, noise, atol=1e-5)
  np.testing.assert_array_equal(diffusion.regression_target(schedule, z0, noise, t, "epsilon"),
                                noise)
  with pytest.raises(ValueError, match="prediction"):
    diffusion.regression_target(schedule, z0, noise, t, "x0")


def test_v_prediction_samples_what_epsilon_prediction_does():
  # The same optimal network, predicting ε or v: every DDIM path (guidance,
  # loss guidance, ancestral noise) gives the same samples.
  schedule = diffusion.make_schedule("linear", num_steps=100, beta_start=1e-3, beta_end=0.2)
  by_eps = _unconditional(_gaussian_eps(schedule, MU, VAR))
  by_v = _unconditional(_gaussian_v(schedule, MU, VAR))
  options = dict(num_steps=20, eta=0.5, guidance_scale=1.0, guidance_weight=0.3,
                 guidance_loss=lambda x0: jnp.sum(x0**2))
  from_eps = _sample(by_eps, schedule, jax.random.key(8), (256, 3), **options)
  from_v = _sample(by_v, schedule, jax.random.key(8), (256, 3), prediction="v", **options)
  np.testing.assert_allclose(from_v, from_eps, rtol=1e-4, atol=1e-4)


def test_v_prediction_at_zero_terminal_snr_samples_the_data():
  schedule = diffusion.make_schedule("linear", zero_terminal_snr=True)
  v_fn = _unconditional(_gaussian_v(schedule, MU, VAR))
  samples = _sample(v_fn, schedule, jax.random.key(10), (NUM_SAMPLES, 3), num_steps=250,
                    prediction="v")
  # Unlike the plain schedule's, the start N(0, 1) is the exact marginal at
  # the top step; what is left is discretization.
  _assert_moments(samples, MU, VAR, bias=0.03)
  guided = _sample(v_fn, schedule, jax.random.key(10), (64, 3), num_steps=25, prediction="v",
                   guidance_loss=lambda x0: jnp.sum(x0**2), guidance_weight=0.1,
                   recurrence_steps=2)
  assert np.all(np.isfinite(guided))


def test_trailing_timesteps():
  timesteps = diffusion.ddim_timesteps(1000, 250)
  assert timesteps[0] == 999 and timesteps[-1] == 3 and np.all(np.diff(timesteps) == -4)
  np.testing.assert_array_equal(diffusion.ddim_timesteps(10, 3), [9, 6, 3])
  np.testing.assert_array_equal(diffusion.ddim_timesteps(7, 7), np.arange(6, -1, -1))
  with pytest.raises(ValueError, match="num_steps"):
    diffusion.ddim_timesteps(10, 11)
  assert diffusion.eps_calls_per_sample(250) == 250
  assert diffusion.eps_calls_per_sample(250, recurrence_steps=2) == 500


def test_eta_one_with_all_steps_is_ancestral_ddpm():
  schedule = diffusion.make_schedule("linear")
  eps_fn = _unconditional(_gaussian_eps(schedule, MU, VAR))
  samples = _sample(eps_fn, schedule, jax.random.key(2), (NUM_SAMPLES, 3), num_steps=1000,
                    eta=1.0)
  ddpm_mean, ddpm_var = _ddpm_moments(schedule.alphas_cumprod, MU, VAR)
  _assert_moments(samples, ddpm_mean, ddpm_var)
  # 1000 steps of DDPM underestimate the variance by at most 1.6% here.
  _assert_moments(samples, MU, VAR, bias=0.02)


def test_deterministic_ddim_follows_the_probability_flow():
  schedule = diffusion.make_schedule("linear")
  eps_fn = _unconditional(_gaussian_eps(schedule, MU, VAR))
  samples = _sample(eps_fn, schedule, jax.random.key(3), (NUM_SAMPLES, 3), num_steps=250)
  np.testing.assert_array_equal(
      samples, _sample(eps_fn, schedule, jax.random.key(3), (NUM_SAMPLES, 3), num_steps=250))
  # Discretization (2.4% in the variance at 250 steps) and starting from
  # N(0, 1) rather than the exact marginal at t = 999 bias the moments.
  _assert_moments(samples, MU, VAR, bias=0.03)


def _conditional_toy(schedule, record):
  """``eps_fn`` whose condition is data mean ``MU``, unconditional ``-MU``."""
  eps_cond = _gaussian_eps(schedule, MU, VAR)
  eps_uncond = _gaussian_eps(schedule, -MU, VAR)

  def eps_fn(z, t, cond_mask):
    record.append((z.shape, t.shape, t.dtype, cond_mask.shape, cond_mask.dtype))
    return jnp.where(cond_mask[:, None], eps_cond(z, t), eps_uncond(z, t))
  return eps_fn, eps_cond, eps_uncond


def test_no_guidance_is_one_conditional_call_on_the_batch():
  schedule = diffusion.make_schedule("linear", num_steps=100, beta_start=1e-3, beta_end=0.2)
  traced = []
  eps_fn, eps_cond, _ = _conditional_toy(schedule, traced)
  rng = jax.random.key(4)
  guided = _sample(eps_fn, schedule, rng, (64, 3), num_steps=20, eta=0.5)
  assert traced == [((64, 3), (64,), jnp.int32, (64,), jnp.bool_)]
  reference = _sample(_unconditional(eps_cond), schedule, rng, (64, 3), num_steps=20, eta=0.5)
  np.testing.assert_array_equal(guided, reference)


def test_guidance_is_one_batched_call_with_the_combined_noise():
  schedule = diffusion.make_schedule("linear", num_steps=100, beta_start=1e-3, beta_end=0.2)
  traced = []
  eps_fn, eps_cond, eps_uncond = _conditional_toy(schedule, traced)
  rng = jax.random.key(5)
  guided = _sample(eps_fn, schedule, rng, (64, 3), num_steps=20, eta=0.5, guidance_scale=1.0)
  assert traced == [((128, 3), (128,), jnp.int32, (128,), jnp.bool_)]
  combined = lambda z, t, cond_mask: 2 * eps_cond(z, t) - eps_uncond(z, t)
  reference = _sample(combined, schedule, rng, (64, 3), num_steps=20, eta=0.5)
  np.testing.assert_allclose(guided, reference, rtol=1e-5, atol=1e-5)


def test_calls_per_sample_with_guidance_loss_and_recurrence():
  schedule = diffusion.make_schedule("linear", num_steps=100, beta_start=1e-3, beta_end=0.2)
  eps = _gaussian_eps(schedule, MU, VAR)
  calls = []

  def eps_fn(z, t, cond_mask):
    jax.debug.callback(lambda: calls.append(1))
    return eps(z, t)

  samples = _sample(eps_fn, schedule, jax.random.key(6), (8, 3), num_steps=7, guidance_scale=1.5,
                    guidance_loss=lambda x0: jnp.sum(x0**2), guidance_weight=0.1,
                    recurrence_steps=3)
  samples.block_until_ready()
  jax.effects_barrier()
  assert len(calls) == diffusion.eps_calls_per_sample(7, recurrence_steps=3) == 21
  assert np.all(np.isfinite(samples))


def test_loss_guidance_with_zero_weight_changes_nothing_and_pulls_when_weighted():
  schedule = diffusion.make_schedule("linear", num_steps=100, beta_start=1e-3, beta_end=0.2)
  eps_fn = _unconditional(_gaussian_eps(schedule, MU, VAR))
  target = jnp.array([3.0, 3.0, 3.0])
  loss = lambda x0: 0.5 * jnp.sum((x0 - target) ** 2)
  sample = functools.partial(_sample, eps_fn, schedule, jax.random.key(7), (1024, 3),
                             num_steps=50)
  plain = sample()
  np.testing.assert_allclose(sample(guidance_loss=loss, guidance_weight=0.0), plain,
                             rtol=1e-6, atol=1e-6)
  pulled = sample(guidance_loss=loss, guidance_weight=0.5)
  distance = lambda x: float(jnp.linalg.norm(x.mean(0) - target))
  assert distance(pulled) < 0.8 * distance(plain)


def test_guidance_through_the_clean_latent_alone_is_one_formula():
  """``guidance_gradient="x0"`` holds the v-prediction network's output
  fixed: one DDIM step moves ``eps`` by ``u sqrt(1 - a) sqrt(a) grad_x0 L``,
  checked in float64 against the step written out here; the whole sampler
  pulls to the loss's target almost as far as the gradient through the
  network does; and an ε-prediction network is refused (holding ε fixed
  the gradient grows as 1/sqrt(a): pulled to 3, the samples land near 50)."""
  schedule = diffusion.make_schedule("linear", num_steps=100, beta_start=1e-3, beta_end=0.2)
  network = _gaussian_v(schedule, MU, VAR)
  eps_fn = _unconditional(network)
  target = np.array([3.0, 3.0, 3.0])
  loss = lambda x0: 0.5 * jnp.sum((x0 - target) ** 2)
  z, plan = diffusion.ddim_start(schedule, jax.random.key(3), (16, 3), 10)
  first = jax.tree.map(lambda x: x[:1], plan)
  stepped = diffusion.ddim_steps(eps_fn, schedule, z, first, guidance_loss=loss,
                                 guidance_weight=0.5, guidance_gradient="x0", prediction="v")
  t, a, a_prev = int(first[0][0]), float(first[1][0]), float(first[2][0])
  zz = np.asarray(z, np.float64)
  v = np.asarray(network(z, jnp.full((16,), t)), np.float64)
  eps, x0 = np.sqrt(1 - a) * zz + np.sqrt(a) * v, np.sqrt(a) * zz - np.sqrt(1 - a) * v
  shift = 0.5 * np.sqrt(1 - a) * np.sqrt(a) * (x0 - target)
  eps = eps + shift
  x0 = x0 - np.sqrt(1 - a) * shift / np.sqrt(a)
  expected = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps
  np.testing.assert_allclose(stepped, expected, rtol=1e-4, atol=1e-4)

  sample = functools.partial(_sample, eps_fn, schedule, jax.random.key(7), (1024, 3),
                             num_steps=50, prediction="v", guidance_loss=loss,
                             guidance_weight=0.5)
  distance = lambda x: float(jnp.linalg.norm(x.mean(0) - target))
  plain = distance(_sample(eps_fn, schedule, jax.random.key(7), (1024, 3), num_steps=50,
                           prediction="v"))
  through_network = distance(sample(guidance_gradient="network"))
  through_x0 = distance(sample(guidance_gradient="x0"))
  # Measured: 4.69 unguided, 2.42 through the network, 2.59 through x0.
  assert through_x0 < 0.6 * plain and through_x0 < 1.15 * through_network
  with pytest.raises(ValueError, match="needs a v-prediction network"):
    diffusion.ddim_steps(_unconditional(_gaussian_eps(schedule, MU, VAR)), schedule, z, first,
                         guidance_loss=loss, guidance_gradient="x0")
  with pytest.raises(ValueError, match="guidance_gradient must be one of"):
    diffusion.ddim_steps(eps_fn, schedule, z, first, guidance_loss=loss,
                         guidance_gradient="net", prediction="v")


def test_unrolled_guided_steps_sample_what_the_loops_do():
  """``unroll`` changes how the program is compiled, not its numbers: loss
  guidance with recurrence and ancestral noise, in one call or in unrolled
  one-step slices as the sampler runs it on a CPU."""
  schedule = diffusion.make_schedule("linear", num_steps=100, beta_start=1e-3, beta_end=0.2)
  eps_fn = _unconditional(_gaussian_eps(schedule, MU, VAR))
  options = dict(eta=0.5, guidance_scale=0.0, guidance_loss=lambda x0: jnp.sum(x0**2),
                 guidance_weight=0.3, recurrence_steps=2)
  looped = _sample(eps_fn, schedule, jax.random.key(8), (64, 3), num_steps=6, **options)
  unrolled = _sample(eps_fn, schedule, jax.random.key(8), (64, 3), num_steps=6, unroll=True,
                     **options)
  steps = jax.jit(diffusion.ddim_steps, static_argnums=0, static_argnames=(
      "eta", "guidance_scale", "guidance_loss", "recurrence_steps", "unroll"))
  z, plan = diffusion.ddim_start(schedule, jax.random.key(8), (64, 3), 6)
  for first in range(6):
    z = steps(eps_fn, schedule, z, jax.tree.map(lambda x: x[first:first + 1], plan),
              unroll=True, **options)
  plain = _sample(eps_fn, schedule, jax.random.key(8), (64, 3), num_steps=6)
  assert np.abs(np.asarray(looped) - np.asarray(plain)).max() > 0.05  # Guidance pulls.
  np.testing.assert_allclose(unrolled, looped, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(z, looped, rtol=1e-5, atol=1e-5)


def test_clipped_x0_bounds_the_output():
  schedule = diffusion.make_schedule("linear", num_steps=100, beta_start=1e-3, beta_end=0.2)
  eps_fn = _unconditional(_gaussian_eps(schedule, MU, VAR))
  samples = _sample(eps_fn, schedule, jax.random.key(9), (256, 3), num_steps=10, clip_x0=1.0)
  # The last step lands on the clipped x0 prediction itself.
  assert np.abs(samples).max() <= 1.0 and np.any(samples == 1.0)
