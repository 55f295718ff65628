"""The paper's data settings, and the clips of the smaller and larger
variants: the one place each number is written.

Every data default reads them from here: what a clip is and which clips are
kept (`clips.ClipConfig`), a preparation run (`prepare.PrepareOptions`), the
synthetic scenes (`synthetic.make_scene`, `photo_scenes.make_scene`), the
`motion`, `synth` and `prepare` commands (`spectral_jax.cli`) and the
training configs' ``data`` block (`spectral_jax.config_base`).
`configs/data.py`, the data config of ``spectral-jax prepare --config``,
builds its variants on `prepare_settings`.

They live in the package, not in `configs/`: only ``spectral_jax`` is
installed, so the library cannot import `configs/` at run time. How
displacement is measured (the DIS preset, forward-backward checking) is
`motion.flow.FlowConfig`'s own default.
"""

from __future__ import annotations

# A clip: T frames at this rate (5 s), centre-cropped and resized to
# WIDTH x HEIGHT pixels, and the K lowest temporal frequencies of its motion
# (the power spectrum of natural motion falls off fast with frequency).
NUM_FRAMES = 150
FPS = 30.0
WIDTH = 256
HEIGHT = 160
NUM_FREQS = 16

# Frames between the starts of consecutive clips of a video: a long video
# gives many overlapping clips.
STRIDE = 10
# Frames (with their displacement) kept per prepared clip for training the
# renderer.
NUM_RENDER_FRAMES = 4

# Which clips are kept (`clips.windows`, `clips.make_example`).
# Static: mean trajectory magnitude over the pixels below this, px.
STATIC_PX = 1.0
# Camera motion: more than CAMERA_FRACTION of the pixels move over
# CAMERA_PX on average.
CAMERA_PX = 1.0
CAMERA_FRACTION = 0.95
# A scene cut: 1 - correlation of consecutive frames' colour histograms
# above this.
SCENE_CUT = 0.5
# With forward-backward flow checking: more than this fraction of
# inconsistent pixel-frames.
MAX_INCONSISTENT = 0.3

# Normalization: the scale of frequency k is this percentile of |x| over the
# training clips (97 in the first versions of the paper, 95 in the CVPR one).
PERCENTILE = 97.0
# Share of the videos held out as the test split.
TEST_FRACTION = 0.05
# Extraction processes of `spectral-jax prepare`.
WORKERS = 2

# Synthetic scenes: no pixel moves further than this from frame 0, px.
MAX_AMPLITUDE_PX = 4.0

# The clips of the training variants (`config_base.VARIANTS`) where they
# differ from the paper's; `configs/data.py` prepares data sets of the same.
VARIANT_CLIPS = {
    # Trains on a laptop CPU in minutes.
    "tiny": {"num_frames": 32, "width": 64, "height": 48, "num_freqs": 8},
    # The default model's motion, trained on a 2-core CPU; `animate`
    # upsamples it to the renderer's size.
    "demo": {"width": 128, "height": 80},
    "paper": {},
    # High-resolution fine-tuning of a `paper` run.
    "hires": {"width": 512, "height": 288},
}


def clip(variant: str = "paper") -> dict:
  """``{num_frames, fps, width, height, num_freqs}`` of ``variant``'s clips
  (`VARIANT_CLIPS`; T, frames/s, pixels, K)."""
  if variant not in VARIANT_CLIPS:
    raise ValueError(f"unknown variant {variant!r}; one of {sorted(VARIANT_CLIPS)}")
  return {"num_frames": NUM_FRAMES, "fps": FPS, "width": WIDTH, "height": HEIGHT,
          "num_freqs": NUM_FREQS, **VARIANT_CLIPS[variant]}


def prepare_settings(variant: str = "paper") -> dict:
  """Every setting of ``spectral-jax prepare``, named as its options
  (``--render-frames`` is ``render_frames``), for ``variant``'s clips: what
  a data config (`configs/data.py`) holds."""
  from spectral_jax.motion.flow import FlowConfig  # OpenCV: only when asked.
  shape, flow = clip(variant), FlowConfig()
  return {
      "frames": shape["num_frames"], "fps": shape["fps"],
      "size": f"{shape['width']}x{shape['height']}", "K": shape["num_freqs"],
      "preset": flow.preset, "fb_check": flow.forward_backward,
      "stride": STRIDE, "render_frames": NUM_RENDER_FRAMES,
      "static_px": STATIC_PX, "camera_px": CAMERA_PX, "camera_fraction": CAMERA_FRACTION,
      "scene_cut": SCENE_CUT,
      "percentile": PERCENTILE, "test_fraction": TEST_FRACTION,
      "workers": WORKERS, "keep_cache": False,
  }
