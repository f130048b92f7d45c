"""Box code shared by the detectors: IoU, greedy hard NMS (plain and class-aware) and soft-NMS. No model facts:
each model's priors, decoding and selection live in its own folder (``models/<name>/head.py``).

Conventions: boxes are ``(N, 4)`` arrays ``x1 y1 x2 y2`` (xyxy) unless a name says ``cxcywh``; normalised [0, 1]
image coordinates for SSD-style heads; labels are 0-based foreground class indices.

NMS is written here in numpy because torchvision (``torchvision.ops.nms`` / ``batched_nms``) cannot be installed
beside the pinned CPU torch build. :func:`nms` reproduces the torchvision CPU kernel's arithmetic exactly (float32
IoU ``inter / (area_i + area_j - inter)``, areas without +1, IoU compared with a *double* threshold, descending score
order). Two exact paths, both vectorised: groups of up to ``_STACK_MAX`` boxes (SSD: one per class, <= 200) are
stacked into pairwise IoU matrices and resolved with one Python step per *rank position* across all groups at once;
larger groups (a single-class detector, or classes merged by the coordinate trick) compute IoUs only for pairs whose
x extents overlap (sort and sweep) and resolve the sparse suppression graph in vectorised rounds.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np

# ------------------------------------------------------------------------------------------------------- IoU / NMS
#: union formulas met in the upstream codes (they round differently in float32)
UNIONS = ("a+b-i", "b-i+a")
#: groups up to this many boxes go through the stacked pairwise-matrix path; bigger ones through the sparse path
_STACK_MAX = 512
#: max elements of one stacked (groups, n, n) IoU block / one chunk of candidate pairs (bounds the temporaries)
_STACK_BUDGET = 1 << 18


def box_area(boxes: np.ndarray, plus_one: bool = False) -> np.ndarray:
    """Areas ``(x2 - x1) * (y2 - y1)`` (``+1`` on each side for the legacy pixel convention), in the boxes' dtype."""
    b = np.asarray(boxes)
    w, h = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    if plus_one:
        one = b.dtype.type(1)
        w, h = w + one, h + one
    return w * h


def _overlap(a: np.ndarray, b: np.ndarray, plus_one: bool, union: str) -> np.ndarray:
    """IoU of broadcast box arrays ``a[..., 4]`` and ``b[..., 4]`` with the C kernels' operation order
    (w = max(0, min(x2) - max(x1)) [+1], inter = w * h, union as ``union``, IoU = inter / union)."""
    if union not in UNIONS:
        raise ValueError(f"union must be one of {UNIONS}, got {union!r}")
    zero = a.dtype.type(0)
    one = a.dtype.type(1)
    w = np.minimum(a[..., 2], b[..., 2])
    t = np.maximum(a[..., 0], b[..., 0])
    w -= t
    if plus_one:
        w += one
    np.maximum(w, zero, out=w)
    h = np.minimum(a[..., 3], b[..., 3])
    np.maximum(a[..., 1], b[..., 1], out=t)
    h -= t
    if plus_one:
        h += one
    np.maximum(h, zero, out=h)
    inter = w
    inter *= h
    area_a, area_b = box_area(a, plus_one), box_area(b, plus_one)
    den = h
    if union == "a+b-i":  # torchvision: iarea + areas[j] - inter
        np.add(area_a, area_b, out=den)
        den -= inter
    else:  # ssd.pytorch / PyramidBox: (rem_areas - inter) + area[i]
        np.subtract(area_b, inter, out=den)
        den += area_a
    with np.errstate(divide="ignore", invalid="ignore"):
        inter /= den
    return inter


def iou(a: np.ndarray, b: np.ndarray, *, plus_one: bool = False, union: str = "a+b-i") -> np.ndarray:
    """Pairwise IoU matrix ``(N, M)`` of xyxy boxes ``a (N, 4)`` and ``b (M, 4)`` in their (common) float dtype."""
    a, b = np.asarray(a), np.asarray(b)
    dt = np.result_type(a.dtype, b.dtype, np.float32)
    return _overlap(a.astype(dt, copy=False)[:, None, :], b.astype(dt, copy=False)[None, :, :], plus_one, union)


