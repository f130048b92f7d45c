"""Variants of one model side by side on the same samples: metric, speed and per-sample agreement with a reference.

    cmp = compare(recipe, dataset, ["onnxruntime", "onnxruntime-fp16", "onnxruntime-int8"], limit=100)
    report.show(cmp.rows())            # one row per variant: metric, delta, img/s, agreement, non-finite outputs
    report.show(cmp.worst("onnxruntime-int8"))   # the samples that disagree most
    cmp.to_dict()                      # the same figures for metrics.json

Every variant streams the same samples through the normal pipeline (``zooinfer.pipeline.run``) with the recipe's own
accumulator (so the metric is the real one) wrapped by a recorder that keeps what per-sample agreement needs:

- the **reference** keeps a compact prediction per sample: logits (classification), the best 100 detections
  (detectors, faces: ``x y w h score class``), the feature vector (re-ID); plus per-image AP where ground truth is
  at hand. Memory: 4 KB per ImageNet image, at most 2.4 KB per detection image, 48 KB per PCB image (the whole
  Market-1501 would take ~950 MB: use ``limit``).
- every other variant is compared with it sample by sample as it streams (nothing of its own is kept but one row
  per sample and its ``keep_worst`` worst predictions, for drawing).

Per-sample agreement, by task:

- classification: top-1 changed, top-5 overlap (how many of the reference's 5 best classes are still in the
  variant's 5 best), max abs logit error and that error relative to the reference's largest |logit|.
- detection (COCO): the reference's detections with score >= ``score_threshold`` matched one-to-one (best IoU
  first, same class) to the variant's at IoU >= ``iou`` (0.9); variant detections above the threshold that match
  nothing are "new". agreement = matched / (reference detections + new). Per-image AP (COCO-style AP@[.5:.95],
  101-point, max 100 detections, over the classes present in that image's ground truth) of both, and its change.
- face detection (WIDER): the same matching on the (K, 5) ``x y w h score`` arrays (one class); per-image AP at
  IoU 0.5 against every face of the image.
- re-ID: cosine similarity of the feature with the reference's; for queries, whether the rank-1 gallery image
  (the first valid one under the Market-1501 rule, by the recipe's own distance) changed.

Each sample gets one **disagreement** score (higher = worse; the docstrings of the ``*_agreement`` functions say how
it is made); ``worst()`` lists the highest.

NaN or Inf in any output of any variant (the reference included) is detected per output and per sample before
postprocessing and reported as :class:`NonFinite` (variant, output name, sample key, counts); the sample's
disagreement is set to :data:`NONFINITE_SCORE` so it tops the worst list, and the variant's row says its metric
includes non-finite outputs. Nothing is averaged away: when postprocessing cannot take the non-finite values it is
retried with them replaced by 0 (and that is said), so the run goes on.
"""
from __future__ import annotations

import dataclasses
import heapq
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .errors import BackendError, ZooinferError
from .recipes.base import Recipe
from .variants import Skipped, Sources, Variant, open_variants

#: skipped samples a report names (then a count)
SAMPLES_NAMED = 10
#: disagreement given to a sample whose outputs were not finite in the variant or the reference
NONFINITE_SCORE = 1e6
#: detections per image that per-image AP reads (COCO's maxDets)
MAX_DETS = 100
#: at most this many detections per image are kept for matching: every one with score >= half the matching
#: threshold, and the best MAX_DETS in any case (a cut at a fixed count would make near-tied detections
#: appear and vanish between variants)
MAX_STORED_DETS = 2000
COCO_IOUS = tuple(np.round(np.linspace(0.5, 0.95, 10), 2))
TASKS = ("classification", "detection", "face_detection", "reid")
#: variant precisions whose timings the report shows beside the CPU's int8 / bf16 instruction-set flags
LOW_PRECISION = ("fp16", "bf16", "int8")


# ------------------------------------------------------------------------------------------------ non-finite
@dataclass(frozen=True)
class NonFinite:
    """Non-finite values in one output of one variant for one sample (``view``: which input view, 0 normally)."""

    variant: str
    output: str
    sample: str
    view: int
    nan: int
    posinf: int
    neginf: int
    size: int

    def message(self) -> str:
        parts = [f"{n} {w}" for n, w in ((self.nan, "NaN"), (self.posinf, "+Inf"), (self.neginf, "-Inf")) if n]
        view = f" (view {self.view})" if self.view else ""
        return (f"variant {self.variant!r}, output {self.output!r}{view}, sample {self.sample!r}: "
                f"{', '.join(parts)} of {self.size} values")


def find_nonfinite(outputs: Any, names: Sequence[str], variant: str, sample: str) -> list[NonFinite]:
    """NonFinite records for one sample's outputs (a list of arrays, or one such list per view)."""
    views = outputs if outputs and isinstance(outputs[0], (list, tuple)) else [outputs]
    found = []
    for v, outs in enumerate(views):
        for k, o in enumerate(outs):
            a = np.asarray(o)
            if not np.issubdtype(a.dtype, np.floating):
                continue
            fin = np.isfinite(a)
            if fin.all():
                continue
            name = names[k] if k < len(names) else f"output{k}"
            found.append(NonFinite(variant, name, str(sample), v, int(np.isnan(a).sum()), int(np.isposinf(a).sum()),
                                   int(np.isneginf(a).sum()), int(a.size)))
    return found


def _zeroed(outputs: Any) -> Any:
    if outputs and isinstance(outputs[0], (list, tuple)):
        return [_zeroed(v) for v in outputs]
    return [np.nan_to_num(np.asarray(o), nan=0.0, posinf=0.0, neginf=0.0)
            if np.issubdtype(np.asarray(o).dtype, np.floating) else o for o in outputs]


