"""The default model shipped inside the package (`spectral_jax/default_model/`,
docs/MODEL_CARD.md): its format and size, and what it does on the bundled
example photo, which no stage of it trained on (`tools/train_demo.sh` holds
it out), against pictures with nothing that sways."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from spectral_jax import cli
from spectral_jax.inference import export, pictures
from spectral_jax.inference.animator import DEFAULT_MODEL, Animator, resolve_checkpoint

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ladybird.jpg"
SEEDS = (0,)


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


@pytest.fixture(scope="module")
def ladybird(animator):
  return _spectral(animator, _framed(animator, pictures.read_picture(EXAMPLE)))


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


def test_plants_move_and_a_picture_without_them_stays_still(animator, ladybird):
  """Measured with seed 0: 0.119 px on the example against 0.003 px on a
  wall of grey blocks (0.003 on a plain blue or grey picture)."""
  height, width = animator.height, animator.width
  blocks = np.kron(np.random.default_rng(0).integers(80, 200, (height // 8, width // 8, 1)),
                   np.ones((8, 8, 3))).astype(np.uint8)
  plants, still = _mean_amplitude(ladybird), _mean_amplitude(_spectral(animator, blocks))
  assert plants > 5 * still, (plants, still)


def test_its_power_falls_with_frequency_above_the_lowest_bin(ladybird):
  """Over bins 2..15 (0.4-3 Hz) the log-log slope is -1.07 with seed 0.
  Bin 1 (0.2 Hz) is left out because one sample's power per bin is
  heavy-tailed: with this seed bin 1 is 170x weaker than bin 2 (slope +0.43
  over bins 1..15), while pooled over seeds 0..7 of the 6 held-out photos it
  is 0.6x bin 2 and the slope over bins 1..15 is -1.09 (docs/MODEL_CARD.md);
  sampling that many here would take minutes."""
  power = np.mean(np.abs(ladybird[:, 2:])**2, axis=(0, 2, 3, 4))  # [K - 2] px^2.
  bins = np.arange(2, len(power) + 2)
  assert np.polyfit(np.log(bins), np.log(power), 1)[0] < -0.5


@pytest.mark.slow
def test_animate_without_a_checkpoint_animates_the_example(tmp_path):
  """README's first command (fewer frames)."""
  out = tmp_path / "ladybird.mp4"
  assert cli.main(["animate", str(EXAMPLE), "-o", str(out), "--frames", "12"]) == 0
  frames = iio.imread(out)
  assert frames.shape == (12, 160, 256, 3)
  picture = _framed(Animator.load(DEFAULT_MODEL), pictures.read_picture(EXAMPLE))
  # Frame 0 is the picture, up to H.264's rounding.
  assert np.abs(frames[0].astype(float) - picture).mean() < 3.0
  assert np.abs(frames[-1].astype(float) - frames[0]).mean() > 0.1
