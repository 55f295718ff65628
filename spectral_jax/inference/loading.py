"""Finished training runs, loaded for sampling and rendering (and by the LDM
stages, which train on a frozen VAE).

A motion run (``ldm_pretrain`` or ``ldm_freq_attn``) pins the exact VAE it
was trained with. Its checkpoints' ``stats`` hold:

* ``vae``: ``{"path": absolute, "relative_path": from the motion run,
  "step": int}``, the VAE run and the checkpoint step it was trained on;
* ``latent``: the latent whitening (mean, std) taken from that checkpoint;
* ``normalization``: the per-frequency scales;
* ``clip``: ``{"num_frames": T, "fps": fps}`` of the training clips.

So a VAE run that trains on after its diffusion model was trained does not
change what sampling decodes, and a directory of runs moved elsewhere as a
whole still finds its VAE (through the relative path).

Orbax (`spectral_jax.checkpoint`) is imported only by the functions that
read runs, so that an export (`inference.export`) loads without it.
"""

from __future__ import annotations

import dataclasses
import os
import functools
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from spectral_jax import diffusion
from spectral_jax.inference.motion_model import MotionModel
from spectral_jax.models.build import (
  MOTION_STAGES,
  build_renderer,
  build_unet,
  build_vae,
)
from spectral_jax.models.renderer import Renderer
from spectral_jax.motion.normalize import NormalizationStats

# Networks loaded to sample, render or stay frozen in another stage run with
# no training-only settings (`build.TRAINING_ONLY_SETTINGS`).
_INFERENCE_VAE = functools.partial(build_vae, inference=True)
_INFERENCE_UNET = functools.partial(build_unet, inference=True)


def vae_pin(vae_workdir, step: int, motion_workdir) -> dict:
  """The ``stats["vae"]`` entry of a motion run in ``motion_workdir``
  trained on checkpoint ``step`` of the VAE run ``vae_workdir``."""
  vae_workdir = Path(vae_workdir).absolute()
  return {"path": str(vae_workdir),
          "relative_path": os.path.relpath(vae_workdir, Path(motion_workdir).absolute()),
          "step": int(step)}


def pinned_vae_dir(motion_workdir, pin: dict) -> Path:
  """Where the pinned VAE run is: beside the motion run as it was (relative
  path) first, then at its absolute path."""
  from spectral_jax import checkpoint
  candidates = [Path(motion_workdir).absolute() / pin["relative_path"], Path(pin["path"])]
  for candidate in candidates:
    if (candidate / checkpoint.CHECKPOINT_DIR).is_dir():
      return candidate
  raise FileNotFoundError(
      f"{motion_workdir}: the VAE run it was trained with (step {pin['step']}) is at "
      f"neither {candidates[0]} nor {candidates[1]}")


@dataclasses.dataclass(frozen=True)
class LoadedVAE:
  vae: object                       # `SpectralVAE`
  normalization: NormalizationStats
  latent_stats: dict                # {"mean", "std"}: [C] float32 whitening.
  workdir: Path
  step: int


def load_vae(workdir, mesh=None, step: int | None = None) -> LoadedVAE:
  """Checkpoint ``step`` (default: the latest) of a ``vae`` run, on ``mesh``
  (default: one device)."""
  if not workdir:
    raise ValueError("the LDM stages need a trained VAE: --config.vae_from=VAE_WORKDIR")
  from spectral_jax import checkpoint
  vae, _, stats, step = checkpoint.load_model(workdir, _INFERENCE_VAE, ("vae",), mesh,
                                                step)
  latent = {name: np.asarray(stats["latent"][name], np.float32) for name in ("mean", "std")}
  return LoadedVAE(vae, NormalizationStats.from_json(stats["normalization"]), latent,
                   Path(workdir).absolute(), step)


def load_motion_model(workdir, mesh=None) -> MotionModel:
  """The latest checkpoint of an ``ldm_pretrain`` or ``ldm_freq_attn`` run
  with the VAE checkpoint it pins, on ``mesh`` (default: one device)."""
  from spectral_jax import checkpoint
  unet, config, stats, _ = checkpoint.load_model(workdir, _INFERENCE_UNET, MOTION_STAGES, mesh)
  pin = stats["vae"]
  loaded = load_vae(pinned_vae_dir(workdir, pin), mesh, pin["step"])
  latent = {name: jnp.asarray(stats["latent"][name], jnp.float32) for name in ("mean", "std")}
  return MotionModel(
      unet=unet, vae=loaded.vae, latent_stats=latent,
      normalization=NormalizationStats.from_json(stats["normalization"]),
      schedule=diffusion.make_schedule(**config.diffusion.schedule.to_dict()),
      config=config, num_frames=int(stats["clip"]["num_frames"]),
      fps=float(stats["clip"]["fps"]))


@dataclasses.dataclass(frozen=True)
class LoadedRenderer:
  renderer: Renderer
  metric_scale: float  # Softmax-splatting metric scale it was trained with.
  config: object
  num_frames: int      # T and fps of its training clips.
  fps: float


def load_renderer(workdir, mesh=None) -> LoadedRenderer:
  """The latest checkpoint of a ``renderer`` run."""
  from spectral_jax import checkpoint
  renderer, config, stats, _ = checkpoint.load_model(workdir, build_renderer, ("renderer",),
                                                     mesh)
  return LoadedRenderer(renderer, float(stats["metric_scale"]), config,
                        int(stats["clip"]["num_frames"]), float(stats["clip"]["fps"]))


def find_runs(directory) -> dict[str, Path]:
  """``{"motion": run, "renderer": run}`` among the training runs directly in
  ``directory`` (found by the stage their checkpoints record): the renderer
  run, and the motion run (stage 2, else stage 1). Runs of other stages
  (the VAE) are ignored; motion runs find their VAE by its pin.

  Raises:
    FileNotFoundError: ``directory`` holds no renderer or no motion run.
    ValueError: two runs could be meant for one role.
  """
  from spectral_jax import checkpoint
  directory = Path(directory)
  if not directory.is_dir():
    raise FileNotFoundError(f"{directory}: no such directory")
  if (directory / checkpoint.CHECKPOINT_DIR).is_dir():
    stage = checkpoint.read_config(directory)[0].stage
    raise ValueError(f"{directory} is one {stage!r} run; give the folder that holds the "
                     "renderer run and the motion run")
  by_stage: dict[str, list[Path]] = {}
  for run in sorted(p for p in directory.iterdir()
                    if (p / checkpoint.CHECKPOINT_DIR).is_dir()):
    try:
      config, _, _ = checkpoint.read_config(run)
    except FileNotFoundError:
      continue  # A run that has not finished a checkpoint yet.
    by_stage.setdefault(config.stage, []).append(run)
  found = {}
  for role, stages in (("motion", tuple(reversed(MOTION_STAGES))), ("renderer", ("renderer",))):
    for stage in stages:
      runs = by_stage.get(stage, [])
      if len(runs) > 1:
        raise ValueError(f"{directory} holds {len(runs)} {stage} runs "
                         f"({', '.join(r.name for r in runs)}); keep one per directory")
      if runs:
        found[role] = runs[0]
        break
  return found
