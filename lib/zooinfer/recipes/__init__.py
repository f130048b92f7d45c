"""The model registry: ``zooinfer.recipes.get(name)`` returns the ``Recipe`` of one of the models (``NAMES``).

It is the only registry. A model is one folder, ``zooinfer/models/<name>/``, whose ``recipe.py`` defines ``RECIPE``:
the facts (names, shapes, checkpoint, published figures), the pre/post-processing, the network builder, the metric
accumulator, the benchmark plan and the notebook's defaults. Adding a model: docs/adding-a-model.md.
"""
from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path
from typing import Any

from ..errors import ZooinferError
from .base import BenchPlan, NotebookSpec, Published, PerfRow, Recipe

#: where the model folders are: ``zooinfer/models/<name>/`` with a ``recipe.py``
MODELS_ROOT = Path(__file__).resolve().parent.parent / "models"
#: what a model name is: its folder's name, a lowercase Python identifier (it is imported as
#: ``zooinfer.models.<name>``); a name that breaks the rule (``no-such-model``) can never be a model
NAME_RULE = re.compile(r"[a-z][a-z0-9_]*")


def _discover(root: Path = MODELS_ROOT) -> tuple[str, ...]:
    """The model folders: every package under ``root`` that has a ``recipe.py`` (sorted by name); a model folder
    whose name breaks ``NAME_RULE`` is refused."""
    names = sorted(m.name for m in pkgutil.iter_modules([str(root)])
                   if m.ispkg and (root / m.name / "recipe.py").is_file())
    for name in names:
        if not NAME_RULE.fullmatch(name):
            raise ZooinferError(f"model folder {root / name} has a recipe.py but its name {name!r} is not a model "
                                f"name (lowercase letters, digits and '_', starting with a letter): rename the folder")
    return tuple(names)


#: the models of this installation, found by their folders (adding one: docs/adding-a-model.md)
NAMES = _discover()

__all__ = ["NAMES", "NAME_RULE", "BenchPlan", "NotebookSpec", "Published", "PerfRow", "Recipe", "available", "get"]


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
