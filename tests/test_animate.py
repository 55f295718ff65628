"""`animate` and `interact` end to end on briefly trained `tiny`-like runs:
videos written, frame 0 is the picture, magnification, slow motion, loops,
pokes, motion transfer, the pinned VAE, the compilation cache, bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import imageio.v3 as iio
import jax
import numpy as np
import pytest
import skimage.data
from safetensors.numpy import load_file, save_file

sys.path.insert(0, str(Path(__file__).parent))
import train_configs  # noqa: E402

from spectral_jax import checkpoint, cli  # noqa: E402
from spectral_jax.data import synthetic, video  # noqa: E402
from spectral_jax.data import pictures  # noqa: E402
from spectral_jax.inference import dynamics, export, loading  # noqa: E402
from spectral_jax.inference.animator import Animator, video_times  # noqa: E402
from spectral_jax.inference.compile_cache import enable as enable_compile_cache  # noqa: E402
from spectral_jax.inference.loop import loop_closure_error  # noqa: E402
from spectral_jax.models import functional  # noqa: E402
from spectral_jax.motion import flow  # noqa: E402
from spectral_jax.motion.motion_file import Motion  # noqa: E402

DATA = train_configs.ANIMATION_DATA
WIDTH, HEIGHT, K, T = DATA["width"], DATA["height"], DATA["num_freqs"], DATA["num_frames"]


@pytest.fixture(scope="module", autouse=True)
def compile_cache(tmp_path_factory):
  """The commands' compilation cache in a temporary folder, not ~/.cache."""
  previous = os.environ.get("SPECTRAL_JAX_CACHE_DIR")
  os.environ["SPECTRAL_JAX_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax_cache"))
  yield Path(os.environ["SPECTRAL_JAX_CACHE_DIR"])
  if previous is None:
    del os.environ["SPECTRAL_JAX_CACHE_DIR"]
  else:
    os.environ["SPECTRAL_JAX_CACHE_DIR"] = previous


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  return train_configs.train_animation_runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def animator(runs):
  return Animator.load(runs)


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
  """A real photo (451x300, not the model's aspect ratio)."""
  path = tmp_path_factory.mktemp("photo") / "chelsea.png"
  iio.imwrite(path, skimage.data.chelsea())
  return path


@pytest.fixture(scope="module")
def scene():
  """A synthetic swaying scene (K and T of the models) at 4x their size:
  optical flow needs more than 48x32 pixels to measure motion, and the
  renderer, fully convolutional, renders any size."""
  return synthetic.make_scene(4, num_frames=T, height=4 * HEIGHT, width=4 * WIDTH,
                              num_freqs=K, max_amplitude_px=3.0, background="photo")


def _main(capsys, *argv) -> tuple[int, str, str]:
  code = cli.main([str(a) for a in argv])
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def test_animate_writes_a_video_and_what_was_asked(runs, photo, tmp_path, capsys):
  out = tmp_path / "out" / "cat.mp4"
  out.parent.mkdir()
  code, printed, err = _main(capsys, "animate", photo, "-o", out, "--checkpoint", runs,
                             "--frames", 10, "--save-motion", tmp_path / "S.npz",
                             "--viz", tmp_path / "viz", "--size", "96x64")
  assert code == 0, err
  frames = iio.imread(out)
  assert frames.shape == (10, 64, 96, 3)  # Twice the models' 48x32.
  assert f"{out}: 10 frames at 30 fps (0.3 s), 96x64" in printed
  saved = Motion.load(tmp_path / "S.npz")
  assert (saved.num_freqs, saved.num_frames) == (K, T)
  assert saved.spectral_volume.shape == (K, HEIGHT, WIDTH, 2)
  assert (tmp_path / "viz" / "power_spectrum.png").is_file()
  assert [p.name for p in out.parent.iterdir()] == ["cat.mp4"]  # No temporary left.


def test_frame_zero_is_the_picture_whatever_the_options(animator, photo):
  picture, _ = pictures.fit_picture(pictures.read_picture(photo), WIDTH, HEIGHT)
  spectral = animator.spectral(picture, seed=1)
  assert np.abs(animator.texture(spectral, np.arange(T))).max() > 0
  for magnify, slowmo, loop in ((1.0, 1.0, False), (3.0, 1.0, False), (1.0, 2.5, True)):
    times = video_times(12, slowmo=slowmo, loop=loop)
    texture = animator.texture(spectral, times, magnify)
    np.testing.assert_array_equal(texture[0], 0)
    frames = animator.render(picture, texture[:3], spectral)
    np.testing.assert_array_equal(frames[0], picture)


def test_a_smaller_motion_model_samples_the_shrunk_picture_and_is_upsampled(animator, photo):
  """The default model's motion model works at half its renderer's size:
  the picture is shrunk for it, and its spectral volume upsampled with
  displacements doubled. Bilinear 2x upsampling (replicated borders) keeps
  each bin's spatial sum times 4, so its mean doubles exactly."""
  import dataclasses
  small, _ = pictures.fit_picture(pictures.read_picture(photo), WIDTH, HEIGHT)
  # Constant 2x2 blocks: shrinking the large picture gives ``small`` exactly.
  large = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)
  doubled = dataclasses.replace(animator, width=2 * WIDTH, height=2 * HEIGHT)
  expected = animator.spectral(small, seed=3)
  upsampled = doubled.spectral(large, seed=3)
  assert upsampled.shape == (K, 2 * HEIGHT, 2 * WIDTH, 2)
  assert np.abs(expected).max() > 0.01
  np.testing.assert_allclose(upsampled.mean(axis=(1, 2)), 2 * expected.mean(axis=(1, 2)),
                             rtol=1e-4, atol=1e-6)
  frames = doubled.render(large, doubled.texture(upsampled, np.arange(3, dtype=np.float32)),
                          upsampled)
  assert frames.shape == (3, 2 * HEIGHT, 2 * WIDTH, 3)
  np.testing.assert_array_equal(frames[0], large)


