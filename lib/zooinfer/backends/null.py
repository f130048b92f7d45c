"""The ``null`` backend: outputs of the right shape and dtype, no compute -- for measuring the pipeline's ceiling
(read + preprocess + batching + postprocess + metric with inference taking no time).

The shapes are learnt once per input view shape from one real forward of the torch model (or the ONNX graph through
ONNX Runtime) on the first row of the first batch of that shape; every later batch gets all-zero arrays
(``fill="zeros"``) or the outputs of that first forward repeated (``fill="replay"``) of the same dtypes.

All-zero outputs and the five recipes' postprocessing (none crashes: tests/test_pipeline_ceiling.py). Zero outputs
make the detectors' postprocessing *cheaper* than on a real image (SSD and M2Det: nothing passes the score
thresholds, no NMS), and every metric degenerate (0 or ties). Postprocess ms/image measured here (2 shared vCPUs,
loaded), zeros vs ``fill="replay"`` of the synthetic-weights model's first output:

- DPN131: (1000,) zero logits, all classes tie (top-k takes the first k): < 0.01 vs < 0.01;
- SSD-ResNet34: zero offsets, zero logits -> softmax 1/81 < the 0.05 threshold, no detections: ~15 vs ~23;
- M2Det: zero probabilities below the threshold, no detections: ~13 vs ~100;
- PCB: the (2048, 6, 1) zero feature is flattened as is; the re-ID ranking has only ties: < 0.01 vs < 0.01;
- PyramidBox: zero scores -> boxes kept with equal (float-floor) scores; the WIDER metric warns and every AP is
  0: ~20-30 vs ~660 (the synthetic weights keep many boxes for NMS).

So a ceiling measured with zeros leaves out the detectors' NMS: ``fill="replay"`` charges postprocessing with a real
sample's work (of the weights at hand; real weights on real images were not measured). The registry's ``null``
opens zeros; construct :class:`NullSession` directly for ``replay``.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

FILLS = ("zeros", "replay")


class NullSession:
    """``run(batch)`` returns per-batch outputs of the model's shapes and dtypes without running the model.

    ``model`` (a torch ``nn.Module``) or ``onnx_path`` is run once per view shape (C, H, W) on one row to learn the
    per-sample shapes; outputs whose leading axis holds k rows per sample (M2Det's (N * 32760, 81)) keep that
    layout, as :func:`zooinfer.backends.base.sample_outputs` expects. ``input_shape`` is what the session reports
    (default: all dynamic)."""

    def __init__(self, model: Any = None, *, onnx_path: str | os.PathLike | None = None, fill: str = "zeros",
                 input_shape: tuple[int | None, ...] | None = None):
        from ..errors import BackendError

        if model is None and onnx_path is None:
            raise BackendError("backend 'null' needs the torch model or an ONNX file to learn the output shapes")
        if fill not in FILLS:
            raise BackendError(f"null backend: fill must be one of {', '.join(FILLS)}, got {fill!r}")
        self.model, self.onnx_path, self.fill = model, onnx_path, fill
        self.name, self.device = "null", "cpu"
        self.input_shape = input_shape or (None, None, None, None)
        #: view shape (C, H, W) -> the outputs of one real forward on one row (leading axis: rows per sample)
        self._one: dict[tuple[int, ...], list[np.ndarray]] = {}
        self.forwards = 0  # real forwards run (one per distinct view shape)

    def _forward(self, row: np.ndarray) -> list[np.ndarray]:
        """One real forward of (1, C, H, W) ``row``; outputs as numpy in ONNX order, their own dtypes."""
        self.forwards += 1
        if self.model is not None:
            import torch

            with torch.inference_mode():
                out = self.model(torch.from_numpy(np.ascontiguousarray(row, dtype=np.float32)))
            outs = (out,) if isinstance(out, torch.Tensor) else tuple(out)
            return [o.detach().cpu().numpy().copy() for o in outs]
        from .onnxruntime import OrtSession

        return OrtSession(self.onnx_path, "onnxruntime", threads=1, cache_optimized=False).run(row)

    def output_shapes(self, view_shape: tuple[int, ...], n: int = 1) -> list[tuple[tuple[int, ...], np.dtype]]:
        """(shape, dtype) of each output for a batch of ``n`` views of ``view_shape`` (learnt earlier by ``run``)."""
        return [((n * o.shape[0], *o.shape[1:]), o.dtype) for o in self._one[tuple(view_shape)]]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        key = tuple(batch.shape[1:])
        if key not in self._one:
            self._one[key] = self._forward(batch[:1])
        n = batch.shape[0]
        if self.fill == "replay":
            return [np.concatenate([o] * n) if n > 1 else o.copy() for o in self._one[key]]
        return [np.zeros(shape, dtype) for shape, dtype in self.output_shapes(key, n)]
