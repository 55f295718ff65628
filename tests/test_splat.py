"""Softmax splatting against closed forms and a NumPy float64 loop; the
renderer's splatting metric against a float64 reference.

Also a script: ``python tests/test_splat.py`` (run with 8 fake CPU devices by
`test_batch_sharded_splat_and_renderer_have_no_collectives`) compiles the
splat and a tiny renderer with the batch split over all devices and prints
the collectives in each compiled program as JSON.
"""

import json
import math
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from spectral_jax.render import splat
from spectral_jax.render.splat import MAX_METRIC
from spectral_jax.render.splat_metric import splat_metric

# Jitted once for the whole file: eager dispatch would compile op by op.
softmax_splat = jax.jit(splat.softmax_splat, static_argnames=("mode", "block_rows"))


def _reference(features, flow, metric, mode, eps=1e-7):
  """Pixel-by-pixel float64 splatting, written from the formula."""
  features = np.asarray(features, np.float64)
  batch, height, width, channels = features.shape
  numerator = np.zeros((batch, height, width, channels))
  denominator = np.zeros((batch, height, width))
  for b in range(batch):
    for y in range(height):
      for x in range(width):
        dx, dy = (float(v) for v in flow[b, y, x])
        if not (math.isfinite(dx) and math.isfinite(dy)):
          continue
        if mode == "sum" or metric is None:
          weight = 1.0
        elif mode == "softmax":
          weight = math.exp(min(float(metric[b, y, x, 0]), MAX_METRIC))
        else:
          weight = float(metric[b, y, x, 0])
        tx, ty = x + dx, y + dy
        x0, y0 = math.floor(tx), math.floor(ty)
        for xi, wx in ((x0, 1 - (tx - x0)), (x0 + 1, tx - x0)):
          for yi, wy in ((y0, 1 - (ty - y0)), (y0 + 1, ty - y0)):
            if 0 <= xi < width and 0 <= yi < height:
              numerator[b, yi, xi] += weight * wx * wy * features[b, y, x]
              denominator[b, yi, xi] += weight * wx * wy
  if mode == "sum":
    return numerator
  return numerator / (denominator[..., None] + eps)


def _random_inputs(seed, shape=(2, 7, 9, 3), flow_scale=2.0):
  rng = np.random.default_rng(seed)
  features = rng.normal(size=shape).astype(np.float32)
  flow = (flow_scale * rng.normal(size=shape[:3] + (2,))).astype(np.float32)
  metric = rng.uniform(0.1, 2.0, size=shape[:3] + (1,)).astype(np.float32)
  return features, flow, metric


@pytest.mark.parametrize("mode", ["softmax", "average", "sum"])
@pytest.mark.parametrize("with_metric", [True, False])
def test_matches_float64_loop(mode, with_metric):
  features, flow, metric = _random_inputs(0)
  metric = metric if with_metric else None
  out = softmax_splat(features, flow, metric, mode=mode)
  reference = _reference(features, flow, metric, mode)
  assert out.shape == features.shape and out.dtype == jnp.float32
  assert np.abs(out - reference).max() < 1e-5 * np.abs(reference).max()


@pytest.mark.parametrize("mode", ["softmax", "average"])
def test_zero_flow_is_identity(mode):
  features, _, metric = _random_inputs(1)
  out = softmax_splat(features, np.zeros(features.shape[:3] + (2,), np.float32), metric,
                      mode=mode)
  np.testing.assert_allclose(out, features, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["softmax", "sum"])
def test_integer_shift_moves_the_image_and_empties_the_border(mode):
  features, _, _ = _random_inputs(2)
  flow = np.broadcast_to(np.float32([2, -1]), features.shape[:3] + (2,))
  out = np.asarray(softmax_splat(features, flow, mode=mode))
  np.testing.assert_allclose(out[:, :-1, 2:], features[:, 1:, :-2], rtol=1e-6)
  assert not out[:, -1].any() and not out[:, :, :2].any()


def test_fractional_shift_spreads_bilinear_weights():
  features = np.zeros((1, 4, 5, 2), np.float32)
  features[0, 1, 1] = [1.0, -2.0]
  flow = np.full((1, 4, 5, 2), np.nan, np.float32)  # only the source at (1, 1) moves
  flow[0, 1, 1] = [0.25, 0.5]
  out = np.asarray(softmax_splat(features, flow, mode="sum"))
  expected = np.zeros((4, 5))
  expected[1:3, 1:3] = [[0.75 * 0.5, 0.25 * 0.5], [0.75 * 0.5, 0.25 * 0.5]]
  np.testing.assert_allclose(out[0, ..., 0], expected, atol=1e-7)
  np.testing.assert_allclose(out[0, ..., 1], -2 * expected, atol=1e-7)
  # Normalised, the lone source comes through whole wherever it landed.
  out = np.asarray(softmax_splat(features, flow))
  np.testing.assert_allclose(out[0, 1:3, 1:3], np.broadcast_to([1.0, -2.0], (2, 2, 2)),
                             rtol=1e-6)


