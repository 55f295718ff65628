"""XLA:CPU's workarounds, in one place, each chosen by the platform a
program is compiled for.

That is the platform of the devices a program runs on, or, inside a traced
function, the one `jax.lax.platform_dependent` resolves at lowering; never
`jax.default_backend()`, which says "cpu" on a machine that compiles ahead
of time for a TPU (`spectral_jax.train.compile`) or exports for CUDA.

* The softmax splat (`render.splat`) scatters a program for a CPU in
  blocks of `CPU_SPLAT_BLOCK_PIXELS` source pixels, by
  `lax.platform_dependent`: a block's ``[4 * pixels, C]`` updates stay in
  cache, where one fresh ``[4 * B * H * W, C]`` buffer per call page-faults
  more than the scatter costs. Elsewhere one scatter runs in parallel.
* A loss-guided DDIM step (a backward pass through the VAE's decoder) runs
  about 3x slower inside a compiled loop on XLA:CPU, so there the sampler
  compiles one step and calls it once per step (`unroll_guided_ddim`).
"""

from __future__ import annotations

import jax

CPU_SPLAT_BLOCK_PIXELS = 4096


def platform_of(tree) -> str:
  """The platform ("cpu", "gpu", "tpu") of the devices holding the first
  array of ``tree``."""
  return next(iter(jax.tree.leaves(tree)[0].devices())).platform


def unroll_guided_ddim(platform: str) -> bool:
  """Whether loss-guided DDIM on ``platform`` runs one compiled step per
  call rather than a compiled loop of steps."""
  return platform == "cpu"