class _Watch:
    """The recipe's postprocess, checking every output for NaN/Inf first (runs on the pipeline's post thread)."""

    def __init__(self, recipe: Recipe, variant: str):
        self.post, self.names, self.variant = recipe.postprocess, list(recipe.output_names), variant
        self.found: list[NonFinite] = []
        self.bad_keys: set[str] = set()
        self.retried: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, outputs: Any, meta: dict) -> Any:
        key = str(meta.get("key"))
        bad = find_nonfinite(outputs, self.names, self.variant, key)
        if bad:
            with self._lock:
                self.found += bad
                self.bad_keys.add(key)
        try:
            return self.post(outputs, meta)
        except Exception as e:  # noqa: BLE001 - only when the outputs were not finite; else re-raised
            if not bad:
                raise
            with self._lock:
                self.retried.append((key, f"{type(e).__name__}: {e}"))
            return self.post(_zeroed(outputs), meta)


# ------------------------------------------------------------------------------------------------ compact forms
def _logits(prediction: Any) -> np.ndarray:
    p = prediction[0] if isinstance(prediction, (list, tuple)) else prediction
    if hasattr(p, "classes") and hasattr(p, "scores"):
        raise ZooinferError("compare: classification needs the full logits, got a top-5 compact prediction")
    return np.asarray(p, dtype=np.float32).ravel()


def detections_array(prediction: Any, max_dets: int | None = None, min_score: float | None = None) -> np.ndarray:
    """A detector's prediction as float32 (K, 6) ``x y w h score class``, best first: COCO result dicts
    (bbox xywh, score, category_id), (K, 7) rows ``[image_id, x, y, w, h, score, class]`` or (K, 5) face rows
    ``x y w h score`` (class 0). ``min_score``: keep the best :data:`MAX_DETS` and any other row scoring at least
    that, at most ``max_dets`` (default :data:`MAX_STORED_DETS`)."""
    if isinstance(prediction, np.ndarray) or (len(prediction) and not isinstance(prediction[0], Mapping)):
        a = np.asarray(prediction, dtype=np.float64)
        a = a.reshape(-1, a.shape[-1] if a.ndim > 1 and a.size else 5)
        if a.shape[1] == 5:
            rows = np.column_stack([a, np.zeros(len(a))])
        elif a.shape[1] == 7:
            rows = a[:, [1, 2, 3, 4, 5, 6]]
        else:
            raise ZooinferError(f"compare: detections must be (K, 5) or (K, 7) rows, got shape {a.shape}")
    else:
        rows = np.array([[*d["bbox"], d["score"], d.get("category_id", 0)] for d in prediction],
                        dtype=np.float64).reshape(-1, 6)
    order = np.argsort(-rows[:, 4], kind="stable")
    if min_score is not None:
        keep = rows[order, 4] >= min_score
        keep[:MAX_DETS] = True
        order = order[keep]
    return rows[order[:max_dets or MAX_STORED_DETS]].astype(np.float32)


def _iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len a, len b) IoU of xywh boxes (no +1)."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


# ------------------------------------------------------------------------------------------------ agreement
def classification_agreement(ref: np.ndarray, var: np.ndarray, k: int = 5) -> dict:
    """One sample's (C,) logits, reference vs variant.

    disagreement = 1 if top-1 changed, + 0.1 per reference top-``k`` class missing from the variant's top-``k``,
    + the max abs logit error relative to the reference's largest |logit| (capped at 0.1): a changed top-1 always
    ranks above a mere top-5 change, which ranks above a pure logit error."""
    ref = np.asarray(ref, dtype=np.float64).ravel()
    var = np.asarray(var, dtype=np.float64).ravel()
    if ref.shape != var.shape:
        raise ZooinferError(f"compare: logits of shape {var.shape}, reference {ref.shape}")
    if not (np.isfinite(ref).all() and np.isfinite(var).all()):
        return {"top1_ref": None, "top1_var": None, "top1_changed": True, "top5_overlap": 0, "top5_changed": True,
                "max_abs_logit_err": None, "rel_logit_err": None, "disagreement": NONFINITE_SCORE}
    k = min(k, ref.size)
    tr, tv = np.argsort(-ref, kind="stable")[:k], np.argsort(-var, kind="stable")[:k]
    overlap = len(set(tr.tolist()) & set(tv.tolist()))
    err = float(np.abs(ref - var).max(initial=0.0))
    rel = err / max(float(np.abs(ref).max(initial=0.0)), 1e-12)
    changed = bool(tr[0] != tv[0])
    return {"top1_ref": int(tr[0]), "top1_var": int(tv[0]), "top1_changed": changed, "top5_overlap": overlap,
            "top5_changed": bool(set(tr.tolist()) != set(tv.tolist())), "max_abs_logit_err": err,
            "rel_logit_err": rel, "disagreement": float(changed) + 0.1 * (k - overlap) + min(rel, 0.1)}