def test_magnify_doubles_the_displacement_measured_on_the_frames(animator, scene):
  """Rendered frames of a known motion at magnification 1 and 2; optical
  flow from frame 0 to each measures the motion that shows."""
  picture = scene.frames[0]
  times = np.arange(T)
  measured = []
  for magnify in (1.0, 2.0):
    frames = animator.render(picture, animator.texture(scene.spectral, times, magnify),
                             scene.spectral)
    measured.append(flow.displacements(frames)[0])
  moving = np.linalg.norm(measured[0], axis=-1) > 0.5
  assert moving.sum() > 1000
  ratio = (np.linalg.norm(measured[1], axis=-1)[moving].mean()
           / np.linalg.norm(measured[0], axis=-1)[moving].mean())
  # DIS underestimates sub-pixel motion more than larger motion (2.13 here).
  assert 1.8 < ratio < 2.3, ratio


def test_a_video_twice_the_size_shows_twice_the_motion(animator, scene):
  """One spectral volume at the model's size, rendered at the scene's size
  (4x the model's) and at twice that: frame 0 is the picture at each size
  exactly, and the larger video, shrunk to the smaller's size, shows the
  same motion there (optical flow), so twice the motion in its own pixels.
  (Flow compared at one size: DIS underestimates sub-pixel motion more.)"""
  image = scene.frames[0]
  framing = pictures.Framing.fit(image.shape[1], image.shape[0], WIDTH, HEIGHT)
  spectral = pictures.fit_spectral(scene.spectral, WIDTH, HEIGHT)
  times = np.arange(0, T, 2, dtype=np.float32)
  measured = []
  for scale in (4, 8):
    picture = framing.resized(scale * WIDTH, scale * HEIGHT).apply(image)
    frames = np.concatenate(list(animator.video(picture, spectral, times)))
    assert frames.shape == (len(times), scale * HEIGHT, scale * WIDTH, 3)
    np.testing.assert_array_equal(frames[0], picture)
    shrunk = [cv2.resize(frame, (4 * WIDTH, 4 * HEIGHT), interpolation=cv2.INTER_AREA)
              for frame in frames]
    measured.append(flow.displacements(np.stack(shrunk))[0])
  moving = np.linalg.norm(measured[0], axis=-1) > 0.5
  assert moving.sum() > 1000
  ratio = (np.linalg.norm(measured[1], axis=-1)[moving].mean()
           / np.linalg.norm(measured[0], axis=-1)[moving].mean())
  assert 0.85 < ratio < 1.15, ratio


def test_slowmo_gives_2n_minus_1_frames_on_the_same_path(animator, scene):
  picture = scene.frames[0]
  normal = animator.render(picture, animator.texture(scene.spectral, video_times(9)),
                           scene.spectral)
  times = video_times(9, slowmo=2)
  assert len(times) == 2 * 9 - 1
  np.testing.assert_allclose(times[1::2], np.arange(8) + 0.5)
  slow = animator.render(picture, animator.texture(scene.spectral, times), scene.spectral)
  assert len(slow) == 17
  assert np.abs(slow[::2].astype(int) - normal).max() <= 1
  # The frames between are new: halfway along, not copies of a neighbour.
  assert np.abs(slow[1::2].astype(int) - normal[:-1]).mean() > 0.1


@pytest.mark.slow  # tests/test_loop.py checks the loss it guides with.
def test_loop_guidance_lowers_the_closure_error(animator, photo):
  """N = 10 frames of a T = 16 window: without guidance the texture does
  not return to its start; self-guidance brings D(N) back to D(0)."""
  picture, _ = pictures.fit_picture(pictures.read_picture(photo), WIDTH, HEIGHT)
  errors = {}
  for loop in (False, True):
    options = animator.motion.options(loop_frames=10 if loop else 0)
    spectral = animator.spectral(picture, seed=0, options=options)
    errors[loop] = loop_closure_error(spectral, num_frames=T, loop_frames=10)
  # Measured 0.24 px -> 0.16 px. A model trained a few steps decodes nearly
  # the same volume whatever its latent, which bounds what guidance can do.
  assert errors[True] < 0.8 * errors[False], errors


def test_motion_transfer_reproduces_a_measured_video(runs, animator, scene, tmp_path, capsys):
  """`spectral-jax motion` of a synthetic video, applied by `animate --motion`
  to that video's first frame, renders frames close to the video's own."""
  video.write_video(tmp_path / "scene.mp4", scene.frames, 30)
  iio.imwrite(tmp_path / "first.png", scene.frames[0])
  height, width = scene.frames.shape[1:3]
  code, _, err = _main(capsys, "motion", tmp_path / "scene.mp4", "-o", tmp_path / "S.npz",
                       "--frames", T, "--K", K, "--size", f"{width}x{height}")
  assert code == 0, err
  code, _, err = _main(capsys, "animate", "--size", "model", tmp_path / "first.png", "--motion",
                       tmp_path / "S.npz", "-o", tmp_path / "out.mp4", "--checkpoint",
                       runs)
  assert code == 0, err
  assert iio.imread(tmp_path / "out.mp4").shape == (T, HEIGHT, WIDTH, 3)
  # At the scene's own size, where the motion is large enough to see.
  measured = Motion.load(tmp_path / "S.npz").spectral_volume
  rendered = animator.render(scene.frames[0], animator.texture(measured, np.arange(T)), measured)
  truth = scene.frames.astype(float)
  error = np.abs(rendered - truth).mean()
  unchanged = np.abs(scene.frames[:1] - truth).mean()
  # The same picture rendered with the true motion: what the renderer alone
  # allows (it cannot know the background a plant uncovers).
  exact = np.abs(animator.render(scene.frames[0], animator.texture(scene.spectral, np.arange(T)),
                                 scene.spectral) - truth).mean()
  # Measured: 1.18 grey levels with the measured motion, 0.90 with the true
  # one, 1.57 for the picture unchanged (flow blurs the sharp motion edges).
  assert error < 0.8 * unchanged and error < 1.4 * exact, (error, exact, unchanged)


