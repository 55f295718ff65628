"""Command-line parsing that `python -m spectral_jax.train` and
`python -m spectral_jax.train.compile` share: a training config and its
overrides, checked before anything runs."""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

import ml_collections
from absl import flags

from spectral_jax.config_base import check_config, load_config_file


def parse_flags(argv: list[str], config, prog: str) -> list[str]:
  """absl's flag parsing of ``argv`` (``config``: the ``--config`` flag's
  holder), but a bad flag, config file, override or config value is one
  line on stderr, ``PROG: error: ...``, and exit status 2, not a
  traceback: before JAX is imported and before anything is written."""
  try:
    rest = flags.FLAGS(argv)
    # ml_collections defers a config file's load error to the config's
    # first use; use it now.
    config.value.keys()
    if len(rest) > 1:
      raise flags.Error(f"unexpected arguments: {' '.join(rest[1:])}")
    check_config(config.value)
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
  print(f"{prog}: error: {message}", file=sys.stderr)
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
