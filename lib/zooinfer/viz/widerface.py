"""WIDER FACE plots: precision/recall curves per setting, and face ground truth for the detection drawings."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

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
