"""zooinfer.compare: variants side by side, per-sample agreement, non-finite outputs named; INT8 of each model."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import tiny_recipe
from zooinfer import compare, recipes, report
from zooinfer.compare import (NONFINITE_SCORE, classification_agreement, image_ap, match_detections,
                              reid_agreement)
from zooinfer.errors import ZooinferError
from zooinfer.variants import Variant

pytest.importorskip("onnxconverter_common", reason='the variants extra: pip install -e ".[variants]"')




# ------------------------------------------------------------------------------------------------ agreement maths
def test_classification_agreement():
    ref = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -1.0])
    same = classification_agreement(ref, ref.copy())
    assert not same["top1_changed"] and same["top5_overlap"] == 5 and same["disagreement"] == 0
    swapped = ref.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    s = classification_agreement(ref, swapped)
    assert s["top1_changed"] and s["top5_overlap"] == 5 and not s["top5_changed"] and s["max_abs_logit_err"] == 1
    out = ref.copy()
    out[4] = -5.0  # class 4 leaves the top-5, class 5 enters
    o = classification_agreement(ref, out)
    assert not o["top1_changed"] and o["top5_overlap"] == 4 and o["top5_changed"]
    assert s["disagreement"] > o["disagreement"] > same["disagreement"]
    nan = ref.copy()
    nan[2] = np.nan
    assert classification_agreement(ref, nan)["disagreement"] == NONFINITE_SCORE


def test_match_detections():
    ref = np.array([[10, 10, 50, 50, 0.9, 1], [100, 100, 40, 40, 0.8, 2], [200, 10, 20, 20, 0.1, 3]], np.float32)
    assert match_detections(ref, ref)["agreement"] == 1.0
    var = ref.copy()
    var[0, 0] += 10  # IoU 40/60 x ... < 0.9: lost
    var[1, 5] = 7  # other class: lost
    var = np.vstack([var, [[300, 300, 30, 30, 0.95, 1]]])  # a new confident detection
    m = match_detections(ref, var, score_threshold=0.3, iou=0.9)
    assert (m["n_ref"], m["matched"], m["new"]) == (2, 0, 3)
    assert m["agreement"] == 0.0 and m["disagreement"] == 1.0
    # a score that merely crosses the threshold still matches its reference detection
    var2 = ref.copy()
    var2[1, 4] = 0.25
    m2 = match_detections(ref, var2, score_threshold=0.3)
    assert (m2["matched"], m2["new"], m2["agreement"]) == (2, 0, 1.0)
    assert m2["max_score_err"] == pytest.approx(0.55)


def test_image_ap():
    gt = np.array([[10, 10, 50, 50], [100, 100, 40, 40]], float)
    perfect = np.array([[10, 10, 50, 50, 0.9, 0], [100, 100, 40, 40, 0.8, 0]])
    assert image_ap(perfect, gt) == pytest.approx(1.0)
    assert image_ap(np.zeros((0, 6)), gt) == 0.0
    assert image_ap(perfect, np.zeros((0, 4))) is None
    half = image_ap(perfect[:1], gt)
    assert 0.4 < half < 0.6
    # a false positive ranked first lowers AP; ranked last it does not
    fp = np.array([[400, 400, 10, 10, 0.95, 0]])
    assert image_ap(np.vstack([fp, perfect]), gt) < 1.0
    assert image_ap(np.vstack([perfect, fp * [1, 1, 1, 1, 0.01, 1]]), gt) == pytest.approx(1.0)


def test_reid_agreement():
    f = np.arange(1.0, 7.0)
    assert reid_agreement(f, 2 * f)["cosine"] == pytest.approx(1.0)
    assert reid_agreement(f, -f)["disagreement"] == pytest.approx(2.0)


# ------------------------------------------------------------------------------------------------ compare
def test_compare_variants_on_the_same_samples(tiny_onnx, tiny_model, tiny_dataset, tmp_path):
    r = tiny_recipe()
    cmp = compare.compare(r, tiny_dataset, ["torch", "onnxruntime-fp16", "onnxruntime-int8", "bins:" +
                                            str(tmp_path / "missing")], onnx_path=tiny_onnx, model=tiny_model,
                          calibration=3)
    assert [x.name for x in cmp.results] == ["onnxruntime", "torch", "onnxruntime-fp16", "onnxruntime-int8"]
    assert [s.name for s in cmp.skipped] == ["bins:" + str(tmp_path / "missing")]
    assert cmp.samples == [f"img{i}" for i in range(7)]
    for res in cmp.results[1:]:
        assert [row["sample"] for row in res.per_sample] == cmp.samples
        assert res.summary["n"] == 7 and res.summary["top1_agreement"] is not None
        assert res.throughput > 0 and res.delta == {"n": 0.0}
    torch_rows = cmp.result("torch").per_sample
    assert max(row["max_abs_logit_err"] for row in torch_rows) < 1e-4
    int8 = cmp.result("onnxruntime-int8")
    assert int8.info["calibration_keys"] == ["img0", "img3", "img6"]
    assert max(row["max_abs_logit_err"] for row in int8.per_sample) > 0  # quantisation changes the logits
    worst = cmp.worst("onnxruntime-int8", 3)
    assert len(worst) == 3 and worst[0]["disagreement"] >= worst[1]["disagreement"] >= worst[2]["disagreement"]
    assert cmp.worst_sample("onnxruntime-int8") == worst[0]["sample"]
    rows = cmp.rows()
    assert [row["variant"] for row in rows][-1].startswith("bins:") and "reason" in rows[-1]
    md = cmp.markdown()
    assert "img0, img3, img6" in md and "| onnxruntime-int8 |" in md
    doc = json.loads(json.dumps(report._jsonable(cmp.to_dict())))
    assert [v["name"] for v in doc["variants"]][0] == "onnxruntime" and doc["skipped"][0]["reason"]


def test_unknown_variant_in_compare_lists_known(tiny_onnx, tiny_model, tiny_dataset):
    with pytest.raises(ZooinferError, match="known: .*onnxruntime-int8"):
        compare.compare(tiny_recipe(), tiny_dataset, ["onnxruntime-fp8"], onnx_path=tiny_onnx, model=tiny_model)


class Inject:
    """A session that returns the wrapped session's outputs with one value replaced on its ``at``-th call."""

    def __init__(self, inner, at: dict[int, tuple[int, float]]):
        self.inner, self.at, self.calls = inner, at, 0
        self.name, self.device, self.input_shape = "inject", "cpu", inner.input_shape

    def run(self, batch):
        outs = [o.copy() for o in self.inner.run(batch)]
        if self.calls in self.at:
            k, value = self.at[self.calls]
            outs[k].reshape(-1)[1] = value
        self.calls += 1
        return outs


