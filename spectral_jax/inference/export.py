"""The export format: trained models that load without Orbax, onto any device.

``spectral-jax export --checkpoint RUNS -o OUT`` writes, from a folder of
training runs (what ``animate --checkpoint`` takes: a renderer run and a
motion run, which pins its VAE):

* ``OUT/motion.safetensors``, ``OUT/vae.safetensors``,
  ``OUT/renderer.safetensors``: each network's parameters, one tensor per
  flat parameter path (``"decoder/blocks/0/conv1/kernel"``), in the export's
  dtype (float32: the trained values exactly; float16: half the size);
* ``OUT/model.json`` (`MANIFEST`): what rebuilds and drives the networks:

  ``format``, ``version``, ``dtype``; and per model (``motion``, ``vae``,
  ``renderer``): ``file``, ``run`` (its folder, relative to RUNS), ``step``
  (the checkpoint exported), ``config`` (the training config, enough for
  `models.build`). ``motion`` adds what sampling needs: ``normalization``
  (per-frequency scales), ``latent`` (whitening mean and std), ``clip``
  (``num_frames`` T and ``fps``), ``sampling`` (the defaults; they replace
  ``config.sampling`` when loading, so edit these). ``renderer`` adds
  ``metric_scale`` and its own ``clip``.

Reading (`load`, `load_motion_model`, `load_renderer`) uses only JSON,
NumPy, safetensors and the model builders; it never imports Orbax, so an
export runs where Orbax is not installed. Loaded parameters take the dtype
the rebuilt network declares (float16 is widened to float32). The loaded
objects are the run loaders' types (`MotionModel`, `LoadedRenderer`), so the
rest of the code does not care where they came from.
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save_file

from spectral_jax import diffusion, sharding
from spectral_jax.atomic import atomic_directory
from spectral_jax.config_base import PATH_FIELDS
from spectral_jax.inference.loading import LoadedRenderer
from spectral_jax.inference.motion_model import MotionModel
from spectral_jax.models import functional
from spectral_jax.models.build import MOTION_STAGES, build_renderer, build_unet, build_vae
from spectral_jax.motion.normalize import NormalizationStats

FORMAT = "spectral_jax export"
VERSION = 1
MANIFEST = "model.json"
DTYPES = ("float32", "float16")
MODELS = ("motion", "vae", "renderer")


def is_export(directory) -> bool:
  """Whether ``directory`` holds an export (its `MANIFEST`)."""
  return (Path(directory) / MANIFEST).is_file()


# Writing.

def write(checkpoint_dir, out_dir, *, dtype: str = "float32", stablehlo: bool = False) -> dict:
  """Exports the runs in ``checkpoint_dir`` (`loading.find_runs`: the motion
  run, the VAE checkpoint it pins, the renderer run) to ``out_dir``; with
  ``stablehlo``, also its sampling and rendering as `jax.export` programs
  (`inference.stablehlo`), recorded in the manifest's ``stablehlo``.

  Atomic: everything is written to a temporary folder beside ``out_dir``
  and renamed onto it at the end, so a failed export leaves nothing. An
  existing export (or empty folder) at ``out_dir`` is replaced.

  Returns:
    The manifest written (`MANIFEST`).
  Raises:
    ValueError: an unknown ``dtype``; ``out_dir`` exists and is neither an
      export nor empty; ``checkpoint_dir`` is not a folder of runs with a
      motion and a renderer run, or the motion run's VAE is missing; a
      parameter is out of float16's range.
  """
  # Orbax reads the runs; only writing needs it, so it is imported here.
  from spectral_jax import checkpoint
  from spectral_jax.inference import loading

  if dtype not in DTYPES:
    raise ValueError(f"export dtype must be one of {DTYPES}, got {dtype!r}")
  checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
  _check_output(out_dir)
  if is_export(checkpoint_dir):
    raise ValueError(f"{checkpoint_dir} is an export already; export reads a folder of "
                     "training runs")
  try:
    runs = loading.find_runs(checkpoint_dir)
    missing = [role for role in ("motion", "renderer") if role not in runs]
    if missing:
      raise ValueError(
          f"{checkpoint_dir}: no {' and no '.join(missing)} run in it (a folder of training "
          "runs: a renderer run and an ldm_freq_attn or ldm_pretrain run)")
    unet, motion_config, motion_stats, motion_step = checkpoint.load_model(
        runs["motion"], functools.partial(build_unet, inference=True), MOTION_STAGES)
    pin = motion_stats["vae"]
    vae_dir = loading.pinned_vae_dir(runs["motion"], pin)
    vae, vae_config, _, vae_step = checkpoint.load_model(vae_dir, functools.partial(build_vae, inference=True), ("vae",),
                                                         step=pin["step"])
    renderer, renderer_config, renderer_stats, renderer_step = checkpoint.load_model(
        runs["renderer"], build_renderer, ("renderer",))
  except FileNotFoundError as error:  # Missing runs are bad input like the rest.
    raise ValueError(str(error)) from None

  def entry(name, workdir, step, config):
    return {"file": f"{name}.safetensors",
            "run": os.path.relpath(Path(workdir).absolute(), checkpoint_dir.absolute()),
            "step": int(step), "config": _portable(config)}

  manifest = {
      "format": FORMAT, "version": VERSION, "dtype": dtype,
      "motion": {**entry("motion", runs["motion"], motion_step, motion_config),
                 "normalization": _normalization_json(motion_stats["normalization"]),
                 "latent": {name: [float(v) for v in motion_stats["latent"][name]]
                            for name in ("mean", "std")},
                 "clip": {"num_frames": int(motion_stats["clip"]["num_frames"]),
                          "fps": float(motion_stats["clip"]["fps"])},
                 "sampling": motion_config.sampling.to_dict()},
      "vae": entry("vae", vae_dir, vae_step, vae_config),
      "renderer": {**entry("renderer", runs["renderer"], renderer_step, renderer_config),
                   "metric_scale": float(renderer_stats["metric_scale"]),
                   "clip": {"num_frames": int(renderer_stats["clip"]["num_frames"]),
                            "fps": float(renderer_stats["clip"]["fps"])}},
  }
  tensors = {"motion": _tensors(unet, dtype), "vae": _tensors(vae, dtype),
             "renderer": _tensors(renderer, dtype)}
  with atomic_directory(out_dir) as tmp:
    for name in MODELS:
      save_file(tensors[name], str(tmp / manifest[name]["file"]),
                metadata={"format": FORMAT, "model": name})
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    if stablehlo:
      from spectral_jax.inference import stablehlo as programs  # Lowers with JAX only here.

      manifest["stablehlo"] = programs.write_programs(tmp)
      (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
  return manifest


def _check_output(out_dir: Path) -> None:
  """Refuses to replace anything but an earlier export or an empty folder."""
  if not out_dir.exists() or is_export(out_dir):
    return
  if not out_dir.is_dir() or any(out_dir.iterdir()):
    raise ValueError(f"{out_dir} exists and is not an export (no {MANIFEST}); give a new "
                     "folder or an earlier export to replace")


def _normalization_json(data: dict) -> dict:
  """Normalization statistics with strict JSON: a NaN percentile (scales
  not measured from data) becomes null."""
  data = dict(data)
  if data.get("percentile") is not None and math.isnan(float(data["percentile"])):
    data["percentile"] = None
  return data


def _tensors(model, dtype: str) -> dict[str, np.ndarray]:
  """``{"a/b/kernel": array}``: ``model``'s parameters, floating ones in
  ``dtype``.

  Raises:
    ValueError: a finite parameter does not fit in ``dtype`` (float16).
  """
  _, params = functional.split_params(model)
  tensors = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = _path_name(path)
    value = np.asarray(jax.device_get(leaf))
    if np.issubdtype(value.dtype, np.floating):
      cast = value.astype(dtype)
      overflow = np.isfinite(value) & ~np.isfinite(cast)
      if overflow.any():
        raise ValueError(f"parameter {name} has values beyond {dtype}'s range (largest "
                         f"{np.abs(value[overflow]).max():g}); export with --dtype float32")
      value = cast
    tensors[name] = np.ascontiguousarray(value)
  return tensors


# Reading.

def read_manifest(directory) -> dict:
  """The `MANIFEST` of the export in ``directory``, checked.

  Raises:
    FileNotFoundError: ``directory`` holds no export.
    ValueError: the manifest is not one this version reads.
  """
  path = Path(directory) / MANIFEST
  if not path.is_file():
    raise FileNotFoundError(f"{directory}: not an export (no {MANIFEST})")
  try:
    manifest = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as error:
    raise ValueError(f"{path}: not JSON ({error})") from None
  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
    raise ValueError(f"{path}: not a spectral_jax export (format {FORMAT!r})")
  if manifest.get("version") != VERSION:
    raise ValueError(f"{path}: export format version {manifest.get('version')}; this "
                     f"spectral_jax reads version {VERSION}")
  missing = [name for name in MODELS if name not in manifest]
  if missing:
    raise ValueError(f"{path}: no {', '.join(missing)} model in it")
  return manifest


def load(directory, *, with_motion: bool = True, device=None):
  """``(LoadedRenderer, MotionModel or None)`` of the export in
  ``directory``, their parameters on ``device`` (a `jax.Device` or
  `jax.sharding.Sharding`; default: the first device, as the run loaders
  place them)."""
  manifest = read_manifest(directory)
  renderer = load_renderer(directory, device, manifest=manifest)
  motion = load_motion_model(directory, device, manifest=manifest) if with_motion else None
  return renderer, motion


def load_motion_model(directory, device=None, *, manifest: dict | None = None) -> MotionModel:
  """The export's motion model (U-Net, VAE, statistics), as
  `loading.load_motion_model` returns a run's."""
  manifest = manifest or read_manifest(directory)
  entry = manifest["motion"]
  unet, config = _load_network(directory, entry, functools.partial(build_unet, inference=True),
                               device)
  config.sampling = ml_collections.ConfigDict(entry["sampling"])
  vae, _ = _load_network(directory, manifest["vae"], functools.partial(build_vae, inference=True),
                         device)
  latent = {name: np.asarray(entry["latent"][name], np.float32) for name in ("mean", "std")}
  # On the default device, as the run loader leaves them, unless one is asked for.
  latent = jax.tree.map(jnp.asarray, latent) if device is None else jax.device_put(latent, device)
  normalization = dict(entry["normalization"])
  if normalization.get("percentile") is None:
    normalization["percentile"] = math.nan
  return MotionModel(
      unet=unet, vae=vae, latent_stats=latent,
      normalization=NormalizationStats.from_json(normalization),
      schedule=diffusion.make_schedule(**config.diffusion.schedule.to_dict()),
      config=config, num_frames=int(entry["clip"]["num_frames"]),
      fps=float(entry["clip"]["fps"]))


