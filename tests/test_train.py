"""The training loop: every stage end to end, 8 devices = 1 device, resume
(every stage), frozen stage-1 parameters, divergence; the LDM's held-out
ε-MSE and the VAE's latent whitening statistics; a v-prediction run on a
zero-terminal-SNR schedule, trained, loaded and sampled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

sys.path.insert(0, str(Path(__file__).parent))
import train_configs  # noqa: E402

from spectral_jax import checkpoint
from spectral_jax.train import chips, metrics, train  # noqa: E402


@pytest.fixture(scope="module")
def one_device_runs(tmp_path_factory):
  """One SGD step of each stage on one device: {stage: (loss, flat params,
  learning rate)}."""
  out = tmp_path_factory.mktemp("one_device")
  return out, train_configs.train_every_stage(out)


@pytest.fixture(scope="module")
def stage_compile_cache(tmp_path_factory) -> Path:
  """The compilation cache of `_straight_and_resumed`'s runs."""
  return tmp_path_factory.mktemp("compile_cache")


def _two_step_config(stage: str, runs: Path):
  """The micro ``stage`` (Adam from a non-zero learning rate) for 2 steps,
  each logged and checkpointed, not evaluated; an LDM stage on the VAE of
  ``runs`` (`one_device_runs`), stage 2 from its stage 1."""
  config = train_configs.load_config(stage)
  config.num_steps, config.eval_every = 2, 0
  assert config.log_every == config.checkpoint_every == 1
  if stage.startswith("ldm"):
    config.vae_from = str(runs / "vae")
  if stage == "ldm_freq_attn":
    config.init_from = str(runs / "ldm_pretrain")
  if stage == "renderer":
    config.loss.perceptual_weight = 0.0  # VGG would be most of the test's time.
  return config


def _straight_and_resumed(config, out: Path, cache: Path) -> dict:
  """``config`` trained straight through in ``out / "straight"``, and
  resumed in ``out / "resumed"``, a copy of it as it was at step 1 (as if
  stopped after saving step 1). The resumed run loads the programs the
  straight run compiled (`train_configs.compile_cache`): compiled alike,
  the two agree to the bit on a CPU. Returns the workdirs and the records
  each run logged."""
  with train_configs.compile_cache(cache):
    straight = train.run(config, out / "straight", progress=False)
    train_configs.fork(out / "straight", out / "resumed", 1)
    resumed = train.run(config, out / "resumed", progress=False)
  return {"straight": out / "straight", "resumed": out / "resumed",
          "straight_records": straight, "resumed_records": resumed}


def _v_prediction_config(out: Path):
  """Stage 1 predicting v on a zero-terminal-SNR schedule (the `demo`
  setting), 2 steps evaluated at the last, after ``out``'s VAE."""
  config = _two_step_config("ldm_pretrain", out)
  config.diffusion.prediction = "v"
  config.diffusion.schedule.zero_terminal_snr = True
  config.eval_every = 2
  return config


@pytest.fixture(scope="module")
def v_prediction_run(one_device_runs, tmp_path_factory, stage_compile_cache) -> Path:
  """`_v_prediction_config` trained: its workdir."""
  out = tmp_path_factory.mktemp("v_prediction") / "run"
  with train_configs.compile_cache(stage_compile_cache):
    train.run(_v_prediction_config(one_device_runs[0]), out, progress=False)
  return out


def test_every_stage_writes_metrics_and_checkpoints(one_device_runs):
  out, results = one_device_runs
  for stage in ("vae", "ldm_pretrain", "ldm_freq_attn"):
    records = metrics.read_metrics(out / stage)
    assert records[0]["step"] == 1 and np.isfinite(records[0]["loss"])
    # Throughput; no MFU on a CPU, whose peak the table does not give.
    assert records[0]["step_seconds"] > 0 and records[0]["flops_per_step_per_device"] > 0
    assert records[0]["examples_per_s"] == pytest.approx(8 / records[0]["step_seconds"])
    assert "mfu" not in records[0]
    assert any(key.startswith("eval/") for r in records for key in r)
    assert list((out / stage / "tensorboard").iterdir())
    config, stats, step = checkpoint.read_config(out / stage)
    assert step == 1 and config.stage == stage
    assert len(stats["normalization"]["scales"]) == 4
  _, vae_stats, _ = checkpoint.read_config(out / "vae")
  assert len(vae_stats["latent"]["mean"]) == 4 and min(vae_stats["latent"]["std"]) > 0


