"""``python -m spectral_jax.train --config configs/STAGE.py:VARIANT --workdir DIR``.

Overrides: ``--config.key=value`` (e.g. ``--config.data.dir=data``,
``--config.num_steps=100``). Running the same command on a workdir that has
checkpoints resumes where it stopped.
"""

from __future__ import annotations

import difflib
import errno
import logging as python_logging
import sys
from pathlib import Path

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from spectral_jax.config_base import check_config, load_config_file

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/STAGE.py:VARIANT",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints and metrics go")
_NO_PROGRESS = flags.DEFINE_bool("no_progress", False, "no progress bar")
flags.mark_flags_as_required(["config", "workdir"])

_PROG = "python -m spectral_jax.train"


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, but a bad flag, config file, override or config
  value is one line on stderr and exit status 2, not a traceback: before
  JAX is imported and before the workdir exists."""
  try:
    rest = flags.FLAGS(argv)
    # ml_collections defers a config file's load error to the config's
    # first use; use it now.
    _CONFIG.value.keys()
    if len(rest) > 1:
      raise flags.Error(f"unexpected arguments: {' '.join(rest[1:])}")
    check_config(_CONFIG.value)
    return rest
  except flags.Error as error:
    # A config file's own ValueError comes with its traceback, whose last
    # line says what is wrong.
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    message = lines[0] if len(lines) == 1 else f"{lines[0].rstrip(':')}: {lines[-1]}"
  except ValueError as error:  # A value out of its range (`check_config`).
    message = str(error)
  # The config file could not be read (OSError), or an override names no
  # setting (AttributeError or KeyError, the message naming neither).
  except (OSError, AttributeError, KeyError) as error:
    message = _config_problem(argv) or str(error).strip().splitlines()[-1].strip()
  print(f"{_PROG}: error: {message}", file=sys.stderr)
  sys.exit(2)


def _config_problem(argv: list[str]) -> str | None:
  """What is wrong with ``--config FILE[:VARIANT]`` and its ``--config.KEY``
  overrides in ``argv``; None if that cannot be told."""
  spec, overrides = None, []
  for index, arg in enumerate(argv):
    name, equals, value = arg.lstrip("-").partition("=")
    if name == "config":
      spec = value if equals else (argv[index + 1] if index + 1 < len(argv) else None)
    elif name.startswith("config."):
      overrides.append(name.removeprefix("config."))
  if not spec:
    return None
  path, _, variant = spec.partition(":")
  if not Path(path).is_file():
    return f"--config: no such file {path}"
  try:
    config = load_config_file(path, variant or None)
  except Exception:  # pylint: disable=broad-except
    return None  # Not a key problem: absl's message is all there is.
  for override in overrides:
    node, parts = config, override.split(".")
    for depth, key in enumerate(parts):
      keys = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      if key not in keys:
        parent = "".join(f"{part}." for part in parts[:depth])
        close = difflib.get_close_matches(key, keys, n=1)
        hint = f"; did you mean '{parent}{close[0]}'?" if close else ""
        return f"--config.{override}: {spec} has no setting '{parent}{key}'{hint}"
      node = node[key]
  return None


def main(argv) -> None:
  del argv  # `_parse_flags` refuses arguments that are not flags.
  # Orbax logs every save step at INFO; the progress bar says enough.
  logging.set_verbosity(logging.WARNING)
  from spectral_jax.train import train
  try:
    train.run(_CONFIG.value, _WORKDIR.value, progress=not _NO_PROGRESS.value)
  except Exception as error:  # pylint: disable=broad-except
    if _out_of_space(error):
      # Checkpoints are written under a temporary name and renamed when
      # whole, so the last finished one is intact. Orbax's writer threads
      # have logged their failures; the futures they leave log them again
      # when collected at exit, which would bury this line under tracebacks.
      python_logging.disable(python_logging.CRITICAL)
      print(f"error: {_WORKDIR.value}: no space left on the device; free some and run the "
            "same command again: it resumes from the last finished checkpoint",
            file=sys.stderr)
      sys.exit(1)
    if not isinstance(error, (train.TrainingDiverged, ValueError, FileNotFoundError)):
      raise
    print(f"error: {error}", file=sys.stderr)
    sys.exit(1)


def _out_of_space(error: BaseException) -> bool:
  """Whether ``error``, or one it was raised from or during, is a full disk
  or quota: an OSError of Python's writes, or TensorStore's ValueError
  (``RESOURCE_EXHAUSTED: ... [os_error_code='28']``) of Orbax's array writes,
  which is what a checkpoint save that meets a full disk raises."""
  codes = (errno.ENOSPC, errno.EDQUOT)
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in codes:
      return True
    if any(f"[os_error_code='{code}']" in str(error) for code in codes):
      return True
    error = error.__cause__ or error.__context__
  return False


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
