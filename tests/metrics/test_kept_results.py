"""What the evaluators keep after compute() for the plots (pycocotools style: intermediate results kept): WIDER
FACE's PR curves, re-ID's CMC curve, COCO's accumulated precision array, top-k's per-sample ranks; and the
write_artifacts hook. The kept values are the ones the metrics were read from, so plots and figures agree."""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from zooinfer.datasets.base import Sample
from zooinfer.metrics import classification, coco, reid
from zooinfer.metrics import widerface as wf

DATA = Path(__file__).parent / "data"


# ------------------------------------------------------------------------------------------------ WIDER FACE
def _wider_accumulator(predicted: int | None = None) -> wf.WiderFaceAccumulator:
    preds = {tuple(k.split("/")): np.array(v, dtype=np.float64).reshape(-1, 5)
             for k, v in json.loads((DATA / "widerface" / "predictions.json").read_text())["images"].items()}
    acc = wf.WiderFaceAccumulator(DATA / "widerface" / "gt", predicted_only=predicted is not None)
    for (ev, name), d in list(preds.items())[:predicted]:
        acc.update(Sample(f"{ev}/{name}", f"/x/images/{ev}/{name}.jpg", info={"event": ev}), d)
    return acc


@pytest.mark.parametrize("predicted", [None, 7])
def test_widerface_keeps_the_curves_its_aps_come_from(predicted):
    acc = _wider_accumulator(predicted)
    assert acc.curves is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = acc.compute()
    gt = acc.gt.subset(acc.predictions) if predicted else acc.gt
    again = wf.pr_curves(acc.predictions, gt, quantize=False)  # what the notebook used to recompute
    assert list(acc.curves) == list(wf.SETTINGS)
    for s in wf.SETTINGS:
        kept, fresh = acc.curves[s], again[s]
        for field in ("thresholds", "precision", "recall", "proposals", "recalled"):
            np.testing.assert_array_equal(getattr(kept, field), getattr(fresh, field), err_msg=f"{s} {field}")
        assert kept.faces == fresh.faces and kept.ap == out[s]  # the AP is read off this very curve


def test_widerface_write_artifacts_is_the_submission_folder(tmp_path):
    acc = _wider_accumulator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = acc.compute()
        paths = acc.write_artifacts(tmp_path)
        back = wf.evaluate(tmp_path / "submission", acc.gt)
    assert paths == [tmp_path / "submission"]
    files = sorted(p.relative_to(tmp_path / "submission").as_posix() for p in (tmp_path / "submission").rglob("*.txt"))
    assert files == sorted(f"{ev}/{name}.txt" for ev, name in acc.gt.images)  # every ground-truth image
    assert {s: back[s] for s in wf.SETTINGS} == {s: out[s] for s in wf.SETTINGS}


# ------------------------------------------------------------------------------------------------ re-ID
@pytest.fixture
def reid_acc():
    arrays = dict(np.load(DATA / "reid" / "inputs.npz"))
    acc = reid.ReidAccumulator()
    for i, f in enumerate(arrays["query_feats"]):
        acc.update(Sample(f"q{i}", "", info={"split": "query", "pid": int(arrays["q_pids"][i]),
                                             "camid": int(arrays["q_camids"][i])}), f)
    for i, f in enumerate(arrays["gallery_feats"][:-1]):
        acc.update(Sample(f"g{i}", "", info={"split": "gallery", "pid": int(arrays["g_pids"][i]),
                                             "camid": int(arrays["g_camids"][i])}), f)
    acc.last = (arrays["gallery_feats"][-1], int(arrays["g_pids"][-1]), int(arrays["g_camids"][-1]))
    return acc


def test_reid_keeps_the_cmc_curve_of_compute(reid_acc, monkeypatch):
    assert reid_acc.cmc is None
    out = reid_acc.compute()
    fresh = reid.cmc(reid_acc.distances(), reid_acc.q_pids, reid_acc.g_pids, reid_acc.q_camids, reid_acc.g_camids)
    assert reid_acc.cmc.shape == (reid.CMC_TOPK,) and np.array_equal(reid_acc.cmc, fresh)  # bit for bit
    assert [out[f"top{k}"] for k in (1, 5, 10)] == [reid_acc.cmc[k - 1] for k in (1, 5, 10)]

    def no_recompute(*a, **k):
        raise AssertionError("cmc_curve recomputed the curve that compute() kept")

    monkeypatch.setattr(reid, "cmc", no_recompute)
    curve = reid_acc.cmc_curve(20)
    assert np.array_equal(curve, fresh[:20])
    curve[:] = -1  # a copy: the kept curve is not the caller's to change
    assert np.array_equal(reid_acc.cmc_curve(20), fresh[:20])
    assert reid_acc.write_artifacts("unused") == []


def test_reid_curve_follows_features_that_arrive_after_compute(reid_acc):
    reid_acc.compute()
    f, pid, camid = reid_acc.last
    reid_acc.update(Sample("late", "", info={"split": "gallery", "pid": pid, "camid": camid}), f)
    fresh = reid.cmc(reid_acc.distances(), reid_acc.q_pids, reid_acc.g_pids, reid_acc.q_camids, reid_acc.g_camids)
    assert np.array_equal(reid_acc.cmc_curve(100), fresh)  # recomputed over the larger gallery


# ------------------------------------------------------------------------------------------------ COCO
def test_coco_keeps_the_precision_array_the_stats_are_read_from():
    gt = json.loads((DATA / "coco" / "gt.json").read_text())
    dets = json.loads((DATA / "coco" / "dets.json").read_text())
    acc = coco.CocoAccumulator(DATA / "coco" / "gt.json")
    for d in dets:
        acc.update(Sample(str(d["image_id"]), "", info={"image_id": d["image_id"]}), [copy.deepcopy(d)])
    assert acc.eval is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = acc.compute()
    precision, recall = acc.eval["precision"], acc.eval["recall"]
    n_cats = len(gt["categories"])
    assert precision.shape == (10, 101, n_cats, 4, 3) and recall.shape == (10, n_cats, 4, 3)
    # COCOeval.summarize: AP = mean of the defined precisions over IoUs, recalls, classes at area all, 100 dets
    p = precision[:, :, :, 0, 2]
    assert float(np.mean(p[p > -1])) == out["AP"]
    p50 = precision[0, :, :, 0, 2]
    assert float(np.mean(p50[p50 > -1])) == out["AP50"]
    r = recall[:, :, 0, 2]
    assert float(np.mean(r[r > -1])) == out["AR100"]
    assert acc.write_artifacts("unused") == []


# ------------------------------------------------------------------------------------------------ top-k
def test_topk_ranks_are_the_ones_its_accuracies_count():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((40, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 40)
    acc = classification.TopKAccumulator()
    for i, (z, y) in enumerate(zip(logits, labels)):
        acc.update(Sample(f"s{i}", "", int(y)), z if i % 2 else classification.compact_logits(z))
    ranks = acc.ranks
    assert ranks.dtype == np.int64 and ranks.shape == (40,)
    np.testing.assert_array_equal(ranks, classification.ranks_of_labels(logits, labels))
    out = acc.compute()
    assert all(out[f"top{k}"] == np.count_nonzero(ranks < k) / 40 for k in range(1, 6))
    assert acc.write_artifacts("unused") == []
