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
# A shortcut VAE's initial posterior log-variance: its latent starts as the
# pooled map, which noise of unit spread would swamp (std e^-5 ~ 0.007).
_SHORTCUT_INITIAL_LOGVAR = -10.0


def _call_block(block, h):
  return block(h)


class _Encoder(nnx.Module):
  """``[N, H, W, in]`` → ``[N, h, w, 2 * latent]`` (mean and log-variance)."""

  def __init__(self, in_channels, latent_channels, base_channels, channel_mults,
               num_res_blocks, *, norm_epsilon, zero_init, attention_impl, remat, dtype, rngs):
    norm = dict(norm_epsilon=norm_epsilon, dtype=dtype, rngs=rngs)
    self.remat = remat
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
                         layers.SpatialAttention(channels, attention_impl=attention_impl,
                                                 **norm),
                         layers.ResBlock(channels, channels, **norm)])
    self.norm_out = layers.group_norm(channels, epsilon=norm_epsilon, dtype=dtype, rngs=rngs)
    # float32 whatever the dtype: the LDM whitens the posterior mean by its
    # spread, (mu - mean) / std, which bfloat16 rounding of mu (and of the
    # bias added to it) would swamp when |mean| >> std.
    self.conv_out = layers.conv(channels, 2 * latent_channels, zero_init=zero_init,
                                dtype=jnp.float32, rngs=rngs)

  def __call__(self, x):
    h = self.conv_in(x)
    run = layers.rematerialised(_call_block, self.remat)
    for block in (*self.down, *self.mid):
      h = run(block, h)
    return self.conv_out(nnx.silu(self.norm_out(h)))


class _Decoder(nnx.Module):
  """``[N, h, w, latent]`` → ``[N, H, W, out]``, the encoder mirrored with one
  more residual block per level."""

  def __init__(self, out_channels, latent_channels, base_channels, channel_mults,
               num_res_blocks, *, norm_epsilon, zero_init, attention_impl, remat, dtype, rngs):
    norm = dict(norm_epsilon=norm_epsilon, dtype=dtype, rngs=rngs)
    self.remat = remat
    channels = base_channels * channel_mults[-1]
    self.conv_in = layers.conv(latent_channels, channels, dtype=dtype, rngs=rngs)
    self.mid = nnx.List([layers.ResBlock(channels, channels, **norm),
                         layers.SpatialAttention(channels, attention_impl=attention_impl,
                                                 **norm),
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
    self.conv_out = layers.conv(channels, out_channels, zero_init=zero_init, dtype=dtype,
                                rngs=rngs)

  def __call__(self, z):
    h = self.conv_in(z)
    run = layers.rematerialised(_call_block, self.remat)
    for block in (*self.mid, *self.up):
      h = run(block, h)
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

  ``shortcut`` adds parameter-free paths around both networks (the residual
  autoencoding of DC-AE, Chen et al. 2025): the encoder's mean is the
  input average-pooled ``f x f`` plus the network's output, and the decoder's
  output is the latent repeated ``f x f`` plus the network's. At
  initialisation the VAE is then already a coarse autoencoder, and the
  networks learn the detail. Without it, on maps that are 0 over most of the
  picture (plants in a still scene), L1 first drives the decoder's output to
  0 everywhere, the gradient reaching the encoder vanishes, and the VAE stays
  there (docs/DESIGN.md §2). Needs ``latent_channels == in_channels``.
  """

  def __init__(self, in_channels: int = 4, latent_channels: int = 4, base_channels: int = 128,
               channel_mults: Sequence[int] = (1, 2, 4), num_res_blocks: int = 2, *,
               norm_epsilon: float = 0.1, shortcut: bool = False, attention_impl: str = "xla",
               remat: str = "none", dtype=jnp.float32, rngs: nnx.Rngs):
    if shortcut and latent_channels != in_channels:
      raise ValueError(f"a shortcut needs latent_channels == in_channels, got "
                       f"{latent_channels} and {in_channels}")
    self.downsample_factor = 2 ** (len(channel_mults) - 1)
    self.shortcut = shortcut
    # With a shortcut, both networks' outputs start at 0 (zero kernels), so
    # the VAE starts as the pooling autoencoder.
    layers.rematerialised(_call_block, remat)  # An unknown remat fails here.
    networks = dict(norm_epsilon=norm_epsilon, zero_init=shortcut,
                    attention_impl=attention_impl, remat=remat, dtype=dtype, rngs=rngs)
    self.encoder = _Encoder(in_channels, latent_channels, base_channels, tuple(channel_mults),
                            num_res_blocks, **networks)
    self.decoder = _Decoder(in_channels, latent_channels, base_channels, tuple(channel_mults),
                            num_res_blocks, **networks)
    if shortcut:
      bias = self.encoder.conv_out.bias
      bias[...] = bias[...].at[latent_channels:].set(_SHORTCUT_INITIAL_LOGVAR)

  def encode(self, x):
    """``x [N, H, W, in]`` → ``(mean, logvar)``, each ``[N, H/f, W/f, latent]``."""
    _, height, width, _ = x.shape
    if height % self.downsample_factor or width % self.downsample_factor:
      raise ValueError(f"input {height}x{width} is not divisible by the VAE's "
                       f"downsampling factor {self.downsample_factor}")
    moments = self.encoder(x).astype(jnp.float32)
    mean, logvar = jnp.split(moments, 2, axis=-1)
    if self.shortcut:
      mean = mean + _avg_pool(x.astype(jnp.float32), self.downsample_factor)
    return mean, jnp.clip(logvar, *_LOGVAR_RANGE)

  def decode(self, z):
    """``z [N, h, w, latent]`` → ``[N, h*f, w*f, in]`` float32."""
    out = self.decoder(z).astype(jnp.float32)
    if self.shortcut:
      f = self.downsample_factor
      out = out + jnp.repeat(jnp.repeat(z.astype(jnp.float32), f, axis=1), f, axis=2)
    return out

  def __call__(self, x, rng):
    """Reconstruct ``x [N, H, W, in]`` from a reparameterised latent sample
    drawn with ``rng``; returns ``(recon [N, H, W, in], mean, logvar)``."""
    mean, logvar = self.encode(x)
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)
    return self.decode(z), mean, logvar


def _avg_pool(x, f: int = 2):
  """``f x f`` average pooling of ``[N, H, W, C]``; rows and columns past the
  last whole window are dropped."""
  n, h, w, c = x.shape
  x = x[:, :h // f * f, :w // f * f]
  return x.reshape(n, h // f, f, w // f, f, c).mean(axis=(2, 4))


def gradient_loss(recon, target, num_scales: int = 3):
  """Multi-scale gradient consistency: mean over scales of the mean L1
  distance between forward differences along x and along y of ``recon`` and
  ``target`` (``[N, H, W, C]``), the scales made by repeated 2x average
  pooling of both."""
  total = 0.0
  for scale in range(num_scales):
    if scale:
      recon, target = _avg_pool(recon), _avg_pool(target)
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
  # A float count: a batch of more than 2**31 values (a pod's) overflows an
  # int32 one.
  kl = 0.5 * jnp.sum(mean ** 2 + jnp.exp(logvar) - 1.0 - logvar) / float(x.size)
  loss = l1_weight * l1 + gradient_weight * gradient + kl_weight * kl
  return loss, dict(l1=l1, gradient=gradient, kl=kl, loss=loss)
