"""Interactive dynamics: poking a picture whose spectral volume is a modal basis.

Following Generative Image Dynamics (Li et al., CVPR 2024), after Davis et
al.'s image-space modal bases, each bin ``k >= 1`` of a spectral volume ``S``
``[K, H, W, 2]`` (complex, pixels) is read as a vibration mode: angular
frequency ``omega_k = 2 pi k fps / T`` rad/s and complex mode shape ``S_k``
``[H, W, 2]``. Bin 0 (the mean) is no mode. Every mode is a unit-mass damped
oscillator with complex coordinate ``q_k`` (dimensionless)::

  q_k'' + gamma_k q_k' + omega_k^2 q_k = f_k(t),   D(t) = Re sum_{k>=1} S_k q_k(t)

with Rayleigh damping ``gamma_k = alpha + beta omega_k^2`` (1/s). A poke is an
impulse ``f_k`` on the modes; the modes are stepped with explicit (forward)
Euler in float64, several sub-steps per output frame, and ``D`` is sampled
once per frame. Pure NumPy: no JAX.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

# A poked pixel whose modal amplitude is below this fraction of the picture's
# largest has no mode to push: the normalisation would divide by ~0.
_MIN_RELATIVE_AMPLITUDE = 1e-6


@dataclasses.dataclass(frozen=True)
class Poke:
  """An impulsive push on the picture.

  Attributes:
    x: column of the poked point in the model picture's pixels (pixel centres
      at integers, 0 <= x <= W - 1); may be fractional.
    y: row of the poked point, 0 <= y <= H - 1; may be fractional.
    dx: push along x, pixels.
    dy: push along y, pixels.
    frame: output frame (units of 1/fps s) at which the push happens; may be
      fractional.
  """
  x: float
  y: float
  dx: float
  dy: float
  frame: float = 0.0


@dataclasses.dataclass(frozen=True)
class ModalResponse:
  """The picture's motion after a sequence of pokes.

  Attributes:
    displacement: float32 ``[N, H, W, 2]`` ``(dx, dy)`` pixels at output frames
      ``0..N-1``.
    modal_coordinates: complex128 ``[N, K-1]`` ``q_k`` of modes ``k = 1..K-1``
      at each output frame (dimensionless).
    modal_velocities: complex128 ``[N, K-1]`` ``q_k'``, 1/s.
    omega: float64 ``[K-1]`` mode angular frequencies, rad/s.
    gamma: float64 ``[K-1]`` mode damping rates, 1/s.
    substeps: Euler sub-steps per output frame.
  """
  displacement: np.ndarray
  modal_coordinates: np.ndarray
  modal_velocities: np.ndarray
  omega: np.ndarray
  gamma: np.ndarray
  substeps: int

  def energy(self) -> np.ndarray:
    """``[N]`` float64 mechanical energy per output frame, 1/s^2 (unit mass):
    ``E = sum_k (|q_k'|^2 + omega_k^2 |q_k|^2) / 2``."""
    return 0.5 * np.sum(np.abs(self.modal_velocities) ** 2
                        + self.omega ** 2 * np.abs(self.modal_coordinates) ** 2, axis=-1)


def modal_frequencies(num_freqs: int, num_frames: int, fps: float) -> np.ndarray:
  """``[K]`` float64 angular frequency ``2 pi k fps / T`` of each bin, rad/s
  (0 for bin 0)."""
  return 2.0 * np.pi * np.arange(num_freqs, dtype=np.float64) * fps / num_frames


def rayleigh_damping(omega, alpha: float, beta: float) -> np.ndarray:
  """Damping rate ``gamma = alpha + beta omega^2`` (1/s) for angular
  frequencies ``omega`` (rad/s), same shape. The paper uses alpha = 0.4,
  beta = 0.08 with unit mass."""
  return alpha + beta * np.asarray(omega, np.float64) ** 2


def euler_step_bound(omega, gamma) -> float:
  """Largest forward-Euler step (seconds) that is stable for every mode.

  ``q'' + gamma q' + omega^2 q = f`` is the first-order system ``z' = A z``,
  ``z = (q, q')``, ``A = [[0, 1], [-omega^2, -gamma]]``, with eigenvalues
  ``lambda = -gamma/2 +- sqrt(gamma^2/4 - omega^2)``. Forward Euler multiplies
  each eigen-component by ``1 + h lambda`` per step; ``|1 + h lambda| < 1``
  is ``h < -2 Re(lambda) / |lambda|^2``. Underdamped (``gamma < 2 omega``):
  ``|lambda|^2 = omega^2``, so ``h < gamma / omega^2``. Overdamped: both
  eigenvalues are real and the faster one binds, ``h < 2 / |lambda_fast|``
  with ``|lambda_fast| = gamma/2 + sqrt(gamma^2/4 - omega^2)`` (the two
  formulas agree, ``4 / gamma``, at critical damping).

  Args:
    omega: ``[M]`` angular frequencies of the modes (k >= 1), rad/s, > 0.
    gamma: ``[M]`` their damping rates, 1/s.
  Returns:
    The bound, minimum over the modes, seconds (0 for an undamped mode).
  """
  omega = np.asarray(omega, np.float64)
  gamma = np.asarray(gamma, np.float64)
  discriminant = gamma ** 2 / 4 - omega ** 2
  fastest = gamma / 2 + np.sqrt(np.maximum(discriminant, 0.0))
  # Overdamped, fastest >= gamma/2 >= omega, so the max only keeps the
  # unused underdamped entries finite when gamma = 0.
  bound = np.where(discriminant < 0, gamma / omega ** 2, 2.0 / np.maximum(fastest, omega))
  return float(np.min(bound))


def frame_energy_step_bound(gamma, fps: float) -> float:
  """Largest Euler step (seconds) for which energy sampled once per output
  frame cannot rise, to leading order in ``omega / fps``: ``min gamma / (6 fps^2)``.

  Stability is not enough: one Euler step changes ``E = (|v|^2 + omega^2 |q|^2)/2``
  by ``-h gamma |v|^2 + h^2 (|gamma v + omega^2 q|^2 + omega^2 |v|^2) / 2``,
  a gain of ``h^2 omega^4 |q|^2 / 2`` at a turning point (``v = 0``). Over a
  frame ``Delta = 1/fps`` (``Delta / h`` steps) centred on a turning point that
  is ``Delta h omega^4 |q|^2 / 2``, while the true loss ``int gamma |v|^2``
  with ``v ~ -omega^2 q t`` is ``gamma omega^4 |q|^2 Delta^3 / 12``: the frame
  loses energy only if ``h < gamma Delta^2 / 6``. The slowest-damped mode
  binds, and with Rayleigh damping that is the lowest one. Against the exact
  per-mode condition (the Euler map over a frame does not lengthen any state
  in the energy norm) this is within 10% for fps 10-60, T 16-300, all K.

  Args:
    gamma: ``[M]`` damping rates of the modes, 1/s.
    fps: output frames per second.
  """
  return float(np.min(np.asarray(gamma, np.float64))) / (6.0 * fps ** 2)


def substeps_per_frame(omega, gamma, fps: float, safety: float = 0.5) -> int:
  """Forward-Euler sub-steps per output frame.

  The step ``h = 1 / (fps n)`` is at most ``safety`` times both the stability
  bound (`euler_step_bound`) and the per-frame energy bound
  (`frame_energy_step_bound`). The energy bound is the binding one for the
  paper's damping: at fps 30 the stability bound alone allows 1 sub-step
  (T = 150, K = 16; bound 81 ms) or 3 (T = 32, K = 8; 16 ms), but then the
  lowest mode gains energy every frame near its turning points. The energy
  bound asks for 342 and 57 (the exact per-mode minimum is 343 and 57);
  ``safety`` 0.5 doubles that to 684 and 114, so frame energy still falls
  where the leading-order bound is up to 10% optimistic, by a margin far
  above float rounding.

  Args:
    omega: ``[M]`` angular frequencies of the modes (k >= 1), rad/s.
    gamma: ``[M]`` their damping rates, 1/s; all > 0.
    fps: output frames per second.
    safety: fraction of the tighter bound the step may use, in (0, 1].
  """
  if np.min(gamma) <= 0:
    raise ValueError("forward Euler needs every mode damped (alpha + beta * omega^2 > 0), "
                     f"got gamma min {np.min(gamma):.3g}")
  step = safety * min(euler_step_bound(omega, gamma), frame_energy_step_bound(gamma, fps))
  return max(1, math.ceil(1.0 / (fps * step)))


def euler_step(q, v, omega, gamma, h: float):
  """One forward Euler step of ``q'' + gamma q' + omega^2 q = 0``.

  Both updates use the old ``(q, v)`` (not symplectic Euler, which would use
  the new ``q`` or ``v``): that is the scheme `euler_step_bound` is for.

  Args:
    q: ``[M]`` complex modal coordinates.
    v: ``[M]`` complex modal velocities, 1/s.
    omega: ``[M]`` angular frequencies, rad/s.
    gamma: ``[M]`` damping rates, 1/s.
    h: step, seconds.
  Returns:
    ``(q, v)`` after the step.
  """
  return q + h * v, v - h * (gamma * v + omega ** 2 * q)


def _bilinear(image, x: float, y: float):
  """``image`` ``[H, W, ...]`` bilinearly interpolated at column x, row y, in
  complex128 (``[...]``)."""
  height, width = image.shape[:2]
  # The top-left corner stays one short of the last row/column so that x =
  # W - 1 is weight 1 on the last column (and a 1-pixel-wide axis still works).
  x0 = min(int(math.floor(x)), max(width - 2, 0))
  y0 = min(int(math.floor(y)), max(height - 2, 0))
  x1, y1 = min(x0 + 1, width - 1), min(y0 + 1, height - 1)
  fx, fy = x - x0, y - y0
  patch = np.asarray(image[[y0, y1]][:, [x0, x1]], np.complex128)  # [2, 2, ...]
  return np.einsum("i,j,ij...->...", [1 - fy, fy], [1 - fx, fx], patch)


def _modal_impulse(modes, omega, poke: Poke, peak_amplitude: float):
  """``[K-1]`` complex velocity kick (1/s) of one unit-strength poke.

  ``f_k = conj(S_k(p)) . d``: the poked pixel then moves as
  ``D(p) ~ sum_k |S_k(p)^H d|^2 sin(omega_k t) / omega_k``, first along d.
  ``c = 1 / sum_k (|S_k(p)|^2 / omega_k)`` scales it so that, were all modes
  to peak together without damping, the poked pixel would move by at most
  |d| pixels along d, exactly |d| where every mode shape at p points along d.
  """
  shape = _bilinear(modes.transpose(1, 2, 0, 3), poke.x, poke.y)  # [K-1, 2]
  amplitude = float(np.sqrt(np.sum(np.abs(shape) ** 2)))
  if amplitude <= _MIN_RELATIVE_AMPLITUDE * peak_amplitude:
    raise ValueError(f"nothing moves at the poked pixel of {poke}: its modal amplitude "
                     f"{amplitude:.3g} px is ~0 (picture's largest {peak_amplitude:.3g} px)")
  force = np.conj(shape) @ np.array([poke.dx, poke.dy], np.float64)
  return force / np.sum(np.sum(np.abs(shape) ** 2, axis=-1) / omega)


def simulate(spectral, pokes, *, num_output_frames: int, fps: float, num_frames: int,
             alpha: float = 0.4, beta: float = 0.08, strength: float = 1.0,
             substeps: int | None = None) -> ModalResponse:
  """The picture's response to pokes, with its spectral volume as modal basis.

  Modes start at rest, so ``D = 0`` up to the first poke. Each poke adds
  ``strength`` times its `_modal_impulse` to the modal velocities at the
  Euler sub-step nearest its time; pokes superpose linearly, and pokes after
  the last output frame have no effect.

  Args:
    spectral: ``[K, H, W, 2]`` complex spectral volume, pixels (K >= 2).
    pokes: sequence of `Poke`, in the same H x W pixels.
    num_output_frames: N >= 1.
    fps: output frames per second, also the frame rate of the clip the
      spectral volume describes (it sets ``omega_k``).
    num_frames: T, the clip length the spectral volume was computed over.
    alpha: Rayleigh damping constant term, 1/s, >= 0.
    beta: Rayleigh damping quadratic term, s, >= 0.
    strength: scale of every poke.
    substeps: Euler sub-steps per output frame (the step must be below
      `euler_step_bound`); default `substeps_per_frame`.
  """
  spectral = np.asarray(spectral)
  if spectral.ndim != 4 or spectral.shape[-1] != 2:
    raise ValueError(f"spectral must be [K, H, W, 2], got shape {spectral.shape}")
  num_freqs, height, width = spectral.shape[:3]
  if not 2 <= num_freqs <= num_frames // 2 + 1:
    raise ValueError(f"need K in [2, T//2+1] = [2, {num_frames // 2 + 1}] (bin 0 is no "
                     f"mode), got K={num_freqs}")
  if num_output_frames < 1:
    raise ValueError(f"num_output_frames must be >= 1, got {num_output_frames}")
  if fps <= 0:
    raise ValueError(f"fps must be > 0, got {fps}")
  if alpha < 0 or beta < 0:
    raise ValueError(f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
  for poke in pokes:
    if not (0 <= poke.x <= width - 1 and 0 <= poke.y <= height - 1
            and math.isfinite(poke.frame)):
      raise ValueError(f"{poke} is outside the {width}x{height} picture (x in "
                       f"[0, {width - 1}], y in [0, {height - 1}], finite frame)")

  omega = modal_frequencies(num_freqs, num_frames, fps)[1:]
  gamma = rayleigh_damping(omega, alpha, beta)
  if substeps is None:
    substeps = substeps_per_frame(omega, gamma, fps)
  elif substeps < 1 or 1.0 / (fps * substeps) >= euler_step_bound(omega, gamma):
    # Beyond the bound the motion grows without limit and overflows.
    raise ValueError(f"{substeps} substeps per frame make forward Euler unstable; "
                     f"need 1/(fps * substeps) < {euler_step_bound(omega, gamma):.3g} s")
  step = 1.0 / (fps * substeps)
  modes = spectral[1:]
  peak_amplitude = float(np.sqrt(np.max(np.sum(np.abs(modes) ** 2, axis=(0, 3)))))
  kicks = {}  # Sub-step index (0 = frame 0) -> summed velocity kick [K-1].
  for poke in pokes:
    index = round(poke.frame * substeps)
    kick = strength * _modal_impulse(modes, omega, poke, peak_amplitude)
    kicks[index] = kicks.get(index, 0) + kick

  last = (num_output_frames - 1) * substeps
  q = np.zeros(num_freqs - 1, np.complex128)
  v = np.zeros(num_freqs - 1, np.complex128)
  coords = np.zeros((num_output_frames, num_freqs - 1), np.complex128)
  velocities = np.zeros((num_output_frames, num_freqs - 1), np.complex128)
  # The modes rest until the first poke (rows before it stay 0), so stepping
  # starts there; a poke before frame 0 starts the clock early.
  for index in range(min(kicks, default=last), last + 1):
    if index in kicks:
      v = v + kicks[index]
    if index >= 0 and index % substeps == 0:
      coords[index // substeps], velocities[index // substeps] = q, v
    q, v = euler_step(q, v, omega, gamma, step)

  # Re(S q) = Re S Re q - Im S Im q as one real contraction; float32 because
  # the output is, and a float64 [N, H, W, 2] temporary would double memory.
  weights = np.concatenate([coords.real, -coords.imag], axis=1).astype(np.float32)
  shapes = np.concatenate([modes.real, modes.imag], axis=0).astype(np.float32)
  displacement = np.einsum("nm,mhwc->nhwc", weights, shapes, optimize=True)
  return ModalResponse(displacement, coords, velocities, omega, gamma, substeps)
