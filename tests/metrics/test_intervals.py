"""95% intervals of every accuracy figure: Wilson for top-k (against the closed form), the percentile bootstrap
helpers, and each accumulator's weighted figures (all-ones weights = compute(); integer weights = the figure of the
explicitly resampled data set) and intervals (reproducible, containing the point estimate, narrower with more data,
degenerate cases)."""
from __future__ import annotations

import copy
import importlib.util
import json
import warnings
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest

from zooinfer.datasets.base import Sample
from zooinfer.metrics import coco, reid
from zooinfer.metrics import widerface as wf
from zooinfer.metrics.classification import TopKAccumulator
from zooinfer.metrics.intervals import bootstrap_weights, percentile_interval, weighted_ratio, wilson

DATA = Path(__file__).parent / "data"


def _width(iv: tuple[float, float]) -> float:
    return iv[1] - iv[0]


def _contains(iv: tuple[float, float], x: float) -> bool:
    return iv[0] - 1e-12 <= x <= iv[1] + 1e-12


# ---------------------------------------------------------------------------------------------- generic helpers
def _wilson_closed_form(k: int, n: int, level: float) -> tuple[float, float]:
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k,n", [(0, 10), (10, 10), (5, 10), (81, 100), (1, 1), (7, 50_000)])
@pytest.mark.parametrize("level", [0.95, 0.99])
def test_wilson_equals_the_closed_form(k, n, level):
    lo, hi = wilson(k, n, level)
    ref = _wilson_closed_form(k, n, level)
    assert lo == pytest.approx(ref[0], abs=1e-12) and hi == pytest.approx(ref[1], abs=1e-12)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_known_values_and_ends():
    assert wilson(0, 10) == (0.0, pytest.approx(0.2775327998628892, abs=1e-12))  # lower end exactly 0
    assert wilson(10, 10) == (pytest.approx(0.7224672001371108, abs=1e-12), 1.0)  # upper end exactly 1
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(1 - hi, abs=1e-15) and lo == pytest.approx(0.2365930905, abs=1e-9)  # symmetric
    assert _width(wilson(50, 100)) > _width(wilson(500, 1000)) > _width(wilson(5000, 10000))
    assert _width(wilson(50, 100, 0.99)) > _width(wilson(50, 100, 0.95)) > _width(wilson(50, 100, 0.8))
    for bad in [(1, 0), (-1, 5), (6, 5)]:
        with pytest.raises(ValueError):
            wilson(*bad)


def test_percentile_interval():
    v = np.arange(101) / 100
    assert percentile_interval(v, 0.9) == pytest.approx((0.05, 0.95), abs=1e-12)
    assert percentile_interval(v, 0.5) == pytest.approx((0.25, 0.75), abs=1e-12)
    assert percentile_interval(v[::-1]) == pytest.approx((0.025, 0.975), abs=1e-12)  # default level 0.95
    assert percentile_interval(np.r_[v, np.nan, np.nan], 0.9) == pytest.approx((0.05, 0.95), abs=1e-12)
    assert percentile_interval(np.full(5, 0.25)) == (0.25, 0.25)
    assert percentile_interval(np.full(3, np.nan)) is None and percentile_interval([]) is None


def test_bootstrap_weights():
    w = bootstrap_weights(50, 300, seed=1)
    assert w.shape == (300, 50) and w.dtype == np.int64 and w.min() >= 0
    assert np.all(w.sum(axis=1) == 50)  # resampling 50 units with replacement
    assert np.array_equal(w, bootstrap_weights(50, 300, seed=1))
    assert not np.array_equal(w, bootstrap_weights(50, 300, seed=2))
    assert abs(w.mean() - 1) < 1e-12 and 0.9 < w.var() < 1.1  # multinomial(n, 1/n): variance ~1 per unit
    assert 0.3 < (w == 0).mean() < 0.44  # ~(1 - 1/n)^n of the units are not drawn
    assert bootstrap_weights(0, 4).shape == (4, 0)
    with pytest.raises(ValueError):
        bootstrap_weights(5, 0)