def match_detections(ref: np.ndarray, var: np.ndarray, *, score_threshold: float = 0.3, iou: float = 0.9) -> dict:
    """Agreement of one image's detections (K, 6) ``x y w h score class``, reference vs variant.

    Reference detections with score >= ``score_threshold`` are matched, best score first, to the unmatched variant
    detection of the same class with the highest IoU, if that IoU >= ``iou`` (any variant score: a detection whose
    score merely crossed the threshold still matches). Variant detections above the threshold left unmatched are
    then matched the same way against any remaining reference detection; those left are ``new``.
    agreement = matched / (reference above threshold + new) (1.0 when both are 0); disagreement = 1 - agreement
    + the mean |score change| of the matched pairs (capped at 0.1)."""
    ref = np.asarray(ref, dtype=np.float64).reshape(-1, 6)
    var = np.asarray(var, dtype=np.float64).reshape(-1, 6)
    if not (np.isfinite(ref).all() and np.isfinite(var).all()):
        return {"n_ref": int((ref[:, 4] >= score_threshold).sum()), "matched": 0, "new": None, "agreement": 0.0,
                "mean_score_err": None, "max_score_err": None, "disagreement": NONFINITE_SCORE}
    ious = _iou_xywh(ref[:, :4], var[:, :4])
    same = ref[:, 5][:, None] == var[:, 5][None]
    ious = np.where(same, ious, -1.0)
    r_used = np.zeros(len(ref), bool)
    v_used = np.zeros(len(var), bool)
    pairs = []

    def greedy(r_idx: np.ndarray, first_is_ref: bool) -> None:
        for i in r_idx:
            if first_is_ref:
                cand = np.where(v_used, -1.0, ious[i])
                j = int(np.argmax(cand)) if len(cand) else -1
                if j >= 0 and cand[j] >= iou:
                    r_used[i], v_used[j] = True, True
                    pairs.append((i, j))
            else:
                cand = np.where(r_used, -1.0, ious[:, i])
                j = int(np.argmax(cand)) if len(cand) else -1
                if j >= 0 and cand[j] >= iou:
                    r_used[j], v_used[i] = True, True
                    pairs.append((j, i))

    above_r = np.flatnonzero(ref[:, 4] >= score_threshold)
    above_r = above_r[np.argsort(-ref[above_r, 4], kind="stable")]
    greedy(above_r, True)
    n_matched = len(pairs)
    above_v = np.flatnonzero((var[:, 4] >= score_threshold) & ~v_used)
    above_v = above_v[np.argsort(-var[above_v, 4], kind="stable")]
    greedy(above_v, False)
    new = int(((var[:, 4] >= score_threshold) & ~v_used).sum())
    denom = len(above_r) + new
    agreement = 1.0 if denom == 0 else n_matched / denom
    errs = [abs(ref[i, 4] - var[j, 4]) for i, j in pairs[:n_matched]]
    mean_err = float(np.mean(errs)) if errs else None
    return {"n_ref": int(len(above_r)), "matched": int(n_matched), "new": new, "agreement": float(agreement),
            "mean_score_err": mean_err, "max_score_err": float(max(errs)) if errs else None,
            "disagreement": float(1.0 - agreement + min(mean_err or 0.0, 0.1))}


def image_ap(dets: np.ndarray, gt_boxes: np.ndarray, gt_classes: np.ndarray | None = None,
             iou_thresholds: Sequence[float] = COCO_IOUS, max_dets: int = MAX_DETS) -> float | None:
    """A simple per-image AP: for each class present in the ground truth and each IoU threshold, detections of that
    class (best ``max_dets`` of the image, descending score) greedily matched to unmatched ground truth, COCO's
    101-point interpolated precision; the mean over classes and thresholds. ``dets`` (K, 6) ``x y w h score
    class``; ``gt_boxes`` (G, 4) xywh; ``gt_classes`` (G,) (None: one class, 0). None when the image has no ground
    truth. Crowd regions are not handled (drop them first)."""
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    if not len(gt_boxes):
        return None
    gt_classes = np.zeros(len(gt_boxes)) if gt_classes is None else np.asarray(gt_classes, dtype=np.float64)
    d = np.asarray(dets, dtype=np.float64).reshape(-1, 6)
    d = d[np.argsort(-d[:, 4], kind="stable")][:max_dets]
    recall_pts = np.linspace(0, 1, 101)
    aps = []
    for c in np.unique(gt_classes):
        g = gt_boxes[gt_classes == c]
        dc = d[d[:, 5] == c]
        ious = _iou_xywh(dc[:, :4], g)
        for t in iou_thresholds:
            used = np.zeros(len(g), bool)
            tp = np.zeros(len(dc))
            for i in range(len(dc)):
                cand = np.where(used, -1.0, ious[i]) if len(g) else np.zeros(0)
                j = int(np.argmax(cand)) if len(cand) else -1
                if j >= 0 and cand[j] >= t:
                    used[j] = True
                    tp[i] = 1
            if not len(dc):
                aps.append(0.0)
                continue
            ctp = np.cumsum(tp)
            recall = ctp / len(g)
            precision = ctp / np.arange(1, len(dc) + 1)
            precision = np.maximum.accumulate(precision[::-1])[::-1]  # COCO's monotone envelope
            idx = np.searchsorted(recall, recall_pts, side="left")
            q = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
            aps.append(float(q.mean()))
    return float(np.mean(aps))


def reid_agreement(ref: np.ndarray, var: np.ndarray) -> dict:
    """One sample's feature, reference vs variant: cosine similarity and max abs error. disagreement = 1 - cosine
    (+ 1 when, for a query, the rank-1 gallery image changed: added after the run, see :func:`rank1_gallery`)."""
    r = np.asarray(ref, dtype=np.float64).ravel()
    v = np.asarray(var, dtype=np.float64).ravel()
    if not (np.isfinite(r).all() and np.isfinite(v).all()):
        return {"cosine": None, "max_abs_err": None, "disagreement": NONFINITE_SCORE}
    denom = float(np.linalg.norm(r) * np.linalg.norm(v))
    cos = float(r @ v / denom) if denom > 0 else (1.0 if not r.any() and not v.any() else 0.0)
    return {"cosine": cos, "max_abs_err": float(np.abs(r - v).max(initial=0.0)), "disagreement": 1.0 - cos}


