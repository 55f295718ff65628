"""Motion VAE and diffusion U-Net: shapes, conditioning, stage 1 → 2 (frequency
attention chosen by config, what trains in stage 2, old configs), training."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from spectral_jax.models import build, freq_attention, functional, layers, unet, vae
from spectral_jax.train import optimizer

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
UNET = dict(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(1,),
            num_heads=2, num_freqs=4, image_encoder_channels=8, min_channels_per_group=4)
B, K, LATENT_HW, IMAGE_HW = 2, 4, (8, 12), (32, 48)


def _pure(model, fn=lambda model, *args: model(*args)):
  """``(jitted f(params, *args), params)``: the model as training uses it."""
  graphdef, params = nnx.split(model, nnx.Param)
  return jax.jit(lambda p, *args: fn(nnx.merge(graphdef, p), *args)), params


def _shape(model, *args, fn=lambda model, *args: model(*args)):
  """Output shapes and dtypes, traced without compiling or running."""
  apply, params = _pure(model, fn)
  return jax.eval_shape(apply, params, *args)


@pytest.fixture(scope="module")
def stage1():
  """Tiny stage-1 U-Net as ``(apply, params)``, compiled once for the module."""
  return _pure(unet.MotionUNet(**UNET, rngs=nnx.Rngs(0)))


def _unet_inputs(num_freqs, seed=0):
  keys = jax.random.split(jax.random.key(seed), 3)
  z_t = jax.random.normal(keys[0], (B, num_freqs) + LATENT_HW + (4,))
  t = jnp.array([3, 700])
  image = jax.random.uniform(keys[1], (B,) + IMAGE_HW + (3,), minval=-1, maxval=1)
  freq_index = jnp.tile(jnp.arange(num_freqs, dtype=jnp.int32), (B, 1))
  if num_freqs == 1:
    freq_index = jnp.array([[2], [0]], jnp.int32)
  return z_t, t, image, freq_index, jnp.array([True, True])


def _perturbed(params, seed, scale=0.1):
  """Params plus noise, so that zero-initialised branches do something (in
  NumPy: jitting ~100 random draws would take longer than the test)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: np.asarray(x) + scale * rng.standard_normal(x.shape, np.float32),
                      params)


def _abstract(cls, **kwargs):
  """A module with shapes but no values: building it runs no initialiser."""
  return nnx.eval_shape(lambda: cls(**kwargs, rngs=nnx.Rngs(0)))


def _paths(params):
  return {path for path, _ in nnx.to_flat_state(params)}


def test_timestep_embedding_is_cos_then_sin():
  emb = layers.timestep_embedding(jnp.array([0.0, 5.0]), 7)
  assert emb.shape == (2, 7)
  np.testing.assert_array_equal(emb[0], [1, 1, 1, 0, 0, 0, 0])
  np.testing.assert_allclose(emb[1, [0, 3]], [np.cos(5.0), np.sin(5.0)], rtol=1e-6)


@pytest.mark.parametrize("channels,min_channels,groups", [
    (16, 1, 16), (48, 1, 16), (128, 1, 32), (16, 4, 4), (32, 4, 8), (48, 4, 8), (64, 4, 16),
    (128, 4, 32), (1024, 4, 32), (6, 4, 1)])
def test_group_norm_groups_divide_channels(channels, min_channels, groups):
  norm = layers.group_norm(channels, min_channels_per_group=min_channels, rngs=nnx.Rngs(0))
  assert norm.num_groups == groups


def test_a_bias_before_a_group_norm_survives_only_in_groups_of_several_channels():
  """Why `MotionUNet` takes ``min_channels_per_group``: a per-channel
  constant (an embedding) added before GroupNorm is erased by one-channel
  groups and kept by wider ones."""
  x = jax.random.normal(jax.random.key(0), (1, 4, 4, 16))
  bias = jnp.arange(16.0)
  changes = {}
  for min_channels in (1, 4):
    norm = layers.group_norm(16, min_channels_per_group=min_channels, rngs=nnx.Rngs(0))
    changes[min_channels] = np.abs(norm(x + bias) - norm(x)).max()
  assert changes[1] < 1e-3 and changes[4] > 0.1, changes


