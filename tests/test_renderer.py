"""Renderer: pyramid shapes, splatting per scale with coverage, identity at
initialisation, batched video rendering equal to frame-by-frame, and the
splatting metric `Animator.render` gives it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from spectral_jax.models import renderer
from spectral_jax.motion.spectral import animation_texture, spectral_volume
from spectral_jax.render import frames
from spectral_jax.render.splat_metric import splat_metric

TINY = dict(channels=(16, 16, 32, 32), depths=(1, 2, 1, 1), style_dim=32)
HEIGHT, WIDTH = 48, 64

# Compiled once and shared by the tests (models are pytrees: the initial and
# the perturbed one hit the same cache entry). Op-by-op runs are far slower.
_call = jax.jit(lambda model, picture, flow, metric: model(picture, flow, metric))
_encode = jax.jit(lambda model, picture: model.encode(picture))
_splat = jax.jit(renderer.splat_pyramid)


@pytest.fixture(scope="module")
def model():
  return renderer.Renderer(**TINY, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def trained_like(model):
  """The tiny renderer with its zero-initialised RGB heads perturbed, so the
  decoder's output is not zero."""
  graphdef, state = nnx.split(model)
  rng = np.random.default_rng(1)
  state = jax.tree.map(lambda x: x + 0.05 * rng.normal(size=x.shape).astype(x.dtype), state)
  return nnx.merge(graphdef, state)


def _spec(*shape):
  return jax.ShapeDtypeStruct(shape, jnp.float32)


def _picture():
  rng = np.random.default_rng(0)
  return rng.uniform(-1, 1, size=(1, HEIGHT, WIDTH, 3)).astype(np.float32)


def test_encoder_pyramid_and_style_shapes(model):
  pyramid, style = _encode(model, _picture())
  assert [p.shape for p in pyramid] == [(1, 48, 64, 3 + 16), (1, 24, 32, 16), (1, 12, 16, 32),
                                        (1, 6, 8, 32)]
  assert style.shape == (1, 32)
  np.testing.assert_array_equal(pyramid[0][..., :3], _picture())


def test_paper_layout_is_resnet34_abstractly():
  paper = nnx.eval_shape(lambda: renderer.Renderer(rngs=nnx.Rngs(0)))
  assert [len(stage.layers) for stage in paper.encoder.stages] == [3, 4, 6, 3]
  assert paper.encoder.stages[3].layers[0].conv1.out_features == 512
  out = jax.eval_shape(lambda m, *args: m(*args), paper, _spec(1, 160, 256, 3),
                       _spec(1, 160, 256, 2), _spec(1, 160, 256, 1))
  assert out.shape == (1, 160, 256, 3)


def test_odd_sizes_round_up_per_scale():
  tiny = nnx.eval_shape(lambda: renderer.Renderer(**TINY, rngs=nnx.Rngs(0)))
  pyramid, _ = jax.eval_shape(lambda m, x: m.encode(x), tiny, _spec(1, 45, 61, 3))
  assert [p.shape[1:3] for p in pyramid] == [(45, 61), (23, 31), (12, 16), (6, 8)]
  out = jax.eval_shape(lambda m, *args: m(*args), tiny, _spec(2, 45, 61, 3), _spec(2, 45, 61, 2),
                       _spec(2, 45, 61, 1))
  assert out.shape == (2, 45, 61, 3)


def test_bfloat16_compute_keeps_float32_params_and_output():
  half = nnx.eval_shape(lambda: renderer.Renderer(**TINY, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)))
  param_dtypes = {x.dtype for x in jax.tree.leaves(nnx.state(half, nnx.Param))}
  assert param_dtypes == {jnp.dtype(jnp.float32)}
  pyramid, style = jax.eval_shape(lambda m, x: m.encode(x), half, _spec(1, 48, 64, 3))
  assert pyramid[1].dtype == jnp.bfloat16
  out = jax.eval_shape(lambda m, *args: m.render(*args), half, pyramid, style,
                       _spec(3, 48, 64, 2), _spec(3, 48, 64, 1))
  assert out.shape == (3, 48, 64, 3) and out.dtype == jnp.float32


def test_zero_flow_renders_the_picture_at_initialisation(model):
  # The decoder's RGB paint starts at zero.
  picture = _picture()
  out = _call(model, picture, jnp.zeros((1, HEIGHT, WIDTH, 2)), jnp.zeros((1, HEIGHT, WIDTH, 1)))
  np.testing.assert_allclose(out, picture, atol=1e-5)


