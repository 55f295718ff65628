"""A trained motion diffusion model, ready to sample spectral volumes."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from spectral_jax import diffusion, platforms
from spectral_jax.diffusion import latents
from spectral_jax.inference.loop import loop_closure_loss
from spectral_jax.models import functional
from spectral_jax.motion.normalize import NormalizationStats

# DDIM steps run per compiled call of a progressive sampler: progress is
# shown between calls, and the scan stays long enough that dispatch is free.
MAX_STEPS_PER_CALL = 25


@dataclasses.dataclass(frozen=True)
class SamplingOptions:
  """How to sample (static: each distinct value compiles its own sampler).

  ``guidance_scale`` is classifier-free guidance w; ``loop_frames`` N > 0
  turns on loop self-guidance with weight ``loop_weight`` (u),
  ``recurrence_steps`` self-recurrence iterations per DDIM step and its
  gradient through the network or the clean latent alone
  (``loop_gradient``, `diffusion.ddim_steps`' ``guidance_gradient``).
  """
  num_steps: int
  eta: float = 0.0
  guidance_scale: float = 0.0
  loop_frames: int = 0
  loop_weight: float = 0.0
  recurrence_steps: int = 1
  loop_gradient: str = "network"


@dataclasses.dataclass(frozen=True)
class MotionModel:
  """A trained LDM run: networks, schedule, statistics, and the T and fps of
  the clips it learned (bin k is ``k * fps / T`` Hz)."""
  unet: object  # `MotionUNet`
  vae: object   # `SpectralVAE`, the checkpoint the run pins.
  latent_stats: dict
  normalization: NormalizationStats
  schedule: diffusion.Schedule
  config: object
  num_frames: int
  fps: float

  @property
  def num_freqs(self) -> int:
    return self.config.data.num_freqs

  def options(self, *, loop_frames: int = 0, **overrides) -> SamplingOptions:
    """The run's ``sampling`` config with ``overrides`` (None: keep); loop
    self-guidance only for ``loop_frames`` N that needs it: a texture over a
    multiple of T frames is periodic already."""
    values = {**self.config.sampling.to_dict(),
              **{name: value for name, value in overrides.items() if value is not None}}
    if loop_frames % self.num_frames == 0:
      loop_frames = 0
      values.update(loop_weight=0.0, recurrence_steps=1, loop_gradient="network")
    return SamplingOptions(loop_frames=loop_frames, **values)

  def _ddim_options(self, options: SamplingOptions) -> dict:
    """Keyword options of `diffusion.ddim_steps` for ``options``."""
    loss = None
    if options.loop_frames:
      loss = functools.partial(
          loop_closure_loss, scales=np.asarray(self.normalization.scales),
          power=self.normalization.power, num_frames=self.num_frames,
          loop_frames=options.loop_frames)
    return dict(eta=options.eta, guidance_scale=options.guidance_scale, guidance_loss=loss,
                guidance_weight=options.loop_weight, recurrence_steps=options.recurrence_steps,
                guidance_gradient=options.loop_gradient,
                prediction=diffusion.prediction_of(self.config.diffusion))

  def sample(self, image, rng, options: SamplingOptions) -> jax.Array:
    """Normalized spectral volumes ``[B, K, H, W, 4]`` for pictures ``image``
    ``[B, H, W, 3]`` in [-1, 1]. Not jitted: jit the caller."""
    return latents.sample_spectral(
        self.unet, self.vae, self.latent_stats, self.schedule, image, rng,
        num_freqs=self.num_freqs, num_steps=options.num_steps, **self._ddim_options(options))

  def sampler(self, options: SamplingOptions):
    """``(image [B, H, W, 3] uint8, rng, progress=False) -> [B, K, H, W, 4]``
    normalized spectral volumes, the same as `sample`.

    DDIM runs in equal slices of at most `MAX_STEPS_PER_CALL` steps, each one
    call of the same compiled scan (a progress bar advances between them);
    with loop self-guidance on a CPU, one unrolled step per call
    (`platforms.unroll_guided_ddim`).
    The networks' parameters are arguments of the compiled functions, not
    constants baked into them, so JAX's persistent cache can reuse them in
    another process.
    """
    unet_graph, unet_params = functional.split_params(self.unet)
    vae_graph, vae_params = functional.split_params(self.vae)
    num_steps = options.num_steps
    ddim = self._ddim_options(options)
    # A loss-guided step on a CPU: one unrolled step per call (`platforms`).
    unrolled = (ddim["guidance_loss"] is not None
                and platforms.unroll_guided_ddim(platforms.platform_of(unet_params)))
    per_call = 1 if unrolled else max(
        d for d in range(1, min(num_steps, MAX_STEPS_PER_CALL) + 1) if num_steps % d == 0)
    factor = self.vae.downsample_factor
    channels = self.latent_stats["mean"].shape[-1]

    @functools.partial(jax.jit, static_argnums=0)
    def start(shape, rng):
      return diffusion.ddim_start(self.schedule, rng, shape, num_steps)

    @jax.jit
    def advance(unet_params, vae_params, latent_stats, image, z, plan):
      unet = functional.merge(unet_graph, unet_params)
      vae = functional.merge(vae_graph, vae_params)
      eps_fn = latents.conditional_eps(unet, image, self.num_freqs)
      loss = ddim["guidance_loss"]
      if loss is not None:
        loss = latents.on_latents(loss, vae, latent_stats)
      return diffusion.ddim_steps(eps_fn, self.schedule, z, plan,
                                  **{**ddim, "guidance_loss": loss}, unroll=unrolled)

    @jax.jit
    def finish(vae_params, latent_stats, z):
      return latents.decode(functional.merge(vae_graph, vae_params), latent_stats, z)

    def run(image, rng, progress: bool = False):
      unit = latents.image_to_unit(jnp.asarray(image))
      batch, height, width = unit.shape[:3]
      shape = (batch, self.num_freqs, height // factor, width // factor, channels)
      z, plan = start(shape, rng)
      with tqdm(total=num_steps, unit="step", desc="sampling motion",
                disable=not progress) as bar:
        for first in range(0, num_steps, per_call):
          part = jax.tree.map(lambda x, first=first: x[first:first + per_call], plan)
          z = advance(unet_params, vae_params, self.latent_stats, unit, z, part)
          z.block_until_ready()  # The bar shows steps done, not dispatched.
          bar.update(per_call)
        return finish(vae_params, self.latent_stats, z)

    return run
