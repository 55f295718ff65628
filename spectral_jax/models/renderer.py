"""The image-based renderer (docs/DESIGN.md §2): encode the picture once, splat its
feature pyramid by each frame's displacement, synthesise the frame.

* `FeatureEncoder`: ResNet-34-style (BasicBlocks, GroupNorm) pyramid of the
  picture at strides ``1, 2, 4, ...`` (one scale per stage) and a global style
  code. Scale 0 starts with the picture's own RGB, so the splatted pyramid
  carries the forward-warped picture.
* `splat_pyramid`: per scale, the displacement is resized to that scale and
  multiplied by the resolution ratio, features are softmax-splatted with the
  (resized) motion metric, and a coverage channel is appended: the
  bilinear weight that landed on each target pixel, clipped to 1, so 0 marks
  a disocclusion hole and the decoder knows what it must fill.
* `SynthesisDecoder`: co-modulated StyleGAN2-like synthesis (Zhao et al. 2021)
  from the coarsest scale to the finest, the splatted features entering as
  skips at every scale; it paints where splatting left pixels empty: its RGB
  output is added to the warped picture weighted by a gate that falls from 1
  in a hole to 0 at full coverage (``1 - coverage`` by default), and
  starts at zero, so an untrained renderer is forward warping.

Why the paint is gated by coverage: where splatting covered a pixel fully
(the still background, the inside of a moving object) the warped picture is
already right, and an ungated residual must learn to be exactly 0 on nearly
every pixel and non-zero in the few holes, a product of coverage and colour
that convolutions and leaky ReLUs represent poorly. Measured on held-out
synthetic frames (docs/DESIGN.md §2), an ungated renderer's loss does not
fall and it ends worse than forward warping; gated, it learns to fill holes
and stretched regions.

The co-modulation code is the encoder's style code alone: the renderer is
deterministic (it is trained against true frames, not adversarially), so the
random latent branch of co-modulated GANs is left out.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from spectral_jax.render.splat import softmax_splat

# ResNet-34 stage layout and widths (He et al. 2016); the paper's encoder.
RESNET34_DEPTHS = (3, 4, 6, 3)
RESNET34_CHANNELS = (64, 128, 256, 512)
# Slope of the leaky ReLU in the style MLP and the synthesis network (StyleGAN).
LEAKY_SLOPE = 0.2


def _group_norm(channels: int, max_groups: int, dtype, rngs: nnx.Rngs,
                scale_init=nnx.initializers.ones) -> nnx.GroupNorm:
  # The largest group count dividing the width, so tiny widths work.
  return nnx.GroupNorm(channels, num_groups=math.gcd(max_groups, channels), scale_init=scale_init,
                       dtype=dtype, rngs=rngs)


def regrid(x, height: int, width: int, factor: float):
  """Bilinear resample of ``[B, h, w, C]`` to ``[B, height, width, C]`` on
  the encoder's grid: output pixel i is input pixel ``factor * i``
  (antialiased when ``factor > 1``).

  The encoder's stride-2 convolutions, padded symmetrically, centre output
  pixel i on input pixel 2i, so pixel i of the stride-``s`` scale sits at
  full-resolution pixel ``s * i``. `jax.image.resize` puts it at
  ``s * i + (s - 1) / 2`` instead (pixel areas aligned, not centres), which
  would read flow and metric 0.5, 1.5 and 3.5 px off at strides 2, 4 and 8.
  """
  if x.shape[1:3] == (height, width) and factor == 1:
    return x
  # scale_and_translate reads output centre c (pixel i at c = i + 0.5) from
  # input (c - translation) / scale; this translation puts it at factor * i.
  scale = 1.0 / factor
  return jax.image.scale_and_translate(
      x, (x.shape[0], height, width, x.shape[3]), (1, 2), jnp.full((2,), scale, jnp.float32),
      jnp.full((2,), 0.5 - 0.5 * scale, jnp.float32), "linear", antialias=True)


class BasicBlock(nnx.Module):
  """ResNet basic block: two 3x3 convs with GroupNorm, identity or 1x1 shortcut."""

  def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1,
               norm_groups: int = 32, dtype=jnp.float32, rngs: nnx.Rngs):
    # Symmetric padding: a stride-2 output pixel i is centred on input 2i in
    # both the 3x3 and the 1x1 path ('SAME' pads 3x3 convs on one side only).
    self.conv1 = nnx.Conv(in_channels, out_channels, (3, 3), strides=stride, padding=1,
                          use_bias=False, dtype=dtype, rngs=rngs)
    self.norm1 = _group_norm(out_channels, norm_groups, dtype, rngs)
    self.conv2 = nnx.Conv(out_channels, out_channels, (3, 3), padding=1, use_bias=False,
                          dtype=dtype, rngs=rngs)
    # Zero-initialised last scale: each block starts as the identity, which
    # keeps deep stacks trainable without BatchNorm.
    self.norm2 = _group_norm(out_channels, norm_groups, dtype, rngs,
                             scale_init=nnx.initializers.zeros)
    if stride != 1 or in_channels != out_channels:
      self.shortcut = nnx.Sequential(
          nnx.Conv(in_channels, out_channels, (1, 1), strides=stride, padding=0, use_bias=False,
                   dtype=dtype, rngs=rngs),
          _group_norm(out_channels, norm_groups, dtype, rngs))
    else:
      self.shortcut = None

  def __call__(self, x):
    y = nnx.relu(self.norm1(self.conv1(x)))
    y = self.norm2(self.conv2(y))
    return nnx.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class FeatureEncoder(nnx.Module):
  """ResNet-style multi-scale features and a global style code of a picture.

  ``__call__(image [B, H, W, 3] in [-1, 1])`` returns ``(pyramid, style)``:
  ``pyramid[s]`` ``[B, ceil(H / 2^s), ceil(W / 2^s), C_s]`` for
  ``s = 0 .. len(depths) - 1`` with ``C_0 = 3 + channels[0]`` (the picture's
  RGB first) and ``C_s = channels[s]`` above; ``style`` ``[B, style_dim]``.
  ``pyramid[0]`` is float32, the other scales and the style are ``dtype``.

  A ResNet with a full-resolution stem (7x7 conv, stride 1, no max pool):
  stage 0 keeps full resolution and each later stage halves it, so the
  ResNet-34 layout (3, 4, 6, 3) gives strides 1, 2, 4, 8.
  """

  def __init__(self, *, channels=RESNET34_CHANNELS, depths=RESNET34_DEPTHS, style_dim: int = 512,
               norm_groups: int = 32, dtype=jnp.float32, rngs: nnx.Rngs):
    if len(channels) != len(depths):
      raise ValueError(f"one width per stage: channels {channels}, depths {depths}")
    self.stem = nnx.Conv(3, channels[0], (7, 7), padding=3, use_bias=False, dtype=dtype,
                         rngs=rngs)
    self.stem_norm = _group_norm(channels[0], norm_groups, dtype, rngs)
    stages = []
    in_channels = channels[0]
    for index, (width, depth) in enumerate(zip(channels, depths)):
      blocks = [BasicBlock(in_channels if i == 0 else width, width,
                           stride=2 if index > 0 and i == 0 else 1, norm_groups=norm_groups,
                           dtype=dtype, rngs=rngs) for i in range(depth)]
      stages.append(nnx.Sequential(*blocks))
      in_channels = width
    self.stages = nnx.List(stages)
    self.style_hidden = nnx.Linear(channels[-1], style_dim, dtype=dtype, rngs=rngs)
    self.style_out = nnx.Linear(style_dim, style_dim, dtype=dtype, rngs=rngs)
    self.dtype = dtype

  def __call__(self, image):
    x = nnx.relu(self.stem_norm(self.stem(image.astype(self.dtype))))
    pyramid = []
    for stage in self.stages:
      x = stage(x)
      pyramid.append(x)
    # Scale 0 is float32 whatever the dtype: its RGB is the picture the frame
    # passes through where coverage is full, which bfloat16 would round (8 bits).
    pyramid[0] = jnp.concatenate([image.astype(jnp.float32), pyramid[0].astype(jnp.float32)],
                                 axis=-1)
    pooled = jnp.mean(x, axis=(1, 2))  # [B, channels[-1]]
    style = self.style_out(nnx.leaky_relu(self.style_hidden(pooled), LEAKY_SLOPE))
    return pyramid, style


def splat_pyramid(pyramid, flow, metric):
  """Softmax-splats every scale of a feature pyramid, with coverage.

  Args:
    pyramid: list of ``[B, h_s, w_s, C_s]`` features (`FeatureEncoder`).
    flow: ``[B, H, W, 2]`` displacement ``(dx, dy)`` in full-resolution pixels.
    metric: ``[B, H, W, 1]`` softmax-splatting importance (`render.splat_metric`).
  Returns:
    list of ``[B, h_s, w_s, C_s + 1]``, dtype of the features: the splatted
    features, then the coverage (the bilinear weight that landed on each
    pixel, clipped to [0, 1]; 0 in disocclusion holes, where the features
    are 0 too).

  Scale s has stride ``2^s``: the displacement is resampled onto its grid
  (`regrid`) and divided by the stride (a shift of 8 px is 2 px at stride
  4). The metric is resampled but not rescaled, so the same pixels win
  collisions at every scale.
  """
  flow = flow.astype(jnp.float32)
  metric = metric.astype(jnp.float32)
  splatted = []
  for s, features in enumerate(pyramid):
    h, w = features.shape[1:3]
    stride = 2 ** s
    scale_flow = regrid(flow, h, w, stride) / stride
    splat_features = softmax_splat(features, scale_flow, regrid(metric, h, w, stride))
    coverage = softmax_splat(jnp.ones((flow.shape[0], h, w, 1), jnp.float32), scale_flow,
                             mode="sum")
    splatted.append(jnp.concatenate(
        [splat_features, jnp.minimum(coverage, 1.0).astype(features.dtype)], axis=-1))
  return splatted


class ModulatedConv(nnx.Module):
  """StyleGAN2 modulated convolution, weights scaled per sample by a style.

  ``__call__(x [B, h, w, in_channels], code [B, code_dim]) -> [B, h, w,
  out_channels]``. The per-sample weight ``w * s_in`` (``s = affine(code)``,
  initialised to 1) is demodulated to unit norm per output channel when
  ``demodulate``; computed as ``conv(x * s) * d`` (one shared kernel for the
  whole batch, mathematically the same as per-sample kernels).
  """

  def __init__(self, in_channels: int, out_channels: int, code_dim: int, *, kernel_size: int = 3,
               demodulate: bool = True, zero_init: bool = False, dtype=jnp.float32,
               rngs: nnx.Rngs):
    init = nnx.initializers.zeros if zero_init else nnx.initializers.he_normal()
    self.conv = nnx.Conv(in_channels, out_channels, (kernel_size, kernel_size), use_bias=False,
                         kernel_init=init, dtype=dtype, rngs=rngs)
    self.affine = nnx.Linear(code_dim, in_channels, bias_init=nnx.initializers.ones, dtype=dtype,
                             rngs=rngs)
    self.bias = nnx.Param(jnp.zeros((out_channels,), jnp.float32))
    self.demodulate = demodulate
    self.dtype = dtype

  def __call__(self, x, code):
    style = self.affine(code).astype(jnp.float32)  # [B, in]
    y = self.conv((x * style[:, None, None, :]).astype(self.dtype))
    if self.demodulate:
      energy = jnp.sum(jnp.square(self.conv.kernel[...]), axis=(0, 1))  # [in, out]
      y = y * jax.lax.rsqrt(jnp.square(style) @ energy + 1e-8)[:, None, None, :].astype(y.dtype)
    return y + self.bias[...].astype(y.dtype)


class SynthesisBlock(nnx.Module):
  """One scale of the decoder: two modulated 3x3 convs and a to-RGB 1x1."""

  def __init__(self, in_channels: int, out_channels: int, code_dim: int, *, dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.conv1 = ModulatedConv(in_channels, out_channels, code_dim, dtype=dtype, rngs=rngs)
    self.conv2 = ModulatedConv(out_channels, out_channels, code_dim, dtype=dtype, rngs=rngs)
    # Zero-initialised, undemodulated (as StyleGAN2's tRGB): the RGB residual
    # starts at 0 and can stay small.
    self.to_rgb = ModulatedConv(out_channels, 3, code_dim, kernel_size=1, demodulate=False,
                                zero_init=True, dtype=dtype, rngs=rngs)

  def __call__(self, x, code):
    x = nnx.leaky_relu(self.conv1(x, code), LEAKY_SLOPE)
    x = nnx.leaky_relu(self.conv2(x, code), LEAKY_SLOPE)
    return x, self.to_rgb(x, code)


class SynthesisDecoder(nnx.Module):
  """Co-modulated synthesis of a frame from a splatted pyramid.

  ``__call__(splatted, code [B, code_dim]) -> frame [B, H, W, 3]``, where
  ``splatted[s]`` ``[B, h_s, w_s, in_channels[s]]`` comes from
  `splat_pyramid` (features and coverage) and ``splatted[0][..., :3]`` is the
  warped picture. From the coarsest scale up, each block sees the bilinearly
  upsampled activations of the block below concatenated with that scale's
  splatted features; the blocks' RGB outputs are upsampled and summed
  (StyleGAN2 skip generator), and the sum paints the warped picture where
  its coverage ``c`` (``splatted[0][..., -1]``) is short of
  ``fill_coverage``: ``frame = warped + gate(c) * rgb`` with
  ``gate(c) = clip(1 - c / fill_coverage, 0, 1)^fill_power``, so fully
  covered pixels stay the warped picture exactly. The defaults (1, 1) give
  the linear gate ``1 - c``. The warped colour is a normalised average,
  right wherever anything landed; a ``fill_coverage`` below 1 or a
  ``fill_power`` above 1 keeps the paint out of merely stretched pixels
  (coverage 0.5-0.99), where its texture costs more perceptually than it
  fixes (docs/DESIGN.md §2), and still paints holes in full. Every
  resampling keeps the encoder's grid (`regrid`). The frame is nominally in
  ``[-1, 1]`` and not clipped, so that losses keep gradients.
  """

  def __init__(self, *, in_channels, channels, code_dim: int, fill_coverage: float = 1.0,
               fill_power: float = 1.0, dtype=jnp.float32, rngs: nnx.Rngs):
    if not 0 < fill_coverage <= 1:
      raise ValueError(f"fill_coverage must lie in (0, 1], got {fill_coverage}")
    if len(in_channels) != len(channels):
      raise ValueError(f"one width per scale: in_channels {in_channels}, channels {channels}")
    blocks = []
    for s in range(len(channels)):
      below = channels[s + 1] if s + 1 < len(channels) else 0
      blocks.append(SynthesisBlock(in_channels[s] + below, channels[s], code_dim, dtype=dtype,
                                   rngs=rngs))
    self.blocks = nnx.List(blocks)
    self.fill_coverage = fill_coverage
    self.fill_power = fill_power
    self.dtype = dtype

  def gate(self, coverage):
    """How much of the paint passes at ``coverage`` in [0, 1]: 1 in a hole, 0 from
    ``fill_coverage`` on."""
    return jnp.clip(1.0 - coverage / self.fill_coverage, 0.0, 1.0)**self.fill_power

  def __call__(self, splatted, code):
    x = rgb = None
    for s in reversed(range(len(self.blocks))):
      features = splatted[s].astype(self.dtype)
      h, w = features.shape[1:3]
      if x is not None:
        features = jnp.concatenate([features, regrid(x, h, w, 0.5)], axis=-1)
      x, block_rgb = self.blocks[s](features, code)
      rgb = block_rgb if rgb is None else regrid(rgb, h, w, 0.5) + block_rgb
    warped = splatted[0][..., :3].astype(jnp.float32)
    coverage = splatted[0][..., -1:].astype(jnp.float32)
    return warped + self.gate(coverage) * rgb.astype(jnp.float32)


class Renderer(nnx.Module):
  """Feature encoder + pyramid splatting + co-modulated synthesis.

  ``encode(image [B, H, W, 3] in [-1, 1]) -> (pyramid, style)`` runs once per
  picture; ``render(pyramid, style, flow [N, H, W, 2] px, metric [N, H, W, 1])
  -> frame [N, H, W, 3]`` once per frame, where the pyramid and style may
  have batch B = N or 1 (one picture, many frames); ``__call__(image, flow,
  metric)`` does both.

  Hyper-parameters: ``channels`` and ``depths`` of the encoder stages (the
  paper: ResNet-34, (64, 128, 256, 512) and (3, 4, 6, 3)), one scale per
  stage; ``decoder_channels`` per scale (default: ``channels``); ``style_dim``
  of the co-modulation code; ``norm_groups`` (at most) of GroupNorm;
  ``fill_coverage`` and ``fill_power`` of the decoder's paint gate
  (`SynthesisDecoder`; 1 and 1, the defaults, are the gate of runs made
  before the options existed); ``dtype`` of the
  computation (parameters are float32).
  """

  def __init__(self, *, channels=RESNET34_CHANNELS, depths=RESNET34_DEPTHS, decoder_channels=None,
               style_dim: int = 512, norm_groups: int = 32, fill_coverage: float = 1.0,
               fill_power: float = 1.0, dtype=jnp.float32, rngs: nnx.Rngs):
    self.encoder = FeatureEncoder(channels=channels, depths=depths, style_dim=style_dim,
                                  norm_groups=norm_groups, dtype=dtype, rngs=rngs)
    # Splatted inputs: features + coverage, and the RGB at scale 0.
    in_channels = [c + 1 for c in channels]
    in_channels[0] += 3
    self.decoder = SynthesisDecoder(in_channels=tuple(in_channels),
                                    channels=tuple(decoder_channels or channels),
                                    code_dim=style_dim, fill_coverage=fill_coverage,
                                    fill_power=fill_power, dtype=dtype, rngs=rngs)

  def encode(self, image):
    return self.encoder(image)

  def render(self, pyramid, style, flow, metric):
    batch = flow.shape[0]
    pyramid = [jnp.broadcast_to(f, (batch,) + f.shape[1:]) for f in pyramid]
    style = jnp.broadcast_to(style, (batch,) + style.shape[1:])
    return self.decoder(splat_pyramid(pyramid, flow, metric), style)

  def __call__(self, image, flow, metric):
    pyramid, style = self.encode(image)
    return self.render(pyramid, style, flow, metric)
