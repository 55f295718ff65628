"""Latent diffusion, independent of the network: schedules, objective, DDIM."""

from spectral_jax.diffusion.ddim import (ddim_sample, ddim_start, ddim_steps, ddim_timesteps,
                                         eps_calls_per_sample)
from spectral_jax.diffusion.schedules import Schedule, make_schedule
from spectral_jax.diffusion.training import add_noise, epsilon_loss, predict_x0, sample_timesteps

__all__ = [
    "Schedule",
    "add_noise",
    "ddim_sample",
    "ddim_start",
    "ddim_steps",
    "ddim_timesteps",
    "epsilon_loss",
    "eps_calls_per_sample",
    "make_schedule",
    "predict_x0",
    "sample_timesteps",
]
