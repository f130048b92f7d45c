"""benchmarks/accelerator_check.py without a GPU: the no-GPU exit, argument parsing, the missing-library
diagnostics, the energy integration on fake power readings, the budget and the tables (on fake results)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from zooinfer import recipes

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "accelerator_check.py"


@pytest.fixture(scope="module")
def acc():
    spec = importlib.util.spec_from_file_location("accelerator_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_without_a_gpu_it_says_so_and_exits_0_measuring_nothing(acc, tmp_path):
    gpu, why = acc.detect_gpu()
    if gpu is not None:
        pytest.skip(f"this machine has a GPU ({gpu})")
    out = tmp_path / "out"
    target = tmp_path / "target"
    # no --no-install: on a machine without a GPU nothing is installed either
    proc = _run("--out", str(out), "--target", str(target))
    assert proc.returncode == 0, proc.stderr
    assert "No NVIDIA GPU on this machine" in proc.stdout and "nothing measured" in proc.stdout
    assert "nvidia-smi" in proc.stdout  # says how it looked
    assert not out.exists() and not target.exists()


def test_help_and_bad_arguments():
    proc = _run("--help")
    assert proc.returncode == 0
    for flag in ("--models", "--quick", "--no-install", "--wheels", "--model-budget-s", "--total-budget-s"):
        assert flag in proc.stdout
    assert "--simulate-cpu" not in proc.stdout
    bad = _run("--models", "dpn131", "no-such-model")
    assert bad.returncode == 2
    assert f"unknown model(s) no-such-model; known: {', '.join(recipes.NAMES)}" in bad.stderr
    assert _run("--total-budget-s", "0").returncode == 2


def test_argument_defaults_and_batch_sizes(acc):
    args = acc.parse_args([])
    assert args.models == list(recipes.NAMES) and not args.quick and args.total_budget_s == 450
    assert acc.batch_sizes_for("dpn131", args) == [1, 8, 32]
    assert acc.batch_sizes_for("pyramidbox", args) == [1, 8]
    quick = acc.parse_args(["--quick", "--models", "pcb"])
    assert acc.batch_sizes_for("pcb", quick) == [1, 8]
    assert acc.batch_sizes_for("pyramidbox", acc.parse_args(["--batch-sizes", "16", "32"])) == [1]


def test_batch_cap_and_check_sizes_come_from_the_recipe(acc, sixth_model, monkeypatch):
    import dataclasses

    from zooinfer.recipes import BenchPlan

    args = acc.parse_args(["--batch-sizes", "1", "4", "8", "32"])
    assert acc.batch_sizes_for("sixth", args) == [1, 4, 8, 32]  # the default plan caps nothing
    capped = dataclasses.replace(sixth_model, bench=BenchPlan(max_batch=4))
    monkeypatch.setattr(sys.modules["zooinfer.models.sixth.recipe"], "RECIPE", capped)
    assert acc.batch_sizes_for("sixth", args) == [1, 4]
    # (parity inputs, end-to-end batch, end-to-end images): the values the script had when it named the models
    # (plain, heavy, heavy with two views), now from the recipe's plan and views per image
    want = {"dpn131": (4, 8, 64), "m2det": (4, 8, 16), "pyramidbox": (2, 2, 16)}
    for name, (parity, bs, stream) in want.items():
        recipe = recipes.get(name)
        views = 2 if name == "pyramidbox" else 1
        sizes = acc.batch_sizes_for(name, acc.parse_args([]))
        assert acc.check_sizes(recipe, views, sizes, quick=False) == (parity, bs, stream), name
        assert acc.check_sizes(recipe, views, sizes, quick=True)[2] == stream // 4, name
    assert acc.check_sizes(sixth_model, 1, [1, 8, 32], quick=False) == (4, 8, 64)


def test_install_command_uses_a_target_folder_and_local_wheels(acc, tmp_path):
    args = acc.parse_args(["--wheels", str(tmp_path), "--target", str(tmp_path / "t")])
    cmd = acc.install_command(args, ["onnxruntime-gpu", "nvidia-ml-py"])
    assert cmd[:4] == [sys.executable, "-m", "pip", "install"]
    assert cmd[cmd.index("--target") + 1] == str(tmp_path / "t") and "--no-deps" in cmd
    assert cmd[cmd.index("--find-links") + 1] == str(tmp_path) and "--no-index" in cmd
    assert cmd[-2:] == ["onnxruntime-gpu", "nvidia-ml-py"]
    plain = acc.install_command(acc.parse_args([]), ["onnxruntime-gpu"])
    assert "--no-index" not in plain


def test_missing_cuda_libraries_are_named(acc):
    ldd = ("\tlinux-vdso.so.1 (0x00007ffd)\n\tlibcublasLt.so.12 => not found\n"
           "\tlibcudnn.so.9 => not found\n\tlibcudart.so.12 => /usr/local/cuda/lib64/libcudart.so.12 (0x7f)\n")
    assert acc.missing_from_ldd(ldd) == ["libcublasLt.so.12", "libcudnn.so.9"]
    log = ("2026-12-01 [E:onnxruntime:Default, provider_bridge_ort.cc:2195 TryGetProviderInfo_CUDA] Failed to load "
           "library libonnxruntime_providers_cuda.so with error: libcublasLt.so.12: cannot open shared object file: "
           "No such file or directory\n[W:onnxruntime:Default, onnxruntime_pybind_state.cc:1013] Failed to create "
           "TensorrtExecutionProvider: libnvinfer.so.10: cannot open shared object file: No such file or directory")
    assert acc.missing_from_ort_log(log) == ["libcublasLt.so.12", "libnvinfer.so.10"]
    diag = {"status": {"installed": True, "distributions": {"onnxruntime-gpu": "1.31.1"},
                       "providers": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]},
            "cuda": {"provider": "CUDAExecutionProvider", "listed": True, "usable": False,
                     "missing_libraries": ["libcublasLt.so.12", "libcudnn.so.9"]},
            "tensorrt": {"provider": "TensorrtExecutionProvider", "listed": True, "usable": True}}
    text = acc.describe_providers(diag)
    assert text[0] == ("CUDAExecutionProvider: NOT usable with onnxruntime-gpu 1.31.1: missing libraries: "
                       "libcublasLt.so.12, libcudnn.so.9")
    assert text[1].startswith("TensorrtExecutionProvider: loads and runs")
    cpu_only = acc.describe_providers({"status": {"installed": True, "distributions": {"onnxruntime": "1.32.0"},
                                                  "providers": ["CPUExecutionProvider"]},
                                       "cuda": {"provider": "CUDAExecutionProvider", "listed": False}})
    assert "not in this build's providers (CPUExecutionProvider): install onnxruntime-gpu" in cpu_only[0]


def test_provider_diagnostics_on_this_machine_do_not_fail(acc):
    diag = acc.provider_diagnostics()
    assert diag["status"]["installed"]
    for key in ("cuda", "tensorrt"):
        assert diag[key]["usable"] in (True, False) and isinstance(diag[key]["missing_libraries"], list)


def test_energy_integration_on_fake_power_samples(acc):
    t = np.arange(0.0, 10.01, 0.5)
    assert acc.integrate_energy(t, np.full_like(t, 300.0), 2.0, 4.0) == pytest.approx(600.0)
    # a ramp 100 W -> 200 W over 0..10 s: the exact integral over [2.25, 7.75] is the mean power x duration
    ramp = 100.0 + 10.0 * t
    assert acc.integrate_energy(t, ramp, 2.25, 7.75) == pytest.approx(150.0 * 5.5)
    # the window beyond the samples holds the edge readings; unsorted samples are sorted first
    assert acc.integrate_energy([1.0, 0.0], [50.0, 50.0], -1.0, 3.0) == pytest.approx(200.0)
    assert np.isnan(acc.integrate_energy([], [], 0.0, 1.0))
    assert np.isnan(acc.integrate_energy([0.0], [1.0], 1.0, 1.0))


def test_power_monitor_with_an_injected_reader(acc):
    clock = {"t": 0.0}

    def tick():  # a fake clock that advances 10 ms per reading: the integral is exact, not timed
        clock["t"] += 0.01
        return clock["t"]

    mon = acc.PowerMonitor(read_power=lambda: 250.0, read_energy=lambda: 1234.5, interval=0.0, clock=tick)
    with mon:
        while len(mon.times) < 200:
            time.sleep(0.001)
    t0, t1 = mon.times[10], mon.times[110]
    w = mon.window(t0, t1, items=50, idle_w=50.0, counter_j=400.0)
    assert w["energy_j"] == pytest.approx(250.0 * (t1 - t0)) and w["mean_w"] == pytest.approx(250.0)
    assert w["j_per_image"] == pytest.approx(250.0 * (t1 - t0) / 50)
    assert w["j_per_image_above_idle"] == pytest.approx(200.0 * (t1 - t0) / 50)
    assert w["j_per_image_counter"] == pytest.approx(8.0) and mon.energy_counter() == 1234.5


def test_budget_shares_what_is_left(acc):
    now = {"t": 100.0}
    b = acc.Budget(400, clock=lambda: now["t"], spent_s=40)  # 40 s went into the install before re-executing
    assert b.left() == pytest.approx(360)
    assert b.start_model(4) == pytest.approx(90)
    now["t"] += 80
    assert b.allows(10) and not b.allows(11)
    assert acc.Budget(400, per_model_s=30, clock=lambda: now["t"]).start_model(2) == pytest.approx(30)


FAKE = {
    "gpu": {"name": "NVIDIA H200", "driver": "580.159.03"}, "onnxruntime": {"version": "1.31.1"}, "torch": "2.11.0",
    "providers_text": ["CUDAExecutionProvider: loads and runs (onnxruntime-gpu 1.31.1)"],
    "models": {
        "dpn131": {"views_per_image": 1, "skipped": ["ort-tensorrt-fp32: budget (3 s left for dpn131)"], "errors": {},
                   "configs": {
                       "ort-cuda-fp32": {"build_s": 2.5, "parity": {"max_rel": 2e-5, "ok": True},
                                         "sweep": [{"bs": 1, "throughput": 400.0, "latency_ms_p99": 3.1},
                                                   {"bs": 8, "throughput": 1500.0, "latency_ms_p99": 6.0}],
                                         "split": {"bs": 8, "h2d_ms": 0.5, "compute_ms": 4.5, "d2h_ms": 0.1},
                                         "energy": {"j_per_image": 0.31, "j_per_image_counter": 0.3,
                                                    "j_per_image_above_idle": 0.2}},
                       "ort-tensorrt-fp16": {"build_s": 40.0, "parity": {"max_rel": 0.3, "ok": False},
                                             "sweep": [{"bs": 8, "throughput": 5000.0, "latency_ms_p99": 2.0}]}},
                   "end_to_end": {"ort-cuda": {"bs": 8, "images": 64, "images_per_s": 900.0,
                                               "inference_share": 0.4, "note": None}}},
        "pyramidbox": {"views_per_image": 2, "skipped": [], "errors": {"ort-cuda-fp32": "RuntimeError: boom\nmore"},
                       "configs": {"torch-cuda-fp32": {"sweep": [{"bs": 2, "throughput": 10.0,
                                                                   "latency_ms_p99": 300.0}]}},
                       "end_to_end": {}},
    },
}


def test_tables_put_the_best_figure_next_to_the_guides_t4_and_310p(acc):
    md = acc.markdown_tables(FAKE)
    assert md.startswith("GPU: **NVIDIA H200** (driver 580.159.03); onnxruntime 1.31.1; torch 2.11.0")
    assert "| dpn131 | ort-cuda-fp32 | 2e-05 ok | 2.5 | 400 | 1500 |  | 3.1 | 0.50 / 4.50 / 0.10 (bs8) | 0.3 | 0.2 |" in md
    assert "| dpn131 | ort-tensorrt-fp16 | 0.3 **CHECK** | 40 |" in md
    # DPN131's guide: T4 TensorRT fp16 287.4 img/s at bs 8, Ascend 310P fp16 378.015 at bs 8 (its best 310P row)
    assert ("| dpn131 | ort-tensorrt-fp16 | 8 | 5000 | 287.4 | NVIDIA T4, TensorRT 7.2.3.4 fp16 bs8 | 441 | "
            "Ascend 310P3 (ais_bench --loop=1000) bs8 |") in md
    # PyramidBox: throughput counted in images (two views each); the guide's T4 row has bs 1 only
    assert "| pyramidbox | torch-cuda-fp32 | 2 | 5 | 0.6407 | NVIDIA T4 bs1 | 8.9 |" in md
    assert "| dpn131 | ort-cuda | 8 | 64 | 900 | 0.4 |  |" in md
    assert "- pyramidbox ort-cuda-fp32: error: RuntimeError: boom" in md
    assert "- dpn131: skipped ort-tensorrt-fp32: budget (3 s left for dpn131)" in md
    empty = acc.markdown_tables({"models": {}})
    assert empty.count("_(nothing measured)_") == 3


def test_openvino_gpu_status_says_why_none(acc, monkeypatch):
    pytest.importorskip("openvino")
    st = acc.openvino_status()
    if not st["gpus"]:  # an NVIDIA or CPU-only machine: OpenVINO's GPU plugin drives Intel GPUs only
        assert "no GPU" in st["why"] and "CPU" in st["devices"]
        assert "skipped: OpenVINO sees" in acc.describe_openvino(st)
    assert acc.openvino_status(simulate=True)["gpus"] == ["CPU"]
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    st = acc.openvino_status()
    assert st["gpus"] == [] and 'pip install -e ".[openvino]"' in st["why"]
