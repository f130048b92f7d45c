"""COCO bbox metric: reference numbers from plain pycocotools runs (tests/metrics/data/coco/reference.json, computed
outside the project), a hand-worked case, properties, label mapping, bad input and the accumulator; faster-coco-eval
against pycocotools (skipped where it is not installed)."""
from __future__ import annotations

import copy
import importlib.util
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from zooinfer.datasets.base import Sample
from zooinfer.errors import DatasetError, MetricInputError, ZooinferError
from zooinfer.metrics import coco

DATA = Path(__file__).parent / "data" / "coco"
GT = DATA / "gt.json"
DETS = DATA / "dets.json"
REF = json.loads((DATA / "reference.json").read_text())


def _close(got: dict, ref: dict) -> None:
    assert list(ref) == list(coco.STAT_NAMES)
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, abs=1e-12), k


@pytest.fixture(scope="module")
def gt_dict() -> dict:
    return json.loads(GT.read_text())


@pytest.fixture(scope="module")
def dets() -> list[dict]:
    return json.loads(DETS.read_text())


def test_reference_all_input_forms(gt_dict, dets):
    ref = REF["all"]
    _close(coco.evaluate(str(DETS), str(GT)), ref)  # both as paths
    _close(coco.evaluate(DETS, GT), ref)  # pathlib paths
    _close(coco.evaluate(copy.deepcopy(dets), coco.load_ground_truth(GT)), ref)  # dicts + loaded COCO
    _close(coco.evaluate(copy.deepcopy(dets), copy.deepcopy(gt_dict)), ref)  # in-memory annotation dict


def test_reference_subset_and_float32_array(dets):
    _close(coco.evaluate(DETS, GT, img_ids=REF["subset_img_ids"]), REF["subset"])
    arr = np.array([[d["image_id"], *d["bbox"], d["score"], d["category_id"]] for d in dets], dtype=np.float32)
    _close(coco.evaluate(arr, GT), REF["array_float32"])


def test_image_counts(gt_dict, dets):
    out = coco.evaluate(DETS, GT)
    with_gt = {a["image_id"] for a in gt_dict["annotations"]}
    with_dt = {d["image_id"] for d in dets}
    assert out["n_images"] == len(gt_dict["images"]) == 14
    assert out["n_images_counted"] == len(with_gt | with_dt)
    assert out["n_detections"] == len(dets)
    sub = coco.evaluate(DETS, GT, img_ids=REF["subset_img_ids"])
    assert sub["n_images"] == len(REF["subset_img_ids"])


def test_does_not_modify_inputs(gt_dict, dets):
    d0, g0 = copy.deepcopy(dets), copy.deepcopy(gt_dict)
    coco.evaluate(d0, GT)
    assert d0 == dets  # loadRes adds keys to result dicts: we hand it copies
    assert g0 == gt_dict


def _one_image_gt() -> dict:
    return {"images": [{"id": 1, "width": 300, "height": 300, "file_name": "a.jpg"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 100, 100], "area": 10000.0,
                             "iscrowd": 0}],
            "categories": [{"id": 1, "name": "person"}]}


