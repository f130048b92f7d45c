"""Networks of the five models and ``build_model``, the one way to get one with weights.

Each network lives in its own module exposing ``build(weights: str | None) -> nn.Module``; this registry imports it
only when asked for, so importing zooinfer stays cheap.
"""
from __future__ import annotations

import importlib
import os

import torch

from ..errors import ZooinferError

#: model name -> module under zooinfer.models holding ``build``
MODULES = {
    "dpn131": "dpn131",
    "ssd_resnet34": "ssd_resnet34",
    "m2det": "m2det",
    "pcb": "pcb",
    "pyramidbox": "pyramidbox",
}


def build_model(name: str, weights: str | os.PathLike | None = None) -> torch.nn.Module:
    """Build network ``name`` in eval mode.

    ``weights`` is the published checkpoint file exactly as downloaded (any container); ``None`` gives deterministic
    synthetic weights. The forward takes a preprocessed float32 NCHW batch and returns the ONNX outputs in order.
    """
    if name not in MODULES:
        raise ZooinferError(f"unknown model {name!r}; known: {', '.join(MODULES)}")
    try:
        module = importlib.import_module(f"{__name__}.{MODULES[name]}")
    except ModuleNotFoundError as e:
        if e.name == f"{__name__}.{MODULES[name]}":
            raise ZooinferError(f"model {name!r} is not implemented yet") from None
        raise
    model = module.build(None if weights is None else os.fspath(weights))
    return model.eval()
