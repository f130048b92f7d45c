"""The model registry: ``zooinfer.recipes.get(name)`` returns the ``Recipe`` of one of the five models.

It is the only registry. A model is one folder, ``zooinfer/models/<name>/``, whose ``recipe.py`` defines ``RECIPE``:
the facts (names, shapes, checkpoint, published figures), the pre/post-processing, the network builder, the metric
accumulator, the benchmark plan and the notebook's defaults. Adding a model: docs/adding-a-model.md.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

from ..errors import ZooinferError
from .base import BenchPlan, NotebookSpec, Published, PerfRow, Recipe



def _discover() -> tuple[str, ...]:
    """The model folders: every package under ``zooinfer/models/`` that has a ``recipe.py`` (sorted by name)."""
    root = Path(__file__).resolve().parent.parent / "models"
    return tuple(sorted(m.name for m in pkgutil.iter_modules([str(root)])
                        if m.ispkg and (root / m.name / "recipe.py").is_file()))


#: the models of this installation, found by their folders (adding one: docs/adding-a-model.md)
NAMES = _discover()

__all__ = ["NAMES", "BenchPlan", "NotebookSpec", "Published", "PerfRow", "Recipe", "available", "get"]


def get(name: str, **options: Any) -> Recipe:
    """The recipe of model ``name`` (``zooinfer.models.<name>.recipe.RECIPE``), or its variant for ``options``
    (e.g. ``get("pyramidbox", canvas=256)``)."""
    if name not in NAMES:
        raise ZooinferError(f"unknown model {name!r}; known: {', '.join(NAMES)}")
    module_name = f"{__name__.rsplit('.', 1)[0]}.models.{name}.recipe"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name in (module_name, module_name.rsplit(".", 1)[0]):
            raise ZooinferError(f"model {name!r} has no recipe yet") from None
        raise
    return module.RECIPE.variant(**options)


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
