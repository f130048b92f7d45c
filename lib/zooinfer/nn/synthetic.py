"""Deterministic synthetic weights, used when no checkpoint is given.

Every tensor is drawn from its own numpy PCG64 stream seeded by ``(seed, crc32(name))``, so the values depend only on
the tensor's name, shape and the seed: identical across runs, machines and module registration order.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch

DEFAULT_SEED = 20240101


def _draw(name: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64([seed, zlib.crc32(name.encode())]))
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_var":
        return rng.uniform(0.5, 1.5, shape)
    if leaf == "running_mean":
        return rng.normal(0.0, 0.05, shape)
    if leaf == "bias":
        return rng.normal(0.0, 0.02, shape)
    if len(shape) >= 2:  # conv / linear weight: variance-preserving normal
        fan_in = int(np.prod(shape[1:]))
        return rng.normal(0.0, np.sqrt(1.0 / max(fan_in, 1)), shape)
    return rng.uniform(0.6, 1.0, shape)  # BatchNorm / L2Norm scales


def init_synthetic(model: torch.nn.Module, seed: int = DEFAULT_SEED) -> torch.nn.Module:
    """Fill every floating parameter and buffer of ``model`` deterministically (in place) and return it."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.from_numpy(_draw(name, tuple(t.shape), seed).astype(np.float32)))
            elif name.endswith("num_batches_tracked"):
                t.zero_()
    return model
