"""An export's sampling and rendering as programs that run with nothing but
JAX (``spectral-jax export --stablehlo``).

Two serialized `jax.export` programs go beside an export's weights, each
lowered for CPU, CUDA and TPU in one artifact (`PLATFORMS`):

* ``sample.jax``: ``(motion, vae, picture, seed) -> spectral``. ``picture``
  uint8 ``[H, W, 3]`` at the export's size, ``seed`` an int32 scalar;
  ``spectral`` the ``[K, H, W, 2]`` complex64 spectral volume in pixels,
  what ``animate --seed`` samples: the model's DDIM steps and
  classifier-free guidance scale (``model.json``'s ``stablehlo.sample``
  names them), loop self-guidance off.
* ``render.jax``: ``(renderer, picture, spectral, times, magnify) ->
  frames``. ``times`` float32 ``[N]`` (model frames, N =
  ``frames_per_call``; pad the last call), ``magnify`` a float32 scalar;
  ``frames`` uint8 ``[N, H, W, 3]``: the picture moved by ``magnify * (D(t)
  - D(0))`` and splatted with the metric of ``spectral``, as ``animate``
  renders them.

``motion``, ``vae`` and ``renderer`` are the export's safetensors files as
``{name: array}`` dicts in their stored dtype, so the programs hold no
weights and one program serves every export of the same model shape.

A motion model smaller than the renderer (the default model samples at
128x80 and renders at 256x160) shrinks the picture by area averaging and
enlarges its spectral volume bilinearly inside ``sample.jax``, as
``animate`` does with OpenCV (`data.pictures.fit_picture`, `fit_spectral`).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from spectral_jax.diffusion.latents import image_to_unit
from spectral_jax.inference import export
from spectral_jax.models import functional
from spectral_jax.models.build import build_renderer, build_unet, build_vae
from spectral_jax.motion.normalize import denormalize
from spectral_jax.motion.spectral import animation_texture, from_real_layout
from spectral_jax.render.frames import encode_picture, render_batch
from spectral_jax.render.splat_metric import splat_metric

PLATFORMS = ("cpu", "cuda", "tpu")
FILES = {"sample": "sample.jax", "render": "render.jax"}
FRAMES_PER_CALL = 8


def write_programs(directory, *, frames_per_call: int = FRAMES_PER_CALL) -> dict:
  """Writes `FILES` into the export in ``directory`` and returns what
  ``model.json`` records of them (``stablehlo``)."""
  directory = Path(directory)
  manifest = export.read_manifest(directory)
  renderer = export.load_renderer(directory, manifest=manifest)
  motion = export.load_motion_model(directory, manifest=manifest)
  tensors = {name: export.read_tensors(directory / manifest[name]["file"])
             for name in export.MODELS}
  specs = {name: {key: jax.ShapeDtypeStruct(value.shape, value.dtype)
                  for key, value in tensors[name].items()} for name in export.MODELS}
  data = renderer.config.data
  height, width, num_freqs = data.height, data.width, motion.num_freqs
  options = motion.options()
  picture = jax.ShapeDtypeStruct((height, width, 3), jnp.uint8)
  programs = {
      "sample": (_sampler(manifest, motion, options, height, width),
                 (specs["motion"], specs["vae"], picture,
                  jax.ShapeDtypeStruct((), jnp.int32))),
      "render": (_renderer(manifest, renderer),
                 (specs["renderer"], picture,
                  jax.ShapeDtypeStruct((num_freqs, height, width, 2), jnp.complex64),
                  jax.ShapeDtypeStruct((frames_per_call,), jnp.float32),
                  jax.ShapeDtypeStruct((), jnp.float32)))}
  for name, (function, arguments) in programs.items():
    exported = jax.export.export(jax.jit(function), platforms=PLATFORMS)(*arguments)
    (directory / FILES[name]).write_bytes(exported.serialize())
  return {"platforms": list(PLATFORMS),
          "sample": {"file": FILES["sample"], "num_steps": options.num_steps,
                     "guidance_scale": options.guidance_scale, "eta": options.eta,
                     "picture": [height, width, 3], "spectral": [num_freqs, height, width, 2]},
          "render": {"file": FILES["render"], "frames_per_call": frames_per_call,
                     "num_frames": renderer.num_frames, "fps": renderer.fps}}


def _network(entry: dict, build):
  """``tensors -> network``: ``build`` of the entry's config holding
  ``tensors`` ``{name: array}`` (traced)."""
  config = ml_collections.ConfigDict(entry["config"])
  graphdef, abstract = functional.abstract_split(lambda: build(config, nnx.Rngs(0)))
  return lambda tensors: functional.merge(graphdef, export.parameter_tree(abstract, tensors))


def _sampler(manifest, motion, options, height: int, width: int):
  unet = _network(manifest["motion"], functools.partial(build_unet, inference=True))
  vae = _network(manifest["vae"], functools.partial(build_vae, inference=True))
  data = motion.config.data
  stats = motion.normalization

  def sample(motion_tensors, vae_tensors, picture, seed):
    model = dataclasses.replace(motion, unet=unet(motion_tensors), vae=vae(vae_tensors))
    picture = shrink_picture(picture, data.height, data.width)
    normalized = model.sample(image_to_unit(picture)[None], jax.random.key(seed), options)[0]
    spectral = from_real_layout(denormalize(normalized, stats.scales, stats.power))
    return enlarge_spectral(spectral, height, width)

  return sample


def _renderer(manifest, renderer):
  network = _network(manifest["renderer"], build_renderer)

  def render(renderer_tensors, picture, spectral, times, magnify):
    model = network(renderer_tensors)
    texture = animation_texture(spectral, times, renderer.num_frames, magnify)
    metric = splat_metric(spectral, renderer.num_frames, renderer.metric_scale)
    pyramid, style = encode_picture(model, picture)
    return render_batch(model, pyramid, style, texture, metric[None])

  return render


def _area_weights(size: int, out_size: int) -> np.ndarray:
  """``[out_size, size]`` float32: output pixel j averages input pixel i
  with the weight of their overlap, pixel j spanning ``[j s, (j + 1) s)``
  input pixels, ``s = size / out_size`` (OpenCV's INTER_AREA)."""
  scale = size / out_size
  starts = np.arange(out_size)[:, None] * scale
  overlap = (np.minimum(starts + scale, np.arange(1, size + 1)[None])
             - np.maximum(starts, np.arange(size)[None]))
  return (np.clip(overlap, 0.0, None) / scale).astype(np.float32)


def shrink_picture(picture, height: int, width: int):
  """uint8 ``[H, W, 3]`` → uint8 ``[height, width, 3]`` by area averaging,
  rounded half up, as OpenCV's INTER_AREA rounds (equal bit for bit to
  `fit_picture` at the integer factors a motion model's size has)."""
  if picture.shape[:2] == (height, width):
    return picture
  rows, columns = _area_weights(picture.shape[0], height), _area_weights(picture.shape[1], width)
  mean = jnp.einsum("yh,hwc,xw->yxc", rows, picture.astype(jnp.float32), columns,
                    precision=jax.lax.Precision.HIGHEST)
  return jnp.floor(mean + 0.5).astype(jnp.uint8)


def enlarge_spectral(spectral, height: int, width: int):
  """``[K, h, w, 2]`` complex64 px → ``[K, height, width, 2]``: real and
  imaginary parts resized bilinearly, dx scaled by ``width / w`` and dy by
  ``height / h`` (displacements grow with the picture), as
  `fit_spectral` enlarges."""
  num_freqs, small_height, small_width = spectral.shape[:3]
  if (small_height, small_width) == (height, width):
    return spectral
  scale = jnp.asarray([width / small_width, height / small_height], jnp.float32)
  parts = [jax.image.resize(part, (num_freqs, height, width, 2), "linear") * scale
           for part in (jnp.real(spectral), jnp.imag(spectral))]
  return jax.lax.complex(*parts)
