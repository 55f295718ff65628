"""The training configs' variants: `demo` is `tiny` with the values its
``DEMO`` tables name (`config_base.demo`), and nothing else differs."""

from __future__ import annotations

from pathlib import Path

import pytest

from spectral_jax.config_base import load_config_file

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
STAGES = ("vae", "ldm_pretrain", "ldm_freq_attn", "renderer")


def _flat(tree: dict, prefix: str = "") -> dict:
  flat = {}
  for name, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flat(value, f"{prefix}{name}."))
    else:
      flat[f"{prefix}{name}"] = value
  return flat


@pytest.mark.parametrize("stage", STAGES)
def test_demo_is_tiny_with_its_listed_changes(stage):
  tiny = _flat(load_config_file(CONFIGS / f"{stage}.py", "tiny").to_dict())
  demo = _flat(load_config_file(CONFIGS / f"{stage}.py", "demo").to_dict())
  assert set(demo) == set(tiny)
  changed = {name for name in tiny if tiny[name] != demo[name]}
  common = {"variant", "checkpoint_every", "data.width", "data.height", "data.num_freqs",
            "data.synthetic.num_frames"}
  own = {"vae": {"model.base_channels", "model.shortcut", "num_steps"},
         "ldm_pretrain": {"diffusion.schedule.zero_terminal_snr", "diffusion.prediction",
                          "num_steps"},
         "ldm_freq_attn": {"diffusion.schedule.zero_terminal_snr", "diffusion.prediction",
                           "num_steps"},
         "renderer": {"loss.perceptual_weight", "model.fill_coverage", "batch_size",
                      "num_steps"}}[stage]
  # The renderer's 256x160 differs from the common 128x80, but both differ from tiny's.
  assert changed == common | own, sorted(changed ^ (common | own))
  assert demo["variant"] == "demo"


def test_stage2_demo_builds_on_stage1_demo():
  """Stage 2 of the demo trains on what stage 1 of the demo learned to predict."""
  stage1 = load_config_file(CONFIGS / "ldm_pretrain.py", "demo")
  stage2 = load_config_file(CONFIGS / "ldm_freq_attn.py", "demo")
  assert stage2.diffusion.to_dict() == stage1.diffusion.to_dict()
  assert stage2.model.to_dict() == {**stage1.model.to_dict(), "freq_attention": "attention"}
