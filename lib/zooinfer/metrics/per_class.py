"""Per-class breakdowns of a metric, one document shape for every task, and the deltas between two of them.

A breakdown (what each accumulator's ``per_class()`` returns, metrics.json ``per_class``)::

    {"by": "category",          # what a row is: category (COCO), class (ImageNet), event (WIDER FACE), camera (re-ID)
     "figures": ["AP"],         # the figures of each row (fractions), the first one is the one rows are ranked by
     "rows": [{"name": "person", "AP": 0.61, "n": 11004}, ...]}   # n: the units behind the row (objects, images...)

A figure is None where it is undefined for that row (e.g. a COCO category without ground truth: pycocotools' -1).
Rows are in the metric's own order (category ids, class indices, events, cameras); :func:`worst` ranks them and
:func:`deltas` joins two breakdowns by name (a variant against its reference, run B against run A).
"""
from __future__ import annotations

from typing import Any, Hashable, Sequence

import numpy as np

#: rows a report shows of a long breakdown (ImageNet's 1,000 classes): the worst ones
SHOWN = 20


def breakdown(by: str, figures: Sequence[str], rows: list[dict]) -> dict:
    """The breakdown document: ``rows`` ({"name", <figure>: fraction or None, "n"}) of ``by`` (its units)."""
    return {"by": by, "figures": list(figures), "rows": rows}


def of_accumulator(accumulator: Any) -> dict | None:
    """The accumulator's breakdown (its ``per_class()``), or None where its metric has none or cannot give one here
    (e.g. a re-ID run without gallery: said in a warning)."""
    import warnings

    from ..errors import ZooinferError

    method = getattr(accumulator, "per_class", None)
    if not callable(method):
        return None
    try:
        return method()
    except ZooinferError as e:
        warnings.warn(f"per-class breakdown not available: {e}", stacklevel=3)
        return None


def _value(v: Any) -> float | None:
    """A figure as a float, None where undefined (None, NaN, pycocotools' -1 sentinel handled by the caller)."""
    if v is None:
        return None
    v = float(v)
    return None if np.isnan(v) else v


def worst(doc: dict | None, n: int = SHOWN, figure: str | None = None) -> list[dict]:
    """The ``n`` rows of a breakdown with the lowest ``figure`` (default: its first), undefined ones left out."""
    if not doc or not doc.get("rows"):
        return []
    key = figure or doc["figures"][0]
    rows = [r for r in doc["rows"] if r.get(key) is not None]
    return sorted(rows, key=lambda r: (r[key], str(r["name"])))[:n]


def deltas(a: dict | None, b: dict | None) -> list[dict]:
    """Per row present in both breakdowns: each figure of ``a`` and ``b`` and its change (``b - a``, fractions),
    largest absolute change (over the figures) first; rows whose figures are undefined in either are left out.
    ``[]`` when either breakdown is missing or they break down by different things."""
    if not a or not b or a.get("by") != b.get("by"):
        return []
    figures = [f for f in a["figures"] if f in b["figures"]]
    rows_b = {str(r["name"]): r for r in b["rows"]}
    out = []
    for ra in a["rows"]:
        rb = rows_b.get(str(ra["name"]))
        if rb is None:
            continue
        row: dict[str, Any] = {"name": ra["name"]}
        changes = []
        for f in figures:
            va, vb = _value(ra.get(f)), _value(rb.get(f))
            row[f"{f}_a"], row[f"{f}_b"] = va, vb
            row[f"delta_{f}"] = None if va is None or vb is None else vb - va
            if row[f"delta_{f}"] is not None:
                changes.append(abs(row[f"delta_{f}"]))
        if changes:
            row["n"] = ra.get("n")
            row["_size"] = max(changes)
            out.append(row)
    out.sort(key=lambda r: (-r["_size"], str(r["name"])))
    for r in out:
        del r["_size"]
    return out


def group_weights(groups: Sequence[Hashable]) -> tuple[list, np.ndarray]:
    """The distinct ``groups`` (sorted) and a (G, n) 0/1 matrix whose row g selects the units of group g: fed to an
    accumulator's ``weighted_figures``, row g gives the figure over that group's units alone."""
    names = sorted(set(groups), key=lambda g: (str(type(g)), g))
    index = {g: i for i, g in enumerate(names)}
    w = np.zeros((len(names), len(groups)), dtype=np.int64)
    if len(groups):
        w[[index[g] for g in groups], np.arange(len(groups))] = 1
    return names, w
