"""Benchmarks that print their numbers (never part of the test suite).

  python tools/benchmark.py data [--videos 2 --video-frames 300 --workers 2]
  python tools/benchmark.py splat [--channels 64 --batch 1 --sizes 256x160,512x288 --rounds 10
                                   --fake-devices 1,8] [--device auto]
  python tools/benchmark.py train [--variants tiny --stages vae,...,renderer --steps 3]
                                  [--dtype float32 --device auto]
  python tools/benchmark.py animate [--variant tiny --frames 150 --steps 50,250] [--dtype --device]
  python tools/benchmark.py animate --model default --steps 25 [--size 512x320]
  python tools/benchmark.py render [--frames 150] [--dtype float32 --device auto]
  python tools/benchmark.py input [--stage all --workers 1,2,4 --batches 12]
  python tools/benchmark.py page [--sizes 256x160,512x320 --frames 20]

Every benchmark that runs JAX (all but ``data`` and ``input``) takes ``--device``:
``auto`` (default) is JAX's choice, the GPU where one is present, ``gpu``
insists on one (and stops if JAX sees none), ``cpu`` pins JAX to the CPU;
the device the figures come from is printed first. ``train``, ``animate``
and ``render`` take ``--dtype float32`` (default) or ``bfloat16``: the
models' computation dtype (``config.dtype`` of every trained run; the
parameters, optimizer state and losses stay float32), printed with each
figure. bfloat16 pays off on GPUs and TPUs; on a CPU it is emulated and no
faster than float32.

``data``: data-preparation throughput at 256x160 in clip frames per second,
end to end (decode, flow, filters, FFT, statistics, TFDS write), with a
per-stage breakdown on one 150-frame clip, and the peak memory (RSS) of
`spectral-jax motion` on a 150-frame clip and of a whole `prepare` run.

``splat``: milliseconds per call of the jitted `softmax_splat` (``--batch``
pictures, B=1 by default) at ``--sizes`` (256x160 and 512x288), beside a plain PyTorch CPU reference of the same formula
(one ``index_add_`` per bilinear corner) written here, on a smooth flow with
collisions and targets outside the image; prints the speed-up and the largest
difference relative to the largest output (fails above 1e-4). Both run
with the threads JAX uses. The reference needs ``pip install torch==2.13.0``
(never a project dependency); without it JAX is timed alone. Then, with
``--fake-devices 1,8`` (default), examples/s of two steps with the batch (8
at 128x80) split over N fake CPU devices, one process per N: the splat's
forward and backward (C=64), and a training step of the ``tiny`` renderer
(L1 loss, parameter gradients); with the collectives in each compiled step
(the renderer's parameter gradients are all-reduced, the splat needs none).
The N devices share the same cores: the ratio to 1 device shows what the
split costs, not a speed-up.

``train``: training examples per second of every stage (vae, ldm_pretrain,
ldm_freq_attn, renderer) at the ``tiny`` and ``paper`` shapes, each run for a
few steps through the real loop (`spectral_jax.train.train.run`, on
synthetic scenes; the paper shapes with batch 2 on a CPU, their configs'
batch on an accelerator), with the MFU where the device's peak is known
(`train.chips`); the compiled step's memory is printed by the loop.
``--stages`` picks some (ldm_freq_attn starts from the two before it).
Then DDIM sampling seconds per picture at 50 and 250 steps with the
stage-2 model, without guidance and with the classifier-free guidance of
its sampling config, and the network evaluations per picture (one batched
call for all K frequencies per step).
Paper-shape sampling on a CPU is timed at a few steps and extrapolated
linearly (marked so). ``--variants tiny,paper`` adds the paper shapes (batch
2): meant for an accelerator; on a 2-core CPU the paper VAE's step (2 examples, 8
frequency maps of 256x160) needs 18 GiB and several minutes.

``animate``: `spectral-jax animate` of a 150-frame video at ``--size``
(default 512x320, twice the models' 256x160: the size `animate` gives a
photo of 512 px or more), by phase (load, DDIM sampling at 50 and 250 steps, rendering, H.264 encoding),
each timed once compiled and with its first (compiling) call; then the whole
command in two fresh processes sharing a new compilation cache, the second
loading what the first compiled. The models are trained for one step from
``--variant`` (``tiny`` widths by default, the size class of a model a CPU
runs) at 256x160 with K=16 over T=150 frames: only the shapes matter for
speed.

With ``--model`` (``default``: the one in ``spectral_jax/default_model/``)
those models are timed instead, in the dtype they were trained in, and the
command runs with their default DDIM steps.

``render``: frames per second of the full renderer (`render_frames`,
batches of 8) at 256x160 and 512x288 with the paper's network, and the peak
memory (RSS) of rendering a 150-frame video.

``input``: training examples per second that the input alone delivers
(`train.data.train_batches`: synthetic scenes made, stacked and normalized
as the stage's task does), for each stage's ``paper`` config (its batch size;
256x160, K=16, T=150; the renderer's 4 rendered frames per example) with
``config.data.worker_count`` = each of ``--workers``, beside the device's
training rate for that stage measured on an H100: the input keeps up where
its figure is the larger. The first batch (worker start-up included) is
timed apart; the rate is over the last whole rounds of the workers (N
workers hand over N batches at about the same time) in ``--batches`` more.
More workers than cores cannot help.

``page``: frames per second of the live picture page (`animate -o
OUT.html`) in headless Chromium (Debian's ``chromium`` and
``chromium-driver``, as the tests use; its WebGL2 runs on SwiftShader, on
the CPU), at ``--sizes``, with a volume of the default model's shape (K=16
on a 128x80 grid, T=150): ``--frames`` frames drawn back to back, each
waited for, and the rate the page itself reaches with requestAnimationFrame
over 3 seconds (at most the display's 60 Hz). A desktop GPU is what the page
is built for; this is the floor without one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZE = (256, 160)
CONFIGS = Path(__file__).resolve().parent.parent / "configs"
CLIP_FRAMES = 150
DTYPES = ("float32", "bfloat16")
DEVICES = ("auto", "gpu", "cpu")


def _select_device(device: str) -> str:
  """Points JAX at ``device`` before it is first imported (processes this
  one starts inherit the choice); returns the device the figures come from."""
  if device == "cpu":
    os.environ["JAX_PLATFORMS"] = "cpu"
  elif device == "gpu":
    # JAX's own choice, which is the GPU wherever it can use one.
    os.environ.pop("JAX_PLATFORMS", None)
  import jax
  devices = jax.devices()
  if device == "gpu" and devices[0].platform != "gpu":
    raise SystemExit("--device gpu: JAX sees no GPU here (a CUDA build of JAX, "
                     "jax[cuda12], and an NVIDIA driver are needed)")
  return f"{devices[0].platform} ({devices[0].device_kind}) x{len(devices)}"


def _measured(command: list[str]) -> tuple[float, float]:
  """Runs ``command``; returns (wall seconds, peak RSS in MiB of its largest
  process, workers included)."""
  probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
           "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, "
           "stderr=subprocess.DEVNULL); "
           "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
  out = subprocess.run([sys.executable, "-c", probe, *command], check=True,
                       capture_output=True, text=True).stdout.split()
  return float(out[0]), float(out[1]) / 1024.0


def _rate(fn, repeats: int) -> float:
  """Seconds per call of ``fn`` (best of a few timings)."""
  fn()
  best = float("inf")
  for _ in range(3):
    start = time.perf_counter()
    for _ in range(repeats):
      fn()
    best = min(best, (time.perf_counter() - start) / repeats)
  return best


def _stage_breakdown(video: Path) -> None:
  import cv2

  from spectral_jax.data import clips
  from spectral_jax.data import video as video_io
  from spectral_jax.motion import flow, normalize, spectral
  config = clips.ClipConfig()
  clip = video_io.read_clip(video, num_frames=CLIP_FRAMES, fps=30.0, size=SIZE)
  decode_s = _rate(lambda: video_io.read_clip(video, num_frames=CLIP_FRAMES, fps=30.0,
                                              size=SIZE), 1)
  gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in clip[:2]]
  dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
  one_flow_s = _rate(lambda: dis.calc(gray[0], gray[1], None), 50)
  flows_s = _rate(lambda: flow.displacements(clip, config.flow), 1)
  fb_s = _rate(lambda: flow.displacements(clip, flow.FlowConfig(forward_backward=True)), 1)
  disp, _ = flow.displacements(clip, config.flow)
  fft_s = _rate(lambda: spectral.spectral_volume(disp, 16), 5)
  real = spectral.to_real_layout(spectral.spectral_volume(disp, 16)).astype(np.float16)
  accumulator = normalize.PercentileAccumulator.zeros(16)
  hist_s = _rate(lambda: accumulator.update(real), 5)
  example_s = _rate(lambda: clips.make_example(clip, config, video_key="v", start=0), 1)
  print(f"per 150-frame clip at {SIZE[0]}x{SIZE[1]}, one process:")
  print(f"  decode+resample (ffmpeg)   {CLIP_FRAMES / decode_s:8.0f} frames/s")
  print(f"  DIS medium, one flow       {1 / one_flow_s:8.0f} flows/s")
  print(f"  flow 0->t for a clip       {CLIP_FRAMES / flows_s:8.0f} frames/s "
        f"({flows_s * 1e3:.0f} ms, init from previous)")
  print(f"    with forward-backward    {CLIP_FRAMES / fb_s:8.0f} frames/s")
  print(f"  FFT to K=16                {fft_s * 1e3:8.1f} ms")
  print(f"  |x| histogram update       {hist_s * 1e3:8.1f} ms")
  print(f"  whole example (flow..fp16) {CLIP_FRAMES / example_s:8.0f} frames/s")


def benchmark_data(args) -> None:
  from spectral_jax.data import synthetic
  from spectral_jax.data import video as video_io
  from spectral_jax.data.dataset import REPORT_FILE
  work = Path(tempfile.mkdtemp(prefix="spectral_jax_bench_"))
  try:
    videos = work / "videos"
    for seed in range(args.videos):
      scene = synthetic.make_scene(seed, num_frames=args.video_frames, height=SIZE[1],
                                   width=SIZE[0], render=True)
      video_io.write_video(videos / f"scene_{seed}.mp4", scene.frames, 30.0)
    _stage_breakdown(videos / "scene_0.mp4")

    cli = [sys.executable, "-m", "spectral_jax.cli"]
    motion_s, motion_mib = _measured(cli + ["motion", str(videos / "scene_0.mp4"),
                                            "-o", str(work / "S.npz")])
    print(f"\n`motion` on one 150-frame clip: {motion_s:.2f} s wall (start-up included), "
          f"peak RSS {motion_mib:.0f} MiB")

    data = work / "data"
    # A low static threshold keeps the synthetic clips, so every clip pays
    # for FFT, statistics and writing too.
    prepare_s, prepare_mib = _measured(cli + [
        "prepare", str(videos), "-o", str(data), "--workers", str(args.workers),
        "--static-px", "0", "--camera-fraction", "1"])
    report = json.loads((data / REPORT_FILE).read_text())
    windows = report["clips"]["train"] + report["clips"]["test"] + sum(
        n for reason, n in report["dropped"].items() if reason != "scene_cut")
    clip_frames = windows * CLIP_FRAMES
    written = sum(report["clips"].values())
    print(f"`prepare` {args.videos} videos x {args.video_frames} frames, "
          f"{args.workers} workers: {windows} clips ({written} written), "
          f"{clip_frames} clip frames in {prepare_s:.1f} s = "
          f"{clip_frames / prepare_s:.0f} clip frames/s end to end "
          f"(start-up included); peak RSS of any process {prepare_mib:.0f} MiB")
  finally:
    shutil.rmtree(work, ignore_errors=True)


def _torch_softmax_splat(torch, features, flow, metric, eps: float = 1e-7):
  """Softmax splatting in plain PyTorch, the benchmark's independent reference.

  ``features [B, H, W, C]``, ``flow [B, H, W, 2]`` px, ``metric [B, H, W, 1]``
  → ``[B, H, W, C]``: numerator and weight sum share one buffer with the
  weight as channel C, one ``index_add_`` per bilinear corner.
  """
  batch, height, width, channels = features.shape
  weight = torch.exp(torch.clamp(metric, max=30.0))
  source = torch.cat([features * weight, weight], dim=-1).reshape(-1, channels + 1)
  ys, xs = torch.meshgrid(torch.arange(height, dtype=flow.dtype),
                          torch.arange(width, dtype=flow.dtype), indexing="ij")
  target_x = (xs + flow[..., 0]).reshape(-1)
  target_y = (ys + flow[..., 1]).reshape(-1)
  left, top = torch.floor(target_x), torch.floor(target_y)
  frac_x, frac_y = target_x - left, target_y - top
  image = torch.arange(batch).repeat_interleave(height * width)
  out = torch.zeros(batch * height * width, channels + 1)
  for x, y, bilinear in ((left, top, (1 - frac_x) * (1 - frac_y)),
                         (left + 1, top, frac_x * (1 - frac_y)),
                         (left, top + 1, (1 - frac_x) * frac_y),
                         (left + 1, top + 1, frac_x * frac_y)):
    keep = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    index = (image * height + y.long()) * width + x.long()
    out.index_add_(0, index[keep], source[keep] * bilinear[keep, None])
  out = out.reshape(batch, height, width, channels + 1)
  return out[..., :channels] / (out[..., channels:] + eps)


def _splat_benchmark(args) -> None:
  try:
    import torch
  except ImportError:
    torch = None
  import jax

  from spectral_jax.render.splat import softmax_splat
  # XLA:CPU sizes its thread pool by the CPUs this process may run on.
  threads = len(os.sched_getaffinity(0))
  if torch is None:
    print("PyTorch is not installed (pip install torch==2.13.0): softmax_splat is timed "
          "alone, without the reference")
  else:
    torch.set_num_threads(threads)
  splat = jax.jit(softmax_splat)
  batch = args.batch
  print(f"softmax_splat forward, C={args.channels}, B={batch}, {threads} threads, "
        f"best of {args.rounds}:")
  for width, height in _sizes(args.sizes):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(batch, height, width, args.channels)).astype(np.float32)
    # Smooth waves of up to 8 px, as motion is: neighbours move together,
    # some collide, some leave the image.
    y, x = np.mgrid[:height, :width] / np.float32([[[height]], [[width]]])
    flow = np.stack([8 * np.sin(2 * np.pi * (x + 2 * y)), 4 * np.cos(6 * np.pi * x)], -1)
    flow = np.broadcast_to(flow[None], (batch, height, width, 2)).astype(np.float32)
    metric = np.linalg.norm(flow, axis=-1, keepdims=True)
    jax_args = [jax.device_put(a) for a in (features, flow, metric)]
    runs = {"jax": lambda: splat(*jax_args).block_until_ready()}
    if torch is not None:
      torch_args = [torch.from_numpy(a) for a in (features, flow, metric)]
      runs["torch"] = lambda: _torch_softmax_splat(torch, *torch_args)
    best = {name: float("inf") for name in runs}
    for run in runs.values():
      run()
    # Interleaved, so that both see the same load from other processes.
    for _ in range(args.rounds):
      for name, run in runs.items():
        start = time.perf_counter()
        run()
        best[name] = min(best[name], time.perf_counter() - start)
    line = f"  {width}x{height}: jax {best['jax'] * 1e3:7.1f} ms"
    if torch is not None:
      reference = runs["torch"]().numpy()
      error = np.abs(np.asarray(runs["jax"]()) - reference).max() / np.abs(reference).max()
      line += (f"   torch index_add_ {best['torch'] * 1e3:7.1f} ms   speed-up "
               f"{best['torch'] / best['jax']:4.1f}x   max relative difference {error:.1e}")
      if error > 1e-4:
        raise SystemExit(f"softmax_splat and the PyTorch reference disagree at {width}x{height}")
    print(line, flush=True)
  if args.fake_devices:
    _splat_fake_devices(args)


def _sizes(text: str) -> list[tuple[int, int]]:
  """``"256x160,512x288"`` → ``[(256, 160), (512, 288)]`` (width, height)."""
  return [tuple(int(n) for n in size.split("x")) for size in text.split(",")]


# The renderer steps that `splat --fake-devices` times: width x height, batch.
SPLAT_STEP_SIZE = (128, 80)
SPLAT_STEP_BATCH = 8


def _splat_fake_devices(args) -> None:
  """Examples/s of batch-split renderer steps on N fake CPU devices, one
  process per N (the device count is fixed when JAX starts)."""
  width, height = SPLAT_STEP_SIZE
  print(f"\nbatch-split steps, batch {SPLAT_STEP_BATCH} at {width}x{height}, on N fake CPU "
        f"devices sharing {len(os.sched_getaffinity(0))} threads (examples/s; collectives "
        "in the compiled step):")
  probe = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
           "import benchmark; benchmark._time_split_steps()")
  rates = {}
  for count in map(int, args.fake_devices.split(",")):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        f" --xla_force_host_platform_device_count={count}").strip()
    done = subprocess.run([sys.executable, "-c", probe], env=env, check=True,
                          capture_output=True, text=True)
    rates[count] = json.loads(done.stdout.splitlines()[-1])
    for name, (rate, collectives) in rates[count].items():
      ratio = f"   {rate / rates[1][name][0]:4.2f}x of 1 device" if 1 in rates else ""
      print(f"  N={count}: {name:28s} {rate:7.1f} examples/s{ratio}   "
            f"{', '.join(f'{op} x{n}' for op, n in collectives.items()) or 'none'}", flush=True)


def _time_split_steps() -> None:
  """In a process with N (fake) devices: prints, as JSON, examples/s and the
  compiled collectives of softmax_splat's forward and backward and of a
  tiny renderer's training step (L1 loss, parameter gradients), the batch
  split over a 1-D mesh of the N devices."""
  import re

  import jax
  import jax.numpy as jnp
  from flax import nnx
  from jax.sharding import Mesh, NamedSharding, PartitionSpec

  from spectral_jax.models.renderer import Renderer
  from spectral_jax.render.splat import softmax_splat
  mesh = Mesh(np.array(jax.devices()), ("data",))
  split = NamedSharding(mesh, PartitionSpec("data"))
  replicated = NamedSharding(mesh, PartitionSpec())
  width, height = SPLAT_STEP_SIZE
  rng = np.random.default_rng(0)
  y, x = np.mgrid[:height, :width] / np.float32([[[height]], [[width]]])
  phase = rng.uniform(0, 1, (SPLAT_STEP_BATCH, 1, 1))
  # Smooth waves of up to 8 px, different in every example.
  flow = np.stack([8 * np.sin(2 * np.pi * (x + 2 * y + phase)),
                   4 * np.cos(6 * np.pi * (x + phase))], -1).astype(np.float32)
  metric = np.linalg.norm(flow, axis=-1, keepdims=True)  # The motion magnitude, px.
  image = rng.uniform(-1, 1, (SPLAT_STEP_BATCH, height, width, 3)).astype(np.float32)
  features = rng.normal(size=(SPLAT_STEP_BATCH, height, width, 64)).astype(np.float32)
  image, target, features, flow, metric = (jax.device_put(a, split) for a in (
      image, np.roll(image, 2, axis=2), features, flow, metric))

  def splat_step(features, flow, metric):
    out, vjp = jax.vjp(softmax_splat, features, flow, metric)
    return vjp(out)  # The gradient of sum(out ** 2) / 2.

  # The tiny renderer's widths (configs/renderer.py).
  renderer = Renderer(channels=(16, 32, 64, 64), depths=(1, 1, 1, 1), style_dim=64,
                      norm_groups=8, rngs=nnx.Rngs(0))
  graph, params = nnx.split(renderer)
  params = jax.device_put(params, replicated)

  def renderer_step(params, image, target, flow, metric):
    def loss(params):
      return jnp.mean(jnp.abs(nnx.merge(graph, params)(image, flow, metric) - target))
    return jax.value_and_grad(loss)(params)

  steps = {"softmax_splat fwd+bwd C=64": (splat_step, (features, flow, metric)),
           "tiny renderer training step": (renderer_step, (params, image, target, flow, metric))}
  results = {}
  for name, (step, step_args) in steps.items():
    compiled = jax.jit(step).lower(*step_args).compile()
    hlo = compiled.as_text()
    collectives = {op: len(re.findall(rf"\b{op}(?:-start)?\(", hlo)) for op in (
        "all-gather", "all-reduce", "all-to-all", "collective-permute", "reduce-scatter")}
    seconds = _rate(lambda: jax.block_until_ready(compiled(*step_args)), 3)
    results[name] = (SPLAT_STEP_BATCH / seconds, {op: n for op, n in collectives.items() if n})
  print(json.dumps(results))


def _load_config(stage: str, variant: str, **overrides):
  from spectral_jax.config_base import load_config_file
  return load_config_file(CONFIGS / f"{stage}.py", variant, overrides)


def _train_benchmark(args) -> None:
  import jax

  from spectral_jax.diffusion import eps_calls_per_sample
  from spectral_jax.inference.loading import load_motion_model
  from spectral_jax.inference.motion_model import SamplingOptions
  from spectral_jax.train import train
  workdir = Path(tempfile.mkdtemp(prefix="bench_train_"))
  try:
    for variant in args.variants.split(","):
      tiny = variant == "tiny"
      common = {"num_steps": args.steps, "log_every": 1, "eval_every": 0,
                "checkpoint_every": args.steps, "data.synthetic.stats_examples": 8,
                "eval.whiten_batches": 1, "dtype": args.dtype}
      on_cpu = jax.default_backend() == "cpu"
      # Paper shapes on a CPU: a couple of examples per step is all it fits;
      # an accelerator takes the config's own batch.
      batch = {"batch_size": 2} if on_cpu and not tiny else {}
      runs = {}
      stages = args.stages.split(",")
      if "ldm_freq_attn" in stages and not {"vae", "ldm_pretrain"} <= set(stages):
        raise SystemExit("--stages: ldm_freq_attn starts from vae and ldm_pretrain runs")
      for stage in stages:
        overrides = dict(common, **batch)
        if stage.startswith("ldm"):
          overrides["vae_from"] = str(runs["vae"])
        if stage == "ldm_freq_attn":
          overrides["init_from"] = str(runs["ldm_pretrain"])
        run = workdir / f"{variant}_{stage}"
        config = _load_config(stage, variant, **overrides)
        records = train.run(config, run, progress=False)
        runs[stage] = run
        mfu = records[-1].get("mfu")
        print(f"{variant:5s} {stage:14s} {args.dtype} batch {config.batch_size:3d}: "
              f"{records[-1]['examples_per_s']:8.2f} examples/s"
              + (f", MFU {mfu:.1%}" if mfu is not None else ""), flush=True)
      if "ldm_freq_attn" not in runs:
        continue
      model = load_motion_model(runs["ldm_freq_attn"])  # In the runs' dtype.
      data = model.config.data
      image = np.zeros((1, data.height, data.width, 3), np.uint8)
      measured = tiny or jax.default_backend() != "cpu"
      timed = (50, 250) if measured else (2, 4)
      how = "measured" if measured else f"extrapolated from {timed[0]} and {timed[1]} steps"
      # Without guidance, and with the classifier-free guidance `animate` uses.
      for guidance in (0.0, model.config.sampling.guidance_scale):
        seconds = {}
        for num_steps in timed:
          sample = model.sampler(SamplingOptions(num_steps=num_steps, guidance_scale=guidance))
          sample(image, jax.random.key(0)).block_until_ready()
          seconds[num_steps] = _rate(
              lambda: sample(image, jax.random.key(1)).block_until_ready(), 1)
        if not measured:  # t(S) = a + b S through the two timings.
          per_step = (seconds[timed[1]] - seconds[timed[0]]) / (timed[1] - timed[0])
          fixed = seconds[timed[0]] - per_step * timed[0]
          seconds = {s: fixed + per_step * s for s in (50, 250)}
        batch_rows = 2 if guidance else 1
        for num_steps in (50, 250):
          print(f"{variant:5s} DDIM {num_steps:3d} steps, K={data.num_freqs}, guidance "
                f"{guidance:g}, {args.dtype}: {seconds[num_steps]:8.2f} s per picture ({how}); "
                f"{eps_calls_per_sample(num_steps)} network calls on [{batch_rows}, "
                f"{data.num_freqs}, ...]", flush=True)
  finally:
    shutil.rmtree(workdir, ignore_errors=True)


def _render_benchmark(args) -> None:
  import jax.numpy as jnp
  from flax import nnx

  from spectral_jax.models.renderer import Renderer
  from spectral_jax.render.frames import render_frames
  config = _load_config("renderer", "paper")
  renderer = Renderer(**config.model.to_dict(), dtype=jnp.dtype(args.dtype), rngs=nnx.Rngs(0))
  print(f"render_frames, the paper's renderer, {args.dtype}, batches of {args.batch_size}:")
  for width, height in (SIZE, (512, 288)):
    y, x = np.mgrid[:height, :width] / np.float32([[[height]], [[width]]])
    times = np.arange(args.frames, dtype=np.float32)[:, None, None]
    # A swaying wave of up to 4 px.
    motion = np.stack([4 * np.sin(2 * np.pi * (x + times / 30)),
                       2 * np.cos(2 * np.pi * (y + times / 45))], -1).astype(np.float32)
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8)
    # Its values do not change the time; the wave's mean magnitude, px.
    metric = np.linalg.norm(motion, axis=-1).mean(axis=0)[..., None]
    render_frames(renderer, image, motion[:args.batch_size], metric,
                  batch_size=args.batch_size, progress=False)  # Compiles.
    start = time.perf_counter()
    render_frames(renderer, image, motion, metric, batch_size=args.batch_size, progress=False)
    seconds = time.perf_counter() - start
    print(f"  {width}x{height} {args.dtype}: {args.frames / seconds:6.2f} frames/s "
          f"({args.frames} frames in {seconds:.1f} s)", flush=True)
  probe = ("import numpy as np; import jax.numpy as jnp; from flax import nnx; import sys;"
           "sys.path.insert(0, 'tools');"
           "import benchmark as b; from spectral_jax.models.renderer import Renderer;"
           "from spectral_jax.render.frames import render_frames;"
           "c = b._load_config('renderer', 'paper');"
           f"r = Renderer(**c.model.to_dict(), dtype=jnp.dtype('{args.dtype}'), "
           "rngs=nnx.Rngs(0));"
           f"m = np.zeros(({args.frames}, 160, 256, 2), np.float32) + 1.5;"
           "render_frames(r, np.zeros((160, 256, 3), np.uint8), m, "
           "np.full((160, 256, 1), 1.5, np.float32), progress=False)")
  _, peak = _measured([sys.executable, "-c", probe])
  print(f"  peak RSS rendering {args.frames} frames at 256x160, {args.dtype} (start-up "
        f"included): {peak:.0f} MiB")


# Training examples/s of each stage's paper config on one H100, float32 (the
# renderer's is not measured yet).
H100_EXAMPLES_PER_S = {"vae": 26.0, "ldm_pretrain": 224.0, "ldm_freq_attn": 19.0,
                       "renderer": None}
INPUT_STAGES = tuple(H100_EXAMPLES_PER_S)


def _stage_transform(stage: str, config):
  """The batch transform the stage's task applies (train/vae.py, ldm.py,
  renderer.py)."""
  from spectral_jax.data import sources
  from spectral_jax.data.pipeline import normalized_spectral
  from spectral_jax.train.renderer import FIELDS
  if stage == "renderer":
    return lambda batch: {key: batch[key] for key in FIELDS}
  keys = ("spectral_volume",) if stage == "vae" else ("image", "spectral_volume")
  return normalized_spectral(sources.normalization(config.data), keys)


def _input_benchmark(args) -> None:
  from spectral_jax.data import sources
  from spectral_jax.train import data as train_data
  stages = INPUT_STAGES if args.stage == "all" else (args.stage,)
  counts = [int(count) for count in args.workers.split(",")]
  if args.batches < max(counts):
    raise SystemExit(f"--batches: at least the most workers, {max(counts)}")
  print(f"training input alone, paper configs on synthetic scenes, "
        f"{len(os.sched_getaffinity(0))} cores: examples/s over the last whole rounds of "
        f"the workers in {args.batches} batches after the first (first batch: seconds, "
        "start-up included):", flush=True)
  for stage in stages:
    # A few scenes suffice for the scales: only the cost of normalizing counts.
    config = _load_config(stage, "paper", **{"data.dir": "",
                                             "data.synthetic.stats_examples": 2})
    source = sources.open_source(config.data, "train")
    transform = _stage_transform(stage, config)
    device = H100_EXAMPLES_PER_S[stage]
    device_text = f"{device:g}" if device else "unknown"
    for count in counts:
      config.data.worker_count = count
      batches = train_data.train_batches(source, config, transform, 0, 1)
      start = time.perf_counter()
      arrivals = []
      try:
        for _ in range(1 + args.batches):
          next(batches)
          arrivals.append(time.perf_counter())
      finally:
        batches.close()
      # Workers finish their batches together, so batches arrive in bursts
      # of `count`: the rate is over the last whole bursts.
      window = args.batches // max(count, 1) * max(count, 1)
      rate = window * config.batch_size / (arrivals[-1] - arrivals[-1 - window])
      first_s = arrivals[0] - start
      print(f"  {stage:14s} batch {config.batch_size:3d}, {count} workers: "
            f"{rate:7.2f} examples/s (first batch {first_s:5.1f} s); "
            f"H100 trains {device_text} examples/s", flush=True)


def _train_one_step_models(workdir: Path, variant: str, dtype: str) -> None:
  """The four stages at 256x160, K=16, T=150, trained one step in ``workdir``:
  for timing, only their shapes matter."""
  from spectral_jax.train import train
  width, height = SIZE
  shared = {"num_steps": 1, "log_every": 1, "eval_every": 0, "checkpoint_every": 1,
            "batch_size": 2, "data.width": width, "data.height": height,
            "data.num_freqs": 16, "data.synthetic.num_frames": CLIP_FRAMES,
            "data.synthetic.stats_examples": 4, "eval.whiten_batches": 1, "dtype": dtype}
  runs = {"vae": workdir / "vae", "ldm_pretrain": workdir / "ldm1",
          "ldm_freq_attn": workdir / "ldm2", "renderer": workdir / "renderer"}
  for stage, run in runs.items():
    overrides = dict(shared)
    if stage.startswith("ldm"):
      overrides["vae_from"] = str(runs["vae"])
    if stage == "ldm_freq_attn":
      overrides["init_from"] = str(runs["ldm_pretrain"])
    if stage == "renderer":
      overrides["data.synthetic.num_render_frames"] = 1
    train.run(_load_config(stage, variant, **overrides), run, progress=False)


def _animate_benchmark(args) -> None:
  import skimage.data

  from spectral_jax.checks import video_size
  from spectral_jax.data.video import write_video
  from spectral_jax.data import pictures
  from spectral_jax.inference.animator import DEFAULT_MODEL, Animator, video_times
  workdir = Path(tempfile.mkdtemp(prefix="bench_animate_"))
  try:
    if args.model:
      models = DEFAULT_MODEL if args.model == "default" else Path(args.model)
      what = f"the model in {models}"
    else:
      models = workdir
      _train_one_step_models(workdir, args.variant, args.dtype)
      what = f"{args.variant} widths at {SIZE[0]}x{SIZE[1]}, K=16, T={CLIP_FRAMES}, trained 1 step"
    # Every run computes in --dtype, and so do the models `animate` loads.
    print(f"animate, {what}, {args.frames} frames, {args.dtype} (seconds: first call with "
          "compilation / compiled):")

    def timed(function):
      start = time.perf_counter()
      result = function()
      return result, time.perf_counter() - start

    animator, load_s = timed(lambda: Animator.load(models))
    print(f"  load models     {load_s:7.2f}")
    picture, framing = pictures.fit_picture(skimage.data.chelsea(), animator.width,
                                            animator.height)
    video = pictures.video_framing(framing, video_size(args.size))
    size = (video.out_width, video.out_height)
    shown = video.apply(skimage.data.chelsea())
    for steps in map(int, args.steps.split(",")):
      options = animator.motion.options(num_steps=steps)
      spectral, first = timed(lambda: animator.spectral(picture, 0, options))
      _, again = timed(lambda: animator.spectral(picture, 1, options))
      print(f"  sample {steps:3d} steps {first:7.2f} / {again:.2f} (guidance w = "
            f"{options.guidance_scale:g}: {2 * steps} network evaluations on "
            f"[1, {animator.num_freqs}, ...])")
    texture, texture_s = timed(lambda: animator.texture(animator.at_size(shown, spectral),
                                                        video_times(args.frames)))
    print(f"  motion texture  {texture_s:7.2f} ({size[0]}x{size[1]})")
    frames, first = timed(lambda: animator.render(shown, texture, spectral))
    _, again = timed(lambda: animator.render(shown, texture, spectral))
    print(f"  render {args.frames} frames {first:5.2f} / {again:.2f} "
          f"({args.frames / again:.1f} frames/s at {size[0]}x{size[1]})")
    _, encode_s = timed(lambda: write_video(workdir / "video.mp4", frames, 30.0))
    print(f"  encode H.264    {encode_s:7.2f}")

    photo = workdir / "photo.png"
    import imageio.v3 as iio
    iio.imwrite(photo, skimage.data.chelsea())
    env = dict(os.environ, SPECTRAL_JAX_CACHE_DIR=str(workdir / "cache"))
    # The model's own default steps when it is given, else 50.
    cli_steps = animator.motion.options().num_steps if args.model else 50
    for name in ("first process (compiles)", "second process (cache)"):
      command = ["spectral-jax", "animate", str(photo), "-o", str(workdir / "cli.mp4"),
                 "--checkpoint", str(models), "--steps", str(cli_steps),
                 "--frames", str(args.frames), "--size", args.size]
      start = time.perf_counter()
      subprocess.run(command, env=env, check=True, capture_output=True)
      print(f"  spectral-jax animate, {cli_steps} steps, {name}: "
            f"{time.perf_counter() - start:.1f} s end to end", flush=True)
  finally:
    shutil.rmtree(workdir, ignore_errors=True)


def _page_benchmark(args) -> None:
  sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
  import browser  # tests/browser.py: finds and starts headless Chromium.

  from spectral_jax.inference.live_picture import LivePicture
  reason = browser.missing()
  if reason:
    sys.exit(f"no headless Chromium: {reason}")
  rng = np.random.default_rng(0)
  parts = rng.normal(size=(16, 80, 128, 4)).astype(np.float32)
  spectral = (parts[..., :2] + 1j * parts[..., 2:]).astype(np.complex64)
  driver = browser.start()
  driver.set_script_timeout(600)  # SwiftShader draws a large page in seconds.
  workdir = Path(tempfile.mkdtemp())
  try:
    for width, height in _sizes(args.sizes):
      picture = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
      page = LivePicture.make(picture, spectral, num_frames=CLIP_FRAMES, fps=30.0,
                              metric=np.ones((height, width), np.float32))
      path = page.write(workdir / f"{width}x{height}.html")
      driver.get(path.as_uri())
      seconds = driver.execute_script(f"return livePicture.timeFrames({args.frames})")
      shown = driver.execute_async_script(
          "const done = arguments[arguments.length - 1]; let frames = 0;"
          "const start = performance.now();"
          "function count(now) { frames++; if (now - start < 3000) requestAnimationFrame(count);"
          " else done(frames / (now - start) * 1000); }"
          "requestAnimationFrame(count);")
      print(f"page {width}x{height} ({path.stat().st_size / 1e6:.1f} MB, volume "
            f"{page.modes.shape[2]}x{page.modes.shape[1]}): {1 / seconds:.1f} frames/s drawn "
            f"back to back ({seconds * 1000:.1f} ms each), {shown:.1f} frames/s shown",
            flush=True)
  finally:
    driver.quit()
    shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sections = parser.add_subparsers(dest="section", required=True)
  on_device = argparse.ArgumentParser(add_help=False)
  on_device.add_argument("--device", choices=DEVICES, default="auto",
                         help="auto: JAX's choice (the GPU where present); gpu: require one")
  with_dtype = argparse.ArgumentParser(add_help=False, parents=[on_device])
  with_dtype.add_argument("--dtype", choices=DTYPES, default="float32",
                          help="computation dtype of the models (parameters stay float32)")
  data = sections.add_parser("data", help="data-preparation throughput and memory")
  data.add_argument("--videos", type=int, default=2)
  data.add_argument("--video-frames", type=int, default=300)
  data.add_argument("--workers", type=int, default=2)
  data.set_defaults(run=benchmark_data)
  splat = sections.add_parser("splat", parents=[on_device],
                              help="softmax splatting against a PyTorch reference")
  splat.add_argument("--channels", type=int, default=64)
  splat.add_argument("--batch", type=int, default=1, help="pictures per call")
  splat.add_argument("--sizes", default="256x160,512x288", help="comma-separated WIDTHxHEIGHT")
  splat.add_argument("--rounds", type=int, default=10,
                     help="timed calls of each implementation, interleaved; best counts")
  splat.add_argument("--fake-devices", default="1,8",
                     help="comma-separated device counts N: examples/s of batch-split splat and "
                     "tiny renderer steps on N fake CPU devices ('' skips)")
  splat.set_defaults(run=_splat_benchmark)
  train = sections.add_parser("train", parents=[with_dtype],
                              help="training examples/s per stage; DDIM sampling")
  train.add_argument("--variants", default="tiny", help="comma-separated: tiny, paper")
  train.add_argument("--stages", default="vae,ldm_pretrain,ldm_freq_attn,renderer",
                     help="comma-separated, in this order (ldm_freq_attn needs the two before)")
  train.add_argument("--steps", type=int, default=3,
                     help="training steps per stage; the last one is timed")
  train.set_defaults(run=_train_benchmark)
  animate = sections.add_parser("animate", parents=[with_dtype],
                                help="spectral-jax animate, by phase")
  animate.add_argument("--variant", default="tiny", help="model widths: tiny or paper")
  animate.add_argument("--model", help="time these models instead (an export or a folder of "
                       "runs; 'default': the one that ships); their own dtype, default steps")
  animate.add_argument("--frames", type=int, default=CLIP_FRAMES)
  animate.add_argument("--steps", default="50,250", help="DDIM step counts to time")
  animate.add_argument("--size", default="512x320",
                       help="the video's size, as animate's --size (default %(default)s)")
  animate.set_defaults(run=_animate_benchmark)
  render = sections.add_parser("render", parents=[with_dtype],
                               help="renderer frames/s and memory")
  render.add_argument("--frames", type=int, default=150)
  render.add_argument("--batch-size", type=int, default=8)
  render.set_defaults(run=_render_benchmark)
  source = sections.add_parser("input", help="training input examples/s per stage and "
                               "worker count, beside the H100's training rate")
  source.add_argument("--stage", choices=("all",) + INPUT_STAGES, default="all")
  source.add_argument("--workers", default="1,2,4",
                      help="comma-separated config.data.worker_count values (0: a thread)")
  source.add_argument("--batches", type=int, default=12,
                      help="batches read after the first (at least the most workers)")
  source.set_defaults(run=_input_benchmark)
  page = sections.add_parser("page", help="live picture frames/s in headless Chromium")
  page.add_argument("--sizes", default="256x160,512x320", help="comma-separated WIDTHxHEIGHT")
  page.add_argument("--frames", type=int, default=20)
  page.set_defaults(run=_page_benchmark)
  args = parser.parse_args()
  if args.section not in ("data", "input", "page"):  # These run no JAX computation.
    print(f"JAX device: {_select_device(args.device)}", flush=True)
  args.run(args)


if __name__ == "__main__":
  main()
