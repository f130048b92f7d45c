"""The five models, one package each (``zooinfer.models.<name>``: network, recipe, head), and ``build_model``, the one
way to get a network with weights. Shared building blocks (ResNet, VGG, checkpoint loading, synthetic weights) are in
``zooinfer.nn``.
"""
from __future__ import annotations

import os

import torch


def build_model(name: str, weights: str | os.PathLike | None = None) -> torch.nn.Module:
    """Build network ``name`` in eval mode (the builder its recipe names).

    ``weights`` is the published checkpoint file exactly as downloaded (any container); ``None`` gives deterministic
    synthetic weights. The forward takes a preprocessed float32 NCHW batch and returns the ONNX outputs in order.
    """
    from .. import recipes

    recipe = recipes.get(name)
    if recipe.build is None:
        from ..errors import ZooinferError

        raise ZooinferError(f"model {name!r} names no network builder in its recipe")
    return recipe.build(None if weights is None else os.fspath(weights)).eval()