def test_sum_mode_conserves_what_stays_inside():
  features, flow, _ = _random_inputs(3)
  features = np.abs(features)  # no cancellation in the totals
  # Moves of at most 2 px, none near the border: everything stays inside.
  flow = np.clip(flow, -2, 2)
  flow[:, :2], flow[:, -2:], flow[:, :, :2], flow[:, :, -2:] = 0, 0, 0, 0
  out = softmax_splat(features, flow, mode="sum")
  np.testing.assert_allclose(out.sum(axis=(1, 2)), features.sum(axis=(1, 2)), rtol=1e-5)
  # A shift by 3 px to the right drops the 3 right-most columns.
  shifted = np.broadcast_to(np.float32([3, 0]), flow.shape)
  out = softmax_splat(features, shifted, mode="sum")
  np.testing.assert_allclose(out.sum(axis=(1, 2)), features[:, :, :-3].sum(axis=(1, 2)),
                             rtol=1e-5)


def test_larger_metric_wins_a_collision():
  features = np.zeros((1, 3, 7, 1), np.float32)
  flow = np.full((1, 3, 7, 2), np.nan, np.float32)  # only two sources move
  metric = np.zeros((1, 3, 7, 1), np.float32)
  features[0, 1, 1], flow[0, 1, 1], metric[0, 1, 1] = 1.0, [2, 0], 0.0
  features[0, 1, 5], flow[0, 1, 5], metric[0, 1, 5] = 5.0, [-2, 0], 10.0
  out = np.asarray(softmax_splat(features, flow, metric))[0, 1, 3, 0]
  assert out == pytest.approx((1.0 + 5.0 * math.exp(10.0)) / (1.0 + math.exp(10.0)), rel=1e-6)
  assert out > 4.999
  metric[0, 1, 1], metric[0, 1, 5] = 1.0, 3.0
  out = np.asarray(softmax_splat(features, flow, metric, mode="average"))[0, 1, 3, 0]
  assert out == pytest.approx((1.0 * 1.0 + 3.0 * 5.0) / 4.0, rel=1e-6)


def test_out_of_bounds_targets_are_dropped():
  features, _, metric = _random_inputs(4)
  flow = np.zeros(features.shape[:3] + (2,), np.float32)
  flow[0, ..., 0] = 100.0  # image 0 leaves through the right border
  flow[1, 3, 4] = [1e30, -1e30]  # one source thrown far away
  out = np.asarray(softmax_splat(features, flow, metric, mode="sum"))
  assert not out[0].any()
  expected = features[1].copy()
  expected[3, 4] = 0
  np.testing.assert_array_equal(out[1], expected)
  # Half of a source that lands half a pixel past the border is dropped.
  flow = np.zeros_like(flow)
  flow[:, :, -1, 0] = 0.5
  out = np.asarray(softmax_splat(features, flow, mode="sum"))
  np.testing.assert_allclose(out[:, :, -1], 0.5 * features[:, :, -1], rtol=1e-6)


def test_non_finite_flow_is_skipped_with_finite_gradients():
  features, flow, metric = _random_inputs(5)
  flow[0, 2, 3, 0] = np.nan
  flow[1, 4, 4, 1] = np.inf
  flow[1, 0, 0] = -np.inf
  out = softmax_splat(features, flow, metric)
  assert np.abs(out - _reference(features, flow, metric, "softmax")).max() < 1e-5

  def loss(features, flow, metric):
    return jnp.sum(softmax_splat(features, flow, metric) ** 2)

  grads = jax.grad(loss, argnums=(0, 1, 2))(features, flow, metric)
  for grad in grads:
    assert np.isfinite(grad).all()
  for b, y, x in ((0, 2, 3), (1, 4, 4), (1, 0, 0)):
    assert not grads[0][b, y, x].any() and not grads[1][b, y, x].any()
    assert not grads[2][b, y, x].any()


@pytest.mark.parametrize("mode", ["softmax", "average", "sum"])
def test_gradients_match_finite_differences(mode):
  rng = np.random.default_rng(6)
  shape = (2, 4, 5, 2)
  # Whole pixels plus a fraction in [0.2, 0.8]: small steps never cross a
  # pixel boundary, where the bilinear weights have kinks.
  flow = rng.integers(-1, 2, size=shape[:3] + (2,)) + rng.uniform(0.2, 0.8, shape[:3] + (2,))
  with jax.enable_x64(True):
    args = (jnp.asarray(rng.normal(size=shape)), jnp.asarray(flow),
            jnp.asarray(rng.uniform(0.5, 2.0, size=shape[:3] + (1,))))
    fn = jax.jit(lambda *a: splat.softmax_splat(*a, mode=mode, block_rows=3))
    assert fn(*args).dtype == jnp.float64
    check_grads(fn, args, order=1, modes=("fwd", "rev"), eps=1e-6)


