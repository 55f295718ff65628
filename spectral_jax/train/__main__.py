"""``python -m spectral_jax.train --config configs/STAGE.py:VARIANT --workdir DIR``.

Overrides: ``--config.key=value`` (e.g. ``--config.data.dir=data``,
``--config.num_steps=100``). Running the same command on a workdir that has
checkpoints resumes where it stopped.
"""

from __future__ import annotations

import errno
import functools
import logging as python_logging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from spectral_jax.train import command_line

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/STAGE.py:VARIANT",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints and metrics go")
_NO_PROGRESS = flags.DEFINE_bool("no_progress", False, "no progress bar")
flags.mark_flags_as_required(["config", "workdir"])

_PROG = "python -m spectral_jax.train"
# absl's parser, but bad input is one line (`command_line.parse_flags`).
parse_flags = functools.partial(command_line.parse_flags, config=_CONFIG, prog=_PROG)


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
      # have logged their failures; the futures and coroutines they leave
      # would log and warn again when the interpreter collects them at exit,
      # burying this line, so the process ends without that teardown.
      python_logging.disable(python_logging.CRITICAL)
      print(f"error: {_WORKDIR.value}: no space left on the device; free some and run the "
            "same command again: it resumes from the last finished checkpoint",
            file=sys.stderr)
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(1)  # pylint: disable=protected-access
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
  app.run(main, flags_parser=parse_flags)