def rank1_gallery(acc: Any) -> dict[str, str | None]:
    """Query key -> key of its rank-1 gallery image under the Market-1501 rule (same identity in the same camera
    excluded), by the accumulator's own distances (a ``metrics.reid.ReidAccumulator`` after the run)."""
    if not hasattr(acc, "distances"):
        return {}
    try:
        d = np.asarray(acc.distances())
    except Exception:  # noqa: BLE001 - e.g. no gallery in a tiny subset: no rank-1 to compare
        return {}
    qp, qc = np.asarray(acc.q_pids), np.asarray(acc.q_camids)
    gp, gc = np.asarray(acc.g_pids), np.asarray(acc.g_camids)
    out = {}
    for i, s in enumerate(acc.query_samples):
        valid = ~((gp == qp[i]) & (gc == qc[i]))
        if not valid.any() or not np.isfinite(d[i][valid]).all():
            out[s.key] = None
            continue
        cand = np.flatnonzero(valid)
        best = cand[np.argsort(d[i, cand], kind="stable")[0]]
        out[s.key] = acc.gallery_samples[int(best)].key
    return out


# ------------------------------------------------------------------------------------------------ ground truth
def _gt_index(task: str, dataset: Any) -> Callable[[Any], tuple[np.ndarray, np.ndarray | None] | None] | None:
    """sample -> (gt boxes xywh, classes) for per-image AP, or None where the dataset has no ground truth here."""
    extra = getattr(dataset, "extra", None) or {}
    if task == "detection" and isinstance(extra.get("annotations"), Mapping):
        by: dict[int, list] = {}
        for a in extra["annotations"].get("annotations", []):
            if not a.get("iscrowd", 0):
                by.setdefault(int(a["image_id"]), []).append((*a["bbox"], a["category_id"]))

        def coco_gt(sample):
            iid = (sample.info or {}).get("image_id")
            rows = np.array(by.get(int(iid), []) if iid is not None else [], dtype=np.float64).reshape(-1, 5)
            return rows[:, :4], rows[:, 4]

        return coco_gt
    if task == "face_detection" and extra.get("ground_truth") is not None:
        gt = extra["ground_truth"]
        setting = "hard" if "hard" in gt.boxes else next(iter(gt.boxes))

        def face_gt(sample):
            key = tuple(sample.target) if isinstance(sample.target, (list, tuple)) else None
            i = gt.index.get(key) if key is not None else None
            if i is None:
                return None
            return np.asarray(gt.boxes[setting][i], dtype=np.float64).reshape(-1, 4), None

        return face_gt
    return None


# ------------------------------------------------------------------------------------------------ recorders
class _Recorder:
    """Accumulator wrapper: feeds the recipe's accumulator and keeps (reference) or compares (variant) the compact
    prediction of every sample. ``compute()`` is the recipe metric's."""

    def __init__(self, inner: Any, task: str, *, reference: dict | None = None, gt: Callable | None = None,
                 score_threshold: float = 0.3, iou: float = 0.9, keep_worst: int = 4, bad_keys: set | None = None):
        self.inner, self.task, self.reference = inner, task, reference
        self.gt, self.score_threshold, self.iou, self.keep_worst = gt, score_threshold, iou, keep_worst
        self.store: dict[str, Any] = {}
        self.ap: dict[str, float | None] = {}
        self.rows: list[dict] = []
        self.worst_heap: list[tuple[float, int, str, Any]] = []
        self.bad_keys = bad_keys if bad_keys is not None else set()
        self._n = 0

    def compact(self, prediction: Any) -> Any:
        if self.task == "classification":
            return _logits(prediction)
        if self.task in ("detection", "face_detection"):
            return detections_array(prediction, min_score=0.5 * self.score_threshold)
        return np.asarray(prediction, dtype=np.float32).ravel()

    def update(self, sample: Any, prediction: Any) -> None:
        self.inner.update(sample, prediction)
        c = self.compact(prediction)
        ap = None
        if self.gt is not None and self.task in ("detection", "face_detection"):
            g = self.gt(sample)
            if g is not None:
                ap = image_ap(c, g[0], g[1], COCO_IOUS if self.task == "detection" else (0.5,))
        if self.reference is None:
            self.store[sample.key] = c
            self.ap[sample.key] = ap
            return
        ref = self.reference["store"].get(sample.key)
        if ref is None:
            return
        if self.task == "classification":
            row = classification_agreement(ref, c)
        elif self.task in ("detection", "face_detection"):
            row = match_detections(ref, c, score_threshold=self.score_threshold, iou=self.iou)
            ref_ap = self.reference["ap"].get(sample.key)
            row["ap_ref"], row["ap_var"] = ref_ap, ap
            row["ap_change"] = None if ap is None or ref_ap is None else ap - ref_ap
        else:
            row = reid_agreement(ref, c)
        nonfinite = sample.key in self.bad_keys or sample.key in self.reference["bad_keys"]
        if nonfinite:
            row["disagreement"] = NONFINITE_SCORE
        row = {"sample": sample.key, "path": sample.path, "nonfinite": nonfinite, **row}
        self.rows.append(row)
        self._n += 1
        item = (row["disagreement"], -self._n, sample.key, c)
        if len(self.worst_heap) < self.keep_worst:
            heapq.heappush(self.worst_heap, item)
        elif item[:2] > self.worst_heap[0][:2]:
            heapq.heapreplace(self.worst_heap, item)

    def compute(self) -> dict:
        return self.inner.compute()


# ------------------------------------------------------------------------------------------------ results
#: per-class delta rows a variant's entry in metrics.json keeps (largest change first)
PER_CLASS_SHOWN = 20


def _per_class(acc: Any) -> dict | None:
    """The accumulator's per-class breakdown (None where it has none or cannot give one, e.g. no gallery)."""
    from .metrics.per_class import of_accumulator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return of_accumulator(acc)


