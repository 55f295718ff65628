"""Random-access sources of training examples: a prepared TFDS data set, or
synthetic scenes made on the fly (painted plants over a photo, or the
vegetation of real photos swaying: `photo_scenes`).

Both give examples with the data set's schema (`dataset.features`), so
`pipeline.ShardedBatches` shards, shuffles and resumes either one the same
way. Synthetic example ``i`` of a split is a pure function of the seed and
``i``; it needs no preparation and no disk, which is what the ``tiny``
training configs use.
"""

from __future__ import annotations

import numpy as np

from spectral_jax.data import dataset, photo_scenes, synthetic
from spectral_jax.motion.normalize import NormalizationStats, PercentileAccumulator
from spectral_jax.motion.spectral import to_real_layout

# Disjoint seed ranges keep the synthetic splits apart.
_SPLIT_SEED_OFFSET = {"train": 0, "test": 1 << 30}


class SyntheticExamples:
  """``num_examples`` synthetic scenes as data-set examples.

  Args:
    split: "train" or "test" (disjoint scenes).
    num_examples: the source's length.
    seed: shifts every scene's seed.
    num_frames, fps, height, width, num_freqs: the clip (T, frames/s,
      pixels, K).
    num_render_frames: frames (with displacements) per example for renderer
      training; 0 skips rendering, which makes an example ~10x cheaper.
    photos: empty: `synthetic.make_scene` scenes; a folder: `photo_scenes`
      scenes of its pictures, the split's own (`photo_scenes.split_photos`:
      test photos are never trained on), example ``i`` of photo ``i mod n``.
    scene: further arguments of the scene maker.
  """

  def __init__(self, split: str, *, num_examples: int, seed: int = 0, num_frames: int,
               fps: float, height: int, width: int, num_freqs: int,
               num_render_frames: int = 0, photos: str = "", **scene):
    if split not in _SPLIT_SEED_OFFSET:
      raise ValueError(f"unknown split {split!r}: 'train' or 'test'")
    self._photos = (photo_scenes.split_photos(photo_scenes.list_photos(photos))[split]
                    if photos else [])
    self._first_seed = _SPLIT_SEED_OFFSET[split] + seed * num_examples
    self._length = num_examples
    self._scene = dict(num_frames=num_frames, fps=fps, height=height, width=width,
                       num_freqs=num_freqs, **scene)
    self._num_render_frames = num_render_frames

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < self._length:
      raise IndexError(index)
    seed = self._first_seed + int(index)
    if self._photos:
      photo = photo_scenes.load_photo(self._photos[index % len(self._photos)],
                                      self._scene["height"], self._scene["width"])
      scene = photo_scenes.make_scene(photo, seed, render=False, **self._scene)
    else:
      scene = synthetic.make_scene(seed, render=False, **self._scene)
    image = scene.frames[0]
    example = {
        "image": image,
        "spectral_volume": to_real_layout(scene.spectral).astype(np.float16),
    }
    if self._num_render_frames:
      rng = np.random.default_rng(seed)
      times = np.sort(rng.choice(np.arange(1, self._scene["num_frames"]),
                                 self._num_render_frames, replace=False)).astype(np.int32)
      example["frames"] = np.stack([synthetic.render_frame(scene.layers, t) for t in times])
      example["frame_times"] = times
      example["displacements"] = scene.disp_px[times].astype(np.float16)
    return example


def open_source(data_config, split: str):
  """The ``split`` source the ``data`` config block names: the prepared data
  set in ``data.dir``, or synthetic scenes when it is empty (of the photos in
  ``data.synthetic.photos`` when that is set)."""
  if data_config.dir:
    _check_prepared_clips(data_config)  # Says if it is not prepared.
    return dataset.open_split(data_config.dir, split)
  synth = data_config.synthetic
  return SyntheticExamples(
      split, num_examples=synth.num_train if split == "train" else synth.num_test,
      seed=synth.seed, num_frames=synth.num_frames, fps=synth.fps,
      height=data_config.height, width=data_config.width, num_freqs=data_config.num_freqs,
      num_render_frames=synth.num_render_frames, max_amplitude_px=synth.max_amplitude_px,
      photos=synth.get("photos", ""))


def _check_prepared_clips(data_config) -> None:
  """Raises ValueError unless the prepared data set in ``data.dir`` holds
  clips of the config's size and K (FileNotFoundError if it holds no
  prepared data set)."""
  dataset.check_prepared(data_config.dir)
  clip = dataset.load_clip_config(data_config.dir)
  wanted = (data_config.width, data_config.height, data_config.num_freqs)
  if (clip.width, clip.height, clip.num_freqs) != wanted:
    raise ValueError(
        f"{data_config.dir} holds {clip.width}x{clip.height} clips with K={clip.num_freqs}; "
        f"the config asks for {wanted[0]}x{wanted[1]}, K={wanted[2]} (set "
        "--config.data.width/height/num_freqs or prepare another data set)")


def clip_timing(data_config) -> tuple[int, float]:
  """``(T, fps)`` of the clips whose spectral volumes the ``data`` config
  block's source holds: a motion texture over T frames loops seamlessly, and
  bin k oscillates at ``k * fps / T`` Hz."""
  if data_config.dir:
    clip = dataset.load_clip_config(data_config.dir)
    return clip.num_frames, float(clip.fps)
  return data_config.synthetic.num_frames, float(data_config.synthetic.fps)


def render_frame_count(data_config) -> int:
  """Frames (with their displacements) per example of the ``data`` config
  block's source, for the renderer (0: none kept)."""
  if data_config.dir:
    return dataset.load_clip_config(data_config.dir).num_render_frames
  return data_config.synthetic.num_render_frames


def normalization(data_config) -> NormalizationStats:
  """The per-frequency scales of the training data, for ``data.percentile``:
  saved beside a prepared data set (recomputed from its saved histogram if
  it was prepared with another percentile), or, for synthetic scenes,
  measured streaming over the first ``synthetic.stats_examples`` training
  scenes. ``data.normalization = "image_size"`` gives the paper's baseline
  instead (plain scaling).

  Raises:
    ValueError: the prepared data set's clips are not the config's (size,
      K), its scales were measured on other clips than it holds, or it kept
      no histogram to take another percentile from.
  """
  if data_config.get("normalization", "adaptive") == "image_size":
    return NormalizationStats.image_size(data_config.num_freqs, data_config.width,
                                         data_config.height)
  if data_config.dir:
    _check_prepared_clips(data_config)
    return dataset.load_normalization(data_config.dir, data_config.get("percentile"))
  source = open_source(data_config, "train")
  accumulator = PercentileAccumulator.zeros(data_config.num_freqs)
  for index in range(min(len(source), data_config.synthetic.stats_examples)):
    accumulator.update(source[index]["spectral_volume"])
  return NormalizationStats.from_accumulator(accumulator, data_config.percentile)