def test_flow_is_rescaled_per_scale_and_holes_are_marked(model):
  picture = _picture()
  pyramid, _ = _encode(model, picture)
  shift = 4  # px at full resolution: 4, 2, 1 and 0.5 px at strides 1, 2, 4, 8.
  flow = jnp.zeros((1, HEIGHT, WIDTH, 2)).at[..., 0].set(shift)
  splatted = _splat(pyramid, flow, jnp.zeros((1, HEIGHT, WIDTH, 1)))
  for s, (features, out) in enumerate(zip(pyramid, splatted)):
    assert out.shape == features.shape[:3] + (features.shape[3] + 1,)
    coverage = out[..., -1]
    if s < 3:
      step = shift >> s
      np.testing.assert_allclose(out[:, :, step:, :-1], features[:, :, :-step], atol=1e-5)
      np.testing.assert_allclose(coverage[:, :, :step], 0.0, atol=1e-6)
      np.testing.assert_allclose(out[:, :, :step, :-1], 0.0, atol=1e-6)
      np.testing.assert_allclose(coverage[:, :, step:], 1.0, atol=1e-5)
    else:
      np.testing.assert_allclose(coverage[:, :, 0], 0.5, atol=1e-5)
  out = _call(model, picture, flow, jnp.zeros((1, HEIGHT, WIDTH, 1)))
  np.testing.assert_allclose(out[:, :, shift:], picture[:, :, :-shift], atol=1e-5)