def test_weighted_ratio():
    w = np.array([[1, 1, 1], [2, 0, 1], [0, 0, 0]])
    out = weighted_ratio(w, np.array([1.0, 0.0, 0.5]), np.ones(3))
    assert out[0] == pytest.approx(0.5) and out[1] == pytest.approx(2.5 / 3) and np.isnan(out[2])


# ---------------------------------------------------------------------------------------------------- top-k
def _topk_acc(ranks) -> TopKAccumulator:
    acc = TopKAccumulator()
    for i, r in enumerate(ranks):
        logits = np.zeros(10, np.float32)
        logits[np.arange(10)] = -np.arange(10)  # class c at rank c
        acc.update(Sample(str(i), "", int(r)), logits)
    return acc


def test_topk_intervals_are_wilson_of_the_counts():
    ranks = [0] * 60 + [1] * 15 + [3] * 5 + [7] * 20  # top1 .60, top2 .75, top4/5 .80
    acc = _topk_acc(ranks)
    out, iv = acc.compute(), acc.intervals()
    assert set(iv) == {f"top{k}" for k in range(1, 6)}
    for k, hits in zip(range(1, 6), (60, 75, 75, 80, 80)):
        assert out[f"top{k}"] == hits / 100
        assert iv[f"top{k}"] == pytest.approx(_wilson_closed_form(hits, 100, 0.95), abs=1e-12)
        assert _contains(iv[f"top{k}"], out[f"top{k}"])
    assert _width(acc.intervals(level=0.99)["top1"]) > _width(iv["top1"])
    assert acc.intervals(resamples=5, seed=3) == iv  # closed form: no resampling
    assert _width(_topk_acc(ranks * 10).intervals()["top1"]) < _width(iv["top1"])  # more images, narrower


def test_topk_degenerate():
    iv = _topk_acc([0] * 20).intervals()
    assert iv["top1"][1] == 1.0 and iv["top1"][0] == pytest.approx(_wilson_closed_form(20, 20, 0.95)[0])
    assert _topk_acc([9] * 20).intervals()["top5"][0] == 0.0
    assert TopKAccumulator().intervals() == {f"top{k}": None for k in range(1, 6)}


# ---------------------------------------------------------------------------------------------------- re-ID
IN = dict(np.load(DATA / "reid" / "inputs.npz"))


def _reid_acc(q_feats, q_ids, g_feats, g_ids) -> reid.ReidAccumulator:
    acc = reid.ReidAccumulator()
    for i, (f, (p, c)) in enumerate(zip(q_feats, q_ids)):
        acc.update(Sample(f"q{i}", "", info={"split": "query", "pid": int(p), "camid": int(c)}), f)
    for i, (f, (p, c)) in enumerate(zip(g_feats, g_ids)):
        acc.update(Sample(f"g{i}", "", info={"split": "gallery", "pid": int(p), "camid": int(c)}), f)
    return acc


def _fixture_reid(repeat: int = 1) -> reid.ReidAccumulator:
    q_ids = list(zip(IN["q_pids"], IN["q_camids"])) * repeat
    return _reid_acc(np.tile(IN["query_feats"], (repeat, 1)), q_ids, IN["gallery_feats"],
                     list(zip(IN["g_pids"], IN["g_camids"])))


def test_reid_weighted_figures():
    acc = _fixture_reid()
    out = acc.compute()
    ones = acc.weighted_figures(np.ones((1, len(acc.q_pids))))
    for k in ("top1", "top5", "top10"):
        assert ones[k][0] == out[k]  # integer counts: bit-equal
    assert ones["mAP"][0] == pytest.approx(out["mAP"], abs=1e-15)
    # integer weights = the figures of the query set resampled explicitly (rows of the distance matrix repeated)
    d = acc.distances()
    qp, qc = np.array(acc.q_pids), np.array(acc.q_camids)
    w = bootstrap_weights(len(qp), 4, seed=7)
    got = acc.weighted_figures(w)
    for r in range(len(w)):
        rows = np.repeat(np.arange(len(qp)), w[r])
        ref = reid.evaluate(d[rows], qp[rows], acc.g_pids, qc[rows], acc.g_camids)
        for k in ("top1", "top5", "top10", "mAP"):
            assert got[k][r] == pytest.approx(ref[k], abs=1e-12), (r, k)


