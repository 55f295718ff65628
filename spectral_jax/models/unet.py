"""Latent-diffusion U-Net that predicts the noise of motion latents.

The network sees ``F`` frequencies of each example at once, ``z_t [B, F, h, w,
latent]``, conditioned on the picture through an image encoder whose features
are concatenated on channels. Spatial layers process the ``B * F`` maps
independently; stage 1 trains them with ``F = 1`` and a frequency-index
embedding. Stage 2 (``freq_attention`` a variant of `freq_attention.VARIANTS`,
not "none") adds a layer across the ``F`` axis after every unit, under the
attribute ``freq_attn`` (the parameter paths of the runs saved so far). It
starts as the identity, so stage 2 at initialisation computes exactly what
stage 1 does: `with_stage1_params` copies a stage-1 parameter state into it,
and a call with ``use_freq_attention=False`` skips the layers, which is stage
1's network on a stage-2 run's frozen backbone.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
from flax import nnx

from spectral_jax.models import freq_attention as freq_attention_lib
from spectral_jax.models import layers


class ImageEncoder(nnx.Module):
  """Small ResNet from the picture to latent resolution.

  ``image [B, H, W, 3]`` in [-1, 1] → ``[B, H / 2^n, W / 2^n, out_channels]``
  with ``n = num_downsamples`` (set it to the VAE's number of downsamplings).
  Level ``i`` has ``base_channels * 2^i`` channels.
  """

  def __init__(self, out_channels: int = 16, base_channels: int = 64, num_downsamples: int = 2,
               num_res_blocks: int = 1, *, dtype=jnp.float32, rngs: nnx.Rngs):
    self.conv_in = layers.conv(3, base_channels, dtype=dtype, rngs=rngs)
    blocks = []
    channels = base_channels
    for level in range(num_downsamples + 1):
      for _ in range(num_res_blocks):
        blocks.append(layers.ResBlock(channels, base_channels * 2 ** level, dtype=dtype, rngs=rngs))
        channels = base_channels * 2 ** level
      if level < num_downsamples:
        blocks.append(layers.Downsample(channels, dtype=dtype, rngs=rngs))
    self.blocks = nnx.List(blocks)
    self.norm_out = layers.group_norm(channels, dtype=dtype, rngs=rngs)
    self.conv_out = layers.conv(channels, out_channels, dtype=dtype, rngs=rngs)

  def __call__(self, image):
    h = self.conv_in(image)
    for block in self.blocks:
      h = block(h)
    return self.conv_out(nnx.silu(self.norm_out(h)))


class _Unit(nnx.Module):
  """Residual block, then optional spatial attention, then (stage 2)
  frequency attention: ``[B * F, h, w, C_in]`` → ``[B * F, h, w, C_out]``.
  ``freq_attention``: a `freq_attention.VARIANTS` name."""

  def __init__(self, in_channels, out_channels, emb_channels, *, attention, num_heads,
               freq_attention, num_freqs, min_channels_per_group, attention_impl, dtype, rngs):
    self.res = layers.ResBlock(in_channels, out_channels, emb_channels, zero_init=True,
                               min_channels_per_group=min_channels_per_group, dtype=dtype,
                               rngs=rngs)
    self.attn = (layers.SpatialAttention(out_channels, num_heads, zero_init=True,
                                         min_channels_per_group=min_channels_per_group,
                                         dtype=dtype, attention_impl=attention_impl,
                                         rngs=rngs) if attention else None)
    self.freq_attn = freq_attention_lib.make(freq_attention, out_channels, num_heads, num_freqs,
                                             dtype=dtype, attention_impl=attention_impl,
                                             rngs=rngs)

  def __call__(self, x, emb, freq_index, use_freq_attention: bool = True):
    x = self.res(x, emb)
    if self.attn is not None:
      x = self.attn(x)
    if self.freq_attn is not None and use_freq_attention:
      x = self.freq_attn(x, freq_index)
    return x


class MotionUNet(nnx.Module):
  """ε-prediction U-Net over motion latents (LDM layout, no cross-attention).

  Level ``i`` (resolution after ``i`` downsamplings) has
  ``base_channels * channel_mults[i]`` channels and ``num_res_blocks`` units on
  the way down, ``num_res_blocks + 1`` on the way up (each taking a skip);
  units at levels in ``attention_levels`` add spatial self-attention. The
  middle has two units, the first with spatial attention. A unit is
  ResBlock → [spatial attention] → [frequency attention], so with
  ``freq_attention`` other than "none" there is one frequency-attention
  layer (that variant of `freq_attention.VARIANTS`) after every unit
  in the down, middle and up paths (not after the input convolution or the
  down/upsamplers). Residual blocks and spatial attention are zero-initialised
  residual branches; the output convolution is not, so an untrained network
  is still a non-trivial function of its inputs (and of the condition).

  The timestep embedding (sinusoidal → MLP, ``4 * base_channels`` wide) plus a
  learned embedding of the frequency index feeds every residual block, added
  before a GroupNorm: ``min_channels_per_group`` (4 in the configs) keeps that
  norm's groups wide enough not to erase it. The default 1 is the rule of
  the runs and exports made before the field existed (one channel per group
  below 32 channels), so they load as they trained; the paper's widths
  (128 channels and up) have 4 or more per group either way. The
  image features are computed once per example, zeroed where ``cond_mask`` is
  False (the dropped condition of classifier-free guidance), broadcast over
  ``F`` and concatenated to ``z_t``.
  """

  def __init__(self, latent_channels: int = 4, cond_channels: int = 16, base_channels: int = 128,
               channel_mults: Sequence[int] = (1, 4, 8), num_res_blocks: int = 2,
               attention_levels: Sequence[int] = (1, 2), num_heads: int = 8, num_freqs: int = 16,
               freq_attention: str = "none", image_encoder_channels: int = 64,
               image_downsamples: int = 2, image_encoder_res_blocks: int = 1,
               min_channels_per_group: int = 1, attention_impl: str = "xla",
               remat: str = "none", *, dtype=jnp.float32, rngs: nnx.Rngs):
    self.dtype = dtype
    # Units run through `layers.rematerialised` (checked here, not at the
    # first call).
    layers.rematerialised(_Unit.__call__, remat)
    self.remat = remat
    self.base_channels = base_channels
    self.downsample_factor = 2 ** (len(channel_mults) - 1)
    emb_channels = 4 * base_channels
    unit = dict(num_heads=num_heads, freq_attention=freq_attention, num_freqs=num_freqs,
                min_channels_per_group=min_channels_per_group, attention_impl=attention_impl,
                dtype=dtype, rngs=rngs)

    self.image_encoder = ImageEncoder(cond_channels, image_encoder_channels, image_downsamples,
                                      image_encoder_res_blocks, dtype=dtype, rngs=rngs)
    self.time_fc1 = layers.linear(base_channels, emb_channels, dtype=dtype, rngs=rngs)
    self.time_fc2 = layers.linear(emb_channels, emb_channels, dtype=dtype, rngs=rngs)
    self.freq_embed = nnx.Embed(num_freqs, emb_channels, dtype=dtype, param_dtype=jnp.float32,
                                rngs=rngs)
    self.conv_in = layers.conv(latent_channels + cond_channels, base_channels, dtype=dtype,
                               rngs=rngs)

    down, skip_channels = [], [base_channels]
    channels = base_channels
    for level, mult in enumerate(channel_mults):
      for _ in range(num_res_blocks):
        down.append(_Unit(channels, base_channels * mult, emb_channels,
                          attention=level in attention_levels, **unit))
        channels = base_channels * mult
        skip_channels.append(channels)
      if level < len(channel_mults) - 1:
        down.append(layers.Downsample(channels, dtype=dtype, rngs=rngs))
        skip_channels.append(channels)
    self.down = nnx.List(down)
    self.mid = nnx.List([_Unit(channels, channels, emb_channels, attention=True, **unit),
                         _Unit(channels, channels, emb_channels, attention=False, **unit)])
    up = []
    for level in reversed(range(len(channel_mults))):
      for _ in range(num_res_blocks + 1):
        up.append(_Unit(channels + skip_channels.pop(), base_channels * channel_mults[level],
                        emb_channels, attention=level in attention_levels, **unit))
        channels = base_channels * channel_mults[level]
      if level > 0:
        up.append(layers.Upsample(channels, dtype=dtype, rngs=rngs))
    self.up = nnx.List(up)
    self.norm_out = layers.group_norm(channels, dtype=dtype, rngs=rngs)
    self.conv_out = layers.conv(channels, latent_channels, dtype=dtype, rngs=rngs)

  def __call__(self, z_t, t, image, freq_index, cond_mask, *, use_freq_attention: bool = True):
    """Predicted noise ``[B, F, h, w, latent]`` float32.

    Args:
      z_t: ``[B, F, h, w, latent]`` noisy latents of F frequencies; ``h`` and
        ``w`` divisible by ``2^(len(channel_mults) - 1)``.
      t: ``[B]`` diffusion step (int or float).
      image: ``[B, H, W, 3]`` picture in [-1, 1], ``H = h * 2^image_downsamples``.
      freq_index: ``[B, F]`` int32 frequency bin of each latent.
      cond_mask: ``[B]`` bool, False where the image condition is dropped.
      use_freq_attention: False skips every frequency-attention layer: the
        network without them, i.e. stage 1's on a stage-2 run's backbone.
    """
    b, f, h, w, _ = z_t.shape
    if h % self.downsample_factor or w % self.downsample_factor:
      raise ValueError(f"latent {h}x{w} is not divisible by the U-Net's downsampling "
                       f"factor {self.downsample_factor}")
    cond = self.image_encoder(image.astype(self.dtype))
    if cond.shape[1:3] != (h, w):
      raise ValueError(f"image features {cond.shape[1:3]} do not match latents {(h, w)}")
    cond = jnp.where(cond_mask[:, None, None, None], cond, 0)
    cond = jnp.broadcast_to(cond[:, None], (b, f) + cond.shape[1:])
    x = jnp.concatenate([z_t.astype(self.dtype), cond.astype(self.dtype)], axis=-1)
    x = self.conv_in(x.reshape((b * f, h, w, x.shape[-1])))

    emb = self.time_fc2(nnx.silu(self.time_fc1(layers.timestep_embedding(t, self.base_channels))))
    emb = (emb[:, None] + self.freq_embed(freq_index)).reshape(b * f, -1)

    unit = layers.rematerialised(_Unit.__call__, self.remat, static_argnums=(4,))
    skips = [x]
    for block in self.down:
      x = (block(x) if isinstance(block, layers.Downsample)
           else unit(block, x, emb, freq_index, use_freq_attention))
      skips.append(x)
    for block in self.mid:
      x = unit(block, x, emb, freq_index, use_freq_attention)
    for block in self.up:
      if isinstance(block, layers.Upsample):
        x = block(x)
      else:
        x = unit(block, jnp.concatenate([x, skips.pop()], axis=-1), emb, freq_index,
                 use_freq_attention)
    eps = self.conv_out(nnx.silu(self.norm_out(x)))
    return eps.astype(jnp.float32).reshape(b, f, h, w, -1)


def with_stage1_params(stage2: MotionUNet, stage1_params: nnx.State) -> nnx.State:
  """A stage-2 network's parameters with every stage-1 parameter copied in.

  Args:
    stage2: a `MotionUNet` with frequency attention.
    stage1_params: ``nnx.state(model, nnx.Param)`` of the stage-1 model
      with identical other hyper-parameters.
  Returns:
    A new state: stage-1 values everywhere, ``stage2``'s own values for the
    parameters of its frequency-attention layers.
  Raises:
    ValueError: if the trees differ other than by the frequency-attention
      layers' parameters, or a shared parameter's shape differs.
  """
  flat2 = dict(nnx.to_flat_state(nnx.state(stage2, nnx.Param)))
  flat1 = dict(nnx.to_flat_state(stage1_params))
  shared = set(flat2) - freq_attention_lib.param_paths(stage2)
  if shared != set(flat1):
    raise ValueError(f"parameter trees differ beyond frequency attention: only in stage 1: "
                     f"{sorted(set(flat1) - shared, key=str)[:5]}, only in stage 2: "
                     f"{sorted(shared - set(flat1), key=str)[:5]}")
  mismatched = [path for path in flat1 if flat1[path].shape != flat2[path].shape]
  if mismatched:
    raise ValueError(f"parameter shapes differ at {mismatched[:5]}")
  return nnx.from_flat_state({**flat2, **flat1})