def test_mfu_is_the_step_flops_over_the_device_peak():
  """A step of 2.5e12 FLOPs a device in 0.01 s on an H100 (989 TFLOP/s
  bf16 dense) runs at 25.3% of the peak."""
  cost = train.StepCost(2.5e12, chips.chip_of_device("NVIDIA H100 80GB HBM3").peak_bf16_flops)
  assert cost.rates(0.01) == {"flops_per_step_per_device": 2.5e12,
                              "mfu": pytest.approx(2.5e14 / 989e12)}
  assert chips.chip_of_device("NVIDIA H100 PCIe").peak_bf16_flops == 756e12
  assert chips.chip_of_device("cpu") is None
  assert train.StepCost(None, None).rates(0.01) == {}


def test_profile_steps_are_traced_with_their_numbers(one_device_runs):
  """The VAE run's ``profile_steps=(1, 1)``: one `jax.profiler` trace in
  WORKDIR/profile whose step annotation names step 1, and its Perfetto
  file."""
  out, _ = one_device_runs
  traces = list((out / "vae" / train.PROFILE_DIR).glob("plugins/profile/*/*.xplane.pb"))
  assert len(traces) == 1, traces
  profile = jax.profiler.ProfileData.from_file(str(traces[0]))
  steps = [dict(event.stats)["step_num"] for plane in profile.planes for line in plane.lines
           for event in line.events if event.name == "train_step"]
  assert steps == [1], steps
  assert list(traces[0].parent.glob("perfetto_trace.json.gz"))
  assert not (out / "ldm_pretrain" / train.PROFILE_DIR).exists()


@pytest.mark.parametrize("stage", ["vae", pytest.param("renderer", marks=pytest.mark.slow)])
def test_evaluation_and_checkpoint_statistics_compile_once_per_run(stage):
  """A task's second evaluation and second checkpoint statistics (the
  VAE's latent whitening) reuse the programs the first compiled."""
  from spectral_jax import sharding
  from spectral_jax.models import functional
  from spectral_jax.train import stages
  config = train_configs.load_config(stage)
  mesh = sharding.make_mesh(config.mesh)
  task = stages.make_task(config, mesh, None)
  graphdef, params = functional.split_params(task.make_model(nnx.Rngs(0)))
  constants = task.constants()
  compiles = []

  def note(event, duration, **kwargs):
    del duration, kwargs
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(event)

  jax.monitoring.register_event_duration_secs_listener(note)
  try:
    for _ in range(2):
      first = len(compiles)
      evaluation = task.evaluate(graphdef, params, constants)
      task.stats(graphdef, params, constants)
  finally:
    jax.monitoring.unregister_event_duration_listener(note)
  assert evaluation and compiles[first:] == []
  assert compiles[:first], "the first evaluation compiled nothing: the test sees no compiles"


def test_the_one_step_trained(one_device_runs):
  """The runs the comparisons below rely on trained: the step's learning
  rate was not 0, and the parameters moved from where the run started (in
  stage 2, only frequency attention: the first step moves its
  zero-initialised output projections; the rest gets no gradient through
  them yet)."""
  from spectral_jax.models.build import build_unet, build_vae
  _, results = one_device_runs
  for stage, build in (("vae", build_vae), ("ldm_pretrain", build_unet),
                       ("ldm_freq_attn", build_unet)):
    _, params, learning_rate = results[stage]
    assert learning_rate > 0, stage
    initial = train_configs.initial_params(train_configs.load_config(stage), build)
    assert set(initial) == set(params), stage
    if stage == "ldm_freq_attn":  # It starts from stage 1's parameters.
      initial.update(results["ldm_pretrain"][1])
    moved = {name for name in params if not np.array_equal(params[name], initial[name])}
    if stage == "ldm_freq_attn":
      assert moved and all("freq_attn" in name for name in moved), sorted(moved)
    elif stage == "ldm_pretrain":
      # Residual branches end in zero-initialised convolutions: their first
      # layers get no gradient on step 1 (82 of 167 arrays move).
      assert {"conv_in/kernel", "conv_out/kernel"} <= moved and len(moved) > len(params) / 3
    else:
      assert len(moved) > 0.9 * len(params), (stage, sorted(set(params) - moved))


