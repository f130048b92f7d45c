"""Inference backends behind one interface (``run(batch) -> list[np.ndarray]``, ``name``, ``device``,
``input_shape``). ``open_session`` picks one by name; optional runtimes are imported only when chosen."""
from __future__ import annotations

import os

from ..errors import BackendError
from .base import Session, check_batch, static_batch

BACKENDS = ("onnxruntime", "ort-cuda", "ort-tensorrt", "torch", "torch-cuda", "acl", "bins")

__all__ = ["BACKENDS", "Session", "check_batch", "open_session", "static_batch"]


def open_session(backend: str, *, onnx_path: str | os.PathLike | None = None, model=None,
                 om_path: str | os.PathLike | None = None, threads: int | None = None, fp16: bool = False,
                 device_id: int = 0, input_shape: tuple[int | None, ...] | None = None) -> Session:
    """Open a session of ``backend`` (one of :data:`BACKENDS`, except ``bins`` which reads result files instead).

    ``onnx_path`` for the ONNX Runtime backends, ``model`` (an nn.Module) for torch, ``om_path`` for acl.
    """
    if backend in ("onnxruntime", "ort-cuda", "ort-tensorrt"):
        from .onnxruntime import OrtSession

        if onnx_path is None:
            raise BackendError(f"backend {backend!r} needs an ONNX file")
        return OrtSession(onnx_path, backend, threads=threads, fp16=fp16, device_id=device_id)
    if backend in ("torch", "torch-cuda"):
        from .torch import TorchSession

        if model is None:
            raise BackendError(f"backend {backend!r} needs a model")
        return TorchSession(model, device="cpu" if backend == "torch" else f"cuda:{device_id}", threads=threads,
                            input_shape=input_shape or (None, None, None, None))
    if backend == "acl":
        from .acl import AclSession

        if om_path is None:
            raise BackendError("backend 'acl' needs om_path= (the .om file atc produced)")
        return AclSession(om_path, device_id)
    raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)} "
                       "('bins' reads an ais_bench/benchmark result folder: pass outputs_dir=)")