def test_vae_shapes_and_4x_downsampling():
  model = _abstract(vae.SpectralVAE, base_channels=16, channel_mults=(1, 2, 4),
                    num_res_blocks=1)
  x = jnp.zeros((2, 32, 48, 4))
  mean, logvar = _shape(model, x, fn=lambda model, x: model.encode(x))
  assert mean.shape == logvar.shape == (2, 8, 12, 4)
  decoded = _shape(model, jnp.zeros(mean.shape), fn=lambda model, z: model.decode(z))
  assert decoded.shape == (2, 32, 48, 4)
  recon, *moments = _shape(model, x, jax.random.key(1))
  assert recon.shape == x.shape and recon.dtype == jnp.float32
  assert moments == [mean, logvar]
  with pytest.raises(ValueError, match="divisible"):
    _shape(model, x[:, :30], fn=lambda model, x: model.encode(x))


def test_vae_loss_and_gradient_are_finite():
  model = vae.SpectralVAE(base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                          rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)

  @jax.jit
  def loss_and_grad(params, x, rng):
    return jax.value_and_grad(lambda p: vae.vae_loss(nnx.merge(graphdef, p), x, rng),
                              has_aux=True)(params)

  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 4))
  (loss, metrics), grads = loss_and_grad(params, x, jax.random.key(1))
  assert set(metrics) >= {"l1", "gradient", "kl", "loss"}
  assert all(m.shape == () and np.isfinite(m) for m in metrics.values())
  weighted = metrics["l1"] + 0.2 * metrics["gradient"] + 1e-6 * metrics["kl"]
  np.testing.assert_allclose(loss, weighted, rtol=1e-6)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_gradient_loss_sees_only_gradients():
  x = jax.random.normal(jax.random.key(0), (1, 8, 8, 4))
  assert vae.gradient_loss(x + 3.0, x) < 1e-6
  assert vae.gradient_loss(x * 2.0, x) > 0.1


