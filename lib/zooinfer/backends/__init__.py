"""Inference backends behind one interface (``run(batch) -> list[np.ndarray]``, ``name``, ``device``,
``input_shape``), declared once in :mod:`zooinfer.backends.registry` (what each needs, which resource it occupies,
how it opens). ``open_session`` is the short way to open one; optional runtimes are imported only when chosen."""
from __future__ import annotations

import os

from .base import Session, check_batch, static_batch
from .registry import Artefacts, Backend, OutputLayout, SessionOptions, get, names, open_for

BACKENDS = names()

__all__ = ["BACKENDS", "Artefacts", "Backend", "OutputLayout", "Session", "SessionOptions", "check_batch", "get",
           "names", "open_for", "open_session", "static_batch"]


def open_session(backend: str, *, onnx_path: str | os.PathLike | None = None, model=None,
                 om_path: str | os.PathLike | None = None, threads: int | None = None, fp16: bool = False,
                 device_id: int = 0, input_shape: tuple[int | None, ...] | None = None,
                 disabled_optimizers: tuple[str, ...] = ()) -> Session:
    """Open a session of ``backend`` (one of :data:`BACKENDS`; ``bins`` needs a results folder and output layout:
    open it with ``get("bins").open(Artefacts(...))``).

    ``onnx_path`` for the ONNX Runtime backends, ``model`` (an nn.Module) for torch, ``om_path`` for acl;
    ``disabled_optimizers``: ONNX Runtime graph transformers not to run (see :class:`SessionOptions`).
    """
    artefacts = Artefacts(onnx_path=onnx_path, model=model, om_path=om_path)
    options = SessionOptions(threads=threads, fp16=fp16, device_id=device_id, input_shape=input_shape,
                             disabled_optimizers=tuple(disabled_optimizers))
    return get(backend).open(artefacts, options)