def test_scales_share_the_encoders_pixel_grid():
  """Pixel i of the stride-s scale is full-resolution pixel s * i: where the
  encoder's stride-2 convolutions centre it, and where flow and metric are
  read (a half-pixel resize would read them 0.5, 1.5, 3.5 px off)."""
  # A strided convolution with a centred delta kernel reads input pixel 2i.
  conv = renderer.BasicBlock(1, 1, stride=2, norm_groups=1, rngs=nnx.Rngs(0)).conv1
  conv.kernel[...] = jnp.zeros((3, 3, 1, 1)).at[1, 1].set(1.0)
  ramp = jnp.arange(HEIGHT * WIDTH, dtype=jnp.float32).reshape(1, HEIGHT, WIDTH, 1)
  np.testing.assert_array_equal(conv(ramp), ramp[:, ::2, ::2])
  # An impulse of flow at full-resolution pixel (16, 24) lands on pixel
  # (16, 24) / s of every scale, whole and undivided among neighbours.
  impulse = jnp.zeros((1, HEIGHT, WIDTH, 1)).at[0, 16, 24].set(1.0)
  for stride in (2, 4, 8):
    shape = (-(-HEIGHT // stride), -(-WIDTH // stride))
    coarse = np.asarray(renderer.regrid(impulse, *shape, stride))[0, ..., 0]
    expected = np.zeros(shape)
    expected[16 // stride, 24 // stride] = 1.0 / stride ** 2  # Antialiased: mass kept.
    np.testing.assert_allclose(coarse, expected, atol=1e-7)
  # Upsampling by 2 puts coarse pixel (2, 3) at fine pixel (4, 6), symmetrically.
  fine = np.asarray(renderer.regrid(jnp.zeros((1, 6, 8, 1)).at[0, 2, 3].set(1.0), 12, 16, 0.5))
  np.testing.assert_allclose(fine[0, 3:6, 5:8, 0], [[0.25, 0.5, 0.25], [0.5, 1, 0.5],
                                                    [0.25, 0.5, 0.25]], atol=1e-7)
  assert np.isclose(fine.sum(), 4.0)


def test_decoder_reads_the_coverage_channel(trained_like):
  picture = _picture()
  pyramid, style = _encode(trained_like, picture)
  flow = jnp.zeros((1, HEIGHT, WIDTH, 2)).at[..., 0].set(3.0)
  splatted = _splat(pyramid, flow, jnp.zeros((1, HEIGHT, WIDTH, 1)))
  block = trained_like.decoder.blocks[0]
  assert block.conv1.conv.in_features == 3 + 16 + 1 + 16  # RGB, features, coverage, from below.
  without = [s.at[..., -1].set(1.0) for s in splatted]
  decode = jax.jit(lambda decoder, splatted, style: decoder(splatted, style))
  changed = jnp.abs(decode(trained_like.decoder, splatted, style)
                    - decode(trained_like.decoder, without, style))
  assert changed.max() > 1e-3


def test_decoder_paints_only_where_coverage_falls_short(trained_like):
  """Fully covered pixels are the warped picture, bit for bit up to float
  rounding, even with non-zero RGB heads; uncovered ones are painted."""
  picture = _picture()
  shift = 3  # Whole pixels: coverage is 0 in the first 3 columns, 1 elsewhere.
  flow = jnp.zeros((1, HEIGHT, WIDTH, 2)).at[..., 0].set(shift)
  out = np.asarray(_call(trained_like, picture, flow, jnp.zeros((1, HEIGHT, WIDTH, 1))))
  np.testing.assert_allclose(out[:, :, shift:], picture[:, :, :-shift], atol=1e-5)
  painted = np.abs(out[:, :, :shift]).mean(axis=(0, 1, 3))  # The warped picture is 0 there.
  assert np.all(painted > 1e-3), painted


@pytest.mark.parametrize("fill_coverage, fill_power, gate", [
    (1.0, 2.0, 0.25), (0.75, 1.0, 1 / 3), (0.5, 1.0, 0.0), (0.4, 1.0, 0.0)])
def test_paint_gate_follows_coverage_threshold_and_power(trained_like, fill_coverage,
                                                         fill_power, gate):
  """A half-pixel shift leaves column 0 half covered (the rest fully): there
  the paint passes by clip(1 - 0.5 / fill_coverage, 0, 1)^fill_power, a
  multiple of what the linear gate (1 - 0.5) lets through on top of the same
  warped colour, and nothing else moves."""
  gated = renderer.Renderer(**TINY, fill_coverage=fill_coverage, fill_power=fill_power,
                            rngs=nnx.Rngs(0))
  nnx.update(gated, nnx.state(trained_like))
  picture = _picture()
  flow = jnp.zeros((1, HEIGHT, WIDTH, 2)).at[..., 0].set(0.5)
  metric = jnp.zeros((1, HEIGHT, WIDTH, 1))
  linear_out = np.asarray(_call(trained_like, picture, flow, metric))
  gated_out = np.asarray(_call(gated, picture, flow, metric))
  warped = picture[:, :, 0]  # Only source column 0 lands on column 0: its own colour.
  linear_paint = linear_out[:, :, 0] - warped
  assert np.abs(linear_paint).mean() > 1e-3
  np.testing.assert_allclose(gated_out[:, :, 0] - warped, gate / 0.5 * linear_paint, atol=1e-5)
  np.testing.assert_allclose(gated_out[:, :, 1:], linear_out[:, :, 1:], atol=1e-6)


def test_paint_gate_refuses_a_threshold_outside_the_coverage_range():
  with pytest.raises(ValueError, match="fill_coverage"):
    renderer.Renderer(**TINY, fill_coverage=0.0, rngs=nnx.Rngs(0))


def _swaying_spectral(num_freqs, num_frames):
  """``[K, H, W, 2]`` complex64 spectral volume of a wave of a few pixels."""
  t = np.arange(num_frames)[:, None, None]
  y, x = np.mgrid[:HEIGHT, :WIDTH]
  motion = np.stack([3 * np.sin(2 * np.pi * t / num_frames + x / 9),
                     2 * np.sin(2 * np.pi * t / num_frames + y / 7)], -1).astype(np.float32)
  return spectral_volume(motion, num_freqs)


def test_render_frames_pads_the_last_batch_and_matches_frame_by_frame(trained_like):
  num_frames = 11
  picture = ((_picture()[0] + 1) * 127.5).round().astype(np.uint8)
  spectral = _swaying_spectral(3, num_frames)
  motion = animation_texture(spectral, np.arange(num_frames), num_frames)
  metric = splat_metric(spectral, num_frames, 2.0)
  video = frames.render_frames(trained_like, picture, motion, metric, batch_size=4,
                               progress=False)
  assert video.shape == (num_frames, HEIGHT, WIDTH, 3) and video.dtype == np.uint8

  image = jnp.asarray(picture, jnp.float32)[None] / 127.5 - 1
  expected = np.concatenate([frames.to_uint8(_call(trained_like, image, motion[i:i + 1],
                                                   metric[None]))
                             for i in range(num_frames)])
  assert np.abs(video.astype(int) - expected).max() <= 1
  assert np.mean(video != expected) < 1e-3
  assert np.abs(video.astype(int) - picture).max() > 10  # Frames move.
  # No motion: the picture itself, although the RGB heads are not zero.
  np.testing.assert_array_equal(video[0], picture)
  with pytest.raises(ValueError, match="metric must be"):
    frames.render_frames(trained_like, picture, motion, metric[None], progress=False)


def test_animator_metric_ignores_magnification_and_frame_times(trained_like, monkeypatch):
  """`Animator.render` hands `render_frames` `splat_metric` of the spectral
  volume over the model's T with the renderer's scale, the same for
  ``--magnify 3``, slow motion and a few frames as for the T frames at
  magnification 1: the metric the renderer was trained with."""
  from spectral_jax.inference import animator as animator_module
  from spectral_jax.inference.loading import LoadedRenderer
  num_freqs, num_frames = 4, 16
  animator = animator_module.Animator(LoadedRenderer(trained_like, 1.5, None, num_frames, 30.0),
                                      None, WIDTH, HEIGHT, num_freqs, num_frames, 30.0)
  seen = []

  def spy(model, image, texture, metric, **options):
    seen.append(np.asarray(metric))
    return np.zeros(texture.shape[:3] + (3,), np.uint8)

  monkeypatch.setattr(animator_module, "render_frames", spy)
  picture = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
  spectral = _swaying_spectral(num_freqs, num_frames)
  for times, magnify in ((np.arange(num_frames), 1.0), (np.arange(num_frames), 3.0),
                         (animator_module.video_times(num_frames, slowmo=2.5), 1.0),
                         (np.float32([0.0, 3.5]), 3.0)):
    animator.render(picture, animator.texture(spectral, times, magnify), spectral)
  expected = splat_metric(spectral, num_frames, 1.5)
  assert expected.min() > 0.5  # The wave moves every pixel.
  for metric in seen:
    np.testing.assert_array_equal(metric, expected)
