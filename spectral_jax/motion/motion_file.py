"""The ``.npz`` file that holds one picture's spectral volume.

Written by `spectral-jax motion` and `synth`, read by `animate --motion`:

  spectral_volume  complex64 [K, H, W, 2], pixels (docs/DESIGN.md §1)
  image            uint8 [H, W, 3], the reference frame
  fps              frames/s the volume was measured at
  num_frames       T, the clip length of the transform
"""

from __future__ import annotations

import dataclasses

import numpy as np

from spectral_jax.atomic import atomic_output


@dataclasses.dataclass(frozen=True)
class Motion:
  spectral_volume: np.ndarray
  image: np.ndarray
  fps: float
  num_frames: int

  @property
  def num_freqs(self) -> int:
    return self.spectral_volume.shape[0]

  def save(self, path) -> None:
    with atomic_output(path) as tmp:
      np.savez_compressed(tmp, spectral_volume=self.spectral_volume.astype(np.complex64),
                          image=self.image, fps=np.float32(self.fps),
                          num_frames=np.int32(self.num_frames),
                          num_freqs=np.int32(self.num_freqs))

  @classmethod
  def load(cls, path) -> "Motion":
    with np.load(path) as data:
      return cls(data["spectral_volume"], data["image"], float(data["fps"]),
                 int(data["num_frames"]))
