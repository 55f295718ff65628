"""Accelerator chips' published peaks: what a step's FLOPs and bytes are
measured against (MFU in the training logs, the roofline and memory fit of
`spectral_jax.train.compile`).

Figures are per chip (per JAX device for every chip here except a v4 whose
two TensorCores are separate devices), dense bfloat16 matrix FLOP/s and HBM
bandwidth and capacity, from the vendors' pages in ``source``. Google's TPU
pages give HBM in "GB" that are GiB: XLA:TPU reports 15.75 GiB usable on a
v5e, the rest of its 16 GiB being reserved.
"""

from __future__ import annotations

import dataclasses

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
  device_kind: str  # As JAX names the device (``jax.Device.device_kind``).
  hbm_bytes: float
  peak_bf16_flops: float  # Per second, dense.
  hbm_bytes_per_s: float
  source: str


_NVIDIA = "https://www.nvidia.com/en-us/data-center/"
TPUS = {
    "v4": Chip("TPU v4", 32 * GiB, 275e12, 1200e9, "https://cloud.google.com/tpu/docs/v4"),
    "v5e": Chip("TPU v5 lite", 16 * GiB, 197e12, 819e9,
                "https://cloud.google.com/tpu/docs/v5e"),
    "v5p": Chip("TPU v5", 95 * GiB, 459e12, 2765e9, "https://cloud.google.com/tpu/docs/v5p"),
    "v6e": Chip("TPU v6 lite", 32 * GiB, 918e12, 1640e9,
                "https://cloud.google.com/tpu/docs/v6e"),
}
# The datasheets' bf16 figures are with 2:4 sparsity, twice the dense ones.
GPUS = {
    "H100 SXM": Chip("NVIDIA H100 80GB HBM3", 80e9, 989e12, 3.35e12, _NVIDIA + "h100/"),
    "H100 PCIe": Chip("NVIDIA H100 PCIe", 80e9, 756e12, 2.0e12, _NVIDIA + "h100/"),
    "H200": Chip("NVIDIA H200", 141e9, 989e12, 4.8e12, _NVIDIA + "h200/"),
}


def chip_of_device(device_kind: str) -> Chip | None:
  """The `Chip` a JAX device of ``device_kind`` is, or None (a CPU, or an
  accelerator not listed)."""
  for chip in (*TPUS.values(), *GPUS.values()):
    if device_kind == chip.device_kind:
      return chip
  return None
