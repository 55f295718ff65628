"""`spectral-jax export --checkpoint RUNS -o OUT_DIR`: trained models in the
project's export format (`spectral_jax.inference.export`): safetensors
weights and one ``model.json``, loadable without Orbax, onto any device,
by ``animate --checkpoint OUT_DIR`` like the runs themselves.
"""

from __future__ import annotations

from pathlib import Path


def run(args) -> None:
  from spectral_jax.inference import export

  manifest = export.write(args.checkpoint, args.output, dtype=args.dtype)
  out = Path(args.output)
  sizes = {name: (out / manifest[name]["file"]).stat().st_size for name in export.MODELS}
  parts = ", ".join(f"{name} ({manifest[name]['run']} step {manifest[name]['step']}) "
                    f"{sizes[name] / 2**20:.2f} MiB" for name in export.MODELS)
  print(f"{out}: {manifest['dtype']} export of {parts}; "
        f"{sum(sizes.values()) / 2**20:.2f} MiB of weights")
