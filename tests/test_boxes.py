"""Generic box code (zooinfer.boxes): IoU, greedy NMS on both paths, class-aware NMS, ``max_out`` prefixes."""
from __future__ import annotations

import math

import numpy as np
import pytest

from zooinfer import boxes as B

F32 = np.float32


# ------------------------------------------------------------------------------------------------ IoU / NMS
def test_iou_hand_values():
    a = np.array([[0, 0, 2, 2]], F32)
    b = np.array([[1, 1, 3, 3], [2, 2, 4, 4], [0, 0, 2, 2], [5, 5, 6, 6]], F32)
    np.testing.assert_allclose(B.iou(a, b)[0], [1 / 7, 0, 1, 0], rtol=1e-6)
    # legacy +1 convention: widths 3, inter 2x2=4, union 9+9-4=14; touching boxes overlap by one pixel: 1/(9+9-1)
    np.testing.assert_allclose(B.iou(a, b, plus_one=True)[0], [4 / 14, 1 / 17, 1, 0], rtol=1e-6)


def test_nms_greedy_order_and_strict_threshold():
    boxes = np.array([
        [0, 0, 10, 10],    # 0: s .9  kept
        [1, 0, 11, 10],    # 1: s .8  IoU with 0 = 90/110 > .5 -> suppressed
        [2, 0, 12, 10],    # 2: s .7  IoU with 0 = 80/120 > .5 -> suppressed (only kept boxes suppress)
        [20, 0, 22, 1],    # 3: s .6  kept
        [20, 0, 21, 1],    # 4: s .5  IoU with 3 = 1/2 exactly: kept with ">", suppressed with ">="
        [9, 0, 19, 10],    # 5: s .4  IoU with 0 = 10/190: kept
    ], F32)
    scores = np.array([.9, .8, .7, .6, .5, .4], F32)
    assert B.nms(boxes, scores, 0.5).tolist() == [0, 3, 4, 5]
    assert B.nms(boxes, scores, 0.5, suppress_equal=True).tolist() == [0, 3, 5]
    assert B.nms(boxes, scores, 0.5, max_out=2).tolist() == [0, 3]
    # greedy, not "fast NMS": 1 would suppress 2 (IoU 60/140 > .4) but 1 is itself suppressed by 0 first;
    # IoU(0, 2) = 20/180
    chain = np.array([[0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10]], F32)
    assert B.nms(chain, np.array([.9, .8, .7], F32), 0.4).tolist() == [0, 2]
    # shuffled input gives the same boxes, as indices of the shuffled array
    perm = np.array([4, 2, 0, 5, 1, 3])
    assert sorted(perm[B.nms(boxes[perm], scores[perm], 0.5)].tolist()) == [0, 3, 4, 5]


def test_nms_ties_and_threshold_precision():
    same = np.array([[0, 0, 1, 1]] * 3, F32)
    s = np.array([.5, .5, .5], F32)
    assert B.nms(same, s, 0.5).tolist() == [0]  # ties: first index first (stable)
    assert B.nms(same, s, 0.5, ties="last").tolist() == [2]
    # IoU = 1/3 in float32 is 0.3333333433 > 1/3 in double, but equal to float32(1/3)
    a = np.array([[0, 0, 2, 1], [1, 0, 3, 1]], F32)
    assert B.iou(a[:1], a[1:])[0, 0] == F32(1 / 3)
    assert B.nms(a, np.array([.9, .8], F32), 1 / 3).tolist() == [0]  # double compare: suppressed
    assert B.nms(a, np.array([.9, .8], F32), F32(1 / 3)).tolist() == [0, 1]  # float32 compare: kept


def test_large_group_path_equals_small_group_path(monkeypatch):
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, (700, 2)).astype(F32)
    wh = rng.uniform(2, 20, (700, 2)).astype(F32)
    boxes = np.concatenate([xy, xy + wh], 1)
    scores = rng.uniform(0, 1, 700).astype(F32)
    big = B.nms(boxes, scores, 0.3)  # 700 > _STACK_MAX: the kept-box loop
    monkeypatch.setattr(B, "_STACK_MAX", 10_000)
    monkeypatch.setattr(B, "_STACK_BUDGET", 1 << 20)
    assert np.array_equal(big, B.nms(boxes, scores, 0.3))  # the stacked-matrix path
    # brute-force greedy written from the definition
    order, keep, dead = np.argsort(-scores, kind="stable"), [], np.zeros(700, bool)
    ious = B.iou(boxes, boxes)
    for i in order:
        if not dead[i]:
            keep.append(i)
            dead |= ious[i] > np.float64(0.3)
    assert big.tolist() == keep


