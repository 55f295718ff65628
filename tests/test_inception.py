"""Inception-v3 (FID's feature network): its weight file layout, refusals of
bad files, blocks against a float64 NumPy reference written from the
paper's block diagrams, and the full frames -> [N, 2048] network.

No pretrained weights exist offline: the weights are random, written here
in PyTorch's state dict layout. tools/compare_inception_torch.py checks the
whole network against torchvision where PyTorch is installed."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from spectral_jax.eval import features, inception

# torchvision's inception_v3 without AuxLogits and fc: conv weights plus the
# BatchNorms' weight and bias (running statistics are buffers).
TORCHVISION_PARAMETERS = 21_785_568


def _random_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
  """PyTorch-layout weights: He-scaled convolutions (activations stay of
  order 1 through the 94 units) and BatchNorms with statistics away from
  the identity's, so a mix-up of mean, variance, weight and bias shows."""
  rng = np.random.default_rng(seed)
  state = {}
  for key, shape in inception.weight_shapes().items():
    if key.endswith("conv.weight"):
      fan_in = np.prod(shape[1:])
      value = rng.standard_normal(shape, np.float32) * np.float32(np.sqrt(2 / fan_in))
    elif key.endswith(("bn.weight", "bn.running_var")):
      value = rng.uniform(0.5, 1.5, shape)
    else:
      value = rng.normal(0, 0.1, shape)
    state[key] = np.asarray(value, np.float32)
  return state


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
  """``(path of the .npz, its arrays)``, with extra keys a real file has."""
  state = _random_state_dict()
  path = tmp_path_factory.mktemp("inception") / "inception_v3.npz"
  np.savez(path, **state, **{"fc.weight": np.zeros((2, 2048), np.float32),
                             "Conv2d_1a_3x3.bn.num_batches_tracked": np.array(0)})
  return path, state


def _conv(x, weight, stride=(1, 1), padding=None):
  """float64 ``x [N, H, W, I]`` with an OIHW ``weight``: a sum over the
  kernel's taps, each a matrix product. ``padding`` (per side) defaults to
  half the kernel, which keeps the size at stride 1."""
  kh, kw = weight.shape[2:]
  ph, pw = (kh // 2, kw // 2) if padding is None else padding
  x = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  rows, cols = (x.shape[1] - kh) // stride[0] + 1, (x.shape[2] - kw) // stride[1] + 1
  out = 0
  for i in range(kh):
    for j in range(kw):
      taps = x[:, i:i + stride[0] * rows:stride[0], j:j + stride[1] * cols:stride[1]]
      out = out + taps @ weight[:, :, i, j].T.astype(np.float64)
  return out


def _unit(state, name, x, **conv):
  """Conv, BatchNorm (epsilon 1e-3) on running statistics, ReLU."""
  w = lambda leaf: state[f"{name}.{leaf}"].astype(np.float64)
  y = _conv(x, state[f"{name}.conv.weight"], **conv)
  y = (y - w("bn.running_mean")) / np.sqrt(w("bn.running_var") + 1e-3)
  return np.maximum(y * w("bn.weight") + w("bn.bias"), 0)


def _pool(x, kind):
  """3x3, stride 1, one pixel of padding: max, mean over 9, or mean over
  the pixels inside the image."""
  fill = -np.inf if kind == "max" else 0
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=fill)
  height, width = x.shape[1:3]
  windows = np.stack([padded[:, i:i + height, j:j + width] for i in range(3)
                      for j in range(3)])
  if kind == "max":
    return windows.max(0)
  inside = np.pad(np.ones((height, width)), 1)
  count = sum(inside[i:i + height, j:j + width] for i in range(3) for j in range(3))
  return windows.sum(0) / (9 if kind == "avg" else count[:, :, None])


def _block_a(state, name, x, pool):
  unit = lambda branch, y: _unit(state, f"{name}.{branch}", y)
  double = unit("branch3x3dbl_3", unit("branch3x3dbl_2", unit("branch3x3dbl_1", x)))
  return np.concatenate([unit("branch1x1", x), unit("branch5x5_2", unit("branch5x5_1", x)),
                         double, unit("branch_pool", _pool(x, pool))], axis=-1)


