"""MLPerf LoadGen scenarios (zooinfer.loadgen) through the real mlcommons-loadgen library, with short durations.

Sessions whose latency is known (they sleep a fixed time per batch) check the verdicts, the batching and the Server
search; two real models on their embedded samples check that LoadGen's accuracy mode gives the normal run's metric.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from zooinfer import loadgen, pipeline
from zooinfer.backends import open_session
from zooinfer.datasets.base import ImageDataset, Sample
from zooinfer.errors import BackendError, ZooinferError

from conftest import make_recipe

SHORT = dict(min_duration_ms=300, max_duration_ms=10_000, min_query_count=8)


class Sleepy:
    """A session that takes ``seconds`` per batch whatever its size (capacity: bs / seconds samples/s) and returns
    outputs derived from its input, so results can be traced back to samples."""

    name, device = "sleepy", "cpu"

    def __init__(self, seconds: float, fixed: int | None = None):
        self.seconds = seconds
        self.input_shape = (fixed, 3, 8, 8)
        self.calls: list[int] = []

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        time.sleep(self.seconds)
        self.calls.append(batch.shape[0])
        n = batch.shape[0]
        m = batch.reshape(n, -1).mean(1)
        return [np.stack([m, -m, 2 * m, m * m], 1).astype(np.float32), np.zeros((n, 2, 4), np.float32)]


class Recording:
    """Wraps a metric accumulator and records (key, prediction) in arrival order."""

    def __init__(self, inner):
        self.inner, self.items = inner, []

    def update(self, sample, prediction) -> None:
        self.items.append((sample.key, prediction))
        self.inner.update(sample, prediction)

    def compute(self) -> dict:
        return self.inner.compute()


def recording(recipe):
    return dataclasses.replace(recipe, new_accumulator=lambda ds: Recording(recipe.new_accumulator(ds)))


def _assert_same_predictions(a: list, b: list, exact: bool = True, compact=None) -> None:
    """``a``: LoadGen's predictions, in the recipe's compact form where it has one; ``b``: the pipeline's."""
    assert [k for k, _ in a] == [k for k, _ in b]
    for (_, p), (_, q) in zip(a, b):
        pa, pb = _flat(p), _flat(compact(q) if compact else q)
        assert len(pa) == len(pb)
        for x, y in zip(pa, pb):
            if exact:
                np.testing.assert_array_equal(x, y)
            else:
                np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4)


def _flat(p) -> list[np.ndarray]:
    if isinstance(p, np.ndarray):
        return [p]
    if isinstance(p, (list, tuple)):
        return [a for item in p for a in _flat(item)]
    if isinstance(p, dict):
        return [np.asarray(v, dtype=object if isinstance(v, str) else None) for _, v in sorted(p.items())]
    if dataclasses.is_dataclass(p):
        return [np.asarray(v) for v in dataclasses.astuple(p)]
    return [np.asarray(p)]


# ------------------------------------------------------------------------------------------------ bad input
def test_scenario_names_and_unknown_name_lists_the_valid_ones(tiny_dataset):
    assert loadgen.scenario_name("single_stream") == "SingleStream"
    assert loadgen.scenario_name("OFFLINE") == "Offline"
    assert loadgen.scenario_name("server") == "Server"
    with pytest.raises(ZooinferError, match="unknown LoadGen scenario 'MultiStreem'; valid scenarios: "
                                            "SingleStream, Offline, Server"):
        loadgen.scenario_name("MultiStreem")
    with pytest.raises(ZooinferError, match="valid scenarios: SingleStream, Offline, Server"):
        loadgen.run_scenarios(make_recipe(), tiny_dataset, Sleepy(0.0), scenarios=["Offline", "Batch"])


def test_bad_settings_are_named():
    with pytest.raises(ZooinferError, match=r"min_query_count=0 .*latency_bound_ms=-5"):
        loadgen.LoadSettings(min_query_count=0, latency_bound_ms=-5).validate()
    with pytest.raises(ZooinferError, match="max_duration_ms=100"):
        loadgen.LoadSettings(min_duration_ms=500, max_duration_ms=100).validate()


def test_missing_loadgen_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlperf_loadgen", None)  # makes ``import mlperf_loadgen`` raise ImportError
    assert not loadgen.available()
    with pytest.raises(ZooinferError, match=r'pip install "zooinfer\[loadgen\]"'):
        loadgen._loadgen()


