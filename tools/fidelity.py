"""Small-scale checks of the paper's design claims on synthetic scenes.

  python tools/fidelity.py --workdir runs/fidelity [--vae-steps 600 --ldm-steps 1000 --attn-steps 500]

1. Frequency-adaptive normalization vs plain scaling by image size: two
   `tiny` VAEs, identical but for ``data.normalization``; reconstruction
   error per frequency on held-out scenes, in pixels and relative to the
   coefficients' mean magnitude.
2. Joint prediction with frequency attention vs independent per-frequency
   sampling: stage 1 (frequencies sampled independently given the picture)
   and stage 2 (frequency attention) from the same VAE; for each held-out
   picture the K x K correlation (over pixels) between the frequency bins'
   motion amplitudes |S_k(p)|: its mean off the diagonal for the truth and
   the samples, and the mean absolute difference of the sampled spectral
   volumes' matrices from the truth's.

Runs are resumable (same --workdir); the numbers are printed as Markdown.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _config(stage: str, **overrides):
  from spectral_jax.config_base import load_config_file
  return load_config_file(CONFIGS / f"{stage}.py", "tiny", overrides)


def _final_eval(workdir) -> dict:
  from spectral_jax.train.metrics import read_metrics
  records = [r for r in read_metrics(workdir) if any(k.startswith("eval/") for k in r)]
  return {k[len("eval/"):]: v for k, v in records[-1].items() if k.startswith("eval/")}


def normalization_study(workdir: Path, steps: int) -> None:
  from spectral_jax.train import train
  rows = {}
  for kind in ("adaptive", "image_size"):
    run = workdir / f"vae_{kind}"
    config = _config("vae", num_steps=steps, **{"data.normalization": kind})
    train.run(config, run)
    rows[kind] = _final_eval(run)
  num_freqs = _config("vae").data.num_freqs
  print("\n| k | mean abs(S_k) px | adaptive: L1 px (rel.) | image size: L1 px (rel.) |")
  print("|---|---|---|---|")
  for k in range(num_freqs):
    truth = rows["adaptive"][f"truth_l1_px/k{k:02d}"]
    cells = [f"{rows[kind][f'l1_px/k{k:02d}']:.4f} ({rows[kind][f'l1_px/k{k:02d}'] / truth:.2f})"
             for kind in ("adaptive", "image_size")]
    print(f"| {k} | {truth:.4f} | {cells[0]} | {cells[1]} |")
  for kind in ("adaptive", "image_size"):
    print(f"{kind}: mean L1 {rows[kind]['l1_px']:.4f} px over all bins")


def amplitude_correlation(spectral_px: np.ndarray) -> np.ndarray:
  """``[K, H, W, 4]`` real layout in pixels → ``[K, K]`` correlation over
  pixels of the bins' amplitudes ``|S_k(p)|``."""
  amplitude = np.sqrt((spectral_px ** 2).sum(-1)).reshape(spectral_px.shape[0], -1)
  return np.corrcoef(amplitude)


def joint_study(workdir: Path, vae_steps: int, ldm_steps: int, attn_steps: int,
                num_pictures: int) -> None:
  import jax

  from spectral_jax.data import sources
  from spectral_jax.inference.loading import load_motion_model
  from spectral_jax.inference.motion_model import SamplingOptions
  from spectral_jax.motion.normalize import denormalize
  from spectral_jax.train import train

  vae_dir = workdir / "vae_adaptive"
  train.run(_config("vae", num_steps=vae_steps), vae_dir)
  stage1, stage2 = workdir / "ldm_pretrain", workdir / "ldm_freq_attn"
  train.run(_config("ldm_pretrain", num_steps=ldm_steps, vae_from=str(vae_dir)), stage1)
  train.run(_config("ldm_freq_attn", num_steps=attn_steps, vae_from=str(vae_dir),
                    init_from=str(stage1)), stage2)

  test = sources.open_source(_config("vae").data, "test")
  truth = [test[i]["spectral_volume"].astype(np.float32) for i in range(num_pictures)]
  images = np.stack([test[i]["image"] for i in range(num_pictures)])
  off_diagonal = ~np.eye(len(truth[0]), dtype=bool)

  def mean_correlation(volumes):
    return np.mean([amplitude_correlation(v)[off_diagonal].mean() for v in volumes])

  scores = {}
  for name, run in (("independent (stage 1)", stage1), ("joint (stage 2)", stage2)):
    model = load_motion_model(run)
    options = SamplingOptions(num_steps=model.config.eval.ddim_steps)
    sampled = np.asarray(model.sampler(options)(images, jax.random.key(0)))
    stats = model.normalization
    sampled_px = denormalize(sampled, stats.scales, stats.power)
    difference = np.mean([np.abs(amplitude_correlation(s) - amplitude_correlation(t))[
        off_diagonal].mean() for s, t in zip(sampled_px, truth)])
    scores[name] = (mean_correlation(sampled_px), difference,
                    np.mean([np.abs(s - t).mean() for s, t in zip(sampled_px, truth)]))
    ddim_steps = model.config.eval.ddim_steps
  print(f"\n{num_pictures} held-out pictures, {ddim_steps} DDIM steps; the truth's mean "
        f"correlation between bins is {mean_correlation(truth):.3f}:")
  print("| sampling | mean correlation between bins | mean abs. difference from the truth's "
        "correlations | mean L1 px |")
  print("|---|---|---|---|")
  for name, (correlation, difference, error) in scores.items():
    print(f"| {name} | {correlation:.3f} | {difference:.3f} | {error:.4f} |")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, type=Path)
  parser.add_argument("--vae-steps", type=int, default=600)
  parser.add_argument("--ldm-steps", type=int, default=1000)
  parser.add_argument("--attn-steps", type=int, default=500)
  parser.add_argument("--pictures", type=int, default=32)
  parser.add_argument("--only", choices=["normalization", "joint"])
  args = parser.parse_args()
  if args.only != "joint":
    normalization_study(args.workdir, args.vae_steps)
  if args.only != "normalization":
    joint_study(args.workdir, args.vae_steps, args.ldm_steps, args.attn_steps, args.pictures)


if __name__ == "__main__":
  main()
