"""SSD300 head: default boxes against the tabulated values (docs/models/ssd_resnet34.md 6), decoding and the guide's
selection."""
from __future__ import annotations

import math

import numpy as np
import pytest

from zooinfer.models.ssd_resnet34 import head as B

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