def test_motion_of_a_shorter_slower_clip_plays_on_its_own_clock(tmp_path, capsys):
  """`spectral-jax motion` of a 64-frame clip at 15 fps (not the model's
  T=150 at 30 fps) with all its K=33 bins (not the model's 16) drives a
  picture through the default model: the video has the clip's 64 frames at
  15 fps, and its motion, measured back with optical flow, follows the
  clip's own over time with its amplitude. (Fewer bins would hold less of
  the clip's motion: its gusts spread the spectrum.)"""
  width, height = 256, 160  # The default model's size: no resizing.
  clip = synthetic.make_scene(7, num_frames=64, height=height, width=width, num_freqs=33,
                              fps=15.0, max_amplitude_px=4.0, freq_range_hz=(0.3, 2.0),
                              background="photo")
  video.write_video(tmp_path / "clip.mp4", clip.frames, 15)
  iio.imwrite(tmp_path / "first.png", clip.frames[0])
  code, _, err = _main(capsys, "motion", tmp_path / "clip.mp4", "-o", tmp_path / "S.npz",
                       "--frames", 64, "--fps", 15, "--K", 33, "--size", f"{width}x{height}")
  assert code == 0, err
  code, printed, err = _main(capsys, "animate", "--size", "model",
                             tmp_path / "first.png", "--motion",
                             tmp_path / "S.npz", "-o", tmp_path / "out.mp4")
  assert code == 0, err
  assert "64 frames at 15 fps" in printed and "K=33 over T=64 frames at 15 fps" in printed
  assert iio.immeta(tmp_path / "out.mp4")["fps"] == 15
  rendered = iio.imread(tmp_path / "out.mp4")
  assert rendered.shape == (64, height, width, 3)

  def motion(frames):
    """Displacements from frame 0 to every 4th frame, ``[16, pixels, 2]``
    px, where the clip moves."""
    return flow.displacements(frames[::4])[0][:, clip.moving_mask > 0.5]

  truth, played = motion(clip.frames), motion(rendered)
  # The same course over the 64 frames, pixel by pixel, and the same size.
  # Measured: correlation 0.99, size 0.91 (the renderer softens edges, and
  # flow finds less motion at soft ones).
  correlation = np.corrcoef(truth.ravel(), played.ravel())[0, 1]
  size = np.sqrt(np.mean(played**2) / np.mean(truth**2))
  assert correlation > 0.9 and 0.8 < size < 1.25, (correlation, size)


def test_interact_poke_moves_most_where_it_pokes_and_rings_down(runs, animator, scene, tmp_path,
                                                                capsys):
  Motion(scene.spectral, scene.frames[0], 30.0, T).save(tmp_path / "S.npz")
  iio.imwrite(tmp_path / "first.png", scene.frames[0])
  amplitude = np.abs(scene.spectral[1:]).sum(axis=(0, 3))
  y, x = np.unravel_index(np.argmax(amplitude), amplitude.shape)
  code, printed, err = _main(capsys, "interact", "--size", "model",
                             tmp_path / "first.png", "--poke",
                             f"{x},{y},2,0,1", "--motion", tmp_path / "S.npz",
                             "--frames", 24, "-o", tmp_path / "poke.mp4", "--checkpoint",
                             runs)
  assert code == 0, err
  assert "1 poke(s)" in printed
  # The poke in the model's pixels: the picture is 4x the model's size, so
  # pixel edges scale by 1/4, ``x' = (x + 0.5) / 4 - 0.5``, and the push too.
  model_poke = dynamics.Poke((x + 0.5) / 4 - 0.5, (y + 0.5) / 4 - 0.5, 0.5, 0.0, 1.0)
  picture = pictures.fit_picture(scene.frames[0], WIDTH, HEIGHT)[0]
  spectral = pictures.fit_spectral(scene.spectral, WIDTH, HEIGHT)
  expected = dynamics.simulate(spectral, [model_poke], num_output_frames=24, fps=30.0,
                               num_frames=T)
  frames = animator.render(picture, expected.displacement, spectral)
  np.testing.assert_array_equal(iio.imread(tmp_path / "poke.mp4"),
                                _decoded_like(frames, 30.0, tmp_path / "expected.mp4"))
  assert np.abs(frames[1:].astype(int) - picture).max() > 10  # The poke shows.

  response = dynamics.simulate(scene.spectral, [dynamics.Poke(x, y, 2.0, 0.0, 1.0)],
                               num_output_frames=24, fps=30.0, num_frames=T)
  np.testing.assert_array_equal(response.displacement[0], 0)
  peak = np.linalg.norm(response.displacement, axis=-1).max(axis=0)
  near = peak[max(y - 2, 0):y + 3, max(x - 2, 0):x + 3].max()
  assert near == peak.max() or near > 0.8 * peak.max()
  still = scene.moving_mask < 1e-3
  assert peak[still].max() < 0.05 * near
  energy = response.energy()
  assert np.all(np.diff(energy[2:]) < 0)


