"""The one backend registry: each backend declares once what it needs, which resource it occupies and how it opens.

Needs are artefact names (fields of :class:`Artefacts`):

- ``onnx_path``: an ONNX file (``Evaluation.export`` writes it, or the run's ``onnx_path=``);
- ``model``: the torch ``nn.Module`` (``Evaluation.prepare`` builds it from ``weights=``);
- ``om_path``: the ``.om`` file ``atc`` produced (``om_path=``);
- ``results_dir`` + ``output_layout``: the folder an external tool wrote (``results_dir=``) and the per-sample output
  shapes to read it back with (derived from the torch model).

Everything that opens sessions (``Evaluation``, the Ray tasks in ``distributed``, ``bench``/``benchmarks/run.py``)
asks this registry; nothing else decides by a backend's name what it needs or where it runs. Optional runtimes
(onnxruntime GPU providers, torch CUDA, OpenVINO, aclruntime) are imported only when such a backend is opened.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Callable

from ..errors import BackendError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..config import RunConfig
    from .base import Session
    from .bins import OutputReader

#: what each artefact is and which parameter (or step) provides it, for error messages
ARTEFACT_HELP = {
    "onnx_path": "an ONNX file (Evaluation.export() writes it, or pass onnx_path=)",
    "model": "the torch model (Evaluation.prepare() builds it from weights=)",
    "om_path": "om_path= (the .om file atc produced)",
    "results_dir": "results_dir= (the folder ais_bench/benchmark wrote)",
    "output_layout": "the per-sample output shapes of the model (Evaluation derives them from the torch model)",
}
#: resources a backend occupies: where its sessions run (the Ray tasks ask for one GPU / NPU per task)
RESOURCES = ("cpu", "gpu", "npu")


@dataclass(frozen=True)
class OutputLayout:
    """The shapes of one sample's outputs (batch axis removed, ONNX order) and the network inputs (views) per sample:
    what a result-file reader needs to cut a tool's files back into outputs."""

    shapes: tuple[tuple[int, ...], ...]
    views: int = 1


@dataclass(frozen=True)
class Artefacts:
    """The files and objects a session is opened from; a backend reads only the ones it declares in ``needs``."""

    onnx_path: str | os.PathLike | None = None
    model: Any = None
    om_path: str | os.PathLike | None = None
    results_dir: str | os.PathLike | None = None
    output_layout: OutputLayout | None = None


#: ``SessionOptions.optimized_cache`` values: ONNX Runtime (CPU) keeps the optimised graph next to the model file
OPTIMIZED_CACHE = ("write", "read", "off")


@dataclass(frozen=True)
class SessionOptions:
    """How to open a session: inference ``threads`` (None: the backend's default), ``fp16`` (TensorRT), the GPU/NPU
    ``device_id``; ``input_shape`` the torch session reports (None: all dynamic); ``optimized_cache`` for ONNX Runtime
    on CPU: "write" (read a fresh cached optimised graph, else write one), "read" (read a fresh one, never write:
    concurrent Ray tasks would race on the file), "off"; ``profile`` turns ONNX Runtime's per-node profiler on;
    ``disabled_optimizers``: ONNX Runtime graph transformers not to run (an INT8 build with nodes kept in fp32 needs
    ``WeightBiasQuantization`` off: see zooinfer.int8)."""

    threads: int | None = None
    fp16: bool = False
    device_id: int = 0
    input_shape: tuple[int | None, ...] | None = None
    optimized_cache: str = "write"
    profile: bool = False
    disabled_optimizers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.optimized_cache not in OPTIMIZED_CACHE:
            raise BackendError(f"optimized_cache must be one of {', '.join(OPTIMIZED_CACHE)}, "
                               f"got {self.optimized_cache!r}")

    @classmethod
    def from_config(cls, config: "RunConfig", **overrides: Any) -> "SessionOptions":
        """The options a run's configuration asks for (``threads``, ``precision``, ``device_id``), then
        ``overrides`` (e.g. a Ray task's own thread count and device)."""
        values = {"threads": config.threads, "fp16": config.precision == "fp16", "device_id": config.device_id}
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True)
class Backend:
    """One backend: its ``name``, the artefacts it ``needs`` (fields of :class:`Artefacts`, in the order they are
    checked), the ``resource`` it occupies (cpu, gpu, npu), how to open it, and a one-line ``summary``."""

    name: str
    needs: tuple[str, ...]
    resource: str
    opener: Callable[[Artefacts, SessionOptions], Any]
    summary: str
    #: a cheap check that the runtime can open here: None when it can, else why not (None: nothing to check)
    probe: Callable[[], str | None] | None = None

    def __post_init__(self) -> None:
        known = {f.name for f in fields(Artefacts)}
        if not set(self.needs) <= known or self.resource not in RESOURCES:
            raise BackendError(f"backend {self.name!r}: needs must be among {sorted(known)} and resource one of "
                               f"{RESOURCES}; got {self.needs}, {self.resource!r}")

    @property
    def reads_stored_results(self) -> bool:
        """True when the backend computes nothing: it reads outputs an external tool wrote (nothing to time or to
        spread over processes)."""
        return "results_dir" in self.needs

    def unavailable(self) -> str | None:
        """Why this backend's runtime cannot open on this machine (a missing package, provider or device), or None;
        checked when a run's configuration is built, before anything slow runs."""
        return self.probe() if self.probe is not None else None

    def missing_error(self, need: str) -> BackendError:
        """The error for an artefact this backend needs and did not get."""
        return BackendError(f"backend {self.name!r} needs {ARTEFACT_HELP[need]}")

    def check(self, artefacts: Artefacts) -> None:
        """Raise a BackendError naming the first artefact this backend needs that ``artefacts`` lacks."""
        for need in self.needs:
            if getattr(artefacts, need) is None:
                raise self.missing_error(need)

    def open(self, artefacts: Artefacts, options: SessionOptions | None = None) -> "Session | OutputReader":
        """A new session (for stored results: a reader with ``read(key)``) over ``artefacts``."""
        self.check(artefacts)
        return self.opener(artefacts, options or SessionOptions())


