#!/usr/bin/env python3
"""One prepared accelerator check for a lent NVIDIA GPU machine: everything the GPU and TensorRT paths need measured,
for every model of the registry (``zooinfer.recipes.NAMES``), in under 8 minutes.

    python benchmarks/accelerator_check.py                      # all models, installs onnxruntime-gpu if missing
    python benchmarks/accelerator_check.py --quick --models dpn131 pcb
    python benchmarks/accelerator_check.py --no-install --out /tmp/acc

Per model (synthetic weights, the embedded samples; the ONNX exports run in worker processes while the GPU
measures the previous model):
  1. parity vs PyTorch (CUDA, fp32 with TF32 off) on real preprocessed samples: ORT CUDA fp32, ORT TensorRT fp32 and
     fp16 (max abs / max rel error per output, argmax agreement for (N, C) outputs);
  2. a batch sweep (``zooinfer.bench.inference_sweep``: the same code as every report) of each configuration and of
     PyTorch on CUDA;
  3. the host-to-device / compute / device-to-host split at one batch size, from ONNX Runtime's IO binding (the input
     copied into an OrtValue on the device, the run with outputs bound on the device, the copy back);
  4. energy per image from the GPU's own readings (``pynvml``: the board's energy counter where it has one, and the
     power sampled every 20 ms in a thread, integrated over the timed window), total and above idle;
  5. OpenVINO on a GPU it sees (f32, f16: parity and the sweep; its GPU plugin drives Intel GPUs, so on an NVIDIA
     machine the check says it sees none);
  6. the end-to-end stream (``zooinfer.pipeline.run``: read + preprocess on the host's cores + infer + postprocess)
     over the embedded samples repeated, on the project's ``ort-cuda`` backend and on TensorRT fp16.
Output: ``<out>/accelerator-<stamp>.json`` (everything) and ``.md`` (the table, next to the guides' T4 and Ascend 310P
figures from each recipe's ``published.performance``), the markdown also on stdout.

Without an NVIDIA GPU it says so and exits 0 having measured nothing. When the CUDA or TensorRT libraries do not match
the installed onnxruntime-gpu, it names the libraries the execution providers could not load (from ``ldd`` on the
provider libraries and from ONNX Runtime's own load errors) and measures what it can (PyTorch on CUDA at least).

TensorRT sessions are opened here with explicit optimisation profiles (batch 1 .. the largest swept) so one engine
serves every batch size; the project's ``ort-tensorrt`` backend builds one engine per new input shape instead (the
first call at each batch size pays a build), which this script reports as ``trt_build_s`` for the project path when
it runs the end-to-end stream on it.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lib"))

#: precision configurations, in the order measured (the most useful first, so a tight budget drops the last)
CONFIGS = (("ort-cuda", "fp32"), ("ort-tensorrt", "fp16"), ("ort-tensorrt", "fp32"))
REEXEC_ENV = "ZOOINFER_ACCEL_REEXEC"
STARTED_AT = time.time()
DEFAULT_TARGET = Path(os.environ.get("ZOOINFER_CACHE", Path.home() / ".cache" / "zooinfer")) / "ort-gpu"
#: parity thresholds on the max relative error (relative to |reference|, floored at 1e-3 of its max)
PARITY_TOL = {"fp32": 1e-2, "fp16": 1e-1}


def say(msg: str = "") -> None:
    print(msg, flush=True)


def known_models() -> list[str]:
    """Every model of the registry (a new model's folder adds itself)."""
    from zooinfer import recipes

    return list(recipes.NAMES)


# ------------------------------------------------------------------------------------------------ arguments
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="accelerator_check.py",
        description="Measure ORT CUDA / TensorRT (fp32, fp16) parity, speed, IO split, energy and the end-to-end "
                    "stream for every model on an NVIDIA GPU, in under 8 minutes; exits 0 doing nothing "
                    "without a GPU.")
    known = known_models()
    ap.add_argument("--models", nargs="+", default=known, metavar="MODEL",
                    help=f"models to check (default: all: {' '.join(known)})")
    ap.add_argument("--quick", action="store_true",
                    help="batch sizes 1 and 8, shorter timings, no TensorRT fp32, shorter streams")
    ap.add_argument("--no-install", action="store_true",
                    help="do not pip-install onnxruntime-gpu / nvidia-ml-py when missing")
    ap.add_argument("--wheels", metavar="DIR", default=None,
                    help="install from the wheels in DIR (pip --no-index --find-links DIR): machines without network")
    ap.add_argument("--target", metavar="DIR", default=str(DEFAULT_TARGET),
                    help="where onnxruntime-gpu is installed when missing (prepended to PYTHONPATH; the system's "
                         f"onnxruntime stays as it is; default {DEFAULT_TARGET})")
    ap.add_argument("--out", metavar="DIR", default=str(HERE / "results"), help="where the JSON and markdown go")
    ap.add_argument("--total-budget-s", type=float, default=450.0,
                    help="wall-clock budget for the whole run, install included (s; default 450, i.e. 7.5 min)")
    ap.add_argument("--model-budget-s", type=float, default=None,
                    help="budget per model (s; default: what is left shared over the models left)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                    help="swept batch sizes (default 1 8 32; --quick 1 8; at most a recipe's bench.max_batch)")
    ap.add_argument("--split-bs", type=int, default=8, help="batch size of the H2D/compute/D2H split (default 8)")
    ap.add_argument("--device-id", type=int, default=0)
    ap.add_argument("--no-trt", action="store_true", help="skip the TensorRT execution provider")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch CUDA sweep (parity still uses it)")
    # a dry run of the whole flow on a machine without a GPU (tests, and shaking out the script before a lease):
    # every "GPU" configuration runs on ONNX Runtime's CPU provider, power readings are fake: figures mean nothing
    ap.add_argument("--simulate-cpu", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    bad = [m for m in args.models if m not in known]
    if bad:
        ap.error(f"unknown model(s) {', '.join(bad)}; known: {', '.join(known)}")
    if args.total_budget_s <= 0 or (args.model_budget_s is not None and args.model_budget_s <= 0):
        ap.error("budgets must be > 0 seconds")
    if any(b < 1 for b in (args.batch_sizes or [])) or args.split_bs < 1:
        ap.error("batch sizes must be >= 1")
    return args


def batch_sizes_for(model: str, args: argparse.Namespace) -> list[int]:
    """The swept batch sizes (rows: views) of ``model``: the asked ones, at most its recipe's ``bench.max_batch``
    (PyramidBox: two 1000x1000 views per image, batches of 32 views are 5 GFLOP x 658 each)."""
    from zooinfer import recipes

    sizes = list(args.batch_sizes or ((1, 8) if args.quick else (1, 8, 32)))
    cap = recipes.get(model).bench.max_batch
    if cap is not None:
        sizes = [b for b in sizes if b <= cap] or [1]
    return sorted(set(sizes))


def check_sizes(recipe: Any, views: int, sizes: Sequence[int], quick: bool) -> tuple[int, int, int]:
    """(parity inputs in views, end-to-end batch in views, end-to-end images) for ``recipe`` with ``views`` views
    per image and swept ``sizes``: 4 images' views for parity (at least one image); the end-to-end batch at most 8,
    within the TensorRT profile (the largest swept size) and within the CPU plan's largest batch of images; a heavy
    model's stream a quarter as long."""
    n_parity = max(1, 4 // views)
    bs_e2e = min(8, max(sizes), max(recipe.bench.batch_sizes) * views)
    n_stream = 16 if quick else 64
    if recipe.bench.heavy:
        n_stream //= 4
    return n_parity, bs_e2e, n_stream


# ------------------------------------------------------------------------------------------------ budget
class Budget:
    """Wall-clock budget: the whole run, and a share per model (``clock`` injectable for tests)."""

    def __init__(self, total_s: float, per_model_s: float | None = None, clock: Callable[[], float] = time.monotonic,
                 spent_s: float = 0.0):
        self.clock, self.total_s, self.per_model_s = clock, float(total_s), per_model_s
        self.t0 = clock() - spent_s  # ``spent_s``: time already used before (the install, before re-executing)
        self._model_end = float("inf")

    def left(self) -> float:
        return self.total_s - (self.clock() - self.t0)

    def start_model(self, models_left: int) -> float:
        share = self.left() / max(1, models_left)
        if self.per_model_s is not None:
            share = min(share, self.per_model_s)
        self._model_end = self.clock() + max(0.0, share)
        return share

    def model_left(self) -> float:
        return min(self._model_end - self.clock(), self.left())

    def allows(self, seconds: float) -> bool:
        """Whether a step expected to take ``seconds`` fits in this model's share."""
        return self.model_left() >= seconds


# ------------------------------------------------------------------------------------------------ GPU presence
def detect_gpu() -> tuple[dict | None, str]:
    """(GPU facts, how they were found) or (None, why there is none): nvidia-smi, then NVML, then torch."""
    tried = []
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total,power.limit",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            lines = [x.strip() for x in out.stdout.splitlines() if x.strip()]
            if out.returncode == 0 and lines:
                name, driver, mem, power = (p.strip() for p in (lines[0].split(",") + ["", "", ""])[:4])
                return {"name": name, "driver": driver, "memory": mem, "power_limit": power, "count": len(lines),
                        "via": "nvidia-smi"}, "nvidia-smi"
            tried.append(f"nvidia-smi failed ({(out.stderr or out.stdout).strip()[:200] or out.returncode})")
        except (OSError, subprocess.SubprocessError) as e:
            tried.append(f"nvidia-smi failed ({e})")
    else:
        tried.append("nvidia-smi: not found")
    try:
        import pynvml

        pynvml.nvmlInit()
        n = pynvml.nvmlDeviceGetCount()
        if n:
            h = pynvml.nvmlDeviceGetHandleByIndex(0)
            name = pynvml.nvmlDeviceGetName(h)
            return {"name": name.decode() if isinstance(name, bytes) else name, "count": n,
                    "driver": _str(pynvml.nvmlSystemGetDriverVersion()), "via": "nvml"}, "nvml"
        tried.append("NVML: no devices")
    except ImportError:
        tried.append("pynvml: not installed")
    except Exception as e:  # noqa: BLE001 - NVML raises its own error types (no driver, no device)
        tried.append(f"NVML: {e}")
    try:
        import torch

        if torch.cuda.is_available():
            return {"name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(), "via": "torch"}, "torch"
        tried.append(f"torch {torch.__version__}: torch.cuda.is_available() is False")
    except ImportError:
        tried.append("torch: not installed")
    return None, "; ".join(tried)


def _str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# ------------------------------------------------------------------------------------------------ onnxruntime-gpu
def ort_status() -> dict:
    """The installed onnxruntime build and its execution providers."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        return {"installed": False, "error": str(e), "providers": []}
    from importlib import metadata

    dists = {}
    for d in ("onnxruntime", "onnxruntime-gpu"):
        try:
            dists[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            pass
    return {"installed": True, "version": ort.__version__, "file": ort.__file__, "distributions": dists,
            "providers": ort.get_available_providers()}


def install_command(args: argparse.Namespace, packages: Sequence[str]) -> list[str]:
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--upgrade", "--target", args.target]
    if args.wheels:
        cmd += ["--no-index", "--find-links", args.wheels]
    return cmd + list(packages)


def ensure_ort_gpu(args: argparse.Namespace, argv: Sequence[str]) -> dict | None:
    """Install onnxruntime-gpu (and nvidia-ml-py) into ``--target`` when the CUDA provider is missing, then re-run
    this script with the target first on PYTHONPATH (a fresh interpreter imports the GPU build). Returns the install
    record when nothing was re-executed."""
    status = ort_status()
    wanted = []
    if "CUDAExecutionProvider" not in status.get("providers", []):
        wanted.append("onnxruntime-gpu")
    try:
        import pynvml  # noqa: F401
    except ImportError:
        wanted.append("nvidia-ml-py")
    if not wanted:
        return {"needed": [], "status": status}
    if args.no_install or os.environ.get(REEXEC_ENV):
        return {"needed": wanted, "skipped": "--no-install" if args.no_install else "already re-executed once",
                "status": status}
    cmd = install_command(args, wanted)
    say(f"installing {' '.join(wanted)} into {args.target}: {' '.join(cmd)}")
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    record = {"needed": wanted, "command": cmd, "returncode": proc.returncode, "seconds": time.monotonic() - t0,
              "output_tail": (proc.stdout + proc.stderr)[-2000:]}
    if proc.returncode != 0:
        say(f"pip could not install {' '.join(wanted)} (exit {proc.returncode}); without network, pass --wheels DIR "
            f"holding the wheels. pip said:\n{record['output_tail'][-800:]}")
        return record
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([args.target, str(HERE.parent / "lib"), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    env[REEXEC_ENV] = json.dumps({"install": {k: v for k, v in record.items() if k != "output_tail"},
                                  "started_at": STARTED_AT})
    say("re-running with the installed packages first on PYTHONPATH")
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *argv], env)
    return record  # not reached


# ------------------------------------------------------------------------------------------------ provider checks
NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found", re.M)
LOAD_ERROR = re.compile(r"(lib[\w.+-]+\.so[\w.]*): cannot open shared object file")


def missing_from_ldd(text: str) -> list[str]:
    """Library names ``ldd`` reported as ``not found``."""
    return sorted(set(NOT_FOUND.findall(text)))


def missing_from_ort_log(text: str) -> list[str]:
    """Library names in ONNX Runtime's provider load errors (``Failed to load library ... with error:
    libcublasLt.so.12: cannot open shared object file ...``)."""
    return sorted(set(LOAD_ERROR.findall(text)))


@contextlib.contextmanager
def captured_stderr_fd():
    """Capture what native code writes to file descriptor 2 (ONNX Runtime logs provider load errors there)."""
    buf = tempfile.TemporaryFile(mode="w+b")
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(buf.fileno(), 2)
    holder = {"text": ""}
    try:
        yield holder
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        buf.seek(0)
        holder["text"] = buf.read().decode(errors="replace")
        buf.close()


def _tiny_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = min(model.ir_version, 9)
    onnx.save(model, str(path))
    return path


def provider_diagnostics(device_id: int = 0) -> dict:
    """Whether the CUDA and TensorRT execution providers load and run, and if not which libraries are missing."""
    out: dict[str, Any] = {"status": ort_status()}
    try:
        import onnxruntime as ort
    except ImportError as e:
        out["error"] = f"onnxruntime not importable: {e}"
        return out
    if hasattr(ort, "preload_dlls"):  # ORT >= 1.21: loads CUDA/cuDNN from the nvidia-* wheels if installed
        with captured_stderr_fd() as cap:
            try:
                ort.preload_dlls()
                out["preload_dlls"] = "ok"
            except Exception as e:  # noqa: BLE001
                out["preload_dlls"] = f"{type(e).__name__}: {e}"
        out["preload_log"] = cap["text"][-2000:]
    capi = Path(ort.__file__).parent / "capi"
    probe = _tiny_onnx(Path(tempfile.mkdtemp(prefix="zooinfer-probe-")) / "probe.onnx")
    for key, provider, lib in (("cuda", "CUDAExecutionProvider", "libonnxruntime_providers_cuda.so"),
                               ("tensorrt", "TensorrtExecutionProvider", "libonnxruntime_providers_tensorrt.so")):
        info: dict[str, Any] = {"provider": provider, "listed": provider in ort.get_available_providers()}
        so = capi / lib
        info["library"] = str(so) if so.is_file() else None
        missing: list[str] = []
        if so.is_file() and shutil.which("ldd"):
            ldd = subprocess.run(["ldd", str(so)], capture_output=True, text=True, timeout=30)
            missing += missing_from_ldd(ldd.stdout)
        log = ""
        if info["listed"]:
            providers = [(provider, {"device_id": device_id}), "CPUExecutionProvider"]
            if key == "tensorrt":
                providers.insert(1, ("CUDAExecutionProvider", {"device_id": device_id}))
            with captured_stderr_fd() as cap:
                try:
                    so_opts = ort.SessionOptions()
                    so_opts.log_severity_level = 2
                    sess = ort.InferenceSession(str(probe), so_opts, providers=providers)
                    sess.run(None, {"x": np.ones((1, 4), np.float32)})
                    info["active"] = sess.get_providers()[0] == provider
                except Exception as e:  # noqa: BLE001 - the provider's failure is what is being diagnosed
                    info["active"] = False
                    info["error"] = f"{type(e).__name__}: {e}"[:1000]
            log = cap["text"]
            missing += missing_from_ort_log(log + info.get("error", ""))
        else:
            info["active"] = False
        info["missing_libraries"] = sorted(set(missing))
        info["load_log"] = log[-1500:]
        info["usable"] = bool(info["active"])
        out[key] = info
    return out


#: OpenVINO's precisions on a GPU device it sees (f32 set explicitly: its GPU plugin's default is f16)
OPENVINO_CONFIGS = ("fp32", "fp16")


def openvino_status(simulate: bool = False) -> dict:
    """The GPU devices OpenVINO sees (``gpus``) and, when none, why (``why``): not installed (the install line), or
    none found -- its GPU plugin drives Intel GPUs (OpenCL / Level Zero), not NVIDIA ones. ``simulate``: its CPU
    stands in for a GPU (figures mean nothing)."""
    from zooinfer.backends import openvino

    why = openvino.unavailable()
    if why:
        return {"gpus": [], "why": why}
    seen = openvino.devices()
    gpus = ["CPU"] if simulate else [d for d in seen if d.startswith("GPU")]
    return {"version": openvino.import_openvino().__version__, "devices": seen, "gpus": gpus,
            "why": None if gpus else f"OpenVINO sees {seen}: no GPU (its GPU plugin drives Intel GPUs only)"}


def describe_openvino(status: dict) -> str:
    """One sentence: which GPU OpenVINO measures, or why none."""
    if status.get("gpus"):
        return f"OpenVINO {status.get('version')}: measuring {status['gpus'][0]} ({', '.join(OPENVINO_CONFIGS)})"
    return f"OpenVINO GPU configurations skipped: {status.get('why')}"


def describe_providers(diag: dict) -> list[str]:
    """Plain sentences about the providers (what works, which libraries are missing)."""
    lines = []
    st = diag.get("status", {})
    if not st.get("installed"):
        return [f"onnxruntime is not installed ({st.get('error')}): the ONNX Runtime GPU configurations are skipped"]
    dist = ", ".join(f"{k} {v}" for k, v in st.get("distributions", {}).items()) or st.get("version")
    for key in ("cuda", "tensorrt"):
        info = diag.get(key) or {}
        name = info.get("provider", key)
        if info.get("usable"):
            lines.append(f"{name}: loads and runs ({dist})")
            continue
        why = []
        if not info.get("listed"):
            why.append(f"not in this build's providers ({', '.join(st.get('providers', []))}): "
                       "install onnxruntime-gpu")
        if info.get("missing_libraries"):
            why.append("missing libraries: " + ", ".join(info["missing_libraries"]))
        if info.get("error"):
            why.append(info["error"].splitlines()[0][:300])
        if not why and info.get("load_log"):
            why.append(info["load_log"].strip().splitlines()[-1][:300])
        lines.append(f"{name}: NOT usable with {dist}: " + ("; ".join(why) or "it fell back to the CPU"))
    return lines


# ------------------------------------------------------------------------------------------------ energy
def integrate_energy(times: Sequence[float], watts: Sequence[float], t0: float, t1: float) -> float:
    """Joules between ``t0`` and ``t1`` (s) from power samples ``watts`` taken at ``times``: the trapezoid rule over
    the samples inside the window, the power at the window's edges interpolated (or held from the nearest
    sample). ``nan`` without samples."""
    t = np.asarray(times, dtype=np.float64)
    p = np.asarray(watts, dtype=np.float64)
    if t.size == 0 or t1 <= t0:
        return float("nan")
    order = np.argsort(t, kind="stable")
    t, p = t[order], p[order]
    inside = (t > t0) & (t < t1)
    tt = np.concatenate([[t0], t[inside], [t1]])
    pp = np.concatenate([[np.interp(t0, t, p)], p[inside], [np.interp(t1, t, p)]])
    return float(np.sum(0.5 * (pp[1:] + pp[:-1]) * np.diff(tt)))


class PowerMonitor:
    """Samples the GPU's power (W) every ``interval`` s in a thread; reads the board's energy counter (mJ) where NVML
    has one. ``read_power``/``read_energy`` are injectable (tests)."""

    def __init__(self, device_id: int = 0, interval: float = 0.02, read_power: Callable[[], float] | None = None,
                 read_energy: Callable[[], float | None] | None = None, clock: Callable[[], float] = time.perf_counter):
        self.interval, self.clock = interval, clock
        self.times: list[float] = []
        self.watts: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.read_power, self.read_energy = read_power, read_energy
        self.source = "injected" if read_power else None
        if read_power is None:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(device_id)
            self.read_power = lambda: pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
            self.source = "nvml"
            try:
                pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
                self.read_energy = lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0
            except Exception:  # noqa: BLE001 - pre-Volta boards have no energy counter
                self.read_energy = None

    def __enter__(self) -> "PowerMonitor":
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="power-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                w = float(self.read_power())
            except Exception:  # noqa: BLE001 - a failed reading is skipped
                w = None
            if w is not None:
                self.times.append(self.clock())
                self.watts.append(w)
            self._stop.wait(self.interval)

    def energy_counter(self) -> float | None:
        try:
            return None if self.read_energy is None else float(self.read_energy())
        except Exception:  # noqa: BLE001
            return None

    def window(self, t0: float, t1: float, items: int, idle_w: float | None = None,
               counter_j: float | None = None) -> dict:
        """Energy over [t0, t1] for ``items`` images: J/image total (sampled and, if given, from the counter) and
        above the idle power."""
        e = integrate_energy(self.times, self.watts, t0, t1)
        dur = t1 - t0
        sel = [w for t, w in zip(self.times, self.watts) if t0 <= t <= t1]
        out = {"seconds": dur, "images": items, "samples": len(sel), "energy_j": e,
               "mean_w": e / dur if dur > 0 else None, "max_w": max(sel) if sel else None,
               "j_per_image": e / items if items else None, "source": self.source}
        if counter_j is not None:
            out["energy_j_counter"] = counter_j
            out["j_per_image_counter"] = counter_j / items if items else None
        if idle_w is not None:
            out["idle_w"] = idle_w
            above = e - idle_w * dur
            out["j_per_image_above_idle"] = above / items if items else None
        return out


def measure_idle(monitor: PowerMonitor, seconds: float = 1.0) -> float | None:
    t0 = monitor.clock()
    time.sleep(seconds)
    t1 = monitor.clock()
    e = integrate_energy(monitor.times, monitor.watts, t0, t1)
    return None if np.isnan(e) else e / (t1 - t0)


# ------------------------------------------------------------------------------------------------ sessions
class IoBoundSession:
    """An ONNX Runtime CUDA/TensorRT session with deliberate options (TensorRT: one optimisation profile from batch 1
    to ``max_bs``, engines cached next to the ONNX file); ``run`` = copy in + run + copy out (IO binding), and
    ``split(batch)`` times those three apart."""

    def __init__(self, onnx_path: str, provider: str, precision: str, input_shape: Sequence[int], max_bs: int,
                 device_id: int = 0, quick: bool = False, simulate: bool = False):
        import onnxruntime as ort

        self.ort, self.device_id = ort, device_id
        self.kind = "cpu" if simulate else "cuda"
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        cuda_opts = {"device_id": device_id, "cudnn_conv_algo_search": "HEURISTIC" if quick else "EXHAUSTIVE"}
        if precision == "fp32":
            cuda_opts["use_tf32"] = 0  # a true fp32 comparison (TF32 convolutions differ by ~1e-3)
        providers: list = []
        if provider == "ort-tensorrt":
            cache = Path(onnx_path).parent / "trt-cache"
            cache.mkdir(exist_ok=True)
            name = _input_name(onnx_path)
            c, h, w = input_shape
            shape = lambda b: f"{name}:{b}x{c}x{h}x{w}"  # noqa: E731
            trt = {"device_id": device_id, "trt_fp16_enable": precision == "fp16",
                   "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                   "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache),
                   "trt_profile_min_shapes": shape(1), "trt_profile_max_shapes": shape(max_bs),
                   "trt_profile_opt_shapes": shape(min(max_bs, 8)), "trt_max_workspace_size": 8 << 30}
            if quick:
                trt["trt_builder_optimization_level"] = 2
            providers.append(("TensorrtExecutionProvider", trt))
        providers += [("CUDAExecutionProvider", cuda_opts), "CPUExecutionProvider"]
        if simulate:
            providers = ["CPUExecutionProvider"]
        t0 = time.perf_counter()
        self.option_fallback = None
        try:
            self.sess = ort.InferenceSession(str(onnx_path), so, providers=providers)
        except Exception as e:  # noqa: BLE001 - an ORT build that rejects an option: the essential ones only
            self.option_fallback = f"{type(e).__name__}: {e}"[:500]
            cuda_opts.pop("use_tf32", None)
            if provider == "ort-tensorrt":
                keep = ("device_id", "trt_fp16_enable", "trt_engine_cache_enable", "trt_engine_cache_path",
                        "trt_profile_min_shapes", "trt_profile_max_shapes", "trt_profile_opt_shapes")
                providers[0] = ("TensorrtExecutionProvider", {k: v for k, v in trt.items() if k in keep})
            self.sess = ort.InferenceSession(str(onnx_path), so, providers=providers)
        self.open_s = time.perf_counter() - t0
        self.providers = self.sess.get_providers()
        wanted = "TensorrtExecutionProvider" if provider == "ort-tensorrt" else "CUDAExecutionProvider"
        if simulate:
            wanted = "CPUExecutionProvider"
        if self.providers[0] != wanted:
            raise RuntimeError(f"{wanted} did not load (the session runs on {self.providers[0]})")
        self.name = f"{provider}-{precision}"
        self.device = f"{self.kind}:{device_id}"
        self.input_name = self.sess.get_inputs()[0].name
        self.input_shape = (None, *input_shape)
        self.output_names = [o.name for o in self.sess.get_outputs()]

    def _bind(self, x_dev):
        b = self.sess.io_binding()
        b.bind_ortvalue_input(self.input_name, x_dev)
        for name in self.output_names:
            b.bind_output(name, self.kind, self.device_id)
        return b

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        x = self.ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(batch, dtype=np.float32), self.kind,
                                                  self.device_id)
        b = self._bind(x)
        self.sess.run_with_iobinding(b)
        return b.copy_outputs_to_cpu()

    def split(self, batch: np.ndarray, iters: int = 10) -> dict:
        """Median ms of host-to-device copy, compute (run with inputs and outputs on the device) and
        device-to-host copy of the outputs, at this batch size."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        h2d, comp, d2h = [], [], []
        self.run(x)
        for _ in range(iters):
            t0 = time.perf_counter()
            xd = self.ort.OrtValue.ortvalue_from_numpy(x, self.kind, self.device_id)
            t1 = time.perf_counter()
            b = self._bind(xd)
            t2 = time.perf_counter()
            self.sess.run_with_iobinding(b)
            if hasattr(b, "synchronize_outputs"):
                b.synchronize_outputs()
            t3 = time.perf_counter()
            b.copy_outputs_to_cpu()
            t4 = time.perf_counter()
            h2d.append(t1 - t0)
            comp.append(t3 - t2)
            d2h.append(t4 - t3)
        ms = lambda v: 1e3 * float(np.median(v))  # noqa: E731
        in_mb = x.nbytes / 2**20
        out = {"bs": int(x.shape[0]), "h2d_ms": ms(h2d), "compute_ms": ms(comp), "d2h_ms": ms(d2h),
               "input_mib": in_mb}
        total = out["h2d_ms"] + out["compute_ms"] + out["d2h_ms"]
        out["compute_share"] = out["compute_ms"] / total if total > 0 else None
        return out


def _input_name(onnx_path: str) -> str:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in inits)


# ------------------------------------------------------------------------------------------------ per model
def _export_job(name: str) -> tuple[str, str, float]:
    """In a worker process: build the synthetic-weight model and export (or find cached) its ONNX file."""
    sys.path.insert(0, str(HERE.parent / "lib"))
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 4))
    from zooinfer import export, recipes
    from zooinfer.models import build_model

    t0 = time.perf_counter()
    path = export.export_onnx(recipes.get(name), build_model(name))
    return name, str(path), time.perf_counter() - t0


