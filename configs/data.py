"""Data-preparation variants for `spectral-jax prepare --config configs/data.py:VARIANT`.

Each variant lists what differs from the paper's defaults (ClipConfig and the
`prepare` flags: 150 frames at 30 fps, 256x160, K=16, stride 10, 97th
percentile); flags given on the command line override it.

  paper  the defaults (first versions of the paper)
  cvpr   95th-percentile normalization, as in the CVPR version
  hires  512x288 clips for high-resolution fine-tuning
  tiny   short, small clips that prepare in seconds on a laptop CPU
"""

import ml_collections

_VARIANTS = {
    "paper": {},
    "cvpr": {"percentile": 95.0},
    "hires": {"size": "512x288"},
    "tiny": {"frames": 32, "size": "64x48", "K": 8, "stride": 8, "static_px": 0.01},
}


def get_config(variant: str = "paper") -> ml_collections.ConfigDict:
  if variant not in _VARIANTS:
    raise ValueError(f"unknown data variant {variant!r}; one of {sorted(_VARIANTS)}")
  return ml_collections.ConfigDict(_VARIANTS[variant])
