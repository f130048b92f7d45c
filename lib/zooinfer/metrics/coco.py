"""COCO bbox mAP: pycocotools ``COCOeval`` run exactly as the guides run it, plus the plumbing around it.

Nothing of COCOeval is re-implemented: ``evaluate`` loads the ground truth, checks the detections (clear errors
instead of pycocotools' bare asserts), calls ``loadRes`` / ``COCOeval(gt, dt, "bbox")`` / ``evaluate`` /
``accumulate`` / ``summarize`` and returns the 12 ``stats`` by name, as fractions. pycocotools reports -1 for a
statistic whose area range has no ground truth (e.g. APm/APl with SSD's bbox-only annotation file, where every area
is 1.0); that sentinel is passed through unchanged.

Which images are evaluated matters: COCOeval averages over ``params.imgIds`` (all images of the annotation file
unless ``img_ids`` is given), but an image with neither ground truth nor detections does not change the result.
val2017 has 48 images without annotations: SSD-ResNet34 skips them (4,952 predicted images), M2Det predicts every
image of minival2014 (5,000; detections on images without ground truth are false positives). The result carries
``n_images`` (ids in the evaluation) and ``n_images_counted`` (those with ground truth or detections, i.e. the images
that can change the figures) so a report can say which protocol was run.

Evaluators (``evaluator=`` of :func:`evaluate` and :class:`CocoAccumulator`; the result's ``evaluator`` key says
which one ran): ``"pycocotools"`` (the default: what the guides run), ``"faster-coco-eval"`` (the faster-coco-eval
package's C++ ``COCOeval_faster``, optional: ``pip install "zooinfer[fast]"``; 5,000 images x 100 detections in a
few seconds instead of ~80 s) and ``"auto"`` (faster-coco-eval where installed, else pycocotools). Both evaluators
get the same pycocotools ground truth and ``loadRes`` results, so only the matching and accumulation differ. They
agree exactly on everything but one rounding: pycocotools computes precision as ``tp / (tp + fp + np.spacing(1))``,
faster-coco-eval as ``tp / (tp + fp)``; the two differ only where ``tp + fp == 1`` (``1 / (1 + 2**-52)`` =
0.9999999999999998 instead of 1.0), which survives the precision envelope only at the first recall points of a
curve whose first counted (not ignored) detection is a hit and the next counted one a miss (or none follows). Recall
and score arrays are bit-identical; the 12 statistics are means over those arrays: bit-equal, or 1-3 units in the
last place apart (<= 6e-17 on the test fixtures; bit-equal on the full-size synthetic set of
benchmarks/bench_metrics.py). Hence the default stays pycocotools.

Confidence intervals (:meth:`CocoAccumulator.intervals`): a percentile bootstrap over images. pycocotools'
``evaluate()`` (the per-image matching) runs once; its ``evalImgs`` are reduced to per-detection match / ignore flags
(:class:`_PerImage`), and ``accumulate()`` + ``summarize()`` are redone per resample with every image weighted by its
draw count (:func:`_weighted_stats`; the one place where COCOeval's arithmetic is re-done here, checked against
pycocotools' precision / recall arrays in tests/metrics/test_intervals.py).
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..errors import DatasetError, MetricInputError, ZooinferError

#: ``evaluator=`` values (see the module docstring).
EVALUATORS = ("pycocotools", "faster-coco-eval", "auto")
FAST_INSTALL_HINT = ('pip install "zooinfer[fast]"  (the faster-coco-eval package; in a checkout: '
                     'pip install -e ".[fast]")')

#: The 12 COCOeval bbox statistics, in ``COCOeval.stats`` order.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")

#: COCO category ids of the 80 detection classes, in ascending id order (= the order of ``categories`` in the
#: official instance files): contiguous class k (1-based) has category id ``COCO80_TO_91[k - 1]``.
COCO80_TO_91 = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34,
    35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
    64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)


def coco80_to_91() -> list[int]:
    """The 80 COCO category ids in ascending order: index i holds the id of contiguous 0-based class i."""
    return list(COCO80_TO_91)


def label_to_category_id(labels: int | Sequence[int] | np.ndarray, *, first: int = 1) -> int | np.ndarray:
    """Contiguous model labels -> COCO category ids (fixed 80-entry table, ascending id order).

    ``first`` is the label of the first class: 1 for models whose index 0 is background (SSD, M2Det: labels 1..80),
    0 for 0-based foreground labels (0..79). Returns an int for an int, an int64 array otherwise.
    """
    table = np.asarray(COCO80_TO_91, dtype=np.int64)
    arr = np.asarray(labels)
    if arr.size and (not np.issubdtype(arr.dtype, np.integer) and not np.all(arr == np.round(arr))):
        raise MetricInputError(f"label_to_category_id: labels must be integers, got {arr.dtype}")
    idx = arr.astype(np.int64) - int(first)
    if idx.size and (idx.min() < 0 or idx.max() >= len(table)):
        bad = arr[(idx < 0) | (idx >= len(table))].ravel()[:5]
        raise MetricInputError(f"label_to_category_id: labels must lie in {first}..{first + 79}, got e.g. {bad.tolist()}")
    out = table[idx]
    return int(out) if out.ndim == 0 else out


def category_ids(ann: Any) -> list[int]:
    """Category ids in the order of the annotation file's ``categories`` list (what the guides index with)."""
    return [int(c["id"]) for c in load_ground_truth(ann).dataset["categories"]]