def test_importing_zooinfer_does_not_import_loadgen():
    code = ("import sys, zooinfer, zooinfer.loadgen, zooinfer.pipeline, zooinfer.evaluation; "
            "assert 'mlperf_loadgen' not in sys.modules, 'imported eagerly'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_static_batch_size_must_match(tiny_dataset):
    with pytest.raises(BackendError, match="static batch size of 4; run LoadGen with bs=4"):
        loadgen.run_scenarios(make_recipe(), tiny_dataset, Sleepy(0.0, fixed=4), bs=2, scenarios=["Offline"])


# ------------------------------------------------------------------------------------------------ verdicts
def test_each_scenario_reports_loadgens_verdict_and_reason(tiny_dataset, tmp_path):
    recipe, sess = make_recipe(), Sleepy(0.005)
    # SingleStream: 64 queries are what LoadGen's early stopping needs for its p90 -> VALID
    ss = loadgen.run_scenario(recipe, tiny_dataset, sess, "SingleStream", bs=1, log_dir=tmp_path / "ss",
                              settings=loadgen.LoadSettings(**{**SHORT, "min_query_count": 64}))
    assert ss.validity == "VALID" and ss.reason == "" and ss.checks["early_stopping_met"] is True
    assert ss.figures["queries"] >= 64 and ss.figures["latency_ms_p50"] >= 5.0  # the session sleeps 5 ms
    assert ss.figures["latency_ms_p50"] <= ss.figures["latency_ms_p90"] <= ss.figures["latency_ms_p99"]
    assert set(sess.calls) == {1}  # one sample at a time

    # Offline told to expect 1 sample/s: LoadGen issues ~1 sample, the run is shorter than min_duration -> INVALID
    off = loadgen.run_scenario(recipe, tiny_dataset, sess, "Offline", bs=4, log_dir=tmp_path / "off",
                               settings=loadgen.LoadSettings(**SHORT, offline_expected_qps=1.0))
    assert off.validity == "INVALID" and off.checks["min_duration_met"] is False
    assert "min duration (300 ms) not met" in off.reason and "Increase expected QPS" in off.reason

    # Server for a few hundred ms: LoadGen's early stopping needs ~460 queries at p99 -> INVALID, with its text
    srv = loadgen.run_scenario(recipe, tiny_dataset, sess, "Server", bs=4, log_dir=tmp_path / "srv",
                               settings=loadgen.LoadSettings(**SHORT, target_qps=50, latency_bound_ms=500))
    assert srv.validity == "INVALID" and srv.checks["perf_constraints_met"] is True
    assert "early stopping not satisfied" in srv.reason and "Would need to run at least" in srv.reason
    assert srv.settings["target_qps"] == 50 and srv.settings["latency_bound_ms"] == 500
    assert srv.settings["min_duration_ms"] == 300 and srv.settings["min_query_count"] == 8

    for res in (ss, off, srv):  # LoadGen's own files, and its "Result is" line agrees with the parsed verdict
        d = Path(res.log_dir)
        assert (d / "mlperf_log_detail.txt").is_file()
        summary = loadgen.parse_summary(d / "mlperf_log_summary.txt")
        assert summary["result"] == res.validity
        assert res.settings["performance_sample_count"] == len(tiny_dataset)


def test_offline_batches_up_to_bs_and_calibrates_its_expected_rate(tiny_dataset, tmp_path):
    sess = Sleepy(0.01)
    res = loadgen.run_scenario(make_recipe(), tiny_dataset, sess, "Offline", bs=4, log_dir=tmp_path,
                               settings=loadgen.LoadSettings(**SHORT))
    assert max(sess.calls) <= 4 and res.figures["mean_rows_per_batch"] > 3.5  # full batches but the last
    assert res.validity == "VALID", res.reason  # the calibrated (or, once, LoadGen-measured) rate fills 300 ms
    assert res.figures["samples"] >= 4 and res.figures["samples_per_s"] <= 4 / 0.01 * 1.02  # sleep bounds it


def test_static_batch_session_gets_padded_batches(tiny_dataset, tmp_path):
    sess = Sleepy(0.0, fixed=4)
    run = loadgen.run_scenarios(make_recipe(), tiny_dataset, sess, bs=4, scenarios=["Offline"], accuracy=True,
                                log_dir=tmp_path, settings=loadgen.LoadSettings(**SHORT))
    assert set(sess.calls) == {4}
    assert run.accuracy.n_answered == len(tiny_dataset) and run.accuracy.each_sample_once


def test_session_failure_is_raised_not_hung(tiny_dataset, tmp_path):
    class Broken(Sleepy):
        def run(self, batch):
            raise RuntimeError("device lost")

    with pytest.raises(ZooinferError, match="failed during the LoadGen Offline run: RuntimeError: device lost"):
        loadgen.run_scenario(make_recipe(), tiny_dataset, Broken(0.0), "Offline", bs=2, log_dir=tmp_path,
                             settings=loadgen.LoadSettings(**SHORT, offline_expected_qps=50))


# ------------------------------------------------------------------------------------------------ Server search
def test_server_search_converges_near_the_known_capacity(tiny_dataset, tmp_path):
    """20 ms per sample (bs 1): 50 samples/s at most. With a 100 ms p99 bound (5x the service time) the highest
    rate that meets it lies below 50 QPS and well above a third of it (an M/D/1 queue keeps its p99 under 5 service
    times up to roughly 70% load); tolerances are generous because the runs are short and the machine is shared."""
    capacity = 1 / 0.02
    sess = Sleepy(0.02)
    s = loadgen.LoadSettings(min_duration_ms=1000, max_duration_ms=10_000, min_query_count=10, latency_bound_ms=100,
                             search_tolerance=0.1, max_probes=7)
    run = loadgen.run_scenarios(make_recipe(), tiny_dataset, sess, bs=1, scenarios=["Offline", "Server"],
                                settings=s, log_dir=tmp_path)
    offline = run.results["Offline"].figures["samples_per_s"]
    assert 0.5 * capacity <= offline <= 1.02 * capacity
    search = run.server
    assert search.qps is not None, search.statement
    assert 0.35 * capacity <= search.qps <= 1.02 * capacity, search.probes
    assert search.probes[0]["target_qps"] == pytest.approx(offline, rel=1e-3)  # starts at the Offline rate
    assert search.ceiling_qps is None or search.ceiling_qps > search.qps
    assert 2 <= len(search.probes) <= 7
    for p in search.probes:  # the criterion is LoadGen's own: its p99 figure against the bound
        assert p["meets_bound"] == (p["latency_ms_p99"] <= 100.0), p
        assert Path(p["log_dir"], "mlperf_log_summary.txt").is_file()
    assert all(not p["meets_bound"] for p in search.probes if p["target_qps"] > search.qps)
    assert f"{search.qps:.4g} QPS is the highest probed target" in search.statement
    row = next(r for r in run.rows if r["scenario"] == "Server")
    assert row["server_qps_at_bound"] == search.qps and row["latency_bound_ms"] == 100.0
    fig = loadgen.plot_server_search(search, tmp_path / "server.png", title="sleepy")
    assert (tmp_path / "server.png").stat().st_size > 0 and fig is not None
    table = loadgen.probe_table(search)
    assert table.count("\n") == len(search.probes) + 1


def test_a_bound_no_rate_can_meet_ends_with_the_best_p99_reached(tiny_dataset, tmp_path):
    sess = Sleepy(0.02)  # every answer takes >= 20 ms: a 10 ms bound cannot be met at any rate
    s = loadgen.LoadSettings(min_duration_ms=300, min_query_count=5, max_probes=3, target_qps=40)
    search = loadgen.server_search(make_recipe(), tiny_dataset, sess, bs=1, latency_bound_ms=10, settings=s,
                                   log_dir=tmp_path)
    assert search.qps is None and search.best is None and len(search.probes) == 3
    assert [p["target_qps"] for p in search.probes] == [40, 20, 10]
    best = min(p["latency_ms_p99"] for p in search.probes)
    assert best >= 20.0
    assert "no target QPS met the p99 latency bound of 10.0 ms" in search.statement
    assert f"the best p99 latency reached was {best:.1f} ms" in search.statement
    run = loadgen.run_scenarios(make_recipe(), tiny_dataset, sess, bs=1, scenarios=["Server"], log_dir=tmp_path,
                                settings=dataclasses.replace(s, latency_bound_ms=10, max_probes=1))
    assert run.rows[0]["result"] == "no QPS meets p99 <= 10 ms" and run.server.qps is None


# ------------------------------------------------------------------------------------------------ accuracy mode
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
