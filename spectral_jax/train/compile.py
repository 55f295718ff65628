"""``python -m spectral_jax.train.compile --config configs/STAGE.py:VARIANT --topology v5e:16x16``.

Compiles the training step that ``python -m spectral_jax.train`` would run
for the config (same mesh rules, shardings, donation and dtype) ahead of
time for the chips of a TPU topology that need not be there, and prints
one JSON line: the mesh, the global and per-chip batch, per-chip memory
against the chip's HBM and whether it fits, FLOPs and bytes accessed per
step, the collectives of the compiled program, and a roofline bound on
examples/s per chip (`chips.TPUS`). It needs libtpu (the ``tpu`` extra), no
TPU, no data set and no trained run: the frozen VAE of an LDM stage is
built from ``--vae_config`` (default: ``vae.py`` of the stage config's
folder, same variant and dtype) and batches enter as shapes.

  --per-chip-batch N   the global batch is N times the chips (default 1);
                       an explicit --config.batch_size must be divisible
                       by the chips instead
  --find-batch         the largest per-chip batch that fits, by compiling
                       (`find_batch`)
  --memory-line A,B    per-chip GiB at per-chip batches 1 and 2 from another
                       compile of the program (e.g. on a smaller chip):
                       --find-batch starts from its prediction, not from
                       compiling those two
  --probes FILE        keep each compile's report in FILE (JSON lines) and
                       reuse those of the same command: an interrupted
                       --find-batch goes on where it stopped
  --num-slices S       S copies of the topology joined by the data-centre
                       network (multi-slice); give --config.mesh.dcn_data=S
  --program P          train (default); sample: one DDIM step with
                       classifier-free guidance on all K bins of a batch of
                       pictures (an LDM config); render: `render_frames`'
                       compiled call on a batch of frames (the renderer's)

Exit status 0 when it fits, 1 when it does not (the JSON line says by how
much), 2 for bad input (one line on stderr).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import re
import sys
from pathlib import Path

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from spectral_jax.config_base import load_config_file
from spectral_jax.train import command_line
from spectral_jax.train.chips import TPUS, Chip, GiB

_PROG = "python -m spectral_jax.train.compile"
_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/STAGE.py:VARIANT",
                                          lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", None, "TPU topology, e.g. v5e:2x2, v5p:2x2x2")
_PER_CHIP_BATCH = flags.DEFINE_integer("per-chip-batch", 1, "examples per chip", lower_bound=1)
_FIND_BATCH = flags.DEFINE_bool("find-batch", False, "find the largest per-chip batch that fits")
_NUM_SLICES = flags.DEFINE_integer("num-slices", 1, "slices joined by DCN", lower_bound=1)
_VAE_CONFIG = flags.DEFINE_string("vae_config", None,
                                  "an LDM stage's VAE config, FILE:VARIANT")
_PROGRAM = flags.DEFINE_enum("program", "train", ["train", "sample", "render"],
                             "what to compile: the training step, one DDIM step, a batch of "
                             "rendered frames")
_MEMORY_LINE = flags.DEFINE_list("memory-line", None, "GiB per chip at per-chip batches 1 "
                                 "and 2, measured elsewhere: where --find-batch starts")
_PROBES = flags.DEFINE_string("probes", None, "JSON-lines file of this command's compiles, "
                              "reused when it runs again")
flags.mark_flags_as_required(["config", "topology"])

# HLO instructions that move data between devices (their asynchronous
# ``-start`` halves count once; the ``-done`` halves are not counted).
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all",
               "collective-permute")


def chip_of(topology: str) -> Chip:
  """The `Chip` of a topology name ``GENERATION:AxB[xC]``; ValueError with
  the known ones otherwise."""
  generation, _, shape = topology.partition(":")
  if generation not in TPUS or not re.fullmatch(r"\d+(x\d+){1,2}", shape):
    raise ValueError(f"unknown topology {topology!r}: give GENERATION:SHAPE with a generation "
                     f"of {sorted(TPUS)}, e.g. v5e:2x2, v5e:16x16, v5p:2x2x2, v6e:4x4")
  return TPUS[generation]


# Environment that keeps libtpu, on a machine without TPUs, from looking for
# them and logging its failures at every JAX start (any accelerator type
# serves for compiling ahead of time), and lets several compiles run at
# once (libtpu otherwise locks /tmp/libtpu_lockfile for the TPU it expects).
TPU_ENVIRONMENT = {"TPU_ACCELERATOR_TYPE": "v5litepod-4", "TPU_WORKER_HOSTNAMES": "localhost",
                   "TPU_SKIP_MDS_QUERY": "1", "ALLOW_MULTIPLE_LIBTPU_LOAD": "1"}


def topology_devices(topology: str, num_slices: int):
  """The devices of ``num_slices`` slices of ``topology`` (not attached:
  for compiling only)."""
  from jax.experimental import topologies
  try:
    return topologies.get_topology_desc(platform="tpu", topology_name=topology,
                                        num_slices=num_slices).devices
  except Exception as error:  # pylint: disable=broad-except
    # libtpu's message, e.g. INVALID_ARGUMENT: Topology layout "v5e:3x7" is
    # not divisible by ... chips_per_host_bounds "2x2x1".
    raise ValueError(f"topology {topology!r}: {str(error).splitlines()[0]}") from None


def global_batch_size(config, chips: int, per_chip_batch: int, explicit: bool) -> int:
  """The global batch: ``per_chip_batch`` times the chips, or the config's
  when it was set ``explicit``-ly (then the chips must divide it)."""
  if not explicit:
    return per_chip_batch * chips
  if config.batch_size % chips:
    raise ValueError(f"--config.batch_size={config.batch_size} does not split over {chips} "
                     f"chips; give a multiple of {chips}, or --per-chip-batch instead")
  return config.batch_size


def collectives(hlo_text: str) -> dict:
  """``{kind: {"count", "bytes"}}`` of the collectives in a compiled
  program's HLO text, bytes of their results per device. Those between
  slices, which XLA:TPU turns into host transfers over the data-centre
  network (sends tagged with a Megascale transfer type), are counted
  under ``cross_slice/KIND`` instead, bytes of their sends."""
  found = {}
  cross = {}  # kind -> {collective name: bytes}
  for line in hlo_text.splitlines():
    match = re.search(r"=\s*(\S.*?)\s(" + "|".join(COLLECTIVES) + r")(-start)?\(", line)
    if match:
      entry = found.setdefault(match.group(2), {"count": 0, "bytes": 0})
      entry["count"] += 1
      entry["bytes"] += _shape_bytes(match.group(1), halves=bool(match.group(3)))
      continue
    match = re.search(r"=\s*(\S.*?)\ssend\(.*_xla_host_transfer_rendezvous=\"([^\"]+)\""
                      r".*_xla_megascale_transfer_type=\"(\w+)\"", line)
    if match:
      kind = match.group(3).lower().replace("_", "-")
      name = re.sub(r"_\d+$", "", match.group(2))  # One collective's chunks.
      sent = cross.setdefault(kind, {})
      sent[name] = sent.get(name, 0) + _shape_bytes(match.group(1), halves=False)
  for kind, sent in cross.items():
    found[f"cross_slice/{kind}"] = {"count": len(sent), "bytes": sum(sent.values())}
  return found


_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
          "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8}


def _shape_bytes(shape_text: str, halves: bool) -> int:
  """Bytes of the arrays of an HLO result shape such as ``f32[8,128]{1,0}``
  or a tuple of them (scalars and tokens, an async start's bookkeeping,
  not counted). ``halves``: an async start, whose tuple holds its operands,
  then its results: only the results count."""
  shapes = re.findall(r"\b([a-z]+\d*)\[([\d,]+)\]", shape_text)
  sizes = [_BYTES.get(dtype, 4) * math.prod(int(d) for d in dims.split(","))
           for dtype, dims in shapes]
  if halves and len(sizes) > 1:
    sizes = sizes[len(sizes) // 2:]
  return sum(sizes)


# What ``--program`` compiles, and what one of its examples is.
PROGRAMS = {
    "train": "training example",
    # One DDIM step with classifier-free guidance on all K bins of a picture
    # (the body of `MotionModel.sampler`'s loop).
    "sample": "picture, one DDIM step",
    # `render_frames`' compiled call: frames of one encoded picture.
    "render": "frame",
}


def _program(config, mesh, global_batch: int, vae_config, program: str):
  """``(lower, parameters, trained)``: ``lower()`` lowers ``program``
  (`PROGRAMS`) of ``config`` on ``mesh`` for ``global_batch`` examples,
  batches split over the mesh as training splits them; the parameter
  counts (all, trained)."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from spectral_jax import sharding
  from spectral_jax.models import build, functional
  from spectral_jax.train import stages, train

  if program == "train":
    step = stages.make_step(config, vae_config)
    constants = step.abstract_constants()
    plan = train.plan_step(config, step, mesh, constants)
    return (lambda: train.compile_step(plan, plan.abstract_state(constants),
                                       step.batch_shapes(global_batch)),
            *plan.parameter_counts())

  replicated, split = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  data = config.data

  def shape(dims, dtype, where):
    return jax.ShapeDtypeStruct(dims, dtype, sharding=where)

  if program == "sample":
    if not config.stage.startswith("ldm"):
      raise ValueError("--program sample samples with an LDM stage's U-Net: give "
                       "configs/ldm_pretrain.py or configs/ldm_freq_attn.py")
    from spectral_jax import diffusion
    from spectral_jax.diffusion import latents
    graphdef, params = functional.abstract_split(
        lambda: build.build_unet(config, nnx.Rngs(0), inference=True))
    factor = 2 ** (len(vae_config.model.channel_mults) - 1)
    schedule = diffusion.make_schedule(**config.diffusion.schedule.to_dict())
    options = dict(guidance_scale=config.sampling.guidance_scale, eta=config.sampling.eta,
                   prediction=diffusion.prediction_of(config.diffusion), unroll=True)

    def ddim_step(params, image, z, plan):
      unet = functional.merge(graphdef, params)
      eps_fn = latents.conditional_eps(unet, image, data.num_freqs)
      return diffusion.ddim_steps(eps_fn, schedule, z, plan, **options)

    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), 1))
    arguments = (
        jax.tree.map(lambda x: shape(x.shape, x.dtype, replicated), params),
        shape((global_batch, data.height, data.width, 3), jnp.float32, split),
        shape((global_batch, data.num_freqs, data.height // factor, data.width // factor,
               config.model.latent_channels), jnp.float32, split),
        (shape((1,), jnp.int32, replicated), shape((1,), jnp.float32, replicated),
         shape((1,), jnp.float32, replicated), shape(keys.shape, keys.dtype, replicated)))
    function = ddim_step
  elif program == "render":
    if config.stage != "renderer":
      raise ValueError("--program render renders with the renderer: give configs/renderer.py")
    graphdef, params = functional.abstract_split(
        lambda: build.build_renderer(config, nnx.Rngs(0)))
    picture = jax.ShapeDtypeStruct((1, data.height, data.width, 3), jnp.float32)
    pyramid, style = jax.eval_shape(
        lambda params, image: functional.merge(graphdef, params).encode(image), params, picture)

    def render(params, pyramid, style, flow, metric):
      metric = jnp.broadcast_to(metric, flow.shape[:-1] + (1,))
      return functional.merge(graphdef, params).render(pyramid, style, flow, metric)

    whole = lambda tree: jax.tree.map(lambda x: shape(x.shape, x.dtype, replicated), tree)
    arguments = (whole(params), whole(pyramid), whole(style),
                 shape((global_batch, data.height, data.width, 2), jnp.float32, split),
                 shape((1, data.height, data.width, 1), jnp.float32, replicated))
    function = render
  else:
    raise ValueError(f"unknown --program {program!r}; one of {', '.join(PROGRAMS)}")
  count = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
  jitted = jax.jit(function, out_shardings=split)
  return (lambda: jitted.lower(*arguments).compile()), count, 0


