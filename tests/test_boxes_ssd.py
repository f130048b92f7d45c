"""Shared box code against hand-derived values and the SSD spec's tabulated default boxes (specs/ssd_resnet34.md 6)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from zooinfer import boxes as B

F32 = np.float32


# ------------------------------------------------------------------------------------------------ default boxes
def test_default_boxes_first_entries_match_spec():
    d = B.ssd_default_boxes()
    assert d.shape == (8732, 4) and d.dtype == np.float32
    expected = {0: (0.013333, 0.013333, 0.07, 0.07), 1: (0.04, 0.013333, 0.07, 0.07),
                38: (0.013333, 0.04, 0.07, 0.07), 37: (1.0, 0.013333, 0.07, 0.07)}
    for i, v in expected.items():
        np.testing.assert_allclose(d[i], v, atol=1e-6, err_msg=f"default box {i}")
    assert d[37, 0] == 1.0  # (37 + 0.5) / 37.5 = 1.0 exactly: the last column's centre reaches 1


# group start index -> (w, h), spec 6.1 table (single numbers are square boxes)
GROUPS = {
    0: (0.07, 0.07), 1444: (0.102470, 0.102470), 2888: (0.098995, 0.049497), 4332: (0.049497, 0.098995),
    5776: (0.15, 0.15), 6137: (0.222486, 0.222486), 6498: (0.212132, 0.106066), 6859: (0.106066, 0.212132),
    7220: (0.259808, 0.086603), 7581: (0.086603, 0.259808),
    7942: (0.33, 0.33), 8042: (0.410244, 0.410244), 8142: (0.466690, 0.233345), 8242: (0.233345, 0.466690),
    8342: (0.571577, 0.190526), 8442: (0.190526, 0.571577),
    8542: (0.51, 0.51), 8567: (0.593212, 0.593212), 8592: (0.721249, 0.360624), 8617: (0.360624, 0.721249),
    8642: (0.883346, 0.294449), 8667: (0.294449, 0.883346),
    8692: (0.69, 0.69), 8701: (0.774790, 0.774790), 8710: (0.975807, 0.487904), 8719: (0.487904, 0.975807),
    8728: (0.87, 0.87), 8729: (0.955772, 0.955772), 8730: (1.0, 0.615183), 8731: (0.615183, 1.0),
}
FK = {0: 37.5, 5776: 18.75, 7942: 9.375, 8542: 4.6875, 8692: 3.0, 8728: 1.0}


def test_default_box_groups_match_spec_table():
    d = B.ssd_default_boxes()
    starts = sorted(GROUPS)
    for n, s in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else 8732
        np.testing.assert_allclose(d[s, 2:], GROUPS[s], atol=1e-6, err_msg=f"group at {s}")
        assert np.all(d[s:end, 2:] == d[s, 2:]), f"size changes inside the group starting at {s}"
        fk = FK[max(k for k in FK if k <= s)]
        c = min(0.5 / fk, 1.0)  # first location of every group: row 0, column 0
        np.testing.assert_allclose(d[s, :2], (c, c), atol=1e-6)
    assert B.ssd_layer_offsets() == [0, 5776, 7942, 8542, 8692, 8728]
    assert d.max() == 1.0 and d.min() > 0  # 8730's width was clamped from 1.2304 to 1.0


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


# ------------------------------------------------------------------------------------------------ SSD decode/select
def test_ssd_decode_hand_values():
    d = B.ssd_default_boxes()
    ploc = np.zeros((4, 8732), F32)
    ploc[:, 1] = [10, -5, 5, 0]  # anchor 1: cx + 1*dw, cy - .5*dh, w * e, h unchanged
    plabel = np.zeros((81, 8732), F32)
    plabel[3, 0] = math.log(2.0)  # anchor 0: class 3 twice as likely as each of the other 80
    boxes, probs = B.ssd_decode(ploc, plabel)
    cx, cy, w, h = d[0]
    np.testing.assert_allclose(boxes[0], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], atol=1e-7)
    cx, cy, w, h = d[1]
    cx, cy, w = cx + w, cy - 0.5 * h, w * math.e
    np.testing.assert_allclose(boxes[1], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], rtol=1e-6)
    np.testing.assert_allclose(probs[0, 3], 2 / 82, rtol=1e-6)
    np.testing.assert_allclose(probs[0, 0], 1 / 82, rtol=1e-6)
    np.testing.assert_allclose(probs[5], np.full(81, 1 / 81), rtol=1e-6)
    assert ploc[0, 1] == 10  # inputs untouched (upstream's scale_back_batch works in place)


def _probs(rows):
    return np.array(rows, F32)


def test_ssd_select_hand_example():
    boxes = np.array([[0, 0, .5, .5], [.02, 0, .52, .5], [.6, .6, .9, .9], [.1, .1, .2, .2]], F32)
    probs = _probs([
        [.1, .8, .05, .05],     # a0: best .8
        [.06, .6, .3, .04],     # a1: near-duplicate of a0 (IoU .24/.26)
        [.97, .01, .01, .01],   # a2: best .01 <= .05: dropped
        [.85, .05, .05, .05],   # a3: best == float32(.05): dropped (strict >)
    ])
    b, lab, sc = B.ssd_select(boxes, probs)
    # class 0: a0 .8 suppresses a1 .6; class 1: a1 .3 suppresses a0 .05; class 2: a0 .05 suppresses a1 .04
    assert lab.tolist() == [0, 1, 2]
    assert sc.tolist() == [F32(.8), F32(.3), F32(.05)]
    np.testing.assert_allclose(b, boxes[[0, 1, 0]], atol=1e-7)
    # every class of a kept anchor enters NMS, with no per-class threshold: a0 alone gives all three classes, and
    # its tied .05 scores stay in class order
    b, lab, sc = B.ssd_select(boxes, probs, max_anchors=1)
    assert lab.tolist() == [0, 1, 2] and sc.tolist() == [F32(.8), F32(.05), F32(.05)]
    assert B.ssd_select(boxes, probs, max_detections=2)[1].tolist() == [0, 1]
    b, lab, sc = B.ssd_select(boxes[2:], probs[2:])
    assert b.shape == (0, 4) and lab.size == 0 and sc.size == 0


def test_ssd_select_nms_in_shifted_coordinates():
    # (b + 1) / 2 keeps IoUs; boxes far apart in class space never interact, near-identical ones do
    boxes = np.array([[-.5, -.5, .5, .5], [-.5, -.5, .5, .52]], F32)
    probs = _probs([[.2, .7, .1], [.2, .1, .7]])
    b, lab, sc = B.ssd_select(boxes, probs)
    # class 0: a0 .7 suppresses a1 .1; class 1: a1 .7 suppresses a0 .1
    assert lab.tolist() == [0, 1] and sc.tolist() == [F32(.7), F32(.7)]
    np.testing.assert_allclose(b, boxes, atol=1e-7)


def test_ssd_select_keeps_the_coordinate_trick_quirk():
    """In (b + 1) / 2 space a0 is [0, 0, 1, 1] and a1 [-2, -2, -1, -1]; max coordinate 1, so class 1 is shifted by 2:
    a1's class-1 box lands on a0's class-0 box and is suppressed by it (torchvision 0.6 ``batched_nms``)."""
    boxes = np.array([[-1, -1, 1, 1], [-5, -5, -3, -3]], F32)
    probs = _probs([[.1, .8, .1], [.1, .2, .7]])
    b, lab, sc = B.ssd_select(boxes, probs)
    assert list(zip(lab.tolist(), sc.tolist())) == [(0, F32(.8)), (0, F32(.2)), (1, F32(.1))]
    np.testing.assert_array_equal(b, boxes[[0, 1, 0]])
    _, lab, sc = B.ssd_select(boxes, probs, coordinate_trick=False)  # plain per-class NMS keeps all four
    assert list(zip(lab.tolist(), sc.tolist())) == [(0, F32(.8)), (1, F32(.7)), (0, F32(.2)), (1, F32(.1))]


@pytest.mark.parametrize("ties", ["first", "last"])
def test_nms_rejects_bad_arguments(ties):
    with pytest.raises(ValueError):
        B.nms(np.zeros((2, 3), F32), np.zeros(2, F32), 0.5, ties=ties)
    with pytest.raises(ValueError):
        B.nms(np.zeros((2, 4), F32), np.zeros(2, F32), 0.5, ties="middle")
    with pytest.raises(ValueError):
        B.iou(np.zeros((1, 4), F32), np.zeros((1, 4), F32), union="a-b")
