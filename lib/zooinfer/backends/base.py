"""The one interface every inference backend offers."""
from __future__ import annotations

from typing import Protocol

import numpy as np


class Session(Protocol):
    """An inference session: ``run`` takes a float32 NCHW batch and returns the outputs in ONNX order."""

    name: str  # backend name, e.g. "onnxruntime"
    device: str  # e.g. "cpu", "cuda:0", "Ascend310P3 device 0"
    #: (N, C, H, W) the session accepts; N (or H, W) is None where the model is dynamic
    input_shape: tuple[int | None, ...]

    def run(self, batch: np.ndarray) -> list[np.ndarray]: ...


def check_batch(session: Session, batch: np.ndarray) -> None:
    """Raise a clear BackendError when ``batch`` does not fit the session's static dimensions."""
    from ..errors import BackendError

    want = session.input_shape
    if batch.ndim != len(want):
        raise BackendError(f"{session.name}: expected a {len(want)}-d batch {want}, got shape {batch.shape}")
    if want[0] is not None and batch.shape[0] != want[0]:
        raise BackendError(
            f"{session.name}: the model has a static batch size of {want[0]} but was given a batch of "
            f"{batch.shape[0]}. Run with bs={want[0]}, or export/convert the model again with bs={batch.shape[0]} "
            "(or a dynamic batch axis)."
        )
    bad = [i for i in range(1, len(want)) if want[i] is not None and batch.shape[i] != want[i]]
    if bad:
        raise BackendError(f"{session.name}: input shape {tuple(batch.shape)} does not fit the model's {want}")


def sample_outputs(outputs: list[np.ndarray], n_rows: int, row: int) -> list[np.ndarray]:
    """Sample ``row`` of a batch of ``n_rows`` from every output: ``o[row]`` for outputs with a batch axis, and the
    block ``o[row * k:(row + 1) * k]`` for outputs whose leading axis holds k rows per sample, (N * k, ...) -- such
    as M2Det's (N * 32760, 81) probabilities, which the guide's export flattens over the batch."""
    out = []
    for o in outputs:
        k = o.shape[0] // n_rows if n_rows else 1
        out.append(o[row] if k == 1 else o[row * k:(row + 1) * k])
    return out


def static_batch(session: Session) -> int | None:
    """The session's fixed batch size, or None when the batch axis is dynamic."""
    return session.input_shape[0] if session.input_shape else None