def compile_report(config, devices, chip: Chip, global_batch: int, vae_config=None,
                   program: str = "train") -> dict:
  """Compiles ``program`` (`PROGRAMS`) of ``config`` for ``devices`` at
  ``global_batch`` examples and reports what `__doc__` lists; ``fits`` is
  False when XLA refuses it for lack of memory or it needs more than a
  chip's HBM."""
  import jax

  from spectral_jax import sharding

  config = ml_collections.ConfigDict(config.to_dict())
  config.batch_size = global_batch
  mesh = sharding.make_mesh(config.mesh, devices)
  lower, parameters, trained = _program(config, mesh, global_batch, vae_config, program)
  chips = len(devices) // _devices_per_chip(devices)
  report = {
      "program": program, "example": PROGRAMS[program],
      "stage": config.stage, "variant": config.variant, "dtype": config.dtype,
      "parameters": parameters, "trained_parameters": trained,
      "chip": chip.device_kind, "chips": chips,
      "slices": len({getattr(d, "slice_index", 0) for d in devices}),
      "mesh": {name: int(size) for name, size in mesh.shape.items()},
      "global_batch": global_batch,
      "per_chip_batch": (global_batch // chips if global_batch % chips == 0
                         else global_batch / chips),
      "hbm_per_chip_gib": chip.hbm_bytes / GiB,
  }
  try:
    compiled = lower()
  except jax.errors.JaxRuntimeError as error:
    if "RESOURCE_EXHAUSTED" not in str(error):
      raise
    return {**report, "fits": False, "compile_error": str(error).splitlines()[0][:300]}
  memory = compiled.memory_analysis()
  per_device = {
      "arguments": memory.argument_size_in_bytes,
      "outputs": memory.output_size_in_bytes - memory.alias_size_in_bytes,
      "temporaries": memory.temp_size_in_bytes,
      "generated_code": memory.generated_code_size_in_bytes,
  }
  per_chip = {name: value * _devices_per_chip(devices) / GiB for name, value in per_device.items()}
  total = sum(per_chip.values())
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  # The partitioned program's cost is one device's.
  flops = float(cost.get("flops", 0.0)) * _devices_per_chip(devices)
  bytes_accessed = float(cost.get("bytes accessed", 0.0)) * _devices_per_chip(devices)
  seconds = max(flops / chip.peak_bf16_flops, bytes_accessed / chip.hbm_bytes_per_s)
  return {
      **report,
      "memory_per_chip_gib": {**per_chip, "total": total},
      "fits": total <= chip.hbm_bytes / GiB,
      "flops_per_step_per_chip": flops,
      "flops_per_example": flops * chips / global_batch,
      "bytes_accessed_per_step_per_chip": bytes_accessed,
      "collectives": collectives(compiled.as_text()),
      "roofline_examples_per_s_per_chip": (global_batch / chips) / seconds if seconds else None,
      "roofline_bound": ("compute" if flops / chip.peak_bf16_flops
                         >= bytes_accessed / chip.hbm_bytes_per_s else "memory"),
  }


