"""VAE that compresses one frequency's normalized motion map to a latent.

Input and output are the real layout of docs/DESIGN.md §1 for a single frequency,
``[N, H, W, 4]`` = ``(Re dx, Re dy, Im dx, Im dy)`` after frequency-adaptive
normalization; the latent is ``[N, H / 2^(L-1), W / 2^(L-1), latent_channels]``
for ``L = len(channel_mults)`` (paper: (1, 2, 4), 256x160 → 64x40).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from spectral_jax.models import layers

# Bounds on the log-variance keep exp() finite early in training.
_LOGVAR_RANGE = (-30.0, 20.0)


class _Encoder(nnx.Module):
  """``[N, H, W, in]`` → ``[N, h, w, 2 * latent]`` (mean and log-variance)."""

  def __init__(self, in_channels, latent_channels, base_channels, channel_mults,
               num_res_blocks, *, norm_epsilon, dtype, rngs):
    norm = dict(norm_epsilon=norm_epsilon, dtype=dtype, rngs=rngs)
    self.conv_in = layers.conv(in_channels, base_channels, dtype=dtype, rngs=rngs)
    blocks = []
    channels = base_channels
    for level, mult in enumerate(channel_mults):
      for _ in range(num_res_blocks):
        blocks.append(layers.ResBlock(channels, base_channels * mult, **norm))
        channels = base_channels * mult
      if level < len(channel_mults) - 1:
        blocks.append(layers.Downsample(channels, dtype=dtype, rngs=rngs))
    self.down = nnx.List(blocks)
    self.mid = nnx.List([layers.ResBlock(channels, channels, **norm),
                         layers.SpatialAttention(channels, **norm),
                         layers.ResBlock(channels, channels, **norm)])
    self.norm_out = layers.group_norm(channels, epsilon=norm_epsilon, dtype=dtype, rngs=rngs)
    # float32 whatever the dtype: the LDM whitens the posterior mean by its
    # spread, (mu - mean) / std, which bfloat16 rounding of mu (and of the
    # bias added to it) would swamp when |mean| >> std.
    self.conv_out = layers.conv(channels, 2 * latent_channels, dtype=jnp.float32, rngs=rngs)

  def __call__(self, x):
    h = self.conv_in(x)
    for block in (*self.down, *self.mid):
      h = block(h)
    return self.conv_out(nnx.silu(self.norm_out(h)))


class _Decoder(nnx.Module):
  """``[N, h, w, latent]`` → ``[N, H, W, out]``, the encoder mirrored with one
  more residual block per level."""

  def __init__(self, out_channels, latent_channels, base_channels, channel_mults,
               num_res_blocks, *, norm_epsilon, dtype, rngs):
    norm = dict(norm_epsilon=norm_epsilon, dtype=dtype, rngs=rngs)
    channels = base_channels * channel_mults[-1]
    self.conv_in = layers.conv(latent_channels, channels, dtype=dtype, rngs=rngs)
    self.mid = nnx.List([layers.ResBlock(channels, channels, **norm),
                         layers.SpatialAttention(channels, **norm),
                         layers.ResBlock(channels, channels, **norm)])
    blocks = []
    for level in reversed(range(len(channel_mults))):
      for _ in range(num_res_blocks + 1):
        blocks.append(layers.ResBlock(channels, base_channels * channel_mults[level], **norm))
        channels = base_channels * channel_mults[level]
      if level > 0:
        blocks.append(layers.Upsample(channels, dtype=dtype, rngs=rngs))
    self.up = nnx.List(blocks)
    self.norm_out = layers.group_norm(channels, epsilon=norm_epsilon, dtype=dtype, rngs=rngs)
    self.conv_out = layers.conv(channels, out_channels, dtype=dtype, rngs=rngs)

  def __call__(self, z):
    h = self.conv_in(z)
    for block in (*self.mid, *self.up):
      h = block(h)
    return self.conv_out(nnx.silu(self.norm_out(h)))


class SpectralVAE(nnx.Module):
  """KL-regularised autoencoder of per-frequency motion maps (LDM-style).

  Outputs (mean, log-variance, reconstructions) are float32 whatever ``dtype``.
  ``H`` and ``W`` must be divisible by ``2^(len(channel_mults) - 1)``.

  ``norm_epsilon`` (GroupNorm's, LDM's is 1e-6): motion maps are exactly 0
  wherever nothing moves, a whole map often so. There every activation is
  constant, each norm multiplies the gradient by ``1 / sqrt(epsilon)``, and
  with 1e-6 a still map's gradient reaches 1e25 (its squared norm overflows
  float32, and clipping then zeroes the whole step). 0.1 keeps it O(1)
  while an active map's gradient changes by a few percent.
  """

  def __init__(self, in_channels: int = 4, latent_channels: int = 4, base_channels: int = 128,
               channel_mults: Sequence[int] = (1, 2, 4), num_res_blocks: int = 2, *,
               norm_epsilon: float = 0.1, dtype=jnp.float32, rngs: nnx.Rngs):
    self.downsample_factor = 2 ** (len(channel_mults) - 1)
    self.encoder = _Encoder(in_channels, latent_channels, base_channels, tuple(channel_mults),
                            num_res_blocks, norm_epsilon=norm_epsilon, dtype=dtype, rngs=rngs)
    self.decoder = _Decoder(in_channels, latent_channels, base_channels, tuple(channel_mults),
                            num_res_blocks, norm_epsilon=norm_epsilon, dtype=dtype, rngs=rngs)

  def encode(self, x):
    """``x [N, H, W, in]`` → ``(mean, logvar)``, each ``[N, H/f, W/f, latent]``."""
    _, height, width, _ = x.shape
    if height % self.downsample_factor or width % self.downsample_factor:
      raise ValueError(f"input {height}x{width} is not divisible by the VAE's "
                       f"downsampling factor {self.downsample_factor}")
    moments = self.encoder(x).astype(jnp.float32)
    mean, logvar = jnp.split(moments, 2, axis=-1)
    return mean, jnp.clip(logvar, *_LOGVAR_RANGE)

  def decode(self, z):
    """``z [N, h, w, latent]`` → ``[N, h*f, w*f, in]`` float32."""
    return self.decoder(z).astype(jnp.float32)

  def __call__(self, x, rng):
    """Reconstruct ``x [N, H, W, in]`` from a reparameterised latent sample
    drawn with ``rng``; returns ``(recon [N, H, W, in], mean, logvar)``."""
    mean, logvar = self.encode(x)
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)
    return self.decode(z), mean, logvar


def _avg_pool2(x):
  """2x2 average pooling of ``[N, H, W, C]``; an odd last row/column is dropped."""
  n, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2]
  return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def gradient_loss(recon, target, num_scales: int = 3):
  """Multi-scale gradient consistency: mean over scales of the mean L1
  distance between forward differences along x and along y of ``recon`` and
  ``target`` (``[N, H, W, C]``), the scales made by repeated 2x average
  pooling of both."""
  total = 0.0
  for scale in range(num_scales):
    if scale:
      recon, target = _avg_pool2(recon), _avg_pool2(target)
    diff = recon - target
    total += (jnp.abs(jnp.diff(diff, axis=2)).mean() + jnp.abs(jnp.diff(diff, axis=1)).mean())
  return total / num_scales


def vae_loss(vae: SpectralVAE, x, rng, *, l1_weight: float = 1.0, gradient_weight: float = 0.2,
             kl_weight: float = 1e-6, num_scales: int = 3):
  """L1 + multi-scale gradient consistency + KL to N(0, I) for ``x [N, H, W, in]``.

  ``l1`` and ``gradient`` are means over elements. ``kl`` is the KL divergence
  summed over latent elements and divided by the number of *input* elements:
  the same ratio of KL to reconstruction as LDM's per-sample sums, so the
  paper's weight 1e-6 keeps its meaning while every term stays O(1).

  Returns:
    ``(loss, metrics)``: scalar float32 loss and a dict of scalars
    ``l1``, ``gradient``, ``kl``, ``loss``.
  """
  recon, mean, logvar = vae(x, rng)
  x = x.astype(jnp.float32)
  l1 = jnp.abs(recon - x).mean()
  gradient = gradient_loss(recon, x, num_scales)
  kl = 0.5 * jnp.sum(mean ** 2 + jnp.exp(logvar) - 1.0 - logvar) / x.size
  loss = l1_weight * l1 + gradient_weight * gradient + kl_weight * kl
  return loss, dict(l1=l1, gradient=gradient, kl=kl, loss=loss)