def test_eight_devices_equal_one(one_device_runs, tmp_path):
  """The same step on a 4x2 (data x fsdp) mesh of 8 fake CPU devices, with
  parameters split over fsdp, gives the 1-device losses and parameters."""
  _, one = one_device_runs
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      " --xla_force_host_platform_device_count=8").strip()
  # The fake devices are CPU devices: pinned there on a machine with a GPU.
  env["JAX_PLATFORMS"] = "cpu"
  done = subprocess.run([sys.executable, str(Path(__file__).parent / "train_configs.py"),
                         str(tmp_path)], env=env, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "devices=8" in done.stdout
  eight = np.load(tmp_path / "results.npz")
  for stage, (loss, params, _) in one.items():
    np.testing.assert_allclose(eight[f"{stage}:loss"], loss, rtol=1e-4)
    for name, value in params.items():
      np.testing.assert_allclose(eight[f"{stage}:{name}"], value, rtol=1e-4, atol=1e-6,
                                 err_msg=f"{stage}:{name}")


def test_stage2_freezes_stage1_bitwise(one_device_runs):
  _, results = one_device_runs
  stage1, stage2 = results["ldm_pretrain"][1], results["ldm_freq_attn"][1]
  new = {name for name in stage2 if "freq_attn" in name}
  assert new and set(stage2) - new == set(stage1)
  for name, value in stage1.items():
    assert np.array_equal(stage2[name], value), name


# test_models.py checks the same in memory; test_end_to_end, the loaded parameters.
@pytest.mark.slow
def test_stage2_starts_as_stage1(one_device_runs):
  """Stage 2 loaded from stage 1 predicts exactly what stage 1 predicts."""
  out, _ = one_device_runs
  from spectral_jax.models.build import build_unet
  predictions = []
  for stage in ("ldm_pretrain", "ldm_freq_attn"):
    config = train_configs.load_config(stage)
    model = build_unet(config, nnx.Rngs(1))
    graphdef, params = nnx.split(model, nnx.Param)
    params = nnx.to_pure_dict(params)
    shardings = jax.tree.map(lambda x: x.sharding, params)
    params = checkpoint.load_into(out / "ldm_pretrain", params, shardings)
    model = nnx.merge(graphdef, nnx.State(params))
    rng = np.random.default_rng(0)
    k = config.data.num_freqs
    z = jnp.asarray(rng.normal(size=(2, k, 4, 8, 4)), jnp.float32)
    image = jnp.asarray(rng.uniform(-1, 1, size=(2, 16, 32, 3)), jnp.float32)
    freq = jnp.broadcast_to(jnp.arange(k), (2, k))
    predictions.append(model(z, jnp.array([10, 500]), image, freq, jnp.array([True, False])))
  np.testing.assert_array_equal(predictions[0], predictions[1])


def _last_eval(workdir) -> dict:
  return [r for r in metrics.read_metrics(workdir) if any(k.startswith("eval/") for k in r)][-1]


def test_stage2_lowers_the_heldout_eps_mse_below_stage1(one_device_runs):
  """The held-out ε-MSE (fixed timesteps and noise per example): the stage-2
  run logs stage 1's beside its own, on the same inputs. Stage 1's value is
  what the stage-1 run logged for the parameters stage 2 loaded (same 8 test
  examples, same seed), and one SGD step of frequency attention at learning
  rate 0.05 lowers it: by 0.19% here, and by 0.10-0.16% with seeds 1-6."""
  out, _ = one_device_runs
  stage1, stage2 = _last_eval(out / "ldm_pretrain"), _last_eval(out / "ldm_freq_attn")
  assert stage1["step"] == stage2["step"] == 1
  assert "eval/heldout_eps_mse_stage1" not in stage1
  np.testing.assert_allclose(stage2["eval/heldout_eps_mse_stage1"],
                             stage1["eval/heldout_eps_mse"], rtol=1e-6)
  # A margin far above float rounding (1e-6) and 2-4x below the gains seen.
  assert stage2["eval/heldout_eps_mse"] < 0.9995 * stage2["eval/heldout_eps_mse_stage1"]


def test_heldout_eps_mse_is_deterministic(one_device_runs):
  """Two evaluations of the same parameters give the same held-out ε-MSE,
  and it is the value the training run logged for them."""
  from spectral_jax import sharding
  from spectral_jax.models import functional
  from spectral_jax.models.build import build_unet
  from spectral_jax.train import stages
  out, _ = one_device_runs
  run = out / "ldm_freq_attn"
  model, config, _, _ = checkpoint.load_model(run, build_unet, ("ldm_freq_attn",))
  graphdef, params = functional.split_params(model)
  task = stages.make_task(config, sharding.make_mesh(config.mesh), run)
  first, second = (task.evaluate(graphdef, params, task.constants()) for _ in range(2))
  logged = _last_eval(run)
  for name in ("heldout_eps_mse", "heldout_eps_mse_stage1"):
    assert first[name] == second[name], name
    np.testing.assert_allclose(first[name], logged[f"eval/{name}"], rtol=1e-6, err_msg=name)


def test_latent_moments_are_accurate_when_the_mean_dwarfs_the_spread():
  """Per-batch `batch_moments` (float32, on the device) pooled by
  `combine_moments` (float64) give NumPy's float64 mean and std of latents
  whose channels have means of 1e3 and stds of 1e-2, over batches of
  unequal sizes; the float32 ``E[x²] - E[x]²`` they replace is off by
  orders of magnitude there (float32 ``E[x²]`` ~ 1e6 has steps of 0.06; the
  variance is 1e-4)."""
  from spectral_jax.train.vae import batch_moments, combine_moments
  rng = np.random.default_rng(0)
  mean = np.array([1e3, -1e3, 0.0, 5.0])
  std = np.array([1e-2, 1e-2, 1.0, 3.0])
  latents = (mean + std * rng.standard_normal((600, 3, 2, 4))).astype(np.float32)
  batches = np.split(latents, [200, 260, 580])
  count, pooled_mean, m2 = combine_moments(
      jax.device_get(jax.jit(batch_moments)(batch)) for batch in batches)
  exact = latents.astype(np.float64).reshape(-1, 4)
  assert count == exact.shape[0]
  np.testing.assert_allclose(pooled_mean, exact.mean(axis=0), rtol=1e-7, atol=1e-6)
  # 2e-5 here: the float32 batch means (steps of 6e-5 at 1e3) enter the
  # pooling; without the shift in `batch_moments` it would be 2e-4.
  np.testing.assert_allclose(np.sqrt(m2 / count), exact.std(axis=0), rtol=5e-5)

  # What `latent_stats` did before, on all the latents at once.
  x = jnp.asarray(latents).reshape(-1, 4)
  first, second = jax.device_get((x.mean(axis=0), (x ** 2).mean(axis=0)))
  naive_std = np.sqrt(np.maximum(second - first ** 2, 1e-12))
  error = np.abs(naive_std / exact.std(axis=0) - 1)
  assert np.all(error[:2] > 0.5) and np.all(error[2:] < 1e-3), error


def test_trained_models_load_and_other_stages_are_refused(one_device_runs):
  """`load_motion_model` rebuilds a run's U-Net and its VAE; pointing a
  loader at another stage's run is a clear error."""
  out, _ = one_device_runs
  from spectral_jax.inference.loading import load_motion_model, load_vae
  model = load_motion_model(out / "ldm_freq_attn")
  assert model.config.stage == "ldm_freq_attn"
  assert len(model.normalization.scales) == model.config.data.num_freqs
  with pytest.raises(ValueError, match="'ldm_pretrain' run, not one of \\('vae',\\)"):
    load_vae(out / "ldm_pretrain", None)
  with pytest.raises(ValueError, match="'vae' run"):
    load_motion_model(out / "vae")


def _shapes(tree):
  return jax.tree.map(lambda x: (tuple(x.shape), jnp.dtype(x.dtype)), tree)


@pytest.mark.parametrize("stage", ["vae", "ldm_freq_attn", "renderer"])
def test_a_step_from_configs_alone_has_the_shapes_of_its_task(one_device_runs, stage):
  """What `spectral_jax.train.compile` compiles, a stage's step built from
  configs alone (`stages.make_step`; no data, no VAE run, no VGG16
  weights), has the constants and batches of the task that trains it."""
  from spectral_jax import sharding
  from spectral_jax.train import stages
  out, _ = one_device_runs
  config = (train_configs.load_config(stage) if stage == "renderer"
            else checkpoint.read_config(out / stage)[0])
  vae_config = checkpoint.read_config(out / "vae")[0] if stage.startswith("ldm") else None
  mesh = sharding.make_mesh(config.mesh)
  task = stages.make_task(config, mesh, out / stage)
  step = stages.make_step(config, vae_config)
  assert _shapes(step.abstract_constants()) == _shapes(task.constants())
  batches = task.train_batches(0, 1)
  try:
    assert _shapes(step.batch_shapes(config.batch_size)) == _shapes(next(batches))
  finally:
    batches.close()
  abstract_state = train.plan_step(config, step, mesh, step.abstract_constants()).abstract_state
  real_state = train.plan_step(config, task, mesh, task.constants()).abstract_state
  assert (_shapes(abstract_state(step.abstract_constants()))
          == _shapes(real_state(task.constants())))


def _resumed_rtol() -> float:
  """Exact up to float rounding on a CPU. On a GPU the resumed run's fresh
  compilation may autotune other convolution algorithms (TF32 sums in
  another order) unless XLA_FLAGS has --xla_gpu_deterministic_ops=true; a
  resume bug (another batch, a reset optimizer) is off by percents."""
  exact = (jax.default_backend() == "cpu"
           or "--xla_gpu_deterministic_ops=true" in os.environ.get("XLA_FLAGS", ""))
  return 1e-6 if exact else 1e-3


# Stage 1 runs the LDM task as stage 2 does: slow.
@pytest.mark.parametrize("stage", [pytest.param("ldm_pretrain", marks=pytest.mark.slow),
                                   "ldm_freq_attn", "renderer"])
def test_a_stage_stopped_after_a_checkpoint_resumes_with_the_same_losses(
    stage, one_device_runs, tmp_path, stage_compile_cache):
  """The LDM stages and the renderer (the VAE: `test_preemption`), stopped
  after saving step 1 and resumed: step 2 has the straight run's loss,
  parameters and statistics (and evaluation, where there is one); step 2
  trained, at a non-zero learning rate. Stage 1 predicts v
  (`_v_prediction_config`); stage 2 (frequency attention alone trains)
  starts from `one_device_runs`' ε stage 1."""
  configure = _v_prediction_config if stage == "ldm_pretrain" else (
      lambda out: _two_step_config(stage, out))
  runs = _straight_and_resumed(configure(one_device_runs[0]), tmp_path, stage_compile_cache)
  straight, resumed = runs["straight"], runs["resumed"]
  losses = {name: [r for r in runs[f"{name}_records"] if "loss" in r]
            for name in ("straight", "resumed")}
  assert [r["step"] for r in losses["straight"]] == [1, 2], stage
  assert [r["step"] for r in losses["resumed"]] == [2], stage
  assert all(r["learning_rate"] > 0 for r in losses["straight"] + losses["resumed"])
  for name in ("loss", "grad_norm", "param_norm"):
    np.testing.assert_allclose(losses["resumed"][0][name], losses["straight"][1][name],
                               rtol=_resumed_rtol(), err_msg=name)
  evaluations = {name: [r for r in runs[f"{name}_records"] if "loss" not in r]
                 for name in ("straight", "resumed")}
  evaluated = 1 if stage == "ldm_pretrain" else 0  # At step 2.
  assert len(evaluations["straight"]) == len(evaluations["resumed"]) == evaluated
  for expected, logged in zip(evaluations["straight"], evaluations["resumed"]):
    assert logged.keys() == expected.keys()
    np.testing.assert_allclose([logged[k] for k in expected], list(expected.values()),
                               rtol=_resumed_rtol())
  assert [r["step"] for r in metrics.read_metrics(resumed)] == (
      [r["step"] for r in metrics.read_metrics(straight)])
  assert checkpoint.read_config(resumed)[1:] == checkpoint.read_config(straight)[1:]

  final, expected = train_configs.saved_params(resumed), train_configs.saved_params(straight)
  for name, value in expected.items():
    np.testing.assert_allclose(final[name], value, rtol=_resumed_rtol(), atol=1e-7,
                               err_msg=name)
  # Step 2, trained by the resumed run, moved the parameters of step 1: in
  # stage 2 frequency attention alone; elsewhere most arrays (not yet those
  # of residual branches behind zero-initialised layers: 72 of the
  # renderer's 88 arrays move).
  moved = train_configs.moved(train_configs.saved_params(resumed, 1), final)
  if stage == "ldm_freq_attn":
    assert moved and all("freq_attn" in name for name in moved), sorted(moved)
  else:
    assert len(moved) > 0.75 * len(final), (stage, sorted(set(final) - moved))


@pytest.mark.slow
def test_resume_gives_the_same_losses(tmp_path):
  config = train_configs.load_config("vae")
  config.num_steps, config.checkpoint_every, config.eval_every = 4, 2, 0
  straight = train.run(config, tmp_path / "straight", progress=False)
  config.num_steps = 2
  train.run(config, tmp_path / "resumed", progress=False)
  config.num_steps = 4
  resumed = train.run(config, tmp_path / "resumed", progress=False)
  assert [r["step"] for r in resumed] == [3, 4]
  np.testing.assert_allclose([r["loss"] for r in resumed],
                             [r["loss"] for r in straight[2:]], rtol=_resumed_rtol())
  logged = metrics.read_metrics(tmp_path / "resumed")
  assert [r["step"] for r in logged] == [1, 2, 3, 4]


@pytest.mark.slow
def test_a_damaged_newest_checkpoint_is_reported_and_the_one_before_resumed(tmp_path, capfd):
  config = train_configs.load_config("vae")
  config.num_steps, config.checkpoint_every, config.eval_every = 4, 2, 0
  straight = train.run(config, tmp_path, progress=False)
  # A file of step 4's parameters cut short, as by a disk filling up.
  files = sorted(f for f in (tmp_path / "checkpoints" / "4" / "params").rglob("*")
                 if f.is_file() and f.stat().st_size > 1000)
  assert files
  for f in files:
    f.write_bytes(f.read_bytes()[:100])
  config.num_steps = 5
  resumed = train.run(config, tmp_path, progress=False)
  assert "warning: checkpoint 4 cannot be read" in capfd.readouterr().err
  assert (tmp_path / "corrupt_checkpoints" / "4").is_dir()
  # Resumed from step 2: steps 3 and 4 are trained again, as the first time.
  assert [r["step"] for r in resumed] == [3, 4, 5]
  np.testing.assert_allclose([r["loss"] for r in resumed[:2]],
                             [r["loss"] for r in straight[2:]], rtol=_resumed_rtol())
  assert checkpoint.manager(tmp_path, read_only=True).all_steps() == [2, 4, 5]


@pytest.mark.slow
def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path):
  config = train_configs.load_config("vae")
  config.num_steps, config.checkpoint_every, config.eval_every = 2, 1, 0
  train.run(config, tmp_path, progress=False)
  config.num_steps = 4
  # Finite (a NaN rate is refused by `check_config`), but Adam's steps of
  # about the rate overflow the parameters' norm at once.
  config.optimizer.learning_rate = 1e38
  with pytest.raises(train.TrainingDiverged, match="last good checkpoint is step 2"):
    train.run(config, tmp_path, progress=False)
  assert checkpoint.manager(tmp_path, read_only=True).latest_step() == 2