def _suppresses(ovr: np.ndarray, thr: float | np.floating, suppress_equal: bool) -> np.ndarray:
    # A Python float threshold is compared as a C double (torchvision's ``double iou_threshold``); pass a
    # np.float32 to compare in float32 (torch's ``IoU.le(0.3)`` on a float tensor).
    t = np.float64(thr) if isinstance(thr, (float, int)) else thr
    return ovr >= t if suppress_equal else ovr > t


def _descending(scores: np.ndarray, ties: str) -> np.ndarray:
    """Indices by descending score; equal scores keep index order (``"first"``) or reversed order (``"last"``)."""
    if ties == "first":
        return np.argsort(-scores, kind="stable")
    if ties == "last":
        return np.argsort(scores, kind="stable")[::-1]
    raise ValueError(f"ties must be 'first' or 'last', got {ties!r}")


def _greedy_stacked(b: np.ndarray, valid: np.ndarray, thr, suppress_equal: bool, plus_one: bool,
                    union: str) -> np.ndarray:
    """Greedy NMS of G independent groups at once. ``b (G, n, 4)`` sorted by descending score within each group,
    ``valid (G, n)`` marks real rows. Returns the kept mask (G, n). One Python step per rank position k that can
    suppress anything, vectorised over the G groups."""
    n = b.shape[1]
    s = _suppresses(_overlap(b[:, :, None, :], b[:, None, :, :], plus_one, union), thr, suppress_equal)
    s &= np.triu(np.ones((n, n), dtype=bool), 1)  # only a higher-ranked box suppresses
    s &= valid[:, :, None]
    suppressed = np.zeros(valid.shape, dtype=bool)
    for k in np.flatnonzero(s.any(axis=(0, 2))):
        alive = ~suppressed[:, k]
        suppressed |= s[:, k, :] & alive[:, None]
    return valid & ~suppressed


def _greedy_loop(b: np.ndarray, thr, suppress_equal: bool, plus_one: bool, union: str) -> np.ndarray:
    """Greedy NMS of one group ``b (n, 4)`` sorted by descending score: one vectorised step per kept box.
    Used only when disjoint boxes can suppress each other (``suppress_equal`` with a threshold <= 0)."""
    keep = np.zeros(len(b), dtype=bool)
    rest = np.arange(len(b))
    while rest.size:
        i = rest[0]
        keep[i] = True
        rest = rest[1:]
        if rest.size:
            rest = rest[~_suppresses(_overlap(b[i][None, :], b[rest], plus_one, union), thr, suppress_equal)]
    return keep


def _suppression_edges(b: np.ndarray, thr, suppress_equal: bool, plus_one: bool, union: str) -> tuple:
    """Pairs (i, j), i < j (i ranks higher), where box i would suppress box j. Only pairs whose x extents overlap
    (within 1 with ``plus_one``) can intersect: they are found with a sort-and-sweep over the left edges and the
    IoU is computed for those pairs only, in chunks."""
    lo = np.minimum(b[:, 0], b[:, 2])
    hi = np.maximum(b[:, 0], b[:, 2]) + (b.dtype.type(1) if plus_one else b.dtype.type(0))
    order = np.argsort(lo, kind="stable")
    los = lo[order]
    end = np.searchsorted(los, hi[order], side="left")  # boxes starting before this one's right edge
    count = np.maximum(end - np.arange(1, len(b) + 1), 0)
    src, dst = [], []
    cum = np.concatenate([[0], np.cumsum(count)])
    p = 0
    while p < len(b):  # chunks of at most ~_STACK_BUDGET candidate pairs (a step per chunk, not per box)
        q = max(int(np.searchsorted(cum, cum[p] + _STACK_BUDGET, side="right")) - 1, p + 1)
        q = min(q, len(b))
        n_pairs = int(cum[q] - cum[p])
        if n_pairs:
            first = np.repeat(np.arange(p, q), count[p:q])
            second = first + 1 + (np.arange(n_pairs) - np.repeat(cum[p:q] - cum[p], count[p:q]))
            u, v = order[first], order[second]
            i, j = np.minimum(u, v), np.maximum(u, v)
            hit = _suppresses(_overlap(b[i], b[j], plus_one, union), thr, suppress_equal)
            src.append(i[hit])
            dst.append(j[hit])
        p = q
    if not src:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(src), np.concatenate(dst)