def test_reid_intervals():
    acc = _fixture_reid()
    out = acc.compute()
    iv = acc.intervals()
    assert set(iv) == {"top1", "top5", "top10", "mAP"}
    for k, v in iv.items():
        assert 0 <= v[0] <= v[1] <= 1 and _contains(v, out[k]), k
    assert iv["top10"] == (1.0, 1.0)  # every valid query matches within 10: in every resample
    assert acc.intervals() == iv and acc.intervals(seed=1) != iv
    assert _width(acc.intervals(level=0.5)["mAP"]) < _width(iv["mAP"])
    big = _fixture_reid(repeat=4)
    assert big.compute()["mAP"] == pytest.approx(out["mAP"], abs=1e-12)
    assert _width(big.intervals()["mAP"]) < 0.75 * _width(iv["mAP"])
    # without compute() first: computed on demand, same intervals
    assert _fixture_reid().intervals() == iv


def test_reid_degenerate_all_first_matches():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((6, 8)).astype(np.float32) * 10
    q = [(p, 0) for p in range(6)]
    g = [(p, 1) for p in range(6)] + [(p, 2) for p in range(6)]
    acc = _reid_acc(centres, q, np.vstack([centres + 0.01, centres + 0.02]), g)
    assert acc.compute()["top1"] == 1.0
    iv = acc.intervals()
    assert iv["top1"] == (1.0, 1.0) and iv["mAP"] == pytest.approx((1.0, 1.0))


# ----------------------------------------------------------------------------------------------- WIDER FACE
WGT = wf.load_ground_truth(DATA / "widerface" / "gt")
WPRED = {tuple(k.split("/")): np.array(v, dtype=np.float64).reshape(-1, 5)
         for k, v in json.loads((DATA / "widerface" / "predictions.json").read_text())["images"].items()}


def _wider_acc(gt: wf.GroundTruth, preds: dict) -> wf.WiderFaceAccumulator:
    acc = wf.WiderFaceAccumulator(gt)
    for (ev, name), d in preds.items():
        acc.update(Sample(f"{ev}/{name}", ""), d)
    return acc


def _replicated_wider(counts) -> tuple[wf.GroundTruth, dict]:
    """The fixture with image i present ``counts[i]`` times (copies renamed): an explicitly resampled set."""
    images, boxes, keep, preds = [], {s: [] for s in wf.SETTINGS}, {s: [] for s in wf.SETTINGS}, {}
    for i, (key, c) in enumerate(zip(WGT.images, counts)):
        for j in range(int(c)):
            new = (key[0], f"{key[1]}_copy{j}")
            images.append(new)
            for s in wf.SETTINGS:
                boxes[s].append(WGT.boxes[s][i])
                keep[s].append(WGT.keep[s][i])
            if key in WPRED:
                preds[new] = WPRED[key]
    return wf.GroundTruth(images, boxes, keep), preds


def test_wider_weighted_figures():
    acc = _wider_acc(WGT, WPRED)
    out = acc.compute()
    ones = acc.weighted_figures(np.ones((1, len(WGT.images))))
    for s in wf.SETTINGS:
        assert ones[s][0] == out[s], s  # the same integer counts: the same AP bits
    # weights 1..3 (every image kept: the score min / max, hence the normalisation, are those of the full set)
    w = np.random.default_rng(2).integers(1, 4, (3, len(WGT.images)))
    got = acc.weighted_figures(w)
    for r in range(len(w)):
        gt_r, pred_r = _replicated_wider(w[r])
        ref = wf.evaluate(pred_r, gt_r, quantize=False)
        for s in wf.SETTINGS:
            assert got[s][r] == pytest.approx(ref[s], abs=1e-12), (r, s)
    with pytest.raises(Exception, match="weights must be"):
        acc.weighted_figures(np.ones((1, 3)))