def test_hand_worked_one_fp_above_one_tp():
    """GT [0,0,100,100] (large). A large false positive (score 0.9) ranks above a box shifted by 23 px (score 0.8):
    IoU = 77/123 = 0.626 -> a hit at IoU thresholds .50/.55/.60 only. There precision is 1/2 at every recall
    threshold, elsewhere 0: AP = 3 * 0.5 / 10 = 0.15, AP50 = 0.5, AP75 = 0; AR100 = 3/10; with one detection
    allowed only the false positive counts: AR1 = 0; no small/medium ground truth: -1."""
    dets = [{"image_id": 1, "category_id": 1, "bbox": [150, 150, 120, 120], "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [23, 0, 100, 100], "score": 0.8}]
    out = coco.evaluate(dets, _one_image_gt())
    expected = {"AP": 0.15, "AP50": 0.5, "AP75": 0.0, "APs": -1.0, "APm": -1.0, "APl": 0.15, "AR1": 0.0,
                "AR10": 0.3, "AR100": 0.3, "ARs": -1.0, "ARm": -1.0, "ARl": 0.3}
    for k, v in expected.items():
        assert out[k] == pytest.approx(v, abs=1e-12), k
    # the same two boxes with the scores swapped: the hit ranks first, precision 1 where it counts
    dets[0]["score"], dets[1]["score"] = 0.7, 0.95
    out = coco.evaluate(dets, _one_image_gt())
    assert out["AP"] == pytest.approx(0.3) and out["AP50"] == pytest.approx(1.0) and out["AR1"] == pytest.approx(0.3)


def test_perfect_detector_gives_one(gt_dict):
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt_dict["annotations"] if not a["iscrowd"]]
    out = coco.evaluate(dets, GT)
    for k in ("AP", "AP50", "AP75", "AR100"):
        assert out[k] == pytest.approx(1.0), k
    # a duplicate of every box (lower score) is a false positive: precision drops, recall does not
    dup = dets + [dict(d, score=0.5) for d in dets]
    out2 = coco.evaluate(dup, GT)
    assert out2["AR100"] == pytest.approx(1.0) and out2["AP"] == pytest.approx(1.0)  # duplicates rank below all hits
    dup = dets + [dict(d, score=2.0, bbox=[b + 1000 for b in d["bbox"][:2]] + d["bbox"][2:]) for d in dets]
    assert coco.evaluate(dup, GT)["AP"] < 0.9  # confident misses rank above the hits


def test_empty_detections_give_zeros_with_warning():
    with pytest.warns(UserWarning, match="no detections"):
        out = coco.evaluate([], _one_image_gt())
    assert out["AP"] == 0.0 and out["AP50"] == 0.0 and out["AR100"] == 0.0 and out["APl"] == 0.0
    assert out["APs"] == -1.0  # no small ground truth: pycocotools' "absent" sentinel
    with pytest.warns(UserWarning):
        assert coco.evaluate(np.zeros((0, 7), np.float32), GT)["AP"] == 0.0


def test_bad_inputs(dets):
    with pytest.raises(MetricInputError, match="not in the ground truth.*999999"):
        coco.evaluate([{"image_id": 999999, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}], GT)
    with pytest.raises(MetricInputError, match="label_to_category_id"):
        coco.evaluate([{"image_id": 100, "category_id": 0, "bbox": [0, 0, 1, 1], "score": 1}], GT)
    with pytest.raises(MetricInputError, match="bbox"):
        coco.evaluate([{"image_id": 100, "category_id": 1, "score": 1}], GT)
    with pytest.raises(MetricInputError, match=r"\(N, 7\)"):
        coco.evaluate(np.zeros((3, 6)), GT)
    with pytest.raises(MetricInputError, match="img_ids"):
        coco.evaluate(dets, GT, img_ids=[1, 2])
    with pytest.raises(DatasetError, match="instances"):
        coco.evaluate(dets, GT.parent / "nope.json")
    with pytest.raises(MetricInputError, match="not found"):
        coco.evaluate(GT.parent / "nope.json", GT)


def test_label_table():
    table = coco.coco80_to_91()
    unused = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91}  # the 11 ids of the 91-class list without instances
    assert table == sorted(set(range(1, 92)) - unused) and len(table) == 80
    assert coco.label_to_category_id(1) == 1 and coco.label_to_category_id(12) == 13
    assert coco.label_to_category_id(80) == 90 and coco.label_to_category_id(0, first=0) == 1
    assert coco.label_to_category_id(np.array([1, 25, 80])).tolist() == [1, 27, 90]
    assert coco.label_to_category_id(np.array([11, 79]), first=0).tolist() == [13, 90]
    with pytest.raises(MetricInputError):
        coco.label_to_category_id(0)
    with pytest.raises(MetricInputError):
        coco.label_to_category_id(80, first=0)
    assert coco.category_ids(GT) == table  # the file lists the 80 categories in ascending id order


def _samples_and_dets(dets):
    by_image: dict[int, list] = {}
    for d in dets:
        by_image.setdefault(d["image_id"], []).append(d)
    return by_image


def test_accumulator_all_and_predicted_only(gt_dict, dets):
    by_image = _samples_and_dets(dets)
    ids = [im["id"] for im in gt_dict["images"]]
    skipped = {ids[1], ids[4]}  # "missing on disk": never predicted
    acc_all = coco.CocoAccumulator(GT)
    acc_pred = coco.CocoAccumulator(GT, predicted_only=True)
    for im in gt_dict["images"]:
        if im["id"] in skipped:
            continue
        sample = Sample(Path(im["file_name"]).stem, im["file_name"])  # numeric key -> image id
        for acc in (acc_all, acc_pred):
            acc.update(sample, copy.deepcopy(by_image.get(im["id"], [])))
    kept = [d for d in dets if d["image_id"] not in skipped]
    with pytest.warns(UserWarning, match="2 of 14 images were not predicted"):
        out_all = acc_all.compute()
    ref_all = coco.evaluate(kept, GT)
    _close({k: out_all[k] for k in coco.STAT_NAMES}, {k: ref_all[k] for k in coco.STAT_NAMES})
    assert out_all["n_images"] == 14 and out_all["n_images_missing"] == 2
    with pytest.warns(UserWarning, match="left out"):
        out_pred = acc_pred.compute()
    ref_pred = coco.evaluate(kept, GT, img_ids=set(ids) - skipped)
    _close({k: out_pred[k] for k in coco.STAT_NAMES}, {k: ref_pred[k] for k in coco.STAT_NAMES})
    assert out_pred["n_images"] == 12
    assert out_pred["AR100"] != out_all["AR100"]  # the skipped images' boxes are misses only in the first