def _greedy_sparse(b: np.ndarray, thr, suppress_equal: bool, plus_one: bool, union: str) -> np.ndarray:
    """Greedy NMS of one large group ``b (n, 4)`` sorted by descending score, exact, on the sparse graph of
    suppressing pairs. Rounds: a box with a kept suppressor is suppressed; a box whose suppressors are all
    suppressed is kept (each round decides at least the best undecided box); long dependency chains finish with a
    sequential pass over the few undecided boxes."""
    n = len(b)
    src, dst = _suppression_edges(b, thr, suppress_equal, plus_one, union)
    state = np.zeros(n, dtype=np.int8)  # 0 undecided, 1 kept, 2 suppressed
    for _ in range(32):
        undecided = state == 0
        if not undecided.any():
            break
        kept_in = np.bincount(dst, weights=state[src] == 1, minlength=n) > 0
        open_in = np.bincount(dst, weights=state[src] == 0, minlength=n) > 0
        state[undecided & kept_in] = 2
        state[undecided & ~kept_in & ~open_in] = 1
    rest = np.flatnonzero(state == 0)
    if rest.size:
        by_dst = np.argsort(dst, kind="stable")
        d_sorted, s_sorted = dst[by_dst], src[by_dst]
        lo_e, hi_e = np.searchsorted(d_sorted, rest, "left"), np.searchsorted(d_sorted, rest, "right")
        for v, a, z in zip(rest, lo_e, hi_e):  # rank order: every suppressor of v is decided by now
            state[v] = 2 if (state[s_sorted[a:z]] == 1).any() else 1
    return state == 1


def _greedy_groups(b: np.ndarray, group: np.ndarray, thr, suppress_equal: bool, plus_one: bool,
                   union: str) -> np.ndarray:
    """Kept mask of greedy NMS run independently per value of ``group``; ``b`` is already in descending-score order
    (so each group's rows, taken in order, are sorted too)."""
    keep = np.zeros(len(b), dtype=bool)
    uniq, inverse, counts = np.unique(group, return_inverse=True, return_counts=True)
    members = np.argsort(inverse, kind="stable")  # rows grouped, score order inside each group
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    small = np.flatnonzero(counts <= _STACK_MAX)
    disjoint_suppress = suppress_equal and float(thr) <= 0  # then every pair interacts: no sparse graph
    for g in np.flatnonzero(counts > _STACK_MAX):
        rows = members[starts[g]:starts[g] + counts[g]]
        greedy = _greedy_loop if disjoint_suppress else _greedy_sparse
        keep[rows] = greedy(b[rows], thr, suppress_equal, plus_one, union)
    small = small[np.argsort(counts[small], kind="stable")]  # similar sizes stacked together: little padding
    i = 0
    while i < small.size:  # one step per chunk of groups (not per box)
        j = i + 1
        while j < small.size and (j + 1 - i) * int(counts[small[j]]) ** 2 <= _STACK_BUDGET:
            j += 1
        chunk = small[i:j]
        n = int(counts[chunk].max())
        pos = np.arange(n)
        valid = pos[None, :] < counts[chunk][:, None]
        rows = members[starts[chunk][:, None] + np.minimum(pos[None, :], counts[chunk][:, None] - 1)]
        kept = _greedy_stacked(b[rows], valid, thr, suppress_equal, plus_one, union)
        keep[rows[kept]] = True
        i = j
    return keep