@pytest.mark.slow
def test_an_overflowing_gradient_norm_stops_the_run(tmp_path):
  """A loss weight of 1e38 keeps the loss and every gradient finite but
  overflows the gradient's squared norm: clipping then zeroed each update
  and the run went on, training nothing. It stops now, saving nothing."""
  config = train_configs.load_config("vae")
  config.num_steps, config.eval_every, config.log_every = 2, 0, 1
  config.loss.l1_weight = 1e38
  with pytest.raises(train.TrainingDiverged, match="at step 1 the gradient's norm is inf"):
    train.run(config, tmp_path, progress=False)
  assert checkpoint.manager(tmp_path, read_only=True).latest_step() is None


@pytest.mark.slow
def test_a_preemption_save_never_stores_diverged_parameters(tmp_path, monkeypatch):
  """A preemption save comes at any step, not only at logging or checkpoint
  steps: the steps since the last check are checked before it too."""
  config = train_configs.load_config("vae")
  config.num_steps, config.checkpoint_every, config.eval_every = 2, 1, 0
  train.run(config, tmp_path, progress=False)
  real_manager = checkpoint.manager

  def preempted_at_step_3(*args, **kwargs):
    mngr = real_manager(*args, **kwargs)
    mngr.reached_preemption = lambda step: step == 3
    return mngr

  monkeypatch.setattr(checkpoint, "manager", preempted_at_step_3)
  config.num_steps, config.log_every, config.checkpoint_every = 10, 100, 100
  config.optimizer.learning_rate = 1e38  # Step 3's parameters overflow.
  with pytest.raises(train.TrainingDiverged, match="at step 3 .* last good checkpoint is step 2"):
    train.run(config, tmp_path, progress=False)
  assert real_manager(tmp_path, read_only=True).latest_step() == 2


