"""Data configs of `spectral-jax prepare --config configs/data.py:VARIANT`.

A data config holds every setting of `prepare`, named as its options
(``--render-frames`` is ``render_frames``); options given on the command line
override it. The numbers are not written here: the paper's, and the clips of
the training variants, live in `spectral_jax/data/defaults.py`, which the
library's own defaults read too (only the `spectral_jax` package is
installed, so it cannot import this folder). A variant below lists only what
it changes.

  paper  the paper's settings (its first versions)
  cvpr   95th-percentile normalization, as in the CVPR version
  hires  the `hires` training variant's clips, for high-resolution fine-tuning
  tiny   the `tiny` training variant's clips, short and small: they prepare in
         seconds on a laptop CPU
"""

import ml_collections

from spectral_jax.data import defaults

# Each variant: the training variant whose clips it prepares
# (`defaults.VARIANT_CLIPS`), and the settings it changes beyond those.
_VARIANTS = {
    "paper": ("paper", {}),
    "cvpr": ("paper", {"percentile": 95.0}),
    "hires": ("hires", {}),
    "tiny": ("tiny", {"stride": 8, "static_px": 0.01}),
}


def get_config(variant: str = "paper") -> ml_collections.ConfigDict:
  if variant not in _VARIANTS:
    raise ValueError(f"unknown data variant {variant!r}; one of {sorted(_VARIANTS)}")
  clips, changes = _VARIANTS[variant]
  return ml_collections.ConfigDict({**defaults.prepare_settings(clips), **changes})
