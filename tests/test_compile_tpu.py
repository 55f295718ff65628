"""`python -m spectral_jax.train.compile`: training steps compiled ahead of
time for TPU topologies by the real TPU compiler (libtpu, the ``tpu``
extra), on a machine without TPUs.

Marked ``tpu_aot``: they run in an environment with the extra,
``python -m pytest -m 'tpu_aot and not slow'`` (what `.ci/run` does; add
``-m tpu_aot`` for the slow ones too). Without libtpu they skip, saying so,
except under CI, where they fail. Every compile is a subprocess: libtpu
must see its environment before JAX starts.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.tpu_aot


@pytest.fixture(autouse=True)
def _libtpu():
  """Each test needs libtpu: it skips, saying so, where it is absent, and
  fails instead under CI (whose tpu_aot run must compile)."""
  if importlib.util.find_spec("libtpu") is None:
    message = "libtpu is not installed: pip install -e '.[test,tpu]' to compile for TPUs"
    if os.environ.get("CI"):
      pytest.fail(f"CI runs the tpu_aot tests with libtpu; {message}")
    pytest.skip(message)


def _compile(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "spectral_jax.train.compile", *args],
                        cwd=ROOT, capture_output=True, text=True, timeout=1200)


def _report(result: subprocess.CompletedProcess) -> dict:
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 1, result.stdout + result.stderr
  return json.loads(lines[0])


def test_the_tiny_stage1_step_compiles_for_a_v5e_slice_with_only_a_gradient_all_reduce():
  """Data parallelism alone: the parameters stay whole on every chip (no
  all-gather), the gradients are summed over the chips (all-reduces of
  nearly every float32 gradient), and it fits."""
  result = _compile("--config", "configs/ldm_pretrain.py:tiny", "--topology", "v5e:2x2",
                    "--per-chip-batch", "2")
  assert result.returncode == 0, result.stderr
  assert result.stderr == "", result.stderr  # libtpu is kept quiet.
  report = _report(result)
  assert report["chip"] == "TPU v5 lite" and report["chips"] == 4
  assert report["mesh"] == {"data": 4, "fsdp": 1}
  assert report["global_batch"] == 8 and report["per_chip_batch"] == 2
  assert report["fits"] and 0 < report["memory_per_chip_gib"]["total"] < 16
  assert "all-gather" not in report["collectives"]
  # (A gradient that does not depend on the batch needs no sum: a few
  # hundred values here.)
  assert report["collectives"]["all-reduce"]["bytes"] >= 0.99 * 4 * report["trained_parameters"]
  assert report["flops_per_step_per_chip"] > 0 and report["roofline_examples_per_s_per_chip"] > 0


def test_render_frames_compiles_for_a_tpu_without_collectives():
  """`render_frames`' compiled call with its frames split over the chips:
  every chip splats and synthesises its own frames, nothing crosses
  between chips."""
  result = _compile("--config", "configs/renderer.py:tiny", "--topology", "v5e:2x2",
                    "--program", "render", "--per-chip-batch", "2")
  assert result.returncode == 0, result.stderr
  report = _report(result)
  assert (report["program"], report["example"], report["global_batch"]) == ("render", "frame", 8)
  assert report["fits"] and report["collectives"] == {}


@pytest.mark.slow
def test_one_guided_ddim_step_compiles_for_a_tpu():
  """One DDIM step with classifier-free guidance over all K bins of 4
  pictures per chip, stage 2's U-Net replicated: each picture's conditional
  and unconditional rows are side by side, so no row leaves its chip."""
  result = _compile("--config", "configs/ldm_freq_attn.py:tiny", "--topology", "v5e:2x2",
                    "--program", "sample", "--per-chip-batch", "4")
  assert result.returncode == 0, result.stderr
  report = _report(result)
  assert report["program"] == "sample" and report["fits"]
  assert report["flops_per_example"] > 0
  assert report["collectives"] == {}


@pytest.mark.parametrize("topology, message", [
    ("v9:2x2", "unknown topology 'v9:2x2': give GENERATION:SHAPE with a generation of"),
    ("v5e:3x7", "topology 'v5e:3x7': INVALID_ARGUMENT: Topology layout \"v5e:3x7\" is not "
                "divisible"),
])
def test_an_unknown_topology_is_one_line(topology, message):
  result = _compile("--config", "configs/vae.py:tiny", "--topology", topology)
  assert result.returncode == 2 and result.stdout == ""
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and message in lines[0], result.stderr


def test_an_explicit_batch_the_chips_do_not_divide_is_refused():
  result = _compile("--config", "configs/vae.py:tiny", "--topology", "v5e:2x2",
                    "--config.batch_size=6")
  assert result.returncode == 2 and result.stdout == ""
  assert result.stderr.strip() == (
      "python -m spectral_jax.train.compile: error: --config.batch_size=6 does not split "
      "over 4 chips; give a multiple of 4, or --per-chip-batch instead")


def test_a_program_of_another_stage_is_refused():
  result = _compile("--config", "configs/vae.py:tiny", "--topology", "v5e:2x2",
                    "--program", "render")
  assert result.returncode == 2 and result.stdout == ""
  assert result.stderr.strip() == ("python -m spectral_jax.train.compile: error: --program "
                                   "render renders with the renderer: give configs/renderer.py")


@pytest.mark.slow
def test_fsdp_all_gathers_the_largest_parameters():
  """``mesh.fsdp=2`` splits the large parameters over pairs of chips: the
  step all-gathers them, and each chip holds less."""
  reports = {}
  for fsdp in (1, 2):
    result = _compile("--config", "configs/ldm_pretrain.py:tiny", "--topology", "v5e:2x2",
                      f"--config.mesh.fsdp={fsdp}", "--config.fsdp_min_size=65536")
    assert result.returncode == 0, result.stderr
    reports[fsdp] = _report(result)
  assert reports[2]["mesh"] == {"data": 2, "fsdp": 2}
  assert "all-gather" not in reports[1]["collectives"]
  assert reports[2]["collectives"]["all-gather"]["count"] > 0
  assert (reports[2]["memory_per_chip_gib"]["arguments"]
          < reports[1]["memory_per_chip_gib"]["arguments"])


@pytest.mark.slow
def test_a_batch_whose_arguments_exceed_the_chip_does_not_fit():
  """Tiny VAE maps of 8 x 48 x 64 x 4 float32 (393 KB an example): 50 000
  per chip are 18 GiB of batch alone against a v5e's 16 GiB."""
  result = _compile("--config", "configs/vae.py:tiny", "--topology", "v5e:2x2",
                    "--per-chip-batch", "50000")
  assert result.returncode == 1
  assert not _report(result)["fits"]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith("python -m spectral_jax.train.compile: does not fit: XLA:TPU says "
                             "RESOURCE_EXHAUSTED: Ran out of memory on HBM")