def test_injected_nan_and_inf_are_named(tiny_onnx, tiny_model, tiny_dataset):
    from zooinfer.backends import open_session

    base = open_session("onnxruntime", onnx_path=tiny_onnx)
    # call 0 is compare's warm-up; with bs=1 call k + 1 is sample k
    v = Variant("nan-injected", "onnxruntime", "fp32", Inject(base, {3: (1, np.nan), 6: (0, np.inf)}), tiny_onnx)
    cmp = compare.compare(tiny_recipe(), tiny_dataset, [v], onnx_path=tiny_onnx, model=tiny_model, bs=1)
    found = {(x.variant, x.output, x.sample): x for x in cmp.nonfinite}
    assert set(found) == {("nan-injected", "maps", "img2"), ("nan-injected", "logits", "img5")}
    assert found[("nan-injected", "maps", "img2")].nan == 1
    assert found[("nan-injected", "logits", "img5")].posinf == 1
    assert "output 'maps'" in found[("nan-injected", "maps", "img2")].message()
    res = cmp.result("nan-injected")
    assert res.summary["nonfinite_samples"] == 2
    assert {w["sample"] for w in cmp.worst("nan-injected", 2)} == {"img2", "img5"}
    assert all(w["disagreement"] == NONFINITE_SCORE for w in cmp.worst("nan-injected", 2))
    assert not cmp.result("onnxruntime").nonfinite
    assert "variant 'nan-injected', output 'logits', sample 'img5'" in cmp.markdown()


def test_bins_results_are_one_more_variant(tiny_onnx, tiny_model, tiny_dataset, tmp_path):
    """Result files as ais_bench writes them (``<key>_<k>.bin``), here made from the fp32 run: perfect agreement;
    one file damaged with a NaN is named."""
    from zooinfer.backends import open_session

    r = tiny_recipe()
    sess = open_session("onnxruntime", onnx_path=tiny_onnx)
    out = tmp_path / "result"
    out.mkdir()
    for s in tiny_dataset:
        for k, o in enumerate(sess.run(r.preprocess(s.path)[0][0][None])):
            arr = o[0].copy()
            if s.key == "img4" and k == 0:
                arr[0] = np.nan
            arr.astype(np.float32).tofile(out / f"{s.key}_{k}.bin")
    cmp = compare.compare(r, tiny_dataset, [f"bins:{out}"], onnx_path=tiny_onnx, model=tiny_model)
    res = cmp.result(f"bins:{out}")
    ok = [row for row in res.per_sample if not row["nonfinite"]]
    assert len(ok) == 6 and max(row["max_abs_logit_err"] for row in ok) == 0.0
    assert [(x.output, x.sample) for x in res.nonfinite] == [("logits", "img4")]


# ------------------------------------------------------------------------------------------------ the five models
#: (model, recipe options, limit, calibration images): the heavy two on one image (CI time), the rest on all
REAL = [("dpn131", {}, None, 2), ("ssd_resnet34", {}, None, 2), ("pcb", {}, None, 2),
        pytest.param("m2det", {}, 1, 1, marks=pytest.mark.slow),
        pytest.param("pyramidbox", {"canvas": 256}, 1, 1, marks=pytest.mark.slow)]


@pytest.mark.parametrize("name,options,limit,calibration", REAL)
def test_int8_variant_of_each_model_reports_per_sample_agreement(name, options, limit, calibration):
    r = recipes.get(name, **options)
    ds = r.open_dataset(None)
    cmp = compare.compare(r, ds, ["onnxruntime-int8"], limit=limit, calibration=calibration)
    ref, int8 = cmp.result("onnxruntime"), cmp.result("onnxruntime-int8")
    n = len(ds.subset(limit))
    assert ref.n_done == int8.n_done == n
    assert [row["sample"] for row in int8.per_sample] == [s.key for s in ds.subset(limit)]
    assert len(int8.info["calibration_keys"]) == min(calibration, len(ds))
    s = int8.summary
    assert s["n"] == n
    key = {"classification": "top1_agreement", "detection": "mean_agreement", "face_detection": "mean_agreement",
           "reid": "mean_cosine"}[r.task]
    assert s[key] is not None and 0.0 <= s[key] <= 1.0 + 1e-9
    if r.task == "reid":
        assert any(row.get("rank1_changed") is not None for row in int8.per_sample)
    assert set(int8.delta) >= set(r.headline) & set(ref.metrics)
    print(f"\n{name}: {report.markdown_table(cmp.rows())}")