def per_class_deltas(reference: dict | None, variant: dict | None) -> list[dict]:
    """A variant's per-class changes against the reference's (``metrics.per_class.deltas``), largest first."""
    from .metrics.per_class import deltas

    return deltas(reference, variant)


@dataclass
class VariantResult:
    """One variant's pass over the samples. ``per_sample``: one agreement row per sample (empty for the reference);
    ``summary``: those rows aggregated; ``nonfinite``: every output/sample with NaN or Inf."""

    name: str
    backend: str
    precision: str
    device: str
    metrics: dict
    delta: dict
    throughput: float
    inference_ips: float | None
    n_done: int
    wall_s: float
    skipped_images: list
    per_sample: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    nonfinite: list[NonFinite] = field(default_factory=list)
    postprocess_retried: list = field(default_factory=list)
    info: dict = field(default_factory=dict)
    onnx_path: str | None = None
    #: (disagreement, sample key, compact variant prediction) of the worst samples, worst first (for drawing)
    worst_predictions: list = field(default_factory=list)
    #: {sample key: reason} of the samples this variant lacks (no or unreadable result file, unreadable image): no
    #: variant's metric counts them
    skipped_samples: dict = field(default_factory=dict)
    #: the metric's per-class breakdown on the compared samples (``metrics.per_class`` document; None: none)
    per_class: dict | None = None


@dataclass
class Comparison:
    """What :func:`compare` returns: per variant results, the variants skipped here, the reference's compact
    predictions (for drawing) and the settings. ``samples``: the samples every variant and the reference hold,
    the only ones any metric, delta or agreement figure counts."""

    model: str
    task: str
    reference: str
    headline: tuple[str, ...]
    samples: list[str]
    results: list[VariantResult]
    skipped: list[Skipped]
    settings: dict
    reference_predictions: dict = field(default_factory=dict, repr=False)
    paths: dict = field(default_factory=dict, repr=False)
    #: the dataset's samples not compared because some variant (or the reference) lacks them, in dataset order
    excluded: list = field(default_factory=list)

    def result(self, name: str) -> VariantResult:
        for r in self.results:
            if r.name == name:
                return r
        known = ", ".join(r.name for r in self.results)
        raise ZooinferError(f"no compared variant {name!r}; compared: {known}")

    @property
    def nonfinite(self) -> list[NonFinite]:
        return [nf for r in self.results for nf in r.nonfinite]

    def rows(self, percent: bool = True) -> list[dict]:
        """One markdown-able row per variant (headline metrics in percent, their delta in points, img/s, speed vs the
        reference, the agreement summary, non-finite counts, the samples it lacks: count and the first ten), then one
        per skipped variant."""
        ref = self.result(self.reference)
        out = []
        for r in self.results:
            row: dict[str, Any] = {"variant": r.name, "precision": r.precision, "backend": r.backend,
                                   "device": r.device}
            scale = 100.0 if percent else 1.0
            for k in self.headline:
                if k in r.metrics:
                    row[k] = _round(scale * r.metrics[k], 3)
                    if r.name != self.reference and k in r.delta:
                        row[f"Δ{k}"] = _round(scale * r.delta[k], 3)
            row["img/s"] = _round(r.throughput, 3)
            row["speed vs ref"] = _round(r.throughput / ref.throughput, 3) if ref.throughput else None
            for k, v in r.summary.items():
                if k != "n":
                    row[k] = _round(v, 4) if isinstance(v, float) else v
            row["non-finite"] = len(r.nonfinite)
            row["skipped"] = len(r.skipped_samples)
            row["skipped samples"] = name_samples(r.skipped_samples)
            out.append(row)
        for s in self.skipped:
            out.append({"variant": s.name, "backend": "skipped", "reason": s.reason})
        return out

    def worst(self, variant: str | None = None, n: int = 10) -> list[dict]:
        """The ``n`` samples of ``variant`` (default: every non-reference variant) that disagree most with the
        reference, worst first (one row each: variant, sample, disagreement and the task's agreement fields)."""
        names = [variant] if variant else [r.name for r in self.results if r.name != self.reference]
        rows = []
        for name in names:
            r = self.result(name)
            for row in sorted(r.per_sample, key=lambda x: -x["disagreement"])[:n]:
                rows.append({"variant": name, **{k: _round(v, 5) if isinstance(v, float) else v
                                                 for k, v in row.items() if k != "path"}})
        return rows if variant else sorted(rows, key=lambda x: -x["disagreement"])[:n]

    def worst_sample(self, variant: str) -> str | None:
        """Key of the sample of ``variant`` that disagrees most with the reference (None: no per-sample rows)."""
        rows = self.result(variant).per_sample
        return max(rows, key=lambda x: x["disagreement"])["sample"] if rows else None

    def nonfinite_rows(self) -> list[dict]:
        return [dataclasses.asdict(nf) for nf in self.nonfinite]

    def markdown(self) -> str:
        from .report import markdown_table

        parts = [f"**Variants of {self.model} on {len(self.samples)} samples, reference `{self.reference}`**",
                 markdown_table(self.rows())]
        if any(r.precision in LOW_PRECISION for r in self.results):  # their CPU speed depends on these flags
            from .cpu import isa_note

            parts.append(f"Low-precision timings on the CPU: {isa_note()}.")
        if self.excluded:
            parts.append(f"{len(self.excluded)} samples are left out of every figure because a variant lacks them: "
                         f"{name_samples(self.excluded)}.")
        for r in self.results:
            if r.skipped_samples:
                parts.append(f"`{r.name}` lacks {len(r.skipped_samples)}: " + "; ".join(
                    f"{k} ({why})" for k, why in list(r.skipped_samples.items())[:10])
                    + (f"; +{len(r.skipped_samples) - 10} more" if len(r.skipped_samples) > 10 else ""))
        nf = self.nonfinite
        if nf:
            parts.append("**Non-finite outputs:**\n\n" + "\n".join(f"- {x.message()}" for x in nf[:20])
                         + (f"\n- ... {len(nf) - 20} more" if len(nf) > 20 else ""))
        for r in self.results:
            note = r.info.get("calibration_note")
            if r.info.get("calibration_keys"):
                parts.append(f"`{r.name}` calibrated on {len(r.info['calibration_keys'])} images: "
                             + ", ".join(map(str, r.info["calibration_keys"][:20]))
                             + (" ..." if len(r.info["calibration_keys"]) > 20 else "") + (f" ({note})" if note else ""))
            if r.info.get("kernel_summary"):  # what ONNX Runtime really runs in an INT8 build (zooinfer.int8)
                warning = r.info.get("kernel_warning")
                parts.append(f"`{r.name}`: {r.info['kernel_summary']}."
                             + (f" **Warning:** {warning}." if warning else ""))
            if r.info.get("speed_note"):
                parts.append(f"`{r.name}`: {r.info['speed_note']}")
        return "\n\n".join(parts)

    def to_dict(self, worst: int = 10) -> dict:
        """Plain JSON-able figures for metrics.json: settings, one entry per variant (metrics, delta, speed,
        agreement summary, worst samples, non-finite outputs, how it was made), skipped variants with reasons."""
        ref = self.result(self.reference)
        variants = []
        for r in self.results:
            variants.append({
                "name": r.name, "backend": r.backend, "precision": r.precision, "device": r.device,
                "metrics": r.metrics, "delta_vs_reference": r.delta, "throughput_img_s": r.throughput,
                "speed_vs_reference": r.throughput / ref.throughput if ref.throughput else None,
                "inference_rows_per_s": r.inference_ips, "n_done": r.n_done,
                "agreement": r.summary, "worst": self.worst(r.name, worst) if r.name != self.reference else [],
                "nonfinite": [dataclasses.asdict(x) for x in r.nonfinite],
                "postprocess_retried_with_zeros": r.postprocess_retried,
                "per_class_deltas": per_class_deltas(ref.per_class, r.per_class)[:PER_CLASS_SHOWN]
                if r.name != self.reference else [],
                "skipped_samples": {"count": len(r.skipped_samples), "first": [
                    {"sample": k, "reason": why} for k, why in list(r.skipped_samples.items())[:SAMPLES_NAMED]]},
                "info": {k: v for k, v in r.info.items() if k not in ("calibration_failed",)},
            })
        from .cpu import isa_note

        return {"model": self.model, "task": self.task, "reference": self.reference, "n_samples": len(self.samples),
                "cpu": isa_note(),
                "excluded_samples": {"count": len(self.excluded), "first": self.excluded[:SAMPLES_NAMED]},
                "settings": self.settings, "variants": variants,
                "skipped": [{"name": s.name, "reason": s.reason} for s in self.skipped]}


