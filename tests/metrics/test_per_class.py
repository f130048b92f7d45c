"""Per-class breakdowns: COCO per-category AP against pycocotools' own per-category precision (computed here with
COCOeval), ImageNet per-class top-1, WIDER FACE per-event AP and Market-1501 per-camera rank-1 / mAP against the
metric run on that group alone; the deltas between two breakdowns."""
from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest

from zooinfer.datasets.base import Sample
from zooinfer.metrics import coco, per_class, reid
from zooinfer.metrics import widerface as wf
from zooinfer.metrics.classification import TopKAccumulator, compact_logits

DATA = Path(__file__).parent / "data"
COCO_GT = DATA / "coco" / "gt.json"
COCO_DETS = json.loads((DATA / "coco" / "dets.json").read_text())
WIDER_GT = DATA / "widerface" / "gt"
WIDER_PRED = {tuple(k.split("/")): np.array(v, dtype=np.float64).reshape(-1, 5)
              for k, v in json.loads((DATA / "widerface" / "predictions.json").read_text())["images"].items()}
REID = dict(np.load(DATA / "reid" / "inputs.npz"))


def _pycocotools_per_category(dets: list[dict]) -> dict[int, float]:
    """Independently of zooinfer: COCOeval run as its users do, AP per category as ``summarize`` computes AP
    (mean of precision[:, :, k, area all, maxDets 100] over the entries > -1; -1 when none)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(COCO_GT))
        ev = COCOeval(gt, gt.loadRes(copy.deepcopy(dets)), "bbox")
        ev.evaluate()
        ev.accumulate()
    p = ev.eval["precision"]
    out = {}
    for k, cat in enumerate(ev.params.catIds):
        s = p[:, :, k, 0, -1]
        out[cat] = float(np.mean(s[s > -1])) if (s > -1).any() else -1.0
    return out


def _coco_accumulator() -> coco.CocoAccumulator:
    acc = coco.CocoAccumulator(COCO_GT)
    gt = json.loads(COCO_GT.read_text())
    by_image: dict[int, list] = {}
    for d in COCO_DETS:
        by_image.setdefault(d["image_id"], []).append(d)
    for im in gt["images"]:
        acc.update(Sample(Path(im["file_name"]).stem, im["file_name"], im["id"]),
                   copy.deepcopy(by_image.get(im["id"], [])))
    return acc


def test_coco_per_category_ap_equals_pycocotools_per_category_precision():
    ref = _pycocotools_per_category(COCO_DETS)
    acc = _coco_accumulator()
    acc.compute()
    doc = acc.per_class()
    assert doc["by"] == "category" and doc["figures"] == ["AP"]
    got = {r["category_id"]: r["AP"] for r in doc["rows"]}
    assert list(got) == list(ref)  # every category of the file, in pycocotools' order
    assert sum(v > 0 for v in ref.values()) >= 2 and len(set(ref.values())) > 2  # a fixture that can tell them apart
    for cat, ap in ref.items():
        if ap == -1.0:
            assert got[cat] is None, cat
        else:
            assert got[cat] == ap, cat  # the same array, the same mean: bit-equal
    # from the per-image evaluation (what diff uses): the same figures up to summation order
    again = {r["category_id"]: r["AP"] for r in acc.per_class(acc.per_image())["rows"]}
    for cat, ap in ref.items():
        assert (again[cat] is None) if ap == -1.0 else again[cat] == pytest.approx(ap, abs=1e-12)
    names = {r["category_id"]: r["name"] for r in doc["rows"]}
    gt = json.loads(COCO_GT.read_text())
    assert names == {c["id"]: c["name"] for c in gt["categories"]}


def test_coco_per_category_n_counts_the_non_crowd_objects():
    acc = _coco_accumulator()
    acc.compute()
    gt = json.loads(COCO_GT.read_text())
    n = {r["category_id"]: r["n"] for r in acc.per_class()["rows"]}
    for c in gt["categories"]:
        assert n[c["id"]] == sum(1 for a in gt["annotations"] if a["category_id"] == c["id"] and not a["iscrowd"])


def test_imagenet_per_class_top1_from_logits_and_compact_forms():
    rng = np.random.default_rng(1)
    labels = np.array([3, 3, 3, 7, 7, 1])
    logits = rng.standard_normal((6, 10)).astype(np.float32)
    logits[[0, 1, 3], labels[[0, 1, 3]]] += 10  # 2 of 3 right for class 3, 1 of 2 for class 7, 0 of 1 for class 1
    full, compact = TopKAccumulator(), TopKAccumulator()
    for i in range(6):
        s = Sample(str(i), "", int(labels[i]))
        full.update(s, logits[i])
        compact.update(s, compact_logits(logits[i]))
    doc = full.per_class()
    assert doc == compact.per_class()
    top1 = {r["name"]: (r["top1"], r["n"]) for r in doc["rows"]}
    assert top1 == {"class 1": (0.0, 1), "class 3": (2 / 3, 3), "class 7": (0.5, 2)}
    assert [r["name"] for r in per_class.worst(doc, 2)] == ["class 1", "class 7"]
    w = full.weighted_figures(np.ones((1, 6)))
    assert w["top1"][0] == full.compute()["top1"]


def test_wider_per_event_ap_equals_the_evaluation_of_that_event_alone():
    acc = wf.WiderFaceAccumulator(WIDER_GT)
    for (ev, name), d in WIDER_PRED.items():
        acc.update(Sample(f"{ev}/{name}", "", info={"event": ev}), d)
    acc.compute()
    doc = acc.per_class()
    assert doc["by"] == "event" and doc["figures"] == list(wf.SETTINGS)
    gt = wf.load_ground_truth(WIDER_GT)
    events = sorted({ev for ev, _ in gt.images})
    assert [r["name"] for r in doc["rows"]] == events and len(events) > 1
    preds = wf._collect(acc.predictions, gt, False)
    for row in doc["rows"]:
        ones = np.array([[1 if ev == row["name"] else 0 for ev, _ in gt.images]])
        alone = wf._weighted_aps(wf._setting_parts(preds, gt, 0.5), ones, wf.THRESH_NUM)
        for s in wf.SETTINGS:
            assert row[s] == (None if np.isnan(alone[s][0]) else alone[s][0])
        assert row["n"] == sum(ev == row["name"] for ev, _ in gt.images)
    # with one event the breakdown is the evaluation itself
    one = wf.WiderFaceAccumulator(WIDER_GT, predicted_only=True)
    first = events[0]
    for (ev, name), d in WIDER_PRED.items():
        if ev == first:
            one.update(Sample(f"{ev}/{name}", "", info={"event": ev}), d)
    whole = one.compute()
    (row,) = one.per_class()["rows"]
    for s in wf.SETTINGS:
        assert row[s] == pytest.approx(whole[s], abs=1e-12) or (row[s] is None and np.isnan(whole[s]))


def test_market_per_camera_rank1_and_map_equal_the_metric_on_that_cameras_queries():
    q_pids, g_pids, q_cams, g_cams = REID["q_pids"], REID["g_pids"], REID["q_camids"], REID["g_camids"]
    acc = reid.ReidAccumulator()
    for i, f in enumerate(REID["query_feats"]):
        acc.update(Sample(f"q{i}", "", info={"split": "query", "pid": int(q_pids[i]), "camid": int(q_cams[i])}), f)
    for i, f in enumerate(REID["gallery_feats"]):
        acc.update(Sample(f"g{i}", "", (int(g_pids[i]), int(g_cams[i])), info={"split": "gallery"}), f)
    acc.compute()
    doc = acc.per_class()
    assert doc["by"] == "camera" and [r["camera"] for r in doc["rows"]] == sorted(set(q_cams.tolist()))
    dist = acc.distances()
    for row in doc["rows"]:
        rows = np.flatnonzero(q_cams == row["camera"])
        alone = reid.evaluate(dist[rows], q_pids[rows], g_pids, q_cams[rows], g_cams)
        assert row["top1"] == pytest.approx(alone["top1"], abs=1e-12)
        assert row["mAP"] == pytest.approx(alone["mAP"], abs=1e-12)
        assert row["n"] == len(rows)


def test_deltas_join_by_name_largest_change_first():
    def rows(**top1):
        return [{"name": k, "top1": v, "n": 1} for k, v in top1.items()]

    a = per_class.breakdown("class", ("top1",), rows(x=0.5, y=1.0, z=None, w=0.2))
    b = per_class.breakdown("class", ("top1",), rows(x=0.4, y=0.5, z=0.3, w=0.2))
    rows = per_class.deltas(a, b)
    assert [r["name"] for r in rows] == ["y", "x", "w"]  # z: undefined in a
    assert rows[0]["delta_top1"] == -0.5 and rows[1]["delta_top1"] == pytest.approx(-0.1)
    assert rows[2]["delta_top1"] == 0.0
    assert per_class.deltas(a, per_class.breakdown("camera", ("top1",), [])) == []
    assert per_class.deltas(None, b) == []


def test_the_report_shows_the_20_lowest_rows_in_percent(capsys):
    from zooinfer import viz

    doc = per_class.breakdown("class", ("top1", "top5"), [{"name": f"class {i}", "top1": i / 100, "top5": 1.0, "n": 1}
                                                          for i in range(30, 0, -1)])
    shown = viz.show_per_class(doc)
    assert [r["name"] for r in shown] == [f"class {i}" for i in range(1, 21)]
    assert shown[0]["top1_%"] == 1.0 and shown[0]["top5_%"] == 100.0
    assert "Per class: the 20 lowest of 30" in capsys.readouterr().out
    assert viz.show_per_class(None) == []
