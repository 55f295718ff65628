"""``python -m spectral_jax.train --config configs/STAGE.py:VARIANT --workdir DIR``.

Overrides: ``--config.key=value`` (e.g. ``--config.data.dir=data``,
``--config.num_steps=100``). Running the same command on a workdir that has
checkpoints resumes where it stopped.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/STAGE.py:VARIANT",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints and metrics go")
_NO_PROGRESS = flags.DEFINE_bool("no_progress", False, "no progress bar")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  # Orbax logs every save step at INFO; the progress bar says enough.
  logging.set_verbosity(logging.WARNING)
  from spectral_jax.train import train
  try:
    train.run(_CONFIG.value, _WORKDIR.value, progress=not _NO_PROGRESS.value)
  except (train.TrainingDiverged, ValueError, FileNotFoundError) as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