@pytest.mark.slow
def test_two_slices_reduce_gradients_across_the_data_centre_network():
  """Two v5e:2x2 slices, the data axis over both (``mesh.dcn_data=2``), the
  parameters split within a slice: only the gradients' all-reduce crosses
  slices, and every all-gather stays within one."""
  result = _compile("--config", "configs/vae.py:tiny", "--topology", "v5e:2x2",
                    "--num-slices", "2", "--config.mesh.dcn_data=2", "--config.mesh.fsdp=2",
                    "--config.fsdp_min_size=1024")
  assert result.returncode == 0, result.stderr
  report = _report(result)
  assert report["chips"] == 8 and report["slices"] == 2
  assert report["mesh"] == {"data": 4, "fsdp": 2}
  kinds = set(report["collectives"])
  assert "cross_slice/all-reduce" in kinds and "all-gather" in kinds
  assert not any(kind.startswith("cross_slice/") for kind in kinds - {"cross_slice/all-reduce"})


@pytest.mark.slow
def test_rematerialisation_reaches_the_tpu_program():
  """``model.remat=full`` keeps only each U-Net unit's inputs for the
  backward pass, so the compiled step computes the units' forward twice:
  more FLOPs. (At the tiny size XLA:TPU needs no fewer temporaries for it:
  measured 0.048 GiB per chip without, 0.060 with, at per-chip batch 16.)"""
  flops = {}
  for remat in ("none", "full"):
    result = _compile("--config", "configs/ldm_pretrain.py:tiny", "--topology", "v5e:2x2",
                      "--per-chip-batch", "16", f"--config.model.remat={remat}")
    assert result.returncode == 0, result.stderr
    flops[remat] = _report(result)["flops_per_step_per_chip"]
  assert flops["full"] > 1.03 * flops["none"], flops


