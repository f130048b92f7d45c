"""M2Det box code (boxes.py): priors, decoding, linear soft-NMS, the guide's per-class selection and COCO boxes.

Expected values are worked by hand from docs/models/m2det.md 6.1-6.5, or come from upstream qijiezhao/M2Det (de4a624) run
outside the project: PriorBox, Detect/decode, nms_process and the compiled Cython cpu_soft_nms (0.29.37), called as
the guide calls them (tests/models/m2det/data/: inputs and numbers only).
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from zooinfer.boxes import soft_nms
from zooinfer.models.m2det.head import (coco_xywh_plus_one, m2det_decode, m2det_feature_maps, m2det_level_offsets,
                                        m2det_priors, m2det_select)

DATA = Path(__file__).parent / "data"
f32 = np.float32


# ------------------------------------------------------------------------------------------------ priors (6.1)
def test_prior_count_and_levels():
    assert m2det_feature_maps(512) == [64, 32, 16, 8, 4, 2]
    p = m2det_priors()
    assert p.shape == (32760, 4) and p.dtype == np.float32
    assert 6 * sum(f * f for f in (64, 32, 16, 8, 4, 2)) == 32760
    assert m2det_level_offsets() == [0, 24576, 30720, 32256, 32640, 32736]
    assert not p.flags.writeable


def test_first_priors_by_hand():
    p = m2det_priors()
    s = 30.72 / 512  # round(0.06 * 512, 2) / 512
    sp = math.sqrt(s * 76.8 / 512)
    r2, r3 = math.sqrt(2), math.sqrt(3)
    want_wh = [(s, s), (sp, sp), (s * r2, s / r2), (s / r2, s * r2), (s * r3, s / r3), (s / r3, s * r3)]
    np.testing.assert_array_equal(p[:6, :2], np.full((6, 2), 0.5 / 64, dtype=f32))
    np.testing.assert_array_equal(p[:6, 2:], np.array(want_wh, dtype=f32))
    # spec's tabulated float32 values
    np.testing.assert_allclose(p[:6, 2:], [[0.06, 0.06], [0.0948683, 0.0948683], [0.0848528, 0.0424264],
                                           [0.0424264, 0.0848528], [0.1039230, 0.0346410], [0.0346410, 0.1039230]],
                               atol=1e-7)
    np.testing.assert_array_equal(p[6], f32([1.5 / 64, 0.5 / 64, s, s]))  # next column: location-major
    np.testing.assert_array_equal(p[384], f32([0.5 / 64, 1.5 / 64, s, s]))  # next row (64 cells x 6 later)
    np.testing.assert_array_equal(p[24575], f32([63.5 / 64, 63.5 / 64, s / r3, s * r3]))


@pytest.mark.parametrize("start, f, lo, hi, s_prime", [
    (24576, 32, 0.15, 0.33, 0.2224860), (30720, 16, 0.33, 0.51, 0.4102438), (32256, 8, 0.51, 0.69, 0.5932116),
    (32640, 4, 0.69, 0.87, 0.7747903), (32736, 2, 0.87, 1.05, 0.9557719)])
def test_first_prior_of_each_level(start, f, lo, hi, s_prime):
    p = m2det_priors()
    s = round(lo * 512, 2) / 512
    assert p[start, 0] == p[start, 1] == f32(0.5 / f)
    assert p[start, 2] == p[start, 3] == f32(s)
    assert p[start + 1, 2] == f32(math.sqrt(s * round(hi * 512, 2) / 512))
    assert abs(float(p[start + 1, 2]) - s_prime) < 1e-7
    prev = 2 * f  # the previous level (twice the size) ends at its last cell
    assert p[start - 1, 0] == p[start - 1, 1] == f32((prev - 0.5) / prev)


def test_prior_clamp_and_digest():
    p = m2det_priors()
    assert int((p[:, 2] == 1).sum()) == 24 and int((p[:, 3] == 1).sum()) == 24
    assert p.min() >= 0 and p.max() <= 1
    # SHA-256 of the float32 little-endian array given in docs/models/m2det.md 6.1 (= upstream PriorBox, checked there)
    assert hashlib.sha256(p.astype("<f4").tobytes()).hexdigest() == \
        "edf3790b72a4f42dfd1f76199145fc2030f2bb1cc86f22686e9d40bd2590b13b"


# ------------------------------------------------------------------------------------------------ decode (6.2)
def test_decode_by_hand():
    priors = np.array([[0.5, 0.5, 0.2, 0.1], [0.25, 0.75, 0.5, 0.5]], dtype=f32)
    loc = np.array([[1.0, -2.0, 0.0, 0.0], [0.0, 0.0, 5.0, -5.0]], dtype=f32)
    got = m2det_decode(loc, 200, 100, priors=priors)
    # box 0: cx = 0.5 + 0.1*0.2 = 0.52, cy = 0.5 - 0.2*0.1 = 0.48, w = 0.2, h = 0.1 -> x1 0.42, y1 0.43
    # box 1: w = 0.5 e^1, h = 0.5 e^-1, centred at (0.25, 0.75); x2 = x1 + w
    w1, h1 = 0.5 * math.e, 0.5 / math.e
    want = [[0.42 * 200, 0.43 * 100, 0.62 * 200, 0.53 * 100],
            [(0.25 - w1 / 2) * 200, (0.75 - h1 / 2) * 100, (0.25 + w1 / 2) * 200, (0.75 + h1 / 2) * 100]]
    assert got.dtype == np.float32 and got.shape == (2, 4)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)


def test_decode_x2_is_x1_plus_w():
    # x2 = x1 + w in float32 (not cx + w/2): check the exact float32 identity on every prior
    loc = np.zeros((32760, 4), dtype=f32)
    b = m2det_decode(loc, 1, 1)
    p = m2det_priors()
    x1 = p[:, 0] - p[:, 2] / f32(2)
    np.testing.assert_array_equal(b[:, 0], x1)
    np.testing.assert_array_equal(b[:, 2], x1 + p[:, 2])


def _formula_inputs() -> tuple[np.ndarray, np.ndarray]:
    """Integer-formula inputs (no data file): loc in [-1.5, 1.5]; probabilities for 6 classes on contiguous prior
    ranges (overlapping boxes), quantised to 1/256 (ties), one value exactly float32(0.1)."""
    idx = np.arange(32760, dtype=np.int64)
    loc = ((((idx[:, None] * 4 + np.arange(4)) * 7919) % 301) - 150).astype(f32) / f32(100)
    probs = np.zeros((32760, 81), f32)
    probs[:, 0] = 0.5
    for c, (lo, hi) in {1: (0, 600), 45: (12000, 12300), 3: (24576, 25200), 17: (30720, 31000),
                        62: (32256, 32400), 80: (32640, 32760)}.items():
        k = np.arange(lo, hi, dtype=np.int64)
        probs[k, c] = ((k * 2654435761) % 227).astype(f32) / f32(256)
    probs[5, 1] = f32(0.1)
    return loc, probs


def test_decode_matches_upstream():
    ref = json.loads((DATA / "postprocess_ref.json").read_text())
    loc, _ = _formula_inputs()
    b = m2det_decode(loc, ref["width"], ref["height"])
    np.testing.assert_array_equal(b[:3], np.array(ref["decoded_first_rows"], dtype=f32))
    assert hashlib.sha256(b.astype("<f4").tobytes()).hexdigest() == ref["decode_sha256"]


# ------------------------------------------------------------------------------------------------ soft-NMS (6.4)
def test_soft_nms_linear_by_hand():
    d = np.array([[0, 0, 9, 4, 0.8],  # overlaps T: iw 10, ih 5 (+1 convention), inter 50, ua 100 -> IoU 0.5
                  [0, 0, 9, 9, 0.9],  # T (area 10 x 10 = 100)
                  [20, 20, 29, 29, 0.85],  # disjoint
                  [0, 8, 9, 9, 0.7]], dtype=f32)  # inter 20, ua 100 -> IoU 0.2 <= 0.3: untouched; disjoint from row 0
    n = soft_nms(d, nt=0.3, threshold=0.001, method=1)
    assert n == 4
    np.testing.assert_array_equal(d[:, :4], f32([[0, 0, 9, 9], [20, 20, 29, 29], [0, 8, 9, 9], [0, 0, 9, 4]]))
    np.testing.assert_array_equal(d[:, 4], f32([0.9, 0.85, 0.7, f32(1 - 0.5) * f32(0.8)]))


def test_soft_nms_pruned_row_is_replaced_by_the_last_row():
    # B duplicates A (IoU 1 -> weight 0 -> pruned); the last row D moves into B's slot, so between the tied C and D
    # the first-found maximum is D, not C (a stable removal would select C first)
    d = np.array([[0, 0, 9, 9, 0.9],  # A
                  [0, 0, 9, 9, 0.5],  # B
                  [50, 50, 59, 59, 0.3],  # C
                  [100, 100, 109, 109, 0.3]], dtype=f32)  # D
    n = soft_nms(d, method=1)
    assert n == 3
    np.testing.assert_array_equal(d[:3, :2], f32([[0, 0], [100, 100], [50, 50]]))


def test_soft_nms_threshold_strict_and_iou_strict():
    # IoU exactly 0.3 is not > Nt: no decay
    d = np.array([[0, 0, 9, 9, 0.9], [0, 0, 9, 2, 0.5]], dtype=f32)  # inter 30, ua 100 -> 0.3 in float32
    soft_nms(d, nt=0.3, method=1)
    assert d[1, 4] == f32(0.5)


def test_soft_nms_max_keep_is_a_prefix():
    rng = np.random.default_rng(0)
    xy = rng.integers(0, 80, (200, 2)).astype(f32)
    d = np.concatenate([xy, xy + 20, rng.integers(25, 50, (200, 1)).astype(f32) / 50], axis=1).astype(f32)
    full, part = d.copy(), d.copy()
    n = soft_nms(full, method=1)
    k = soft_nms(part, method=1, max_keep=50)
    assert n > 50 and k >= 50 and n < len(d)  # some rows pruned after the 50th selection too
    np.testing.assert_array_equal(part[:50], full[:50])


def test_soft_nms_rejects_float64():
    with pytest.raises(ValueError):
        soft_nms(np.zeros((3, 5)))


def test_soft_nms_matches_compiled_upstream():
    """240 random cases (ties, near-duplicates, inverted boxes, pruning; methods 0/1/2, several Nt/thresholds)."""
    z = np.load(DATA / "soft_nms_ref.npz")
    cases = sorted(int(k[2:]) for k in z.files if k.startswith("in"))
    assert len(cases) == 240
    pruned = 0
    for c in cases:
        d = z[f"in{c}"].copy()
        sigma, nt, thr, method = z[f"par{c}"]
        n = soft_nms(d, sigma, nt, thr, int(method))
        want = z[f"out{c}"]
        assert n == len(want), c
        np.testing.assert_array_equal(d[:n], want, err_msg=f"case {c}")
        pruned += n < len(d)
    assert pruned > 50  # the replacement path is exercised


# ------------------------------------------------------------------------------------------------ selection (6.3, 6.5)
def test_select_threshold_cap_and_order():
    n = 60
    boxes = np.array([[30 * i, 0, 30 * i + 10, 10] for i in range(n)], dtype=f32)  # disjoint: no decay
    probs = np.zeros((n, 81), f32)
    probs[:, 7] = np.linspace(0.2, 0.8, n, dtype=f32)
    probs[0, 3], probs[1, 3], probs[2, 3] = f32(0.1), np.nextafter(f32(0.1), f32(1)), f32(0.2)
    out = m2det_select(boxes, probs)
    assert [j for j, _ in out] == [3, 7]
    j3, j7 = out[0][1], out[1][1]
    np.testing.assert_array_equal(j3[:, 4], f32([0.2, np.nextafter(f32(0.1), f32(1))]))  # 0.1 itself is out
    assert len(j7) == 50  # keep_per_class
    np.testing.assert_array_equal(j7[:, 4], probs[::-1, 7][:50])  # descending, boxes unchanged
    np.testing.assert_array_equal(j7[:, :4], boxes[::-1][:50])


def test_coco_boxes_plus_one():
    rows = np.array([[10.5, 20, 30.5, 60, 0.9]], dtype=f32)
    got = coco_xywh_plus_one(rows)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, [[10.5, 20, 21, 41]])


def test_postprocess_chain_matches_upstream():
    """Decode + per-class threshold + soft-NMS + cap + +1 boxes on formula inputs == upstream's result rows."""
    ref = json.loads((DATA / "postprocess_ref.json").read_text())
    loc, probs = _formula_inputs()
    boxes = m2det_decode(loc, ref["width"], ref["height"])
    rows = []
    for j, r in m2det_select(boxes, probs):
        for xywh, s in zip(coco_xywh_plus_one(r).tolist(), r[:, 4].astype(np.float64).tolist()):
            rows.append([j, *xywh, s])
    assert len(rows) == len(ref["rows_j_x_y_w_h_score"]) == 300
    assert rows == ref["rows_j_x_y_w_h_score"]