# ---------------------------------------------------------------------------------------------------- openers
def _ort(backend: str) -> Callable[[Artefacts, SessionOptions], Any]:
    def open_ort(a: Artefacts, o: SessionOptions):
        from .onnxruntime import OrtSession

        cache: bool | str = {"write": True, "read": "read", "off": False}[o.optimized_cache]
        return OrtSession(a.onnx_path, backend, threads=o.threads, fp16=o.fp16, device_id=o.device_id,
                          cache_optimized=cache, profile=o.profile, disabled_optimizers=o.disabled_optimizers)

    return open_ort


def _torch(on_gpu: bool) -> Callable[[Artefacts, SessionOptions], Any]:
    def open_torch(a: Artefacts, o: SessionOptions):
        from .torch import TorchSession

        return TorchSession(a.model, device=f"cuda:{o.device_id}" if on_gpu else "cpu", threads=o.threads,
                            input_shape=o.input_shape or (None, None, None, None))

    return open_torch


def _acl(a: Artefacts, o: SessionOptions):
    from .acl import AclSession

    return AclSession(a.om_path, o.device_id)


def _ort_provider(backend: str) -> Callable[[], str | None]:
    def probe() -> str | None:
        from .onnxruntime import PROVIDERS

        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime is not installed"
        available = ort.get_available_providers()
        if PROVIDERS[backend][0] not in available:
            return (f"it needs {PROVIDERS[backend][0]}, but this onnxruntime build offers only {available}; install "
                    "onnxruntime-gpu (matching your CUDA/TensorRT), or use backend='onnxruntime'")
        return None

    return probe


def _torch_cuda_probe() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return "it needs a CUDA build of PyTorch and a GPU (torch.cuda.is_available() is False); use backend='torch'"
    return None


def _acl_probe() -> str | None:
    import importlib.util

    if importlib.util.find_spec("ais_bench") is None:
        from .acl import INSTALL_HINT

        return "ais_bench is not installed. " + INSTALL_HINT
    return None


def _bins(a: Artefacts, o: SessionOptions):
    from .bins import OutputReader

    return OutputReader(a.results_dir, list(a.output_layout.shapes), views=a.output_layout.views)


def _openvino(a: Artefacts, o: SessionOptions):
    from .openvino import OpenVinoSession

    return OpenVinoSession(a.onnx_path, precision="fp32", threads=o.threads)


def _openvino_probe() -> str | None:
    from .openvino import unavailable

    return unavailable()


def _null(a: Artefacts, o: SessionOptions):
    from .null import NullSession

    return NullSession(a.model, input_shape=o.input_shape)


REGISTRY: dict[str, Backend] = {b.name: b for b in (
    Backend("onnxruntime", ("onnx_path",), "cpu", _ort("onnxruntime"), "ONNX Runtime, CPU execution provider"),
    Backend("ort-cuda", ("onnx_path",), "gpu", _ort("ort-cuda"), "ONNX Runtime, CUDA execution provider",
            _ort_provider("ort-cuda")),
    Backend("ort-tensorrt", ("onnx_path",), "gpu", _ort("ort-tensorrt"),
            "ONNX Runtime, TensorRT execution provider (precision fp16 possible)", _ort_provider("ort-tensorrt")),
    Backend("torch", ("model",), "cpu", _torch(False), "PyTorch eager on the CPU (the parity reference)"),
    Backend("torch-cuda", ("model",), "gpu", _torch(True), "PyTorch eager on a CUDA GPU", _torch_cuda_probe),
    Backend("openvino", ("onnx_path",), "cpu", _openvino,
            "OpenVINO on the CPU, f32 (set explicitly: not the CPU plugin's bf16 default on bf16 CPUs)",
            _openvino_probe),
    Backend("acl", ("om_path",), "npu", _acl, "an Ascend .om file through ais_bench/aclruntime", _acl_probe),
    Backend("bins", ("results_dir", "output_layout"), "cpu", _bins,
            "result files an external tool (ais_bench, benchmark) wrote, scored without inference"),
    Backend("null", ("model",), "cpu", _null,
            "zero outputs of the model's shapes, no compute (the torch model only gives the shapes): the pipeline's "
            "ceiling"),
)}


def names() -> tuple[str, ...]:
    """The registered backend names, in the order the documentation lists them."""
    return tuple(REGISTRY)


def get(name: str) -> Backend:
    """The backend called ``name``; an unknown name is a BackendError listing the valid ones."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        import difflib

        near = difflib.get_close_matches(str(name), list(REGISTRY), n=2, cutoff=0.6)
        hint = f" (did you mean {' or '.join(map(repr, near))}?)" if near else ""
        raise BackendError(f"unknown backend {name!r}{hint}; choose one of {', '.join(REGISTRY)}") from None


def open_for(config: "RunConfig", artefacts: Artefacts, backend: str | None = None,
             **overrides: Any) -> "Session | OutputReader":
    """A session of ``backend`` (default: the run's) with the run's settings (``SessionOptions.from_config``, then
    ``overrides``) over ``artefacts``."""
    return get(backend or config.backend).open(artefacts, SessionOptions.from_config(config, **overrides))