def test_wider_intervals():
    acc = _wider_acc(WGT, WPRED)
    out = acc.compute()
    iv = acc.intervals()
    assert set(iv) == set(wf.SETTINGS)
    for s in wf.SETTINGS:
        assert 0 <= iv[s][0] <= iv[s][1] <= 1 and _contains(iv[s], out[s]), s
    assert acc.intervals() == iv and acc.intervals(seed=5) != iv
    gt4, pred4 = _replicated_wider(np.full(len(WGT.images), 4))
    big = _wider_acc(gt4, pred4)
    assert big.compute()["hard"] == pytest.approx(out["hard"], abs=1e-12)
    big_iv = big.intervals()
    for s in wf.SETTINGS:
        assert _width(big_iv[s]) < 0.75 * _width(iv[s]), s


def test_wider_predicted_only_units_and_empty_setting(tmp_path):
    items = list(WPRED.items())[:10]
    acc = wf.WiderFaceAccumulator(WGT, predicted_only=True)
    for (ev, name), d in items:
        acc.update(Sample(f"{ev}/{name}", ""), d)
    out = acc.compute()
    assert acc.weighted_figures(np.ones((1, 10)))["hard"][0] == out["hard"]  # units: the 10 predicted images
    assert all(v is not None for v in acc.intervals(resamples=20).values())
    # a setting without faces: AP NaN -> no interval
    wf.write_ground_truth(tmp_path, {"0--A": {"0_a_1": {"boxes": [[0, 0, 20, 20], [50, 50, 20, 20]], "easy": []}}})
    acc = wf.WiderFaceAccumulator(tmp_path)
    acc.update(Sample("0--A/0_a_1", ""), np.array([[0, 0, 20, 20, 0.9], [100, 100, 5, 5, 0.2]]))
    with pytest.warns(UserWarning, match="no faces"):
        assert np.isnan(acc.compute()["easy"])
    iv = acc.intervals(resamples=10)
    assert iv["easy"] is None and iv["hard"] is not None


# ------------------------------------------------------------------------------------------------------ COCO
CGT = json.loads((DATA / "coco" / "gt.json").read_text())
CDETS = json.loads((DATA / "coco" / "dets.json").read_text())


def _coco_acc(gt: dict, rows: np.ndarray) -> coco.CocoAccumulator:
    acc = coco.CocoAccumulator(copy.deepcopy(gt))
    acc.update(Sample("x", ""), rows)
    return acc


def _compute(acc: coco.CocoAccumulator) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # images without detections
        return acc.compute()


def _replicated_coco(gt: dict, rows: np.ndarray, counts, ids) -> tuple[dict, np.ndarray]:
    """``gt`` / ``rows`` with image ``ids[i]`` present ``counts[i]`` times (copies get new image / annotation ids)."""
    images, anns, dets = [], [], []
    by_id = {im["id"]: im for im in gt["images"]}
    new_id, ann_id = 1, 1
    for i, c in zip(ids, counts):
        for _ in range(int(c)):
            images.append(dict(by_id[i], id=new_id))
            for a in gt["annotations"]:
                if a["image_id"] == i:
                    anns.append(dict(a, id=ann_id, image_id=new_id))
                    ann_id += 1
            d = rows[rows[:, 0] == i].copy()
            d[:, 0] = new_id
            dets.append(d)
            new_id += 1
    return {"images": images, "annotations": anns, "categories": gt["categories"]}, np.concatenate(dets)