def load_renderer(directory, device=None, *, manifest: dict | None = None):
  """The export's renderer, as `loading.load_renderer` returns a run's."""
  manifest = manifest or read_manifest(directory)
  entry = manifest["renderer"]
  renderer, config = _load_network(directory, entry, build_renderer, device)
  return LoadedRenderer(renderer, float(entry["metric_scale"]), config,
                        int(entry["clip"]["num_frames"]), float(entry["clip"]["fps"]))


def _placement(device):
  """Where loaded parameters go: ``device`` (a `jax.Device` or
  `jax.sharding.Sharding`), by default where the run loaders put them
  (replicated over a one-device mesh), so that an export and its runs
  compile the same programs and share the compilation cache."""
  if device is not None:
    return device
  return sharding.replicated(sharding.make_mesh({"data": 1, "fsdp": 1}, jax.devices()[:1]))


def _portable(config: ml_collections.ConfigDict) -> dict:
  """The config as a dict without the paths of other runs and data
  (`config_base.PATH_FIELDS`): they are this machine's, and the export
  holds what they pointed to."""
  config = config.to_dict()
  for field in PATH_FIELDS:
    *parents, leaf = field.split(".")
    node = config
    for parent in parents:
      node = node.get(parent, {})
    if leaf in node:
      node[leaf] = ""
  return config


