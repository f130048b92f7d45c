"""zooinfer.loadgen.accuracy: LoadGen's accuracy mode gives the normal run's metric (multi-view samples, unreadable
images, two real models on their embedded samples), and the whole suite on a real detector."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from zooinfer import loadgen, pipeline
from zooinfer.backends import open_session
from zooinfer.datasets.base import ImageDataset, Sample

from conftest import make_recipe
from loadgen_helpers import _assert_same_predictions, recording


def test_multi_view_samples_and_unreadable_images_match_the_pipeline(tiny_model, image_dir, tmp_path):
    (image_dir / "img9.jpg").write_bytes(b"not a jpeg")
    samples = [Sample(p.stem, str(p), int(p.stem[3:])) for p in sorted(image_dir.iterdir())]
    ds = ImageDataset("tiny", image_dir, samples)
    recipe = make_recipe(multi_view=True)  # two views per sample: rows of one batch can belong to two samples
    sess = open_session("torch", model=tiny_model)
    ref = pipeline.run(recipe, ds, sess, bs=3, progress=False)
    acc = loadgen.run_accuracy(recipe, ds, sess, bs=3, log_dir=tmp_path)
    assert acc.metrics == ref.metrics == {"n": 7}
    assert acc.n_answered == 7 and list(acc.skipped) == [7] and "img9" in ref.skipped[0][0]
    assert acc.each_sample_once  # LoadGen's accuracy log: every sample answered once (the skipped one empty)
    got, want = dict(acc.accumulator.items), dict(ref.accumulator.items)
    assert set(got) == set(want)
    for k in want:  # per sample: one output list per view, each equal to the pipeline's
        assert len(got[k]) == len(want[k]) == 2
        for view_got, view_want in zip(got[k], want[k]):
            for a, b in zip(view_got, view_want):
                np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.fixture(scope="module")
def dpn131():
    from zooinfer import export, recipes
    from zooinfer.models import build_model

    recipe = recipes.get("dpn131")
    onnx_path = export.export_onnx(recipe, build_model("dpn131"))  # cached, shared with the other tests
    return recipe, open_session("onnxruntime", onnx_path=onnx_path)


@pytest.fixture(scope="module")
def ssd():
    from zooinfer import export, recipes
    from zooinfer.models import build_model

    recipe = recipes.get("ssd_resnet34")
    onnx_path = export.export_onnx(recipe, build_model("ssd_resnet34"))
    return recipe, open_session("onnxruntime", onnx_path=onnx_path)


def test_accuracy_mode_equals_the_normal_run_classification(dpn131, tmp_path):
    recipe, sess = dpn131
    ds = recipe.open_dataset(None).subset(4)
    # synthetic weights score 0 on the real labels; relabel half the samples with the network's own top-1 so the
    # metric can tell a right answer from a wrong one (a response mapped to the wrong sample changes top-1)
    first = pipeline.run(recording(recipe), ds, sess, bs=1, progress=False)
    top1 = {k: int(np.argmax(p)) for k, p in first.accumulator.items}
    ds = dataclasses.replace(ds, samples=[dataclasses.replace(s, target=top1[s.key] if i % 2 == 0 else
                                                              (top1[s.key] + 1) % 1000) for i, s in enumerate(ds)])
    rec = recording(recipe)
    ref = pipeline.run(rec, ds, sess, bs=1, progress=False)
    assert ref.metrics["top1"] == pytest.approx(0.5)
    for bs in (1, 3):  # bs 3 over 4 samples: LoadGen's Offline order makes other batches than the pipeline's
        acc = loadgen.run_accuracy(rec, ds, sess, bs=bs, log_dir=tmp_path / f"bs{bs}")
        assert acc.metrics == ref.metrics, (bs, acc.metrics, ref.metrics)
        assert acc.each_sample_once and acc.n_answered == 4 and acc.result.mode == "AccuracyOnly"
        _assert_same_predictions(acc.accumulator.items, ref.accumulator.items, exact=bs == 1,
                                 compact=recipe.compact)


def test_accuracy_mode_equals_the_normal_run_detection_with_all_scenarios(ssd, tmp_path):
    recipe, sess = ssd
    ds = recipe.open_dataset(None).subset(4)
    rec = recording(recipe)
    ref = pipeline.run(rec, ds, sess, bs=1, progress=False)
    settings = loadgen.LoadSettings(min_duration_ms=200, max_duration_ms=5000, min_query_count=2, max_probes=2,
                                    latency_bound_ms=5000)
    run = loadgen.run_scenarios(rec, ds, sess, bs=1, settings=settings, log_dir=tmp_path / "lg", accuracy=True,
                                reference_metrics=ref.metrics)
    assert run.accuracy.metrics == ref.metrics and run.accuracy_matches() is True
    assert run.accuracy.metrics["n_images"] == len(ds) and run.accuracy.each_sample_once
    _assert_same_predictions(run.accuracy.accumulator.items, ref.accumulator.items, compact=recipe.compact)
    assert [r["scenario"] for r in run.rows] == ["SingleStream", "Offline", "Server"]
    for r in run.rows:
        assert r["result"] in ("VALID", "INVALID") and r["samples_per_s"] > 0 and r["latency_ms_p99"] > 0
        assert (r["result"] == "VALID") == (r["reason"] == "")
    doc = run.document()
    assert doc["accuracy_mode"]["matches_normal_run"] is True
    assert set(doc["scenarios"]) == {"SingleStream", "Offline", "Server"}
    assert doc["server_search"]["latency_bound_ms"] == 5000
    from zooinfer import report

    report.write_json(tmp_path / "metrics.json", {"under_load": doc})
    assert json.loads((tmp_path / "metrics.json").read_text())["under_load"]["bs"] == 1
    dest = run.copy_logs(tmp_path / "run" / "loadgen")
    assert (dest / "SingleStream" / "mlperf_log_summary.txt").is_file()
    assert (dest / "Offline-accuracy" / "mlperf_log_accuracy.json").is_file()
    table = loadgen.scenario_table(run)
    assert table.splitlines()[0].startswith("| model | backend | scenario | bs | result |")
    assert len(table.splitlines()) == 2 + 3