def _greedy_kept(b: np.ndarray, group: np.ndarray, thr, suppress_equal: bool, plus_one: bool, union: str,
                 max_out: int | None) -> np.ndarray:
    """Positions kept by greedy NMS (per ``group``) of rows ``b`` already in descending-score order, at most
    ``max_out`` of them. With ``max_out`` only a prefix of the ranking is resolved, grown until it holds ``max_out``
    kept boxes: a box's fate depends only on the higher-ranked boxes of its group, so the prefix's result is exact
    (SSD keeps the best 200 of 16,000 candidates; this resolves a few hundred of them instead of all)."""
    n = len(b)
    p = n if max_out is None else min(n, max(2 * max_out, 64))
    while True:
        kept = np.flatnonzero(_greedy_groups(b[:p], group[:p], thr, suppress_equal, plus_one, union))
        if max_out is None:
            return kept
        if kept.size >= max_out or p == n:
            return kept[:max_out]
        p = min(n, 4 * p)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, *, suppress_equal: bool = False,
        plus_one: bool = False, union: str = "a+b-i", ties: str = "first", max_out: int | None = None) -> np.ndarray:
    """Greedy hard NMS. Returns the indices of the kept boxes in descending score order.

    Defaults = torchvision's CPU ``nms`` kernel: a box is suppressed by a kept higher-scoring box when
    IoU > ``iou_threshold`` (``suppress_equal=True``: >=), IoU in the boxes' float dtype as
    ``inter / (area_i + area_j - inter)`` with areas ``(x2-x1)*(y2-y1)`` (``plus_one``: +1 per side; ``union``
    ``"b-i+a"``: ``(area_j - inter) + area_i`` as ssd.pytorch-style code rounds it). A Python float threshold is
    compared in float64 (torchvision's C++ double); pass ``np.float32(t)`` for a float32 comparison. Equal scores
    keep index order (``ties="first"``, a stable sort) or the reverse (``"last"``). ``max_out`` truncates the result.
    """
    b = np.asarray(boxes)
    if b.dtype.kind != "f":
        b = b.astype(np.float32)
    s = np.asarray(scores)
    if b.ndim != 2 or b.shape[1] != 4 or s.shape != (b.shape[0],):
        raise ValueError(f"nms: boxes must be (N, 4) and scores (N,), got {b.shape} and {s.shape}")
    order = _descending(s, ties)
    return order[_greedy_kept(b[order], np.zeros(len(order), dtype=np.int64), iou_threshold, suppress_equal,
                              plus_one, union, max_out)]


def _interacting(b: np.ndarray, idxs: np.ndarray) -> np.ndarray:
    """Component label per box: classes whose boxes' x extents overlap (so that they could suppress each other)
    are merged. With the coordinate trick this never happens for boxes inside [-1, max] and the components are the
    classes; when it does happen (very negative coordinates) the merged classes are run as one NMS, as torchvision."""
    classes, inverse = np.unique(idxs, return_inverse=True)
    lo = np.full(classes.size, np.inf)
    hi = np.full(classes.size, -np.inf)
    np.minimum.at(lo, inverse, np.minimum(b[:, 0], b[:, 2]).astype(np.float64))
    np.maximum.at(hi, inverse, np.maximum(b[:, 0], b[:, 2]).astype(np.float64))
    order = np.argsort(lo, kind="stable")
    comp = np.empty(classes.size, dtype=np.int64)
    label, reach = -1, -np.inf
    for c in order:  # interval merge over classes (at most ~80-100 classes): not per box
        if lo[c] >= reach:  # touching extents give zero-width intersections: no interaction
            label += 1
        reach = max(reach, hi[c]) if lo[c] < reach else hi[c]
        comp[c] = label
    return comp[inverse]