def test_accumulator_image_id_sources():
    acc = coco.CocoAccumulator(_one_image_gt(), predicted_only=True)
    acc.update(Sample("a", "a.jpg", info={"image_id": 1}), [])  # known through info even without detections
    assert acc.predicted == {1}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = acc.compute()
    messages = [str(w.message) for w in caught]
    assert out["AP"] == 0.0 and out["n_images"] == 1 and out["n_images_missing"] == 0
    assert any("no detections" in m for m in messages) and not any("not predicted" in m for m in messages)
    acc2 = coco.CocoAccumulator(_one_image_gt(), image_id_of=lambda s: 1)
    acc2.update(Sample("x", "x.jpg"), np.array([[1, 0, 0, 100, 100, 0.9, 1]], dtype=np.float32))
    assert acc2.compute()["AP"] == pytest.approx(1.0)


def test_accumulator_keeps_compact_rows_and_rejects_bad_dicts(dets):
    acc = coco.CocoAccumulator(GT)
    for d in dets:
        acc.update(Sample(str(d["image_id"]), ""), [d])
    assert all(r.dtype == np.float64 and r.shape[1] == 7 for r in acc._rows)
    back = acc.results  # exact round trip of the dicts, order kept
    assert [(b["image_id"], b["category_id"], b["bbox"], b["score"]) for b in back] == \
        [(d["image_id"], d["category_id"], d["bbox"], d["score"]) for d in dets]
    out = acc.compute()
    _close({k: out[k] for k in coco.STAT_NAMES}, REF["all"])
    # compute() hands pycocotools lean dicts (a shared empty segmentation, no copies): the same stats, bit for bit,
    # as the public path with pycocotools' own polygons, and the accumulator's results stay as they were
    full = coco.evaluate(acc.results, GT)
    assert {k: out[k] for k in coco.STAT_NAMES} == {k: full[k] for k in coco.STAT_NAMES}
    assert all(set(d) == {"image_id", "category_id", "bbox", "score"} for d in acc.results)
    with pytest.raises(MetricInputError, match="bbox"):
        acc.update(Sample("x", ""), [{"image_id": 100, "category_id": 1, "score": 0.5}])


# ---------------------------------------------------------------------------------------------- faster-coco-eval
HAS_FAST = importlib.util.find_spec("faster_coco_eval") is not None
needs_fast = pytest.mark.skipif(not HAS_FAST, reason='faster-coco-eval is not installed (pip install "zooinfer[fast]")')
#: pycocotools' precision where tp + fp == 1: tp / (tp + fp + np.spacing(1)) = 1 / (1 + 2**-52)
ONE_MINUS_ULP = 1 / (1 + np.spacing(1))