def test_blocks_batching_and_eager_agree():
  features, flow, metric = _random_inputs(7)
  whole = softmax_splat(features, flow, metric, block_rows=7)  # An image's 7 rows at once.
  # In blocks of 3 and 5: the last block overlaps the one before. More rows
  # than an image has are its rows at once.
  for block_rows in (1, 3, 5, 14):
    np.testing.assert_allclose(softmax_splat(features, flow, metric, block_rows=block_rows),
                               whole, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(splat.softmax_splat(features, flow, metric), whole, rtol=1e-6,
                             atol=1e-6)
  for b in range(2):
    single = softmax_splat(features[b:b + 1], flow[b:b + 1], metric[b:b + 1])
    np.testing.assert_allclose(single[0], whole[b], rtol=1e-6, atol=1e-6)


def test_softmax_metric_is_clipped():
  features, flow, metric = _random_inputs(8)
  metric[:] = 1e6
  flow[:] = 0.5  # every pixel collects from 4 sources, all at the clip
  out = softmax_splat(features, flow, metric)
  clipped = softmax_splat(features, flow, np.full_like(metric, MAX_METRIC))
  np.testing.assert_array_equal(out, clipped)
  np.testing.assert_allclose(out, softmax_splat(features, flow), rtol=1e-5, atol=1e-6)
  grads = jax.grad(lambda *a: jnp.sum(softmax_splat(*a) ** 2), argnums=(0, 1))(
      features, flow, np.full_like(metric, MAX_METRIC))
  assert all(np.isfinite(grad).all() for grad in grads)


def test_rejects_unknown_mode_and_wrong_shapes():
  features, flow, metric = _random_inputs(10)
  with pytest.raises(ValueError, match="mode"):
    softmax_splat(features, flow, metric, mode="max")
  with pytest.raises(ValueError, match="flow"):
    softmax_splat(features, flow[..., :1], metric)
  with pytest.raises(ValueError, match="metric"):
    softmax_splat(features, flow, metric[..., 0])


def _metric_reference(spectral, num_frames, scale):
  """``scale * mean_t ||D(t)||`` in float64, ``D(t)`` summed bin by bin from
  its definition: DC once, every other bin twice (its conjugate twin), the
  Nyquist bin of an even T once."""
  spectral = np.asarray(spectral, np.complex128)
  num_freqs = spectral.shape[0]
  norms = []
  for t in range(num_frames):
    disp = spectral[0].real.copy()
    for k in range(1, num_freqs):
      twice = 1.0 if 2 * k == num_frames else 2.0
      disp += twice * (spectral[k] * np.exp(2j * np.pi * k * t / num_frames)).real
    norms.append(np.hypot(disp[..., 0], disp[..., 1]))
  return scale * np.mean(norms, axis=0)[..., None]


@pytest.mark.parametrize("num_freqs, num_frames", [(4, 16), (5, 8), (3, 7)])
def test_splat_metric_matches_float64_reference(num_freqs, num_frames):
  """K < T/2 + 1, K = T/2 + 1 (the Nyquist bin counts once) and an odd T;
  NumPy and JAX in, one volume and a batch."""
  rng = np.random.default_rng(num_frames)
  shape = (2, num_freqs, 5, 7, 2)
  spectral = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
  expected = np.stack([_metric_reference(s, num_frames, 2.5) for s in spectral])
  batched = splat_metric(spectral, num_frames, 2.5)
  assert batched.shape == (2, 5, 7, 1) and batched.dtype == np.float32
  np.testing.assert_allclose(batched, expected, rtol=2e-5)
  single = splat_metric(jnp.asarray(spectral[1]), num_frames, 2.5)
  assert isinstance(single, jax.Array) and single.shape == (5, 7, 1)
  np.testing.assert_allclose(single, expected[1], rtol=2e-5)


def test_splat_metric_is_in_the_pixels_of_the_grid_it_is_given():
  """A volume enlarged 2x with its displacements in the new pixels (as
  `fit_spectral` frames one): the metric doubles. A uniform sway keeps it
  exact, whatever the resampling does at the borders."""
  from spectral_jax.data.pictures import fit_spectral
  spectral = np.zeros((4, 6, 9, 2), np.complex64)
  spectral[1] = 0.3 + 0.4j
  spectral[2, ..., 1] = -0.2j
  metric = splat_metric(spectral, 16, 1.0)
  enlarged = splat_metric(fit_spectral(spectral, 18, 12), 16, 1.0)
  assert enlarged.shape == (12, 18, 1)
  np.testing.assert_allclose(enlarged, np.full((12, 18, 1), 2 * metric[0, 0, 0]), rtol=1e-5)


COLLECTIVES = ("all-gather", "all-reduce", "all-to-all", "collective-permute", "reduce-scatter")


def _collectives_in_sharded_programs() -> dict:
  """With the batch split over a 1-D ``data`` mesh of every device: the
  collectives in the compiled HLO of splatting (its 3 modes and the
  gradient of the softmax one) and of a tiny renderer's forward and
  gradient with respect to its inputs. Parameter gradients are left out:
  data-parallel training all-reduces them whatever the splat does."""
  from flax import nnx
  from jax.sharding import Mesh, NamedSharding, PartitionSpec

  from spectral_jax.models.renderer import Renderer
  mesh = Mesh(np.array(jax.devices()), ("data",))
  batch_split = NamedSharding(mesh, PartitionSpec("data"))
  batch, height, width = jax.device_count(), 12, 10
  rng = np.random.default_rng(11)

  def sharded(*shape):
    return jax.device_put(rng.normal(size=(batch,) + shape).astype(np.float32), batch_split)

  def splat_and_gradient(features, flow, metric, cotangent):
    # Blocks of 5 of the 12 rows: the CPU loop, last block overlapping.
    out, vjp = jax.vjp(lambda *a: splat.softmax_splat(*a, block_rows=5), features, flow, metric)
    return (out, vjp(cotangent), splat.softmax_splat(features, flow, metric, mode="average"),
            splat.softmax_splat(features, flow, mode="sum"), splat.softmax_splat(features, flow))

  renderer = Renderer(channels=(4, 8), depths=(1, 1), style_dim=8, norm_groups=4,
                      rngs=nnx.Rngs(0))
  graph, params = nnx.split(renderer)

  def render_and_gradient(params, image, flow, metric, cotangent):
    out, vjp = jax.vjp(lambda *a: nnx.merge(graph, params)(*a), image, flow, metric)
    return out, vjp(cotangent)

  features, flow = sharded(height, width, 3), sharded(height, width, 2)
  metric = jnp.abs(sharded(height, width, 1))  # "average" wants metrics >= 0.
  programs = {
      "splat": jax.jit(splat_and_gradient, out_shardings=batch_split).lower(
          features, flow, metric, sharded(height, width, 3)),
      "renderer": jax.jit(render_and_gradient, out_shardings=batch_split).lower(
          jax.device_put(params, NamedSharding(mesh, PartitionSpec())), sharded(height, width, 3),
          flow, metric, sharded(height, width, 3)),
  }
  found = {}
  for name, lowered in programs.items():
    hlo = lowered.compile().as_text()
    # Op: how many instructions (e.g. ``all-gather(`` or ``all-gather-start(``).
    found[name] = {op: len(re.findall(rf"\b{op}(?:-start)?\(", hlo)) for op in COLLECTIVES
                   if op in hlo}
  return found


# Slow: the renderer's call on a batch split over TPU chips, compiled by
# XLA:TPU, has no collective either (tests/test_compile_tpu.py, which CI runs
# by default).
@pytest.mark.slow
def test_batch_sharded_splat_and_renderer_have_no_collectives():
  """Every image is splatted on its own: with the batch split over 8 devices
  no device needs another's scatter updates or weight sums (splatting over
  one flat B * H * W index space all-gathered the updates)."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      " --xla_force_host_platform_device_count=8").strip()
  # The fake devices are CPU devices: pinned there on a machine with a GPU.
  env["JAX_PLATFORMS"] = "cpu"
  done = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-3000:]
  lines = done.stdout.splitlines()
  assert "devices=8" in lines
  assert json.loads(lines[-1]) == {"splat": {}, "renderer": {}}


if __name__ == "__main__":
  print(f"devices={jax.device_count()}")
  print(json.dumps(_collectives_in_sharded_programs()))


@pytest.mark.parametrize("platform, loops", [("cpu", 1), ("tpu", 0), ("cuda", 0)])
def test_the_cpu_blocking_follows_the_platform_the_program_is_lowered_for(platform, loops):
  """The scatter runs in cache-sized blocks (a loop) only in a program
  lowered for a CPU: one lowered here for a TPU or a GPU, as an
  ahead-of-time compile from this CPU does, scatters each image at once."""
  features = jnp.ones((2, 64, 96, 8))
  flow, metric = jnp.zeros((2, 64, 96, 2)), jnp.ones((2, 64, 96, 1))
  lowered = jax.jit(splat.softmax_splat).trace(features, flow, metric).lower(
      lowering_platforms=(platform,))
  assert lowered.as_text().count("stablehlo.while") == loops

