"""Per-model recipes: ``zooinfer.recipes.get(name)`` returns the ``Recipe`` of one of the five models."""
from __future__ import annotations

import importlib

from ..errors import ZooinferError
from .base import Published, PerfRow, Recipe

NAMES = ("dpn131", "ssd_resnet34", "m2det", "pcb", "pyramidbox")

__all__ = ["NAMES", "Published", "PerfRow", "Recipe", "available", "get"]


def get(name: str) -> Recipe:
    """The recipe of model ``name`` (module ``zooinfer.recipes.<name>``, attribute ``RECIPE``)."""
    if name not in NAMES:
        raise ZooinferError(f"unknown model {name!r}; known: {', '.join(NAMES)}")
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"{__name__}.{name}":
            raise ZooinferError(f"model {name!r} has no recipe yet") from None
        raise
    return module.RECIPE


def available() -> list[str]:
    """Names of the models whose recipe exists in this installation."""
    out = []
    for n in NAMES:
        try:
            get(n)
            out.append(n)
        except ZooinferError:
            pass
    return out