def batched_nms(boxes: np.ndarray, scores: np.ndarray, idxs: np.ndarray, iou_threshold: float, *,
                coordinate_trick: bool = True, ties: str = "first", **nms_kw) -> np.ndarray:
    """Class-aware NMS: boxes of different ``idxs`` never suppress each other. Indices in descending score order.

    ``coordinate_trick=True`` is torchvision <= 0.7 ``batched_nms`` exactly: every box is shifted by
    ``idxs * (boxes.max() + 1)`` in the boxes' dtype and one NMS runs over the shifted boxes (IoUs are computed on
    the shifted, float32-rounded coordinates, as there). ``False`` runs NMS per class on the original coordinates
    (newer torchvision on CPU for large inputs). Other keywords as :func:`nms`.
    """
    b = np.asarray(boxes)
    if b.dtype.kind != "f":
        b = b.astype(np.float32)
    s, c = np.asarray(scores), np.asarray(idxs)
    if b.ndim != 2 or b.shape[1] != 4 or s.shape != (b.shape[0],) or c.shape != s.shape:
        raise ValueError(f"batched_nms: boxes (N, 4), scores (N,), idxs (N,); got {b.shape}, {s.shape}, {c.shape}")
    if b.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    max_out = nms_kw.pop("max_out", None)
    if coordinate_trick:
        one = b.dtype.type(1)
        offsets = c.astype(b.dtype) * (b.max() + one)
        b = b + offsets[:, None]
        # with ">=" and a threshold <= 0 even disjoint boxes suppress each other: then no split is exact
        zero_suppresses = nms_kw.get("suppress_equal", False) and float(iou_threshold) <= 0
        group = np.zeros_like(c) if zero_suppresses else _interacting(b, c)
    else:
        group = c
    suppress_equal, plus_one = nms_kw.pop("suppress_equal", False), nms_kw.pop("plus_one", False)
    union = nms_kw.pop("union", "a+b-i")
    if nms_kw:
        raise TypeError(f"batched_nms: unexpected keywords {sorted(nms_kw)}")
    order = _descending(s, ties)
    return order[_greedy_kept(b[order], group[order], iou_threshold, suppress_equal, plus_one, union, max_out)]


# ------------------------------------------------------------------------------------------------------- decoding
def decode_center_offsets(loc: np.ndarray, priors: np.ndarray, variance: Sequence[float] = (0.1, 0.2)) -> np.ndarray:
    """The SSD-family ``decode`` (PyramidBox's and M2Det's upstream ``box_utils.decode``): offsets ``loc (A, 4)`` + priors ``(A, 4)`` cx cy w h -> float32 xyxy ``(A, 4)``, normalised.

    cx = pcx + tx * variance[0] * pw, w = pw * exp(tw * variance[1]); x1 = cx - w / 2, then x2 = x1 + w (from x1, not cx + w / 2).
    Run with the same torch float32 operations on the whole array as upstream (same exp kernel: bit-identical)."""
    import torch

    l = torch.from_numpy(np.ascontiguousarray(loc, dtype=np.float32))
    p = torch.from_numpy(np.array(priors, dtype=np.float32))
    if l.ndim != 2 or l.shape[1] != 4 or l.shape != p.shape:
        raise ValueError(f"decode_center_offsets: loc and priors must both be (A, 4), got {tuple(l.shape)} and "
                         f"{tuple(p.shape)}")
    with torch.no_grad():
        boxes = torch.cat((p[:, :2] + l[:, :2] * variance[0] * p[:, 2:], p[:, 2:] * torch.exp(l[:, 2:] * variance[1])),
                          1)
        boxes[:, :2] -= boxes[:, 2:] / 2
        boxes[:, 2:] += boxes[:, :2]
    return boxes.numpy()