def _decoded_like(frames, fps, path) -> np.ndarray:
  """``frames`` as the commands' videos show them: written by the same
  H.264 writer to ``path`` and decoded (x264 is deterministic, so equal
  frames give equal videos)."""
  video.write_video(path, frames, fps)
  return iio.imread(path)


@pytest.fixture(scope="module")
def small_scene():
  """A swaying scene at the models' own size, with motion of a few pixels."""
  return synthetic.make_scene(5, num_frames=T, height=HEIGHT, width=WIDTH, num_freqs=K,
                              max_amplitude_px=2.0, background="photo")


def test_animate_options_reach_the_frames(runs, animator, small_scene, tmp_path, capsys):
  """``--magnify``, ``--slowmo``, ``--fps`` and ``--mask`` through the
  command line, with a measured motion: the video is the one rendered from
  the texture they ask for, and the mask stills the motion it covers."""
  picture = small_scene.frames[0]
  iio.imwrite(tmp_path / "first.png", picture)
  Motion(small_scene.spectral, picture, 30.0, T).save(tmp_path / "S.npz")
  mask = np.zeros((HEIGHT, WIDTH), np.uint8)
  mask[:, WIDTH // 2:] = 255
  iio.imwrite(tmp_path / "mask.png", mask)
  code, printed, err = _main(capsys, "animate", "--size", "model",
                             tmp_path / "first.png", "--motion",
                             tmp_path / "S.npz", "--checkpoint", runs, "--frames", 6,
                             "--magnify", 2.5, "--slowmo", 2, "--fps", 12, "--mask",
                             tmp_path / "mask.png", "--feather", 0, "-o", tmp_path / "out.mp4",
                             "--save-motion", tmp_path / "masked.npz")
  assert code == 0, err
  assert "11 frames at 12 fps" in printed
  assert iio.immeta(tmp_path / "out.mp4")["fps"] == 12
  masked = Motion.load(tmp_path / "masked.npz").spectral_volume
  np.testing.assert_array_equal(masked[:, :, :WIDTH // 2], 0)
  np.testing.assert_allclose(masked[:, :, WIDTH // 2:], small_scene.spectral[:, :, WIDTH // 2:],
                             rtol=1e-6)
  times = np.arange(11) / 2  # 2 (6 - 1) + 1 frames, half a frame apart.
  expected = animator.render(picture, animator.texture(masked, times, 2.5), masked)
  video_frames = iio.imread(tmp_path / "out.mp4")
  np.testing.assert_array_equal(video_frames,
                                _decoded_like(expected, 12, tmp_path / "expected.mp4"))
  # The options change what shows: without magnification or mask the frames differ.
  for spectral, magnify in ((masked, 1.0), (small_scene.spectral, 2.5)):
    other = animator.render(picture, animator.texture(spectral, times, magnify), spectral)
    assert np.abs(other.astype(int) - expected).mean() > 0.1


def test_magnify_and_size_leave_the_renderers_metric_as_trained(
    runs, animator, small_scene, tmp_path, capsys, monkeypatch):
  """``animate --magnify 3`` moves pixels 3x as far, and ``--size`` at twice
  the model's size 2x as far, but the renderer splats them with the metric
  of ``--magnify 1`` at the model's size (resized for the larger video,
  values kept): `splat_metric` of the spectral volume over the model's T in
  the model's pixels, so the softmax is not sharpened."""
  from spectral_jax.inference import animator as animator_module
  from spectral_jax.render.splat_metric import splat_metric
  picture = small_scene.frames[0]
  iio.imwrite(tmp_path / "first.png", picture)
  Motion(small_scene.spectral, picture, 30.0, T).save(tmp_path / "S.npz")
  seen = {}

  def spy(model, image, textures, metric, **options):
    """What the renderer is given; black frames spare the rendering."""
    textures = list(textures)
    seen[run] = (max(np.abs(texture).max() for texture in textures), np.asarray(metric))
    for texture in textures:
      yield np.zeros(texture.shape[:3] + (3,), np.uint8)

  monkeypatch.setattr(animator_module, "render_frame_batches", spy)
  for run, options in (("x1", ()), ("x3", ("--magnify", 3)),
                       ("twice", ("--size", f"{2 * WIDTH}x{2 * HEIGHT}"))):
    code, _, err = _main(capsys, "animate", tmp_path / "first.png", "--motion",
                         tmp_path / "S.npz", "--checkpoint", runs, "--frames", 6,
                         "-o", tmp_path / f"{run}.mp4", "--size", "model", *options)
    assert code == 0, err
  np.testing.assert_allclose(seen["x3"][0], 3 * seen["x1"][0], rtol=1e-5)  # Magnified...
  np.testing.assert_array_equal(seen["x3"][1], seen["x1"][1])  # ...with the same metric,
  expected = splat_metric(pictures.fit_spectral(small_scene.spectral, WIDTH, HEIGHT), T,
                          animator.renderer.metric_scale)
  np.testing.assert_allclose(seen["x1"][1], expected, rtol=1e-6)  # the spectral volume's.
  # Twice the size: motion twice as far in the video's pixels (its peaks a
  # little softened by upsampling), the metric the model's, upsampled with
  # its values kept (not that of the upsampled volume, twice as large).
  np.testing.assert_allclose(seen["twice"][0], 2 * seen["x1"][0], rtol=0.1)
  upsampled = cv2.resize(expected[..., 0], (2 * WIDTH, 2 * HEIGHT), interpolation=cv2.INTER_LINEAR)
  np.testing.assert_allclose(seen["twice"][1][..., 0], upsampled, rtol=1e-6)


def test_animate_sampling_options_reach_the_motion(runs, animator, tmp_path, capsys):
  """``--seed``, ``--guidance``, ``--steps`` and ``--loop`` (with slow
  motion, whose loop shows S N frames) through the command line: the saved
  motion is what `Animator.spectral` samples with those options (each of
  them, left out, changes it by more than 1e-4 px)."""
  picture = (skimage.data.astronaut()[:HEIGHT * 4:4, :WIDTH * 4:4]).copy()
  iio.imwrite(tmp_path / "picture.png", picture)
  code, printed, err = _main(capsys, "animate", "--size", "model",
                             tmp_path / "picture.png", "--checkpoint", runs,
                             "--frames", 5, "--slowmo", 2, "--loop", "--seed", 3,
                             "--guidance", 4.0, "--steps", 2, "-o", tmp_path / "out.mp4",
                             "--save-motion", tmp_path / "S.npz")
  assert code == 0, err
  assert "10 frames at 30 fps" in printed
  options = animator.motion.options(num_steps=2, guidance_scale=4.0, loop_frames=5)
  np.testing.assert_allclose(Motion.load(tmp_path / "S.npz").spectral_volume,
                             animator.spectral(picture, 3, options), rtol=1e-5, atol=1e-6)


def test_a_folder_of_pictures_gives_one_video_each(runs, tmp_path, capsys):
  folder = tmp_path / "pictures"
  folder.mkdir()
  iio.imwrite(folder / "a.png", skimage.data.coffee())
  iio.imwrite(folder / "b.jpg", skimage.data.astronaut())
  code, printed, err = _main(capsys, "animate", "--size", "model",
                             folder, "-o", tmp_path / "videos",
                             "--checkpoint", runs, "--format", "gif", "--frames", 4)
  assert code == 0, err
  assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == ["a.gif", "b.gif"]
  assert printed.count("4 frames at 30 fps") == 2


def test_motion_run_pins_its_vae(runs, tmp_path, animator):
  """Training the VAE on after the motion run, or moving the folder of runs,
  changes nothing that sampling decodes or that an export holds."""
  picture = np.zeros((HEIGHT, WIDTH, 3), np.uint8) + 100
  before = animator.spectral(picture, seed=2)
  _, stats, _ = checkpoint.read_config(runs / "ldm2")
  assert Path(stats["vae"]["path"]).is_absolute() and stats["vae"]["relative_path"] == "../vae"
  moved = tmp_path / "moved"
  shutil.copytree(runs, moved)
  config = train_configs.animation_config("vae", 5)
  from spectral_jax.train import train
  train.run(config, moved / "vae", progress=False)
  assert checkpoint.manager(moved / "vae", read_only=True).latest_step() == 5
  reloaded = Animator.load(moved)
  assert reloaded.motion.vae is not None
  np.testing.assert_array_equal(reloaded.spectral(picture, seed=2), before)
  pinned = loading.load_vae(moved / "vae", step=stats["vae"]["step"])
  latest = loading.load_vae(moved / "vae")
  assert latest.step == 5 and pinned.step == stats["vae"]["step"]
  # An export takes the pinned VAE too, not the latest.
  manifest = export.write(moved, tmp_path / "export")
  assert manifest["vae"]["step"] == stats["vae"]["step"]
  exported = load_file(tmp_path / "export" / manifest["vae"]["file"])
  pinned_params = train_configs.flat_params(functional.split_params(pinned.vae)[1])
  latest_params = train_configs.flat_params(functional.split_params(latest.vae)[1])
  assert set(exported) == set(pinned_params)
  assert any(not np.array_equal(pinned_params[n], latest_params[n]) for n in pinned_params)
  for name, value in pinned_params.items():
    np.testing.assert_array_equal(exported[name], value, err_msg=name)


def _command(*argv, env=None):
  return subprocess.run(["spectral-jax", *map(str, argv)], capture_output=True, text=True,
                        env=env)


@pytest.mark.slow
def test_second_run_loads_compiled_programs_from_the_cache(runs, photo, tmp_path):
  env = dict(os.environ, SPECTRAL_JAX_CACHE_DIR=str(tmp_path / "cache"))
  for name in ("first", "second"):
    done = _command("animate", photo, "-o", tmp_path / f"{name}.mp4", "--checkpoint", runs,
                    "--frames", 4, "--size", "model", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    if name == "first":
      entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
      assert entries
  # Nothing new was compiled: every program came from the cache.
  assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == entries


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, runs):
  root = tmp_path_factory.mktemp("bad")
  (root / "text.png").write_text("not a picture\n")
  iio.imwrite(root / "photo.png", skimage.data.chelsea())
  iio.imwrite(root / "huge.png", np.zeros((2100, 3150, 3), np.uint8))
  for name, num_freqs, num_frames in (("one_bin", 1, 32), ("one_frame", 2, 1)):
    Motion(np.zeros((num_freqs, HEIGHT, WIDTH, 2), np.complex64),
           np.zeros((HEIGHT, WIDTH, 3), np.uint8), 30.0, num_frames).save(root / f"{name}.npz")
  return root


@pytest.mark.parametrize("argv, message", [
    (["animate", "{bad}/text.png", "--checkpoint", "{runs}"], "not a picture"),
    (["animate", "{bad}/missing.png", "--checkpoint", "{runs}"], "no such file"),
    (["animate", "{bad}/photo.png", "--checkpoint", "{runs}", "--frames", "0"],
     "--frames: must be at least 1, got 0"),
    (["animate", "{bad}/photo.png", "--checkpoint", "{runs}", "--magnify", "-1"],
     "--magnify: must be greater than 0, got -1"),
    (["interact", "{bad}/photo.png", "--checkpoint", "{runs}", "--poke", "1,2,3,4",
      "--alpha", "nan"], "--alpha: must be a finite number at least 0, got nan"),
    (["animate", "{bad}/photo.png", "--checkpoint", "{runs}/vae"], "is one 'vae' run"),
    (["animate", "{bad}/photo.png", "--checkpoint", "{bad}"], "no motion and no renderer run"),
    (["animate", "{bad}/photo.png", "--checkpoint", "{bad}/nowhere"], "no such directory"),
    (["animate", "{bad}/photo.png", "--checkpoint", "{runs}", "--motion", "{bad}/one_bin.npz"],
     "one_bin.npz has K=1 bins over T=32 frames; motion needs K >= 2 (bin 0 does not move)"),
    (["interact", "{bad}/photo.png", "--checkpoint", "{runs}", "--poke", "1,2,3,4", "--motion",
      "{bad}/one_frame.npz"], "one_frame.npz has K=2 bins over T=1 frames; motion needs K >= 2"),
    (["interact", "{bad}/photo.png", "--checkpoint", "{runs}", "--poke", "500,10,1,0"],
     "poke at (500, 10) is outside the animated picture"),
    (["interact", "{bad}/photo.png", "--checkpoint", "{runs}", "--poke", "1,2,3"],
     "expected X,Y,DX,DY"),
    (["animate", "{bad}/photo.png", "--checkpoint", "{runs}", "--size", "0x0"],
     "--size: sides must be 1 to 2048 px, got '0x0'"),
    (["animate", "{bad}/photo.png", "--checkpoint", "{runs}", "--size=-96x64"],
     "--size: must be WIDTHxHEIGHT (e.g. 512x320), full or model, got '-96x64'"),
    (["animate", "{bad}/photo.png", "--checkpoint", "{runs}", "--size", "big"],
     "--size: must be WIDTHxHEIGHT"),
    (["animate", "{bad}/photo.png", "--checkpoint", "{runs}", "--size", "3072x2048"],
     "--size: sides must be 1 to 2048 px, got '3072x2048'"),
    (["interact", "{bad}/photo.png", "--checkpoint", "{runs}", "--poke", "1,2,3,4", "--size",
      "100x64"], "--size 100x64 is not of the model's 48x32 shape; sizes of it are multiples "
     "of 24x16, e.g. 192x128"),
    (["animate", "{bad}/huge.png", "--checkpoint", "{runs}", "--size", "full"],
     "--size full: the picture's 3150x2100 crop is larger than 2048 px on a side"),
])
def test_bad_input_one_line_exit_2_no_output(runs, bad_inputs, tmp_path, argv, message):
  out = tmp_path / "out.mp4"
  argv = [a.format(bad=bad_inputs, runs=runs) for a in argv] + ["-o", str(out)]
  done = _command(*argv)
  assert done.returncode == 2, done.stderr[-2000:]
  # One error line, last; argparse prints its usage before a bad option's.
  lines = [line for line in done.stderr.splitlines() if line.strip()]
  assert [line for line in lines if "error" in line] == lines[-1:], done.stderr
  assert message in lines[-1], done.stderr
  assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_largest_size_renders(runs, small_scene, tmp_path, capsys):
  """The largest --size of the models' 3:2 shape with sides within 2048 px,
  2040x1360 (85 x 24x16): rendered, frame 0 the picture at that size."""
  picture = small_scene.frames[0]
  iio.imwrite(tmp_path / "first.png", picture)
  Motion(small_scene.spectral, picture, 30.0, T).save(tmp_path / "S.npz")
  code, printed, err = _main(capsys, "animate", tmp_path / "first.png", "--motion",
                             tmp_path / "S.npz", "--checkpoint", runs, "--frames", 2,
                             "--size", "2040x1360", "--batch-size", 1,
                             "-o", tmp_path / "large.mp4")
  assert code == 0, err
  assert "2040x1360" in printed
  assert iio.imread(tmp_path / "large.mp4").shape == (2, 1360, 2040, 3)


def test_find_runs_takes_stage_2_and_the_renderer(runs):
  found = loading.find_runs(runs)
  assert found == {"motion": runs / "ldm2", "renderer": runs / "renderer"}


def test_the_commands_never_import_training():
  probe = ("import sys; import spectral_jax.apps.animate, spectral_jax.apps.interact; "
           "from spectral_jax.inference import animator, dynamics, loading; "
           "print(sorted(m for m in sys.modules if m.startswith('spectral_jax.train')))")
  done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip() == "[]"


# Exports (`spectral-jax export`, `inference/export.py`): what a picture
# becomes with the exported models, against the runs themselves. Few DDIM
# steps and frames keep it quick; magnification makes the motion show.
PROBE_SEED, PROBE_STEPS, PROBE_MAGNIFY = 3, 2, 4.0
PROBE_TIMES = [0.0, 3.0, 7.5, 12.0]

# Run in a fresh Python: loads an export (argv[1]), samples and renders the
# picture in argv[2] like `_probe`, saves to argv[3]; prints the Orbax and
# training modules the process imported.
PROBE_SCRIPT = f"""
import json, sys
import numpy as np
from spectral_jax.inference import compile_cache
from spectral_jax.inference.animator import Animator
compile_cache.enable()
animator = Animator.load(sys.argv[1])
picture = np.load(sys.argv[2])
options = animator.motion.options(num_steps={PROBE_STEPS})
spectral = animator.spectral(picture, seed={PROBE_SEED}, options=options)
texture = animator.texture(spectral, np.asarray({PROBE_TIMES}, np.float32), {PROBE_MAGNIFY})
np.savez(sys.argv[3], spectral=spectral, frames=animator.render(picture, texture, spectral))
print(json.dumps(sorted(m for m in sys.modules
                        if m.split(".")[0] == "orbax" or m.startswith("spectral_jax.train"))))
"""


def _probe(animator, picture) -> tuple[np.ndarray, np.ndarray]:
  """``(spectral [K, H, W, 2], frames [4, H, W, 3])``, as `PROBE_SCRIPT`."""
  options = animator.motion.options(num_steps=PROBE_STEPS)
  spectral = animator.spectral(picture, seed=PROBE_SEED, options=options)
  texture = animator.texture(spectral, np.asarray(PROBE_TIMES, np.float32), PROBE_MAGNIFY)
  return spectral, animator.render(picture, texture, spectral)


@pytest.fixture(scope="module")
def probe_picture(photo) -> np.ndarray:
  return pictures.fit_picture(pictures.read_picture(photo), WIDTH, HEIGHT)[0]


@pytest.fixture(scope="module")
def run_probe(animator, probe_picture):
  """`_probe` with the training runs. The compilation cache is on, as in
  the commands (and the probe script): programs compile once."""
  enable_compile_cache()
  return _probe(animator, probe_picture)


@pytest.fixture(scope="module")
def float32_export(runs, tmp_path_factory) -> Path:
  model = tmp_path_factory.mktemp("export") / "model"
  manifest = export.write(runs, model)
  assert manifest["dtype"] == "float32" and manifest["version"] == export.VERSION
  return model


def test_export_in_a_fresh_process_animates_bitwise_like_the_runs(float32_export, probe_picture,
                                                                  run_probe, tmp_path):
  np.save(tmp_path / "picture.npy", probe_picture)
  done = subprocess.run([sys.executable, "-c", PROBE_SCRIPT, float32_export,
                         tmp_path / "picture.npy", tmp_path / "probe.npz"],
                        capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-3000:]
  # Loading an export needs neither Orbax nor the training code.
  assert json.loads(done.stdout.strip().splitlines()[-1]) == []
  spectral, frames = run_probe
  # Not a trivial pass: the motion moves pixels of the later frames.
  assert np.abs(spectral).max() > 0.1
  assert (frames[1:] != probe_picture).any(axis=-1).sum() > 100
  exported = np.load(tmp_path / "probe.npz")
  np.testing.assert_array_equal(exported["spectral"], spectral)
  np.testing.assert_array_equal(exported["frames"], frames)


# Runs examples/run_stablehlo.py as a user would, where spectral_jax cannot
# be imported.
RUN_STABLEHLO = Path(__file__).resolve().parent.parent / "examples" / "run_stablehlo.py"
WITHOUT_SPECTRAL_JAX = ("import runpy, sys; sys.modules['spectral_jax'] = None; "
                        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def test_export_command_then_animate_takes_the_export(runs, animator, photo, probe_picture,
                                                      tmp_path, capsys):
  model = tmp_path / "model"
  code, printed, err = _main(capsys, "export", "--checkpoint", runs, "-o", model, "--stablehlo")
  assert code == 0, err
  assert printed.startswith(f"{model}: float32 export of motion (ldm2 step 3)"), printed
  assert printed.endswith("programs sample.jax and render.jax for cpu, cuda, tpu\n"), printed
  files = ["model.json", "motion.safetensors", "render.jax", "renderer.safetensors",
           "sample.jax", "vae.safetensors"]
  assert sorted(p.name for p in model.iterdir()) == files
  manifest = json.loads((model / "model.json").read_text())
  _, stats, _ = checkpoint.read_config(runs / "ldm2")
  assert (manifest["vae"]["run"], manifest["vae"]["step"]) == ("vae", stats["vae"]["step"])
  assert manifest["motion"]["latent"] == stats["latent"]
  assert manifest["motion"]["clip"] == {"num_frames": T, "fps": 30.0}
  assert manifest["motion"]["sampling"]["num_steps"] == 4
  assert manifest["renderer"]["config"]["stage"] == "renderer"
  assert manifest["stablehlo"]["sample"]["num_steps"] == 4
  assert manifest["stablehlo"]["sample"]["guidance_scale"] > 0

  # The programs, with JAX alone, sample and render what `animate` does.
  np.save(tmp_path / "picture.npy", probe_picture)
  done = subprocess.run([sys.executable, "-c", WITHOUT_SPECTRAL_JAX, RUN_STABLEHLO, model,
                         tmp_path / "picture.npy", tmp_path / "programs.npz", "--seed", "5",
                         "--frames", "10", "--magnify", str(PROBE_MAGNIFY)],
                        capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-3000:]
  programs = np.load(tmp_path / "programs.npz")
  spectral = animator.spectral(probe_picture, seed=5)
  texture = animator.texture(spectral, np.arange(10, dtype=np.float32), PROBE_MAGNIFY)
  frames = animator.render(probe_picture, texture, spectral)
  assert np.abs(spectral[1:]).max() > 0.1 and (frames[1:] != probe_picture).any()
  # One compiled program against animate's separate calls: XLA fuses the
  # sampling's last steps and its decoding differently, so the volumes
  # agree to float32 rounding rather than bit for bit.
  np.testing.assert_allclose(programs["spectral"], spectral, rtol=0,
                             atol=1e-5 * np.abs(spectral).max())
  np.testing.assert_array_equal(programs["frames"], frames)

  out = tmp_path / "out.mp4"
  code, printed, err = _main(capsys, "animate", "--size", "model",
                             photo, "-o", out, "--checkpoint", model,
                             "--frames", 4, "--steps", PROBE_STEPS)
  assert code == 0, err
  assert iio.imread(out).shape == (4, HEIGHT, WIDTH, 3)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out.mp4", "picture.npy",
                                                          "programs.npz"]  # No temporary.


def test_float16_export_is_half_the_size_and_animates_alike(runs, animator, float32_export,
                                                            probe_picture, run_probe, tmp_path):
  # Written over an earlier export, which it replaces whole.
  half_dir = tmp_path / "float16"
  shutil.copytree(float32_export, half_dir)
  export.write(runs, half_dir, dtype="float16")
  assert json.loads((half_dir / "model.json").read_text())["dtype"] == "float16"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["float16"]  # No temporary left.
  sizes = {dtype: sum(f.stat().st_size for f in folder.glob("*.safetensors"))
           for dtype, folder in (("float32", float32_export), ("float16", half_dir))}
  # Measured 0.517: the headers (tensor names, shapes) do not halve.
  assert 0.49 < sizes["float16"] / sizes["float32"] < 0.53, sizes
  half = Animator.load(half_dir)
  # Loaded weights are widened to float32: the run's, rounded to float16.
  for ours, theirs in ((half.motion.unet, animator.motion.unet),
                       (half.motion.vae, animator.motion.vae),
                       (half.renderer.renderer, animator.renderer.renderer)):
    ours, theirs = (jax.tree.leaves(functional.split_params(m)[1]) for m in (ours, theirs))
    assert len(ours) == len(theirs) > 10
    for a, b in zip(ours, theirs):
      assert a.dtype == np.float32
      np.testing.assert_array_equal(a, np.asarray(b).astype(np.float16).astype(np.float32))
  spectral, frames = _probe(half, probe_picture)
  run_spectral, run_frames = run_probe
  # Measured: spectral volumes 0.0034 px apart (0.14% of the largest, 2.4
  # px); frames 0.04 grey levels apart on average, 0.016% of values more
  # than 8 apart (at most 93, where a sub-pixel shift moves an edge at 4x
  # magnification).
  assert np.abs(spectral - run_spectral).max() < 0.005 * np.abs(run_spectral).max()
  difference = np.abs(frames.astype(int) - run_frames)
  assert difference.mean() < 0.5 and np.mean(difference > 8) < 0.002, difference.mean()


def test_export_refuses_an_export_it_cannot_read(float32_export, tmp_path):
  model = tmp_path / "model"
  shutil.copytree(float32_export, model)
  manifest = json.loads((model / "model.json").read_text())
  tensors = load_file(str(model / "renderer.safetensors"))
  name = sorted(tensors)[0]
  save_file({k: v for k, v in tensors.items() if k != name}, str(model / "renderer.safetensors"))
  with pytest.raises(ValueError, match=re.escape(f"missing ['{name}']")):
    Animator.load(model)
  (model / "model.json").write_text(json.dumps({**manifest, "version": 99}))
  with pytest.raises(ValueError, match="export format version 99; this spectral_jax reads "
                     "version 1"):
    Animator.load(model)


@pytest.mark.parametrize("argv, message", [
    (["export", "--checkpoint", "{bad}", "-o", "{tmp}/out"], "no motion and no renderer run"),
    (["export", "--checkpoint", "{runs}/vae", "-o", "{tmp}/out"], "is one 'vae' run"),
    (["export", "--checkpoint", "{runs}", "-o", "{bad}"],
     "exists and is not an export (no model.json)"),
])
def test_export_bad_input_one_line_exit_2_nothing_written(runs, bad_inputs, tmp_path, capsys,
                                                          argv, message):
  before = sorted(p.name for p in bad_inputs.parent.iterdir()), sorted(bad_inputs.iterdir())
  code, printed, err = _main(capsys, *[a.format(bad=bad_inputs, runs=runs, tmp=tmp_path)
                                       for a in argv])
  assert code == 2 and printed == "", err
  lines = [line for line in err.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("spectral-jax export: error: "), err
  assert message in lines[0], err
  assert list(tmp_path.iterdir()) == []
  after = sorted(p.name for p in bad_inputs.parent.iterdir()), sorted(bad_inputs.iterdir())
  assert after == before


def test_export_that_fails_midway_leaves_what_was_there(runs, float32_export, tmp_path,
                                                        monkeypatch):
  """A write that fails after the first file (a full disk, say) leaves no
  temporary folder, and an earlier export as it was (a new folder is
  never made: the same code path)."""
  def save_then_fail(tensors, path, metadata=None):
    if metadata["model"] == "vae":
      raise OSError(28, "No space left on device")
    save_file(tensors, path, metadata=metadata)
  monkeypatch.setattr(export, "save_file", save_then_fail)
  shutil.copytree(float32_export, tmp_path / "earlier")
  with pytest.raises(OSError, match="No space left"):
    export.write(runs, tmp_path / "earlier", dtype="float16")
  assert list(tmp_path.iterdir()) == [tmp_path / "earlier"]
  for file in float32_export.iterdir():
    assert (tmp_path / "earlier" / file.name).read_bytes() == file.read_bytes()


def test_export_and_its_command_never_import_training():
  probe = ("import sys; import spectral_jax.apps.export; "
           "from spectral_jax.inference import export; "
           "print(sorted(m for m in sys.modules if m.startswith('spectral_jax.train') "
           "or m.split('.')[0] == 'orbax'))")
  done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip() == "[]"
