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
    alphas_cumprod: ``[N]`` float32 ``alphabar_t``, decreasing from ~1 (to
      exactly 0 with ``zero_terminal_snr``).
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


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
  """``[N]`` betas whose ``alphabar_{N-1}`` is exactly 0 (Lin et al., 2024).

  ``sqrt(alphabar)`` is shifted and scaled so that its first value is kept and
  its last becomes 0: the noisiest training step then holds no trace of the
  data, as the pure noise that sampling starts from holds none. Otherwise
  (e.g. LDM's scaled-linear schedule, ``alphabar_{N-1} = 0.0047``) the network
  learns to read where the signal is from the residue in ``z_t`` at the top
  step instead of from its condition, and sampling, which has no such
  residue, places it at random. The last beta becomes 1.
  """
  root = np.sqrt(np.cumprod(1.0 - betas))
  first, last = root[0], root[-1]
  alphas_cumprod = ((root - last) * first / (first - last)) ** 2
  previous = np.concatenate([[1.0], alphas_cumprod[:-1]])
  return 1.0 - alphas_cumprod / previous


def make_schedule(kind: str, num_steps: int = 1000, beta_start: float | None = None,
                  beta_end: float | None = None, zero_terminal_snr: bool = False) -> Schedule:
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
    zero_terminal_snr: rescale so that ``alphabar_{N-1} = 0``
      (`rescale_zero_terminal_snr`). The network must then predict ``v`` (or
      ``x0``), not ε: at ``alphabar = 0`` the noise is ``z_t`` itself and an
      ε-prediction says nothing about the clean latent.
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
  if zero_terminal_snr:
    betas = rescale_zero_terminal_snr(betas)
  alphas_cumprod = np.cumprod(1.0 - betas)
  return Schedule(betas=jnp.asarray(betas, jnp.float32),
                  alphas_cumprod=jnp.asarray(alphas_cumprod, jnp.float32))
