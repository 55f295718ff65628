"""bfloat16 computation (``config.dtype = "bfloat16"``) against float32.

Every model keeps float32 parameters and returns float32; bfloat16 is the
dtype of its activations and matmuls, with float32 where numerics need it
(normalization statistics, attention softmax, softmax-splat weights, the
renderer's scale 0 that carries the picture, the VAE's latent moments,
losses, DDIM and the Fourier parts). Each test runs a float32 model and its
bfloat16 twin with the *same* parameters on the same random inputs and
bounds their difference. Errors are relative: ``||bf16 - f32|| / ||f32||``
over all elements (RMS). The tolerances are about 3 times the errors
measured on this CPU, written beside each; bfloat16 has 8 significant bits
(relative rounding 2^-9 = 0.2%), and a few layers of it compound to ~1%.

The first training step of every stage in both dtypes through `train.run`
is marked slow (eight runs, minutes on a 2-core CPU): ``pytest -m slow
tests/test_mixed_precision.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

sys.path.insert(0, str(Path(__file__).parent))
import train_configs  # noqa: E402

from spectral_jax import checkpoint, diffusion  # noqa: E402
from spectral_jax.inference.motion_model import MotionModel, SamplingOptions  # noqa: E402
from spectral_jax.models import build, functional, renderer, unet, vae  # noqa: E402
from spectral_jax.motion.normalize import NormalizationStats  # noqa: E402
from spectral_jax.render import frames  # noqa: E402
from spectral_jax.train import metrics, train  # noqa: E402

BF16, F32 = jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)
K = 4
VAE = dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1)
UNET = dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(1,),
            num_heads=2, num_freqs=K, image_encoder_channels=8, image_downsamples=1)
RENDERER = dict(channels=(8, 16, 16, 16), depths=(1, 1, 1, 1), style_dim=16, norm_groups=4)
HEIGHT, WIDTH = 16, 24  # Pictures; VAE and U-Net latents are 8 x 12.

_call = jax.jit(lambda model, *args: model(*args))


def _twins(make, perturb: float = 0.0):
  """``(float32 model, bfloat16 model)`` with the same parameters:
  ``make(dtype)`` built once in float32 (its parameters, plus Gaussian noise
  of std ``perturb`` so that zero-initialised branches contribute), and
  the bfloat16 graph, built abstractly, merged with that state."""
  model = make(F32)
  graphdef, state = nnx.split(model)
  if perturb:
    rng = np.random.default_rng(1)
    state = jax.tree.map(
        lambda x: x + perturb * rng.standard_normal(x.shape, np.float32), state)
    model = nnx.merge(graphdef, state)
  half = nnx.merge(nnx.graphdef(nnx.eval_shape(lambda: make(BF16))), state)
  return model, half


def _param_dtypes(model) -> set:
  return {x.dtype for x in jax.tree.leaves(nnx.state(model, nnx.Param))}


def _relative(half, full) -> float:
  """RMS relative difference ``||half - full|| / ||full||``."""
  half, full = np.asarray(half, np.float64), np.asarray(full, np.float64)
  return float(np.linalg.norm(half - full) / np.linalg.norm(full))


def _uniform(seed, shape, low=-1.0, high=1.0):
  return jnp.asarray(np.random.default_rng(seed).uniform(low, high, shape), jnp.float32)


def test_vae_bfloat16_agrees_with_float32():
  full, half = _twins(lambda dtype: vae.SpectralVAE(**VAE, dtype=dtype, rngs=nnx.Rngs(0)))
  assert _param_dtypes(full) == _param_dtypes(half) == {F32}
  # The latent moments come out of a float32 convolution (see `_Encoder`).
  assert half.encoder.conv_out.dtype == F32 and half.encoder.conv_in.dtype == BF16
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, HEIGHT, WIDTH, 4)), jnp.float32)
  z = jnp.asarray(rng.normal(size=(2, HEIGHT // 2, WIDTH // 2, 4)), jnp.float32)
  both = jax.jit(lambda model, x, z: (*model.encode(x), model.decode(z)))
  (mean, logvar, recon), (mean16, logvar16, recon16) = both(full, x, z), both(half, x, z)
  assert {a.dtype for a in (mean16, logvar16, recon16)} == {F32}
  # Measured: mean 0.010, log-variance 0.010, reconstruction 0.013.
  assert _relative(mean16, mean) < 0.03
  assert _relative(logvar16, logvar) < 0.03
  assert _relative(recon16, recon) < 0.03


@pytest.mark.parametrize("freq_attention", ["none", "attention"])
def test_unet_bfloat16_agrees_with_float32(freq_attention):
  full, half = _twins(lambda dtype: unet.MotionUNet(**UNET, freq_attention=freq_attention,
                                                    dtype=dtype, rngs=nnx.Rngs(0)), perturb=0.05)
  assert _param_dtypes(full) == _param_dtypes(half) == {F32}
  z_t = jnp.asarray(np.random.default_rng(0).normal(size=(2, K, 8, 12, 4)), jnp.float32)
  inputs = (z_t, jnp.array([10, 900]), _uniform(1, (2, HEIGHT, WIDTH, 3)),
            jnp.tile(jnp.arange(K), (2, 1)), jnp.array([True, False]))
  eps, eps16 = _call(full, *inputs), _call(half, *inputs)
  assert eps16.dtype == F32
  # Measured: 0.013 without, 0.015 with frequency attention; a twin that
  # computes in float32 after all agrees to 0.
  assert 0.002 < _relative(eps16, eps) < 0.04


def _flow(batch, height, width, amplitude=3.0):
  y, x = np.mgrid[:height, :width]
  t = np.arange(batch)[:, None, None]
  flow = np.stack([amplitude * np.sin(x / 7 + t), 0.7 * amplitude * np.cos(y / 5 + t)], -1)
  return flow.astype(np.float32)


def test_renderer_bfloat16_agrees_with_float32():
  full, half = _twins(lambda dtype: renderer.Renderer(**RENDERER, dtype=dtype,
                                                      rngs=nnx.Rngs(0)), perturb=0.05)
  assert _param_dtypes(full) == _param_dtypes(half) == {F32}
  picture = _uniform(0, (1, 32, 48, 3))
  pyramid, _ = jax.eval_shape(lambda model, x: model.encode(x), half, picture)
  # Scale 0 carries the picture: float32, so the warped picture is exact.
  assert pyramid[0].dtype == F32 and pyramid[1].dtype == BF16
  flow = _flow(3, 32, 48)
  flow[0] = 0.0
  metric = np.linalg.norm(flow, axis=-1, keepdims=True)
  out, out16 = _call(full, picture, flow, metric), _call(half, picture, flow, metric)
  assert out16.dtype == F32
  # No motion: the picture itself, bfloat16 or not (the paint is gated off).
  np.testing.assert_allclose(out16[0], picture[0], atol=1e-6)
  # Measured: 0.0005 (the paint's bfloat16 error, where coverage is short).
  assert _relative(out16, out) < 0.0015


def _motion_model(unet_model, vae_model) -> MotionModel:
  """A `MotionModel` around untrained networks: what sampling needs of a run."""
  config = ml_collections.ConfigDict({"data": {"num_freqs": K},
                                     "diffusion": {"prediction": "epsilon"}})
  stats = {"mean": jnp.asarray([0.5, -0.3, 0.2, 0.1]), "std": jnp.asarray([1.5, 0.8, 1.2, 1.0])}
  return MotionModel(unet=unet_model, vae=vae_model, latent_stats=stats,
                     normalization=NormalizationStats(np.full(K, 2.0, np.float32), 97.0, 0),
                     schedule=diffusion.make_schedule("scaled_linear"), config=config,
                     num_frames=16, fps=30.0)


def test_ddim_sampling_with_guidance_bfloat16_agrees_with_float32():
  """`MotionModel.sampler`, as `animate` samples: DDIM with classifier-free
  guidance (w = 1.75, which amplifies the networks' differences), then the
  VAE decoder. DDIM's arithmetic is float32 in both."""
  unets = _twins(lambda dtype: unet.MotionUNet(**UNET, freq_attention="attention", dtype=dtype,
                                               rngs=nnx.Rngs(0)), perturb=0.05)
  vaes = _twins(lambda dtype: vae.SpectralVAE(**VAE, dtype=dtype, rngs=nnx.Rngs(1)))
  options = SamplingOptions(num_steps=4, guidance_scale=1.75)
  picture = np.random.default_rng(0).integers(0, 256, (1, HEIGHT, WIDTH, 3), np.uint8)
  full, half = (_motion_model(u, v).sampler(options)(picture, jax.random.key(0))
                for u, v in zip(unets, vaes))
  assert full.shape == (1, K, HEIGHT, WIDTH, 4) and half.dtype == F32
  # Measured: 0.017 of the normalized spectral volume.
  assert _relative(half, full) < 0.05


def test_render_frames_bfloat16_agrees_with_float32():
  full, half = _twins(lambda dtype: renderer.Renderer(**RENDERER, dtype=dtype,
                                                      rngs=nnx.Rngs(0)), perturb=0.05)
  picture = np.random.default_rng(0).integers(0, 256, (32, 48, 3), np.uint8)
  motion = _flow(5, 32, 48)
  motion[0] = 0.0  # Frame 0: the picture.
  # Any [H, W, 1] importance will do here: the flow's mean length.
  metric = np.linalg.norm(motion, axis=-1).mean(axis=0)[..., None]
  video, video16 = (frames.render_frames(model, picture, motion, metric, batch_size=5,
                                         progress=False) for model in (full, half))
  np.testing.assert_array_equal(video16[0], picture)  # No motion: the picture, exactly.
  assert np.abs(video16[1:].astype(int) - picture).max() > 10  # Frames move.
  difference = np.abs(video16.astype(int) - video)
  # Measured: at most 1 level of 255, on 2.0% of the values.
  assert difference.max() <= 2 and np.mean(difference > 0) < 0.06


STAGES = ("vae", "ldm_pretrain", "ldm_freq_attn", "renderer")
BUILDERS = {"vae": build.build_vae, "ldm_pretrain": build.build_unet,
            "ldm_freq_attn": build.build_unet, "renderer": build.build_renderer}


def _matmul_operand_dtypes(jaxpr, counts=None) -> dict:
  """``{dtype name: count}`` of the left operands of every convolution and
  matmul in ``jaxpr``, nested jaxprs (jit, remat, custom gradients) included."""
  counts = {} if counts is None else counts
  for eqn in jaxpr.eqns:
    if eqn.primitive.name in ("conv_general_dilated", "dot_general"):
      name = str(eqn.invars[0].aval.dtype)
      counts[name] = counts.get(name, 0) + 1
    for value in eqn.params.values():
      for item in value if isinstance(value, (tuple, list)) else (value,):
        inner = getattr(item, "jaxpr", item)
        if hasattr(inner, "eqns"):
          _matmul_operand_dtypes(inner, counts)
  return counts


def _forward(stage: str, config):
  """``(f(model, *inputs), inputs)``: the stage's network applied as
  training applies it, on abstract inputs of the micro config's size."""
  height, width, k = config.data.height, config.data.width, config.data.num_freqs
  spec = jax.ShapeDtypeStruct
  if stage == "vae":
    return (lambda model, x: model.decode(model.encode(x)[0]),
            (spec((2, height, width, 4), F32),))
  if stage == "renderer":
    return (lambda model, *inputs: model(*inputs),
            (spec((1, height, width, 3), F32), spec((2, height, width, 2), F32),
             spec((2, height, width, 1), F32)))
  freqs = k if stage == "ldm_freq_attn" else 1
  return (lambda model, *inputs: model(*inputs),
          (spec((2, freqs, height // 4, width // 4, 4), F32), spec((2,), jnp.int32),
           spec((2, height, width, 3), F32), spec((2, freqs), jnp.int32),
           spec((2,), jnp.bool_)))


# The share of convolutions and matmuls in bfloat16; the rest are float32 on
# purpose (the VAE's latent moments; the renderer's scale 0, which carries
# the picture, and its softmax-splat weights, traced once per platform
# branch of the splat). Measured: VAE 45 of 46, U-Nets all, renderer 50 of
# 86.
BFLOAT16_SHARE = {"vae": 0.95, "ldm_pretrain": 1.0, "ldm_freq_attn": 1.0, "renderer": 0.55}


@pytest.mark.parametrize("stage", STAGES)
def test_networks_built_from_a_bfloat16_config_compute_in_bfloat16(stage):
  """What `models.build` makes of ``config.dtype``, traced (not compiled):
  the operands of the convolutions and matmuls are bfloat16 as the config
  asks, and all float32 under a float32 config."""
  shares = {}
  for dtype in ("float32", "bfloat16"):
    config = train_configs.load_config(stage)
    config.dtype = dtype
    graphdef, state = nnx.split(nnx.eval_shape(lambda: BUILDERS[stage](config, nnx.Rngs(0))))
    forward, inputs = _forward(stage, config)
    jaxpr = jax.make_jaxpr(lambda state, *x: forward(nnx.merge(graphdef, state), *x))(
        state, *inputs)
    counts = _matmul_operand_dtypes(jaxpr.jaxpr)
    shares[dtype] = counts.get("bfloat16", 0) / sum(counts.values())
  assert shares["float32"] == 0.0
  assert shares["bfloat16"] >= BFLOAT16_SHARE[stage], shares


def _stage_config(stage: str, dtype: str, runs: dict):
  """One step of the micro config of ``stage``, computing in ``dtype``."""
  config = train_configs.load_config(stage)
  config.dtype = dtype
  config.num_steps = 1
  config.eval_every = 0
  config.batch_size = 2
  if stage.startswith("ldm"):
    config.vae_from = str(runs["vae", dtype])
  return config


def _restore(workdir) -> dict:
  """The params and optimizer state a run saved, leaves as stored."""
  mngr = checkpoint.manager(workdir, read_only=True)
  return mngr.restore(mngr.latest_step(), args=ocp.args.Composite(
      params=ocp.args.StandardRestore(), opt_state=ocp.args.StandardRestore()))


@pytest.fixture(scope="module")
def training_runs(tmp_path_factory):
  """``{(stage, dtype): workdir}``: one step of every stage in float32 and in
  bfloat16 through `train.run`; an LDM stage's frozen VAE is the VAE run of
  its dtype (a loaded VAE computes in the dtype its run trained in)."""
  out = tmp_path_factory.mktemp("mixed_precision")
  runs = {}
  for dtype in ("float32", "bfloat16"):
    for stage in STAGES:
      runs[stage, dtype] = out / f"{stage}_{dtype}"
      train.run(_stage_config(stage, dtype, runs), runs[stage, dtype], progress=False)
  return runs


# Eight training runs, each mostly compilation: minutes on a 2-core CPU.
@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_bfloat16_training_step_agrees_with_float32(training_runs, stage):
  """The first step's loss in bfloat16 is finite and within 1% of float32's
  (measured: vae 0.06%, ldm_pretrain 0.3%, ldm_freq_attn 0.05%, renderer
  0.3%, L1 + VGG); parameters and optimizer state stay float32 and moved."""
  (full,), (half,) = (metrics.read_metrics(training_runs[stage, dtype])
                      for dtype in ("float32", "bfloat16"))
  assert np.isfinite(half["loss"]) and half["learning_rate"] > 0
  assert abs(half["loss"] - full["loss"]) < 0.01 * full["loss"]
  saved = _restore(training_runs[stage, "bfloat16"])
  leaves = jax.tree.leaves((saved["params"], saved["opt_state"]))
  assert {x.dtype for x in leaves if jnp.issubdtype(x.dtype, jnp.floating)} == {F32}
  config = _stage_config(stage, "bfloat16", training_runs)
  _, initial = functional.split_params(BUILDERS[stage](config, nnx.Rngs(config.seed)))
  initial = train_configs.flat_params(initial)
  # An Adam step moves a parameter by about the learning rate (>= 5e-4).
  moved = {name for name, value in train_configs.flat_params(saved["params"]).items()
           if np.abs(value - initial[name]).max() > 1e-5}
  assert moved
  if stage == "ldm_freq_attn":  # Only frequency attention trains in stage 2.
    assert all("freq_attn" in name for name in moved)