def _devices_per_chip(devices) -> int:
  """JAX devices per chip: 1 where a chip's TensorCores act as one (v5e,
  v5p and v6e; v4 in megacore mode), 2 where each core is a device."""
  cores = {getattr(device, "core_on_chip", 0) for device in devices}
  return len(cores)


def find_batch(compile_at, hbm_gib: float,
               line: tuple[float, float] | None = None) -> tuple[int, dict]:
  """The largest per-chip batch ``b`` for which ``compile_at(b)["fits"]``,
  in few compiles (a paper-size one takes minutes): batches 1 and 2 give a
  line, memory = fixed + per example x b (or ``line``, their memory in GiB
  measured elsewhere, e.g. on another chip: the same program needs about
  the same memory per chip); the batch it predicts to fill ``hbm_gib`` and
  its neighbour are tried next, then doubling or bisection take over where
  the line was wrong (XLA rematerialises near the limit).
  Returns ``(b, its report)``; ``(0, the report of 1)`` if not even 1 fits."""
  reports = {}

  def fits(batch: int) -> bool:
    if batch not in reports:
      reports[batch] = compile_at(batch)
      print(f"per-chip batch {batch}: "
            f"{'fits' if reports[batch]['fits'] else 'does not fit'}", file=sys.stderr)
    return reports[batch]["fits"]

  low, high = 0, None  # Fits at low (0: nothing known to); not at high.
  if line is None:
    if not fits(1):
      return 0, reports[1]
    if not fits(2):
      return 1, reports[1]
    low = 2
    line = tuple(reports[b]["memory_per_chip_gib"]["total"] for b in (1, 2))
  one, two = line
  if two > one:
    predicted = int((hbm_gib - one) // (two - one)) + 1
    if predicted > low:
      # The prediction, then its neighbour on the side it points to.
      for batch in (predicted, predicted + 1 if fits(predicted) else predicted - 1):
        if batch <= low:
          break
        if fits(batch):
          low = max(low, batch)
        else:
          high = batch if high is None else min(high, batch)
  while high is None or high - low > 1:
    batch = max(2 * low, 1) if high is None else (low + high) // 2
    if fits(batch):
      low = batch
    else:
      high = batch
  return low, reports[max(low, 1)]


def read_probes(path: Path) -> list[dict]:
  """The whole lines ``{command, per_chip_batch, report}`` of a ``--probes``
  file (none if it is missing; a line cut short by a kill is skipped)."""
  probes = []
  if path.exists():
    for line in path.read_text().splitlines():
      try:
        probes.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return probes


def remembered(compile_at, path: Path, command: str):
  """``compile_at`` that first looks in ``path`` (JSON lines ``{command,
  per_chip_batch, report}``) for a report of the same ``command`` and
  batch, and appends each new one there, flushed, as soon as it exists."""
  if path.exists() and path.read_text()[-1:] not in ("", "\n"):
    with path.open("a") as probes:  # It ends in a line cut short by a kill.
      probes.write("\n")
  known = {probe["per_chip_batch"]: probe["report"] for probe in read_probes(path)
           if probe.get("command") == command}

  def compile_remembered(per_chip_batch: int) -> dict:
    if per_chip_batch not in known:
      known[per_chip_batch] = compile_at(per_chip_batch)
      with path.open("a") as probes:
        probes.write(json.dumps({"command": command, "per_chip_batch": per_chip_batch,
                                 "report": known[per_chip_batch]}) + "\n")
    return known[per_chip_batch]

  return compile_remembered


def _error(message: str) -> None:
  print(f"{_PROG}: error: {message}", file=sys.stderr)
  sys.exit(2)


def main(argv) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)  # JAX logs its backend search at INFO.
  config = _CONFIG.value
  try:
    chip = chip_of(_TOPOLOGY.value)
    memory_line = _memory_line()
  except ValueError as error:
    _error(str(error))
  if importlib.util.find_spec("libtpu") is None:
    _error("libtpu is not installed, and compiling for a TPU needs it: "
           "pip install -e '.[tpu]' (from the repository; or pip install 'jax[tpu]')")
  vae_config = None
  if config.stage.startswith("ldm"):
    config_file = config_flags.get_config_filename(flags.FLAGS["config"])
    spec = _VAE_CONFIG.value or f"{Path(config_file).parent / 'vae.py'}:{config.variant}"
    path, _, variant = spec.partition(":")
    try:
      vae_config = load_config_file(path, variant or None, {"dtype": config.dtype})
    except (ValueError, OSError) as error:
      _error(f"--vae_config {spec}: {error}")
  for name, value in TPU_ENVIRONMENT.items():
    os.environ.setdefault(name, value)
  try:
    devices = topology_devices(_TOPOLOGY.value, _NUM_SLICES.value)
    chips = len(devices) // _devices_per_chip(devices)
    explicit = "batch_size" in config_flags.get_override_values(flags.FLAGS["config"])
    if _FIND_BATCH.value and explicit:
      raise ValueError("--find-batch chooses the batch; drop --config.batch_size")
    compile_at = functools.partial(_compile_at_per_chip, config, devices, chip, chips,
                                   vae_config, _PROGRAM.value)
    if _PROBES.value:
      compile_at = remembered(compile_at, Path(_PROBES.value), _command_key(config, vae_config))
    if _FIND_BATCH.value:
      _, report = find_batch(compile_at, chip.hbm_bytes / GiB, memory_line)
    elif explicit:
      report = compile_report(config, devices, chip,
                              global_batch_size(config, chips, 0, explicit=True), vae_config,
                              _PROGRAM.value)
    else:
      report = compile_at(_PER_CHIP_BATCH.value)
  except ValueError as error:
    _error(str(error))
  print(json.dumps(report))
  if not report["fits"]:
    memory = report.get("memory_per_chip_gib", {}).get("total")
    why = (f"it needs {memory:.1f} GiB per chip, a {chip.device_kind} chip has "
           f"{chip.hbm_bytes / GiB:.0f} GiB" if memory is not None
           else f"XLA:TPU says {report['compile_error']}")
    print(f"{_PROG}: does not fit: {why}; lower the per-chip batch, or split the parameters "
          "over --config.mesh.fsdp", file=sys.stderr)
    sys.exit(1)


