"""A live picture: one self-contained HTML page that plays a picture's
motion and lets a person poke it, in any browser with WebGL2.

    page = LivePicture.make(picture, spectral, num_frames=150, fps=30,
                            metric=animator.metric(spectral, size=(W, H))[..., 0])
    page.write("flower.html")

The page (``page/live_picture.html`` and ``page/live_picture.js`` beside
this module) holds, as base64 in one JSON block: the picture (raw RGB at
the output size), the spectral volume's bins ``1 .. K-1`` (float16, at the
size of the volume it is given or, if that would not fit `MAX_PAGE_BYTES`,
at the largest whole fraction of it that does) and the splatting metric
(float16, output size: `Animator.metric`, in the model's pixels). Bin 0
is left out: it cancels in ``D(t) - D(0)`` and is no mode.

What the page shows is defined here, in NumPy terms, and the page computes
the same on the GPU (tests/test_live_picture.py compares them in Chromium):

* the displacement of every output pixel is ``Re sum_{k>=1} S_k(p) c_k``
  with ``S`` the volume upsampled bilinearly to the output size and its
  displacements scaled to output pixels (`data.pictures.fit_spectral`),
  and complex coefficients ``c_k`` that the page computes on its CPU every
  frame: ``magnify * w_k (exp(2 pi i k t / T) - 1)`` for the looping
  motion at time t (frames; ``w_k`` the inverse transform's bin weights,
  so this is ``magnify * (D(t) - D(0))``, `animation_texture`) plus
  ``magnify * q_k`` of the pokes, the modal coordinates of
  `dynamics.simulate`, stepped with the same forward Euler and sub-steps;
* a frame is the `render.splat.softmax_splat` of the picture by that
  displacement, with weights ``exp(min(metric, 30))`` from the metric of
  the (unmagnified) volume that the videos use (`Animator.metric`); a pixel
  that nothing reaches shows the still picture.

Unlike the videos of `animate`, the page does not run the learned renderer
(its feature pyramid and synthesis network): where motion uncovers what the
picture hid, the video paints it in and the page shows holes filled with
the still picture, and edges of moving things are a little rougher.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from importlib import resources
from pathlib import Path

import numpy as np

from spectral_jax.atomic import atomic_output
from spectral_jax.data.pictures import fit_spectral
from spectral_jax.inference import dynamics
from spectral_jax.motion.spectral import bin_weights

# The most a page may weigh, bytes: it is mailed and opened from disk.
MAX_PAGE_BYTES = 5_000_000
_PAGE = resources.files("spectral_jax.inference") / "page"
_PAYLOAD_MARK = "/*LIVE_PICTURE_PAYLOAD*/"
_SCRIPT_MARK = "/*LIVE_PICTURE_SCRIPT*/"


@dataclasses.dataclass(frozen=True)
class LivePicture:
  """Everything a live picture page holds.

  Attributes:
    picture: uint8 ``[H, W, 3]``, the still picture at the output size.
    modes: complex64 ``[K-1, h, w, 2]``: bins ``1 .. K-1`` of the spectral
      volume on its own ``w x h`` grid (same aspect as the picture),
      displacements in pixels of that grid.
    metric: float32 ``[H, W]`` splatting metric at the output size
      (`Animator.metric`: the renderer's, counting the model's pixels).
    num_frames: T, the clip length the volume describes (its bins are
      ``k fps / T`` Hz).
    fps: frames per second of the clip the volume describes: the looping
      motion plays at this rate and the modes ring at ``2 pi k fps / T``.
    loop_frames: the looping motion's period, frames (T, or the N a
      ``--loop`` sampling closed the motion at).
    magnify: the magnification the page starts with.
    speed: the playback speed it starts with (1: real time).
    playing: whether the looping motion plays when the page opens (a page
      for poking starts still).
    alpha, beta: Rayleigh damping of the modes (`dynamics.rayleigh_damping`).
    strength: scale of every poke's force (`dynamics.simulate`).
    pokes: ``(x, y, dx, dy, frame)`` pokes in output pixels that the page
      applies when it opens and again on "replay".
    title: the page's title.
  """
  picture: np.ndarray
  modes: np.ndarray
  metric: np.ndarray
  num_frames: int
  fps: float
  loop_frames: float
  magnify: float = 1.0
  speed: float = 1.0
  playing: bool = True
  alpha: float = 0.4
  beta: float = 0.08
  strength: float = 1.0
  pokes: tuple = ()
  title: str = "live picture"

  @classmethod
  def make(cls, picture: np.ndarray, spectral: np.ndarray, *, num_frames: int, fps: float,
           metric: np.ndarray, max_bytes: int = MAX_PAGE_BYTES, **fields) -> "LivePicture":
    """The page of ``picture`` uint8 ``[H, W, 3]`` moved by ``spectral``
    ``[K, h, w, 2]`` complex (pixels of its ``w x h`` grid, unmagnified),
    over a clip of ``num_frames`` T at ``fps``, splatted with ``metric``
    ``[H, W]`` float32.

    The volume keeps its grid if the page then fits ``max_bytes``, or
    shrinks (area averaging, `fit_spectral`) by the smallest whole factor
    of its size that makes it fit.

    Raises:
      ValueError: K < 2; a grid of another aspect than the picture's; no
        grid small enough fits.
    """
    spectral = np.asarray(spectral)
    height, width = picture.shape[:2]
    num_freqs, grid_height, grid_width = spectral.shape[:3]
    if num_freqs < 2:
      raise ValueError(f"a spectral volume of K={num_freqs} bins has no motion (bin 0 only)")
    if np.shape(metric) != (height, width):
      raise ValueError(f"the metric is {np.shape(metric)}, the picture {(height, width)}")
    if grid_width * height != grid_height * width:
      raise ValueError(f"the spectral volume's {grid_width}x{grid_height} grid is not of the "
                       f"picture's {width}x{height} shape")
    for factor in range(1, min(grid_width, grid_height) + 1):
      if grid_width % factor or grid_height % factor:
        continue
      grid = (spectral if factor == 1 else
              fit_spectral(spectral, grid_width // factor, grid_height // factor))
      page = cls(picture=np.ascontiguousarray(picture, np.uint8),
                 modes=np.asarray(grid[1:], np.complex64),
                 metric=np.asarray(metric, np.float32),
                 num_frames=num_frames, fps=fps, **{"loop_frames": num_frames, **fields})
      if len(page.html()) <= max_bytes:
        return page
    raise ValueError(f"a page of {num_freqs} bins does not fit {max_bytes / 1e6:g} MB at any "
                     f"grid smaller than {grid_width}x{grid_height}")

  def payload(self) -> dict:
    """The page's JSON payload: settings, and arrays as base64 of their
    little-endian bytes (float16 for ``modes``' ``(Re dx, Re dy, Im dx, Im
    dy)`` channels ``[K-1, h, w, 4]`` and for the metric)."""
    modes = np.concatenate([self.modes.real, self.modes.imag], axis=-1)
    omega = dynamics.modal_frequencies(len(self.modes) + 1, self.num_frames, self.fps)[1:]
    gamma = dynamics.rayleigh_damping(omega, self.alpha, self.beta)
    return {
        "title": self.title,
        "width": self.picture.shape[1], "height": self.picture.shape[0],
        "gridWidth": self.modes.shape[2], "gridHeight": self.modes.shape[1],
        "numModes": len(self.modes), "numFrames": self.num_frames, "fps": self.fps,
        "loopFrames": self.loop_frames, "magnify": self.magnify, "speed": self.speed,
        "playing": self.playing, "strength": self.strength,
        "binWeights": bin_weights(len(self.modes) + 1, self.num_frames)[1:].astype(float).tolist(),
        "omega": omega.tolist(), "gamma": gamma.tolist(),
        "substeps": dynamics.substeps_per_frame(omega, gamma, self.fps),
        "pokes": [list(map(float, poke)) for poke in self.pokes],
        "picture": _base64(self.picture),
        "modes": _base64(modes.astype("<f2")),
        "metric": _base64(self.metric.astype("<f2")),
    }

  def html(self) -> str:
    """The page: the template with the script and the payload inlined."""
    template = (_PAGE / "live_picture.html").read_text(encoding="utf-8")
    script = (_PAGE / "live_picture.js").read_text(encoding="utf-8")
    # "</" inside a <script> element would end it early.
    payload = json.dumps(self.payload(), separators=(",", ":")).replace("</", "<\\/")
    return (template.replace(_SCRIPT_MARK, script).replace(_PAYLOAD_MARK, payload)
            .replace("<title></title>", f"<title>{_escape(self.title)}</title>"))

  def write(self, path) -> Path:
    """Writes the page to ``path`` atomically; returns it."""
    path = Path(path)
    with atomic_output(path) as tmp:
      tmp.write_text(self.html(), encoding="utf-8")
    return path

  def spectral(self) -> np.ndarray:
    """The volume the page draws from, ``[K-1, H, W, 2]`` complex64 in
    output pixels: what it holds (float16), upsampled as its GPU does."""
    stored = self.modes.astype(np.complex64)
    stored = (stored.real.astype(np.float16).astype(np.float32)
              + 1j * stored.imag.astype(np.float16).astype(np.float32))
    height, width = self.picture.shape[:2]
    return fit_spectral(stored.astype(np.complex64), width, height)

  def stored_metric(self) -> np.ndarray:
    """The metric ``[H, W]`` float32 as the page holds it (float16)."""
    return self.metric.astype(np.float16).astype(np.float32)

  def loop_texture(self, time: float, magnify: float | None = None) -> np.ndarray:
    """``magnify * (D(t) - D(0))`` ``[H, W, 2]`` float32 output pixels of
    the page's looping motion at ``time`` (frames)."""
    magnify = self.magnify if magnify is None else magnify
    phase = 2 * np.pi * np.arange(1, len(self.modes) + 1) * time / self.num_frames
    weights = bin_weights(len(self.modes) + 1, self.num_frames)[1:]
    return displacement(self.spectral(), magnify * weights * (np.exp(1j * phase) - 1))

  def reference_frame(self, texture: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the page draws for ``texture`` ``[H, W, 2]`` px, by the
    project's `softmax_splat` (float32): the frame ``[H, W, 3]`` float32
    in [0, 255], and the coverage ``[H, W]`` (the sum of the bilinear
    weights of the pixels that land there)."""
    import jax.numpy as jnp

    from spectral_jax.render.splat import softmax_splat
    picture = jnp.asarray(self.picture[None], jnp.float32)
    flow = jnp.asarray(texture[None], jnp.float32)
    metric = jnp.asarray(self.stored_metric()[None, ..., None])
    frame = softmax_splat(picture, flow, metric)[0]
    coverage = softmax_splat(jnp.ones_like(picture[..., :1]), flow, mode="sum")[0, ..., 0]
    return np.asarray(frame), np.asarray(coverage)


def displacement(spectral: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
  """``Re sum_k S_k c_k`` ``[H, W, 2]`` float32 of modes ``spectral``
  ``[M, H, W, 2]`` complex and coefficients ``[M]`` complex: what the page
  draws (float64 here)."""
  return np.einsum("k,khwc->hwc", np.asarray(coefficients, np.complex128),
                   spectral.astype(np.complex128)).real.astype(np.float32)


def read_payload(html: str) -> dict:
  """The payload of a page `LivePicture.html` wrote, arrays decoded:
  ``picture`` uint8 ``[H, W, 3]``, ``modes`` float32 ``[K-1, h, w, 4]``,
  ``metric`` float32 ``[H, W]``."""
  start = html.index('<script id="payload" type="application/json">')
  start = html.index(">", start) + 1
  payload = json.loads(html[start:html.index("</script>", start)].replace("<\\/", "</"))
  height, width = payload["height"], payload["width"]
  grid = (payload["numModes"], payload["gridHeight"], payload["gridWidth"], 4)
  payload["picture"] = _array(payload["picture"], np.uint8, (height, width, 3))
  payload["modes"] = _array(payload["modes"], "<f2", grid).astype(np.float32)
  payload["metric"] = _array(payload["metric"], "<f2", (height, width)).astype(np.float32)
  return payload


def _base64(array: np.ndarray) -> str:
  return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def _array(text: str, dtype, shape) -> np.ndarray:
  return np.frombuffer(base64.b64decode(text), dtype=dtype).reshape(shape)


def _escape(text: str) -> str:
  return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