def _round(v: Any, digits: int) -> Any:
    if isinstance(v, float) and np.isfinite(v):
        return round(v, digits)
    return v


def summarize(task: str, rows: list[dict]) -> dict:
    """Aggregate per-sample agreement rows into the variant's summary (counts and means; non-finite samples
    counted apart and left out of the means)."""
    ok = [r for r in rows if not r.get("nonfinite")]
    out: dict[str, Any] = {"n": len(rows), "nonfinite_samples": len(rows) - len(ok)}
    if not ok:
        return out
    if task == "classification":
        out["top1_changed"] = sum(r["top1_changed"] for r in ok)
        out["top1_agreement"] = 1.0 - out["top1_changed"] / len(ok)
        out["top5_changed"] = sum(r["top5_changed"] for r in ok)
        out["mean_top5_overlap"] = float(np.mean([r["top5_overlap"] for r in ok]))
        out["max_abs_logit_err"] = float(max(r["max_abs_logit_err"] for r in ok))
        out["max_rel_logit_err"] = float(max(r["rel_logit_err"] for r in ok))
    elif task in ("detection", "face_detection"):
        out["mean_agreement"] = float(np.mean([r["agreement"] for r in ok]))
        out["images_fully_matched"] = sum(r["agreement"] >= 1.0 for r in ok)
        out["ref_dets"] = sum(r["n_ref"] for r in ok)
        out["matched"] = sum(r["matched"] for r in ok)
        out["new"] = sum(r["new"] or 0 for r in ok)
        changes = [r["ap_change"] for r in ok if r.get("ap_change") is not None]
        if changes:
            out["mean_ap_change"] = float(np.mean(changes))
            out["mean_abs_ap_change"] = float(np.mean(np.abs(changes)))
            out["images_ap_changed"] = int(sum(abs(c) > 1e-9 for c in changes))
    else:
        cos = [r["cosine"] for r in ok if r.get("cosine") is not None]
        out["min_cosine"] = float(min(cos)) if cos else None
        out["mean_cosine"] = float(np.mean(cos)) if cos else None
        q = [r for r in ok if r.get("rank1_changed") is not None]
        if q:
            out["queries"] = len(q)
            out["rank1_changed"] = sum(r["rank1_changed"] for r in q)
    return out


# ------------------------------------------------------------------------------------------------ compare
def _warm_up(recipe: Recipe, session: Any, sample: Any) -> None:
    """One batch of the first sample's first view, outside the timings (first-run allocations, engine builds)."""
    if not hasattr(session, "run"):
        return
    views, _ = recipe.preprocess(sample.path)
    session.run(np.ascontiguousarray(views[0][None], dtype=np.float32))


