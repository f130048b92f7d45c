"""The samples whose prediction changed between two runs, worst first.

- classification: the top-1 class changed. ``effect``: "lost" (A was right, B is wrong), "changed" (wrong in both),
  "gained" (B is right now); worst first: lost, changed, gained, then by how far the label fell in B's top-5.
- detection (COCO) and faces (WIDER FACE): A's detections matched one-to-one to B's of the same class at IoU >= 0.5
  (A's best score first, each to the unmatched B detection of highest IoU). Per image: matched pairs and their
  score change, A's detections lost (no match in B), B's new ones. An image changed when a detection was lost or
  is new, or a matched score moved (by more than :data:`SCORE_TOLERANCE`); its ``severity`` is the score lost plus
  the score new plus the summed |score change|, worst first.
- re-ID: a query's rank-1 gallery image changed (by each run's own distances, the Market-1501 rule); worst first:
  lost (rank-1 was the right identity), changed, gained.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np

#: IoU at which a detection of RUN_B is the same as one of RUN_A
MATCH_IOU = 0.5
#: a matched detection's score change below this is no change (float noise)
SCORE_TOLERANCE = 1e-6
#: how bad each effect of a change is (higher = worse): the order a list of changed samples starts with
SEVERITY = {"lost": 2, "changed": 1, "gained": 0}


def classification_changes(data: Iterable[Any], pred_a: Callable, pred_b: Callable) -> list[dict]:
    """Samples whose top-1 class changed (stored ``TopKScores`` or (C,) logits), worst first."""
    from ..metrics.classification import MAX_K, compact_logits

    out = []
    for s in data:
        a, b = pred_a(s), pred_b(s)
        a = a if hasattr(a, "classes") else compact_logits(a)
        b = b if hasattr(b, "classes") else compact_logits(b)
        ta, tb = int(a.classes[0]), int(b.classes[0])
        if ta == tb:
            continue
        label = int(s.target)
        rank_a = _rank(a.classes, label)
        rank_b = _rank(b.classes, label)
        effect = "lost" if ta == label else "gained" if tb == label else "changed"
        fall = (MAX_K if rank_b is None else rank_b) - (MAX_K if rank_a is None else rank_a)
        out.append({"key": s.key, "path": s.path, "label": label, "top1_a": ta, "top1_b": tb,
                    "score_a": float(a.scores[0]), "score_b": float(b.scores[0]), "label_rank_a": rank_a,
                    "label_rank_b": rank_b, "effect": effect, "severity": SEVERITY[effect], "_fall": fall})
    out.sort(key=lambda r: (-r["severity"], -r["_fall"], r["key"]))
    for r in out:
        del r["_fall"]
    return out


def _rank(classes: np.ndarray, label: int) -> int | None:
    """Position (0-based) of ``label`` among the stored top classes; None when not among them."""
    hit = np.flatnonzero(np.asarray(classes) == label)
    return int(hit[0]) if hit.size else None


def _rows(prediction: Any) -> np.ndarray:
    """(K, 6) ``x y w h score class``, best score first, from COCO rows (K, 7) or WIDER FACE rows (K, 5)."""
    from ..compare import detections_array

    return detections_array(prediction, max_dets=10 ** 9).astype(np.float64)


def match(a: np.ndarray, b: np.ndarray, iou: float = MATCH_IOU) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of (K, 6) detections ``a`` to ``b`` (same class, IoU >= ``iou``): A's detections in
    descending score (stable) each take the unmatched B detection of highest IoU (the lowest index among equal
    ones). Returns (for each A detection the index of its B match or -1, for each B detection whether it was
    matched). Only the pairs above ``iou`` are visited (a few per detection), not the whole IoU matrix per step."""
    from ..compare import _iou_xywh

    to_b = np.full(len(a), -1, dtype=np.int64)
    used = np.zeros(len(b), dtype=bool)
    if not len(a) or not len(b):
        return to_b, used
    ious = _iou_xywh(a[:, :4], b[:, :4])
    ii, jj = np.nonzero((ious >= iou) & (a[:, 5][:, None] == b[:, 5][None]))
    if not len(ii):
        return to_b, used
    order = np.lexsort((jj, -ious[ii, jj], ii))  # per A detection: highest IoU first, then the lowest index
    ii, jj = ii[order], jj[order]
    starts = np.flatnonzero(np.r_[True, ii[1:] != ii[:-1]])
    candidates = dict(zip(ii[starts].tolist(), np.split(jj, starts[1:])))
    taken: set[int] = set()
    for i in sorted(candidates, key=lambda i: (-a[i, 4], i)):
        for j in candidates[i].tolist():
            if j not in taken:
                taken.add(j)
                to_b[i] = j
                break
    used[list(taken)] = True
    return to_b, used


