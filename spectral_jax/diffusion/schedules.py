"""Noise schedules of the diffusion forward process.

A `Schedule` indexes timesteps ``t`` in ``[0, N)``; the forward process is
``z_t = sqrt(alphabar_t) z_0 + sqrt(1 - alphabar_t) eps`` with
``alphabar_t = prod_{s <= t} (1 - beta_s)``, so even ``t = 0`` adds a little
noise. Schedules are built once in float64 with NumPy and stored as float32.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# Nichol & Dhariwal (2021): the offset keeps beta_0 from being vanishingly
# small, the clip keeps the last betas below 1 where alphabar would reach 0.
COSINE_OFFSET = 0.008
COSINE_MAX_BETA = 0.999

# (beta_start, beta_end) per kind, the published values for N = 1000 steps:
# DDPM's linear schedule, and LDM's (the paper's) scaled-linear one.
DEFAULT_BETA_RANGE = {"linear": (1e-4, 0.02), "scaled_linear": (0.00085, 0.012)}
KINDS = ("linear", "scaled_linear", "cosine")


class Schedule(NamedTuple):
  """A noise schedule; a NamedTuple, so a pytree that passes through `jax.jit`.

  Attributes:
    betas: ``[N]`` float32 per-step noise variances ``beta_t``.
    alphas_cumprod: ``[N]`` float32 ``alphabar_t``, decreasing from ~1.
  """
  betas: jax.Array
  alphas_cumprod: jax.Array

  @property
  def num_steps(self) -> int:
    """N, the number of training timesteps (static, from the shape)."""
    return self.betas.shape[0]


def _cosine_betas(num_steps: int) -> np.ndarray:
  """``[N]`` betas with ``alphabar(t) = f(t + 1) / f(0)``,
  ``f(u) = cos^2(pi/2 (u/N + offset) / (1 + offset))``."""
  u = np.arange(num_steps + 1, dtype=np.float64) / num_steps
  f = np.cos((u + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2
  return np.minimum(1 - f[1:] / f[:-1], COSINE_MAX_BETA)


def make_schedule(kind: str, num_steps: int = 1000, beta_start: float | None = None,
                  beta_end: float | None = None) -> Schedule:
  """Builds a noise schedule.

  Args:
    kind: ``"linear"`` (betas evenly spaced), ``"scaled_linear"`` (LDM:
      ``betas = linspace(sqrt(beta_start), sqrt(beta_end), N)^2``) or
      ``"cosine"`` (Nichol & Dhariwal, betas clipped at `COSINE_MAX_BETA`).
    num_steps: N, the number of training timesteps.
    beta_start: first beta; ``None`` takes `DEFAULT_BETA_RANGE` for the kind.
      These defaults are for N = 1000: with fewer steps pass larger betas so
      that ``alphabar_{N-1}`` still reaches ~0. Ignored by ``"cosine"``.
    beta_end: last beta, as `beta_start`.
  """
  if kind not in KINDS:
    raise ValueError(f"unknown noise schedule {kind!r}; expected one of {KINDS}")
  if num_steps < 1:
    raise ValueError(f"num_steps must be >= 1, got {num_steps}")
  if kind == "cosine":
    betas = _cosine_betas(num_steps)
  else:
    default_start, default_end = DEFAULT_BETA_RANGE[kind]
    start = default_start if beta_start is None else beta_start
    end = default_end if beta_end is None else beta_end
    if kind == "linear":
      betas = np.linspace(start, end, num_steps, dtype=np.float64)
    else:
      betas = np.linspace(math.sqrt(start), math.sqrt(end), num_steps, dtype=np.float64) ** 2
  alphas_cumprod = np.cumprod(1.0 - betas)
  return Schedule(betas=jnp.asarray(betas, jnp.float32),
                  alphas_cumprod=jnp.asarray(alphas_cumprod, jnp.float32))
