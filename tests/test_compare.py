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


def _write_bins(folder, recipe, dataset, onnx, *, leave_out=(), wrong_size=()):
    """``<key>_<k>.bin`` result files of the fp32 run, as ais_bench writes them; ``leave_out``: samples without
    files; ``wrong_size``: samples whose first file is cut short."""
    from zooinfer.backends import open_session

    sess = open_session("onnxruntime", onnx_path=onnx)
    folder.mkdir()
    for s in dataset:
        if s.key in leave_out:
            continue
        for k, o in enumerate(sess.run(recipe.preprocess(s.path)[0][0][None])):
            data = o[0].astype(np.float32).tobytes()
            (folder / f"{s.key}_{k}.bin").write_bytes(data[:-4] if s.key in wrong_size and k == 0 else data)
    return folder


def test_a_sample_missing_from_a_bins_folder_is_named_and_every_variant_scored_without_it(
        tiny_onnx, tiny_model, tiny_dataset, tmp_path):
    r = tiny_recipe()
    out = _write_bins(tmp_path / "result", r, tiny_dataset, tiny_onnx, leave_out={"img3"})
    name = f"bins:{out}"
    cmp = compare.compare(r, tiny_dataset, ["torch", name], onnx_path=tiny_onnx, model=tiny_model)
    assert cmp.samples == ["img0", "img1", "img2", "img4", "img5", "img6"]
    for res in cmp.results:  # every metric on the same six samples: no delta from a different sample set
        assert res.metrics == {"n": 6.0}, res.name
        assert res.name == "onnxruntime" or res.delta == {"n": 0.0}
    bins = cmp.result(name)
    assert list(bins.skipped_samples) == ["img3"] and "no result file img3_0" in bins.skipped_samples["img3"]
    assert cmp.result("torch").skipped_samples == {} and cmp.result("onnxruntime").skipped_samples == {}
    assert [row["sample"] for row in bins.per_sample] == cmp.samples
    rows = {row["variant"]: row for row in cmp.rows()}
    assert rows[name]["skipped"] == 1 and rows[name]["skipped samples"] == "img3"
    assert rows["torch"]["skipped"] == 0 and rows["torch"]["skipped samples"] == ""
    doc = json.loads(json.dumps(report._jsonable(cmp.to_dict())))
    assert doc["n_samples"] == 6 and doc["excluded_samples"] == {"count": 1, "first": ["img3"]}
    entry = next(v for v in doc["variants"] if v["name"] == name)
    assert entry["skipped_samples"]["count"] == 1
    assert entry["skipped_samples"]["first"][0]["sample"] == "img3"
    assert "img3" in cmp.markdown() and "6 samples" in cmp.markdown()


def test_named_samples_are_the_first_ten_and_a_count():
    assert compare.name_samples([]) == ""
    assert compare.name_samples(["a", "b"]) == "a, b"
    assert compare.name_samples([f"s{i}" for i in range(13)]) == "s0, s1, s2, s3, s4, s5, s6, s7, s8, s9 (+3 more)"


def test_an_unreadable_bins_file_skips_its_sample_not_the_run(tiny_onnx, tiny_model, tiny_dataset, tmp_path):
    r = tiny_recipe()
    out = _write_bins(tmp_path / "result", r, tiny_dataset, tiny_onnx, wrong_size={"img2"})
    cmp = compare.compare(r, tiny_dataset, [f"bins:{out}"], onnx_path=tiny_onnx, model=tiny_model)
    bins = cmp.result(f"bins:{out}")
    assert list(bins.skipped_samples) == ["img2"] and "bytes, expected" in bins.skipped_samples["img2"]
    assert "img2" not in cmp.samples and all(res.metrics == {"n": 6.0} for res in cmp.results)


def test_a_sample_a_run_skips_is_left_out_of_every_variant(tiny_onnx, tiny_model, tiny_dataset, tmp_path):
    """An unreadable text result is found only when read: the variants that scored it run again without it."""
    r = tiny_recipe()
    out = _write_bins(tmp_path / "result", r, tiny_dataset, tiny_onnx)
    (out / "img5_0.bin").unlink()
    (out / "img5_0.txt").write_text("not numbers")
    cmp = compare.compare(r, tiny_dataset, ["torch", f"bins:{out}"], onnx_path=tiny_onnx, model=tiny_model)
    assert "img5" not in cmp.samples and cmp.excluded == ["img5"]
    assert all(res.metrics == {"n": 6.0} for res in cmp.results)
    assert list(cmp.result(f"bins:{out}").skipped_samples) == ["img5"]
    assert "ValueError" in cmp.result(f"bins:{out}").skipped_samples["img5"]
    assert [row["sample"] for row in cmp.result("torch").per_sample] == cmp.samples


def test_a_malformed_bins_folder_is_a_skipped_variant_not_a_crash(tiny_onnx, tiny_model, tiny_dataset, tmp_path):
    (tmp_path / "empty").mkdir()
    cmp = compare.compare(tiny_recipe(), tiny_dataset, [f"bins:{tmp_path / 'empty'}"], onnx_path=tiny_onnx,
                          model=tiny_model)
    assert [x.name for x in cmp.results] == ["onnxruntime"] and len(cmp.samples) == 7
    assert "holds no result files" in cmp.skipped[0].reason
    other = tmp_path / "other-names"  # result files, but named for no sample of this dataset
    other.mkdir()
    (other / "cat_0.bin").write_bytes(b"\0" * 16)
    cmp = compare.compare(tiny_recipe(), tiny_dataset, ["torch", f"bins:{other}"], onnx_path=tiny_onnx,
                          model=tiny_model)
    assert [x.name for x in cmp.results] == ["onnxruntime", "torch"] and len(cmp.samples) == 7
    assert "holds none of the 7 samples: no result file img0_0" in cmp.skipped[0].reason


# ------------------------------------------------------------------------------------------------ every model
#: (model, recipe options, limit, calibration images) of every registered model: the heavy ones (``bench.heavy``) on
#: one image at their notebook's option defaults (CI time) and marked slow, the rest on the whole embedded sample
REAL = [pytest.param(name, {o: v for o, v, _ in (r.notebook.extra if r.notebook else ())},
                     *((1, 1) if r.bench.heavy else (None, 2)), marks=[pytest.mark.slow] if r.bench.heavy else [])
        for name, r in ((name, recipes.get(name)) for name in recipes.NAMES)]


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
