"""The ahead-of-time compilation table of docs/PERFORMANCE.md.

  python tools/aot_table.py run OUT_DIR [--variant paper] [--only NAME ...]
  python tools/aot_table.py table OUT_DIR

``run`` compiles, with `python -m spectral_jax.train.compile` in the tpu
extra's environment, every entry of `entries` that OUT_DIR does not hold
yet, one JSON file each (written whole when its compile ends: stop it any
time and run it again to go on). A paper-size step takes minutes to compile
on a 2-core CPU, so the whole table takes hours: run it in the background.
``table`` prints the Markdown table of the JSON files there.

Entries, for every training stage and for the sampler (one guided DDIM
step of the frequency-attention model) and the renderer's frame batch: in
bfloat16 the largest per-chip batch that fits (``--find-batch``) on the
smallest slice of each chip type (v5e:2x2, v5p:2x2x1, v6e:2x2), that batch
confirmed on 256 v5e chips (v5e:16x16), and float32 at per-chip batch 1 on
v5e:2x2. They run in that order of use, v5e first; each search keeps its
compiles in OUT_DIR/probes/ (``--probes``), so a stopped one loses at most
the compile under way, and the v5p and v6e searches start from the memory
of v5e's batches 1 and 2 (``--memory-line``: a chip holds the same program
whatever its generation).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# name -> (config file, program of `spectral_jax.train.compile`)
PROGRAMS = {"vae": ("vae", "train"), "ldm_pretrain": ("ldm_pretrain", "train"),
            "ldm_freq_attn": ("ldm_freq_attn", "train"), "renderer": ("renderer", "train"),
            "sampler": ("ldm_freq_attn", "sample"), "render_frames": ("renderer", "render")}
SMALLEST_SLICES = ("v5e:2x2", "v5p:2x2x1", "v6e:2x2")
POD = "v5e:16x16"


def entries(variant: str) -> list[dict]:
  """``{name, program, topology, dtype, args, after}`` in the order they
  run; ``after``: the entry whose found per-chip batch this one compiles at."""
  def entry(name, topology, dtype, **fields):
    return {"name": f"{name}-{topology}-{dtype}" + fields.pop("suffix", ""), "program": name,
            "topology": topology, "dtype": dtype, "variant": variant, **fields}

  largest = [entry(name, topology, "bfloat16", suffix="-largest", args=["--find-batch"])
             for topology in SMALLEST_SLICES for name in PROGRAMS]
  for found in largest[len(PROGRAMS):]:  # Other chips start from v5e's memory line.
    found["line_from"] = f"{found['program']}-{SMALLEST_SLICES[0]}-bfloat16-largest"
  pod = [entry(name, POD, "bfloat16", after=f"{name}-v5e:2x2-bfloat16-largest")
         for name in PROGRAMS]
  float32 = [entry(name, "v5e:2x2", "float32", suffix="-batch1", args=["--per-chip-batch=1"])
             for name in PROGRAMS]
  return largest[:len(PROGRAMS)] + pod + float32 + largest[len(PROGRAMS):]


def _file(out_dir: Path, name: str) -> Path:
  return out_dir / f"{name.replace(':', '_')}.json"


def _probes(out_dir: Path, name: str) -> Path:
  return _file(out_dir / "probes", name).with_suffix(".jsonl")


def _memory_line(probes: Path) -> list[str]:
  """``--memory-line`` from the compiles of batches 1 and 2 in ``probes``
  (another chip's search), or nothing where they are not both there or
  draw no rising line (XLA:TPU may need less memory for 2 than for 1)."""
  from spectral_jax.train.compile import read_probes

  memory = {probe["per_chip_batch"]: probe["report"]["memory_per_chip_gib"]["total"]
            for probe in read_probes(probes) if probe["report"].get("memory_per_chip_gib")}
  rising = {1, 2} <= set(memory) and memory[2] > memory[1]
  return [f"--memory-line={memory[1]},{memory[2]}"] if rising else []


def run(out_dir: Path, variant: str, only: list[str] | None) -> None:
  out_dir.mkdir(parents=True, exist_ok=True)
  for entry in entries(variant):
    path = _file(out_dir, entry["name"])
    if path.exists() or (only and entry["name"] not in only):
      continue
    args = list(entry.get("args", []))
    if "after" in entry:
      before = _file(out_dir, entry["after"])
      if not before.exists():
        print(f"{entry['name']}: waits for {entry['after']}", file=sys.stderr)
        continue
      batch = json.loads(before.read_text())["report"].get("per_chip_batch") or 1
      args.append(f"--per-chip-batch={int(batch)}")
    if "line_from" in entry:
      args += _memory_line(_probes(out_dir, entry["line_from"]))
    config, program = PROGRAMS[entry["program"]]
    (out_dir / "probes").mkdir(exist_ok=True)
    command = [sys.executable, "-m", "spectral_jax.train.compile", "--config",
               f"configs/{config}.py:{variant}", "--topology", entry["topology"],
               f"--program={program}", f"--config.dtype={entry['dtype']}",
               f"--probes={_probes(out_dir, entry['name'])}",
               *args]
    print(f"{entry['name']}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    start = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode not in (0, 1) or not result.stdout.strip():
      print(f"{entry['name']} failed:\n{result.stderr}", file=sys.stderr)
      continue
    record = {"command": " ".join(["python", *command[1:]]),
              "compile_seconds": round(time.monotonic() - start),
              "search": [line for line in result.stderr.splitlines()
                         if line.startswith("per-chip batch")],
              "report": json.loads(result.stdout.strip().splitlines()[-1])}
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(record, indent=1) + "\n")
    temporary.replace(path)


def table(out_dir: Path) -> str:
  rows = ["| program | topology | dtype | per-chip batch | memory per chip, GiB (args + temps) "
          "| fits | GFLOP / example | collectives (count) | roofline examples/s per chip "
          "| compile s |", "|---" * 10 + "|"]
  for entry in entries("paper"):
    path = _file(out_dir, entry["name"])
    if not path.exists():
      continue
    record = json.loads(path.read_text())
    report = record["report"]
    memory = report.get("memory_per_chip_gib")
    memory_text = (f"{memory['total']:.2f} ({memory['arguments']:.2f} + "
                   f"{memory['temporaries']:.2f})" if memory else report.get("compile_error", ""))
    collectives = ", ".join(f"{kind} {c['count']}"
                            for kind, c in sorted(report.get("collectives", {}).items()))
    flops = report.get("flops_per_example")
    roofline = report.get("roofline_examples_per_s_per_chip")
    rows.append(
        f"| {entry['program']} | {report['chips']} x {entry['topology']} | {report['dtype']} "
        f"| {report['per_chip_batch']} | {memory_text} | {'yes' if report['fits'] else 'no'} "
        f"| {flops / 1e9:.1f} | {collectives} | {roofline:.1f} | {record['compile_seconds']} |"
        if flops and roofline else
        f"| {entry['program']} | {entry['topology']} | {report['dtype']} "
        f"| {report['per_chip_batch']} | {memory_text} | no | | | | "
        f"{record['compile_seconds']} |")
  return "\n".join(rows)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("command", choices=("run", "table"))
  parser.add_argument("out_dir", type=Path)
  parser.add_argument("--variant", default="paper")
  parser.add_argument("--only", nargs="*", help="entry names to run")
  args = parser.parse_args()
  if args.command == "run":
    run(args.out_dir, args.variant, args.only)
  else:
    print(table(args.out_dir))


if __name__ == "__main__":
  main()
