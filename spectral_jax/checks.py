"""Range checks of numbers given by users: command-line options (argparse
``type=``) and training config values."""

from __future__ import annotations

import argparse
import math
import re

# The largest side of a video or page `animate` and `interact` write, px.
MAX_VIDEO_SIDE = 2048


def number(kind=float, *, low=None, high=None, low_open: bool = False,
           high_open: bool = False):
  """An argparse ``type=``: a finite ``kind`` (int or float) in a range.

  A value outside it raises `argparse.ArgumentTypeError`, so argparse prints
  the usage and one line naming the option, and exits with status 2 before
  the command imports anything heavy or writes anything.

  Args:
    kind: ``int`` or ``float``.
    low, high: bounds, at least one of them; None for none.
    low_open, high_open: exclude the bound itself.

  Returns:
    The function argparse calls on the option's text (also on a config
    file's value for it, see `spectral_jax.apps.prepare.data_config`).
  """
  if low is not None and high is not None:
    wanted = (f"in {'(' if low_open else '['}{low:g}, {high:g}"
              f"{')' if high_open else ']'}")
  elif low is not None:
    wanted = f"{'greater than' if low_open else 'at least'} {low:g}"
  else:
    wanted = f"{'less than' if high_open else 'at most'} {high:g}"
  noun = "an integer" if kind is int else "a number"

  def parse(text):
    try:
      value = kind(text)
    except (TypeError, ValueError):
      raise argparse.ArgumentTypeError(f"must be {noun} {wanted}, got {text!r}") from None
    # NaN fails every comparison, so the range test below would let it in.
    if not math.isfinite(value):
      raise argparse.ArgumentTypeError(f"must be a finite number {wanted}, got {text}")
    if ((low is not None and (value <= low if low_open else value < low))
        or (high is not None and (value >= high if high_open else value > high))):
      raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
    return value

  return parse


def video_size(text: str):
  """An argparse ``type=`` for ``--size``: ``"full"``, ``"model"`` or
  ``"WxH"`` → ``(W, H)``, sides 1 to `MAX_VIDEO_SIDE` px."""
  if text in ("full", "model"):
    return text
  match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
  if not match:
    raise argparse.ArgumentTypeError(
        f"must be WIDTHxHEIGHT (e.g. 512x320), full or model, got {text!r}")
  width, height = int(match.group(1)), int(match.group(2))
  if not (0 < width <= MAX_VIDEO_SIDE and 0 < height <= MAX_VIDEO_SIDE):
    raise argparse.ArgumentTypeError(
        f"sides must be 1 to {MAX_VIDEO_SIDE} px, got {text!r}")
  return width, height