def detection_changes(data: Iterable[Any], pred_a: Callable, pred_b: Callable, iou: float = MATCH_IOU) -> list[dict]:
    """Images whose detections changed (module docstring), worst (highest ``severity``) first."""
    out = []
    for s in data:
        ra, rb = _rows(pred_a(s)), _rows(pred_b(s))
        if ra.shape == rb.shape and np.array_equal(ra, rb):
            continue
        to_b, used = match(ra, rb, iou)
        matched = to_b >= 0
        change = rb[to_b[matched], 4] - ra[matched, 4]
        lost, new = ra[~matched], rb[~used]
        moved = np.abs(change) > SCORE_TOLERANCE
        if not len(lost) and not len(new) and not moved.any():
            continue
        worst = int(np.argmax(np.abs(change))) if len(change) else None
        out.append({"key": s.key, "path": s.path, "detections_a": len(ra), "detections_b": len(rb),
                    "matched": int(matched.sum()), "lost": len(lost), "new": len(new),
                    "score_lost": float(lost[:, 4].sum()), "score_new": float(new[:, 4].sum()),
                    "max_abs_score_change": float(np.abs(change).max()) if len(change) else 0.0,
                    "mean_score_change": float(change.mean()) if len(change) else 0.0,
                    "largest_score_change": None if worst is None else float(change[worst]),
                    "severity": float(lost[:, 4].sum() + new[:, 4].sum() + np.abs(change).sum()),
                    "boxes": {"lost": lost[:8, :6].tolist(), "new": new[:8, :6].tolist(),
                              "matched_a": ra[matched][:8, :6].tolist()}})
    out.sort(key=lambda r: (-r["severity"], r["key"]))
    return out


def reid_changes(data: Iterable[Any], rank1_a: dict, rank1_b: dict) -> list[dict]:
    """Queries whose rank-1 gallery image changed, worst first (module docstring)."""
    samples = {s.key: s for s in data}
    pid = {k: _pid(s) for k, s in samples.items()}
    out = []
    for key, ga in rank1_a.items():
        gb = rank1_b.get(key)
        if ga == gb:
            continue
        right_a = ga is not None and pid.get(ga) == pid.get(key)
        right_b = gb is not None and pid.get(gb) == pid.get(key)
        effect = "lost" if right_a and not right_b else "gained" if right_b and not right_a else "changed"
        s = samples.get(key)
        out.append({"key": key, "path": getattr(s, "path", None), "rank1_a": ga, "rank1_b": gb,
                    "rank1_a_path": getattr(samples.get(ga), "path", None),
                    "rank1_b_path": getattr(samples.get(gb), "path", None),
                    "right_a": right_a, "right_b": right_b, "effect": effect,
                    "severity": SEVERITY[effect]})
    out.sort(key=lambda r: (-r["severity"], r["key"]))
    return out


def _pid(sample: Any) -> int | None:
    info = getattr(sample, "info", None) or {}
    if "pid" in info:
        return int(info["pid"])
    target = getattr(sample, "target", None)
    if isinstance(target, (tuple, list)) and target:
        return int(target[0])
    return None if target is None else int(target)


def changed_samples(task: str, data: Any, pred_a: Callable | None, pred_b: Callable | None,
                    rank1_a: dict | None = None, rank1_b: dict | None = None) -> list[dict]:
    """The changed samples of ``task`` (classification, detection, face_detection, reid), worst first."""
    if task == "classification":
        return classification_changes(data, pred_a, pred_b)
    if task in ("detection", "face_detection"):
        return detection_changes(data, pred_a, pred_b)
    if task == "reid":
        return reid_changes(data, rank1_a or {}, rank1_b or {})
    return []
