"""WIDER FACE val AP (easy / medium / hard) as the official MATLAB ``eval_tools`` compute it, vectorised.

Protocol (``wider_eval.m``, ``read_pred.m``, ``norm_score.m``, ``evaluation.m``, ``boxoverlap.m``, ``VOCap.m``):

1. Ground truth: ``wider_face_val.mat`` (``event_list``, ``file_list``, ``face_bbx_list``: x y w h per face) gives
   the images; ``wider_{easy,medium,hard}_val.mat`` give per image the 1-based indices of the faces that count in
   that setting (``gt_list``); the other faces are "ignored" (a detection on them is neither right nor wrong).
2. Predictions: ``<pred>/<event>/<image>.txt`` = image name, count, then ``count`` lines ``x y w h score``; each
   image's detections are **ranked by score** (descending, stable), whatever the file order.
3. Scores are normalised over the whole prediction set: ``(s - min) / (max - min)``.
4. Per setting and image (images with no ground-truth box or no detection only add their face count): each
   detection is matched to its best-IoU ground-truth box (IoU with the +1 pixel convention on x2 = x + w,
   y2 = y + h); at IoU >= 0.5 a match on an ignored face makes the detection a non-proposal, a match on a counted
   face recalls that face. At 1000 thresholds t = 1 - k/1000 (k = 1..1000) the detections with score >= t give
   proposals and recalled faces, summed over images; precision = recalled / proposals, recall = recalled / faces.
5. AP = area under the monotone precision envelope (VOC style, sentinels (0, 0) and (1, 0)).

Where the public Python ports (wondervictor/WiderFace-Evaluation and its copies, incl. the Ascend-family one)
differ, this module follows MATLAB:

- detections are ranked by score (the ports use file order: "last index with score >= t" then includes
  lower-scored detections written earlier);
- a missing prediction file means "no detections" for that image (its faces still count; the number of missing
  images is returned as ``n_missing`` and warned about); the wondervictor port crashes (KeyError), the Ascend copy
  skips the image and drops its faces from the recall denominator;
- the score min/max start from single-precision realmax/realmin (the ports start from 1 and 0, which differs only
  for scores outside [0, 1]) and only images of the ground truth take part (the ports read every file);
- exactly ``count`` box lines are read (the ports read every line after the second);
- NaN precision (no proposal above a threshold) is skipped by the envelope like MATLAB's ``max`` does (numpy's
  ``maximum`` would propagate it; it never changes the AP).

The IoU threshold is the official 0.5 (MATLAB and wondervictor's port). The Ascend-family copy of the port
(``PyTorch/contrib/cv/detection/Pyramidbox/evaluate``) defaults to 0.4; which one the PyramidBox guide's published
numbers used is not known: pass ``iou_thresh=0.4`` to reproduce that copy (its skipping of images without a file is
not reproduced: here they always count).

Deliberate differences from MATLAB, for clear errors instead of silent zeros: a malformed line (fewer than five
numbers, or not numbers) or fewer box lines than announced raises ``MetricInputError`` naming the file and line
(MATLAB prints "Invalid format" and treats the image as having no detections). Prediction files for images that are
not in the ground truth are ignored like MATLAB does, but counted (``n_unknown``) and warned about.

Because the result only depends, per image, on which detections score >= t, everything is computed with array
operations: per image one IoU matrix, then global counts with ``searchsorted``; no loop over thresholds.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from ..errors import DatasetError, MetricInputError
from ..parameters import NumberRange
from ..paths import inside, plain_name

SETTINGS = ("easy", "medium", "hard")
GT_FILES = {"all": "wider_face_val.mat", "easy": "wider_easy_val.mat", "medium": "wider_medium_val.mat",
            "hard": "wider_hard_val.mat"}
IOU_THRESH = 0.5
THRESH_NUM = 1000
#: the guide's / official line format for x, y, w, h, score
LINE_FORMAT = "{:.1f} {:.1f} {:.1f} {:.1f} {:.3f}"
GT_LAYOUT = ("<gt_dir>/wider_face_val.mat, wider_easy_val.mat, wider_medium_val.mat, wider_hard_val.mat "
             "(the official eval_tools/ground_truth folder)")
_REALMIN_SINGLE = float(np.finfo(np.float32).tiny)
_REALMAX_SINGLE = float(np.finfo(np.float32).max)

ImageKey = tuple[str, str]  # (event, image name without .jpg)


# ----------------------------------------------------------------------------------------------- ground truth
@dataclass
class GroundTruth:
    """The val ground truth in .mat order. ``boxes[s][i]``: (G, 4) float64 x y w h of image i as setting ``s``'s
    file holds them (the same boxes for every setting in the official files); ``keep[s][i]``: 0-based int64 indices
    of the faces that count in setting ``s`` (duplicates kept, as MATLAB counts them)."""

    images: list[ImageKey]
    boxes: dict[str, list[np.ndarray]]
    keep: dict[str, list[np.ndarray]]
    source: str = ""
    index: dict[ImageKey, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {k: i for i, k in enumerate(self.images)}

    @property
    def events(self) -> list[str]:
        return list(dict.fromkeys(e for e, _ in self.images))

    def subset(self, keys: Iterable[ImageKey]) -> "GroundTruth":
        """Only these images (in .mat order): for partial runs; not the official protocol."""
        wanted = set(keys)
        sel = [i for i, k in enumerate(self.images) if k in wanted]
        return GroundTruth([self.images[i] for i in sel], {s: [b[i] for i in sel] for s, b in self.boxes.items()},
                           {s: [k[i] for i in sel] for s, k in self.keep.items()}, self.source + " (subset)")


def _cell_str(x: Any) -> str:
    a = np.asarray(x).ravel()
    while a.dtype == object and a.size:
        a = np.asarray(a[0]).ravel()
    if a.size == 0:
        return ""
    return str(a[0])


def _cells(x: Any) -> list:
    """A MATLAB cell array as loadmat returns it (an (n, 1) object array) -> list of its elements."""
    return list(np.asarray(x, dtype=object).ravel())


def _read_mat(path: Path) -> dict:
    from scipy.io import loadmat

    if not path.is_file():
        raise DatasetError(f"WIDER FACE ground-truth file not found: {path}\nExpected layout: {GT_LAYOUT}")
    try:
        return loadmat(str(path))
    except Exception as e:  # noqa: BLE001 - scipy raises several types for unreadable files
        raise DatasetError(f"{path}: not a readable .mat file ({type(e).__name__}: {e})") from None


def _mat_images(mat: dict, path: Path) -> tuple[list[ImageKey], list[np.ndarray] | None]:
    for k in ("event_list", "file_list"):
        if k not in mat:
            raise DatasetError(f"{path}: no '{k}' variable; expected the official WIDER FACE ground truth")
    # event and image names become paths (<images>/<event>/<image>.jpg, <submission>/<event>/<image>.txt)
    events = [plain_name(_cell_str(e), "event name", path) for e in _cells(mat["event_list"])]
    files = _cells(mat["file_list"])
    if len(files) != len(events):
        raise DatasetError(f"{path}: {len(events)} events but {len(files)} file lists")
    images = [(ev, plain_name(_cell_str(n), "image name", path)) for ev, fl in zip(events, files) for n in _cells(fl)]
    boxes = None
    if "face_bbx_list" in mat:
        bl = _cells(mat["face_bbx_list"])
        boxes = []
        for ev, fl, bb in zip(events, files, bl):
            cells = _cells(bb)
            if len(cells) != len(_cells(fl)):
                raise DatasetError(f"{path}: event {ev}: {len(_cells(fl))} images but {len(cells)} box lists")
            for c in cells:
                a = np.asarray(c, dtype=np.float64)
                boxes.append(a.reshape(-1, 4) if a.size else np.zeros((0, 4)))
    return images, boxes


def load_ground_truth(gt_dir: str | Path | GroundTruth) -> GroundTruth:
    """Read the four official .mat files of ``gt_dir`` (a ``GroundTruth`` is returned as is).

    Image names and order come from ``wider_face_val.mat`` (as ``read_pred.m``); each setting's boxes come from its
    own file when it has ``face_bbx_list`` (as ``evaluation.m``, which ``load``s the setting file), else from
    ``wider_face_val.mat``.
    """
    if isinstance(gt_dir, GroundTruth):
        return gt_dir
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise DatasetError(f"WIDER FACE ground-truth folder not found: {gt_dir}\nExpected layout: {GT_LAYOUT}")
    main_path = gt_dir / GT_FILES["all"]
    images, main_boxes = _mat_images(_read_mat(main_path), main_path)
    if main_boxes is None:
        raise DatasetError(f"{main_path}: no 'face_bbx_list' variable; expected the official WIDER FACE ground truth")
    boxes: dict[str, list[np.ndarray]] = {}
    keep: dict[str, list[np.ndarray]] = {}
    for s in SETTINGS:
        path = gt_dir / GT_FILES[s]
        mat = _read_mat(path)
        if "gt_list" not in mat:
            raise DatasetError(f"{path}: no 'gt_list' variable; expected the official WIDER FACE ground truth")
        boxes[s] = main_boxes
        if "file_list" in mat and "face_bbx_list" in mat:
            s_images, s_boxes = _mat_images(mat, path)
            if s_images != images:
                raise DatasetError(f"{path}: its image list differs from {main_path.name}'s")
            boxes[s] = s_boxes
        lists = [_cells(g) for g in _cells(mat["gt_list"])]
        flat = [c for cells in lists for c in cells]
        if len(flat) != len(images):
            raise DatasetError(f"{path}: gt_list covers {len(flat)} images, {main_path.name} lists {len(images)}")
        ks = []
        for (ev, name), b, c in zip(images, boxes[s], flat):
            k = np.asarray(c).ravel()
            if k.size and (not np.all(k == np.round(k)) or k.min() < 1 or k.max() > len(b)):
                raise DatasetError(f"{path}: {ev}/{name}: gt_list indices must be 1..{len(b)}, got {k.tolist()[:10]}")
            ks.append(k.astype(np.int64) - 1)
        keep[s] = ks
    return GroundTruth(images, boxes, keep, str(gt_dir))


def _cell_column(items: list) -> np.ndarray:
    out = np.empty((len(items), 1), dtype=object)
    for i, x in enumerate(items):
        out[i, 0] = x
    return out


def write_ground_truth(gt_dir: str | Path, entries: Mapping[str, Mapping[str, Any]]) -> dict[str, Path]:
    """Write ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat`` in the official structure.

    ``entries``: ``{event: {image_name: spec}}`` with image names without ``.jpg``; ``spec`` is either an (m, 4)
    array of face boxes x y w h (pixels; every face counts in every setting) or a dict
    ``{"boxes": (m, 4), "easy": idx, "medium": idx, "hard": idx}`` with **0-based** indices of the faces that count
    in each setting (a setting left out = all faces; stored 1-based as in the official files). Events are written in
    lexicographic order (the guide relies on it), images in the given order. Every file holds ``event_list``,
    ``file_list`` and ``face_bbx_list``; the setting files also ``gt_list``. Returns the paths by setting name.
    """
    from scipy.io import savemat

    gt_dir = Path(gt_dir)
    gt_dir.mkdir(parents=True, exist_ok=True)
    events = sorted(entries)
    file_cells, box_cells, keep_cells = [], [], {s: [] for s in SETTINGS}
    for ev in events:
        names, boxes, keeps = [], [], {s: [] for s in SETTINGS}
        for name, spec in entries[ev].items():
            name = name[:-4] if name.endswith(".jpg") else name
            spec = spec if isinstance(spec, Mapping) else {"boxes": spec}
            b = np.asarray(spec["boxes"], dtype=np.float64).reshape(-1, 4)
            names.append(name)
            boxes.append(b)
            for s in SETTINGS:
                idx = np.arange(len(b)) if spec.get(s) is None else np.asarray(spec[s], dtype=np.int64).ravel()
                if idx.size and (idx.min() < 0 or idx.max() >= len(b)):
                    raise MetricInputError(f"write_ground_truth: {ev}/{name}: {s} indices must be 0..{len(b) - 1}")
                keeps[s].append((idx + 1).astype(np.int32).reshape(-1, 1))
        file_cells.append(_cell_column(names))
        box_cells.append(_cell_column(boxes))
        for s in SETTINGS:
            keep_cells[s].append(_cell_column(keeps[s]))
    common = {"event_list": _cell_column(events), "file_list": _cell_column(file_cells),
              "face_bbx_list": _cell_column(box_cells)}
    paths = {"all": gt_dir / GT_FILES["all"]}
    savemat(str(paths["all"]), common)
    for s in SETTINGS:
        paths[s] = gt_dir / GT_FILES[s]
        savemat(str(paths[s]), {**common, "gt_list": _cell_column(keep_cells[s])})
    return paths


# ---------------------------------------------------------------------------------------------- predictions
def write_submission(folder: str | Path, event: str, image_name: str, dets: np.ndarray) -> Path:
    """Write one image's detections in the official layout: ``<folder>/<event>/<image>.txt`` with lines
    ``<event>/<image>.jpg``, the count, then ``x y w h score`` per row formatted ``{:.1f} x4 {:.3f}`` (the guide's
    format). ``dets``: (K, 5) x y w h score in original pixels, written in the given order. ``event`` and
    ``image_name`` must be plain names (DatasetError otherwise): the file is never written outside ``folder``."""
    plain_name(event, "event name", folder)
    stem = plain_name(image_name[:-4] if image_name.endswith(".jpg") else image_name, "image name", folder)
    dets = np.asarray(dets, dtype=np.float64).reshape(-1, 5)
    path = inside(folder, Path(event) / f"{stem}.txt", "the submission file")
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{event}/{stem}.jpg", f"{len(dets):d}"] + [LINE_FORMAT.format(*row) for row in dets.tolist()]
    path.write_text("\n".join(lines) + "\n")
    return path


def read_prediction_file(path: str | Path) -> np.ndarray:
    """(K, 5) float64 x y w h score of one submission file, in file order (exactly ``count`` rows are read)."""
    path = Path(path)
    lines = path.read_text().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) < 2:
        raise MetricInputError(f"{path}: expected a name line and a count line, got {len(lines)} line(s)")
    try:
        count = float(lines[1])
        if count != int(count) or count < 0:
            raise ValueError
        count = int(count)
    except ValueError:
        raise MetricInputError(f"{path}:2: expected the number of boxes, got {lines[1]!r}") from None
    rows = lines[2:2 + count]
    if len(rows) < count:
        raise MetricInputError(f"{path}: announces {count} boxes but has {len(rows)} box line(s)")
    if len(lines) > 2 + count and any(line.strip() for line in lines[2 + count:]):
        warnings.warn(f"{path}: {len(lines) - 2 - count} line(s) after the announced {count} boxes are ignored "
                      "(as the official tool does)", stacklevel=2)
    if count == 0:
        return np.zeros((0, 5))
    tokens = [r.replace(",", " ").split() for r in rows]
    if all(len(t) == 5 for t in tokens):
        try:
            return np.array(tokens, dtype=np.float64)
        except ValueError:
            pass
    out = np.zeros((count, 5))
    for i, t in enumerate(tokens):
        try:
            if len(t) < 5:
                raise ValueError
            out[i] = [float(v) for v in t[:5]]
        except ValueError:
            raise MetricInputError(f"{path}:{i + 3}: expected 'x y w h score', got {rows[i]!r}") from None
    return out


def _round_as_written(v: np.ndarray, digits: int) -> np.ndarray:
    """``float(f"{x:.{digits}f}")`` for every element, fast: ``np.round`` agrees except within rounding error of a
    half-way point, where the exact formatting is used."""
    r = np.round(v, digits)
    scaled = v * 10.0 ** digits
    near = np.abs(np.abs(scaled - np.floor(scaled)) - 0.5) < 1e-6 * np.maximum(1.0, np.abs(scaled))
    for i in np.flatnonzero(near):
        r.flat[i] = float(f"{v.flat[i]:.{digits}f}")
    return r


def as_written(dets: np.ndarray) -> np.ndarray:
    """The values a submission file written by ``write_submission`` reads back as (x y w h to 0.1, score to 0.001)."""
    d = np.asarray(dets, dtype=np.float64).reshape(-1, 5)
    if not len(d):
        return d.copy()
    return np.concatenate([_round_as_written(d[:, :4], 1), _round_as_written(d[:, 4:], 3)], axis=1)


def _key(k: Any) -> ImageKey:
    if isinstance(k, str):
        ev, _, name = k.replace("\\", "/").rstrip("/").rpartition("/")
        k = (ev.rsplit("/", 1)[-1], name)
    ev, name = k
    name = str(name)
    return str(ev), name[:-4] if name.endswith(".jpg") else name


@dataclass
class _Predictions:
    per_image: list[np.ndarray | None]  # aligned with GroundTruth.images; None = missing
    missing: list[ImageKey]
    unknown: list[ImageKey]


def _collect(pred: Any, gt: GroundTruth, quantize: bool) -> _Predictions:
    per_image: list[np.ndarray | None] = [None] * len(gt.images)
    unknown: list[ImageKey] = []
    if isinstance(pred, (str, Path)):
        folder = Path(pred)
        if not folder.is_dir():
            raise MetricInputError(f"WIDER FACE prediction folder not found: {folder}\n"
                                   "Expected <folder>/<event>/<image>.txt files (official submission layout)")
        for i, (ev, name) in enumerate(gt.images):
            path = folder / ev / f"{name}.txt"
            if path.is_file():
                per_image[i] = read_prediction_file(path)
        for ev_dir in os.scandir(folder):
            if ev_dir.is_dir():
                for f in os.scandir(ev_dir.path):
                    if f.name.endswith(".txt") and (ev_dir.name, f.name[:-4]) not in gt.index:
                        unknown.append((ev_dir.name, f.name[:-4]))
    elif isinstance(pred, Mapping):
        for k, v in pred.items():
            key = _key(k)
            i = gt.index.get(key)
            if i is None:
                unknown.append(key)
                continue
            a = np.asarray(v, dtype=np.float64)
            if a.size and (a.ndim != 2 or a.shape[1] < 5):
                raise MetricInputError(f"WIDER FACE predictions for {key[0]}/{key[1]}: expected a (K, 5) array "
                                       f"x y w h score, got shape {a.shape}")
            a = a.reshape(-1, a.shape[1] if a.ndim == 2 else 5)[:, :5]
            per_image[i] = as_written(a) if quantize else a
    else:
        raise MetricInputError("WIDER FACE predictions must be a submission folder or a dict "
                               f"{{(event, image): (K, 5) array}}, got {type(pred).__name__}")
    missing = [gt.images[i] for i, p in enumerate(per_image) if p is None]
    return _Predictions(per_image, missing, sorted(unknown))


# ---------------------------------------------------------------------------------------------- evaluation
def _iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(K, G) IoU of x y w h boxes exactly as ``boxoverlap.m`` (x2 = x + w, +1 on widths, 0 where disjoint)."""
    px1, py1 = pred[:, 0:1], pred[:, 1:2]
    px2, py2 = px1 + pred[:, 2:3], py1 + pred[:, 3:4]
    gx1, gy1 = gt[:, 0], gt[:, 1]
    gx2, gy2 = gx1 + gt[:, 2], gy1 + gt[:, 3]
    w = np.minimum(gx2, px2) - np.maximum(gx1, px1) + 1
    h = np.minimum(gy2, py2) - np.maximum(gy1, py1) + 1
    inter = w * h
    garea = (gx2 - gx1 + 1) * (gy2 - gy1 + 1)
    parea = (px2 - px1 + 1) * (py2 - py1 + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        o = inter / (garea + parea - inter)
    o[(w <= 0) | (h <= 0)] = 0
    return o


def _normalised_scores(per_image: list[np.ndarray | None]) -> list[np.ndarray | None]:
    """``norm_score.m``: (s - min) / (max - min) over all detections of all ground-truth images."""
    hi, lo = _REALMAX_SINGLE, _REALMIN_SINGLE
    mx, mn = lo, hi
    for p in per_image:
        if p is not None and len(p):
            s = p[:, 4]
            if not np.all(np.isnan(s)):
                mx, mn = max(mx, float(np.nanmax(s))), min(mn, float(np.nanmin(s)))
    if not mx > mn:
        warnings.warn(f"WIDER FACE: all detection scores are equal ({mx}); normalised scores are undefined and "
                      "every AP is 0 (as in the official tool)", stacklevel=3)
    with np.errstate(divide="ignore", invalid="ignore"):
        return [None if p is None else (p[:, 4] - mn) / (mx - mn) for p in per_image]


def _count_ge(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    v = np.sort(values[~np.isnan(values)])
    return len(v) - np.searchsorted(v, thresholds, side="left")


def thresholds(thresh_num: int = THRESH_NUM) -> np.ndarray:
    """The official score thresholds 1 - k/thresh_num, k = 1..thresh_num (0.999 ... 0.0)."""
    return 1 - np.arange(1, thresh_num + 1) / thresh_num


@dataclass
class PRCurve:
    """One setting's curve at the 1000 thresholds (descending): precision, recall, raw counts."""

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    proposals: np.ndarray
    recalled: np.ndarray
    faces: int

    @property
    def ap(self) -> float:
        return voc_ap(self.recall, self.precision)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """``VOCap.m``: area under the monotone precision envelope with sentinels (0, 0) and (1, 0); NaN precision
    is skipped by the envelope like MATLAB's ``max``."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.fmax.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def _matches(per_image: list[np.ndarray | None], boxes: list[np.ndarray], scores: list[np.ndarray | None]):
    """Best ground-truth box and IoU of every detection (setting-independent for the same boxes): flat arrays
    ``(image, best, iou, score)`` over the images with detections and faces, and the number of boxes."""
    img, best, iou, sc = [], [], [], []
    offsets = np.cumsum([0] + [len(b) for b in boxes])
    for i, (p, b) in enumerate(zip(per_image, boxes)):
        if p is None or not len(p) or not len(b):
            continue
        o = _iou(p, b)
        j = o.argmax(axis=1)
        img.append(np.full(len(j), i, dtype=np.int64))
        best.append(j + offsets[i])
        iou.append(o[np.arange(len(j)), j])
        sc.append(scores[i])
    cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt))  # noqa: E731
    return cat(img, np.int64), cat(best, np.int64), cat(iou, np.float64), cat(sc, np.float64), int(offsets[-1])


@dataclass
class _SettingParts:
    """What one setting's curve counts, per unit of the ground truth: proposal detections (normalised score,
    image), per face the best score of a detection recalling it (-inf: none) and its image, faces per image."""

    prop_score: np.ndarray
    prop_image: np.ndarray
    face_first: np.ndarray
    face_image: np.ndarray
    faces_per_image: np.ndarray


def _setting_parts(preds: _Predictions, gt: GroundTruth, iou_thresh: float) -> dict[str, _SettingParts]:
    scores = _normalised_scores(preds.per_image)
    matches: dict[int, tuple] = {}
    out = {}
    for s in SETTINGS:
        boxes = gt.boxes[s]
        if id(boxes) not in matches:  # best ground-truth box and IoU of every detection: setting-independent
            matches[id(boxes)] = _matches(preds.per_image, boxes, scores)
        img, best, iou, sc, n_gt = matches[id(boxes)]
        counted = np.zeros(n_gt, dtype=bool)
        sizes = np.array([len(b) for b in boxes], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        for i, k in enumerate(gt.keep[s]):
            counted[offsets[i] + k] = True
        hit = iou >= iou_thresh
        on_counted = counted[best]
        proposal = ~hit | on_counted
        recalled = hit & on_counted
        # a counted face is recalled at threshold t iff a detection with score >= t hits it: keep its best score
        first = np.full(n_gt, -np.inf)
        np.fmax.at(first, best[recalled], sc[recalled])
        out[s] = _SettingParts(sc[proposal], img[proposal], first, np.repeat(np.arange(len(boxes)), sizes),
                               np.array([len(k) for k in gt.keep[s]], dtype=np.int64))
    return out


def _curves(preds: _Predictions, gt: GroundTruth, iou_thresh: float, thresh_num: int) -> dict[str, PRCurve]:
    thr = thresholds(thresh_num)
    out = {}
    for s, part in _setting_parts(preds, gt, iou_thresh).items():
        faces = int(part.faces_per_image.sum())
        n_prop = _count_ge(part.prop_score, thr).astype(np.float64)
        n_rec = _count_ge(part.face_first, thr).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = n_rec / n_prop
            recall = n_rec / faces if faces else np.full(thresh_num, np.nan)
        out[s] = PRCurve(thr, precision, recall, n_prop, n_rec, faces)
    return out


def _weighted_count_ge(values: np.ndarray, units: np.ndarray, weights_t: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """(R, T) weighted ``_count_ge``: sum of the weights of the units of the ``values`` >= each of the descending
    thresholds ``thr``; ``weights_t``: (n_units, R) float64. NaN values count nowhere, as in ``_count_ge``."""
    from scipy import sparse

    keep = ~np.isnan(values)
    t = len(thr)
    # the first threshold index at which a value counts = the number of thresholds above it (they come first)
    first = t - np.searchsorted(thr[::-1], values[keep], side="right")
    c = sparse.csr_matrix((np.ones(int(keep.sum())), (first, units[keep])), shape=(t + 1, weights_t.shape[0]))
    return np.cumsum(np.asarray(c @ weights_t).T[:, :t], axis=1)


def _weighted_aps(parts: dict[str, _SettingParts], weights: np.ndarray, thresh_num: int) -> dict[str, np.ndarray]:
    """(R,) AP per setting with the images weighted by the (R, n_images) ``weights`` (NaN where a row weights no
    face); all-ones weights give the curves' counts exactly, hence the same AP."""
    thr = thresholds(thresh_num)
    wt = np.ascontiguousarray(np.asarray(weights, dtype=np.float64).T)
    out = {}
    for s, part in parts.items():
        n_prop = _weighted_count_ge(part.prop_score, part.prop_image, wt, thr)
        n_rec = _weighted_count_ge(part.face_first, part.face_image, wt, thr)
        faces = wt.T @ part.faces_per_image.astype(np.float64)
        aps = np.full(len(faces), np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = n_rec / n_prop
            recall = n_rec / faces[:, None]
        for r in np.flatnonzero(faces > 0):
            aps[r] = voc_ap(recall[r], precision[r])
        out[s] = aps
    return out


def pr_curves(pred: Any, gt_dir: str | Path | GroundTruth, *, iou_thresh: float = IOU_THRESH,
              quantize: bool = True) -> dict[str, PRCurve]:
    """Precision/recall curves per setting (for plots); arguments as ``evaluate``."""
    gt = load_ground_truth(gt_dir)
    return _curves(_collect(pred, gt, quantize), gt, iou_thresh, THRESH_NUM)


def evaluate(pred: Any, gt_dir: str | Path | GroundTruth, *, iou_thresh: float = IOU_THRESH,
             quantize: bool = True) -> dict[str, float]:
    """WIDER FACE val AP per setting, as the official MATLAB tool computes it (see the module docstring).

    ``pred``: a submission folder (``<event>/<image>.txt``) or ``{(event, image): (K, 5) x y w h score}`` (keys may
    also be ``"event/image"``; ``.jpg`` optional). ``gt_dir``: folder with the four official .mat files (or a loaded
    ``GroundTruth``). ``quantize``: round in-memory detections as the submission file would store them
    (``{:.1f}`` boxes, ``{:.3f}`` scores), so a dict and the folder written from it give identical numbers.

    Returns ``{"easy", "medium", "hard"}`` (fractions) plus ``n_images`` (ground-truth images), ``n_missing``
    (images without a prediction file/entry: evaluated as "no detections") and ``n_unknown`` (predictions for
    images not in the ground truth: ignored).
    """
    return _evaluate(pred, gt_dir, iou_thresh, quantize, stacklevel=3)[0]


def _evaluate(pred: Any, gt_dir: str | Path | GroundTruth, iou_thresh: float, quantize: bool,
              stacklevel: int) -> tuple[dict[str, float], dict[str, PRCurve]]:
    """``evaluate``'s figures and the per-setting curves they come from (warnings point ``stacklevel`` up)."""
    gt = load_ground_truth(gt_dir)
    preds = _collect(pred, gt, quantize)
    if preds.missing:
        eg = ", ".join(f"{e}/{n}" for e, n in preds.missing[:3])
        warnings.warn(f"WIDER FACE: {len(preds.missing)} of {len(gt.images)} images have no predictions (e.g. {eg}); "
                      "they count as images with no detections", stacklevel=stacklevel)
    if preds.unknown:
        eg = ", ".join(f"{e}/{n}" for e, n in preds.unknown[:3])
        warnings.warn(f"WIDER FACE: {len(preds.unknown)} prediction(s) for images not in the ground truth are ignored "
                      f"(e.g. {eg})", stacklevel=stacklevel)
    curves = _curves(preds, gt, iou_thresh, THRESH_NUM)
    out: dict[str, float] = {}
    for s in SETTINGS:
        if curves[s].faces == 0:
            warnings.warn(f"WIDER FACE: the {s} setting has no faces; its AP is undefined (NaN)", stacklevel=stacklevel)
            out[s] = float("nan")
        else:
            out[s] = curves[s].ap
    out.update(n_images=len(gt.images), n_missing=len(preds.missing), n_unknown=len(preds.unknown))
    return out, curves


def _default_key(sample: Any) -> ImageKey:
    """(event, image) of a dataset sample: ``info['event']`` + the file stem, else a ``"<event>/<image>"`` key or
    the image's parent folder name."""
    info = getattr(sample, "info", None) or {}
    path = Path(str(getattr(sample, "path", "") or ""))
    if "event" in info:
        return str(info["event"]), path.stem if path.name else _key(sample.key)[1]
    key = str(getattr(sample, "key", ""))
    if "/" in key:
        return _key(key)
    return path.parent.name, path.stem


class WiderFaceAccumulator:
    """Collects (K, 5) x y w h score detections per image from the pipeline and evaluates them at the end.

    ``predicted_only=True`` restricts the ground truth to the images that were predicted (partial runs, e.g.
    ``limit``); this is not the official protocol, which counts every val face. ``key_of(sample)`` gives
    (event, image name); the default reads ``sample.info['event']`` and the file stem (or an ``event/name`` key).
    """

    def __init__(self, gt_dir: str | Path | GroundTruth, *, predicted_only: bool = False, quantize: bool = True,
                 iou_thresh: float = IOU_THRESH, key_of: Callable[[Any], ImageKey] | None = None) -> None:
        self.gt = load_ground_truth(gt_dir)
        self.predicted_only = predicted_only
        self.quantize = quantize
        self.iou_thresh = iou_thresh
        self.key_of = key_of or _default_key
        self.predictions: dict[ImageKey, np.ndarray] = {}
        #: images in the whole ground truth when built for a dataset that covers only some of them
        self.n_ground_truth_images: int | None = None
        #: setting -> the precision/recall curve (1000 thresholds) behind its AP, kept by :meth:`compute` for the
        #: plots (``viz.widerface.plot_pr_curves``); None before compute()
        self.curves: dict[str, PRCurve] | None = None

    def update(self, sample: Any, dets: np.ndarray) -> None:
        d = np.asarray(dets, dtype=np.float64).reshape(-1, 5)
        self.predictions[self.key_of(sample)] = as_written(d) if self.quantize else d

    @classmethod
    def for_dataset(cls, dataset: Any, **kwargs: Any) -> "WiderFaceAccumulator":
        """The evaluator over a dataset's images (``dataset.extra['ground_truth']``, sample targets ``(event,
        image)``): the full ground truth normally; with ``limit`` (or a shard) only the images of the dataset given
        (their faces all count, skipped images included), which is not the official protocol: ``compute()`` then
        says so with ``n_ground_truth_images`` > ``n_images``."""
        gt = dataset.extra["ground_truth"]
        keys = [tuple(s.target) for s in dataset]
        acc = cls(gt.subset(keys) if len(set(keys)) < len(gt.images) else gt, **kwargs)
        acc.n_ground_truth_images = len(gt.images)
        return acc

    def compute(self) -> dict[str, float]:
        """AP per setting (fractions), image counts; ``n_ground_truth_images`` when built :meth:`for_dataset`.
        Keeps the curves behind the APs in :attr:`curves`."""
        gt = self.gt.subset(self.predictions) if self.predicted_only else self.gt
        out, self.curves = _evaluate(self.predictions, gt, self.iou_thresh, False, stacklevel=3)
        if self.n_ground_truth_images is not None:
            out["n_ground_truth_images"] = self.n_ground_truth_images
        return out

    def _evaluated(self) -> tuple[_Predictions, GroundTruth]:
        gt = self.gt.subset(self.predictions) if self.predicted_only else self.gt
        return _collect(self.predictions, gt, False), gt

    def weighted_figures(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """easy / medium / hard AP (fractions) with the images weighted: ``weights`` (R, n_images) over the
        evaluated ground-truth images in .mat order (``gt``, or its predicted subset with ``predicted_only``), one
        row per resample; (R,) arrays, NaN where a row weights no face of a setting. Every detection's best face
        and IoU are computed once; a weight multiplies the image's proposals, recalled faces and faces. The score
        normalisation (min / max) stays that of the full prediction set. All-ones weights give compute()'s APs."""
        preds, gt = self._evaluated()
        weights = np.asarray(weights)
        if weights.ndim != 2 or weights.shape[1] != len(gt.images):
            raise MetricInputError(f"WIDER FACE weights must be (R, {len(gt.images)}), got {weights.shape}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # compute() has said it already (equal scores)
            parts = _setting_parts(preds, gt, self.iou_thresh)
        return _weighted_aps(parts, weights, THRESH_NUM)

    def per_class(self) -> dict:
        """easy / medium / hard AP per event (fractions; None where the event has no face of that setting), in
        event order, ``n`` its evaluated images: each event's images alone through :meth:`weighted_figures` (a 0/1
        weight per image), so the score normalisation and the matching are those of the whole evaluation
        (:mod:`~zooinfer.metrics.per_class` document)."""
        from .per_class import breakdown, group_weights

        _, gt = self._evaluated()
        events, weights = group_weights([ev for ev, _ in gt.images])
        aps = self.weighted_figures(weights) if events else {s: np.zeros(0) for s in SETTINGS}
        rows = [{"name": ev, **{s: (None if np.isnan(aps[s][i]) else float(aps[s][i])) for s in SETTINGS},
                 "n": int(weights[i].sum())} for i, ev in enumerate(events)]
        return breakdown("event", SETTINGS, rows)

    def intervals(self, level: float = 0.95, resamples: int = 200,
                  seed: int = 0) -> dict[str, tuple[float, float] | None]:
        """Percentile-bootstrap ``level`` intervals (fractions) of the easy / medium / hard APs: the evaluated
        images are resampled with replacement (``resamples`` times, draws from ``seed``), see
        :meth:`weighted_figures` (the score normalisation is kept from the full set). A setting without faces
        (AP NaN) maps to None. Cost: one matching pass (as compute()) plus sparse counts: ~1.3 s in all for 200
        resamples at full WIDER FACE val size (3,226 images, 400,000 detections)."""
        from .intervals import bootstrap_weights, percentile_intervals

        _, gt = self._evaluated()
        return percentile_intervals(self.weighted_figures(bootstrap_weights(len(gt.images), resamples, seed)), level)

    def write_submission(self, folder: str | Path) -> Path:
        """Every ground-truth image's prediction file under ``folder/<event>/<image>.txt`` (an image without
        predictions gets a file with count 0; every event gets its folder), in the guide's format."""
        folder = Path(folder)
        for event, name in self.gt.images:  # every name checked before the first file is written
            plain_name(event, "event name", self.gt.source or "the ground truth")
            plain_name(name, "image name", self.gt.source or "the ground truth")
        for event, name in self.gt.images:
            write_submission(folder, event, name, self.predictions.get((event, name), np.zeros((0, 5))))
        return folder

    def write_artifacts(self, folder: str | Path) -> list[Path]:
        """The run's files besides metrics.json: the official submission folder ``folder/submission/<event>/
        <image>.txt`` (:meth:`write_submission`, the guide's format; what the MATLAB tool and other evaluators
        read). Returns the paths written at the top of ``folder``."""
        return [self.write_submission(Path(folder) / "submission")]


#: the metric parameters a WIDER FACE recipe takes (``Recipe.metric_options``: notebook parameters; a rescore may
#: change them without running the model again)
WIDER_METRIC_OPTIONS = (("iou_thresh", IOU_THRESH, "IoU a detection needs to match a face (official: 0.5)"),)
#: the values they may take (``Recipe.metric_ranges``): an IoU threshold is in (0, 1]
WIDER_METRIC_RANGES = (("iou_thresh", NumberRange(0, 1)),)