def _brute_greedy(boxes, scores, thr, suppress_equal=False, plus_one=False, union="a+b-i", ties="first"):
    """Greedy NMS from its definition: walk boxes by score, keep one unless a kept box suppressed it."""
    order = np.argsort(-scores, kind="stable") if ties == "first" else np.argsort(scores, kind="stable")[::-1]
    ious = B.iou(boxes, boxes, plus_one=plus_one, union=union)
    t = np.float64(thr) if isinstance(thr, float) else thr
    keep, dead = [], np.zeros(len(boxes), bool)
    for i in order:
        if not dead[i]:
            keep.append(i)
            dead |= (ious[i] >= t) if suppress_equal else (ious[i] > t)
    return keep


@pytest.mark.parametrize("case", range(8))
def test_nms_paths_match_brute_force_greedy(case):
    """Random groups of 600-900 boxes (sparse large-group path) and 100-400 (stacked path), with inverted and
    duplicated boxes, a NaN box, integer-valued scores (many ties) and every option combination."""
    rng = np.random.default_rng(100 + case)
    n = int(rng.integers(600, 900)) if case < 6 else int(rng.integers(100, 400))
    scale = [1.0, 50.0, 300.0][case % 3]
    xy = rng.uniform(0, scale, (n, 2)).astype(F32)
    wh = (rng.uniform(-0.05, 0.3, (n, 2)) * scale).astype(F32)
    boxes = np.concatenate([xy, xy + wh], 1)
    boxes[rng.integers(0, n, 15)] = boxes[0]
    boxes[n // 2, 1] = np.nan
    scores = rng.integers(0, 40, n).astype(F32) if case % 2 else rng.uniform(0, 1, n).astype(F32)
    kw = dict(suppress_equal=bool(case % 2), plus_one=case in (1, 4), union=["a+b-i", "b-i+a"][case % 2],
              ties=["first", "last"][case % 3 == 1])
    thr = F32(0.45) if case == 5 else [0.3, 0.5, 0.7][case % 3]
    assert B.nms(boxes, scores, thr, **kw).tolist() == _brute_greedy(boxes, scores, thr, **kw)


def test_batched_nms_classes_and_coordinate_trick():
    boxes = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1.05]], F32)
    scores = np.array([.9, .8, .7], F32)
    # class 1 holds box 1 only: it survives; box 2 (class 0) is suppressed by box 0
    assert B.batched_nms(boxes, scores, np.array([0, 1, 0]), 0.5).tolist() == [0, 1]
    # torchvision 0.6's trick shifts class c by c * (max + 1) = 2c: a class-1 box at [-2, -2, -1, -1] lands exactly
    # on the class-0 box [0, 0, 1, 1] and is suppressed by it; per-class NMS keeps both.
    trick = np.array([[0, 0, 1, 1], [-2, -2, -1, -1]], F32)
    s2, c2 = np.array([.9, .8], F32), np.array([0, 1])
    assert B.batched_nms(trick, s2, c2, 0.5).tolist() == [0]
    assert B.batched_nms(trick, s2, c2, 0.5, coordinate_trick=False).tolist() == [0, 1]
    assert B.batched_nms(np.zeros((0, 4), F32), np.zeros(0, F32), np.zeros(0, int), 0.5).size == 0


@pytest.mark.parametrize("case", range(6))
def test_max_out_resolves_a_prefix_with_the_same_result(case):
    """``max_out`` stops once enough boxes are kept (SSD: 200 of 16,000): equal to the full run truncated, with
    ties, classes merged by the coordinate trick (negative coordinates) and fewer kept boxes than asked."""
    rng = np.random.default_rng(300 + case)
    n = int(rng.integers(2000, 6000))
    lo = -1.5 if case % 3 == 2 else 0.0  # negative boxes: the trick merges classes into one large group
    xy = rng.uniform(lo, 1, (n, 2)).astype(F32)
    boxes = np.concatenate([xy, xy + rng.uniform(0.01, 0.4, (n, 2)).astype(F32)], 1)
    scores = rng.integers(0, 50, n).astype(F32) if case % 2 else rng.uniform(0, 1, n).astype(F32)
    labels = rng.integers(0, 80, n)
    full = B.batched_nms(boxes, scores, labels, 0.5)
    for k in (0, 1, 200, len(full) - 1, len(full), len(full) + 50):
        assert B.batched_nms(boxes, scores, labels, 0.5, max_out=k).tolist() == full[:k].tolist()
    single = B.nms(boxes[:900], scores[:900], 0.3, suppress_equal=bool(case % 2))
    assert B.nms(boxes[:900], scores[:900], 0.3, suppress_equal=bool(case % 2), max_out=37).tolist() == \
        single[:37].tolist()



@pytest.mark.parametrize("ties", ["first", "last"])
def test_nms_rejects_bad_arguments(ties):
    with pytest.raises(ValueError):
        B.nms(np.zeros((2, 3), F32), np.zeros(2, F32), 0.5, ties=ties)
    with pytest.raises(ValueError):
        B.nms(np.zeros((2, 4), F32), np.zeros(2, F32), 0.5, ties="middle")
    with pytest.raises(ValueError):
        B.iou(np.zeros((1, 4), F32), np.zeros((1, 4), F32), union="a-b")
