"""Micro training configs for tests: the `tiny` variants shrunk to seconds.

Also a script: ``python tests/train_configs.py OUT_DIR`` trains one step of
every stage (on whatever devices JAX sees; with 8, on a data x fsdp mesh
that splits parameters) and writes their first losses and parameters to
``OUT_DIR/results.npz``, for the 1-device vs 8-device comparison.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path

from spectral_jax.config_base import load_config_file

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def load_config(stage: str):
  config = load_config_file(CONFIGS / f"{stage}.py", "tiny")
  config.data.width, config.data.height, config.data.num_freqs = 32, 16, 4
  config.data.synthetic.num_frames = 16
  config.data.synthetic.num_train = 64
  config.data.synthetic.num_test = 8
  config.data.synthetic.stats_examples = 16
  config.batch_size = 8
  config.num_steps = 2
  config.log_every = config.eval_every = config.checkpoint_every = 1
  config.eval.num_batches = config.eval.whiten_batches = 1
  # No warm-up: a warm-up starts at learning rate 0, so a test's first
  # steps would train nothing.
  config.optimizer.warmup_steps = 0
  model = config.model
  if stage == "renderer":
    model.update({"channels": (8, 16, 16, 16), "style_dim": 16, "norm_groups": 4})
    config.data.synthetic.num_render_frames = 2
    return config
  model.base_channels = 8
  model.num_res_blocks = 1
  if "channel_mults" in model and stage == "vae":
    model.channel_mults = (1, 2, 4)
  if stage.startswith("ldm"):
    model.num_heads = 2
    model.image_encoder_channels = 8
    config.eval.ddim_steps = 2
  return config


# The size, K and T of `train_animation_runs`: every stage must agree on them.
ANIMATION_DATA = {"width": 48, "height": 32, "num_freqs": 4, "num_frames": 16}


def animation_config(stage: str, steps: int):
  """Micro config of ``stage`` at `ANIMATION_DATA`'s size, trained ``steps``
  steps with a non-zero learning rate from the second step."""
  config = load_config(stage)
  data = ANIMATION_DATA
  config.data.width, config.data.height = data["width"], data["height"]
  config.data.num_freqs = data["num_freqs"]
  config.data.synthetic.num_frames = data["num_frames"]
  config.num_steps = steps
  config.log_every = config.checkpoint_every = steps
  config.eval_every = 0
  if stage == "renderer":
    config.loss.perceptual_weight = 0.0  # VGG would be most of the test's time.
  if stage.startswith("ldm"):
    config.sampling.num_steps = 4
    # A model trained for a few steps has latents of another scale than the
    # paper's: u = 2000 is the weight that closes its loops best.
    config.sampling.loop_weight = 2000.0
  return config


def train_animation_runs(out_dir: Path, steps: int = 3) -> Path:
  """All four stages trained briefly into ``out_dir/{vae,ldm1,ldm2,renderer}``
  (the layout `animate --checkpoint out_dir` reads); returns ``out_dir``."""
  from spectral_jax.train import train
  runs = {"vae": out_dir / "vae", "ldm_pretrain": out_dir / "ldm1",
          "ldm_freq_attn": out_dir / "ldm2", "renderer": out_dir / "renderer"}
  for stage, workdir in runs.items():
    config = animation_config(stage, steps)
    if stage.startswith("ldm"):
      config.vae_from = str(runs["vae"])
    if stage == "ldm_freq_attn":
      config.init_from = str(runs["ldm_pretrain"])
    train.run(config, workdir, progress=False)
  return out_dir


def use_sgd(config, learning_rate: float = 0.05) -> None:
  """Plain SGD for runs compared across device counts. Adam's first update
  is about ``lr * sign(g)``, so a gradient near 0 whose float32 sum depends
  on the reduction order (1 vs 8 devices) may flip a whole ``lr`` step; an
  SGD update is linear in the gradient, and its differences stay at float
  rounding."""
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = learning_rate


def flat_params(params) -> dict:
  """``{"a/b/kernel": np.ndarray}`` of a nested parameter dict."""
  import jax
  import numpy as np

  from spectral_jax import checkpoint
  return {"/".join(map(str, path)): np.asarray(jax.device_get(leaf))
          for path, leaf in checkpoint._flat(params).items()}


def initial_params(config, build) -> dict:
  """`flat_params` of the model ``build(config, rngs)`` as the training loop
  initialises it (before any parameters are loaded from another run)."""
  import jax
  from flax import nnx

  from spectral_jax.models import functional
  init = jax.jit(lambda: functional.split_params(build(config, nnx.Rngs(config.seed)))[1])
  return flat_params(init())


def prepared_config(stage: str, data_dir):
  """`load_config` of ``stage`` training on the prepared data set in
  ``data_dir``: the clip size and K are the data set's (`sources.open_source`
  refuses any other)."""
  from spectral_jax.data import dataset
  config = load_config(stage)
  clip = dataset.load_clip_config(data_dir)
  config.data.dir = str(data_dir)
  config.data.width, config.data.height = clip.width, clip.height
  config.data.num_freqs = clip.num_freqs
  return config


def saved_params(workdir, step: int | None = None) -> dict:
  """`flat_params` of a run's checkpoint at ``step`` (default: the latest)."""
  import orbax.checkpoint as ocp

  from spectral_jax import checkpoint
  mngr = checkpoint.manager(workdir, read_only=True)
  step = mngr.latest_step() if step is None else step
  return flat_params(mngr.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore()))["params"])