@pytest.mark.slow
def test_command_line(tmp_path):
  """``python -m spectral_jax.train`` with overrides; a bad one fails clearly."""
  command = [sys.executable, "-m", "spectral_jax.train",
             f"--config={train_configs.CONFIGS / 'vae.py'}:tiny", f"--workdir={tmp_path}",
             "--config.num_steps=1", "--config.eval_every=0", "--config.data.width=32",
             "--config.data.height=16", "--config.data.num_freqs=4",
             "--config.data.synthetic.num_frames=16", "--config.model.base_channels=8",
             "--config.data.synthetic.stats_examples=4", "--no_progress"]
  done = subprocess.run(command, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-2000:]
  assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])["step"] == 1
  bad = subprocess.run(command[:-1] + ["--config.mesh.fsdp=3"], capture_output=True, text=True)
  assert bad.returncode != 0 and "mesh" in bad.stderr


def test_v_prediction_at_zero_terminal_snr_trains_and_stage2_must_match(one_device_runs,
                                                                        v_prediction_run,
                                                                        tmp_path):
  """Stage 1 predicting v on a zero-terminal-SNR schedule (the `demo`
  setting) trains and logs its loss and held-out error under v's name; a
  stage 2 that would start from it with the ε setting is refused before
  any step."""
  out, _ = one_device_runs
  run = v_prediction_run
  first, evaluation = metrics.read_metrics(run)[0], _last_eval(run)
  assert np.isfinite(first["v_mse"]) and "eps_mse" not in first
  assert np.isfinite(evaluation["eval/heldout_v_mse"])
  assert np.isfinite(evaluation["eval/sample_l1_px"])

  stage2 = train_configs.load_config("ldm_freq_attn")
  stage2.vae_from, stage2.init_from = str(out / "vae"), str(run)
  with pytest.raises(ValueError, match="predicting 'v'"):
    train.run(stage2, tmp_path / "ldm2", progress=False)
  assert not (tmp_path / "ldm2" / checkpoint.CHECKPOINT_DIR).exists()


