"""Rendering a whole video from one picture and its motion texture."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm


def to_uint8(frames):
  """``[..., 3]`` frames in ``[-1, 1]`` → uint8 (clipped, rounded)."""
  return jnp.round(jnp.clip((frames + 1.0) * 127.5, 0.0, 255.0)).astype(jnp.uint8)


def encode_picture(model, image):
  """``(pyramid, style)`` of the renderer ``model`` for one uint8 picture
  ``[H, W, 3]``: what every frame of its video shares."""
  return model.encode(jnp.asarray(image, jnp.float32)[None] / 127.5 - 1.0)


def render_batch(model, pyramid, style, flow, metric):
  """uint8 frames ``[N, H, W, 3]`` of an `encode_picture` moved by ``flow``
  ``[N, H, W, 2]`` px, splatted with ``metric`` ``[1, H, W, 1]``."""
  metric = jnp.broadcast_to(metric, flow.shape[:-1] + (1,))
  return to_uint8(model.render(pyramid, style, flow, metric))


@functools.partial(jax.jit, static_argnums=0)
def _encode(graphdef, state, image):
  return encode_picture(nnx.merge(graphdef, state), image)


@functools.partial(jax.jit, static_argnums=0)
def _render(graphdef, state, pyramid, style, flow, metric):
  return render_batch(nnx.merge(graphdef, state), pyramid, style, flow, metric)


def render_frames(model, image, motion_texture_px, metric, *, batch_size: int = 8,
                  progress: bool = True) -> np.ndarray:
  """Renders frame ``t`` of a video for every displacement ``D_t``.

  A frame without motion is the picture itself: splatting covers every
  pixel fully, and the renderer paints only where coverage falls short
  (`SynthesisDecoder`). Still parts of a moving picture stay the picture
  likewise, so every video starts on the input picture.

  Args:
    model: a `spectral_jax.models.renderer.Renderer`.
    image: ``[H, W, 3]`` uint8 picture (frame 0).
    motion_texture_px: ``[T, H, W, 2]`` displacement from the picture to
      each frame, pixels.
    metric: ``[H, W, 1]`` softmax-splatting metric shared by every frame:
      `splat_metric` of the spectral volume the texture comes from, never of
      the texture (magnification and frame times must not change it).
    batch_size: frames rendered per compiled call.
    progress: show a tqdm progress bar.
  Returns:
    ``[T, H, W, 3]`` uint8 frames, those of `render_frame_batches`.
  """
  motion = np.asarray(motion_texture_px, np.float32)
  batches = (motion[start:start + batch_size] for start in range(0, len(motion), batch_size))
  rendered = list(render_frame_batches(
      model, image, batches, metric, batch_size=max(1, min(batch_size, len(motion))),
      total=len(motion), progress=progress))
  return (np.concatenate(rendered) if rendered
          else np.empty((0,) + image.shape[:2] + (3,), np.uint8))


def render_frame_batches(model, image, motion_batches, metric, *, batch_size: int,
                         total: int | None = None, progress: bool = False):
  """`render_frames` batch by batch: yields uint8 ``[n, H, W, 3]`` frames
  for each ``[n, H, W, 2]`` (px, ``n <= batch_size``) of ``motion_batches``,
  an iterable that may compute them as they are asked for.

  The encoder runs once; every batch goes through one jit-compiled function
  (a shorter one is padded to ``batch_size``), one batch rendering while the
  one before is copied to the host: memory holds two batches of motion and
  frames whatever the video's length. ``total``: frames expected, for the
  progress bar.
  """
  if np.shape(metric) != image.shape[:2] + (1,):
    raise ValueError(f"metric must be {image.shape[:2] + (1,)}, got {np.shape(metric)}")
  graphdef, state = nnx.split(model)
  metric = jnp.asarray(metric, jnp.float32)[None]  # [1, H, W, 1]
  pyramid, style = _encode(graphdef, state, image)
  in_flight = None  # (count, device frames) of the batch dispatched last.
  with tqdm(total=total, unit="frame", disable=not progress) as bar:
    for flow in itertools.chain(motion_batches, [None]):
      # Batch i + 1 is dispatched (JAX runs it asynchronously) before batch
      # i is copied to the host, so the device never waits on the copy.
      dispatched = None
      if flow is not None:
        flow = np.asarray(flow, np.float32)
        if flow.shape[1:3] != image.shape[:2] or not 0 < len(flow) <= batch_size:
          raise ValueError(f"picture {image.shape} and a motion batch {flow.shape} differ in "
                           f"size, or the batch is not 1 to {batch_size} frames")
        count = len(flow)
        if count < batch_size:
          flow = np.pad(flow, ((0, batch_size - count), (0, 0), (0, 0), (0, 0)))
        dispatched = (count, _render(graphdef, state, pyramid, style, flow, metric))
      if in_flight is not None:
        count, rendered = in_flight
        yield np.asarray(rendered)[:count]
        bar.update(count)
      in_flight = dispatched
