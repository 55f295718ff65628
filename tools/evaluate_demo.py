"""Measurements of a `demo` model (tools/train_demo.sh), printed.

  python tools/evaluate_demo.py evaluations RUN
  python tools/evaluate_demo.py held-out MODEL PHOTOS [--videos DIR] [--renderer-only --scale 2]
  python tools/evaluate_demo.py loops MODEL PHOTOS [--crops 4 --loop-frames 90]
                                   [--loop-gradient x0 --loop-weight U --recurrence-steps R]
  python tools/evaluate_demo.py pictures MODEL PHOTOS -o OUT.png

MODEL is an export or a folder of runs, as ``animate --checkpoint`` takes,
or ``default``: the model shipped in ``spectral_jax/default_model/``.

``evaluations``: the last evaluation a training run logged (on the test
split of its training data), one line per metric.

``held-out``: MODEL on the photos in PHOTOS, which no stage trained on:

* motion: each photo framed as `animate` frames it, its spectral volume
  sampled with the model's default options (seed 0). Reported: the mean
  motion amplitude ``sqrt(sum_{k>=1} |S_k|^2)`` (px) inside the plants and
  outside them, and its ratio, per photo and pooled over the pixels of the
  photos; and, over the 150-frame video `animate` renders, the LPIPS
  between consecutive frames (mean, and the worst pair): holes or smears at
  motion boundaries would show as spikes. The plants are the masks drawn
  by hand on the held-out photos (`tools/plant_masks.json`, ``--masks``),
  not the training data's vegetation cue, which the model learnt to follow
  and so cannot judge it; a photo without a mask is left out of the ratio.
* still pictures: the mean motion amplitude (px) of seed 0 on pictures made
  here with nothing that sways (grey blocks, a blue sky, a green wall),
  which should stay below ``STILL_PX``.
* power: the mean power ``|S_k|^2`` per frequency bin over seeds
  0..POWER_SEEDS-1 of every photo. One sample is not enough: a sample's
  power per bin is heavy-tailed (on held-out photo scenes one sample's
  bin 1 / bin 2 ratio ranges from 0.03 to 860).
* renderer: photo scenes of the same photos (`photo_scenes.make_scene`,
  seeds 0..SCENES-1) with their true frames and displacements: PSNR and
  LPIPS of the renderer's frames, and of the picture forward-warped by the
  same displacements (what an untrained renderer outputs), against the
  true frames, every ``--frame-stride``-th frame. ``--scale 2`` makes the
  scenes at twice the models' size and renders them there, with the
  metric `animate --size` uses (the models' size, resized).

``--videos DIR`` keeps each photo's video and motion pictures (`--viz`) to
look at.

``loops``: `animate --loop` (motion self-guidance) on ``--crops`` random
crops of each photo in PHOTOS, for a video of N = ``--loop-frames``
frames: the loop-closure error (mean ``|D(N) - D(0)|`` px, and the mean
grey-level difference between the rendered frame at time N, the one after
the last, and frame 0) with and without self-guidance from the same seed,
the sampling seconds of each, and how far guidance moves the sample (mean
``|S_loop - S|`` over mean ``|S|``).

``pictures``: one PNG (the model card's), a row per photo in PHOTOS: the
photo as `animate` frames it, the training scenes' vegetation cue on it
(`photo_scenes.vegetation_mask`), the amplitude of the motion MODEL samples
for it (seed 0, as ``held-out``; one colour scale for all rows, so rows
compare) and the frame of its video where the displacement is largest.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

# Mean motion (px) that a picture without plants should stay below.
STILL_PX = 0.05


def print_evaluations(run: Path) -> None:
  evaluations = [record for record in map(json.loads, (run / "metrics.jsonl").open())
                 if any(name.startswith("eval/") for name in record)]
  if not evaluations:
    raise SystemExit(f"{run}: no evaluation logged")
  last = evaluations[-1]
  print(f"{run.name}: evaluation at step {last['step']} (test split of its training data)")
  for name, value in sorted(last.items()):
    if name.startswith("eval/"):  # null: not a number (an infinite PSNR).
      print(f"  {name[5:]:32s} {'null' if value is None else format(value, '.6g')}")


def _lpips_function(vgg):
  """Jitted ``lpips(pred, target)`` ``[B]`` of uint8 frames ``[B, H, W, 3]``
  (VGG's weights are arguments, not constants baked into the program)."""
  import jax
  from flax import nnx

  from spectral_jax.diffusion.latents import image_to_unit
  from spectral_jax.render import metrics

  graphdef, state = nnx.split(vgg)
  compiled = jax.jit(lambda state, pred, target: metrics.lpips(
      nnx.merge(graphdef, state), image_to_unit(pred), image_to_unit(target)))
  return lambda pred, target: np.asarray(compiled(state, pred, target))


def _motion(animator, photos, videos, lpips, masks) -> list[np.ndarray]:
  """Prints the motion measurements, inside and outside the hand-drawn
  plant ``masks`` (`plant_masks.load_masks`, by photo name); returns each
  photo's seed-0 power ``[K]`` px^2, which `_power` pools with the other
  seeds'."""
  import plant_masks

  from spectral_jax.data.video import write_video
  from spectral_jax.data import pictures
  from spectral_jax.inference.animator import video_times
  from spectral_jax.motion import viz

  amplitudes, insides, power = [], [], []
  print(f"motion on {len(photos)} held-out photos ({animator.width}x{animator.height}, "
        f"{animator.motion.options().num_steps} DDIM steps, guidance "
        f"{animator.motion.options().guidance_scale:g}, seed 0), inside and outside the plants "
        "drawn by hand:")
  print(f"  {'photo':24s} {'plants':>7s} {'px inside':>9s} {'px outside':>10s} {'ratio':>6s} "
        f"{'LPIPS consecutive mean / max':>29s}")
  for path in photos:
    picture, framing = pictures.fit_picture(pictures.read_picture(path), animator.width,
                                            animator.height)
    spectral = animator.spectral(picture, 0)
    amplitude = _amplitude(spectral)
    power.append(np.mean(np.abs(spectral)**2, axis=(1, 2, 3)))  # [K] px^2.
    texture = animator.texture(spectral, video_times(animator.num_frames))
    frames = animator.render(picture, texture, spectral)
    before, after = frames[:-1], frames[1:]
    consecutive = np.concatenate([lpips(before[i:i + 16], after[i:i + 16])
                                  for i in range(0, len(before), 16)])
    mask = masks.get(path.stem)
    if mask is None:
      measured = f"{'no hand-drawn mask':>35s}"
    else:
      if mask.photo_size != (framing.width, framing.height):
        raise ValueError(f"{path}: {framing.width}x{framing.height}, but its plant mask was "
                         f"drawn on a {mask.photo_size[0]}x{mask.photo_size[1]} photo")
      inside = plant_masks.rasterise(mask, animator.width, animator.height)
      amplitudes.append(amplitude.ravel())
      insides.append(inside.ravel())
      mean_in, mean_out, ratio = plant_masks.inside_outside(amplitude, inside)
      measured = f"{inside.mean():7.1%} {mean_in:9.4f} {mean_out:10.4f} {ratio:6.2f}"
    print(f"  {path.stem:24s} {measured} {consecutive.mean():14.5f} / {consecutive.max():.5f}",
          flush=True)
    if videos:
      write_video(videos / f"{path.stem}.mp4", frames, animator.fps)
      viz.write_visualizations(videos / path.stem, image=picture,
                               disp_px=animator.texture(spectral, np.arange(animator.num_frames)),
                               spectral=spectral, fps=animator.fps)
  if not insides:
    print("  no photo here has a hand-drawn plant mask: no inside / outside ratio")
    return power
  pooled, inside = np.concatenate(amplitudes), np.concatenate(insides)
  mean_in, mean_out, ratio = plant_masks.inside_outside(pooled, inside)
  print(f"  pooled over the {len(insides)} photos with a mask: mean amplitude {mean_in:.4f} px "
        f"inside the plants ({inside.sum()} px), {mean_out:.4f} px outside "
        f"({(~inside).sum()} px): ratio {ratio:.2f}")
  return power


def _amplitude(spectral: np.ndarray) -> np.ndarray:
  """``[H, W]`` px: the motion amplitude ``sqrt(sum_{k>=1} |S_k|^2)`` of a
  spectral volume ``[K, H, W, 2]``. Bin 0 is a constant offset that the
  motion texture removes: not motion."""
  return np.sqrt(np.sum(np.abs(spectral[1:])**2, axis=(0, 3)))


def still_pictures(width: int, height: int) -> dict[str, np.ndarray]:
  """Pictures with nothing that sways, uint8 ``[height, width, 3]``, by name:
  a wall of grey 8x8-pixel blocks (texture; the picture
  tests/test_default_model.py uses), a blue sky (a vertical gradient from
  deep to pale sky blue) and a green wall (flat green paint under a mild
  diagonal lighting gradient, 0.9x to 1.1x): green and blue are the colours
  of the plants and the sky the model sees in training, without either."""
  grey = np.random.default_rng(0).integers(80, 200, (-(-height // 8), -(-width // 8), 1))
  blocks = np.kron(grey, np.ones((8, 8, 3)))[:height, :width]
  down = np.linspace(0.0, 1.0, height)[:, None, None]
  sky = (1 - down) * np.float64([60, 120, 200]) + down * np.float64([165, 200, 235])
  across = np.linspace(0.0, 1.0, width)[None, :, None]
  light = 0.9 + 0.2 * (0.6 * across + 0.4 * down)
  wall = light * np.float64([85, 140, 70])
  return {name: np.clip(np.rint(np.broadcast_to(picture, (height, width, 3))), 0,
                        255).astype(np.uint8)
          for name, picture in (("grey blocks", blocks), ("blue sky", sky),
                                ("green wall", wall))}


def _still(animator) -> None:
  """Prints the mean motion amplitude of seed 0 on the `still_pictures`."""
  print(f"motion on pictures without plants (made here, {animator.width}x{animator.height}, "
        f"seed 0), mean amplitude; below {STILL_PX:g} px expected:")
  for name, picture in still_pictures(animator.width, animator.height).items():
    mean = float(_amplitude(animator.spectral(picture, 0)).mean(dtype=np.float64))
    print(f"  {name:24s} {mean:.4f} px  {'ok' if mean < STILL_PX else 'TOO MUCH MOTION'}",
          flush=True)


def _power(animator, photos, num_seeds: int, seed_zero: list[np.ndarray]) -> None:
  """Prints the mean power per bin over seeds 0..num_seeds-1 of each photo;
  ``seed_zero`` holds seed 0's (from `_motion`), in the order of ``photos``."""
  from spectral_jax.data import pictures

  power = list(seed_zero)
  for path in photos:
    picture, _ = pictures.fit_picture(pictures.read_picture(path), animator.width,
                                      animator.height)
    for seed in range(1, num_seeds):
      spectral = animator.spectral(picture, seed)
      power.append(np.mean(np.abs(spectral)**2, axis=(1, 2, 3)))  # [K] px^2.
  power = np.mean(power, axis=0)
  print(f"power of the motion sampled for the held-out photos, seeds 0..{num_seeds - 1} "
        "of each:")
  hertz = np.arange(len(power)) * animator.fps / animator.num_frames
  print("  mean power |S_k|^2 per bin (px^2): " + ", ".join(
      f"{f:.1f} Hz {p:.2e}" for f, p in zip(hertz, power)))
  slope = np.polyfit(np.log(hertz[1:]), np.log(power[1:]), 1)[0]
  falls = np.mean(np.diff(power[1:]) < 0)
  print(f"  power against frequency (bins 1..{len(power) - 1}): log-log slope {slope:.2f}, "
        f"{falls:.0%} of neighbouring bins fall")


def _renderer(animator, photos, lpips, num_scenes: int, frame_stride: int,
              scale: int = 1) -> None:
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from spectral_jax.data import photo_scenes
  from spectral_jax.data.pictures import fit_spectral
  from spectral_jax.diffusion.latents import image_to_unit
  from spectral_jax.render import metrics
  from spectral_jax.render.frames import to_uint8
  from spectral_jax.render.splat import softmax_splat

  graphdef, state = nnx.split(animator.renderer.renderer)

  @jax.jit
  def candidates(state, picture, flow, metric):
    """uint8 frames ``[N, H, W, 3]`` of the renderer and of forward warping."""
    count = flow.shape[0]
    pictures = jnp.broadcast_to(image_to_unit(picture), (count, *picture.shape))
    metric = jnp.broadcast_to(metric, (count, *metric.shape))
    return {"renderer": to_uint8(nnx.merge(graphdef, state)(pictures, flow, metric)),
            "forward warping": to_uint8(softmax_splat(pictures, flow, metric))}

  squared_errors = {"renderer": [], "forward warping": []}
  lpips_values = {"renderer": [], "forward warping": []}
  still = 0
  width, height = scale * animator.width, scale * animator.height
  for path in photos:
    photo = photo_scenes.load_photo(path, height, width)
    for seed in range(num_scenes):
      scene = photo_scenes.make_scene(photo, seed, num_frames=animator.num_frames,
                                      height=height, width=width,
                                      num_freqs=animator.num_freqs, fps=animator.fps)
      if not scene.disp_px.any():  # No vegetation: every method is exact.
        still += 1
        continue
      # The metric of the scene's spectral volume, as training and `animate`
      # compute it: at the models' size in their pixels, resized to the video's.
      metric = animator.metric(fit_spectral(scene.spectral, animator.width, animator.height),
                               size=(width, height))
      times = np.arange(1, animator.num_frames, frame_stride)
      target = scene.frames[times]
      for name, frame in candidates(state, scene.frames[0], scene.disp_px[times],
                                    metric).items():
        frame = np.asarray(frame)
        squared_errors[name].append(np.asarray(metrics.mse(image_to_unit(frame),
                                                           image_to_unit(target))))
        lpips_values[name].append(lpips(frame, target))
  count = sum(map(len, squared_errors["renderer"]))
  print(f"renderer at {width}x{height} on photo scenes of the held-out photos "
        f"({len(photos)} photos x "
        f"{num_scenes} scenes, {still} of them still and skipped; {count} frames against "
        "the true frames; PSNR of the mean squared error over all frames):")
  for name in squared_errors:
    mse = np.mean(np.concatenate(squared_errors[name]))
    print(f"  {name:16s} PSNR {float(metrics.psnr_of_mse(mse)):6.2f} dB   "
          f"LPIPS {np.mean(np.concatenate(lpips_values[name])):.5f}")


def loops(args) -> None:
  import time

  from spectral_jax.data import photo_scenes, synthetic
  from spectral_jax.inference.animator import Animator
  from spectral_jax.inference.loop import loop_closure_error

  animator = Animator.load(_model(args.model))
  plain = animator.motion.options()
  looped = animator.motion.options(loop_frames=args.loop_frames,
                                   loop_gradient=args.loop_gradient,
                                   loop_weight=args.loop_weight,
                                   recurrence_steps=args.recurrence_steps)
  if not looped.loop_frames:
    raise SystemExit(f"N = {args.loop_frames} is a multiple of T = {animator.num_frames}: "
                     "every texture loops already")
  rows = []
  for path in photo_scenes.list_photos(args.photos):
    photo = photo_scenes.load_photo(path, animator.height, animator.width)
    for crop in range(args.crops):
      picture = synthetic.random_crop(np.random.default_rng(crop), photo, animator.height,
                                      animator.width)
      row = {}
      for name, options in (("plain", plain), ("loop", looped)):
        animator.spectral(picture, 0, options)  # Compiled once per options.
        start = time.perf_counter()
        spectral = animator.spectral(picture, 0, options)
        row[f"{name}_s"] = time.perf_counter() - start
        row[name] = spectral
        row[f"{name}_px"] = loop_closure_error(spectral, num_frames=animator.num_frames,
                                               loop_frames=args.loop_frames)
        row[f"{name}_amplitude"] = float(_amplitude(spectral).mean())
        first, after_last = animator.render(
            picture, animator.texture(spectral, np.float32([0, args.loop_frames])), spectral)
        row[f"{name}_grey"] = np.abs(after_last.astype(np.float32) - first).mean()
      row["moved"] = np.abs(row["loop"] - row["plain"]).mean() / np.abs(row["plain"]).mean()
      rows.append(row)
      print(f"  {path.stem:22s} crop {crop}: closure {row['plain_px']:.4f} -> "
            f"{row['loop_px']:.4f} px ({row['plain_px'] / row['loop_px']:.1f}x), "
            f"{row['plain_grey']:.3f} -> {row['loop_grey']:.3f} grey levels; amplitude "
            f"{row['plain_amplitude']:.4f} -> {row['loop_amplitude']:.4f} px; sampling "
            f"{row['plain_s']:.1f} -> {row['loop_s']:.1f} s; sample moved {row['moved']:.1%}",
            flush=True)

  def mean(key):
    return float(np.mean([row[key] for row in rows]))

  print(f"{len(rows)} held-out pictures, N = {args.loop_frames} frames of T = "
        f"{animator.num_frames}, {plain.num_steps} DDIM steps, u = {looped.loop_weight:g}, "
        f"{looped.recurrence_steps} self-recurrence iterations, gradient through "
        f"{looped.loop_gradient}, seed 0:")
  ratios = [row["plain_px"] / row["loop_px"] for row in rows]
  print(f"  closure error |D(N) - D(0)|: {mean('plain_px'):.4f} px without, "
        f"{mean('loop_px'):.4f} px with --loop ({mean('plain_px') / mean('loop_px'):.1f}x lower "
        f"on average; per picture median {np.median(ratios):.1f}x, from {min(ratios):.1f}x "
        f"to {max(ratios):.1f}x)")
  print(f"  mean motion amplitude: {mean('plain_amplitude'):.4f} px without, "
        f"{mean('loop_amplitude'):.4f} px with ("
        f"{mean('loop_amplitude') / mean('plain_amplitude'):.2f}x)")
  print(f"  frame after the last against the first: {mean('plain_grey'):.3f} grey levels "
        f"without, {mean('loop_grey'):.3f} with ({mean('plain_grey') / mean('loop_grey'):.1f}x "
        "lower)")
  print(f"  sampling: {mean('plain_s'):.2f} s without, {mean('loop_s'):.2f} s with "
        f"({mean('loop_s') / mean('plain_s'):.2f}x); the guided sample differs from the plain "
        f"one by {mean('moved'):.1%} of its mean magnitude")


def pictures(args) -> None:
  import io

  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from PIL import Image

  from spectral_jax.data import photo_scenes
  from spectral_jax.data import pictures as picture_io
  from spectral_jax.inference.animator import Animator, video_times

  if args.output.suffix.lower() != ".png" or not args.output.parent.is_dir():
    raise ValueError(f"{args.output}: a .png in an existing folder")
  photos = photo_scenes.list_photos(args.photos)
  animator = Animator.load(_model(args.model))
  rows = []
  for path in photos:
    picture, _ = picture_io.fit_picture(picture_io.read_picture(path), animator.width,
                                        animator.height)
    spectral = animator.spectral(picture, 0)
    texture = animator.texture(spectral, video_times(animator.num_frames))
    largest = int(np.argmax(np.linalg.norm(texture, axis=-1).mean(axis=(1, 2))))
    frame = animator.render(picture, texture[largest:largest + 1], spectral)[0]
    rows.append((path.stem, picture, photo_scenes.vegetation_mask(picture),
                 _amplitude(spectral), frame, largest))
    print(f"  {path.stem}: largest displacement at frame {largest}", flush=True)
  top = max(float(np.percentile(row[3], 99.5)) for row in rows)
  height, width = animator.height, animator.width
  figure, axes = plt.subplots(len(rows), 4, squeeze=False,
                              figsize=(4 * width / 100, len(rows) * (height + 28) / 100), dpi=100)
  for (name, picture, cue, amplitude, frame, largest), row_axes in zip(rows, axes):
    panels = ((picture, None, name), (cue, "gray", "training cue (0 to 1)"),
              (amplitude, "magma", f"motion amplitude (0 to {top:.2f} px)"),
              (frame, None, f"frame {largest}, largest displacement"))
    for axis, (image, colours, title) in zip(row_axes, panels):
      limits = {"vmin": 0.0, "vmax": top if colours == "magma" else 1.0} if colours else {}
      axis.imshow(image, cmap=colours, interpolation="nearest", **limits)
      axis.set_title(title, fontsize=8)
      axis.axis("off")
  figure.tight_layout(pad=0.3)
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=100)
  # An adaptive palette keeps the file a few hundred KB.
  Image.open(buffer).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                             dither=Image.Dither.NONE).save(
      args.output, optimize=True)
  print(f"{args.output}: {args.output.stat().st_size / 1024:.0f} KB")


def _model(path: Path) -> Path:
  """MODEL as given, or the shipped model for ``default``."""
  from spectral_jax.inference.animator import DEFAULT_MODEL
  return DEFAULT_MODEL if str(path) == "default" else path


def held_out(args) -> None:
  import plant_masks

  from spectral_jax.data import photo_scenes
  from spectral_jax.inference.animator import Animator
  from spectral_jax.models.vgg16 import load_vgg16

  photos = photo_scenes.list_photos(args.photos)
  masks = plant_masks.load_masks(args.masks or plant_masks.MASKS)
  animator = Animator.load(_model(args.model), with_motion=not args.renderer_only)
  lpips = _lpips_function(load_vgg16())
  if args.videos:
    args.videos.mkdir(parents=True, exist_ok=True)
  if not args.renderer_only:
    seed_zero = _motion(animator, photos, args.videos, lpips, masks)
    _still(animator)
    _power(animator, photos, args.power_seeds, seed_zero)
  _renderer(animator, photos, lpips, args.scenes, args.frame_stride, args.scale)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest="command", required=True)
  evaluations = commands.add_parser("evaluations", help="a run's last logged evaluation")
  evaluations.add_argument("run", type=Path)
  measured = commands.add_parser("held-out", help="the model on photos it never saw")
  measured.add_argument("model", type=Path,
                        help="an export, a folder of runs, or default (the shipped model)")
  measured.add_argument("photos", type=Path, help="a folder of held-out photos")
  measured.add_argument("--videos", type=Path, help="keep the videos and motion pictures here")
  measured.add_argument("--masks", type=Path,
                        help="hand-drawn plant masks (default: tools/plant_masks.json)")
  measured.add_argument("--power-seeds", type=int, default=8,
                        help="samples per photo for the power spectrum")
  measured.add_argument("--scenes", type=int, default=2, help="photo scenes per photo")
  measured.add_argument("--frame-stride", type=int, default=10,
                        help="score every n-th frame of a scene")
  measured.add_argument("--renderer-only", action="store_true",
                        help="measure the renderer alone (MODEL needs no motion run)")
  measured.add_argument("--scale", type=int, default=1,
                        help="render photo scenes at this multiple of the models' size, as "
                        "animate's --size does (default 1)")
  looping = commands.add_parser("loops", help="loop self-guidance on held-out pictures")
  looping.add_argument("model", type=Path,
                       help="an export, a folder of runs, or default (the shipped model)")
  looping.add_argument("photos", type=Path, help="a folder of held-out photos")
  looping.add_argument("--crops", type=int, default=4, help="random crops per photo")
  looping.add_argument("--loop-frames", type=int, default=90, help="N, the video's frames")
  looping.add_argument("--loop-gradient", choices=("network", "x0"),
                       help="the guidance gradient (default: the model's sampling config)")
  looping.add_argument("--loop-weight", type=float,
                       help="u, the guidance weight (default: the model's sampling config)")
  looping.add_argument("--recurrence-steps", type=int,
                       help="self-recurrence iterations (default: the model's sampling config)")
  drawn = commands.add_parser("pictures", help="the model card's picture of the held-out photos")
  drawn.add_argument("model", type=Path,
                     help="an export, a folder of runs, or default (the shipped model)")
  drawn.add_argument("photos", type=Path, help="a folder of held-out photos")
  drawn.add_argument("-o", "--output", type=Path, required=True, help="the PNG to write")
  args = parser.parse_args()
  command = {"evaluations": lambda: print_evaluations(args.run),
             "held-out": lambda: held_out(args), "loops": lambda: loops(args),
             "pictures": lambda: pictures(args)}[args.command]
  try:
    command()
  except (FileNotFoundError, ValueError) as error:  # A missing model, photos or run.
    raise SystemExit(f"evaluate_demo.py {args.command}: {error}") from None


if __name__ == "__main__":
  main()
