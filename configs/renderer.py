"""Stage ``renderer``: feature pyramid of the picture → softmax splatting by
D_t → co-modulated synthesis of frame t.

  python -m spectral_jax.train --config configs/renderer.py:tiny --workdir runs/renderer

It trains on frames I_t with their displacements D_t: a prepared data set
keeps ``num_render_frames`` of them per clip; the ``tiny`` variant's
synthetic scenes render 4 per example on the fly.

The paper: ResNet-34 feature encoder (widths (64, 128, 256, 512), depths
(3, 4, 6, 3)), softmax splatting with the metric mean_t ||D_t||, VGG
perceptual loss; Adam, learning rate 1e-4, batch 32, 300K steps at 256x160.
The ``hires`` variant fine-tunes a ``paper`` run at 512x288
(``--config.init_from=DIR``); its length and learning rate are ours.
"""

import ml_collections

from spectral_jax.config_base import base_config, demo


# The default model's renderer (`demo`): tiny's, at 256x160, the size its
# motion model's 128x80 prediction is upsampled to (`animate`). L1 alone: VGG
# at 256x160 would be most of a CPU step, and the gated synthesis learns to
# fill holes from L1 (docs/DESIGN.md §2). Trained on L1 alone, a linearly
# gated paint buys PSNR with texture in stretched pixels (coverage 0.5-0.99,
# 5% of a held-out frame) that LPIPS sees; gated by clip(1 - 2c, 0, 1) it
# paints holes and the fringes of holes only (docs/DESIGN.md §2 measures the
# gates).
DEMO = {"data.width": 256, "data.height": 160, "loss.perceptual_weight": 0.0,
        "model.fill_coverage": 0.5, "batch_size": 4, "num_steps": 500}


def get_config(variant: str = "paper") -> ml_collections.ConfigDict:
  if variant == "demo":
    return demo(get_config("tiny"), DEMO)
  config = base_config("renderer", variant)
  tiny = variant == "tiny"
  config.model = ml_collections.ConfigDict({
      "channels": (16, 32, 64, 64) if tiny else (64, 128, 256, 512),
      "depths": (1, 1, 1, 1) if tiny else (3, 4, 6, 3),
      "style_dim": 64 if tiny else 512,
      "norm_groups": 8 if tiny else 32,
      # The paint's gate clip(1 - coverage / fill_coverage, 0, 1)^fill_power
      # (`SynthesisDecoder`); 1 and 1 are the linear gate 1 - coverage.
      "fill_coverage": 1.0,
      "fill_power": 1.0,
  })
  config.loss = ml_collections.ConfigDict({
      "l1_weight": 1.0, "perceptual_weight": 1.0,
      # Per VGG16 layer relu1_2 .. relu5_3 (`train.losses`).
      "layer_weights": (1.0, 1.0, 1.0, 1.0, 1.0),
      "perceptual_distance": "l1",
  })
  # Softmax-splatting weight exp(metric_scale * mean_t ||D(t)|| px)
  # (`render.splat_metric`); 1 is the paper's metric as it stands. The only
  # default: a run's stats and an export carry it, and inference reads it there.
  config.metric_scale = 1.0
  # Frames with displacements per synthetic example (a prepared data set
  # fixes its own number).
  config.data.synthetic.num_render_frames = 4
  config.batch_size = 8 if tiny else 32
  config.num_steps = {"tiny": 1000, "paper": 300_000, "hires": 50_000}[variant]
  config.optimizer.learning_rate = {"tiny": 1e-3, "paper": 1e-4, "hires": 2e-5}[variant]
  config.eval.num_batches = 2 if tiny else 4
  return config
