"""Images with their top detections drawn (COCO detectors, face detectors)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np


def as_xywh_score_label(prediction: Any) -> tuple[np.ndarray, np.ndarray, list]:
    """A prediction as (boxes (K, 4) xywh pixels, scores (K,), labels (K,)), sorted by descending score.

    Accepts COCO result dicts (``bbox`` xywh, ``score``, ``category_id``) or an array of rows ``x y w h score
    [label]`` (e.g. WIDER FACE (K, 5)); labels are None where the prediction has none."""
    if isinstance(prediction, np.ndarray) or (prediction and not isinstance(prediction[0], Mapping)):
        a = np.asarray(prediction, dtype=np.float64)
        a = a.reshape(0, 5) if a.size == 0 else a
        boxes, scores = a[:, :4], a[:, 4]
        labels = [int(v) for v in a[:, 5]] if a.shape[1] > 5 else [None] * len(a)
    else:
        dets = list(prediction or [])
        boxes = np.array([d["bbox"] for d in dets], dtype=np.float64).reshape(-1, 4)
        scores = np.array([d["score"] for d in dets], dtype=np.float64)
        labels = [d.get("category_id") for d in dets]
    order = np.argsort(-scores, kind="stable")
    return boxes[order], scores[order], [labels[i] for i in order]


def draw_detections(ax, image: Any, prediction: Any, *, top: int = 5, min_score: float = 0.0,
                    names: Mapping[int, str] | None = None, ground_truth: Iterable[Mapping] = (),
                    title: str | None = None) -> int:
    """Draw ``image`` (path, PIL image or HxW[x3] array) on ``ax`` with its ``top`` best detections with score >=
    ``min_score`` (solid boxes, "name score" tags) and optional ground-truth COCO annotations (dashed white).
    Returns the number of detection boxes drawn."""
    import matplotlib.patches as patches
    from PIL import Image

    if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
        with Image.open(image) as im:
            image = im.convert("RGB")
    ax.imshow(image)
    for g in ground_truth:
        x, y, w, h = g["bbox"]
        ax.add_patch(patches.Rectangle((x, y), w, h, fill=False, lw=1.0, ls="--", ec="white"))
    boxes, scores, labels = as_xywh_score_label(prediction)
    keep = np.flatnonzero(scores >= min_score)[:top]
    colors = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"]
    for n, i in enumerate(keep):
        x, y, w, h = boxes[i]
        c = colors[n % len(colors)]
        ax.add_patch(patches.Rectangle((x, y), w, h, fill=False, lw=1.5, ec=c))
        label = labels[i]
        name = "" if label is None else (names or {}).get(label, str(label))
        ax.text(x, y, f"{name} {scores[i]:.2f}".strip(), fontsize=7, color="white", va="bottom",
                bbox={"facecolor": c, "alpha": 0.8, "pad": 1, "lw": 0})
    if title:
        ax.set_title(title, fontsize=8)
    ax.axis("off")
    return len(keep)


def show_detections(kept: list, *, max_images: int = 4, top: int = 5, min_score: float = 0.0,
                    names: Mapping[int, str] | None = None, ground_truth: Mapping[int, list] | None = None):
    """Grid of (sample, prediction) pairs (``RunResult.kept``): each image with its ``top`` detections, titled with
    the sample key and the number of detections; ``ground_truth`` maps image id -> annotations drawn dashed."""
    import matplotlib.pyplot as plt

    kept = kept[:max_images]
    n = max(len(kept), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.4), squeeze=False)
    for ax, (sample, pred) in zip(axes[0], kept):
        image_id = (sample.info or {}).get("image_id", sample.target)
        gt = (ground_truth or {}).get(image_id, ())
        n_dets = len(as_xywh_score_label(pred)[1])
        draw_detections(ax, sample.path, pred, top=top, min_score=min_score, names=names, ground_truth=gt,
                        title=f"{sample.key}: {n_dets} detections, top {top}")
    for ax in axes[0][len(kept):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def coco_names() -> dict[int, str]:
    """COCO category id -> name (the 80 detection categories)."""
    from ..datasets.coco import CATEGORIES

    return {i: name for i, name, _ in CATEGORIES}


def ground_truth_by_image(annotations: Mapping) -> dict[int, list]:
    """image id -> its annotations, from a COCO annotation dict (e.g. ``dataset.extra['annotations']``)."""
    out: dict[int, list] = {}
    for a in annotations.get("annotations", []):
        out.setdefault(a["image_id"], []).append(a)
    return out


def coco_stats_rows(metrics: Mapping[str, float]) -> list[dict]:
    """The 12 COCOeval bbox statistics of ``metrics`` (fractions) as table rows, in percent (2 decimals)."""
    from ..metrics.coco import STAT_NAMES

    return [{"metric": k, "ours_%": round(100 * metrics[k], 2)} for k in STAT_NAMES]


def ap_vs_published_rows(metrics: Mapping[str, float], published: Any) -> list[dict]:
    """Our AP against every published AP (the reference first, then each revision in ``published.other`` that
    has one), in percent, with the difference in points."""
    figures = [(published.source, published.accuracy["AP"])]
    figures += [(label, v["AP"]) for label, v in published.other if "AP" in v]
    return [{"published": label, "AP_%": round(100 * v, 3), "ours_%": round(100 * metrics["AP"], 2),
             "delta_pts": round(100 * (metrics["AP"] - v), 2)} for label, v in figures]


def show_results(ev, result) -> list:
    """The COCO detection results section: the 12 bbox statistics, AP against every published figure, and the
    first kept images with their top 5 detections (dashed: the image's ground truth)."""
    from .. import report

    m = result.metrics
    report.show(coco_stats_rows(m), f"COCO bbox statistics over {m['n_images']} images ({m['n_detections']} "
                                    f"detections, {m.get('n_images_missing', 0)} images missing)")
    report.show(ap_vs_published_rows(m, ev.recipe.published), "AP vs published")
    return [show_detections(result.kept, top=5, names=coco_names(),
                            ground_truth=ground_truth_by_image(ev.dataset.extra["annotations"]))]