def _vae_l1_before_and_after_training(data, steps: int = 150, **model):
  """Mean L1 reconstruction error (from the posterior mean) of ``data``
  before and after ``steps`` Adam steps on batches of 8 of it."""
  model = vae.SpectralVAE(base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                          rngs=nnx.Rngs(0), **model)
  graphdef, params = nnx.split(model, nnx.Param)
  tx = optax.adam(3e-3)

  @jax.jit
  def step(params, opt_state, key):
    batch_key, sample_key = jax.random.split(key)
    batch = data[jax.random.choice(batch_key, len(data), (8,), replace=False)]
    grads, _ = jax.grad(lambda p: vae.vae_loss(nnx.merge(graphdef, p), batch, sample_key),
                        has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  @jax.jit
  def l1_error(params):
    model = nnx.merge(graphdef, params)
    return jnp.abs(model.decode(model.encode(data)[0]) - data).mean()

  before = l1_error(params)
  opt_state = tx.init(params)
  for key in jax.random.split(jax.random.key(1), steps):
    params, opt_state = step(params, opt_state, key)
  return before, l1_error(params)


def _smooth_maps(count: int = 64):
  """Smooth 4-channel maps ``[count, 16, 16, 4]``: low-pass noise, like
  normalized spectral maps."""
  coarse = jax.random.normal(jax.random.key(0), (count, 4, 4, 4))
  return jax.image.resize(coarse, (count, 16, 16, 4), "bicubic")


@pytest.mark.slow
def test_vae_learns_to_reconstruct_smooth_maps():
  before, after = _vae_l1_before_and_after_training(_smooth_maps())
  assert after < 0.4 * before, (before, after)


def test_shortcut_vae_starts_as_the_pooling_autoencoder():
  model = vae.SpectralVAE(base_channels=16, channel_mults=(1, 2, 4), num_res_blocks=1,
                          shortcut=True, rngs=nnx.Rngs(0))
  x = np.asarray(jax.random.normal(jax.random.key(0), (2, 16, 24, 4)), np.float64)
  pooled = x.reshape(2, 4, 4, 6, 4, 4).mean(axis=(2, 4))
  mean, logvar = nnx.jit(lambda model, x: model.encode(x))(model, jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(mean, pooled, atol=1e-6)
  assert np.all(np.exp(0.5 * np.asarray(logvar)) < 0.01)  # Noise far below the signal.
  decoded = nnx.jit(lambda model, z: model.decode(z))(model, mean)
  np.testing.assert_allclose(decoded, np.repeat(np.repeat(pooled, 4, 1), 4, 2), atol=1e-6)
  with pytest.raises(ValueError, match="latent_channels"):
    vae.SpectralVAE(latent_channels=8, shortcut=True, rngs=nnx.Rngs(0))


@pytest.mark.slow
def test_shortcut_vae_learns_maps_that_are_mostly_zero():
  """Plants in a still scene: each map is 0 outside a random quarter of it.
  Without the shortcut, L1 drives every output to 0 and the error stays at
  the maps' mean magnitude (measured after these 150 steps: 99% of it
  without, 27% with)."""
  data = _smooth_maps()
  corner = jax.random.randint(jax.random.key(2), (len(data), 2), 0, 9)
  rows, cols = jnp.arange(16)[None, :, None], jnp.arange(16)[None, None, :]
  inside = ((rows >= corner[:, :1, None]) & (rows < corner[:, :1, None] + 8)
            & (cols >= corner[:, 1:, None]) & (cols < corner[:, 1:, None] + 8))
  sparse = data * inside[..., None]
  _, after = _vae_l1_before_and_after_training(sparse, shortcut=True)
  assert after < 0.5 * jnp.abs(sparse).mean(), (after, jnp.abs(sparse).mean())


def test_image_encoder_reaches_latent_resolution():
  encoder = _abstract(unet.ImageEncoder, out_channels=16, base_channels=8, num_downsamples=2)
  assert _shape(encoder, jnp.zeros((2,) + IMAGE_HW + (3,))).shape == (2,) + LATENT_HW + (16,)


@pytest.mark.parametrize("attention", ["none", "attention"])
@pytest.mark.parametrize("num_freqs", [1, K])
def test_unet_output_shape(attention, num_freqs):
  model = _abstract(unet.MotionUNet, **UNET, freq_attention=attention)
  eps = _shape(model, *_unet_inputs(num_freqs))
  assert eps.shape == (B, num_freqs) + LATENT_HW + (4,) and eps.dtype == jnp.float32


def test_unet_computes_in_bfloat16_with_float32_params():
  model = unet.MotionUNet(**UNET, freq_attention="attention", dtype=jnp.bfloat16,
                          rngs=nnx.Rngs(0))
  apply, params = _pure(model)
  assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
  eps = apply(params, *_unet_inputs(1))
  assert eps.dtype == jnp.float32 and np.isfinite(eps).all()


@pytest.mark.parametrize("attention", ["none", "attention"])
def test_the_frequency_index_reaches_the_prediction(attention):
  """The same noisy latent at every frequency: each bin's prediction is its
  own, through the frequency embedding (and, in stage 2, frequency
  attention's index embeddings). With rows 0 and 1 of every embedding table
  swapped and bins 0 and 1's indices swapped, the predictions are the same:
  the tables are looked up by the index."""
  model = unet.MotionUNet(**UNET, freq_attention=attention, rngs=nnx.Rngs(0))
  apply, params = _pure(model)
  params = _perturbed(params, seed=4)
  z_t, t, image, freq_index, cond = _unet_inputs(K)
  z_t = jnp.broadcast_to(z_t[:, :1], z_t.shape)
  eps = np.asarray(apply(params, z_t, t, image, freq_index, cond))
  for a in range(K):
    for b in range(a + 1, K):
      assert np.abs(eps[:, a] - eps[:, b]).max() > 1e-3, (a, b)
  same_bin = np.asarray(apply(params, z_t, t, image, jnp.zeros_like(freq_index), cond))
  np.testing.assert_allclose(same_bin, np.broadcast_to(same_bin[:, :1], eps.shape), atol=1e-5)

  flat = dict(nnx.to_flat_state(params))
  tables = [path for path in flat
            if path[-1] == "embedding" and ("freq_embed" in path or "pos_embed" in path)]
  # One for the U-Net, and one per frequency attention (8 in stage 2).
  assert len(tables) == (9 if attention == "attention" else 1), tables
  for path in tables:
    flat[path] = flat[path].replace(np.asarray(flat[path].get_value())[[1, 0, 2, 3]])
  swapped = apply(nnx.from_flat_state(flat), z_t, t, image, freq_index[:, [1, 0, 2, 3]], cond)
  np.testing.assert_allclose(swapped, eps, atol=1e-5)


def test_dropped_condition_ignores_the_image(stage1):
  apply, params = stage1
  z_t, t, image, freq_index, _ = _unet_inputs(K)
  other_image = -image
  dropped = jnp.array([False, False])
  np.testing.assert_array_equal(apply(params, z_t, t, image, freq_index, dropped),
                                apply(params, z_t, t, other_image, freq_index, dropped))
  kept = jnp.array([True, False])
  with_image = apply(params, z_t, t, image, freq_index, kept)
  assert np.isfinite(with_image).all()
  other = apply(params, z_t, t, other_image, freq_index, kept)
  assert np.abs(with_image[0] - other[0]).max() > 1e-4
  # The mask acts per example: the dropped one is unchanged.
  np.testing.assert_allclose(with_image[1], apply(params, z_t, t, image, freq_index, dropped)[1],
                             atol=1e-6)


# Where `MotionUNet` puts its frequency attention (one per unit: 2 down,
# 2 middle, 4 up, under ``freq_attn``) and the parameters of the current
# variant: the paths of every stage-2 run and export saved so far.
FREQ_ATTN_UNITS = [("down", 0), ("down", 2), ("mid", 0), ("mid", 1), ("up", 0), ("up", 1),
                   ("up", 3), ("up", 4)]
ATTENTION_PARAMS = [("norm", "scale"), ("norm", "bias"), ("pos_embed", "embedding"),
                    ("attn", "qkv", "kernel"), ("attn", "qkv", "bias"), ("attn", "out", "kernel"),
                    ("attn", "out", "bias")]


def test_stage2_tree_is_stage1_plus_freq_attn():
  """Stage 2's parameters are stage 1's plus its frequency-attention
  layers' (`freq_attention.param_paths`), at the paths saved runs have;
  ``freq_attention="none"`` builds no such layer."""
  model1 = _abstract(unet.MotionUNet, **UNET, freq_attention="none")
  model2 = _abstract(unet.MotionUNet, **UNET, freq_attention="attention")
  paths1, paths2 = _paths(nnx.state(model1, nnx.Param)), _paths(nnx.state(model2, nnx.Param))
  assert not freq_attention.param_paths(model1)
  assert not any("freq_attn" in path for path in paths1)
  own = freq_attention.param_paths(model2)
  assert paths1 <= paths2 and paths2 - paths1 == own
  assert own == {unit + ("freq_attn",) + param for unit in FREQ_ATTN_UNITS
                 for param in ATTENTION_PARAMS}
  other = nnx.state(_abstract(unet.MotionUNet, **{**UNET, "num_res_blocks": 2}), nnx.Param)
  with pytest.raises(ValueError, match="differ"):
    unet.with_stage1_params(model2, other)
  with pytest.raises(ValueError, match="unknown frequency attention 'attn'"):
    _abstract(unet.MotionUNet, **UNET, freq_attention="attn")


def test_stage2_with_stage1_params_reproduces_stage1_exactly(stage1):
  apply1, params1 = stage1
  params1 = _perturbed(params1, seed=2)
  model2 = unet.MotionUNet(**UNET, freq_attention="attention", rngs=nnx.Rngs(1))
  apply2, _ = _pure(model2)
  params2 = unet.with_stage1_params(model2, params1)
  inputs = _unet_inputs(K)
  eps1 = apply1(params1, *inputs)
  np.testing.assert_allclose(apply2(params2, *inputs), eps1, rtol=0, atol=1e-6)

  # Frequencies are independent in stage 1 and interact once stage 2 trains.
  z_t, *rest = inputs
  z_other = z_t.at[:, 0].add(1.0)
  np.testing.assert_allclose(apply1(params1, z_other, *rest)[:, 1:], eps1[:, 1:], atol=1e-6)
  nnx.update(model2, _perturbed(params2, seed=3))
  change = apply2(nnx.state(model2, nnx.Param), z_other, *rest)[:, 1:] - (
      apply2(nnx.state(model2, nnx.Param), z_t, *rest)[:, 1:])
  assert np.abs(change).max() > 1e-4

  # A trained stage 2 on stage 1's backbone, its frequency attention
  # skipped, is stage 1 again to the bit (what stage 2's evaluation compares
  # against), whatever the layers' parameters.
  trained = unet.with_stage1_params(model2, params1)
  assert np.abs(apply2(trained, *inputs) - eps1).max() > 1e-4
  skipped, _ = _pure(model2, lambda model, *args: model(*args, use_freq_attention=False))
  np.testing.assert_array_equal(skipped(trained, *inputs), eps1)


class _Gain(nnx.Module):
  """A frequency-attention variant for the tests: ``x * (1 + gain)`` per
  channel, the identity at initialisation."""

  def __init__(self, channels: int, num_heads: int, num_freqs: int, *, dtype, attention_impl,
               rngs: nnx.Rngs):
    del num_heads, num_freqs, dtype, attention_impl, rngs
    self.gain = nnx.Param(jnp.zeros((channels,)))

  def __call__(self, x, freq_index):
    del freq_index
    return x * (1 + self.gain[...])


def _ldm_config(stage: str):
  """The `tiny` config of an LDM stage, K = `K`."""
  from spectral_jax.config_base import load_config_file
  config = load_config_file(CONFIGS / f"{stage}.py", "tiny")
  config.data.num_freqs = K
  return config


def _flat_names(tree) -> dict:
  """``{"a/b/kernel": leaf}`` of a pytree."""
  return {optimizer.path_name(path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_a_registered_variant_is_built_and_trained_by_config(monkeypatch):
  """A variant added to `freq_attention.VARIANTS` and named by
  ``model.freq_attention`` is what the U-Net builds after every unit, and
  stage 2's ``trainable`` selects its parameters, with no pattern to edit."""
  monkeypatch.setitem(freq_attention.VARIANTS, "gain", _Gain)
  config = _ldm_config("ldm_freq_attn")
  config.model.freq_attention = "gain"
  model = nnx.eval_shape(lambda: build.build_unet(config, nnx.Rngs(0)))
  built = {path[:-1]: type(node) for path, node in nnx.iter_graph(model)
           if path and path[-1] == "freq_attn"}
  assert built == {unit: _Gain for unit in FREQ_ATTN_UNITS}
  graphdef, params = functional.split_params(model)
  labels = _flat_names(optimizer.trainable_labels(params, config.trainable, graphdef))
  assert {name for name, label in labels.items() if label == optimizer.TRAINABLE} == {
      f"{unit}/{index}/freq_attn/gain" for unit, index in FREQ_ATTN_UNITS}


def test_stage2_optimizer_trains_exactly_the_frequency_attention():
  """Stage 2's optimizer (its config's ``optimizer`` and ``trainable``) keeps
  state for the frequency-attention parameters alone, and one step with a
  non-zero learning rate and every gradient 1 moves each of them and
  leaves every other parameter bit for bit."""
  config = _ldm_config("ldm_freq_attn")
  config.optimizer.warmup_steps = 0  # A warm-up starts at learning rate 0.
  model = build.build_unet(config, nnx.Rngs(0))
  graphdef, params = functional.split_params(model)
  own = {"/".join(map(str, path)) for path in freq_attention.param_paths(model)}
  assert own
  tx = optimizer.make_optimizer(config.optimizer, params, config.trainable, graphdef)
  state = tx.init(params)
  # Adam's moments, by the parameter they belong to.
  moments = {name.split("/mu/", 1)[1] for name in _flat_names(state) if "/mu/" in name}
  assert moments == own
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
  after = _flat_names(optax.apply_updates(params, updates))
  before = _flat_names(params)
  moved = {name for name in before if not np.array_equal(before[name], after[name])}
  assert moved == own
  with pytest.raises(ValueError, match="graphdef"):
    optimizer.make_optimizer(config.optimizer, params, config.trainable)


@pytest.mark.parametrize("stage,attention,per_example",
                         [("ldm_pretrain", "none", 1), ("ldm_freq_attn", "attention", 0)])
def test_a_config_saved_before_the_fields_builds_the_network_it_trained(stage, attention,
                                                                        per_example):
  """A stored config from before ``model.freq_attention`` and
  ``data.freqs_per_example`` has only ``stage``: it gets what the stage
  meant then (and is not changed), and builds the very network the
  stage's config with the fields builds, parameter paths included."""
  config = _ldm_config(stage)
  assert (config.model.freq_attention, config.data.freqs_per_example) == (attention,
                                                                         per_example)
  old = ml_collections.ConfigDict(config.to_dict())
  del old.model["freq_attention"], old.data["freqs_per_example"]
  completed = build.motion_config(old)
  assert (completed.model.freq_attention, completed.data.freqs_per_example) == (attention,
                                                                               per_example)
  assert "freq_attention" not in old.model and build.motion_config(config) is config
  built = {name: nnx.eval_shape(lambda c=c: build.build_unet(c, nnx.Rngs(0)))
           for name, c in (("new", config), ("old", old))}
  assert nnx.graphdef(built["old"]) == nnx.graphdef(built["new"])
  assert _paths(nnx.state(built["old"], nnx.Param)) == _paths(nnx.state(built["new"], nnx.Param))
  assert bool(freq_attention.param_paths(built["old"])) == (attention != "none")


def test_the_config_not_the_stage_decides_the_architecture():
  """A stage-2 config that asks for no frequency attention gets none."""
  config = _ldm_config("ldm_freq_attn")
  config.model.freq_attention = "none"
  model = nnx.eval_shape(lambda: build.build_unet(config, nnx.Rngs(0)))
  assert not freq_attention.param_paths(model)


def test_vae_gradient_on_a_still_map_stays_small():
  """A map that is 0 everywhere (a still scene) makes every activation
  constant: with GroupNorm's usual epsilon 1e-6 each norm multiplied the
  gradient by 1000, its norm overflowed float32, and clipping zeroed the
  whole step. `norm_epsilon` keeps it as small as a moving map's."""
  model = vae.SpectralVAE(base_channels=16, channel_mults=(1, 2, 4), num_res_blocks=1,
                          rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)

  @jax.jit
  def gradient_norm(x):
    grads = jax.grad(lambda p: vae.vae_loss(nnx.merge(graphdef, p), x, jax.random.key(1))[0])(
        params)
    return optax.tree.norm(grads)

  moving = jax.random.normal(jax.random.key(0), (2, 16, 16, 4))
  still = jnp.zeros_like(moving)
  assert np.isfinite(gradient_norm(still))
  assert gradient_norm(still) < 10 * gradient_norm(moving)


def _attention_float64(layer: layers.SelfAttention, tokens: np.ndarray) -> np.ndarray:
  """`layers.SelfAttention` in NumPy float64: per head, softmax(q kᵀ / √d) v."""
  def dense(module, x):
    return x @ np.asarray(module.kernel[...], np.float64) + np.asarray(module.bias[...],
                                                                        np.float64)
  n, length, channels = tokens.shape
  heads = layer.num_heads
  qkv = dense(layer.qkv, tokens.astype(np.float64)).reshape(n, length, 3, heads, -1)
  q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # [N, heads, L, d]
  logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
  weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
  weights /= weights.sum(axis=-1, keepdims=True)
  attended = (weights @ v).transpose(0, 2, 1, 3).reshape(n, length, channels)
  return dense(layer.out, attended)


@pytest.mark.parametrize("implementation", [
    "xla", pytest.param("cudnn", marks=pytest.mark.skipif(
        jax.default_backend() != "gpu", reason="cuDNN attention needs an NVIDIA GPU"))])
def test_self_attention_is_multi_head_softmax_attention(implementation):
  """Every `model.attention_impl` computes the same attention as a float64
  loop over heads (cuDNN's runs in bfloat16: its tolerance is bfloat16's)."""
  dtype = jnp.float32 if implementation == "xla" else jnp.bfloat16
  layer = layers.SelfAttention(32, 4, dtype=dtype, implementation=implementation,
                               rngs=nnx.Rngs(0))
  tokens = np.random.default_rng(0).normal(size=(3, 10, 32)).astype(np.float32)
  with jax.default_matmul_precision("highest"):
    got = np.asarray(layer(jnp.asarray(tokens)), np.float64)
  tolerance = 1e-5 if dtype == jnp.float32 else 5e-2
  np.testing.assert_allclose(got, _attention_float64(layer, tokens), rtol=tolerance,
                             atol=tolerance)


def test_an_unknown_attention_implementation_is_refused():
  with pytest.raises(ValueError, match="unknown attention implementation 'flash'; one of xla"):
    layers.SelfAttention(32, 4, implementation="flash", rngs=nnx.Rngs(0))


@pytest.mark.parametrize("stage", ["vae", "ldm_freq_attn"])
def test_the_config_chooses_the_attention_implementation(stage):
  """``model.attention_impl`` reaches every attention layer of the network
  (spatial and frequency attention)."""
  from spectral_jax.config_base import load_config_file
  config = load_config_file(Path(__file__).parent.parent / "configs" / f"{stage}.py", "tiny",
                            {"model.attention_impl": "cudnn"})
  model = nnx.eval_shape(lambda: (build.build_vae if stage == "vae" else build.build_unet)(
      config, nnx.Rngs(0)))
  found = [node.implementation for _, node in nnx.iter_graph(model)
           if isinstance(node, layers.SelfAttention)]
  assert found and set(found) == {"cudnn"}


def test_a_rematerialised_unit_has_the_same_gradients():
  """One U-Net unit (residual block, spatial and frequency attention, all
  with non-zero weights) run through `layers.rematerialised`: "dots" and
  "full" give the gradients of "none" to float32 rounding."""
  unit = unet._Unit(8, 8, 16, attention=True, num_heads=2, freq_attention="attention",
                    num_freqs=3, min_channels_per_group=4, attention_impl="xla",
                    dtype=jnp.float32, rngs=nnx.Rngs(0))
  graphdef, params = functional.split_params(unit)
  params = jax.tree.map(lambda p, k: p + 0.1 * jax.random.normal(k, p.shape), params,
                        jax.tree.unflatten(jax.tree.structure(params), list(
                            jax.random.split(jax.random.key(1), len(jax.tree.leaves(params))))))
  x = jax.random.normal(jax.random.key(2), (6, 4, 4, 8))
  emb = jax.random.normal(jax.random.key(3), (6, 16))
  freq = jnp.tile(jnp.arange(3), (2, 1))
  grads = {}
  for remat in layers.REMAT_POLICIES:
    call = layers.rematerialised(unet._Unit.__call__, remat, static_argnums=(4,))
    loss = lambda p, x: jnp.square(call(functional.merge(graphdef, p), x, emb, freq, True)).sum()
    with jax.default_matmul_precision("highest"):
      grads[remat] = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
  # Sums that cancel to near 0 differ by rounding of the largest terms.
  for remat in ("dots", "full"):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(
        a, b, rtol=1e-5, atol=1e-5 * float(jnp.abs(b).max())), grads[remat], grads["none"])


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["vae", "ldm_freq_attn"])
def test_rematerialisation_keeps_the_gradients(stage):
  """``model.remat`` "dots" and "full" through a whole network: the loss's
  gradients are those of "none" to float32 rounding. (What it saves shows
  on a TPU: `test_compile_tpu.py`.)"""
  sys.path.insert(0, str(Path(__file__).parent))
  import train_configs
  grads = {}
  for remat in ("none", "dots", "full"):
    config = train_configs.load_config(stage)
    config.model.remat = remat
    if stage == "vae":
      model = build.build_vae(config, nnx.Rngs(0))
      x = jax.random.normal(jax.random.key(1), (2, 16, 16, 4))
      loss = lambda m: vae.vae_loss(m, x, jax.random.key(2))[0]
    else:
      model = build.build_unet(config, nnx.Rngs(0))
      # Zero-initialised layers (frequency attention's output, residual
      # blocks') get weights, so that their recomputation matters too.
      state = nnx.state(model, nnx.Param)
      leaves, tree = jax.tree.flatten(state)
      keys = jax.random.split(jax.random.key(3), len(leaves))
      nnx.update(model, jax.tree.unflatten(tree, [
          leaf + 0.05 * jax.random.normal(key, leaf.shape) for leaf, key in zip(leaves, keys)]))
      z = jax.random.normal(jax.random.key(1), (2, 3, 4, 8, 4))
      image = jax.random.uniform(jax.random.key(2), (2, 16, 32, 3), minval=-1, maxval=1)
      freq = jnp.tile(jnp.arange(3), (2, 1))
      loss = lambda m: jnp.square(m(z, jnp.array([10, 500]), image, freq,
                                    jnp.array([True, False]))).mean()
    graphdef, params = functional.split_params(model)
    with jax.default_matmul_precision("highest"):
      grads[remat] = jax.jit(jax.grad(lambda p: loss(functional.merge(graphdef, p))))(params)
  for remat in ("dots", "full"):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 grads[remat], grads["none"])


def test_an_unknown_remat_is_refused():
  with pytest.raises(ValueError, match="unknown remat 'some'; one of none, dots, full"):
    unet.MotionUNet(base_channels=8, channel_mults=(1,), num_heads=2, remat="some",
                    rngs=nnx.Rngs(0))


def test_a_network_built_for_inference_has_no_training_only_settings():
  """A run trained with cuDNN attention and rematerialisation loads for
  sampling as XLA attention without remat (cuDNN would fail on a CPU)."""
  from spectral_jax.config_base import load_config_file
  config = load_config_file(Path(__file__).parent.parent / "configs" / "ldm_freq_attn.py",
                            "tiny", {"model.attention_impl": "cudnn", "model.remat": "full"})
  for inference, expected in ((False, ("cudnn", "full")), (True, ("xla", "none"))):
    model = nnx.eval_shape(lambda: build.build_unet(config, nnx.Rngs(0), inference=inference))
    found = {node.implementation for _, node in nnx.iter_graph(model)
             if isinstance(node, layers.SelfAttention)}
    assert (found, model.remat) == ({expected[0]}, expected[1])