def real_inputs(recipe, dataset, n: int) -> np.ndarray:
    from zooinfer.bench import real_views

    return np.stack(real_views(recipe, dataset, n))


class _NullAccumulator:
    def update(self, sample, prediction) -> None:
        pass

    def compute(self) -> dict:
        return {}


def _stream(dataset, n: int):
    return dataset.repeated(n)


def end_to_end(recipe, dataset, session, bs: int, n: int, workers: int) -> dict:
    """The pipeline over the embedded samples stretched to ``n`` images (a multiple of the batch, so a TensorRT
    session sees one shape); the real metric when its libraries are there, else none (throughput only)."""
    from zooinfer import pipeline

    views = len(recipe.preprocess(dataset[0].path)[0])
    per_batch = max(1, bs // views)
    n = max(per_batch * 3, (n // per_batch) * per_batch)
    stream = _stream(dataset, n)
    note = None
    try:
        acc = recipe.new_accumulator(stream)
    except ImportError as e:
        acc, note = _NullAccumulator(), f"metric skipped ({e})"
    import inspect

    params = inspect.signature(pipeline.run).parameters  # the preprocessing threads' keyword (renamed once)
    threads = {k: workers for k in ("prep_threads", "workers") if k in params}
    res = pipeline.run(recipe, stream, session, bs=bs, accumulator=acc, progress=False, **dict(list(threads.items())[:1]))
    return {"bs": bs, "images": res.n_done, "images_per_s": res.throughput, "wall_s": res.wall_s,
            "inference_share": res.inference_share, "stages": res.stage_table(), "note": note}


def parity_rows(export_mod, reference: list[np.ndarray], outputs: list[np.ndarray], names: list[str],
                precision: str) -> dict:
    rows = export_mod.parity(reference, outputs, names)
    worst = max((r["max_rel"] for r in rows), default=float("nan"))
    agree = [r["argmax_agree"] for r in rows if "argmax_agree" in r]
    return {"rows": rows, "max_rel": worst, "max_abs": max((r["max_abs"] for r in rows), default=float("nan")),
            "argmax_agree": min(agree) if agree else None, "ok": bool(worst <= PARITY_TOL[precision])}


def check_model(name: str, onnx_path: str, args: argparse.Namespace, budget: Budget, diag: dict,
                monitor: PowerMonitor | None, idle_w: float | None) -> dict:
    import torch

    from zooinfer import bench, export, recipes
    from zooinfer.backends import open_session
    from zooinfer.models import build_model

    t_model = time.perf_counter()
    out: dict[str, Any] = {"model": name, "onnx": onnx_path, "configs": {}, "skipped": [], "errors": {}}
    recipe = recipes.get(name)
    dataset = recipe.open_dataset(None)
    sizes = batch_sizes_for(name, args)
    views = len(recipe.preprocess(dataset[0].path)[0])
    n_parity, bs_e2e, n_stream = check_sizes(recipe, views, sizes, args.quick)
    x = real_inputs(recipe, dataset, n_parity)
    samples = real_inputs(recipe, dataset, 4)
    timing = dict(min_time=0.4 if args.quick else 1.0, min_iters=5, warmup=2, max_iters=200)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = build_model(name)
    ref_backend = "torch" if args.simulate_cpu else "torch-cuda"
    ref_sess = open_session(ref_backend, model=model, device_id=args.device_id)
    ref = ref_sess.run(x)
    out["reference"] = {"backend": f"{ref_backend} fp32 (TF32 off)", "inputs": list(x.shape)}
    sim = args.simulate_cpu

    def energy_of(session, bs: int) -> dict | None:
        if monitor is None:
            return None
        batch = bench.make_batch(samples, bs)
        session.run(batch)
        n, e0 = 0, monitor.energy_counter()
        t0 = monitor.clock()
        while monitor.clock() - t0 < (1.0 if args.quick else 2.0) or n < 3:
            session.run(batch)
            n += 1
        t1 = monitor.clock()
        e1 = monitor.energy_counter()
        images = n * bs / views
        return monitor.window(t0, t1, images, idle_w, None if e0 is None or e1 is None else e1 - e0)

    if not args.no_torch and budget.allows(15):
        try:
            rows = bench.inference_sweep(ref_sess, samples, sizes, **timing)
            best = max(rows, key=lambda r: r["throughput"])
            out["configs"]["torch-cuda-fp32"] = {"sweep": rows, "energy": energy_of(ref_sess, best["bs"])}
        except Exception as e:  # noqa: BLE001
            out["errors"]["torch-cuda-fp32"] = f"{type(e).__name__}: {e}"
    for backend, precision in CONFIGS:
        key = f"{backend}-{precision}"
        if backend == "ort-tensorrt" and (args.no_trt or not diag.get("tensorrt", {}).get("usable")):
            out["skipped"].append(f"{key}: TensorRT provider not usable" if not args.no_trt else f"{key}: --no-trt")
            continue
        if backend == "ort-cuda" and not diag.get("cuda", {}).get("usable"):
            out["skipped"].append(f"{key}: CUDA provider not usable")
            continue
        if args.quick and key == "ort-tensorrt-fp32":
            out["skipped"].append(f"{key}: --quick")
            continue
        need = 60 if backend == "ort-tensorrt" else 15  # TensorRT builds an engine first
        if not budget.allows(need):
            out["skipped"].append(f"{key}: budget ({budget.model_left():.0f} s left for {name})")
            continue
        cfg: dict[str, Any] = {}
        try:
            sess = IoBoundSession(onnx_path, backend, precision, recipe.input_shape, max(sizes), args.device_id,
                                  args.quick, sim)
            t0 = time.perf_counter()
            got = sess.run(x)  # TensorRT: the engine is built here, on the first run
            cfg["open_s"], cfg["first_run_s"] = sess.open_s, time.perf_counter() - t0
            cfg["build_s"] = cfg["open_s"] + cfg["first_run_s"]  # TensorRT builds at open or at the first run
            cfg["providers"], cfg["option_fallback"] = sess.providers, sess.option_fallback
            cfg["parity"] = parity_rows(export, ref, got, recipe.output_names, precision)
            cfg["sweep"] = bench.inference_sweep(sess, samples, sizes, **timing)
            sbs = min(args.split_bs, max(sizes))
            cfg["split"] = sess.split(bench.make_batch(samples, sbs))
            best = max(cfg["sweep"], key=lambda r: r["throughput"])
            if budget.allows(5):
                cfg["energy"] = energy_of(sess, best["bs"])
            out["configs"][key] = cfg
        except Exception as e:  # noqa: BLE001 - one configuration failing must not cost the others
            out["errors"][key] = f"{type(e).__name__}: {e}"[:2000]
            if cfg:
                out["configs"][key] = cfg
        finally:
            sess = None
    for precision in OPENVINO_CONFIGS if (diag.get("openvino") or {}).get("gpus") else ():
        key = f"openvino-gpu-{precision}"
        if not budget.allows(20):
            out["skipped"].append(f"{key}: budget ({budget.model_left():.0f} s left for {name})")
            continue
        cfg = {}
        try:
            from zooinfer.backends.openvino import OpenVinoSession

            t0 = time.perf_counter()
            sess = OpenVinoSession(onnx_path, precision=precision, device=diag["openvino"]["gpus"][0], name=key)
            got = sess.run(x)
            cfg["build_s"] = time.perf_counter() - t0  # compile + first run
            cfg["parity"] = parity_rows(export, ref, got, recipe.output_names, precision)
            cfg["sweep"] = bench.inference_sweep(sess, samples, sizes, **timing)
            out["configs"][key] = cfg
        except Exception as e:  # noqa: BLE001 - one configuration failing must not cost the others
            out["errors"][key] = f"{type(e).__name__}: {e}"[:2000]
        finally:
            sess = None
    # end-to-end: the project's ort-cuda backend, and the TensorRT fp16 session when it ran
    workers = max(2, min(8, (os.cpu_count() or 4) // 2))
    e2e: dict[str, Any] = {}
    for label in ("ort-cuda", "ort-tensorrt-fp16"):
        if not budget.allows(10):
            out["skipped"].append(f"end-to-end {label}: budget")
            continue
        try:
            if label == "ort-cuda":
                if not diag.get("cuda", {}).get("usable"):
                    continue
                sess = open_session("onnxruntime" if sim else "ort-cuda", onnx_path=onnx_path,
                                    device_id=args.device_id)
            else:
                if "ort-tensorrt-fp16" not in out["configs"]:
                    continue
                sess = IoBoundSession(onnx_path, "ort-tensorrt", "fp16", recipe.input_shape, max(sizes),
                                      args.device_id, args.quick, sim)
            sess.run(bench.make_batch(samples, bs_e2e))
            e2e[label] = end_to_end(recipe, dataset, sess, bs_e2e, n_stream, workers)
        except Exception as e:  # noqa: BLE001
            out["errors"][f"end-to-end {label}"] = f"{type(e).__name__}: {e}"[:2000]
    if not e2e and budget.allows(10):  # no ONNX Runtime GPU provider: the stream on PyTorch CUDA
        try:
            e2e["torch-cuda"] = end_to_end(recipe, dataset, ref_sess, bs_e2e, n_stream, workers)
        except Exception as e:  # noqa: BLE001
            out["errors"]["end-to-end torch-cuda"] = f"{type(e).__name__}: {e}"[:2000]
    out["end_to_end"] = e2e
    out["views_per_image"] = views
    out["seconds"] = time.perf_counter() - t_model
    del ref_sess, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


# ------------------------------------------------------------------------------------------------ tables
def published_rows(recipe_name: str) -> dict[str, list]:
    """The guide's throughput rows of one model: NVIDIA T4 and Ascend 310P (each a list of PerfRow)."""
    from zooinfer import recipes

    perf = recipes.get(recipe_name).published.performance
    return {"T4": [p for p in perf if "T4" in p.hardware], "310P": [p for p in perf if "310P" in p.hardware]}


def _best_published(rows: list, bs: int) -> tuple[float | None, str | None]:
    """The highest published images/s at ``bs`` (else at the nearest published batch size), and its row."""
    best = None
    for r in rows:
        if not r.fps:
            continue
        b = bs if bs in r.fps else min(r.fps, key=lambda k: (abs(k - bs), k))
        if best is None or r.fps[b] > best[0]:
            best = (r.fps[b], f"{r.hardware} bs{b}")
    return best if best else (None, None)


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.{nd}g}"
    return str(v)


def markdown_tables(results: dict) -> str:
    """The markdown report: per model and configuration, parity, speed per batch size, the IO split and energy; then
    the best GPU figure next to the guides' T4 and 310P figures; then the end-to-end streams."""
    from zooinfer.report import markdown_table

    gpu = results.get("gpu") or {}
    lines = [f"GPU: **{gpu.get('name', '?')}** (driver {gpu.get('driver', '?')}); "
             f"onnxruntime {results.get('onnxruntime', {}).get('version', '?')}; torch {results.get('torch', '?')}"]
    for s in results.get("providers_text", []):
        lines.append(f"- {s}")
    rows, vs, e2e_rows = [], [], []
    for name, m in results.get("models", {}).items():
        views = m.get("views_per_image", 1)
        best_cfg = None
        for key, cfg in m.get("configs", {}).items():
            by_bs = {r["bs"]: r for r in cfg.get("sweep", [])}
            best = max(cfg.get("sweep", []), key=lambda r: r["throughput"], default=None)
            par, split, en = cfg.get("parity") or {}, cfg.get("split") or {}, cfg.get("energy") or {}
            row = {"model": name, "config": key,
                   "parity max rel": _fmt(par.get("max_rel")) + ("" if not par else (" ok" if par.get("ok") else
                                                                                   " **CHECK**")),
                   "open+first run s": _fmt(cfg.get("build_s")),
                   **{f"img/s bs{b}": _fmt(by_bs[b]["throughput"] / views, 4) if b in by_bs else "" for b in (1, 8, 32)},
                   "bs1 p99 ms": _fmt(by_bs[1]["latency_ms_p99"]) if 1 in by_bs else "",
                   "H2D/compute/D2H ms": (f"{split['h2d_ms']:.2f} / {split['compute_ms']:.2f} / {split['d2h_ms']:.2f}"
                                          f" (bs{split['bs']})") if split else "",
                   "J/img": _fmt(en.get("j_per_image_counter", en.get("j_per_image"))),
                   "J/img above idle": _fmt(en.get("j_per_image_above_idle"))}
            rows.append(row)
            if best and (best_cfg is None or best["throughput"] > best_cfg[1]["throughput"]):
                best_cfg = (key, best)
        if best_cfg:
            key, best = best_cfg
            t4, t4_row = _best_published(published_rows(name)["T4"], best["bs"])
            p310, p_row = _best_published(published_rows(name)["310P"], best["bs"])
            vs.append({"model": name, "best config": key, "bs": best["bs"],
                       "this GPU img/s": _fmt(best["throughput"] / views, 4),
                       "T4 img/s (guide)": _fmt(t4, 4), "T4 row": t4_row or "",
                       "310P img/s (guide)": _fmt(p310, 4), "310P row": p_row or ""})
        for label, e in m.get("end_to_end", {}).items():
            e2e_rows.append({"model": name, "backend": label, "bs": e["bs"], "images": e["images"],
                             "end-to-end img/s": _fmt(e["images_per_s"], 4),
                             "inference share of wall": _fmt(e["inference_share"]), "note": e.get("note") or ""})
        for what, err in m.get("errors", {}).items():
            lines.append(f"- {name} {what}: error: {err.splitlines()[0][:300]}")
        for what in m.get("skipped", []):
            lines.append(f"- {name}: skipped {what}")
    lines += ["", "**Parity, speed, IO split, energy** (img/s counts images: PyramidBox's two views are one image)",
              "", markdown_table(rows) if rows else "_(nothing measured)_", "",
              "**Best configuration vs the guides' published figures**", "",
              markdown_table(vs) if vs else "_(nothing measured)_", "",
              "**End-to-end stream (embedded samples, preprocessing on the host's cores)**", "",
              markdown_table(e2e_rows) if e2e_rows else "_(nothing measured)_"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    previous = json.loads(os.environ.get(REEXEC_ENV) or "{}")
    spent = max(0.0, time.time() - float(previous.get("started_at", STARTED_AT)))
    t_start = time.monotonic() - spent
    gpu, how = ({"name": "simulated on the CPU (--simulate-cpu): figures mean nothing", "via": "simulation"},
                "--simulate-cpu") if args.simulate_cpu else detect_gpu()
    if gpu is None:
        say(f"No NVIDIA GPU on this machine ({how}): nothing measured.")
        return 0
    say(f"GPU: {gpu.get('name')} (found by {how})")
    budget = Budget(args.total_budget_s, args.model_budget_s, spent_s=spent)
    install = None if args.simulate_cpu else ensure_ort_gpu(args, argv)  # may re-execute this script
    diag = provider_diagnostics(args.device_id)
    if args.simulate_cpu:
        for key in ("cuda", "tensorrt"):
            diag[key] = {**diag.get(key, {}), "usable": True, "simulated": True}
    diag["openvino"] = openvino_status(args.simulate_cpu)
    text = [*describe_providers(diag), describe_openvino(diag["openvino"])]
    for line in text:
        say(line)
    import torch

    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    results: dict[str, Any] = {"started": dt.datetime.now().isoformat(timespec="seconds"), "gpu": gpu,
                               "args": vars(args), "install": install, "previous_install": previous.get("install"),
                               "onnxruntime": diag.get("status"), "providers": diag, "providers_text": text,
                               "torch": torch.__version__, "torch_cuda": torch.version.cuda, "models": {}}
    try:
        from zooinfer.report import environment

        results["environment"] = environment()
    except Exception as e:  # noqa: BLE001
        results["environment"] = {"error": str(e)}
    monitor = None
    idle_w = None
    try:
        fake = (lambda: 100.0 + 50.0 * (time.perf_counter() % 1.0)) if args.simulate_cpu else None
        monitor = PowerMonitor(args.device_id, read_power=fake).__enter__()
        idle_w = measure_idle(monitor, 1.0)
        results["idle_w"] = idle_w
    except Exception as e:  # noqa: BLE001 - energy is one figure among many
        results["energy_error"] = f"{type(e).__name__}: {e}"
        say(f"GPU power readings unavailable ({results['energy_error']}): no energy figures")
        monitor = None
    # the exports run in worker processes (CPU) while the GPU measures the previous model
    pool = ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn"))
    futures = {m: pool.submit(_export_job, m) for m in args.models}
    try:
        for i, name in enumerate(args.models):
            share = budget.start_model(len(args.models) - i)
            say(f"== {name} (budget {share:.0f} s, {budget.left():.0f} s left in all)")
            try:
                _, onnx_path, export_s = futures[name].result(timeout=max(30.0, budget.left()))
            except Exception as e:  # noqa: BLE001
                results["models"][name] = {"model": name, "errors": {"export": f"{type(e).__name__}: {e}"}}
                say(f"   export failed: {e}")
                continue
            try:
                res = check_model(name, onnx_path, args, budget, diag, monitor, idle_w)
                res["export_s"] = export_s
            except Exception as e:  # noqa: BLE001 - the next model still runs
                res = {"model": name, "errors": {"check": f"{type(e).__name__}: {e}"}}
            results["models"][name] = res
            say(f"   done in {res.get('seconds', 0):.0f} s; errors: {list(res.get('errors', {})) or 'none'}; "
                f"skipped: {res.get('skipped') or 'none'}")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        if monitor is not None:
            monitor.__exit__(None, None, None)
    results["wall_s"] = time.monotonic() - t_start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    from zooinfer.report import write_json

    write_json(out / f"accelerator-{stamp}.json", results)
    md = markdown_tables(results)
    (out / f"accelerator-{stamp}.md").write_text(md + "\n")
    say(md)
    say(f"\nwritten: {out / f'accelerator-{stamp}.json'} and .md ({results['wall_s']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
