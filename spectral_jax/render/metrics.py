"""Image quality metrics of rendered frames: PSNR, SSIM and LPIPS.

Images are ``[..., H, W, C]`` with values in a range of width ``data_range``
(2 for the project's ``[-1, 1]`` images, 255 for uint8); every metric returns
one value per image, ``[...]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Wang et al. 2004: Gaussian window 11x11, sigma 1.5, K1 = 0.01, K2 = 0.03.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def mse(pred, target):
  """Mean squared error per image ``[...]`` of ``[..., H, W, C]`` images."""
  error = jnp.asarray(pred, jnp.float32) - jnp.asarray(target, jnp.float32)
  return jnp.mean(error * error, axis=(-3, -2, -1))


def psnr_of_mse(mse_value, *, data_range: float = 2.0):
  """``10 log10(data_range^2 / mse)`` dB (inf when 0). Of a mean over many
  images this is the PSNR of the pool, which one exact image cannot make
  infinite, unlike a mean of per-image PSNRs."""
  return 10.0 * jnp.log10(data_range**2 / jnp.asarray(mse_value, jnp.float32))


def psnr(pred, target, *, data_range: float = 2.0):
  """``10 log10(data_range^2 / MSE)`` in dB per image, ``[...]`` (inf when equal)."""
  return psnr_of_mse(mse(pred, target), data_range=data_range)


def _gaussian_window(size: int, sigma: float) -> np.ndarray:
  x = np.arange(size) - (size - 1) / 2
  window = np.exp(-x * x / (2 * sigma * sigma))
  return (window / window.sum()).astype(np.float32)


def _blur_valid(x, window):
  """Separable 'valid' Gaussian filter over H and W of ``[N, H, W, C]``."""
  size = window.shape[0]
  channels = x.shape[-1]
  kernel_h = jnp.tile(jnp.asarray(window).reshape(size, 1, 1, 1), (1, 1, 1, channels))
  kernel_w = kernel_h.reshape(1, size, 1, channels)
  dims = ("NHWC", "HWIO", "NHWC")
  for kernel in (kernel_h, kernel_w):
    x = jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=dims,
                                     feature_group_count=channels,
                                     precision=jax.lax.Precision.HIGHEST)
  return x


def ssim(pred, target, *, data_range: float = 2.0):
  """Mean structural similarity per image ``[...]``, channels averaged.

  Gaussian-weighted statistics (window 11, sigma 1.5, population covariance)
  averaged over the positions where the whole window lies inside the image,
  as ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False)`` computes it. Images must be at
  least 11 pixels on each side.
  """
  pred = jnp.asarray(pred, jnp.float32)
  target = jnp.asarray(target, jnp.float32)
  batch_shape, image_shape = pred.shape[:-3], pred.shape[-3:]
  pred = pred.reshape((-1,) + image_shape)
  target = target.reshape((-1,) + image_shape)
  window = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA)
  # One filter call for the five local moments.
  stacked = jnp.concatenate([pred, target, pred * pred, target * target, pred * target], axis=-1)
  moments = _blur_valid(stacked, window)
  mu_p, mu_t, pp, tt, pt = jnp.split(moments, 5, axis=-1)
  var_p = pp - mu_p * mu_p
  var_t = tt - mu_t * mu_t
  cov = pt - mu_p * mu_t
  c1 = (SSIM_K1 * data_range)**2
  c2 = (SSIM_K2 * data_range)**2
  ssim_map = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)
              / ((mu_p * mu_p + mu_t * mu_t + c1) * (var_p + var_t + c2)))
  return jnp.mean(ssim_map, axis=(-3, -2, -1)).reshape(batch_shape)


def _unit_normalize(features, eps: float = 1e-10):
  """Divides each pixel's feature vector ``[..., C]`` by its L2 norm."""
  return features / (jnp.sqrt(jnp.sum(features * features, axis=-1, keepdims=True)) + eps)


def lpips(vgg, pred, target):
  """LPIPS (VGG variant, Zhang et al. 2018) per image ``[B]``.

  Args:
    vgg: `spectral_jax.models.vgg16.VGG16` from `load_vgg16` (its features
      and its LPIPS heads).
    pred, target: ``[B, H, W, 3]`` RGB in ``[-1, 1]``.
  """
  features = vgg(jnp.concatenate([pred, target], axis=0))
  batch = pred.shape[0]
  total = 0.0
  for feature, head in zip(features, vgg.lpips_heads):
    feature = _unit_normalize(feature.astype(jnp.float32))
    diff = (feature[:batch] - feature[batch:])**2
    total = total + jnp.mean(diff @ head[...], axis=(-2, -1))
  return total
