"""Building blocks shared by the motion VAE and the diffusion U-Net.

Channels-last throughout: feature maps are ``[N, h, w, C]``. Every module takes
``dtype`` (computation) and keeps ``param_dtype=float32``; ``rngs`` is used at
construction only, so calls are deterministic functions of their inputs.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx


def group_norm(channels: int, *, min_channels_per_group: int = 1, epsilon: float = 1e-6,
               dtype=jnp.float32, rngs: nnx.Rngs) -> nnx.GroupNorm:
  """GroupNorm with 32 groups, or the largest power of two below that which
  divides ``channels`` into groups of at least ``min_channels_per_group``,
  so tiny configs (e.g. 16 channels) still build.

  A group of one channel normalizes each channel on its own and erases any
  per-channel constant added before it, such as a residual block's timestep
  and frequency embedding: blocks that take an embedding need groups of
  several channels (`MotionUNet`'s ``min_channels_per_group``).

  ``epsilon`` is added to each group's variance: a group whose spread is far
  below ``sqrt(epsilon)`` is not blown up to unit spread, and its gradient
  is amplified at most ``1 / sqrt(epsilon)``-fold.
  """
  groups = 32
  while groups > 1 and (channels % groups or channels // groups < min_channels_per_group):
    groups //= 2
  return nnx.GroupNorm(channels, num_groups=groups, epsilon=epsilon, dtype=dtype,
                       param_dtype=jnp.float32, rngs=rngs)


def conv(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, *,
         zero_init: bool = False, dtype=jnp.float32, rngs: nnx.Rngs) -> nnx.Conv:
  """Square convolution with symmetric padding ``kernel_size // 2``."""
  pad = kernel_size // 2
  extra = dict(kernel_init=nnx.initializers.zeros) if zero_init else {}
  return nnx.Conv(in_channels, out_channels, (kernel_size, kernel_size), (stride, stride),
                  padding=((pad, pad), (pad, pad)), dtype=dtype, param_dtype=jnp.float32,
                  rngs=rngs, **extra)


def linear(in_features: int, out_features: int, *, zero_init: bool = False,
           dtype=jnp.float32, rngs: nnx.Rngs) -> nnx.Linear:
  extra = dict(kernel_init=nnx.initializers.zeros) if zero_init else {}
  return nnx.Linear(in_features, out_features, dtype=dtype, param_dtype=jnp.float32,
                    rngs=rngs, **extra)


def timestep_embedding(t, dim: int, max_period: float = 10000.0):
  """Sinusoidal embedding ``[B, dim]`` float32 of (possibly fractional) steps
  ``t [B]``: ``dim // 2`` cosines then sines, periods geometric from 2*pi to
  ``max_period``; an odd ``dim`` gets a trailing zero."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = jnp.asarray(t, jnp.float32)[:, None] * freqs
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  return jnp.pad(emb, ((0, 0), (0, dim % 2)))


class ResBlock(nnx.Module):
  """Pre-activation residual block: (GroupNorm, SiLU, 3x3 conv) twice, with an
  optional embedding added between the two convolutions.

  ``zero_init`` zeroes the second convolution so the block starts as the
  identity (or as its 1x1 shortcut), as diffusion U-Nets do for stable
  training of deep stacks.
  """

  def __init__(self, in_channels: int, out_channels: int, emb_channels: int | None = None, *,
               zero_init: bool = False, norm_epsilon: float = 1e-6,
               min_channels_per_group: int = 1, dtype=jnp.float32, rngs: nnx.Rngs):
    norm = dict(min_channels_per_group=min_channels_per_group, epsilon=norm_epsilon,
                dtype=dtype, rngs=rngs)
    self.norm1 = group_norm(in_channels, **norm)
    self.conv1 = conv(in_channels, out_channels, dtype=dtype, rngs=rngs)
    self.emb_proj = (linear(emb_channels, out_channels, dtype=dtype, rngs=rngs)
                     if emb_channels else None)
    self.norm2 = group_norm(out_channels, **norm)
    self.conv2 = conv(out_channels, out_channels, zero_init=zero_init, dtype=dtype, rngs=rngs)
    self.shortcut = (conv(in_channels, out_channels, 1, dtype=dtype, rngs=rngs)
                     if in_channels != out_channels else None)

  def __call__(self, x, emb=None):
    """``x [N, h, w, C_in]``, ``emb [N, E]`` (iff built with ``emb_channels``)
    → ``[N, h, w, C_out]``."""
    h = self.conv1(nnx.silu(self.norm1(x)))
    if self.emb_proj is not None:
      h = h + self.emb_proj(nnx.silu(emb))[:, None, None, :]
    h = self.conv2(nnx.silu(self.norm2(h)))
    skip = x if self.shortcut is None else self.shortcut(x)
    return skip + h


class Downsample(nnx.Module):
  """Stride-2 3x3 convolution: ``[N, h, w, C]`` → ``[N, ceil(h/2), ceil(w/2), C]``."""

  def __init__(self, channels: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
    self.conv = conv(channels, channels, 3, 2, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    return self.conv(x)


class Upsample(nnx.Module):
  """Nearest 2x then 3x3 convolution: ``[N, h, w, C]`` → ``[N, 2h, 2w, C]``
  (no transposed convolution, so no checkerboard artefacts)."""

  def __init__(self, channels: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
    self.conv = conv(channels, channels, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return self.conv(x)


# ``model.remat``: what a network's blocks keep for the backward pass.
# "none": every activation; "dots": only the results of matrix products
# (attention, linear layers; convolutions, norms and the rest are computed
# again); "full": only each block's inputs (its inside is computed again).
REMAT_POLICIES = {"none": None, "dots": jax.checkpoint_policies.checkpoint_dots,
                  "full": jax.checkpoint_policies.nothing_saveable}


def rematerialised(call, remat: str, static_argnums: tuple[int, ...] = ()):
  """``call(block, *args)`` keeping what `REMAT_POLICIES` ``[remat]``
  keeps for the backward pass (``call`` itself for "none")."""
  if remat not in REMAT_POLICIES:
    raise ValueError(f"unknown remat {remat!r}; one of {', '.join(REMAT_POLICIES)}")
  if remat == "none":
    return call
  return nnx.remat(call, policy=REMAT_POLICIES[remat], static_argnums=static_argnums)


# `jax.nn.dot_product_attention`'s kernels: XLA's (every platform; on a TPU
# the one that compiles there) and cuDNN's fused flash attention (NVIDIA
# GPUs, float16 and bfloat16).
ATTENTION_IMPLEMENTATIONS = ("xla", "cudnn")


class SelfAttention(nnx.Module):
  """Multi-head self-attention over tokens ``[N, L, C]`` → ``[N, L, C]``
  (no norm, no residual: callers add those around it).

  ``zero_init`` zeroes the output projection (kernel and bias) so the result
  is exactly 0 at initialisation. ``implementation``: the kernel of
  `jax.nn.dot_product_attention`, one of `ATTENTION_IMPLEMENTATIONS`.
  """

  def __init__(self, channels: int, num_heads: int, *, zero_init: bool = False,
               dtype=jnp.float32, implementation: str = "xla", rngs: nnx.Rngs):
    if channels % num_heads:
      raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
    if implementation not in ATTENTION_IMPLEMENTATIONS:
      raise ValueError(f"unknown attention implementation {implementation!r}; one of "
                       f"{', '.join(ATTENTION_IMPLEMENTATIONS)}")
    self.num_heads = num_heads
    self.implementation = implementation
    self.qkv = linear(channels, 3 * channels, dtype=dtype, rngs=rngs)
    self.out = linear(channels, channels, zero_init=zero_init, dtype=dtype, rngs=rngs)

  def __call__(self, tokens):
    n, length, channels = tokens.shape
    qkv = self.qkv(tokens).reshape(n, length, 3, self.num_heads, channels // self.num_heads)
    attended = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2],
                                            implementation=self.implementation)
    return self.out(attended.reshape(n, length, channels))


class SpatialAttention(nnx.Module):
  """Pre-norm self-attention over the ``h * w`` positions of each map, with
  a residual: ``[N, h, w, C]`` → ``[N, h, w, C]``."""

  def __init__(self, channels: int, num_heads: int = 1, *, zero_init: bool = False,
               norm_epsilon: float = 1e-6, min_channels_per_group: int = 1, dtype=jnp.float32,
               attention_impl: str = "xla", rngs: nnx.Rngs):
    self.norm = group_norm(channels, min_channels_per_group=min_channels_per_group,
                           epsilon=norm_epsilon, dtype=dtype, rngs=rngs)
    self.attn = SelfAttention(channels, num_heads, zero_init=zero_init, dtype=dtype,
                              implementation=attention_impl, rngs=rngs)

  def __call__(self, x):
    n, h, w, c = x.shape
    return x + self.attn(self.norm(x).reshape(n, h * w, c)).reshape(n, h, w, c)
