"""`spectral-jax export --checkpoint RUNS -o OUT_DIR`: trained models in the
project's export format (`spectral_jax.inference.export`): safetensors
weights and one ``model.json``, loadable without Orbax, onto any device,
by ``animate --checkpoint OUT_DIR`` like the runs themselves; with
``--stablehlo``, also sampling and rendering as serialized `jax.export`
programs for CPU, CUDA and TPU that run with JAX alone
(`spectral_jax.inference.stablehlo`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "trained models as safetensors and one JSON, loadable without Orbax"
DESCRIPTION = (
    "Writes the models of a folder of training runs (the motion run, the VAE "
    "it pins, the renderer run) to OUT_DIR: safetensors weights and model.json, which "
    "animate and interact take as --checkpoint.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--checkpoint", metavar="DIR", required=True,
                      help="a folder of training runs (a renderer run and a motion run)")
  parser.add_argument("-o", "--output", metavar="OUT_DIR", required=True,
                      help="the export's folder (new, or an earlier export to replace)")
  parser.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                      help="weights' dtype: float32 exact, float16 half the size "
                      "(default %(default)s)")
  parser.add_argument("--stablehlo", action="store_true",
                      help="also write sample.jax and render.jax: jax.export programs for "
                      "CPU, CUDA and TPU that sample and render with nothing but JAX")


def run(args) -> None:
  from spectral_jax.inference import export

  manifest = export.write(args.checkpoint, args.output, dtype=args.dtype,
                          stablehlo=args.stablehlo)
  out = Path(args.output)
  sizes = {name: (out / manifest[name]["file"]).stat().st_size for name in export.MODELS}
  parts = ", ".join(f"{name} ({manifest[name]['run']} step {manifest[name]['step']}) "
                    f"{sizes[name] / 2**20:.2f} MiB" for name in export.MODELS)
  summary = (f"{out}: {manifest['dtype']} export of {parts}; "
             f"{sum(sizes.values()) / 2**20:.2f} MiB of weights")
  if "stablehlo" in manifest:
    programs = manifest["stablehlo"]
    summary += (f"; programs {programs['sample']['file']} and {programs['render']['file']} "
                f"for {', '.join(programs['platforms'])}")
  print(summary)