# ------------------------------------------------------------------------------------------------------- soft-NMS
def soft_nms(dets: np.ndarray, sigma: float = 0.5, nt: float = 0.3, threshold: float = 0.001, method: int = 0,
             max_keep: int | None = None) -> int:
    """Upstream ``cpu_soft_nms`` (Cython, utils/nms/cpu_nms.pyx) on ``dets`` float32 ``(n, 5)`` x1 y1 x2 y2 score,
    **in place**; returns the number of surviving rows, which are ``dets[:n]`` in selection order with decayed scores.

    Written in numpy because the algorithm is not in any installed library, with the Cython function's exact
    arithmetic (docs/models/m2det.md 6.4): for i = 0, 1, ...: swap the first highest-scoring row of [i, n) to i; for every
    later row R with iw = float32(min(x2) - max(x1) + 1.0) > 0 and ih likewise > 0 (the ``+1`` in double):
    area_R = float32((x2 - x1 + 1.0) * (y2 - y1 + 1.0)), inter = float32(iw * ih),
    ua = float32(area_T in double + area_R - inter), ov = inter / ua (float32); weight = 1 - ov if ov > Nt (linear,
    method 1), 0 if ov > Nt (method 0), exp(-ov^2 / sigma) (method 2); score *= weight; a row whose score drops
    below ``threshold`` is replaced by the current last row (n -= 1) and that row is examined in its place.
    The inner loop over rows is vectorised (each row's update depends only on the selected row and itself); the
    replacement order is reproduced exactly by :func:`_soft_nms_compact`.

    ``max_keep`` stops after that many selections: row i never changes after iteration i, so ``dets[:min(n, k)]``
    is exactly what the full run gives (the guide keeps 50 per class).
    """
    b = dets
    if b.dtype != np.float32 or b.ndim != 2 or b.shape[1] != 5:
        raise ValueError(f"soft_nms: dets must be float32 (n, 5), got {b.dtype} {b.shape}")
    f32, f64 = np.float32, np.float64
    nt32, thr32, sigma32 = f32(nt), f32(threshold), f32(sigma)
    n = b.shape[0]
    stop = n if max_keep is None else min(n, int(max_keep))
    i = 0
    while i < n and i < stop:
        m = i + int(np.argmax(b[i:n, 4]))  # first maximum, as the strict ``<`` scan
        if m != i:
            b[[i, m]] = b[[m, i]]
        if i + 1 < n:
            t = b[i]
            r = b[i + 1:n]
            iw = ((np.minimum(t[2], r[:, 2]) - np.maximum(t[0], r[:, 0])).astype(f64) + 1.0).astype(f32)
            ih = ((np.minimum(t[3], r[:, 3]) - np.maximum(t[1], r[:, 1])).astype(f64) + 1.0).astype(f32)
            hit = (iw > 0) & (ih > 0)
            if hit.any():
                rh = r[hit]
                iw, ih = iw[hit], ih[hit]
                area = (((rh[:, 2] - rh[:, 0]).astype(f64) + 1.0) * ((rh[:, 3] - rh[:, 1]).astype(f64) + 1.0)
                        ).astype(f32)
                t_area = (f64(t[2] - t[0]) + 1.0) * (f64(t[3] - t[1]) + 1.0)
                inter = iw * ih
                ua = (t_area + area.astype(f64) - inter.astype(f64)).astype(f32)
                with np.errstate(divide="ignore", invalid="ignore"):
                    ov = inter / ua
                if method == 1:
                    weight = np.where(ov > nt32, (1.0 - ov.astype(f64)).astype(f32), f32(1))
                elif method == 2:
                    weight = np.exp((-(ov * ov) / sigma32).astype(f64)).astype(f32)
                else:
                    weight = np.where(ov > nt32, f32(0), f32(1))
                score = weight * rh[:, 4]
                r[hit, 4] = score
                pruned = np.zeros(len(r), dtype=bool)
                pruned[np.flatnonzero(hit)[score < thr32]] = True
                if pruned.any():
                    n = i + 1 + _soft_nms_compact(r, pruned)
        i += 1
    return n


def _soft_nms_compact(r: np.ndarray, pruned: np.ndarray) -> int:
    """Remove ``pruned`` rows of ``r`` in place the way the Cython loop does (scanning forward, each removed row is
    overwritten by the current last row, which is then examined in its place). Net effect: the holes among the
    first ``m`` positions (m = rows kept) receive the kept rows beyond ``m``, last one first. Returns ``m``."""
    kept = ~pruned
    m = int(kept.sum())
    holes = np.flatnonzero(pruned[:m])
    donors = np.flatnonzero(kept[m:])[::-1] + m
    r[holes] = r[donors]
    return m