def compare(recipe: Recipe, dataset: Any, variants: Iterable[str | Variant], reference: str = "onnxruntime", *,
            bs: int = 1, limit: int | None = None, onnx_path: Any = None, model: Any = None,
            sources: Sources | None = None, calibration: int | None = 8, calibration_keys: Sequence[str] | None = None,
            int8_options: dict | None = None, calibration_pool: Any = None, threads: int | None = None,
            device_id: int = 0, om_path: Any = None, score_threshold: float = 0.3, iou: float = 0.9, keep_worst: int = 4, progress: bool = False
            ) -> Comparison:
    """Run every variant over the same first ``limit`` samples of ``dataset`` (all when None) with batch size ``bs``
    and compare each with the ``reference`` variant (added to the run if not listed; it runs first).

    ``variants``: names (see :mod:`zooinfer.variants`) or already opened :class:`~zooinfer.variants.Variant`
    objects (e.g. a custom session). ``onnx_path`` / ``model`` / ``sources``: what the named variants are built
    from (default: the recipe's network with synthetic weights, exported). ``calibration`` / ``calibration_keys``
    / ``int8_options``: the INT8 variant's calibration (images taken from ``calibration_pool``, default
    ``dataset``, outside the compared samples where it has more; a count larger than that is clipped and said). ``score_threshold`` / ``iou``: detection matching. Variants that cannot run here
    are listed in ``Comparison.skipped`` with the reason; an unknown name raises ZooinferError.

    Returns a :class:`Comparison` (``rows()``, ``worst()``, ``to_dict()``, ``markdown()``)."""
    if recipe.task not in TASKS:
        raise ZooinferError(f"compare: unknown task {recipe.task!r}")
    items = list(variants)
    names = [v.name if isinstance(v, Variant) else v for v in items]
    if reference not in names:
        items.insert(0, reference)
        names.insert(0, reference)
    if len(set(names)) != len(names):
        raise ZooinferError(f"compare: variant names repeat: {names}")
    data = dataset.subset(limit)
    if not len(data):
        raise ZooinferError("compare: the dataset has no samples")
    src = sources or Sources(recipe, onnx_path=onnx_path, model=model)

    def open_all(which: list) -> tuple[list[Variant], list[Skipped]]:
        opened, skipped = open_variants(which, recipe, sources=src, calibration=calibration,
                                        dataset=dataset if calibration_pool is None else calibration_pool,
                                        evaluated=[s.key for s in data], calibration_keys=calibration_keys,
                                        int8_options=int8_options, threads=threads, device_id=device_id,
                                        om_path=om_path)
        opened.sort(key=lambda v: (v.name != reference, names.index(v.name)))
        return opened, skipped

    opened, skipped = open_all(items)
    if not opened or opened[0].name != reference:
        why = next((s.reason for s in skipped if s.name == reference), "not opened")
        raise ZooinferError(f"compare: the reference variant {reference!r} cannot run here: {why}")
    # the samples each variant lacks ({variant: {key: reason}}): result files missing or of the wrong size (seen before
    # any run), then what a run skipped. Every variant is scored on the samples none lacks; when a run skipped samples
    # another scored, every variant runs again without them (the sessions, let go after each run, are opened again)
    lacking = {v.name: _missing_results(v.session, data) for v in opened}
    for v in [v for v in opened[1:] if len(lacking[v.name]) == len(data)]:  # nothing to compare: skipped, not fatal
        skipped.append(Skipped(v.name, f"holds none of the {len(data)} samples: "
                                       f"{next(iter(lacking.pop(v.name).values()))}"))
        opened.remove(v)
    owned = {id(v) for v in items if isinstance(v, Variant)}
    for attempt in range(MAX_PASSES):
        if attempt:
            opened, _ = open_all([v if id(v) in owned else v.name for v in opened])
        common = _without(data, {k for keys in lacking.values() for k in keys})
        if not len(common):
            raise ZooinferError("compare: no sample is held by every variant: "
                                + "; ".join(f"{n} lacks {len(keys)} ({name_samples(keys)})"
                                            for n, keys in lacking.items() if keys))
        results, failed, ref_store = _score_variants(recipe, common, opened, reference, owned, bs=bs,
                                                     score_threshold=score_threshold, iou=iou, keep_worst=keep_worst,
                                                     progress=progress)
        skipped += failed
        opened = [v for v in opened if v.name not in {f.name for f in failed}]
        ran_skipped = {r.name: {k: why for k, _, why in r.skipped_images} for r in results}
        if len({frozenset(keys) for keys in ran_skipped.values()}) <= 1:  # the same samples in every metric
            break
        for name, keys in ran_skipped.items():
            lacking[name].update(keys)
    else:
        raise ZooinferError(f"compare: the variants kept skipping different samples after {MAX_PASSES} passes: "
                            + "; ".join(f"{n}: {name_samples(k)}" for n, k in ran_skipped.items()))
    for r in results:
        r.skipped_samples = {**lacking[r.name], **ran_skipped[r.name]}
    compared = [s.key for s in common if not any(s.key in keys for keys in ran_skipped.values())]
    return Comparison(
        model=recipe.name, task=recipe.task, reference=reference, headline=tuple(recipe.headline),
        samples=compared, results=results, skipped=skipped,
        settings={"bs": bs, "limit": limit, "score_threshold": score_threshold, "iou": iou,
                  "calibration": calibration, "time": time.strftime("%Y-%m-%d %H:%M:%S")},
        reference_predictions=ref_store, paths={s.key: s.path for s in data},
        excluded=[s.key for s in data if s.key not in set(compared)])


#: passes over the samples at most: the first on the samples whose result files are there, one more when a run
#: skipped samples (e.g. an unreadable result file) that another variant scored
MAX_PASSES = 3


