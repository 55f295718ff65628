"""Softmax splatting: forward warping of features by a flow (docs/DESIGN.md §2).

Every source pixel ``(x, y)`` moves to ``(x + dx, y + dy)`` and is spread over
the 4 pixels around that point with bilinear weights ``b``; where several
sources land on one pixel, each counts with a weight ``w`` from its metric:

    out(p) = sum_s w_s b_s(p) f_s / (sum_s w_s b_s(p) + eps)

* ``mode="softmax"``: ``w = exp(min(metric, max_metric))``, so the source with
  the larger metric wins a collision (the renderer's metric is the motion
  magnitude, `render.splat_metric`: moving foreground occludes the static
  background);
* ``mode="average"``: ``w = metric`` (must be >= 0), a metric-weighted average;
* ``metric=None`` in either mode: ``w = 1``, the (bilinear-weighted) mean of
  what landed;
* ``mode="sum"``: ``w = 1`` and no denominator, the plain sum of the bilinear
  contributions (splatting ones gives the coverage of every pixel).

Targets outside the image and sources whose flow is not finite contribute
nothing. The metric is clipped to `MAX_METRIC` = 30 rather than shifted by its
per-image maximum: a shift would change what ``eps`` means (a pixel reached
only by small-metric sources would come out black), while ``exp(30) ~ 1e13``
keeps the weight sums and the squared denominators of their gradients far
inside float32.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from spectral_jax.platforms import CPU_SPLAT_BLOCK_PIXELS

MAX_METRIC = 30.0
MODES = ("softmax", "average", "sum")


def softmax_splat(features, flow, metric=None, *, mode: str = "softmax", eps: float = 1e-7,
                  max_metric: float = MAX_METRIC, block_rows: int | None = None):
  """Forward-warps ``features`` by ``flow``; collisions resolved by ``metric``.

  Every image is splatted on its own (`jax.vmap` over the batch), so with the
  batch split over devices each device splats its own images and the
  compiled step has no collective in it.

  Args:
    features: ``[B, H, W, C]`` float source features.
    flow: ``[B, H, W, 2]`` displacement ``(dx, dy)`` in pixels of every source
      pixel; a non-finite (NaN, Inf) displacement drops that source.
    metric: ``[B, H, W, 1]`` importance of every source (>= 0 in
      ``"average"`` mode), or None for equal weights; ignored in ``"sum"``.
    mode: ``"softmax"``, ``"average"`` or ``"sum"`` (module docstring).
    eps: added to the weight sums of the normalised modes, so pixels that
      nothing reached come out 0.
    max_metric: softmax metrics are clipped to it so ``exp`` stays finite.
    block_rows: source rows of every image scattered per loop step; None
      picks `platforms.CPU_SPLAT_BLOCK_PIXELS` per step (over the whole
      batch) in a program lowered for a CPU and one step for an
      accelerator, where a single large scatter runs in parallel.
  Returns:
    ``[B, H, W, C]`` splatted features, dtype of ``features``. Differentiable
    with respect to ``features``, ``flow`` and ``metric``.
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  if features.ndim != 4 or flow.shape != features.shape[:3] + (2,):
    raise ValueError(f"expected features [B, H, W, C] and flow [B, H, W, 2], got "
                     f"{features.shape} and {flow.shape}")
  if metric is not None and metric.shape != features.shape[:3] + (1,):
    raise ValueError(f"metric must be {features.shape[:3] + (1,)}, got {metric.shape}")
  batch, height, width, _ = features.shape
  dtype = jnp.result_type(features.dtype, jnp.float32)

  valid = jnp.all(jnp.isfinite(flow), axis=-1)  # [B, H, W]
  # Zeroed before any arithmetic so that a NaN never reaches a gradient.
  flow = jnp.where(valid[..., None], flow, 0).astype(dtype)
  if mode == "sum" or metric is None:
    weight = jnp.ones(valid.shape, dtype)
  elif mode == "softmax":
    weight = jnp.exp(jnp.minimum(metric[..., 0].astype(dtype), max_metric))
  else:
    weight = metric[..., 0].astype(dtype)
  weight = jnp.where(valid, weight, 0)

  def splat(rows: int):
    # Per image, not over one index space of B * H * W pixels: XLA cannot
    # see that flat indices never cross from one image into another, and
    # with the batch sharded it all-gathered every device's scatter updates
    # and all-reduced the weight sums.
    return lambda *arrays: jax.vmap(functools.partial(
        _splat_image, normalise=mode != "sum", eps=eps, block_rows=min(rows, height)))(*arrays)

  if block_rows is not None:
    out = splat(block_rows)(features, flow, weight)
  else:
    out = jax.lax.platform_dependent(
        features, flow, weight, cpu=splat(max(1, CPU_SPLAT_BLOCK_PIXELS // (batch * width))),
        default=splat(height))
  return out.astype(features.dtype)


def _splat_image(features, flow, weight, *, normalise: bool, eps: float, block_rows: int):
  """`softmax_splat` of one image.

  Args:
    features: ``[H, W, C]`` source features.
    flow: ``[H, W, 2]`` finite displacement in pixels.
    weight: ``[H, W]`` weight of every source (0 drops it).
    normalise: divide by the weight sums (``"softmax"``, ``"average"``).
    eps: added to the weight sums.
    block_rows: source rows per scatter step, ``1 <= block_rows <= H``.
  Returns:
    ``[H, W, C]`` splatted features, dtype of ``weight``.
  """
  height, width, channels = features.shape
  index, corner_weight = _bilinear_corners(flow, weight)  # [4, H, W] each
  if normalise:
    # Normalising each contribution by the total at its target before the
    # scatter makes the scatter's accumulator the result: no [H, W, C]
    # division pass after it and no second buffer of that size.
    # The spare last slot takes the (zero) weights of targets outside.
    total = jnp.zeros(height * width + 1, weight.dtype).at[index].add(corner_weight)
    corner_weight = corner_weight / (total[index] + eps)
  out = _scatter_rows(features, index, corner_weight, block_rows)
  return out.reshape(height, width, channels)


def _bilinear_corners(flow, weight):
  """Targets and weights of the 4 bilinear corners of every source of one image.

  Args:
    flow: ``[H, W, 2]`` finite displacement in pixels.
    weight: ``[H, W]`` weight of every source (0 drops it).
  Returns:
    ``index`` int32 ``[4, H, W]``: flat target pixel ``y * W + x``, or
    ``H * W`` for targets outside the image; ``corner_weight`` ``[4, H, W]``:
    the source weight times the bilinear weight, 0 outside.
  """
  height, width, _ = flow.shape
  grid_y, grid_x = jnp.meshgrid(jnp.arange(height, dtype=flow.dtype),
                                jnp.arange(width, dtype=flow.dtype), indexing="ij")
  # Any point farther than one pixel outside the image reaches no pixel;
  # clipping there keeps the int32 conversion in range for huge flows.
  target_x = jnp.clip(grid_x + flow[..., 0], -2, width + 1)
  target_y = jnp.clip(grid_y + flow[..., 1], -2, height + 1)
  left, top = jnp.floor(target_x), jnp.floor(target_y)
  frac_x, frac_y = target_x - left, target_y - top
  left, top = left.astype(jnp.int32), top.astype(jnp.int32)
  indices, weights = [], []
  for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
    x, y = left + dx, top + dy
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    indices.append(jnp.where(inside, y * width + x, height * width))
    bilinear = (frac_x if dx else 1 - frac_x) * (frac_y if dy else 1 - frac_y)
    # Zero outside, so that the sum in the spare slot and its gradient stay 0.
    weights.append(jnp.where(inside, weight * bilinear, 0))
  return jnp.stack(indices), jnp.stack(weights)


def _scatter_rows(rows, index, corner_weight, block_rows: int):
  """``out[index] += corner_weight * rows`` over the 4 corners, in blocks of rows.

  Args:
    rows: ``[H, W, C]`` source features of one image.
    index: int32 ``[4, H, W]`` flat targets; ``H * W`` (outside) is dropped.
    corner_weight: ``[4, H, W]`` weight of every contribution.
    block_rows: source rows per loop step, ``1 <= block_rows <= H``.
  Returns:
    ``[H * W, C]`` sums, dtype of ``corner_weight``.
  """
  num_rows, width, channels = rows.shape

  def step(i, out):
    # The last block is moved back to end at the last row (shapes are
    # static); rows that an earlier block already splatted get weight 0.
    start = jnp.minimum(i * block_rows, num_rows - block_rows)
    new = start + jnp.arange(block_rows) >= i * block_rows
    block = jax.lax.dynamic_slice_in_dim(rows, start, block_rows, axis=0)
    weight = jax.lax.dynamic_slice_in_dim(corner_weight, start, block_rows, axis=1)
    weight = jnp.where(new[:, None], weight, 0)
    target = jax.lax.dynamic_slice_in_dim(index, start, block_rows, axis=1)
    # [4, rows, W, C], as a dot_general rather than a broadcast multiply:
    # its transposes (the gradients) are then dot_generals too, which XLA:CPU
    # runs several times faster than the reductions a multiply transposes
    # to, once vmap adds an axis of one image (B = 1, or one per device).
    # HIGHEST: no TF32 rounding of the features on GPUs.
    updates = jnp.einsum("krw,rwc->krwc", weight, block.astype(weight.dtype),
                         precision=jax.lax.Precision.HIGHEST)
    return out.at[target.reshape(-1)].add(updates.reshape(-1, channels), mode="drop")

  num_steps = -(-num_rows // block_rows)
  out = jnp.zeros((num_rows * width, channels), corner_weight.dtype)
  if num_steps == 1:  # No loop around one scatter.
    return step(0, out)
  return jax.lax.fori_loop(0, num_steps, step, out)
