"""The live picture page (`inference.live_picture`): what it holds, and, in a
real headless Chromium, that its frames are the project's softmax splatting
of the picture and that a drag on it moves the picture as `interact`'s
dynamics do."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

sys.path.insert(0, str(Path(__file__).parent))
import browser  # noqa: E402

from spectral_jax import cli  # noqa: E402
from spectral_jax.data.pictures import fit_picture, fit_spectral  # noqa: E402
from spectral_jax.inference import dynamics  # noqa: E402
from spectral_jax.inference.live_picture import (  # noqa: E402
    MAX_PAGE_BYTES, LivePicture, read_payload)
from spectral_jax.motion.motion_file import Motion  # noqa: E402
from spectral_jax.render.splat_metric import splat_metric  # noqa: E402

WIDTH, HEIGHT = 256, 160
# A 64-frame clip at 15 fps, as `spectral-jax motion` measures one: K = 33.
T, FPS, K = 64, 15.0, 33
# Large enough that the softmax picks decisively between colliding pixels.
METRIC_SCALE = 10.0


def _volume(num_freqs: int, width: int, height: int, seed: int = 0,
            blur: float = 3.0) -> np.ndarray:
  """``[K, h, w, 2]`` complex64 px: independent smooth random fields, one
  per bin, all of one amplitude (a plant's spectrum falls with frequency;
  a flat one makes many modes count, so that a poke's response, the
  modes' correlation with the poked pixel, falls off with distance)."""
  rng = np.random.default_rng(seed)
  parts = rng.normal(size=(num_freqs, height, width, 4)).astype(np.float32)
  parts = np.stack([cv2.GaussianBlur(part, (0, 0), blur) for part in parts])
  parts *= 0.4
  return (parts[..., :2] + 1j * parts[..., 2:]).astype(np.complex64)


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
  return fit_picture(skimage.data.astronaut(), WIDTH, HEIGHT)[0]


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
  """A volume on a grid a quarter of the picture's size."""
  return _volume(K, WIDTH // 4, HEIGHT // 4)


def _metric(volume: np.ndarray, num_frames: int = T) -> np.ndarray:
  """The splatting metric ``[H, W]`` of ``volume`` at the picture's size."""
  return splat_metric(fit_spectral(volume, WIDTH, HEIGHT), num_frames, METRIC_SCALE)[..., 0]


@pytest.fixture(scope="module")
def page(picture, volume) -> LivePicture:
  return LivePicture.make(picture, volume, num_frames=T, fps=FPS, metric=_metric(volume),
                          magnify=2.0)


def test_the_page_holds_the_picture_the_volume_and_the_dynamics(page, picture, volume):
  payload = read_payload(page.html())
  np.testing.assert_array_equal(payload["picture"], picture)
  stored = page.modes.astype(np.complex64)
  np.testing.assert_allclose(payload["modes"][..., :2], stored.real, rtol=1e-3, atol=1e-4)
  np.testing.assert_allclose(payload["modes"][..., 2:], stored.imag, rtol=1e-3, atol=1e-4)
  np.testing.assert_allclose(payload["metric"], _metric(volume), rtol=1e-3)
  omega = dynamics.modal_frequencies(K, T, FPS)[1:]
  gamma = dynamics.rayleigh_damping(omega, 0.4, 0.08)
  np.testing.assert_allclose(payload["omega"], omega)
  np.testing.assert_allclose(payload["gamma"], gamma)
  assert payload["substeps"] == dynamics.substeps_per_frame(omega, gamma, FPS)
  assert payload["binWeights"] == [2.0] * (K - 2) + [1.0]  # T even, K = T/2 + 1: Nyquist.


def test_a_volume_too_big_for_a_page_shrinks_to_fit(picture):
  # The default model's volume at the renderer's size: 16 bins over 256x160
  # is 4.9 MB of float16 before base64; half the grid fits.
  volume = _volume(16, WIDTH, HEIGHT)
  page = LivePicture.make(picture, volume, num_frames=150, fps=30, metric=_metric(volume, 150))
  assert page.modes.shape == (15, HEIGHT // 2, WIDTH // 2, 2)
  assert len(page.html()) <= MAX_PAGE_BYTES
  with pytest.raises(ValueError, match="does not fit 0.001 MB"):
    LivePicture.make(picture, _volume(16, 8, 5), num_frames=150, fps=30,
                     metric=_metric(volume, 150), max_bytes=1000)
  with pytest.raises(ValueError, match="K=1 bins has no motion"):
    LivePicture.make(picture, _volume(1, 64, 40), num_frames=150, fps=30,
                     metric=_metric(volume, 150))
  with pytest.raises(ValueError, match="not of the picture's 256x160 shape"):
    LivePicture.make(picture, _volume(4, 64, 64), num_frames=150, fps=30,
                     metric=_metric(volume, 150))


# ---- In Chromium ----

@pytest.fixture(scope="module")
def driver():
  browser.require_chromium()
  started = browser.start()
  yield started
  started.quit()


@pytest.fixture
def opened(driver, page, tmp_path):
  """The page open in Chromium on a clock that only the test moves."""
  path = page.write(tmp_path / "page.html")
  driver.get(path.as_uri())
  driver.execute_script("livePicture.setManualClock(true)")
  assert driver.execute_script("return livePicture.ready"), (
      driver.execute_script("return livePicture.error"))
  return driver


def _frame(driver) -> np.ndarray:
  return browser.decode(driver.execute_script("return livePicture.frame()"), np.uint8,
                        (HEIGHT, WIDTH, 4))[..., :3]


def _displacement(driver) -> np.ndarray:
  return browser.decode(driver.execute_script("return livePicture.displacement()"),
                        np.float32, (HEIGHT, WIDTH, 4))[..., :2]


def test_the_page_loads_offline_with_no_console_error(opened):
  assert opened.execute_script("return livePicture.error") is None
  assert opened.execute_script(
      "return performance.getEntriesByType('resource').map(e => e.name)") == []
  # Anything logged at all: a warning would be a WebGL complaint.
  assert opened.get_log("browser") == []
  assert opened.title == "live picture"


def test_frames_are_the_softmax_splatting_of_the_picture(opened, page, picture):
  opened.execute_script("livePicture.setLoop(false, 0)")
  np.testing.assert_array_equal(_frame(opened), picture)  # Frame 0 is the picture.
  for time in (5.5, 23.0):
    opened.execute_script(f"livePicture.setLoop(false, {time})")
    texture = page.loop_texture(time)  # magnify 2
    assert np.abs(texture).max() > 5  # Collisions and holes, not a nudge.
    np.testing.assert_allclose(_displacement(opened), texture, atol=2e-3, rtol=1e-3)
    reference, coverage = page.reference_frame(texture)
    covered = coverage >= 0.5
    error = np.abs(_frame(opened).astype(np.float32) - np.round(reference))[covered]
    assert covered.mean() > 0.7
    # 2/255 on average, and only a few pixels where collisions are close
    # calls (equal weights, the metric ignored, put 1% of them 5 off).
    assert error.mean() <= 2.0, (time, error.mean())
    assert np.percentile(error, 99) <= 2.0, (time, np.percentile(error, 99))


def test_the_still_picture_toggle_shows_the_picture(opened, picture):
  opened.execute_script("livePicture.setLoop(false, 10)")
  assert np.abs(_frame(opened).astype(int) - picture).mean() > 5
  opened.find_element("id", "still").click()
  np.testing.assert_array_equal(_frame(opened), picture)


def _simulated(page, pokes, num_output_frames: int) -> dynamics.ModalResponse:
  """`interact`'s simulation of ``pokes`` on the volume the page draws."""
  modes = page.spectral()
  spectral = np.concatenate([np.zeros_like(modes[:1]), modes])
  return dynamics.simulate(spectral, pokes, num_output_frames=num_output_frames, fps=FPS,
                           num_frames=T)


def test_a_drag_moves_the_picture_as_interact_does(opened, page):
  from selenium.webdriver.common.action_chains import ActionChains
  opened.execute_script("livePicture.setLoop(false, 0); livePicture.setMagnify(1)")
  canvas = opened.find_element("id", "view")
  # Press at CSS pixel (100, 60) of the canvas (Selenium counts offsets from
  # its centre), drag 6 right and 4 up, release.
  ActionChains(opened).move_to_element_with_offset(
      canvas, 100 - WIDTH // 2, 60 - HEIGHT // 2).click_and_hold().move_by_offset(
          6, -4).release().perform()
  # The pixel under CSS x = 100 spans [100, 101): picture coordinate 99.5.
  assert opened.execute_script("return livePicture.lastPoke") == [99.5, 59.5, 6, -4]
  poke = dynamics.Poke(99.5, 59.5, 6.0, -4.0, frame=0)
  expected = _simulated(page, [poke], 41)
  shown = 0
  for frame in (3, 40):
    opened.execute_script(f"livePicture.advanceFrames({frame - shown})")
    shown = frame
    q = np.asarray(opened.execute_script("return livePicture.modalCoordinates()"))
    np.testing.assert_allclose(q[0::2] + 1j * q[1::2], expected.modal_coordinates[frame],
                               rtol=1e-6, atol=1e-9)
    displacement = _displacement(opened)
    np.testing.assert_allclose(displacement, expected.displacement[frame], atol=1e-4,
                               rtol=1e-3)
  # One frame on, the poked region moves most, and motion fades away from it.
  opened.execute_script("livePicture.calm(); livePicture.poke(99.5, 59.5, 6, -4); "
                        "livePicture.advanceFrames(1)")
  early = np.linalg.norm(_displacement(opened), axis=-1)
  rows, cols = np.mgrid[:HEIGHT, :WIDTH]
  distance = np.hypot(cols - 99.5, rows - 59.5)
  assert early[distance < 8].mean() > 2.5 * early[distance > 48].mean()
  assert distance.flat[np.argmax(early)] < 8


def test_the_pokes_of_interact_replay_on_the_page(driver, page, tmp_path):
  pokes = ((40.0, 100.0, -5.0, 2.0, 1.5), (200.0, 30.0, 3.0, 3.0, 4.0))
  path = LivePicture(**{**page.__dict__, "pokes": pokes, "playing": False,
                        "magnify": 1.0}).write(tmp_path / "pokes.html")
  driver.get(path.as_uri())
  driver.execute_script("livePicture.setManualClock(true); livePicture.replayPokes(); "
                        "livePicture.advanceFrames(12)")
  expected = _simulated(page, [dynamics.Poke(*poke) for poke in pokes], 13)
  np.testing.assert_allclose(_displacement(driver), expected.displacement[12], atol=1e-4,
                             rtol=1e-3)


# ---- The commands ----

def _main(capsys, *argv):
  code = cli.main([str(a) for a in argv])
  captured = capsys.readouterr()
  return code, captured.out, captured.err


@pytest.fixture(scope="module")
def motion_file(tmp_path_factory, picture) -> Path:
  path = tmp_path_factory.mktemp("motion") / "S.npz"
  Motion(_volume(K, WIDTH, HEIGHT), picture, FPS, T).save(path)
  return path


def test_animate_and_interact_write_pages(tmp_path, capsys, motion_file):
  photo = tmp_path / "astronaut.png"
  cv2.imwrite(str(photo), skimage.data.astronaut()[..., ::-1])
  out = tmp_path / "animated.html"
  code, printed, err = _main(capsys, "animate", photo, "-o", out, "--motion", motion_file,
                             "--magnify", 3, "--slowmo", 2)
  assert code == 0, err
  assert "a live picture" in printed
  payload = read_payload(out.read_text())
  # The picture's own crop box, 512x320 of 512x512 (the default model works at 256x160).
  assert (payload["width"], payload["height"]) == (512, 320)
  assert (payload["numModes"], payload["numFrames"], payload["fps"]) == (K - 1, T, FPS)
  assert (payload["magnify"], payload["speed"], payload["playing"]) == (3.0, 0.5, True)
  assert out.stat().st_size <= MAX_PAGE_BYTES

  poked = tmp_path / "poked.html"
  code, printed, err = _main(capsys, "interact", photo, "-o", poked, "--motion", motion_file,
                             "--poke", "256,256,10,0,2")
  assert code == 0, err
  payload = read_payload(poked.read_text())
  assert payload["playing"] is False
  [(x, y, dx, dy, frame)] = payload["pokes"]
  assert frame == 2 and dx > 0 and dy == 0
  assert sorted(p.name for p in tmp_path.iterdir()) == [  # No temporary left.
      "animated.html", "astronaut.png", "poked.html"]


@pytest.mark.parametrize("command", ["animate", "interact"])
def test_a_page_in_a_missing_folder_is_one_line(tmp_path, capsys, motion_file, command):
  out = tmp_path / "no_such_folder" / "page.html"
  code, printed, err = _main(capsys, command, "any.png", "-o", out, "--motion", motion_file)
  assert code == 2
  assert err.strip().splitlines() == [
      f"spectral-jax {command}: error: output {out}: no folder {out.parent}"]
  assert not out.parent.exists()