def _block_e(state, name, x, pool):
  unit = lambda branch, y: _unit(state, f"{name}.{branch}", y)
  single = unit("branch3x3_1", x)
  double = unit("branch3x3dbl_2", unit("branch3x3dbl_1", x))
  return np.concatenate([unit("branch1x1", x), unit("branch3x3_2a", single),
                         unit("branch3x3_2b", single), unit("branch3x3dbl_3a", double),
                         unit("branch3x3dbl_3b", double),
                         unit("branch_pool", _pool(x, pool))], axis=-1)


def _assert_close(actual, expected):
  actual = np.asarray(actual, np.float64)
  assert actual.shape == expected.shape
  np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_inception_weight_file_layout():
  shapes = inception.weight_shapes()
  assert len(shapes) == 94 * 5  # 94 conv units, each a conv and 4 BatchNorm arrays.
  assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
  assert shapes["Mixed_6b.branch7x7_2.conv.weight"] == (128, 128, 1, 7)
  assert shapes["Mixed_7c.branch_pool.bn.running_var"] == (192,)
  parameters = sum(np.prod(shape) for key, shape in shapes.items()
                   if not key.endswith(("running_mean", "running_var")))
  assert parameters == TORCHVISION_PARAMETERS


def test_inception_blocks_equal_float64_numpy(weights):
  """The stem's first unit (stride 2, no padding) and the two pooled block
  kinds whose pool branches make the variants differ, in both variants."""
  path, state = weights
  rng = np.random.default_rng(1)
  image = rng.uniform(-1, 1, (2, 11, 13, 3))
  for variant, (pool, last_pool) in inception.VARIANTS.items():
    model = inception.load_inception(path, variant=variant)
    _assert_close(model.Conv2d_1a_3x3(jnp.asarray(image, jnp.float32)),
                  _unit(state, "Conv2d_1a_3x3", image, stride=(2, 2), padding=(0, 0)))
    x = rng.uniform(0, 1, (1, 5, 6, 192))
    _assert_close(model.Mixed_5b(jnp.asarray(x, jnp.float32)),
                  _block_a(state, "Mixed_5b", x, pool))
    x = rng.uniform(0, 1, (1, 4, 5, 2048))
    _assert_close(model.Mixed_7c(jnp.asarray(x, jnp.float32)),
                  _block_e(state, "Mixed_7c", x, last_pool))


def test_inception_features_of_frames(weights):
  """frames [N, H, W, 3] uint8 of any size -> [N, 2048], deterministic."""
  path, _ = weights
  network = features.load_network("inception_v3", path)
  frames = np.random.default_rng(2).integers(0, 256, (2, 24, 40, 3), np.uint8)
  first = network(frames)
  assert first.shape == (2, inception.FEATURE_CHANNELS) and first.dtype == np.float64
  assert np.all(np.isfinite(first)) and np.all(first >= 0)  # Means of ReLUs.
  assert not np.allclose(first[0], first[1])
  np.testing.assert_array_equal(network(frames), first)


def test_inception_refuses_bad_weights(weights, tmp_path, monkeypatch):
  """One line naming the problem: no file given, a missing key, a shape."""
  path, state = weights
  monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
  with pytest.raises(ValueError, match="no Inception-v3 weights ship offline; pass "
                     "--inception-weights PATH"):
    features.load_network("inception_v3")
  monkeypatch.setenv(inception.WEIGHTS_ENV, str(path))
  assert inception.weights_path() == path
  missing = dict(state)
  del missing["Mixed_6c.branch7x7dbl_3.bn.running_var"]
  np.savez(tmp_path / "missing.npz", **missing)
  with pytest.raises(ValueError, match="no 'Mixed_6c.branch7x7dbl_3.bn.running_var'"):
    inception.load_inception(tmp_path / "missing.npz")
  transposed = dict(state)
  transposed["Mixed_5b.branch5x5_2.conv.weight"] = np.zeros((48, 64, 5, 5), np.float32)
  np.savez(tmp_path / "transposed.npz", **transposed)
  with pytest.raises(ValueError, match=r"'Mixed_5b.branch5x5_2.conv.weight' has shape "
                     r"\(48, 64, 5, 5\); Inception-v3's is \(64, 48, 5, 5\)"):
    inception.load_inception(tmp_path / "transposed.npz")
  np.save(tmp_path / "one.npy", np.zeros(3))
  with pytest.raises(ValueError, match="not an .npz of named arrays"):
    inception.load_inception(tmp_path / "one.npy")
  with pytest.raises(ValueError, match="variant 'tf'"):
    inception.load_inception(path, variant="tf")
