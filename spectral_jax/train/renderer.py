"""Stage ``renderer``: the image-based renderer, trained on (I_0, I_t, D_t).

Every example holds its picture I_0 and ``num_render_frames`` frames I_t of
its clip with their displacements D_t ``[H, W, 2]`` px. Each step renders,
per example, one of them chosen at random, and fits it with
``l1_weight * L1 + perceptual_weight * VGG16 perceptual``. The frozen VGG16
is a constant of the step.

The softmax-splatting metric is `splat_metric` of the example's spectral
volume (``metric_scale * mean_t ||D(t)||`` over the T integer frame times of
its clip), the function `animate` and `interact` call on theirs, so a
renderer sees the same metric in training and at inference. The spectral
volume is the data set's raw field in pixels (float16, widened on the
device), never frequency-normalized: the renderer needs no normalization,
and a diffusion sample is denormalized before it is rendered anyway.

Evaluation renders every frame of held-out examples and scores it against
the true frame (PSNR, SSIM, LPIPS), beside two baselines: the picture left
unchanged, which a renderer must beat, and the picture forward-warped by
D_t alone (what an untrained renderer outputs), which shows what the
synthesis network adds.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spectral_jax.data import sources
from spectral_jax.diffusion.latents import image_to_unit
from spectral_jax.models import functional
from spectral_jax.models.build import build_renderer
from spectral_jax.models.vgg16 import VGG16, load_vgg16
from spectral_jax.motion.spectral import from_real_layout
from spectral_jax.render import metrics
from spectral_jax.render.splat import softmax_splat
from spectral_jax.render.splat_metric import splat_metric
from spectral_jax.train import data as train_data
from spectral_jax.train.losses import l1_loss, perceptual_loss

# Fields of an example the renderer uses; the float16 ones go to the device
# as they are (half the transfer) and are widened there.
FIELDS = ("image", "spectral_volume", "frames", "displacements")


def pool_scores(per_image: list[dict]) -> dict:
  """``{name: float}`` of per-batch ``{name: [B]}`` scores: the mean of each,
  except that ``mse*`` becomes ``psnr*`` (dB) of the mean squared error."""
  if not per_image:
    return {}
  means = {name: float(np.mean(np.concatenate([s[name] for s in per_image])))
           for name in per_image[0]}
  for name in [name for name in means if name.startswith("mse")]:
    means["psnr" + name[len("mse"):]] = float(metrics.psnr_of_mse(means.pop(name)))
  return means


def pick_frames(frames, displacements, index):
  """Frame ``index[b]`` of each example ``b``.

  Args:
    frames: ``[B, F, H, W, 3]`` uint8.
    displacements: ``[B, F, H, W, 2]`` pixels, any float dtype.
    index: int ``[B]`` in ``[0, F)``.
  Returns:
    ``(frame [B, H, W, 3] in [-1, 1], flow [B, H, W, 2] float32 px)``.
  """
  def take(x):
    return jnp.take_along_axis(x, index[:, None, None, None, None], axis=1)[:, 0]
  return image_to_unit(take(frames)), take(displacements).astype(jnp.float32)


def _keep_fields(batch: dict) -> dict:
  return {key: batch[key] for key in FIELDS}


class RendererStep:
  """What the renderer's training step needs, without data: the renderer,
  the loss (VGG16 ``vgg_graphdef`` with parameters like
  ``abstract_vgg_params`` frozen in it), and the shapes of its constants
  and batches. ``num_frames``: T of the clips (the splatting metric's),
  ``num_render_frames``: frames per example."""

  def __init__(self, config, num_frames: int, num_render_frames: int, vgg_graphdef,
               abstract_vgg_params):
    self.config = config
    self.num_frames, self.num_render_frames = num_frames, num_render_frames
    self.vgg_graphdef = vgg_graphdef
    self._abstract_vgg_params = abstract_vgg_params

  @classmethod
  def from_config(cls, config):
    """The step of ``config`` with VGG16 built abstractly (no weights read)."""
    graphdef, abstract = functional.abstract_split(
        lambda: VGG16(dtype=jnp.dtype(config.dtype), rngs=nnx.Rngs(0)))
    return cls(config, sources.clip_timing(config.data)[0],
               sources.render_frame_count(config.data), graphdef, abstract)

  def make_model(self, rngs):
    return build_renderer(self.config, rngs)

  def abstract_constants(self):
    return {"vgg": self._abstract_vgg_params}

  def batch_shapes(self, batch_size: int) -> dict:
    """``{name: jax.ShapeDtypeStruct}`` of a batch of ``batch_size``
    examples as the loss receives it (`FIELDS`, float16 ones as stored)."""
    data = self.config.data
    frames = (batch_size, self.num_render_frames, data.height, data.width)
    return {
        "image": jax.ShapeDtypeStruct((batch_size, data.height, data.width, 3), jnp.uint8),
        "spectral_volume": jax.ShapeDtypeStruct(
            (batch_size, data.num_freqs, data.height, data.width, 4), jnp.float16),
        "frames": jax.ShapeDtypeStruct(frames + (3,), jnp.uint8),
        "displacements": jax.ShapeDtypeStruct(frames + (2,), jnp.float16)}

  def _vgg(self, constants):
    return functional.merge(self.vgg_graphdef, constants["vgg"])

  def _metric(self, batch):
    """``[B, H, W, 1]`` splatting metric of the batch's spectral volumes."""
    return splat_metric(from_real_layout(batch["spectral_volume"]), self.num_frames,
                        self.config.metric_scale)

  def loss(self, model, constants, batch, rng):
    batch_size, num_render_frames = batch["frames"].shape[:2]
    index = jax.random.randint(rng, (batch_size,), 0, num_render_frames)
    target, flow = pick_frames(batch["frames"], batch["displacements"], index)
    rendered = model(image_to_unit(batch["image"]), flow, self._metric(batch))
    weights = self.config.loss
    l1 = l1_loss(rendered, target)
    if not weights.perceptual_weight:  # L1 alone: no VGG pass (most of a step's cost).
      return weights.l1_weight * l1, {"l1": l1}
    perceptual = perceptual_loss(self._vgg(constants), rendered, target,
                                 layer_weights=tuple(weights.layer_weights),
                                 distance=weights.perceptual_distance)
    loss = weights.l1_weight * l1 + weights.perceptual_weight * perceptual
    return loss, {"l1": l1, "perceptual": perceptual}


class RendererTask(RendererStep):
  """`RendererStep` with VGG16's weights and the data: training batches,
  evaluation, statistics."""

  def __init__(self, config, mesh):
    vgg = load_vgg16(dtype=jnp.dtype(config.dtype))
    vgg_graphdef, self._vgg_params = functional.split_params(vgg)
    num_frames, self.fps = sources.clip_timing(config.data)
    super().__init__(config, num_frames, sources.render_frame_count(config.data),
                     vgg_graphdef, jax.eval_shape(lambda: self._vgg_params))
    self.mesh = mesh
    self.normalization = sources.normalization(config.data)
    self._train = sources.open_source(config.data, "train")
    self._test = train_data.open_test_source(config)

  def constants(self):
    return {"vgg": self._vgg_params}

  def train_batches(self, process_index, process_count):
    return train_data.train_batches(self._train, self.config, _keep_fields, process_index,
                                    process_count)

  def evaluate(self, graphdef, params, constants):
    """Every frame of the held-out examples: PSNR (dB, of the mean squared
    error over all frames: a still example renders exactly, and its infinite
    PSNR would swamp a mean of per-frame values), SSIM and LPIPS (means over
    frames) of the rendered frame (clipped to the displayable range) against
    the true one, and the same for the picture unchanged (``*_unchanged``)
    and forward-warped by the displacement alone (``*_warped``)."""
    scores = self.frame_scores(graphdef)
    per_image = []
    for batch in train_data.eval_batches(self._test, self.config, _keep_fields, self.mesh,
                                         self.config.eval.num_batches):
      for frame_index in range(batch["frames"].shape[1]):
        per_image.append(jax.device_get(scores(params, constants, batch, frame_index)))
    return pool_scores(per_image)

  @functools.cache
  def frame_scores(self, graphdef):
    """Jitted ``(params, constants, batch, frame_index) -> {name: [B]}``,
    one per network: every evaluation of a run reuses its program."""

    @jax.jit
    def scores(params, constants, batch, frame_index):
      renderer = functional.merge(graphdef, params)
      vgg = self._vgg(constants)
      picture = image_to_unit(batch["image"])
      index = jnp.full(picture.shape[:1], frame_index, jnp.int32)
      target, flow = pick_frames(batch["frames"], batch["displacements"], index)
      metric = self._metric(batch)
      candidates = {
          "": jnp.clip(renderer(picture, flow, metric), -1.0, 1.0),
          "_unchanged": picture,
          "_warped": softmax_splat(picture, flow, metric),
      }
      result = {}
      for suffix, frame in candidates.items():
        result[f"mse{suffix}"] = metrics.mse(frame, target)
        result[f"ssim{suffix}"] = metrics.ssim(frame, target)
        result[f"lpips{suffix}"] = metrics.lpips(vgg, frame, target)
      return result

    return scores

  def stats(self, graphdef, params, constants):
    del graphdef, params, constants
    return {"normalization": self.normalization.to_json(),
            "metric_scale": float(self.config.metric_scale),
            "clip": {"num_frames": self.num_frames, "fps": self.fps}}