def load_ground_truth(ann: Any, *, quiet: bool = True):
    """A ``pycocotools.coco.COCO`` from a path, an already-loaded ``COCO``, or an annotation dict (used as is)."""
    from pycocotools.coco import COCO

    if isinstance(ann, COCO):
        return ann
    if isinstance(ann, dict):
        if not {"images", "annotations", "categories"} <= set(ann):
            raise MetricInputError("COCO ground truth dict needs 'images', 'annotations' and 'categories' keys, "
                                   f"got {sorted(ann)}")
        gt = COCO()
        gt.dataset = ann
        with _maybe_quiet(quiet):
            gt.createIndex()
        return gt
    path = Path(ann)
    if not path.is_file():
        raise DatasetError(f"COCO annotation file not found: {path}\n"
                           "Expected an instances_*.json file (e.g. annotations/instances_val2017.json)")
    try:
        with _maybe_quiet(quiet):
            return COCO(str(path))
    except (ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{path}: not a COCO annotation file ({type(e).__name__}: {e})") from None


def _maybe_quiet(quiet: bool):
    return contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext()


#: shared by the accumulator's result dicts: bbox evaluation never reads a segmentation, and without the key
#: pycocotools' loadRes builds an 8-float polygon per detection (about a third of its memory for 1M detections)
_NO_SEGMENTATION: list = []


def _load_detections(detections: Any, copy: bool = True) -> list[dict] | np.ndarray:
    """Result dicts (copied unless the caller owns them: loadRes adds keys), or an (N, 7) array passed through as
    the SSD guide does."""
    if isinstance(detections, (str, Path)):
        path = Path(detections)
        if not path.is_file():
            raise MetricInputError(f"COCO results file not found: {path}")
        try:
            with open(path) as f:
                detections = json.load(f)
        except json.JSONDecodeError as e:
            raise MetricInputError(f"{path}: not a JSON file ({e})") from None
        if not isinstance(detections, list):
            raise MetricInputError(f"{path}: a COCO results file is a JSON list of result objects")
        return detections  # freshly loaded: no need to copy
    if isinstance(detections, np.ndarray):
        if detections.ndim != 2 or detections.shape[1] != 7:
            raise MetricInputError("COCO detections array must be (N, 7) rows of "
                                   f"[image_id, x, y, w, h, score, category_id], got shape {detections.shape}")
        return detections
    if not copy and isinstance(detections, list):
        return detections
    return [dict(d) if isinstance(d, dict) else d for d in detections]


def _check_detections(dets: list[dict] | np.ndarray, gt) -> None:
    """Clear errors for what pycocotools would assert on (or silently ignore)."""
    if isinstance(dets, np.ndarray):
        img_ids = set(dets[:, 0].astype(np.int64).tolist())
        cat_ids = set(dets[:, 6].astype(np.int64).tolist())
    else:
        for i, d in enumerate(dets):
            if not isinstance(d, dict) or not {"image_id", "category_id", "bbox", "score"} <= set(d):
                raise MetricInputError(f"COCO detection #{i} must be a dict with image_id, category_id, bbox [x, y, w, h] "
                                       f"and score, got {d!r:.200}")
            if len(d["bbox"]) != 4:
                raise MetricInputError(f"COCO detection #{i}: bbox must be [x, y, w, h], got {d['bbox']!r}")
        img_ids = {d["image_id"] for d in dets}
        cat_ids = {d["category_id"] for d in dets}
    unknown = img_ids - set(gt.getImgIds())
    if unknown:
        raise MetricInputError(f"{len(unknown)} image id(s) in the detections are not in the ground truth, e.g. "
                               f"{sorted(unknown)[:5]}: detections must use the annotation file's image ids")
    unknown = cat_ids - set(gt.getCatIds())
    if unknown:
        raise MetricInputError(f"category id(s) {sorted(unknown)[:10]} of the detections are not in the ground truth: "
                               "map model labels with label_to_category_id (1..80 -> COCO ids)")


def _empty_results(gt):
    from pycocotools.coco import COCO

    res = COCO()
    res.dataset = {"images": list(gt.dataset["images"]), "categories": copy.deepcopy(gt.dataset["categories"]),
                   "annotations": []}
    res.createIndex()
    return res


def resolve_evaluator(evaluator: str = "pycocotools") -> tuple[str, type]:
    """``(name, COCOeval class)`` for an ``evaluator=`` value: ``"pycocotools"``, ``"faster-coco-eval"`` (a
    ZooinferError with the install line when the package is missing) or ``"auto"`` (faster-coco-eval where it
    imports, else pycocotools)."""
    if evaluator not in EVALUATORS:
        raise MetricInputError(f"COCO evaluator must be one of {', '.join(EVALUATORS)}, got {evaluator!r}")
    if evaluator != "pycocotools":
        try:
            from faster_coco_eval import COCOeval_faster
        except ImportError:
            if evaluator == "faster-coco-eval":
                raise ZooinferError('COCO evaluator="faster-coco-eval" needs the faster-coco-eval package, which is '
                                    f'not installed: {FAST_INSTALL_HINT}; or use evaluator="pycocotools"') from None
        else:
            return "faster-coco-eval", COCOeval_faster
    from pycocotools.cocoeval import COCOeval

    return "pycocotools", COCOeval


def evaluator_version(name: str) -> str | None:
    """The installed version of an evaluator's package (``"pycocotools"`` / ``"faster-coco-eval"``), or None."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def evaluate(detections: Any, ann_file: Any, *, img_ids: Iterable[int] | None = None,
             quiet: bool = True, copy: bool = True, evaluator: str = "pycocotools") -> dict[str, float]:
    """COCO bbox evaluation with pycocotools (or faster-coco-eval: ``evaluator``).

    ``detections``: COCO result dicts (``image_id``, ``category_id``, ``bbox`` [x, y, w, h] in original pixels,
    ``score``), a results-file path, or an (N, 7) array ``[image_id, x, y, w, h, score, category_id]`` (passed to
    ``loadRes`` as is, like the SSD guide). ``ann_file``: an annotation path, a loaded ``COCO`` or an annotation dict.
    ``img_ids``: evaluate only these images (default: every image of the annotation file, as COCOeval does).
    ``copy=False``: the result dicts are the caller's to give away (pycocotools adds keys to them; no copy is made).
    ``evaluator``: ``"pycocotools"`` (default), ``"faster-coco-eval"`` or ``"auto"`` (see the module docstring).

    Returns the 12 stats by name (``STAT_NAMES``, fractions; -1 where an area range has no ground truth) plus
    ``n_images`` (images in the evaluation), ``n_images_counted`` (those with ground truth or detections),
    ``n_detections`` and ``evaluator`` (``"pycocotools"`` or ``"faster-coco-eval"``: the one that ran). No
    detections at all gives 0 (or -1) everywhere and a warning.
    """
    return _evaluate(detections, ann_file, img_ids=img_ids, quiet=quiet, copy=copy, stacklevel=3,
                     evaluator=evaluator)[0]


#: the ``eval`` keys kept from an evaluator (faster-coco-eval adds ``matched``, a dict entry per matched detection)
_EVAL_KEYS = ("params", "counts", "date", "precision", "recall", "scores")


def _evaluate(detections: Any, ann_file: Any, *, img_ids: Iterable[int] | None, quiet: bool, copy: bool,
              stacklevel: int, evaluator: str = "pycocotools") -> tuple[dict[str, float], dict]:
    """``evaluate``'s figures and ``COCOeval.eval`` after ``accumulate()`` (the precision/recall arrays the stats
    are read from); warnings point ``stacklevel`` up."""
    name, COCOeval = resolve_evaluator(evaluator)
    gt = load_ground_truth(ann_file, quiet=quiet)
    dets = _load_detections(detections, copy=copy)
    _check_detections(dets, gt)
    ids = sorted(gt.getImgIds())
    if img_ids is not None:
        ids = sorted({int(i) for i in img_ids})
        unknown = set(ids) - set(gt.getImgIds())
        if unknown:
            raise MetricInputError(f"img_ids not in the ground truth: {sorted(unknown)[:5]}")
    if not ids:
        raise MetricInputError("COCO evaluation: no images to evaluate")
    n_dets = int(len(dets))
    with _maybe_quiet(quiet):
        if n_dets == 0:
            warnings.warn("COCO evaluation: no detections at all; every AP/AR is 0", stacklevel=stacklevel)
            dt = _empty_results(gt)
        else:
            dt = gt.loadRes(dets)
        if name == "pycocotools":
            ev = COCOeval(gt, dt, "bbox")
        else:  # the same pycocotools COCO objects (ground truth, loadRes results): only the evaluation differs
            ev = COCOeval(gt, dt, "bbox", print_function=print if not quiet else (lambda *a, **k: None))
        ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out = {name: float(v) for name, v in zip(STAT_NAMES, ev.stats)}
    id_set = set(ids)
    with_gt = {i for i in gt.imgToAnns if gt.imgToAnns[i]}
    with_dt = {i for i in dt.imgToAnns if dt.imgToAnns[i]}
    out["n_images"] = len(ids)
    out["n_images_counted"] = len(id_set & (with_gt | with_dt))
    out["n_detections"] = n_dets
    out["evaluator"] = name
    return out, {k: ev.eval[k] for k in _EVAL_KEYS if k in ev.eval}


class _PerImage:
    """pycocotools' ``evalImgs`` (maxDet 100) reduced to what ``accumulate()`` reads, per category: detections of
    all images concatenated in imgIds order (each image's by descending score, as evaluateImg keeps them) and then
    sorted by ``-score`` with ``kind="mergesort"`` (accumulate's order), so a stable image weighting reproduces it.

    Per category index k (``cats[k]`` a dict): ``image`` (D,) int64 index into ``img_ids``, ``rank`` (D,) position
    within its image's list (for maxDets 1 / 10), ``tp`` / ``fp`` (A, T, D) bool (matched / unmatched and not
    ignored, per area range and IoU threshold). ``npig`` (n_images, K, A) int64: non-ignored ground truth per image.
    """

    def __init__(self, ev: Any) -> None:
        p = ev.params
        self.img_ids = list(p.imgIds)
        self.cat_ids = [int(c) for c in p.catIds]
        self.iou_thrs = np.asarray(p.iouThrs, dtype=np.float64)
        self.rec_thrs = np.asarray(p.recThrs, dtype=np.float64)
        self.max_dets = list(p.maxDets)
        self.area_labels = list(p.areaRngLbl)
        n_i, n_a, n_k, n_t = len(p.imgIds), len(p.areaRng), len(p.catIds), len(p.iouThrs)
        self.npig = np.zeros((n_i, n_k, n_a), dtype=np.int64)
        self.cats: list[dict] = []
        e_all = ev.evalImgs
        for k in range(n_k):
            base = k * n_a * n_i
            present, sizes, scores = [], [], []
            matched: list[list[np.ndarray]] = [[] for _ in range(n_a)]
            ignored: list[list[np.ndarray]] = [[] for _ in range(n_a)]
            gt_ignore: list[list[Any]] = [[] for _ in range(n_a)]
            for i in range(n_i):  # plain appends here, array work once per category below
                e0 = e_all[base + i]
                if e0 is None:  # no ground truth and no detection: None in every area range
                    continue
                present.append(i)
                sizes.append(len(e0["dtScores"]))
                scores.extend(e0["dtScores"])
                for a in range(n_a):
                    e = e_all[base + a * n_i + i]
                    matched[a].append(e["dtMatches"])
                    ignored[a].append(e["dtIgnore"])
                    gt_ignore[a].append(e["gtIgnore"])
            if not present:
                self.cats.append({"image": np.zeros(0, np.int64), "rank": np.zeros(0, np.int64),
                                  "tp": np.zeros((n_a, n_t, 0), bool), "fp": np.zeros((n_a, n_t, 0), bool)})
                continue
            present_a, sizes_a = np.array(present, dtype=np.int64), np.array(sizes, dtype=np.int64)
            g_len = np.array([len(g) for g in gt_ignore[0]], dtype=np.int64)
            g_img = np.repeat(present_a, g_len)
            for a in range(n_a):
                g = np.concatenate([np.asarray(x, dtype=np.float64).ravel() for x in gt_ignore[a]])
                self.npig[:, k, a] = np.bincount(g_img, weights=(g == 0), minlength=n_i).astype(np.int64)
            images = np.repeat(present_a, sizes_a)
            ranks = np.arange(len(images)) - np.repeat(np.cumsum(sizes_a) - sizes_a, sizes_a)
            order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
            # accumulate's truth value of the matched gt id, and its dtIgnore
            m = np.stack([np.concatenate(x, axis=1) for x in matched])[:, :, order] != 0
            ig = np.stack([np.concatenate(x, axis=1) for x in ignored])[:, :, order].astype(bool)
            self.cats.append({"image": images[order], "rank": ranks[order], "tp": m & ~ig, "fp": ~m & ~ig})


def _weighted_stats(pi: _PerImage, weights: np.ndarray, keep_arrays: bool = False,
                    chunk_elements: int = 1 << 21) -> dict[str, np.ndarray]:
    """The 12 ``STAT_NAMES`` (R,) with image i counted ``weights[r, i]`` times (``weights``: (R, n_images) counts,
    columns in ``pi.img_ids`` order); NaN where pycocotools would give -1 (no weighted ground truth in the area
    range). Follows ``accumulate()``: per category, area and maxDet the tp / fp cumulative sums over the sorted
    detections become sums of image weights, ``npig`` a weighted sum, precision ``tp / (fp + tp + eps)`` made
    monotone and read at the 101 recall points (first point with recall >= r, as ``searchsorted``; 0 past the end).

    Only the positions of true positives are visited: the monotone precision at any point is the largest
    precision at a true positive at or after it (a false positive only lowers it), so per (category, IoU) the
    false positives are summed, with weights, into the gaps between consecutive true positives (one sparse
    product). With all weights 1 every count is the same integer as pycocotools', hence the same precision and
    recall arrays (``keep_arrays=True`` adds them: ``precision`` (R, T, 101, K, A) and ``recall`` (R, T, K, A, M),
    -1 where undefined, for the tests); recall figures are then bit-equal, precision means equal up to summation
    order (~1e-16).
    """
    from scipy import sparse

    w = np.asarray(weights, dtype=np.float64)
    n_r, n_i = w.shape
    if n_i != len(pi.img_ids):
        raise MetricInputError(f"COCO weights must be (R, {len(pi.img_ids)}), got {w.shape}")
    wt = np.ascontiguousarray(w.T)  # (n_images, R): the dense side of the sparse products
    w_pad = np.concatenate([w, np.zeros((n_r, 1))], axis=1)  # column n_i: weight 0 for padding
    n_k, n_a = pi.npig.shape[1:]
    n_t, rec = len(pi.iou_thrs), pi.rec_thrs
    n_rec = len(rec)
    eps = np.spacing(1)
    npig_w = (wt.T @ pi.npig.reshape(n_i, -1)).reshape(n_r, n_k, n_a)
    defined = npig_w > 0
    psum = np.zeros((n_r, n_t, n_k, n_a))  # sum over the 101 recall points of the precision, maxDet 100
    precision = -np.ones((n_r, n_t, n_rec, n_k, n_a)) if keep_arrays else None
    tp_tot = np.zeros((n_r, n_t, n_k, n_a, len(pi.max_dets)))
    for k, c in enumerate(pi.cats):
        img = c["image"]
        for mi, md in enumerate(pi.max_dets):  # recall: the weighted true positives among each image's top md
            sel = c["rank"] < md
            for a in range(n_a):
                tt, dd = np.nonzero(c["tp"][a][:, sel])
                if len(tt):
                    cnt = sparse.csr_matrix((np.ones(len(tt)), (tt, img[sel][dd])), shape=(n_t, n_i))
                    tp_tot[:, :, k, a, mi] = np.asarray(cnt @ wt).T
        for a in range(n_a):
            tp, fp = c["tp"][a], c["fp"][a]
            if not defined[:, k, a].any():
                continue
            ctp = np.cumsum(tp, axis=1)  # true positives at or before each detection
            n_tp = ctp[:, -1] if tp.shape[1] else np.zeros(n_t, np.int64)
            width = int(n_tp.max()) + 1  # >= one padding column per IoU threshold
            tt, dd = np.nonzero(tp)
            tp_img = np.full(n_t * width, n_i)
            tp_img[tt * width + ctp[tt, dd] - 1] = img[dd]
            ft, fd = np.nonzero(fp & (ctp < n_tp[:, None]))  # false positives before the last true positive
            gaps = sparse.csr_matrix((np.ones(len(ft)), (ft * width + ctp[ft, fd], img[fd])), shape=(n_t * width, n_i))
            pad = np.arange(width)[None, :] >= n_tp[:, None]  # (T, width)
            step = max(1, chunk_elements // (n_t * width))
            for lo in range(0, n_r, step):
                hi = min(n_r, lo + step)
                b = hi - lo
                tp_w = np.cumsum(w_pad[lo:hi, tp_img].reshape(b, n_t, width), axis=2)
                fp_w = np.cumsum(np.asarray(gaps @ wt[:, lo:hi]).T.reshape(b, n_t, width), axis=2)
                with np.errstate(divide="ignore", invalid="ignore"):
                    pr = tp_w / (fp_w + tp_w + eps)
                    rc = tp_w / npig_w[lo:hi, k, a][:, None, None]
                pr[:, pad] = 0.0
                rc[:, pad] = np.inf
                env = np.maximum.accumulate(pr[:, :, ::-1], axis=2)[:, :, ::-1]
                # first point with rc >= recall threshold j = the number of points with rc < it
                bucket = np.searchsorted(rec, rc, side="right")  # how many thresholds each point reaches
                flat = (np.arange(b * n_t)[:, None] * (n_rec + 1) + bucket.reshape(b * n_t, width)).ravel()
                first = np.bincount(flat, minlength=b * n_t * (n_rec + 1)).reshape(b, n_t, n_rec + 1)
                first = np.cumsum(first, axis=2)[:, :, :n_rec]
                q = np.take_along_axis(env, first, axis=2)  # (b, T, 101); padding reads 0
                psum[lo:hi, :, k, a] = q.sum(axis=2)
                if keep_arrays:
                    precision[lo:hi, :, :, k, a] = np.where(defined[lo:hi, k, a][:, None, None], q, -1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(defined[:, None, :, :, None], tp_tot / npig_w[:, None, :, :, None], -1.0)
    t50, t75 = (int(np.flatnonzero(np.isclose(pi.iou_thrs, t))[0]) for t in (0.5, 0.75))
    area = {lbl: i for i, lbl in enumerate(pi.area_labels)}
    m100 = pi.max_dets.index(100)

    def ap(ts: slice, a: int) -> np.ndarray:
        n_def = defined[:, :, a].sum(axis=1)
        tot = (psum[:, ts, :, a] * defined[:, None, :, a]).sum(axis=(1, 2))  # (R, T', K) * (R, 1, K)
        n_ts = psum[:, ts].shape[1]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(n_def > 0, tot / (n_def * n_ts * n_rec), np.nan)

    def ar(a: int, mi: int) -> np.ndarray:  # as summarize: the mean of the defined entries, in its order
        out = np.full(n_r, np.nan)
        for r in range(n_r):
            s = recall[r, :, :, a, mi]
            if (s > -1).any():
                out[r] = np.mean(s[s > -1])
        return out

    al = area["all"]
    out = {"AP": ap(slice(None), al), "AP50": ap(slice(t50, t50 + 1), al), "AP75": ap(slice(t75, t75 + 1), al),
           "APs": ap(slice(None), area["small"]), "APm": ap(slice(None), area["medium"]),
           "APl": ap(slice(None), area["large"]),
           "AR1": ar(al, pi.max_dets.index(1)), "AR10": ar(al, pi.max_dets.index(10)), "AR100": ar(al, m100),
           "ARs": ar(area["small"], m100), "ARm": ar(area["medium"], m100), "ARl": ar(area["large"], m100)}
    if keep_arrays:
        out["precision"], out["recall"] = precision, recall
    return out


def per_category_ap(precision: np.ndarray, cat_ids: Sequence[int], gt: Any, img_ids: Iterable[int]) -> dict:
    """AP per category (fractions) as pycocotools' ``summarize`` computes AP, one category at a time: the mean of
    ``precision[:, :, k]`` over its defined entries (> -1), where ``precision`` is (T, R, K) at area "all" and
    maxDets 100 (``COCOeval.eval['precision'][:, :, :, 0, -1]``); None where every entry is -1 (no ground truth of
    that category in the evaluated images). Rows in ``cat_ids`` order, named by the ground truth's ``categories``,
    with ``n`` the category's non-crowd objects in ``img_ids`` (:mod:`~zooinfer.metrics.per_class` document)."""
    from collections import Counter

    from .per_class import breakdown

    p = np.asarray(precision, dtype=np.float64)
    ids = {int(i) for i in img_ids}
    objects = Counter(int(a["category_id"]) for a in gt.anns.values()
                      if int(a["image_id"]) in ids and not a.get("iscrowd", 0))
    rows = []
    for k, cat in enumerate(cat_ids):
        s = p[:, :, k]
        defined = s[s > -1]
        name = gt.cats.get(int(cat), {}).get("name", str(cat))
        rows.append({"name": name, "category_id": int(cat), "AP": float(np.mean(defined)) if defined.size else None,
                     "n": objects.get(int(cat), 0)})
    return breakdown("category", ("AP",), rows)


def result_rows(results: Any) -> np.ndarray:
    """COCO result dicts (``image_id``, ``category_id``, ``bbox`` [x, y, w, h], ``score``) -> float64 rows
    ``[image_id, x, y, w, h, score, category_id]``, (N, 7): exact for Python floats; what a detection recipe stores
    and sends back from scale-out workers (``Recipe.compact``), and what :class:`CocoAccumulator` keeps."""
    if isinstance(results, np.ndarray):
        return np.asarray(results, dtype=np.float64).reshape(-1, 7)
    return np.array([[d["image_id"], *d["bbox"], d["score"], d["category_id"]] for d in results],
                    dtype=np.float64).reshape(-1, 7)


def _default_image_id(sample: Any) -> int | None:
    """Image id of a dataset sample: ``info['image_id']``, an int ``target`` / ``target['image_id']``, or a
    numeric ``key`` (COCO file stems such as ``000000000139``)."""
    info = getattr(sample, "info", None) or {}
    if "image_id" in info:
        return int(info["image_id"])
    target = getattr(sample, "target", None)
    if isinstance(target, (int, np.integer)):
        return int(target)
    if isinstance(target, dict):
        for k in ("image_id", "id"):
            if k in target:
                return int(target[k])
    key = str(getattr(sample, "key", ""))
    stem = key.rsplit("_", 1)[-1]  # COCO_val2014_000000000042 -> 000000000042
    return int(stem) if stem.isdigit() else None


class CocoAccumulator:
    """Collects per-image COCO detections from the pipeline and evaluates them at the end.

    ``ann_file``: path, ``COCO`` or dict (loaded once). ``img_ids``: the protocol's images (default: every image of
    the annotation file). ``predicted_only=True`` evaluates only the images that were actually predicted (e.g.
    when images are missing on disk or with ``limit``): mAP over fewer images, and the missing count is reported.
    ``image_id_of(sample)`` gives a sample's image id (default: ``info['image_id']``, an int target or a numeric key);
    images without detections are still counted as predicted when their id is known.
    ``evaluator``: ``"pycocotools"`` (default), ``"faster-coco-eval"`` or ``"auto"`` (module docstring); resolved
    here, so a missing faster-coco-eval stops the run before any image is read; :attr:`evaluator` is the one that
    will run.
    """

    def __init__(self, ann_file: Any, *, img_ids: Iterable[int] | None = None, predicted_only: bool = False,
                 image_id_of: Callable[[Any], int | None] | None = None, evaluator: str = "pycocotools") -> None:
        #: the evaluator that runs in :meth:`compute` (``"pycocotools"`` or ``"faster-coco-eval"``)
        self.evaluator = resolve_evaluator(evaluator)[0]
        self.gt = load_ground_truth(ann_file)
        self.img_ids = None if img_ids is None else sorted({int(i) for i in img_ids})
        self.predicted_only = predicted_only
        self.image_id_of = image_id_of or _default_image_id
        self._rows: list[np.ndarray] = []  # compact (N, 7) float64 rows, in arrival order
        self.predicted: set[int] = set()
        #: ``COCOeval.eval`` of the last :meth:`compute` (the evaluator's accumulate() output: ``params``, ``counts``
        #: [T, R, K, A, M], ``precision`` (T, R, K, A, M) with -1 where undefined, ``recall`` (T, K, A, M),
        #: ``scores``): T IoU thresholds 0.5:0.95, R 101 recall points, K categories, A areas (all, small,
        #: medium, large), M max detections (1, 10, 100). None before compute(). The per-image evaluation
        #: (``evalImgs``) is not kept: it is the bulk of COCOeval's memory.
        self.eval: dict | None = None

    def update(self, sample: Any, detections: Any) -> None:
        """``detections``: this image's list of COCO result dicts (or (N, 7) rows). Kept as float64 rows
        ``[image_id, x, y, w, h, score, category_id]`` (exact for Python floats), not as dicts."""
        if isinstance(detections, np.ndarray):
            rows = result_rows(detections)
        else:
            try:
                rows = result_rows(detections)
            except (KeyError, TypeError, ValueError) as e:
                raise MetricInputError(f"COCO detections of {getattr(sample, 'key', sample)!r}: each must be a dict with "
                                       f"image_id, category_id, bbox [x, y, w, h] and score ({type(e).__name__}: {e})"
                                       ) from None
        image_id = self.image_id_of(sample)
        if image_id is not None:
            self.predicted.add(int(image_id))
        self.predicted.update(int(i) for i in np.unique(rows[:, 0]))
        if len(rows):
            self._rows.append(rows)

    @property
    def results(self) -> list[dict]:
        """The collected detections as COCO result dicts, in arrival order."""
        return self._result_dicts()

    def _result_dicts(self, **extra: Any) -> list[dict]:
        # column-wise: no per-row 7-float lists in between (1M detections on full COCO val)
        rows = np.concatenate(self._rows) if self._rows else np.zeros((0, 7))
        ids, cats = rows[:, 0].astype(np.int64).tolist(), rows[:, 6].astype(np.int64).tolist()
        return [{"image_id": i, "category_id": c, "bbox": b, "score": sc, **extra}
                for i, c, b, sc in zip(ids, cats, rows[:, 1:5].tolist(), rows[:, 5].tolist())]

    def _evaluated_ids(self) -> tuple[list[int], list[int], list[int]]:
        """(expected ids, those not predicted, the ids evaluated)."""
        expected = self.img_ids if self.img_ids is not None else sorted(self.gt.getImgIds())
        missing = sorted(set(expected) - self.predicted)
        ids = sorted(set(expected) & self.predicted) if self.predicted_only else expected
        return expected, missing, ids

    def compute(self) -> dict[str, float]:
        expected, missing, ids = self._evaluated_ids()
        if missing:
            what = "left out of the evaluation" if self.predicted_only else "evaluated with no detections"
            warnings.warn(f"COCO: {len(missing)} of {len(expected)} images were not predicted and are {what} "
                          f"(e.g. ids {missing[:5]})", stacklevel=2)
        out, self.eval = _evaluate(self._result_dicts(segmentation=_NO_SEGMENTATION), self.gt, img_ids=ids,
                                   quiet=True, copy=False, stacklevel=3, evaluator=self.evaluator)
        out["n_images_missing"] = len(missing)
        return out

    def per_image(self) -> _PerImage:
        """pycocotools' per-image evaluation (``COCOeval.evaluate()`` on the images compute() evaluates, always
        with pycocotools: faster-coco-eval does not expose it), reduced to the compact per-detection flags the
        weighted figures need (:class:`_PerImage`; ``evalImgs`` itself is let go)."""
        from pycocotools.cocoeval import COCOeval

        ids = sorted({int(i) for i in self._evaluated_ids()[2]})
        dets = self._result_dicts(segmentation=_NO_SEGMENTATION)
        _check_detections(dets, self.gt)
        with _maybe_quiet(True):
            ev = COCOeval(self.gt, self.gt.loadRes(dets) if dets else _empty_results(self.gt), "bbox")
            ev.params.imgIds = ids
            ev.evaluate()
        return _PerImage(ev)

    def weighted_figures(self, weights: np.ndarray, per_image: _PerImage | None = None) -> dict[str, np.ndarray]:
        """The 12 stats (``STAT_NAMES``, fractions) with the images weighted: ``weights`` (R, n_images) over the
        evaluated image ids in ascending order (``n_images`` of compute()), one row per resample; (R,) arrays, NaN
        where an area range has no weighted ground truth (pycocotools' -1). ``per_image``: :meth:`per_image`'s
        result when already at hand. All-ones weights give compute()'s figures (pycocotools evaluator)."""
        pi = self.per_image() if per_image is None else per_image
        return _weighted_stats(pi, np.asarray(weights))

    def per_class(self, per_image: _PerImage | None = None) -> dict:
        """AP per category (:func:`per_category_ap`: pycocotools' AP of each of the categories, e.g. the 80 of COCO,
        None where a category has no ground truth in the evaluated images). From the evaluator's own precision
        array after compute() (pycocotools or faster-coco-eval); given ``per_image`` (or before compute()), from the
        all-ones weighted accumulate of :meth:`per_image` (the same precision up to summation order, ~1e-16)."""
        ids = self._evaluated_ids()[2]
        if per_image is None and self.eval is not None and "precision" in self.eval:
            params = self.eval["params"]
            area = list(params.areaRngLbl).index("all")
            m100 = list(params.maxDets).index(100)
            precision = np.asarray(self.eval["precision"])[:, :, :, area, m100]
            return per_category_ap(precision, list(params.catIds), self.gt, ids)
        pi = self.per_image() if per_image is None else per_image
        arrays = _weighted_stats(pi, np.ones((1, len(pi.img_ids))), keep_arrays=True)
        precision = arrays["precision"][0][:, :, :, pi.area_labels.index("all")]  # (T, R, K) at maxDets 100
        return per_category_ap(precision, pi.cat_ids, self.gt, pi.img_ids)

    def intervals(self, level: float = 0.95, resamples: int = 200,
                  seed: int = 0) -> dict[str, tuple[float, float] | None]:
        """Percentile-bootstrap ``level`` intervals (fractions) of the 12 stats (``STAT_NAMES``): the evaluated
        images are resampled with replacement (``resamples`` times, draws from ``seed``), images without ground
        truth or detections included (they change nothing, as in compute()). A stat that compute() reports as -1
        (no ground truth in its area range) maps to None; resamples where a defined stat has no weighted ground
        truth are left out. Runs pycocotools' ``evaluate()`` once (:meth:`per_image`: ~25-30 s at full COCO val
        size, 5,000 images x 100 detections, + ~2-4 s to reduce it), then the 200 weighted accumulates take
        ~6-8 s (2-core machine).

        AP-type figures of a subset are biased upward (the monotone precision envelope is a maximum over a noisier
        curve; on the benchmark's synthetic set the AP of random halves exceeds the full set's by ~+0.008), and
        the bootstrap reproduces that bias instead of removing it: at full size the AP / AP50 percentile interval
        may lie entirely above the point estimate. The AR figures (ratios of counts) show no such shift."""
        from .intervals import bootstrap_weights, percentile_intervals

        pi = self.per_image()
        return percentile_intervals(_weighted_stats(pi, bootstrap_weights(len(pi.img_ids), resamples, seed)), level)

    def write_artifacts(self, folder: Any) -> list:
        """The run's files besides metrics.json: none for COCO (the hook every evaluator has)."""
        return []


#: the metric parameters a COCO recipe takes (``Recipe.metric_options``: notebook parameters; a rescore may change them)
COCO_METRIC_OPTIONS = (("evaluator", "pycocotools", "COCO evaluator: pycocotools, faster-coco-eval (optional, 5x "
                        "faster) or auto"),)