def test_zero_terminal_snr_needs_v_prediction():
  from spectral_jax.config_base import check_config
  config = train_configs.load_config("ldm_pretrain")
  config.diffusion.schedule.zero_terminal_snr = True
  with pytest.raises(ValueError, match="prediction='v'"):
    check_config(config)
  config.diffusion.prediction = "v"
  check_config(config)


@pytest.mark.parametrize("stage", ["ldm_pretrain", "ldm_freq_attn"])
@pytest.mark.parametrize("saved_before_the_field", [False, True])
def test_the_loss_sees_the_frequencies_per_example_of_the_config(
    stage, saved_before_the_field, one_device_runs, tmp_path):
  """The LDM loss calls the U-Net on ``data.freqs_per_example`` frequencies
  of each example: 1 (stage 1), one bin drawn in [0, K); 0 (stage 2), all K
  in order. A stored config from before the field (and
  ``model.freq_attention``) gets its stage's."""
  import ml_collections

  from spectral_jax import sharding
  from spectral_jax.train import stages
  out, _ = one_device_runs
  config = train_configs.load_config(stage)
  config.vae_from = str(out / "vae")
  if saved_before_the_field:
    config = ml_collections.ConfigDict(config.to_dict())
    del config.data["freqs_per_example"], config.model["freq_attention"]
  task = stages.make_task(config, sharding.make_mesh(config.mesh), tmp_path)
  seen = []

  def unet(z_t, t, image, freq_index, cond_mask):
    del t, image, cond_mask
    seen.append(np.asarray(freq_index))
    return jnp.zeros_like(z_t)

  data, batch_size = config.data, 16
  batch = {"image": np.zeros((batch_size, data.height, data.width, 3), np.uint8),
           "spectral_volume": np.zeros((batch_size, data.num_freqs, data.height, data.width, 4),
                                       np.float32)}
  task.loss(unet, task.constants(), batch, jax.random.key(0))
  (freq_index,) = seen
  if stage == "ldm_pretrain":
    assert freq_index.shape == (batch_size, 1)
    assert freq_index.min() >= 0 and freq_index.max() < data.num_freqs
    assert len(np.unique(freq_index)) > 1  # Drawn per example.
  else:
    np.testing.assert_array_equal(
        freq_index, np.broadcast_to(np.arange(data.num_freqs), (batch_size, data.num_freqs)))


