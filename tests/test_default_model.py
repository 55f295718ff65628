"""The default model shipped inside the package (`spectral_jax/default_model/`,
docs/MODEL_CARD.md): its format and size, the sampling it loads with, what it
does on the bundled example photo, which no stage of it trained on
(`tools/train_demo.sh` holds it out), against pictures with nothing that
sways, and its outputs against golden ones.

The golden outputs (`GOLDEN`) are the model's spectral volumes on the example
and on grey blocks, saved when the model was shipped. Retraining the model
changes them; regenerate them with

    python tests/test_default_model.py

(`tools/train_demo.sh` runs it after exporting the model).
"""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from spectral_jax import cli
from spectral_jax.data import pictures
from spectral_jax.inference import export
from spectral_jax.inference.animator import DEFAULT_MODEL, Animator, resolve_checkpoint

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ladybird.jpg"
SEEDS = (0,)
GOLDEN = Path(__file__).resolve().parent / "golden" / "default_model.npz"
# Spectral volumes are compared average-pooled over POOL x POOL pixels (the
# golden file stays small), as ||pooled - golden|| / ||golden|| over a whole
# volume. A run on another CPU or a GPU differs by float rounding compounded
# over 25 DDIM steps; sampling without the model's zero-terminal-SNR schedule
# changes them by 0.2 of their norm (1e-5 between this CPU's XLA settings).
POOL = 16
GOLDEN_RTOL = 0.01


@pytest.fixture(scope="module")
def animator():
  return Animator.load(DEFAULT_MODEL)


def _framed(animator, picture):
  return pictures.fit_picture(picture, animator.width, animator.height)[0]


def _spectral(animator, picture) -> np.ndarray:
  """``[seeds, K, H, W, 2]`` complex spectral volumes (px), default sampling."""
  return np.stack([animator.spectral(picture, seed) for seed in SEEDS])


def _mean_amplitude(spectral) -> float:
  """Mean over seeds and pixels of the motion's amplitude (px); bin 0 is a
  constant offset the motion texture removes, not motion."""
  return float(np.sqrt(np.sum(np.abs(spectral[:, 1:])**2, axis=(1, 4))).mean())


