"""Distances between two sets of features (float64 NumPy): the Fréchet
distance of their Gaussian fits (FID, FVD) and the kernel distance, an
unbiased MMD^2 with a cubic polynomial kernel (KID).

Features are ``[N, D]``: one row per frame or clip, from a fixed network
(`spectral_jax.eval.features`, `spectral_jax.eval.fvd`).
"""

from __future__ import annotations

import numpy as np


def gaussian_fit(features) -> tuple[np.ndarray, np.ndarray]:
  """``(mean [D], covariance [D, D])`` float64 of ``features`` ``[N, D]``,
  the covariance unbiased (divided by N - 1), as the FID and FVD references
  compute it.

  Raises:
    ValueError: fewer than 2 rows (no covariance).
  """
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError(f"a Gaussian fit needs features [N >= 2, D], got {features.shape}")
  return features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
  """Square root of a symmetric positive semi-definite matrix (eigenvalues
  that rounding made negative count as 0)."""
  values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
  return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(a: tuple, b: tuple) -> float:
  """Fréchet (2-Wasserstein) distance between Gaussians ``a = (mean, cov)``
  and ``b``:

      |mu_a - mu_b|^2 + tr(C_a) + tr(C_b) - 2 tr((C_a C_b)^(1/2))

  ``tr((C_a C_b)^(1/2))`` is the sum of the square roots of the eigenvalues
  of ``C_a^(1/2) C_b C_a^(1/2)``, which is symmetric positive semi-definite:
  no complex parts or failures on the singular covariances of fewer samples
  than dimensions (pytorch-fid and the FVD reference take ``sqrtm`` of the
  non-symmetric product). Rounding below 0 is returned as 0.
  """
  mean_a, cov_a = (np.asarray(x, np.float64) for x in a)
  mean_b, cov_b = (np.asarray(x, np.float64) for x in b)
  root_a = _psd_sqrt(cov_a)
  product = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
  trace_sqrt = np.sqrt(np.clip(product, 0, None)).sum()
  distance = (np.sum((mean_a - mean_b)**2) + np.trace(cov_a) + np.trace(cov_b)
              - 2 * trace_sqrt)
  return max(float(distance), 0.0)


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """``k(x, y) = (x . y / D + 1)^3`` for rows ``x [N, D]``, ``y [M, D]``:
  ``[N, M]`` (Bińkowski et al. 2018, KID)."""
  return (x @ y.T / x.shape[1] + 1.0)**3


def mmd2_unbiased(x, y) -> float:
  """Unbiased squared MMD of samples ``x [N, D]`` and ``y [M, D]`` under
  `polynomial_kernel`:

      sum_{i != j} k(x_i, x_j) / (N (N-1)) + sum_{i != j} k(y_i, y_j) / (M (M-1))
        - 2 sum_{i, j} k(x_i, y_j) / (N M)
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  n, m = x.shape[0], y.shape[0]
  kxx, kyy = polynomial_kernel(x, x), polynomial_kernel(y, y)
  within_x = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
  within_y = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
  return float(within_x + within_y - 2 * polynomial_kernel(x, y).mean())


def kernel_distance(x, y, *, num_subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> tuple[float, float]:
  """KID: `mmd2_unbiased` averaged over ``num_subsets`` random subsets of
  ``min(subset_size, N)`` rows of ``x [N, D]`` and ``min(subset_size, M)``
  of ``y [M, D]`` (drawn without replacement, from ``seed``), as in the KID
  paper's code; returns ``(mean, standard deviation over subsets)``.

  Unbiased, so unlike FID it is 0 on average for two samples of one
  distribution, whatever their size; it can be slightly negative.

  Raises:
    ValueError: fewer than 2 rows in a set.
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if min(x.shape[0], y.shape[0]) < 2 or x.ndim != 2 or x.shape[1:] != y.shape[1:]:
    raise ValueError(f"the kernel distance needs features [N >= 2, D] of one D, got "
                     f"{x.shape} and {y.shape}")
  rng = np.random.default_rng(seed)
  values = [mmd2_unbiased(x[rng.choice(len(x), min(subset_size, len(x)), replace=False)],
                          y[rng.choice(len(y), min(subset_size, len(y)), replace=False)])
            for _ in range(num_subsets)]
  return float(np.mean(values)), float(np.std(values))