def test_frequencies_per_example_are_one_or_all():
  from spectral_jax.config_base import check_config
  config = train_configs.load_config("ldm_freq_attn")
  check_config(config)
  config.data.freqs_per_example = 2
  with pytest.raises(ValueError, match="freqs_per_example must be in \\[0, 1\\]"):
    check_config(config)


def test_a_v_prediction_run_samples_at_zero_terminal_snr(v_prediction_run):
  """The v-prediction run, loaded as `animate` loads it, keeps its schedule
  (alphabar of the last step exactly 0) and samples with v: its spectral
  volumes are finite, and the first DDIM step, at t = N - 1 where the
  signal-to-noise ratio is 0, is the closed form there (float64 NumPy from
  the network's outputs): ``v = sqrt(a) eps - sqrt(1 - a) x0`` and
  ``z_t = sqrt(a) x0 + sqrt(1 - a) eps`` at ``a = 0`` give ``x0 = -v`` and
  ``eps = z_t``, so ``z_prev = -sqrt(a_prev) v + sqrt(1 - a_prev) z_t``. A
  model that took v for ε would divide by sqrt(0); one on a schedule that
  does not reach 0 would step elsewhere."""
  from spectral_jax import diffusion
  from spectral_jax.diffusion import latents
  from spectral_jax.inference.loading import load_motion_model
  model = load_motion_model(v_prediction_run)
  alphas = np.asarray(model.schedule.alphas_cumprod, np.float64)
  assert alphas[-1] == 0 and np.all(alphas[:-1] > 0)
  options = model.options(num_steps=2)
  ddim = model._ddim_options(options)  # What `sample` and `sampler` run DDIM with.
  assert ddim["prediction"] == "v"
  data = model.config.data
  image = np.random.default_rng(0).integers(0, 256, (1, data.height, data.width, 3), np.uint8)

  volumes = np.asarray(model.sampler(options)(image, jax.random.key(0)))
  assert volumes.shape == (1, data.num_freqs, data.height, data.width, 4)
  assert np.all(np.isfinite(volumes))

  factor, channels = model.vae.downsample_factor, model.latent_stats["mean"].shape[-1]
  shape = (1, data.num_freqs, data.height // factor, data.width // factor, channels)
  z, plan = diffusion.ddim_start(model.schedule, jax.random.key(1), shape, options.num_steps)
  timesteps = np.asarray(plan[0])
  assert timesteps[0] == len(alphas) - 1
  eps_fn = latents.conditional_eps(model.unet, latents.image_to_unit(jnp.asarray(image)),
                                   data.num_freqs)
  first = jax.tree.map(lambda x: x[:1], plan)

  @jax.jit
  def first_step(z):
    """DDIM's first step from ``z``, and the network's outputs there, with
    the picture and without (classifier-free guidance)."""
    outputs = eps_fn(jnp.concatenate([z, z]), jnp.full((2,), timesteps[0], jnp.int32),
                     jnp.array([True, False]))
    return diffusion.ddim_steps(eps_fn, model.schedule, z, first, **ddim), outputs

  stepped, outputs = jax.device_get(first_step(z))
  cond, uncond = np.asarray(outputs, np.float64)
  w = options.guidance_scale
  assert w > 0
  v = (1 + w) * cond - w * uncond
  a_prev = alphas[timesteps[1]]
  expected = -np.sqrt(a_prev) * v + np.sqrt(1 - a_prev) * np.asarray(z, np.float64)[0]
  np.testing.assert_allclose(stepped[0], expected, rtol=1e-5, atol=1e-5)


def test_each_step_draws_its_noise_from_the_key_folded_with_its_step():
  """The compiled step folds the run's key with the state's step: step s
  draws from ``fold_in(key, s)``, so steps differ and a resumed step draws
  what the straight run drew."""
  import optax

  class NoisyTask:
    def loss(self, model, constants, batch, key):
      del constants
      noise = jax.random.normal(key, ())
      return jnp.mean((model(batch["x"]) - noise) ** 2), {"noise": noise}

  model = nnx.Linear(1, 1, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  params = nnx.to_pure_dict(params)
  labels = jax.tree.map(lambda _: "trainable", params)
  tx = optax.sgd(0.1)
  plan = train.StepPlan(task=NoisyTask(), mesh=None, graphdef=graphdef, abstract_params=None,
                        labels=labels, tx=tx, learning_rate=optax.constant_schedule(0.1),
                        shardings=None)
  step_fn = jax.jit(train.make_train_step(plan))
  key = jax.random.key(7)
  batch = {"x": jnp.ones((2, 1))}
  state = {"step": jnp.int32(0), "params": params, "opt_state": tx.init(params), "constants": {}}
  drawn = []
  for _ in range(2):
    state, metrics = step_fn(state, batch, key)
    drawn.append(float(metrics["noise"]))
  resumed = {**state, "step": jnp.int32(1)}
  _, metrics = step_fn(resumed, batch, key)
  expected = [float(jax.random.normal(jax.random.fold_in(key, s), ())) for s in (0, 1)]
  assert drawn == expected and drawn[0] != drawn[1]
  assert float(metrics["noise"]) == expected[1]
  assert int(state["step"]) == 2