def fork(workdir: Path, fork_dir: Path, step: int) -> Path:
  """A copy of the run in ``workdir`` as it was when it had saved ``step``:
  later checkpoints removed (the resumed run drops later metrics itself);
  returns ``fork_dir``."""
  from spectral_jax import checkpoint
  shutil.copytree(workdir, fork_dir)
  for step_dir in (fork_dir / checkpoint.CHECKPOINT_DIR).iterdir():
    if step_dir.name.isdigit() and int(step_dir.name) > step:
      shutil.rmtree(step_dir)
  assert checkpoint.manager(fork_dir, read_only=True).latest_step() == step
  return fork_dir


def moved(before: dict, after: dict) -> set:
  """Names of the `flat_params` arrays that differ between ``before`` and
  ``after`` (which hold the same names)."""
  import numpy as np
  assert set(before) == set(after), sorted(set(before) ^ set(after))
  return {name for name in before if not np.array_equal(before[name], after[name])}


# JAX's persistent compilation cache, every program however quick to
# compile: the settings `compile_cache` makes in this process, and
# `cache_environment` in a subprocess.
_CACHE_SETTINGS = {"jax_persistent_cache_min_compile_time_secs": 0.0,
                   "jax_persistent_cache_min_entry_size_bytes": 0}


@contextlib.contextmanager
def compile_cache(directory: Path):
  """JAX's persistent compilation cache in ``directory`` within the block,
  in this process: a run resumed there loads the programs the run it was
  forked from compiled (the same programs: bit for bit the same results).
  The settings before the block are back after it."""
  import jax
  from jax.experimental.compilation_cache import compilation_cache as cache
  settings = {"jax_compilation_cache_dir": str(directory), **_CACHE_SETTINGS}
  previous = {name: getattr(jax.config, name) for name in settings}
  for name, value in settings.items():
    jax.config.update(name, value)
  # The cache is set up at the first compilation after a reset, from the
  # settings then: this directory, whatever the process used before.
  cache.reset_cache()
  try:
    yield directory
  finally:
    for name, value in previous.items():
      jax.config.update(name, value)
    cache.reset_cache()


def session_cache(tmp_path_factory) -> Path:
  """A compilation cache directory for the whole pytest session: subprocess
  runs of the same program in different test modules (1 process training
  the micro VAE of `test_preemption`) compile it once."""
  directory = tmp_path_factory.getbasetemp() / "session_compile_cache"
  directory.mkdir(exist_ok=True)
  return directory


def cache_environment(directory: Path) -> dict:
  """The environment variables that put a subprocess's JAX compilation
  cache in ``directory`` (as `compile_cache` does here)."""
  return {"JAX_COMPILATION_CACHE_DIR": str(directory),
          **{name.upper(): str(value) for name, value in _CACHE_SETTINGS.items()}}


def train_every_stage(out_dir: Path, mesh: dict | None = None, fsdp_min_size: int = 0) -> dict:
  """One SGD step of vae → ldm_pretrain → ldm_freq_attn in ``out_dir``;
  returns {stage: (first loss, flat parameters, logged learning rate)}."""
  import orbax.checkpoint as ocp

  from spectral_jax import checkpoint
  from spectral_jax.train import metrics, train
  results = {}
  previous = {}
  for stage in ("vae", "ldm_pretrain", "ldm_freq_attn"):
    config = load_config(stage)
    config.num_steps = 1
    use_sgd(config)
    if mesh:
      config.mesh.update(mesh)
      config.fsdp_min_size = fsdp_min_size
    if stage == "vae":
      config.profile_steps = (1, 1)  # For test_train's profile test.
    else:
      config.vae_from = str(previous["vae"])
    if stage == "ldm_freq_attn":
      config.init_from = str(previous["ldm_pretrain"])
    workdir = out_dir / stage
    train.run(config, workdir, progress=False)
    previous[stage] = workdir
    record = metrics.read_metrics(workdir)[0]
    _, _, step = checkpoint.read_config(workdir)
    mngr = checkpoint.manager(workdir, read_only=True)
    params = mngr.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore()))["params"]
    results[stage] = (record["loss"], flat_params(params), record["learning_rate"])
  return results


if __name__ == "__main__":
  import jax
  import numpy as np
  out = Path(sys.argv[1])
  mesh = {"data": 4, "fsdp": 2} if jax.device_count() == 8 else None
  results = train_every_stage(out, mesh, fsdp_min_size=64)
  arrays = {f"{stage}:loss": np.float64(loss) for stage, (loss, _, _) in results.items()}
  for stage, (_, flat, _) in results.items():
    arrays.update({f"{stage}:{name}": value for name, value in flat.items()})
  np.savez(out / "results.npz", **arrays)
  print(f"devices={jax.device_count()}")