def _blocks(animator) -> np.ndarray:
  """A wall of grey 8x8-pixel blocks: texture, but nothing that sways."""
  height, width = animator.height, animator.width
  return np.kron(np.random.default_rng(0).integers(80, 200, (height // 8, width // 8, 1)),
                 np.ones((8, 8, 3))).astype(np.uint8)


@pytest.fixture(scope="module")
def ladybird(animator):
  return _spectral(animator, _framed(animator, pictures.read_picture(EXAMPLE)))


@pytest.fixture(scope="module")
def blocks(animator):
  return _spectral(animator, _blocks(animator))


def _pooled(spectral) -> np.ndarray:
  """``[..., K, H, W, 2]`` → ``[..., K, H / POOL, W / POOL, 2]`` complex64 means."""
  *lead, k, height, width, axes = spectral.shape
  shape = (*lead, k, height // POOL, POOL, width // POOL, POOL, axes)
  return spectral.reshape(shape).mean(axis=(-4, -2)).astype(np.complex64)


def golden_outputs(ladybird, blocks) -> dict[str, np.ndarray]:
  """What `GOLDEN` holds: the pooled spectral volumes, one per seed."""
  return {"ladybird": _pooled(ladybird), "blocks": _pooled(blocks)}


def test_it_is_a_float16_export_of_at_most_40_mb():
  assert resolve_checkpoint(None) == DEFAULT_MODEL
  manifest = json.loads((DEFAULT_MODEL / export.MANIFEST).read_text())
  assert manifest["dtype"] == "float16"
  size = sum(path.stat().st_size for path in DEFAULT_MODEL.iterdir())
  assert size <= 40 * 2**20, size
  motion = manifest["motion"]["config"]["data"]
  renderer = manifest["renderer"]["config"]["data"]
  assert (motion["width"], motion["height"]) == (128, 80)
  assert (renderer["width"], renderer["height"]) == (256, 160)
  assert motion["num_freqs"] == 16
  assert manifest["motion"]["clip"] == {"num_frames": 150, "fps": 30.0}


def test_it_samples_with_the_schedule_and_prediction_it_was_trained_with(animator):
  """v-prediction on LDM's scaled-linear schedule rescaled to zero terminal
  SNR (docs/MODEL_CARD.md), as exported and as loaded, against the
  schedule's closed form in float64."""
  manifest = json.loads((DEFAULT_MODEL / export.MANIFEST).read_text())
  exported = manifest["motion"]["config"]["diffusion"]
  assert exported["prediction"] == "v"
  assert exported["schedule"] == {"kind": "scaled_linear", "num_steps": 1000,
                                  "beta_start": 0.00085, "beta_end": 0.012,
                                  "zero_terminal_snr": True}
  config = animator.motion.config.diffusion
  assert config.prediction == "v" and config.schedule.zero_terminal_snr
  root = np.sqrt(np.cumprod(1 - np.linspace(0.00085**0.5, 0.012**0.5, 1000)**2))
  alphas_cumprod = ((root - root[-1]) * root[0] / (root[0] - root[-1]))**2
  loaded = np.asarray(animator.motion.schedule.alphas_cumprod, np.float64)
  assert loaded[-1] == 0.0
  np.testing.assert_allclose(loaded, alphas_cumprod, rtol=1e-5, atol=1e-9)


def test_it_samples_its_golden_outputs(ladybird, blocks):
  """The example and the grey blocks, seed 0, default sampling, against
  `GOLDEN` (see the module docstring to regenerate it)."""
  golden = np.load(GOLDEN)
  for name, value in golden_outputs(ladybird, blocks).items():
    assert value.shape == golden[name].shape, name
    error = np.linalg.norm(value - golden[name]) / np.linalg.norm(golden[name])
    assert error < GOLDEN_RTOL, (name, error)


def test_plants_move_and_a_picture_without_them_stays_still(ladybird, blocks):
  """Measured with seed 0: 0.086 px on the example against 0.018 px on a
  wall of grey blocks; a picture without plants must stay below 0.05 px
  (docs/MODEL_CARD.md)."""
  plants, still = _mean_amplitude(ladybird), _mean_amplitude(blocks)
  assert still < 0.05 and plants > 3 * still, (plants, still)


def test_its_power_falls_with_frequency_above_the_lowest_bin(ladybird):
  """Over bins 2..15 (0.4-3 Hz) the log-log slope is -1.33 with seed 0.
  Bin 1 (0.2 Hz) is left out because one sample's power per bin is
  heavy-tailed: with this seed bin 1 is 18x weaker than bin 2, while pooled
  over seeds 0..7 of the 6 held-out photos the slope over bins 1..15 is
  -1.08 (docs/MODEL_CARD.md); sampling that many here would take minutes."""
  power = np.mean(np.abs(ladybird[:, 2:])**2, axis=(0, 2, 3, 4))  # [K - 2] px^2.
  bins = np.arange(2, len(power) + 2)
  assert np.polyfit(np.log(bins), np.log(power), 1)[0] < -0.5


@pytest.mark.slow
def test_animate_without_a_checkpoint_animates_the_example(tmp_path):
  """README's first command (fewer frames): a video at the photo's own
  size, its longest side capped at 512 (the 1024x640 photo: 512x320)."""
  out = tmp_path / "ladybird.mp4"
  assert cli.main(["animate", str(EXAMPLE), "-o", str(out), "--frames", "12"]) == 0
  frames = iio.imread(out)
  assert frames.shape == (12, 320, 512, 3)
  picture, _ = pictures.fit_picture(pictures.read_picture(EXAMPLE), 512, 320)
  # Frame 0 is the picture, up to H.264's rounding.
  assert np.abs(frames[0].astype(float) - picture).mean() < 3.0
  assert np.abs(frames[-1].astype(float) - frames[0]).mean() > 0.1


if __name__ == "__main__":
  model = Animator.load(DEFAULT_MODEL)
  outputs = golden_outputs(_spectral(model, _framed(model, pictures.read_picture(EXAMPLE))),
                           _spectral(model, _blocks(model)))
  GOLDEN.parent.mkdir(exist_ok=True)
  np.savez_compressed(GOLDEN, **outputs)
  print(f"{GOLDEN}: {', '.join(f'{k} {v.shape}' for k, v in outputs.items())}")
