"""The `spectral-jax` command: parses the command line and hands it to the
command's module in `spectral_jax.apps` (``run(args)``).

Each command's module defines its own options (``HELP``, optional
``DESCRIPTION``, ``add_arguments(parser)``, optional ``finish_args(args)``).
Building the parser imports them all, so their top-level imports stay
light and their work's imports are in ``run``: `spectral-jax --help` and
the NumPy/OpenCV commands start fast and never load JAX.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# The commands, in the order `spectral-jax --help` lists them; each is the
# module `spectral_jax.apps.<command>`.
COMMANDS = ("motion", "synth", "prepare", "animate", "interact", "export", "eval", "fvd")


def _app(command: str):
  return importlib.import_module(f"spectral_jax.apps.{command}")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="spectral-jax",
      description="Animate still pictures with predicted spectral volumes of natural motion.")
  parser.add_argument("--debug", action="store_true",
                      help="show the full traceback of an error")
  commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
  for command in COMMANDS:
    app = _app(command)
    app.add_arguments(commands.add_parser(command, help=app.HELP,
                                          description=getattr(app, "DESCRIPTION", None)))
  return parser


def parse_args(argv=None) -> argparse.Namespace:
  """Parses ``argv``, then lets the command's module fill in what it takes
  from elsewhere (`prepare.finish_args`: its data config).

  Raises:
    ValueError: what ``finish_args`` refuses (a bad data config).
  """
  args = build_parser().parse_args(argv)
  finish = getattr(_app(args.command), "finish_args", None)
  if finish is not None:
    finish(args)
  return args


def main(argv=None) -> int:
  try:
    args = parse_args(argv)
  except ValueError as error:
    print(f"spectral-jax: error: {error}", file=sys.stderr)
    return 2
  try:
    _app(args.command).run(args)
  # Bad input (VideoError, PrepareError and argument checks are ValueErrors)
  # and unwritable outputs get one line, not a traceback.
  except (ValueError, OSError) as error:
    if args.debug:
      raise
    print(f"spectral-jax {args.command}: error: {error}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print(f"spectral-jax {args.command}: interrupted", file=sys.stderr)
    return 130
  return 0


if __name__ == "__main__":
  sys.exit(main())
