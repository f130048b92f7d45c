"""PyTorch eager backend: the reference the ONNX graphs are compared with."""
from __future__ import annotations

import numpy as np
import torch

from .base import check_batch


class TorchSession:
    """``run(batch)`` through an ``nn.Module`` under ``torch.inference_mode`` on CPU or CUDA."""

    def __init__(self, model: torch.nn.Module, *, device: str = "cpu", threads: int | None = None,
                 input_shape: tuple[int | None, ...] = (None, None, None, None)):
        from ..errors import BackendError

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError("backend 'torch-cuda' needs a CUDA build of PyTorch and a GPU; use backend='torch'")
        if threads:
            torch.set_num_threads(threads)
        self.model = model.eval().to(device)
        self.name = "torch" if device == "cpu" else "torch-cuda"
        self.device = device
        self.input_shape = input_shape

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        check_batch(self, batch)
        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device))
        outs = (out,) if isinstance(out, torch.Tensor) else tuple(out)
        return [o.float().cpu().numpy() for o in outs]