def _bench_coco(n_images: int, dets_per_image: int):
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_metrics.py"
    spec = importlib.util.spec_from_file_location("bench_metrics", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    gt, rows = mod.synthetic_coco(seed=3, n_images=n_images, dets_per_image=dets_per_image)
    rows = rows.copy()  # distinct scores: copies of an image then rank next to each other, as weights count them
    rows[:, 5] = (np.random.default_rng(0).permutation(len(rows)) + 1) / (len(rows) + 1)
    return gt, rows


@pytest.mark.parametrize("data", ["fixture", "ties"])
def test_coco_all_ones_weights_give_pycocotools_arrays(data):
    """The weighted accumulate with every weight 1: pycocotools' precision (maxDets 100) and recall arrays bit
    for bit, recall stats bit-equal, precision stats up to summation order; on the fixture, and on a synthetic set
    with many scores tied across images (accumulate's mergesort order among them)."""
    from pycocotools.cocoeval import COCOeval

    if data == "fixture":
        gt, rows = CGT, coco.result_rows(CDETS)
    else:
        gt, rows = _bench_coco(60, 30)
        rows[:, 5] = np.round(rows[:, 5] * 5) / 5
    acc = _coco_acc(gt, rows)
    out = _compute(acc)
    pi = acc.per_image()
    st = coco._weighted_stats(pi, np.ones((1, len(pi.img_ids))), keep_arrays=True)
    ev = COCOeval(acc.gt, acc.gt.loadRes(acc.results), "bbox")
    ev.params.imgIds = pi.img_ids
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    assert np.array_equal(st["precision"][0], ev.eval["precision"][..., ev.params.maxDets.index(100)])
    assert np.array_equal(st["recall"][0], ev.eval["recall"])
    for k in coco.STAT_NAMES:
        v = st[k][0] if not np.isnan(st[k][0]) else -1.0
        if k.startswith("AR"):
            assert v == out[k], k
        else:
            assert v == pytest.approx(out[k], abs=1e-15), k


def test_coco_weights_equal_the_explicitly_resampled_set():
    gt, rows = _bench_coco(40, 25)
    acc = _coco_acc(gt, rows)
    pi = acc.per_image()
    w = bootstrap_weights(len(pi.img_ids), 3, seed=4)
    got = acc.weighted_figures(w, per_image=pi)
    for r in range(len(w)):
        g2, d2 = _replicated_coco(gt, rows, w[r], pi.img_ids)
        ref = coco.evaluate(d2, g2)
        for k in coco.STAT_NAMES:
            v = got[k][r] if not np.isnan(got[k][r]) else -1.0
            assert v == pytest.approx(ref[k], abs=1e-12), (r, k)


def test_coco_intervals():
    rows = coco.result_rows(CDETS)
    acc = _coco_acc(CGT, rows)
    out = _compute(acc)
    iv = acc.intervals()
    assert set(iv) == set(coco.STAT_NAMES)
    for k in coco.STAT_NAMES:
        if out[k] < 0:
            assert iv[k] is None, k
        else:
            assert 0 <= iv[k][0] <= iv[k][1] <= 1, k
    for k in ("AP", "AP50", "AP75", "AR1", "AR10", "AR100"):
        assert _contains(iv[k], out[k]), (k, iv[k], out[k])
    assert acc.intervals() == iv and acc.intervals(seed=1) != iv
    ids = sorted(im["id"] for im in CGT["images"])
    g4, d4 = _replicated_coco(CGT, rows, [4] * len(ids), ids)
    big = _coco_acc(g4, d4)
    assert _compute(big)["AP"] == pytest.approx(out["AP"], abs=1e-12)
    big_iv = big.intervals()
    for k in ("AP", "AP50", "AR100"):
        assert _width(big_iv[k]) < 0.75 * _width(iv[k]), k


def test_coco_degenerate_and_undefined():
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in CGT["annotations"] if not a["iscrowd"]]
    acc = _coco_acc(CGT, coco.result_rows(perfect))
    iv = acc.intervals(resamples=50)
    for k in ("AP", "AP50", "AP75", "AR100"):
        assert iv[k] == pytest.approx((1.0, 1.0)), k
    one = {"images": [{"id": 1, "width": 300, "height": 300, "file_name": "a.jpg"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 100, 100], "area": 10000.0,
                            "iscrowd": 0}], "categories": [{"id": 1, "name": "person"}]}
    acc = _coco_acc(one, np.array([[1, 150, 150, 120, 120, 0.9, 1], [1, 23, 0, 100, 100, 0.8, 1]]))
    out = acc.compute()
    iv = acc.intervals(resamples=20)
    assert out["APs"] == -1.0 and iv["APs"] is None and iv["ARm"] is None  # no small / medium ground truth
    assert iv["AP"] == pytest.approx((0.15, 0.15)) and iv["AR100"] == pytest.approx((0.3, 0.3))  # one image
    empty = coco.CocoAccumulator(copy.deepcopy(one), image_id_of=lambda s: 1)
    empty.update(Sample("a", ""), [])
    with pytest.warns(UserWarning, match="no detections"):
        assert empty.compute()["AP"] == 0.0
    assert empty.intervals(resamples=10)["AP"] == (0.0, 0.0)
