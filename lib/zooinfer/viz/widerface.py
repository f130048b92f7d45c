"""WIDER FACE plots: precision/recall curves per setting, and face ground truth for the detection drawings."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..metrics.widerface import SETTINGS

SETTING_COLORS = {"easy": "tab:green", "medium": "tab:orange", "hard": "tab:red"}


def plot_pr_curves(curves: Mapping[str, Any], published: Mapping[str, float] | None = None, ax: Any = None,
                   title: str = "WIDER FACE val: precision / recall"):
    """One precision-recall line per setting from ``metrics.widerface.pr_curves`` (``PRCurve``: recall and precision
    at the 1000 score thresholds), labelled with its AP (%) and, if given, the ``published`` AP (fractions by
    setting name). Thresholds with no proposal (NaN precision) are not drawn. Returns the figure."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.0))
    for name, c in curves.items():
        rec = np.asarray(c.recall, dtype=np.float64)
        prec = np.asarray(c.precision, dtype=np.float64)
        ok = ~(np.isnan(rec) | np.isnan(prec))
        label = f"{name}: AP {100 * c.ap:.1f}%"
        if published and name in published:
            label += f" (published {100 * published[name]:.1f}%)"
        ax.plot(rec[ok], prec[ok], color=SETTING_COLORS.get(name), lw=1.5, label=label)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize=8)
    return ax.figure


def face_ground_truth(gt: Any) -> dict[tuple[str, str], list[dict]]:
    """(event, image) -> its faces as ``{"bbox": [x, y, w, h]}`` dicts (what ``viz.detection.show_detections``
    draws dashed), from a ``metrics.widerface.GroundTruth`` (e.g. ``dataset.extra['ground_truth']``)."""
    return {key: [{"bbox": [float(v) for v in b]} for b in boxes]
            for key, boxes in zip(gt.images, gt.boxes["hard"])}


def ap_vs_published_rows(metrics: Mapping[str, float], published: Any) -> list[dict]:
    """Every published easy / medium / hard AP (the reference first, then ``published.other``) in percent, with
    the mean difference of our three APs from them in points."""
    figures = [(published.source, published.accuracy)] + list(published.other)
    return [{"published": label, **{f"{s}_%": round(100 * v[s], 2) for s in SETTINGS},
             "mean_delta_pts": round(100 * sum(metrics[s] - v[s] for s in SETTINGS) / 3, 2)}
            for label, v in figures]


def ap_title(metrics: Mapping[str, float]) -> str:
    """The AP table's title: our three APs, over how many images (and whether that is a subset of the val set)."""
    m = metrics
    subset = (f" (a subset: {m['n_images']} of {m['n_ground_truth_images']} images)"
              if m["n_images"] < m.get("n_ground_truth_images", m["n_images"]) else "")
    return (f"AP vs published: ours easy {100 * m['easy']:.2f}%, medium {100 * m['medium']:.2f}%, hard "
            f"{100 * m['hard']:.2f}% over {m['n_images']} images{subset}, {m['n_missing']} without predictions")


def show_results(ev, result) -> list:
    """The WIDER FACE results section: easy / medium / hard AP against every published figure, the precision /
    recall curves the evaluator kept (``result.accumulator.curves``), the first kept images with their best 5
    detections (dashed: ground truth), and the files on disk the ground truth does not list."""
    from .. import report
    from .detection import show_detections

    m = result.metrics
    report.show(ap_vs_published_rows(m, ev.recipe.published), ap_title(m))
    figures = [plot_pr_curves(result.accumulator.curves, published=ev.recipe.published.accuracy),
               show_detections(result.kept, top=5, ground_truth=face_ground_truth(ev.dataset.extra["ground_truth"]))]
    if ev.dataset.rejected:
        report.show([{"path": p, "reason": r} for p, r in ev.dataset.rejected], "Files not evaluated")
    return figures
