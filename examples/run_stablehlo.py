"""Animates a picture with an export's programs and nothing but JAX.

  python run_stablehlo.py EXPORT_DIR PICTURE.npy OUT.npz [--seed N] [--frames N] [--magnify M]

EXPORT_DIR is made by ``spectral-jax export --checkpoint RUNS -o EXPORT_DIR
--stablehlo``; PICTURE.npy holds a uint8 ``[H, W, 3]`` picture at the
export's size (``model.json``: ``stablehlo.sample.picture``). OUT.npz gets
``spectral`` (``[K, H, W, 2]`` complex64, pixels) and ``frames`` (``[N, H,
W, 3]`` uint8). Needs only ``jax`` and ``flatbuffers`` (``pip install jax
flatbuffers``; ``jax[cuda13]`` or ``jax[tpu]`` to run on a GPU or TPU), not
spectral_jax: copy this file anywhere.
"""

import argparse
import json
import struct
from pathlib import Path

import jax
import numpy as np

SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "I32": np.int32, "I64": np.int64}


def read_safetensors(path: Path) -> dict:
  """``{name: array}`` of a safetensors file: an 8-byte little-endian header
  length, a JSON header of dtypes, shapes and byte ranges, then the bytes."""
  data = path.read_bytes()
  (header_size,) = struct.unpack("<Q", data[:8])
  header = json.loads(data[8:8 + header_size])
  header.pop("__metadata__", None)
  body = data[8 + header_size:]
  return {name: np.frombuffer(body[begin:end], SAFETENSORS_DTYPES[entry["dtype"]])
          .reshape(entry["shape"])
          for name, entry in header.items() for begin, end in [entry["data_offsets"]]}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("export_dir", type=Path)
  parser.add_argument("picture", type=Path)
  parser.add_argument("out", type=Path)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--frames", type=int, default=16, help="frames from time 0 on")
  parser.add_argument("--magnify", type=float, default=1.0)
  args = parser.parse_args()

  model = json.loads((args.export_dir / "model.json").read_text())
  weights = {name: read_safetensors(args.export_dir / model[name]["file"])
             for name in ("motion", "vae", "renderer")}
  programs = {name: jax.export.deserialize(
                  bytearray((args.export_dir / model["stablehlo"][name]["file"]).read_bytes()))
              for name in ("sample", "render")}
  picture = np.load(args.picture)

  spectral = programs["sample"].call(weights["motion"], weights["vae"], picture,
                                     np.int32(args.seed))
  per_call = model["stablehlo"]["render"]["frames_per_call"]
  times = np.arange(args.frames, dtype=np.float32)
  frames = []
  for start in range(0, args.frames, per_call):
    batch = times[start:start + per_call]
    padded = np.pad(batch, (0, per_call - len(batch)))
    rendered = programs["render"].call(weights["renderer"], picture, spectral, padded,
                                       np.float32(args.magnify))
    frames.append(np.asarray(rendered)[:len(batch)])
  np.savez(args.out, spectral=np.asarray(spectral), frames=np.concatenate(frames))


if __name__ == "__main__":
  main()