# Compiles the default model's `spectral-jax export --stablehlo` programs,
# deserialized as a user would, for one chip of a TPU slice.
EXPORTED_FOR_A_TPU = """
import os, shutil, sys
from spectral_jax.train.compile import TPU_ENVIRONMENT, topology_devices
os.environ.update(TPU_ENVIRONMENT)
import jax
from spectral_jax.inference import stablehlo
from spectral_jax.inference.animator import DEFAULT_MODEL

shutil.copytree(DEFAULT_MODEL, sys.argv[1])
stablehlo.write_programs(sys.argv[1])
chip = jax.sharding.SingleDeviceSharding(topology_devices("v5e:2x2", 1)[0])
for name, file in stablehlo.FILES.items():
  program = jax.export.deserialize(bytearray(open(f"{sys.argv[1]}/{file}", "rb").read()))
  flat = [jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=chip) for a in program.in_avals]
  def call(*leaves):
    args, kwargs = jax.tree.unflatten(program.in_tree, leaves)
    return program.call(*args, **kwargs)
  compiled = jax.jit(call).lower(*flat).compile()
  platform = next(iter(compiled.input_shardings[0][0].device_set)).platform
  print(name, platform, compiled.memory_analysis().temp_size_in_bytes)
"""


@pytest.mark.slow
def test_the_exported_programs_compile_for_a_tpu(tmp_path):
  result = subprocess.run([sys.executable, "-c", EXPORTED_FOR_A_TPU, tmp_path / "model"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.split("\n")
  assert [line.split()[:2] for line in lines if line] == [["sample", "tpu"], ["render", "tpu"]], \
      result.stdout


# Each process of a 256-chip pod brings its own rows of the batch
# (`sharding.global_batch`); the mesh follows the torus, so a process's rows
# need not be contiguous, but jax.make_array_from_process_local_data needs
# every process to own the same number of them, none shared.
BATCH_ROWS_OF_EACH_PROCESS = """
import json, os
from spectral_jax.train.compile import TPU_ENVIRONMENT, topology_devices
os.environ.update(TPU_ENVIRONMENT)
from spectral_jax import sharding
rows = {}
for name, axes in (("v5e:16x16", {"data": 64, "fsdp": 4}), ("v5p:4x4x4", {"data": 16, "fsdp": 4}),
                   ("v5e:16x16", {"data": 256, "fsdp": 1})):
  mesh = sharding.make_mesh(axes, topology_devices(name, 1))
  owners = {}
  for row, device in enumerate(mesh.devices.flat):  # The batch's split order.
    owners.setdefault(device.process_index, []).append(row)
  rows[f"{name} {axes['data']}x{axes['fsdp']}"] = sorted(owners.values())
print(json.dumps(rows))
"""


def test_every_process_of_a_pod_brings_as_many_batch_rows_none_shared():
  result = subprocess.run([sys.executable, "-c", BATCH_ROWS_OF_EACH_PROCESS], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  for mesh, rows in json.loads(result.stdout.strip().splitlines()[-1]).items():
    chips = 256 if mesh.startswith("v5e") else 64
    assert len(rows) == chips // 4, mesh  # 4 chips per host.
    assert {len(r) for r in rows} == {4}, mesh
    assert sorted(sum(rows, [])) == list(range(chips)), mesh
