"""ONNX Runtime sessions (CPU, CUDA, TensorRT execution providers) with deliberate settings.

Settings: full graph optimisation, the optimised graph cached next to the model (``<model>.ort-opt.onnx``) so later
sessions skip optimisation, intra-op threads = physical cores unless told otherwise, sequential execution (one
inter-op thread: these graphs are chains), memory arena on, IO binding on the GPU providers.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import BackendError
from .base import check_batch

#: our backend names -> execution providers, in priority order
PROVIDERS = {
    "onnxruntime": ["CPUExecutionProvider"],
    "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "ort-tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def physical_cores() -> int:
    """Physical core count (falls back to logical CPUs available to this process)."""
    from ..cpu import physical_cores as cores

    return cores()


def _machine_tag(ort_version: str) -> str:
    """Optimised graphs may hold CPU-specific kernels (NCHWc blocks): cache them per CPU model and ORT version."""
    import hashlib
    import platform

    from ..cpu import cpu_name

    cpu = f"{platform.machine()}|{cpu_name()}"
    return hashlib.md5(f"{ort_version}|{cpu}".encode()).hexdigest()[:8]


def optimized_cache_path(model_path: str | os.PathLike, disabled_optimizers: Sequence[str] = ()) -> Path:
    """Where the CPU session caches ``model_path``'s fully optimised graph (``<model>.ort-opt-<machine>.onnx``, one
    more tag when graph transformers are disabled): the graph ONNX Runtime really runs here (what
    :func:`zooinfer.int8.kernel_counts` reads)."""
    import onnxruntime as ort

    tag = _machine_tag(ort.__version__ + ("|no:" + ",".join(sorted(disabled_optimizers)) if disabled_optimizers
                                          else ""))
    return Path(model_path).with_suffix(f".ort-opt-{tag}.onnx")


class OrtSession:
    """``run(batch) -> list of outputs`` over an ONNX file."""

    def __init__(self, model_path: str | os.PathLike, backend: str = "onnxruntime", *, threads: int | None = None,
                 fp16: bool = False, device_id: int = 0, cache_optimized: bool | str = True, profile: bool = False,
                 io_binding: bool | None = None, disabled_optimizers: Sequence[str] = ()):
        """``cache_optimized`` (CPU only): True reads a fresh cached optimised graph or writes one; "read" reads a
        fresh one but never writes (tasks starting together would race on the file); False neither.
        ``disabled_optimizers``: ONNX Runtime graph transformers not to run (e.g. ``WeightBiasQuantization``, which
        would quantise the weights of nodes an INT8 build keeps in fp32)."""
        import onnxruntime as ort

        if backend not in PROVIDERS:
            raise BackendError(f"unknown ONNX Runtime backend {backend!r}; choose one of {', '.join(PROVIDERS)}")
        available = ort.get_available_providers()
        wanted = PROVIDERS[backend][0]
        if wanted not in available:
            raise BackendError(
                f"backend {backend!r} needs {wanted}, but this onnxruntime build offers only {available}. "
                "Install onnxruntime-gpu (matching your CUDA/TensorRT) for GPU backends, or use backend='onnxruntime'."
            )
        self.model_path = Path(model_path)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = threads or physical_cores()
        so.inter_op_num_threads = 1
        so.enable_mem_pattern = True
        so.enable_cpu_mem_arena = True
        so.log_severity_level = 3
        if profile:
            so.enable_profiling = True
        model = self.model_path
        opt = optimized_cache_path(model, disabled_optimizers)
        if backend == "onnxruntime" and cache_optimized:
            if opt.is_file() and opt.stat().st_mtime >= model.stat().st_mtime:
                model = opt
                so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            elif cache_optimized != "read":
                so.optimized_model_filepath = str(opt)
        providers: list = []
        for p in PROVIDERS[backend]:
            if p not in available:
                continue
            if p == "TensorrtExecutionProvider":
                cache = self.model_path.parent / "trt-cache"
                cache.mkdir(exist_ok=True)
                providers.append((p, {"device_id": device_id, "trt_fp16_enable": fp16,
                                      "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}))
            elif p == "CUDAExecutionProvider":
                providers.append((p, {"device_id": device_id}))
            else:
                providers.append(p)
        extra = {"disabled_optimizers": list(disabled_optimizers)} if disabled_optimizers else {}
        self.sess = ort.InferenceSession(str(model), so, providers=providers, **extra)
        self.name = backend
        self.device = "cpu" if backend == "onnxruntime" else f"cuda:{device_id}"
        self.providers = self.sess.get_providers()
        inp = self.sess.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inp.shape)
        self.output_names = [o.name for o in self.sess.get_outputs()]
        self.threads = so.intra_op_num_threads
        #: GPU providers: the batch is bound once and outputs are allocated on the device by ONNX Runtime and copied
        #: back once (no intermediate host buffers); on CPU the plain ``run`` is already zero-copy
        self.io_binding = (backend != "onnxruntime") if io_binding is None else bool(io_binding)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        check_batch(self, batch)
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if not self.io_binding:
            return self.sess.run(None, {self.input_name: x})
        binding = self.sess.io_binding()
        binding.bind_cpu_input(self.input_name, x)
        kind, _, index = self.device.partition(":")  # "cpu" or "cuda:<id>"
        for name in self.output_names:
            binding.bind_output(name, kind, int(index or 0))
        self.sess.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def end_profiling(self) -> str | None:
        """Stop profiling and return the JSON trace path (when the session was opened with ``profile=True``)."""
        return self.sess.end_profiling()
