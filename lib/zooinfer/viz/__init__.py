"""Plots and tables the notebooks show: one module per task, and the notebook's results section in one call.

    viz.show_caveats(ev)           set-up: what the recipe variant warns about (e.g. PyramidBox at a small canvas)
    viz.show_results(ev, result)   results: the task's tables and plots, read from ``result`` and its accumulator

Tables are shown at once (``report.show``); the figures are returned, and a notebook displays them at the end of the
cell (matplotlib's inline backend), after the tables.
"""
from __future__ import annotations

import importlib
from typing import Any

#: recipe task -> the module of this package whose ``show_results(ev, result)`` shows that task's results
TASK_MODULES = {"classification": "classification", "detection": "detection", "face_detection": "widerface",
                "reid": "reid"}


def show_caveats(ev: Any) -> str | None:
    """Show (and return) the recipe's set-up warning for this run (``NotebookSpec.caveat(recipe)``), if any."""
    from .. import report

    spec = ev.recipe.notebook
    text = spec.caveat(ev.recipe) if spec is not None and spec.caveat is not None else None
    if text:
        report.show(text)
    return text


def show_results(ev: Any, result: Any) -> list:
    """The notebook's results section for ``ev.recipe.task``: the task's tables and figures (see each module's
    ``show_results``), then the recipe's own tables (``NotebookSpec.more_results(ev, result)``, e.g. PyramidBox's
    full-val time estimate). ``ev`` is the :class:`~zooinfer.evaluation.Evaluation` (its ``recipe``, ``dataset``,
    ``config``), ``result`` what ``ev.evaluate()`` returned. Returns the figures, in display order."""
    from .. import report

    task = ev.recipe.task
    if task not in TASK_MODULES:
        raise ValueError(f"no results view for task {task!r} (known: {', '.join(TASK_MODULES)})")
    figures = importlib.import_module(f"{__name__}.{TASK_MODULES[task]}").show_results(ev, result)
    show_per_class(getattr(result, "per_class", None))
    spec = ev.recipe.notebook
    if spec is not None and spec.more_results is not None:
        for title, rows in spec.more_results(ev, result):
            report.show(rows, title)
    return figures


def show_per_class(doc: dict | None, n: int | None = None) -> list[dict]:
    """Show the worst ``n`` rows (default :data:`~zooinfer.metrics.per_class.SHOWN`, 20) of a per-class breakdown
    (metrics.json ``per_class``: COCO per category, ImageNet per class, WIDER FACE per event, Market-1501 per
    camera), in percent, lowest first; returns them."""
    from .. import report
    from ..metrics.per_class import SHOWN, worst

    if not doc or not doc.get("rows"):
        return []
    rows = worst(doc, n or SHOWN)
    shown = [{"name": r["name"], **{f"{f}_%": (None if r.get(f) is None else round(100 * r[f], 2))
                                    for f in doc["figures"]}, "n": r.get("n")} for r in rows]
    total = len(doc["rows"])
    report.show(shown, f"Per {doc['by']}: the {len(shown)} lowest of {total} (metrics.json per_class has them all)")
    return shown
