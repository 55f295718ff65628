"""The renderer's softmax-splatting metric, one function for training and inference.

    metric(p) = metric_scale * (1/T) sum_{t=0}^{T-1} ||D(t, p)||_2

with ``D(t) = motion_texture(S, t, T)`` the displacement the spectral volume
``S`` gives at the T integer frame times of its clip (not ``D(t) - D(0)``:
that is what training has always used). Larger motion is foreground and wins
collisions in `softmax_splat` (``w = exp(metric)``).

It is a function of the spectral volume alone, never of the texture a video
shows, so neither ``--magnify`` nor slow motion nor the frames a video picks
change it: the renderer sees the metric it was trained with.

Units: pixels of the grid the volume is given on. A caller that resamples a
volume to another size must scale its displacements to the new pixels
(`data.pictures.fit_spectral` does), and then this is the metric in the
new size's pixels; ``metric_scale`` (``configs/renderer.py``, carried by a
run's or an export's stats) multiplies it.
"""

from __future__ import annotations

from spectral_jax.motion.spectral import array_module, motion_texture


def splat_metric(spectral_px, num_frames: int, metric_scale):
  """Splatting metric of a spectral volume (see the module docstring).

  Args:
    spectral_px: ``[K, H, W, 2]`` or ``[B, K, H, W, 2]`` complex spectral
      volume, pixels of its own grid, unmagnified; NumPy or JAX.
    num_frames: T, the clip length the volume was computed over: the mean
      is over the displacements at frames ``0 .. T-1``.
    metric_scale: multiplier (the run's ``metric_scale``).
  Returns:
    ``[H, W, 1]`` or ``[B, H, W, 1]`` float32 metric, pixels times
    ``metric_scale``; the array kind of ``spectral_px``.
  """
  xp = array_module(spectral_px)
  times = xp.arange(num_frames, dtype=xp.float32)
  # `motion_texture` sums over the leading axis K and keeps any others, so a
  # batch goes behind K rather than through a vmap.
  texture = motion_texture(xp.moveaxis(spectral_px, -4, 0), times, num_frames)  # [T, ..., 2]
  norm = xp.sqrt(xp.sum(xp.square(texture), axis=-1))
  return (metric_scale * xp.mean(norm, axis=0))[..., None].astype(xp.float32)