def _memory_line() -> tuple[float, float] | None:
  """``--memory-line`` as two GiB figures; ValueError if it is not."""
  if _MEMORY_LINE.value is None:
    return None
  try:
    one, two = (float(value) for value in _MEMORY_LINE.value)
  except ValueError:
    raise ValueError(f"--memory-line takes two numbers, GiB at per-chip batches 1 and 2; got "
                     f"{','.join(_MEMORY_LINE.value)}") from None
  if not 0 < one <= two:
    raise ValueError(f"--memory-line {one:g},{two:g}: GiB at batch 1 must be positive and at "
                     "most that at batch 2")
  return one, two


def _command_key(config, vae_config) -> str:
  """What decides a compile's report besides the batch."""
  return json.dumps({"config": config.to_dict(), "topology": _TOPOLOGY.value,
                     "num_slices": _NUM_SLICES.value, "program": _PROGRAM.value,
                     "vae_config": vae_config and vae_config.to_dict()},
                    sort_keys=True, default=str)


def _compile_at_per_chip(config, devices, chip, chips, vae_config, program, per_chip_batch):
  return compile_report(config, devices, chip, per_chip_batch * chips, vae_config, program)


if __name__ == "__main__":
  app.run(main, flags_parser=functools.partial(command_line.parse_flags, config=_CONFIG,
                                               prog=_PROG))