def _bench_metrics():
    """benchmarks/bench_metrics.py as a module (its deterministic full-size synthetic COCO generator)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_metrics.py"
    spec = importlib.util.spec_from_file_location("bench_metrics", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _both(dets, gt, img_ids=None) -> tuple[dict, dict, dict, dict]:
    """(pycocotools figures, its eval arrays, faster-coco-eval figures, its eval arrays) on the same input."""
    kw = {"img_ids": img_ids}
    d2 = dets.copy() if isinstance(dets, np.ndarray) else copy.deepcopy(dets)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        op, ep = coco._evaluate(dets, gt, quiet=True, copy=True, stacklevel=2, evaluator="pycocotools", **kw)
        of, ef = coco._evaluate(d2, gt, quiet=True, copy=True, stacklevel=2, evaluator="faster-coco-eval", **kw)
    assert op["evaluator"] == "pycocotools" and of["evaluator"] == "faster-coco-eval"
    return op, ep, of, ef


def _same_but_the_epsilon(op, ep, of, ef) -> int:
    """faster-coco-eval agrees with pycocotools exactly, except pycocotools' ``np.spacing(1)`` in the precision:
    recall and score arrays bit for bit; precision bit for bit except entries where pycocotools has
    1 - 2**-52 and faster-coco-eval 1.0; the 12 statistics (means over those arrays) within a few 1e-16; the
    counts equal. Returns the number of such precision entries."""
    assert set(ef) == set(ep) and ef["counts"] == ep["counts"]
    assert np.array_equal(ef["recall"], ep["recall"]) and np.array_equal(ef["scores"], ep["scores"])
    pf, pp = ef["precision"], ep["precision"]
    diff = pf != pp
    assert np.all(pf[diff] == 1.0) and np.all(pp[diff] == ONE_MINUS_ULP), (np.unique(pf[diff]), np.unique(pp[diff]))
    for k in coco.STAT_NAMES:
        assert abs(of[k] - op[k]) <= 4e-16, (k, of[k], op[k])
        assert (of[k] == -1.0) == (op[k] == -1.0), k  # the "no ground truth in this area range" sentinel alike
    for k in ("n_images", "n_images_counted", "n_detections"):
        assert of[k] == op[k], k
    return int(diff.sum())


@needs_fast
def test_faster_coco_eval_agrees_on_the_fixtures(gt_dict, dets):
    arr = np.array([[d["image_id"], *d["bbox"], d["score"], d["category_id"]] for d in dets], dtype=np.float32)
    n = _same_but_the_epsilon(*_both(dets, GT))
    assert n > 0  # the fixture does have curves whose first detection is a hit and the second a miss
    _same_but_the_epsilon(*_both(dets, GT, img_ids=REF["subset_img_ids"]))
    _same_but_the_epsilon(*_both(arr, GT))
    one = [{"image_id": 1, "category_id": 1, "bbox": [150, 150, 120, 120], "score": 0.9},
           {"image_id": 1, "category_id": 1, "bbox": [23, 0, 100, 100], "score": 0.8}]
    _same_but_the_epsilon(*_both(one, _one_image_gt()))  # hand-worked case, with its -1 area ranges
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in gt_dict["annotations"] if not a["iscrowd"]]
    _same_but_the_epsilon(*_both(perfect, GT))
    # a duplicate below every hit: a class with one object is hit then missed (pycocotools' 1 - 2**-52 survives)
    _same_but_the_epsilon(*_both(perfect + [dict(d, score=0.5) for d in perfect], GT))
    op, ep, of, ef = _both([], _one_image_gt())
    _same_but_the_epsilon(op, ep, of, ef)
    assert of["AP"] == 0.0 and of["APs"] == -1.0


@needs_fast
def test_faster_coco_eval_agrees_on_a_synthetic_set():
    """300 images x 100 detections of the benchmark's generator (all area ranges, crowd boxes, exact area-range
    borders, zero-width boxes, tied scores); the full size (5,000 x 100) is the slow test below."""
    gt, rows = _bench_metrics().synthetic_coco(seed=1, n_images=300)
    assert _same_but_the_epsilon(*_both(rows, gt)) > 0
    ids = [im["id"] for im in gt["images"]][::3]
    _same_but_the_epsilon(*_both(rows[np.isin(rows[:, 0], ids)], gt, img_ids=ids))


@needs_fast
@pytest.mark.slow
def test_faster_coco_eval_agrees_at_full_size():
    """5,000 images, 500,000 detections (pycocotools takes 1-3 minutes here)."""
    gt, rows = _bench_metrics().synthetic_coco()
    assert len(gt["images"]) == 5000 and len(rows) == 500_000
    _same_but_the_epsilon(*_both(rows, gt))


@needs_fast
def test_evaluator_selection(dets):
    assert coco.evaluate(DETS, GT)["evaluator"] == "pycocotools"  # the default stays the guides' evaluator
    assert coco.evaluate(DETS, GT, evaluator="auto")["evaluator"] == "faster-coco-eval"
    by_image = _samples_and_dets(dets)
    acc = coco.CocoAccumulator(GT, evaluator="auto")
    assert acc.evaluator == "faster-coco-eval"
    for image_id, ds in by_image.items():
        acc.update(Sample(str(image_id), ""), copy.deepcopy(ds))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # images without detections
        out = acc.compute()
    assert out["evaluator"] == "faster-coco-eval"
    ref = coco.evaluate(DETS, GT, evaluator="faster-coco-eval")
    assert {k: out[k] for k in coco.STAT_NAMES} == {k: ref[k] for k in coco.STAT_NAMES}
    assert set(acc.eval) == {"params", "counts", "date", "precision", "recall", "scores"}  # no per-match dict kept


def test_evaluator_missing_or_unknown(monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # as if not installed: the import fails
    with pytest.raises(ZooinferError, match=r'pip install "zooinfer\[fast\]"'):
        coco.evaluate(DETS, GT, evaluator="faster-coco-eval")
    with pytest.raises(ZooinferError, match=r'pip install "zooinfer\[fast\]"'):
        coco.CocoAccumulator(GT, evaluator="faster-coco-eval")  # before any image is read
    out = coco.evaluate(DETS, GT, evaluator="auto")  # falls back
    assert out["evaluator"] == "pycocotools"
    _close(out, REF["all"])
    assert coco.CocoAccumulator(GT, evaluator="auto").evaluator == "pycocotools"
    with pytest.raises(MetricInputError, match="evaluator must be one of"):
        coco.evaluate(DETS, GT, evaluator="fast")