def name_samples(keys: Iterable[str], first: int = SAMPLES_NAMED) -> str:
    """The first ``first`` sample keys, comma-separated, then ``(+N more)``: how a report names skipped samples."""
    keys = list(keys)
    more = f" (+{len(keys) - first} more)" if len(keys) > first else ""
    return ", ".join(map(str, keys[:first])) + more


def _is_reader(session: Any) -> bool:
    """A reader of outputs computed elsewhere (``read(key)``, no ``run``), e.g. a ``bins:`` result folder."""
    return hasattr(session, "read") and not hasattr(session, "run")


def _missing_results(session: Any, data: Any) -> dict[str, str]:
    """{key: reason} of the samples whose result files a reader lacks (names only; {} for a session that runs)."""
    missing = getattr(session, "missing", None)
    if not callable(missing):
        return {}
    return {s.key: why for s in data if (why := missing(s.key))}


class _SkipUnreadable:
    """A result reader whose unreadable files (wrong size, bad text) skip their sample, as missing files do, instead
    of ending the comparison."""

    def __init__(self, reader: Any):
        self.reader = reader
        self.name, self.device = getattr(reader, "name", "bins"), getattr(reader, "device", "?")

    def read(self, key: str) -> Any:
        try:
            return self.reader.read(key)
        except BackendError as e:  # the pipeline skips a sample whose read raises OSError or ValueError
            raise ValueError(str(e)) from None


def _without(data: Any, keys: set[str]) -> Any:
    """``data`` without the samples ``keys`` (dataset order kept)."""
    if not keys:
        return data
    return dataclasses.replace(data, samples=[s for s in data.samples if s.key not in keys])


def _score_variants(recipe: Recipe, data: Any, opened: list[Variant], reference: str, owned: set[int], *, bs: int,
                    score_threshold: float, iou: float, keep_worst: int, progress: bool
                    ) -> tuple[list[VariantResult], list[Skipped], dict]:
    """One pass: every opened variant (the reference first) through the pipeline over ``data``, compared sample by
    sample with the reference; returns the results, the variants other than the reference that failed (as Skipped)
    and the reference's compact predictions. Sessions not in ``owned`` (the caller's) are let go after their run."""
    from .pipeline import run as pipeline_run

    gt = _gt_index(recipe.task, data)
    ref_state: dict | None = None
    results: list[VariantResult] = []
    failed: list[Skipped] = []
    ref_rank1: dict = {}
    for v in opened:
        session = _SkipUnreadable(v.session) if _is_reader(v.session) else v.session
        try:
            _warm_up(recipe, session, data[0])
        except Exception as e:  # noqa: BLE001 - a variant that fails at run time is skipped, with the reason
            if v.name == reference:
                raise
            failed.append(Skipped(v.name, f"failed on its first batch: {type(e).__name__}: {e}"))
            continue
        watch = _Watch(recipe, v.name)
        watched = dataclasses.replace(recipe, postprocess=watch)
        rec = _Recorder(recipe.new_accumulator(data), recipe.task, reference=ref_state, gt=gt,
                        score_threshold=score_threshold, iou=iou, keep_worst=keep_worst, bad_keys=watch.bad_keys)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                res = pipeline_run(watched, data, session, bs=bs, accumulator=rec, progress=progress)
        except Exception as e:  # noqa: BLE001 - as on its first batch: this variant is skipped, with the reason
            if v.name == reference:
                raise
            failed.append(Skipped(v.name, f"failed while running: {type(e).__name__}: {e}"))
            continue
        finally:
            if id(v) not in owned:
                v.session = None  # let the session (and its memory) go: only the figures are kept
        rank1 = rank1_gallery(rec.inner) if recipe.task == "reid" else {}
        if ref_state is None:
            ref_state = {"store": rec.store, "ap": rec.ap, "bad_keys": watch.bad_keys}
            ref_rank1 = rank1
        elif rank1:
            for row in rec.rows:
                if row["sample"] in ref_rank1:
                    changed = rank1.get(row["sample"]) != ref_rank1[row["sample"]]
                    row["rank1_ref"], row["rank1_var"] = ref_rank1[row["sample"]], rank1.get(row["sample"])
                    row["rank1_changed"] = bool(changed)
                    if changed and not row["nonfinite"]:
                        row["disagreement"] += 1.0
        metrics = {k: float(x) for k, x in res.metrics.items() if isinstance(x, (int, float, np.floating))}
        ref_metrics = results[0].metrics if results else metrics
        delta = {k: metrics[k] - ref_metrics[k] for k in metrics if k in ref_metrics and v.name != reference}
        infer_s, infer_n = res.timer.seconds["infer"], res.timer.items["infer"]
        worst_preds = sorted(rec.worst_heap, reverse=True)
        results.append(VariantResult(
            name=v.name, backend=v.backend, precision=v.precision, device=v.device, metrics=metrics, delta=delta,
            throughput=float(res.throughput), inference_ips=float(infer_n / infer_s) if infer_s > 0 else None,
            n_done=res.n_done, wall_s=float(res.wall_s), skipped_images=list(res.skipped), per_sample=rec.rows,
            summary=summarize(recipe.task, rec.rows) if v.name != reference else {"n": res.n_done},
            nonfinite=list(watch.found), postprocess_retried=list(watch.retried), info=dict(v.info),
            onnx_path=str(v.onnx_path) if v.onnx_path else None,
            worst_predictions=[(d, k, c) for d, _, k, c in worst_preds], per_class=_per_class(rec.inner)))
        if v.name == reference:
            results[0].summary["nonfinite_samples"] = len(watch.bad_keys)
    return results, failed, ref_state["store"] if ref_state else {}
