"""What every training config has, for `configs/<stage>.py` to build on.

The paper's numbers live in the `configs/` files, its data settings and the
variants' clips in `spectral_jax/data/defaults.py` (which `configs/data.py`
builds on); this module only fixes the shape of a config and the variants'
data and run lengths:

  tiny   trains on a laptop CPU in minutes, on synthetic scenes made on the fly
         (64x48 pixels, T=32 frames, K=8), needing no prepared data set;
  demo   tiny's config with the values of `demo` and of each stage's
         ``DEMO``: the default model, trained on a 2-core CPU in under 90
         minutes (`tools/train_demo.sh`): motion at 128x80 (T=150, K=16,
         upsampled to the renderer's 256x160 by `animate`), on photo scenes
         (``--config.data.synthetic.photos=DIR``);
  paper  256x160, K=16, a data set from `spectral-jax prepare`;
  hires  512x288 fine-tuning from a `paper` run (``--config.init_from=DIR``).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
from pathlib import Path

import ml_collections

from spectral_jax.checks import number
from spectral_jax.data import defaults

VARIANTS = ("tiny", "demo", "paper", "hires")


def demo(tiny: ml_collections.ConfigDict, changes: dict) -> ml_collections.ConfigDict:
  """The ``demo`` variant of a stage: its ``tiny`` config with the demo's
  clips and checkpoint interval, then the stage's own ``changes`` (dotted
  field names → values); every field must exist already."""
  clip = defaults.clip("demo")
  common = {"checkpoint_every": 100, "data.width": clip["width"],
            "data.height": clip["height"], "data.num_freqs": clip["num_freqs"],
            "data.synthetic.num_frames": clip["num_frames"]}
  config = copy.deepcopy(tiny)
  config.variant = "demo"
  for name, value in {**common, **changes}.items():
    *parents, field = name.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    if field not in node:
      raise KeyError(f"demo changes {name}, which tiny's {config.stage} config lacks")
    node[field] = value
  return config


def base_config(stage: str, variant: str) -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; one of {VARIANTS}")
  if variant == "demo":
    return demo(base_config(stage, "tiny"), {})
  config = ml_collections.ConfigDict()
  config.stage = stage
  config.variant = variant
  config.seed = 0
  config.num_steps = 1000
  config.batch_size = 8
  small = variant == "tiny"  # Trained on a CPU.
  config.log_every = 25 if small else 100
  config.eval_every = 250 if small else 5000
  config.checkpoint_every = 250 if small else 5000
  config.keep_checkpoints = 3
  # Multi-process runs (`spectral_jax.distributed`, launch/): on when
  # `enabled` or when launch/local.sh's environment names the processes.
  # Unset ("", 0, -1) settings come from that environment, else from JAX's
  # detection of Cloud TPU pods, SLURM and Open MPI.
  config.distributed = ml_collections.ConfigDict({
      "enabled": False, "coordinator_address": "", "num_processes": 0, "process_id": -1,
      # A process silent this long is dead: the others then exit with an
      # error instead of waiting in a collective forever.
      "heartbeat_timeout_s": 100,
      # How long processes wait for each other at start-up.
      "initialization_timeout_s": 300})
  # Device mesh (`sharding.make_mesh`): batches split over data x fsdp,
  # large parameters over fsdp; dcn_data: slices the data axis spans
  # (multi-slice TPU pods).
  config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "dcn_data": 1})
  # With fsdp > 1, parameters of at least this many elements are split.
  config.fsdp_min_size = 2**16
  # Placements that override that rule: ((regex, spec), ...), spec a mesh
  # axis or None per dimension, e.g. ((r"attn/qkv/kernel$", (None, "fsdp")),)
  # (`sharding.tree_shardings`).
  config.sharding_rules = ()
  # What trains; the rest is frozen. A module group of
  # `train.optimizer.MODULE_GROUPS` ("freq_attention": the frequency
  # attention layers, whichever variant), else a full-match regex on
  # parameter paths ("a/b/kernel").
  config.trainable = ".*"
  # A finished run whose parameters start this one (same paths and shapes;
  # parameters it lacks keep their initialisation).
  config.init_from = ""
  config.dtype = "float32"
  # Steps (first, last) traced with jax.profiler into WORKDIR/profile (for
  # TensorBoard's profile plugin or Perfetto); (0, 0): none.
  config.profile_steps = (0, 0)

  config.optimizer = ml_collections.ConfigDict({
      "name": "adam", "learning_rate": 1e-4, "b1": 0.9, "b2": 0.999, "weight_decay": 0.0,
      "grad_clip": 1.0, "warmup_steps": 50 if small else 1000, "decay": "constant",
      "decay_steps": 0})

  clip = defaults.clip(variant)  # The paper's, or the variant's (`data/defaults.py`).
  config.data = ml_collections.ConfigDict({
      # A prepared data set (`spectral-jax prepare`); empty: synthetic scenes.
      "dir": "",
      "width": clip["width"], "height": clip["height"], "num_freqs": clip["num_freqs"],
      "percentile": defaults.PERCENTILE,
      # "adaptive" (the paper: percentile per frequency, signed square root)
      # or "image_size" (the baseline it is compared against).
      "normalization": "adaptive",
      # Processes that read, make (synthetic scenes) and normalize training
      # batches, each a whole batch at a time (Grain's `mp_prefetch`,
      # `data/pipeline.py`); 0: one thread of the training process reads
      # one batch ahead. `tools/benchmark.py input` says how many workers
      # keep up with a device. Any count gives the same batches.
      "worker_count": 0,
      "synthetic": {"num_train": 4096, "num_test": 64, "seed": 0,
                    "num_frames": clip["num_frames"], "fps": clip["fps"],
                    "num_render_frames": 0, "max_amplitude_px": defaults.MAX_AMPLITUDE_PX,
                    "stats_examples": 256,
                    # A folder of photos: their vegetation sways
                    # (data/photo_scenes.py); empty: painted plants.
                    "photos": ""},
  })
  config.eval = ml_collections.ConfigDict({"num_batches": 4, "whiten_batches": 8})
  return config


# Config fields that name other runs or data: made absolute when a run
# starts, so that what a run saves does not depend on the directory it was
# started from.
PATH_FIELDS = ("vae_from", "init_from", "data.dir", "data.synthetic.photos")


def absolute_paths(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of ``config`` whose non-empty `PATH_FIELDS` are absolute."""
  config = ml_collections.ConfigDict(config.to_dict())
  for field in PATH_FIELDS:
    *parents, leaf = field.split(".")
    node = config
    for parent in parents:
      node = node.get(parent) or {}
    if node.get(leaf):
      node[leaf] = str(Path(node[leaf]).absolute())
  return config


