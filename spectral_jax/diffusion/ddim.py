"""DDIM sampling with classifier-free and loss guidance (docs/DESIGN.md §2).

Conventions:

* Timesteps are "trailing" (Lin et al., 2024): ``S`` steps of ``N`` start at
  ``t = N - 1``, the noisiest level the network was trained on, and are spaced
  by ``N / S``; the last step jumps to ``alphabar = 1``, so the output is the
  clean prediction ``x0``. With ``S = N`` and ``eta = 1`` the sampler is
  ancestral DDPM with the posterior variance ``beta~_t``.
* Classifier-free guidance: ``eps = (1 + w) eps(z, c) - w eps(z, 0)``;
  ``w = 0`` is the purely conditional sampler.
* Universal guidance (Bansal et al., 2023):
  ``eps += u * sqrt(1 - alphabar_t) * grad_{z_t} L(x0(z_t))``, differentiating
  through the network, with optional self-recurrence; or, for a
  v-prediction network, ``guidance_gradient="x0"``: holding its output
  fixed, the gradient through the clean-latent formula alone (a backward
  pass through the loss and no network, at the cost of a cruder direction).
* The network predicts ε or ``v`` (``prediction``, `training.x0_and_eps`);
  a step needs both the clean latent and the noise, derived from either.
  Guidance combines raw outputs: both conversions are affine in the output
  with weights that sum to one, so guiding ``v`` is guiding ε.
* ``x0`` is not clipped unless asked: latents have no fixed range.

The loop is one `jax.lax.scan` (`ddim_steps`), which may also run the plan
in slices to show progress between them, and may be unrolled (``unroll``):
XLA:CPU runs a loss-guided step, a backward pass through the network, about
several times slower inside a compiled loop than as straight-line code
(docs/BENCHMARKS.md), so a caller guiding on a CPU runs short slices
unrolled. Wrap `ddim_sample` in
`jax.jit` with ``eps_fn`` closed over (or static) and the keyword options
static: called eagerly, the scan is retraced and recompiled on every call.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from spectral_jax.diffusion.schedules import Schedule
from spectral_jax.diffusion.training import x0_and_eps

# eps_fn(z_t [B, ...] float32, t [B] int32, cond_mask [B] bool) -> [B, ...]:
# the network with its parameters closed over, predicting ε (or v, with
# prediction="v"). cond_mask True uses the image condition, False the
# dropped (unconditional) one.
EpsFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]

# How loss guidance differentiates (`ddim_steps`' ``guidance_gradient``).
GUIDANCE_GRADIENTS = ("network", "x0")


def ddim_timesteps(num_train_steps: int, num_steps: int) -> np.ndarray:
  """``[S]`` int32 decreasing trailing timesteps: ``N - 1 - floor(i N / S)``.

  For N = 1000, S = 250: 999, 995, ..., 3.
  """
  if not 1 <= num_steps <= num_train_steps:
    raise ValueError(f"num_steps must be in [1, {num_train_steps}], got {num_steps}")
  steps = np.arange(num_steps, dtype=np.int64)
  return (num_train_steps - 1 - steps * num_train_steps // num_steps).astype(np.int32)


def eps_calls_per_sample(num_steps: int, recurrence_steps: int = 1) -> int:
  """Network calls `ddim_sample` makes for one batch of latents.

  Each call is one batched forward pass over all ``B`` latents (all K
  frequencies of a picture), over ``2B`` with classifier-free guidance; with a
  guidance loss each call also runs one backward pass.
  """
  return num_steps * recurrence_steps


def ddim_sample(eps_fn: EpsFn, schedule: Schedule, rng: jax.Array, shape: tuple[int, ...], *,
                num_steps: int = 250, **options) -> jax.Array:
  """Samples clean latents ``z0`` ``[B, ...]`` = ``shape`` by DDIM: `ddim_start`
  then every step in one `ddim_steps` scan.

  Args:
    eps_fn: the noise predictor, see `EpsFn`.
    schedule: the training noise schedule (N timesteps).
    rng: PRNG key; the same key gives the same samples whatever the guidance.
    shape: ``(B, ...)`` latent shape, static.
    num_steps: S <= N sampling steps, static.
    **options: of `ddim_steps`.
  Returns:
    ``[B, ...]`` float32 clean latents.
  """
  z, plan = ddim_start(schedule, rng, shape, num_steps)
  return ddim_steps(eps_fn, schedule, z, plan, **options)


def ddim_start(schedule: Schedule, rng: jax.Array, shape: tuple[int, ...],
               num_steps: int) -> tuple[jax.Array, tuple[jax.Array, ...]]:
  """The starting noise ``z_T`` ``[B, ...]`` = ``shape`` and the plan of the
  ``S`` steps: ``(t [S] int32, alphabar_t [S], alphabar_prev [S], keys [S])``.

  `ddim_steps` may run the plan whole or in consecutive slices (the same
  samples either way), e.g. to report progress between slices.
  """
  timesteps = ddim_timesteps(schedule.num_steps, num_steps)
  alphabar = schedule.alphas_cumprod[timesteps]
  alphabar_prev = jnp.concatenate([alphabar[1:], jnp.ones((1,), alphabar.dtype)])
  init_key, loop_key = jax.random.split(rng)
  z = jax.random.normal(init_key, shape, jnp.float32)
  return z, (jnp.asarray(timesteps), alphabar, alphabar_prev,
             jax.random.split(loop_key, num_steps))


def ddim_steps(eps_fn: EpsFn, schedule: Schedule, z: jax.Array, plan: tuple[jax.Array, ...], *,
               eta: float = 0.0, guidance_scale: float = 0.0,
               guidance_loss: Callable[[jax.Array], jax.Array] | None = None,
               guidance_weight: float | jax.Array = 0.0, recurrence_steps: int = 1,
               guidance_gradient: str = "network", clip_x0: float | None = None,
               prediction: str = "epsilon", unroll: bool = False) -> jax.Array:
  """Runs the steps of ``plan`` (all of `ddim_start`'s, or a slice) from
  latents ``z`` ``[B, ...]``, in one `jax.lax.scan`.

  Args:
    eps_fn: the noise predictor, see `EpsFn`.
    schedule: the training noise schedule (N timesteps).
    z: ``[B, ...]`` float32 latents at the plan's first timestep.
    plan: ``(t, alphabar, alphabar_prev, keys)``, each ``[S']``.
    eta: static in [0, 1]; 0 is deterministic DDIM, 1 adds the ancestral
      (DDPM posterior) noise.
    guidance_scale: classifier-free guidance ``w``, a static Python number.
      0 makes one conditional call on ``B`` latents per step; otherwise one
      call on ``2B`` rows, each latent twice in a row (rows 2i, 2i + 1) with
      ``cond_mask = [True, False] * B``: split over devices, an example's
      two rows stay on its device.
    guidance_loss: optional differentiable ``L(x0_pred [B, ...]) -> scalar``
      on the predicted clean latents. Sum (not average) per-example losses so
      that a sample's gradient does not depend on B.
    guidance_weight: ``u``, the loss-guidance strength (may be traced).
    recurrence_steps: static; iterations per step, each after the first
      re-noising the stepped latent back to ``t`` with fresh noise. 1 = none.
    guidance_gradient: static; ``"network"``: ``grad_{z_t} L(x0(z_t))``
      through the network; ``"x0"``: with the network's output ``v`` held
      fixed, ``sqrt(alphabar) grad_x0 L``, so only the loss is
      differentiated. Only with v-prediction: holding ε fixed gives
      ``grad_x0 L / sqrt(alphabar)``, which blows up at the noisy steps
      (a sampler pulled towards a target overshoots it tenfold).
    clip_x0: if set, clip ``x0`` to ``[-clip_x0, clip_x0]`` and take the
      noise consistent with it.
    prediction: static, what ``eps_fn`` predicts: ``"epsilon"`` or ``"v"``.
    unroll: static; unroll the loops over the plan's steps and the
      recurrence instead of compiling them as loops: the same numbers, a
      program that grows with the plan (meant for slices of a step or a
      few) and runs faster where a loop body is slow (see the module).
  Returns:
    ``[B, ...]`` float32 latents after the plan's last step (clean latents
    after the whole plan).
  """
  if not 0.0 <= eta <= 1.0:
    raise ValueError(f"eta must be in [0, 1], got {eta}")
  if recurrence_steps < 1:
    raise ValueError(f"recurrence_steps must be >= 1, got {recurrence_steps}")
  if guidance_gradient not in GUIDANCE_GRADIENTS:
    raise ValueError(f"guidance_gradient must be one of {GUIDANCE_GRADIENTS}, "
                     f"got {guidance_gradient!r}")
  if guidance_gradient == "x0" and prediction != "v":
    raise ValueError("guidance_gradient='x0' needs a v-prediction network (holding ε fixed, "
                     "the gradient grows as 1/sqrt(alphabar) at the noisy steps)")
  shape = z.shape
  batch = shape[0]

  def guided_output(z, t):
    """``[B, ...]`` classifier-free guided network output at ``t`` ``[B]``."""
    if guidance_scale == 0:
      return eps_fn(z, t, jnp.ones((batch,), bool)).astype(z.dtype)
    # Rows 2i and 2i + 1: example i with and without its condition, side by
    # side, so that a batch split over devices keeps both on i's device.
    cond_mask = jnp.arange(2 * batch) % 2 == 0
    both = eps_fn(jnp.repeat(z, 2, axis=0), jnp.repeat(t, 2), cond_mask).astype(z.dtype)
    cond, uncond = both[0::2], both[1::2]
    return (1 + guidance_scale) * cond - guidance_scale * uncond

  def step(z, t, a, a_prev, key):
    """One DDIM update ``z_t [B, ...]`` → ``z_{t_prev}``; ``a`` = alphabar."""
    t_batch = jnp.full((batch,), t, jnp.int32)
    if guidance_loss is None:
      x0, eps = x0_and_eps(z, guided_output(z, t_batch), a, prediction)
    else:
      output = None if guidance_gradient == "network" else guided_output(z, t_batch)

      def loss(z):
        held = guided_output(z, t_batch) if output is None else jax.lax.stop_gradient(output)
        x0, eps = x0_and_eps(z, held, a, prediction)
        return guidance_loss(x0), (x0, eps)
      grad, (x0, eps) = jax.grad(loss, has_aux=True)(z)
      shift = guidance_weight * jnp.sqrt(1 - a) * grad
      eps = eps + shift
      # The x0 the shifted noise implies. At alphabar = 0 (the first step of
      # a zero-terminal-SNR schedule) no x0 is consistent with any noise:
      # there the guidance moves only the noise direction.
      x0 = jnp.where(a > 0, x0 - jnp.sqrt(1 - a) * shift / jnp.sqrt(jnp.maximum(a, 1e-20)), x0)
    if clip_x0 is not None:
      x0 = jnp.clip(x0, -clip_x0, clip_x0)
      eps = (z - jnp.sqrt(a) * x0) / jnp.sqrt(1 - a)
    sigma = eta * jnp.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
    # Exactly >= 0 for eta <= 1; the clamp only absorbs rounding.
    direction = jnp.sqrt(jnp.maximum(1 - a_prev - sigma**2, 0.0))
    z_prev = jnp.sqrt(a_prev) * x0 + direction * eps
    if eta > 0:
      z_prev = z_prev + sigma * jax.random.normal(key, shape, z.dtype)
    return z_prev

  def recurrent_step(z, t, a, a_prev, key):
    """`step`, repeated with re-noising by ``q(z_t | z_{t_prev})``."""
    def iteration(carry, key):
      z_t, _ = carry
      step_key, noise_key = jax.random.split(key)
      z_prev = step(z_t, t, a, a_prev, step_key)
      ratio = a / a_prev
      z_t = jnp.sqrt(ratio) * z_prev + jnp.sqrt(1 - ratio) * jax.random.normal(
          noise_key, shape, z.dtype)
      return (z_t, z_prev), None
    (_, z_prev), _ = _scan(iteration, (z, z), jax.random.split(key, recurrence_steps), unroll)
    return z_prev

  def body(z, xs):
    t, a, a_prev, key = xs
    if recurrence_steps == 1:
      return step(z, t, a, a_prev, key), None
    return recurrent_step(z, t, a, a_prev, key), None

  z, _ = _scan(body, z, plan, unroll)
  return z


def _scan(body, carry, xs, unroll: bool):
  """`jax.lax.scan` of ``body`` over the leading axis of ``xs`` (outputs
  dropped), or the same as a Python loop when ``unroll``: ``lax.scan``'s own
  ``unroll=True`` still compiles a loop (of one trip), whose body XLA:CPU runs
  as slowly."""
  if not unroll:
    return jax.lax.scan(body, carry, xs)
  for i in range(jax.tree.leaves(xs)[0].shape[0]):
    carry, _ = body(carry, jax.tree.map(lambda x, i=i: x[i], xs))
  return carry, None
