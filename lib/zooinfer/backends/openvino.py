"""OpenVINO sessions over an ONNX file (or an OpenVINO IR ``.xml``), with deliberate settings.

Settings: the inference precision is always set (``INFERENCE_PRECISION_HINT``): OpenVINO's CPU plugin otherwise
computes in bf16 on a CPU with AVX-512 BF16 or AMX and in f16 on some GPUs, so a run asking for fp32 would silently
get less. One stream with the latency hint (as ONNX Runtime's sequential execution: one batch at a time, every
thread on it), ``threads`` inference threads (default: physical cores), the batch axis as the model declares it
(dynamic in the exported files). The ``openvino`` package is imported only when a session opens; missing, it is a
BackendError with the install line.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendError
from .base import check_batch

INSTALL_HINT = 'pip install -e ".[openvino]"  (openvino; nncf for the openvino-int8 variant)'

#: our precision names -> OpenVINO's ``INFERENCE_PRECISION_HINT`` values
PRECISIONS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def import_openvino() -> Any:
    """The ``openvino`` module, or a BackendError with the install line."""
    try:
        import openvino
    except ImportError as e:
        raise BackendError(f"the OpenVINO backend needs the Python package 'openvino' ({e}): {INSTALL_HINT}") from None
    return openvino


def unavailable() -> str | None:
    """Why OpenVINO cannot open here (not installed), or None; cheap: does not import it."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return f"openvino is not installed. {INSTALL_HINT}"
    return None


def devices() -> list[str]:
    """The devices OpenVINO sees here (e.g. ['CPU', 'GPU.0']); [] when it is not installed."""
    if unavailable():
        return []
    return list(import_openvino().Core().available_devices)


class OpenVinoSession:
    """``run(batch) -> list of outputs`` (ONNX order) over an ONNX file or an OpenVINO IR ``.xml``.

    ``precision``: fp32 (default), bf16 or fp16, set explicitly as the inference precision hint; layers that a
    quantised model (FakeQuantize / QDQ) marks run in int8 whatever the hint. ``device``: an OpenVINO device name
    ("CPU", "GPU", "GPU.0"). ``threads``: CPU inference threads (None: physical cores)."""

    def __init__(self, model_path: str | os.PathLike, *, precision: str = "fp32", device: str = "CPU",
                 threads: int | None = None, name: str = "openvino"):
        if precision not in PRECISIONS:
            raise BackendError(f"OpenVINO precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        ov = import_openvino()
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise BackendError(f"OpenVINO: model file not found: {self.model_path} (an ONNX file or an IR .xml)")
        core = ov.Core()
        if device.split(".")[0] not in {d.split(".")[0] for d in core.available_devices}:
            raise BackendError(f"OpenVINO sees no device {device!r} here; it sees {core.available_devices}")
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY",
                                  "NUM_STREAMS": 1}
        if device.startswith("CPU"):
            from ..cpu import physical_cores

            config["INFERENCE_NUM_THREADS"] = int(threads or physical_cores())
        model = core.read_model(str(self.model_path))
        self.compiled = core.compile_model(model, device, config)
        self.request = self.compiled.create_infer_request()
        self.name = name
        self.device = "cpu" if device == "CPU" else f"openvino:{device}"
        self.precision = precision
        self.threads = config.get("INFERENCE_NUM_THREADS")
        #: what the plugin actually set (read back: a hint it cannot honour is replaced, e.g. bf16 without bf16)
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.inference_precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)
        shape = model.inputs[0].get_partial_shape()
        self.input_name = model.inputs[0].get_any_name()
        self.input_shape = tuple(d.get_length() if d.is_static else None for d in shape)
        self.output_names = [o.get_any_name() for o in model.outputs]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        check_batch(self, batch)
        x = np.ascontiguousarray(batch, dtype=np.float32)
        res = self.request.infer({0: x}, share_inputs=True, share_outputs=False)  # outputs copied out: ours to keep
        return [np.asarray(res[out]) for out in self.compiled.outputs]


#: OpenVINO CPU runtime layer types (``layerType`` of the compiled model's runtime graph) that run a convolution / a
#: matrix product, and the runtime precisions that are int8
KERNEL_LAYERS = {"conv": ("Convolution", "GroupConvolution", "Deconvolution"), "matmul": ("FullyConnected", "MatMul")}
INT8_PRECISIONS = ("u8", "i8")


def kernel_counts(session: OpenVinoSession) -> dict:
    """What the compiled model really runs: ``{"conv_int8", "conv_float", "matmul_int8", "matmul_float"}`` counts
    from the runtime graph's ``layerType`` / ``runtimePrecision`` (float: f32, bf16 or f16, per the hint), and
    ``float_conv_layers`` (the first 20 names)."""
    out: dict[str, Any] = {f"{k}_{p}": 0 for k in KERNEL_LAYERS for p in ("int8", "float")}
    floats = []
    for op in session.compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        layer, precision = rt["layerType"].astype(str), rt["runtimePrecision"].astype(str)
        for kind, layers in KERNEL_LAYERS.items():
            if layer in layers:
                int8 = precision in INT8_PRECISIONS
                out[f"{kind}_{'int8' if int8 else 'float'}"] += 1
                if kind == "conv" and not int8:
                    floats.append(op.get_friendly_name())
    out["float_conv_layers"] = floats[:20]
    return out


def kernel_summary(k: dict) -> str:
    """One line: 'OpenVINO runs 132 Conv + 0 FC/MatMul as int8; 3 Conv + 1 FC/MatMul stayed float'."""
    return (f"OpenVINO runs {k['conv_int8']} Conv + {k['matmul_int8']} FC/MatMul as int8; "
            f"{k['conv_float']} Conv + {k['matmul_float']} FC/MatMul stayed float")