def load_config_file(path, arg: str | None = None,
                     overrides: dict | None = None) -> ml_collections.ConfigDict:
  """``get_config(arg)`` of the config file at ``path`` (loaded by path, as
  ``--config`` does), then ``{"dotted.key": value}`` overrides applied."""
  path = Path(path)
  if not path.is_file():
    raise ValueError(f"config file {path} not found")
  spec = importlib.util.spec_from_file_location(f"{path.stem}_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg) if arg else module.get_config()
  for key, value in (overrides or {}).items():
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def _int(low, high=None):
  return int, number(int, low=low, high=high)


def _real(low, high=None, **open_bounds):
  return float, number(low=low, high=high, **open_bounds)


# Allowed values of config fields, checked before a run creates anything
# (`check_config`): ``(type, range check)`` or a tuple of choices. Fields a
# stage's config lacks are skipped.
_RANGES = {
    "num_steps": _int(1),
    "batch_size": _int(1),
    "log_every": _int(1),
    "eval_every": _int(0),  # 0: never.
    "checkpoint_every": _int(1),
    "keep_checkpoints": _int(1),
    "seed": _int(0),
    "fsdp_min_size": _int(1),
    "distributed.num_processes": _int(0),  # 0: from the environment.
    "distributed.process_id": _int(-1),  # -1: from the environment.
    "distributed.heartbeat_timeout_s": _int(1),
    "distributed.initialization_timeout_s": _int(1),
    "dtype": ("float32", "bfloat16"),
    "maps_per_example": _int(1),
    "metric_scale": _real(0),
    "optimizer.learning_rate": _real(0),
    # Adam's bias correction divides by 1 - b^t.
    "optimizer.b1": _real(0, 1, high_open=True),
    "optimizer.b2": _real(0, 1, high_open=True),
    "optimizer.weight_decay": _real(0),
    "optimizer.grad_clip": _real(0),  # 0: no clipping.
    "optimizer.warmup_steps": _int(0),
    "optimizer.decay_steps": _int(0),
    "data.width": _int(8),
    "data.height": _int(8),
    "data.num_freqs": _int(1),
    # The LDM's frequencies per example: 1, one random bin; 0, all K.
    "data.freqs_per_example": _int(0, 1),
    "data.percentile": _real(0, 100, low_open=True),
    "data.normalization": ("adaptive", "image_size"),
    "data.worker_count": _int(0),
    "data.synthetic.num_train": _int(1),
    "data.synthetic.num_test": _int(1),
    "data.synthetic.num_frames": _int(2),
    "data.synthetic.fps": _real(0, low_open=True),
    "data.synthetic.num_render_frames": _int(0),
    "data.synthetic.max_amplitude_px": _real(0),
    "data.synthetic.stats_examples": _int(1),
    "eval.num_batches": _int(0),
    "eval.whiten_batches": _int(1),
    "eval.ddim_steps": _int(1),
    "eval.guidance_scale": _real(0),
    "diffusion.cond_drop": _real(0, 1),
    "diffusion.schedule.num_steps": _int(1),
    "diffusion.prediction": ("epsilon", "v"),
    "model.attention_impl": ("xla", "cudnn"),  # models/layers.ATTENTION_IMPLEMENTATIONS
    "model.remat": ("none", "dots", "full"),  # models/layers.REMAT_POLICIES
    "sampling.num_steps": _int(1),
    "sampling.guidance_scale": _real(0),
    "sampling.eta": _real(0, 1),  # 0: deterministic DDIM, 1: ancestral.
    "sampling.loop_weight": _real(0),
    "sampling.recurrence_steps": _int(1),
    "sampling.loop_gradient": ("network", "x0"),  # diffusion.GUIDANCE_GRADIENTS
    "loss.l1_weight": _real(0),
    "loss.perceptual_weight": _real(0),
    "loss.kl_weight": _real(0),
    "loss.gradient_weight": _real(0),
    "loss.num_scales": _int(1),
}


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first field of ``config`` whose value is
  out of its range (`_RANGES`): a run with ``num_steps=-1`` or
  ``log_every=0`` must fail at once, not after compiling or mid-run."""
  for field, rule in _RANGES.items():
    node = config
    for key in field.split("."):
      if not isinstance(node, ml_collections.ConfigDict) or key not in node:
        break
      node = node[key]
    else:
      problem = _problem(node, rule)
      if problem:
        raise ValueError(f"config.{field} {problem}")
  if "profile_steps" in config:
    _check_profile_steps(tuple(config.profile_steps), config.num_steps)
  if "distributed" in config:
    _check_distributed(config.distributed)
  if "diffusion" in config:
    _check_diffusion(config.diffusion)


def _check_profile_steps(steps: tuple, num_steps: int) -> None:
  if steps == (0, 0):
    return
  if (len(steps) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in steps)
      or not 1 <= steps[0] <= steps[1] <= num_steps):
    raise ValueError(f"config.profile_steps must be (first, last) with 1 <= first <= last <= "
                     f"num_steps={num_steps}, or (0, 0) for none; got {steps}")


def _check_diffusion(settings: ml_collections.ConfigDict) -> None:
  """At zero terminal SNR the top step's noise is ``z_t`` itself: an
  ε-predicting network learns nothing there (`diffusion.schedules`)."""
  if (settings.schedule.get("zero_terminal_snr", False)
      and settings.get("prediction", "epsilon") == "epsilon"):
    raise ValueError("config.diffusion.schedule.zero_terminal_snr needs "
                     "config.diffusion.prediction='v'")


def _check_distributed(settings: ml_collections.ConfigDict) -> None:
  """What `_RANGES` cannot say of ``config.distributed``: the coordinator
  is ``HOST:PORT``, and a process id is below the number of processes."""
  address = settings.coordinator_address
  if address:
    host, _, port = str(address).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 2**16:
      raise ValueError(f"config.distributed.coordinator_address must be HOST:PORT, "
                       f"got {address!r}")
  if 0 < settings.num_processes <= settings.process_id:
    raise ValueError(f"config.distributed.process_id {settings.process_id} is not below "
                     f"num_processes {settings.num_processes}")


def _problem(value, rule) -> str | None:
  """What is wrong with ``value`` under ``rule``; None if nothing."""
  if all(isinstance(choice, str) for choice in rule):
    return None if value in rule else f"must be one of {', '.join(rule)}, got {value!r}"
  kind, check = rule
  # A bool is an int to Python, and int(2.5) is 2: neither may pass as a count.
  if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
    return f"must be {'an integer' if kind is int else 'a number'}, got {value!r}"
  try:
    check(value)
  except argparse.ArgumentTypeError as error:
    return str(error)
  return None
