"""The training stages and the task each one trains.

A task is what `train.run` needs to know about a stage:

* ``make_model(rngs) -> nnx.Module``;
* ``constants() -> pytree``: frozen host arrays the loss needs;
* ``loss(model, constants, batch, rng) -> (loss, metrics)``: pure, traced
  inside the jitted step;
* ``train_batches(process_index, process_count)``: this process's batches, a
  `ShardedBatches` (with ``get_state``/``set_state``);
* ``evaluate(graphdef, params, constants) -> {name: float}`` on held-out
  data;
* ``stats(graphdef, params, constants) -> dict``: JSON statistics saved with
  each checkpoint (always the normalization scales under ``normalization``).

Each task extends its stage's *step* (`make_step`), the part the compiled
train step needs, which a config alone determines: ``make_model``,
``loss``, ``abstract_constants()`` and ``batch_shapes(batch_size)`` (as
`jax.ShapeDtypeStruct`). `spectral_jax.train.compile` compiles that for
devices that are not there, with no data set and no other run.
"""

from __future__ import annotations

STAGES = ("vae", "ldm_pretrain", "ldm_freq_attn", "renderer")


def make_task(config, mesh, workdir):
  """The task of ``config.stage`` for the run in ``workdir``."""
  if config.stage == "vae":
    from spectral_jax.train.vae import VAETask
    return VAETask(config, mesh)
  if config.stage in ("ldm_pretrain", "ldm_freq_attn"):
    from spectral_jax.train.ldm import LDMTask
    return LDMTask(config, mesh, workdir)
  if config.stage == "renderer":
    from spectral_jax.train.renderer import RendererTask
    return RendererTask(config, mesh)
  raise ValueError(f"unknown stage {config.stage!r}; one of {STAGES}")


def make_step(config, vae_config=None):
  """The step of ``config.stage`` from configs alone: an LDM stage's frozen
  VAE is built (abstractly) from ``vae_config``, the renderer's VGG16
  likewise from its architecture."""
  if config.stage == "vae":
    from spectral_jax.train.vae import VAEStep
    return VAEStep(config)
  if config.stage in ("ldm_pretrain", "ldm_freq_attn"):
    from spectral_jax.train.ldm import LDMStep
    if vae_config is None:
      raise ValueError(f"stage {config.stage} needs the config of its VAE")
    return LDMStep.from_vae_config(config, vae_config)
  if config.stage == "renderer":
    from spectral_jax.train.renderer import RendererStep
    return RendererStep.from_config(config)
  raise ValueError(f"unknown stage {config.stage!r}; one of {STAGES}")
