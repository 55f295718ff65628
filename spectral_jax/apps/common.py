"""What several commands' ``run`` share: the clip options read as a
`ClipConfig`, and output checks (the options themselves: `options`)."""

from __future__ import annotations

from pathlib import Path


def clip_config(args, **overrides):
  """The `ClipConfig` of the clip options (`--frames --fps --size --K
  --preset --fb-check`), with ``overrides``."""
  from spectral_jax.data.clips import ClipConfig
  from spectral_jax.data.video import parse_size
  from spectral_jax.motion.flow import FlowConfig
  width, height = parse_size(args.size)
  return ClipConfig(num_frames=args.frames, fps=args.fps, width=width, height=height,
                    num_freqs=args.K,
                    flow=FlowConfig(preset=args.preset, forward_backward=args.fb_check),
                    **overrides)


def check_output(path, suffixes) -> None:
  """Raises ValueError unless ``path`` ends in one of ``suffixes`` and its
  folder exists (a typo in a folder name is an error, not a new folder)."""
  path = Path(path)
  if path.suffix.lower() not in suffixes:
    raise ValueError(f"output {path} must end in {' or '.join(suffixes)}")
  if not path.absolute().parent.is_dir():
    raise ValueError(f"output {path}: no folder {path.absolute().parent}")