def _load_network(directory, entry: dict, build, device):
  """``(network, config)``: ``build`` of the entry's config with the
  parameters of its safetensors file, cast to the dtypes the network
  declares.

  Raises:
    ValueError: the file's parameters are not the network's (names, shapes).
  """
  config = ml_collections.ConfigDict(entry["config"])
  graphdef, abstract = functional.abstract_split(lambda: build(config, nnx.Rngs(0)))
  path = Path(directory) / entry["file"]
  params = jax.device_put(parameter_tree(abstract, read_tensors(path), path),
                          _placement(device))
  return functional.merge(graphdef, params), config


def read_tensors(path) -> dict:
  """``{name: array}`` of a safetensors file, as stored.

  Raises:
    FileNotFoundError, ValueError: no such file; not a safetensors file.
  """
  try:
    return load_file(str(path))
  except FileNotFoundError:
    raise FileNotFoundError(f"{path}: missing from the export") from None
  except Exception as error:  # safetensors raises its own error types.
    raise ValueError(f"{path}: not a safetensors file ({error})") from None


def parameter_tree(abstract, tensors: dict, path="the tensors"):
  """The tree of ``abstract`` (`functional.abstract_split`'s parameters)
  filled with ``tensors`` ``{"a/b/kernel": array}`` (NumPy or traced), each
  cast to the dtype the network declares (exact from float32; float16 is
  widened).

  Raises:
    ValueError: ``tensors`` are not the network's (names, shapes).
  """
  expected = {_path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(abstract)[0]}
  missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
  if missing or extra:
    raise ValueError(f"{path} does not fit the network its config builds: missing "
                     f"{missing[:3] or 'none'}, unexpected {extra[:3] or 'none'}")

  def take(path_keys, leaf):
    name = _path_name(path_keys)
    value = tensors[name]
    if tuple(value.shape) != tuple(leaf.shape):
      raise ValueError(f"{path}: {name} has shape {tuple(value.shape)}, the network "
                       f"{tuple(leaf.shape)}")
    return value.astype(leaf.dtype)

  return jax.tree_util.tree_map_with_path(take, abstract)


def _path_name(path) -> str:
  """``"a/b/0/kernel"`` of a pytree key path (`checkpoint`'s names too)."""
  return "/".join(str(getattr(key, "key", getattr(key, "idx", key))) for key in path)
