"""Video reading, resampling and H.264 writing."""

import numpy as np
import pytest

from spectral_jax.data import video


def _ramp_frames(num_frames, height=48, width=64):
  """Frames whose brightness encodes their index, so resampling is visible."""
  frames = np.zeros((num_frames, height, width, 3), np.uint8)
  for t in range(num_frames):
    frames[t] = 20 + 8 * t
  frames[:, :, : width // 4, 0] = 255  # A red band to check channel order.
  return frames


def test_write_then_read_round_trip(tmp_path):
  frames = _ramp_frames(20)
  path = tmp_path / "clip.mp4"
  video.write_video(path, frames, fps=10)
  assert path.read_bytes()[4:8] == b"ftyp"
  assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]
  read = np.stack(list(video.iter_frames(path, fps=10, size=(64, 48))))
  assert read.shape == frames.shape
  assert np.abs(read.astype(int) - frames).mean() < 3
  assert read[0, 24, 5, 0] > 200 and read[0, 24, 5, 1] < 60


def test_resamples_frame_rate_and_crops_to_aspect(tmp_path):
  frames = _ramp_frames(20, height=48, width=96)
  path = tmp_path / "wide.mp4"
  video.write_video(path, frames, fps=20)
  # Half the frame rate keeps every other frame.
  read = np.stack(list(video.iter_frames(path, fps=10, size=(32, 32))))
  assert read.shape == (10, 32, 32, 3)
  levels = read[:, 16, 16, 1].astype(int)
  np.testing.assert_allclose(levels, 20 + 8 * np.arange(0, 20, 2), atol=4)
  # The 2:1 picture is centre-cropped to 1:1: the red band (left quarter)
  # falls outside.
  assert read[0, :, :, 0].max() < 200


def test_read_clip_errors(tmp_path):
  path = tmp_path / "short.mp4"
  video.write_video(path, _ramp_frames(5), fps=10)
  np.testing.assert_equal(video.read_clip(path, num_frames=3, fps=10, size=(64, 48),
                                          start_frame=2).shape, (3, 48, 64, 3))
  with pytest.raises(video.VideoError, match="5 frames at 10 fps, fewer than the 8"):
    video.read_clip(path, num_frames=8, fps=10, size=(64, 48))
  with pytest.raises(video.VideoError, match="no such file"):
    video.read_clip(tmp_path / "missing.mp4", num_frames=2, fps=10, size=(64, 48))
  garbage = tmp_path / "garbage.mp4"
  garbage.write_bytes(b"not a video at all" * 100)
  with pytest.raises(video.VideoError, match="not a readable video"):
    video.read_clip(garbage, num_frames=2, fps=10, size=(64, 48))


def test_gif_and_bad_frames(tmp_path):
  video.write_video(tmp_path / "a.gif", _ramp_frames(3), fps=5)
  assert (tmp_path / "a.gif").read_bytes()[:3] == b"GIF"
  with pytest.raises(ValueError, match="uint8"):
    video.write_video(tmp_path / "b.mp4", np.zeros((3, 8, 8, 3), np.float32), fps=5)
  assert not (tmp_path / "b.mp4").exists()


@pytest.mark.parametrize("text, size", [("256x160", (256, 160)), (" 64X48 ", (64, 48))])
def test_parse_size(text, size):
  assert video.parse_size(text) == size


@pytest.mark.parametrize("text", ["256", "256x", "axb", "255x160", "4x4", "-2x8"])
def test_parse_size_rejects(text):
  with pytest.raises(ValueError, match="size"):
    video.parse_size(text)


def test_list_videos(tmp_path):
  (tmp_path / "sub").mkdir()
  for name in ["b.MP4", "sub/a.webm", "notes.txt", "c.avi"]:
    (tmp_path / name).write_bytes(b"x")
  assert [p.relative_to(tmp_path).as_posix() for p in video.list_videos(tmp_path)] == [
      "b.MP4", "c.avi", "sub/a.webm"]
  with pytest.raises(video.VideoError, match="no such directory"):
    video.list_videos(tmp_path / "nope")


def test_batches_stream_into_the_same_video_and_a_failed_one_leaves_none(tmp_path):
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (11, 32, 48, 3)).astype(np.uint8)
  assert video.write_video(tmp_path / "whole.mp4", frames, 30) == 11
  batches = (frames[start:start + 4] for start in range(0, 11, 4))
  assert video.write_video(tmp_path / "streamed.mp4", batches, 30) == 11
  assert (tmp_path / "whole.mp4").read_bytes() == (tmp_path / "streamed.mp4").read_bytes()

  def failing():
    yield frames[:4]
    raise RuntimeError("the renderer failed")

  with pytest.raises(RuntimeError, match="renderer failed"):
    video.write_video(tmp_path / "failed.mp4", failing(), 30)
  with pytest.raises(ValueError, match="frames of 24x16 after frames of 48x32"):
    video.write_video(tmp_path / "sizes.mp4", iter([frames[:2], frames[:2, :16, :24]]), 30)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["streamed.mp4", "whole.mp4"]
