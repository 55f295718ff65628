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
