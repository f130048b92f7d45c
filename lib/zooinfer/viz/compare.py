"""Plots of a variant comparison (``zooinfer.compare``) and of a layer-level localisation (``zooinfer.localise``).

    plot_accuracy_vs_throughput(cmp)     one point per variant: headline metric vs images/s
    plot_disagreement(cmp)               per-sample disagreement of each variant, sorted (how many samples changed)
    show_worst(cmp, "onnxruntime-int8")  the worst samples, reference next to variant (detections drawn)
    plot_error_by_depth(loc)             per-tensor error relative to its range vs depth, tolerance line, first node

Each returns the matplotlib figure (and saves it as PNG when ``path`` is given).
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np


def _save(fig: Any, path: str | os.PathLike | None) -> Any:
    if path is not None:
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def plot_accuracy_vs_throughput(cmp: Any, metric: str | None = None, ax: Any = None,
                                path: str | os.PathLike | None = None) -> Any:
    """Headline ``metric`` (default: the recipe's first, in percent) against end-to-end images/s, one labelled
    point per variant (the reference circled; labels staggered so that coinciding points stay readable). Variants
    without a finite value of the metric are left out."""
    import matplotlib.pyplot as plt

    metric = metric or (cmp.headline[0] if cmp.headline else None)
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
    else:
        fig = ax.figure
    for i, r in enumerate(cmp.results):
        y = r.metrics.get(metric) if metric else None
        if y is None or not np.isfinite(y):
            continue
        x = r.throughput
        ax.scatter([x], [100 * y], s=60 if r.name == cmp.reference else 36,
                   edgecolors="black" if r.name == cmp.reference else "none", zorder=3)
        label = r.name + (" (ref)" if r.name == cmp.reference else "")
        if r.nonfinite:
            label += f" [{len(r.nonfinite)} non-finite]"
        ax.annotate(label, (x, 100 * y), textcoords="offset points", xytext=(5, 4 + 11 * (i % 3)), fontsize=8)
    ax.set_xlabel("end-to-end images/s")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(f"{cmp.model}: accuracy vs throughput ({len(cmp.samples)} samples)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_disagreement(cmp: Any, ax: Any = None, path: str | os.PathLike | None = None) -> Any:
    """Each non-reference variant's per-sample disagreement with the reference, sorted descending (log scale; the
    non-finite samples at the top are clipped to the plot)."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.5))
    else:
        fig = ax.figure
    for r in cmp.results:
        if r.name == cmp.reference or not r.per_sample:
            continue
        d = np.sort(np.array([row["disagreement"] for row in r.per_sample], dtype=np.float64))[::-1]
        ax.plot(np.arange(1, len(d) + 1), np.maximum(d, 1e-9), marker=".", label=r.name)
    ax.set_yscale("log")
    ax.set_xlabel("samples, worst first")
    ax.set_ylabel("disagreement with the reference")
    ax.set_title(f"{cmp.model}: per-sample disagreement vs {cmp.reference}", fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _names(task: str) -> Mapping[int, str] | None:
    if task == "detection":
        from .detection import coco_names

        return coco_names()
    if task == "face_detection":
        return {0: "face"}
    return None


def show_worst(cmp: Any, variant: str, n: int = 4, *, top: int = 5, min_score: float | None = None,
               path: str | os.PathLike | None = None) -> Any:
    """The ``n`` worst samples of ``variant`` (those kept while streaming: ``compare(keep_worst=...)``), one row
    each: detectors and faces show the reference's and the variant's ``top`` detections above ``min_score``
    (default: the comparison's score threshold) side by side (``viz.detection.draw_detections``); classification
    and re-ID show the image titled with the reference's and the variant's top-1 (or cosine and rank-1)."""
    import matplotlib.pyplot as plt

    from .detection import draw_detections

    res = cmp.result(variant)
    worst = res.worst_predictions[:n]
    rows_by_key = {r["sample"]: r for r in res.per_sample}
    detect = cmp.task in ("detection", "face_detection")
    cols = 2 if detect else 1
    k = max(len(worst), 1)
    fig, axes = plt.subplots(k, cols, figsize=(3.6 * cols, 3.4 * k), squeeze=False)
    names = _names(cmp.task)
    thr = cmp.settings.get("score_threshold", 0.0) if min_score is None else min_score
    for i, (score, key, pred) in enumerate(worst):
        path_i = cmp.paths.get(key)
        row = rows_by_key.get(key, {})
        tag = "non-finite outputs" if row.get("nonfinite") else f"disagreement {score:.3g}"
        if detect:
            ref = cmp.reference_predictions.get(key, np.zeros((0, 6)))
            draw_detections(axes[i][0], path_i, np.asarray(ref), top=top, min_score=thr, names=names,
                            title=f"{key}\n{cmp.reference} (reference)")
            extra = f", agreement {row['agreement']:.2f}" if row.get("agreement") is not None else ""
            draw_detections(axes[i][1], path_i, np.nan_to_num(np.asarray(pred)), top=top, min_score=thr,
                            names=names, title=f"{variant}: {tag}{extra}")
        else:
            ax = axes[i][0]
            from PIL import Image

            with Image.open(path_i) as im:
                ax.imshow(im.convert("RGB"))
            ax.axis("off")
            if cmp.task == "classification":
                detail = f"top-1 {row.get('top1_ref')} -> {row.get('top1_var')}, top-5 overlap {row.get('top5_overlap')}"
            else:
                cos = row.get("cosine")
                detail = f"cosine {cos:.5f}" if cos is not None else "cosine n/a"
                if row.get("rank1_changed") is not None:
                    detail += f", rank-1 {'changed' if row['rank1_changed'] else 'same'}"
            ax.set_title(f"{key}\n{variant}: {tag}\n{detail}", fontsize=8)
    if not worst:
        for ax in axes.ravel():
            ax.axis("off")
        axes[0][0].set_title(f"{variant}: no per-sample rows", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_error_by_depth(loc: Any, ax: Any = None, path: str | os.PathLike | None = None) -> Any:
    """Every compared tensor's max abs error relative to its range (log) against its depth in the reference graph,
    the largest per depth as a line, the tolerance dashed, and the first exceeding node marked."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 3.5))
    else:
        fig = ax.figure
    floor = 1e-12
    if loc.rows:
        d = np.array([r.depth for r in loc.rows])
        e = np.array([r.rel_to_range for r in loc.rows], dtype=np.float64)
        e = np.where(np.isfinite(e), e, np.nanmax(np.where(np.isfinite(e), e, 0)) * 10 or 1.0)
        ax.scatter(d, np.maximum(e, floor), s=6, alpha=0.4, label="tensors")
        dd, de = loc.by_depth()
        de = np.where(np.isfinite(de), de, np.nan)
        ax.plot(dd, np.maximum(de, floor), lw=1, label="max per depth")
    ax.axhline(loc.tolerance, ls="--", color="red", lw=1, label=f"tolerance {loc.tolerance:g}")
    first = loc.first[0] if loc.first else None
    if first is not None:
        ax.axvline(first.depth, color="black", lw=0.8, ls=":")
        ax.annotate(f"first: {first.node} ({first.op_type})", (first.depth, max(first.rel_to_range, floor)),
                    textcoords="offset points", xytext=(4, 6), fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("depth (nodes from the input)")
    ax.set_ylabel("max |error| / max |reference|")
    ax.set_title(f"{loc.variant_name or 'variant'} vs reference" + (f", sample {loc.sample}" if loc.sample else ""),
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
