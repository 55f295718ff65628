"""Latent diffusion, independent of the network: schedules, objective, DDIM."""

from spectral_jax.diffusion.ddim import (ddim_sample, ddim_start, ddim_steps, ddim_timesteps,
                                         eps_calls_per_sample)
from spectral_jax.diffusion.schedules import Schedule, make_schedule
from spectral_jax.diffusion.training import (PREDICTIONS, add_noise, predict_x0, prediction_loss,
                                             prediction_of, regression_target, sample_timesteps,
                                             x0_and_eps)

__all__ = [
    "PREDICTIONS",
    "Schedule",
    "add_noise",
    "ddim_sample",
    "ddim_start",
    "ddim_steps",
    "ddim_timesteps",
    "eps_calls_per_sample",
    "make_schedule",
    "predict_x0",
    "prediction_loss",
    "prediction_of",
    "regression_target",
    "sample_timesteps",
    "x0_and_eps",
]
