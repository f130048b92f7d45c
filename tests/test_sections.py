"""The optional report sections on a real model's embedded run: variants side by side (+ localisation) and LoadGen."""
from __future__ import annotations

import json

import pytest

from zooinfer import report, sections
from zooinfer.evaluation import Evaluation

pytest.importorskip("onnxconverter_common")


@pytest.fixture(scope="module")
def pcb_run():
    ev = Evaluation.from_parameters(dict(model="pcb", bs=4, progress=False, batch_sizes=[1]))
    ev.prepare()
    ev.export()
    ev.evaluate()
    return ev


def test_backends_and_precision_section(pcb_run, tmp_path):
    doc, figures = sections.backends_and_precision(pcb_run, ["onnxruntime-fp16"], show=False)
    text = json.dumps(report._jsonable(doc))
    assert "onnxruntime-fp16" in text and "localisation" in doc
    assert "onnxruntime-fp16" in doc["localisation"]
    report.write_json(tmp_path / "x.json", doc)  # serialisable as metrics.json is


def test_under_load_section_accuracy_mode_matches(pcb_run):
    pytest.importorskip("mlperf_loadgen")
    doc, _ = sections.under_load(pcb_run, ["SingleStream", "Offline"], show=False)
    text = json.dumps(report._jsonable(doc))
    assert "SingleStream" in text and "Offline" in text
    assert doc["accuracy_mode"]["matches_normal_run"] is True


# ------------------------------------------------------------------------------------------------ under load, fast
class _Sleepy:
    """A session taking ``seconds`` per batch, whose outputs follow its input (as tests/loadgen's)."""

    name, device, input_shape = "sleepy", "cpu", (None, 3, 8, 8)

    def __init__(self, seconds: float = 0.001):
        self.seconds = seconds

    def run(self, batch):
        import time

        import numpy as np

        time.sleep(self.seconds)
        m = batch.reshape(batch.shape[0], -1).mean(1)
        return [np.stack([m, -m, 2 * m, m * m], 1).astype(np.float32), np.zeros((len(m), 2, 4), np.float32)]


@pytest.fixture
def tiny_ev(tiny_dataset, tmp_path):
    """What sections.under_load reads of an Evaluation that has run evaluate(): recipe, samples, session, result,
    run folder (a partial one under tmp_path)."""
    from types import SimpleNamespace

    from conftest import make_recipe

    folder = report.RunDir("tiny", tmp_path / "outputs")
    return SimpleNamespace(recipe=make_recipe(), dataset=tiny_dataset, result=SimpleNamespace(metrics={"n": 7}),
                           config=SimpleNamespace(bs=2, select=lambda data: data), session_for=lambda: _Sleepy(),
                           run_folder=lambda: folder)


def test_under_load_writes_loadgen_logs_into_the_run_folder_not_tmp(tiny_ev, tmp_path, monkeypatch):
    pytest.importorskip("mlperf_loadgen")
    import tempfile

    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    doc, _ = sections.under_load(tiny_ev, ["Offline"], show=False)
    folder = tiny_ev.run_folder().path
    assert (folder / "loadgen" / "Offline" / "mlperf_log_summary.txt").is_file()
    assert (folder / "loadgen" / "Offline-accuracy" / "mlperf_log_accuracy.json").is_file()
    assert doc["log_dir"] == "loadgen" and doc["scenarios"]["Offline"]["log_dir"] == "loadgen/Offline"
    assert list(system_tmp.iterdir()) == []


def test_under_load_that_loadgen_refuses_is_reported_and_the_run_goes_on(tiny_ev, capsys):
    pytest.importorskip("mlperf_loadgen")
    doc, figures = sections.under_load(tiny_ev, ["Server"], latency_bound_ms=0, show=True)
    assert figures == []
    assert "latency_bound_ms=0" in doc["failed"] and "(ms, > 0)" in doc["failed"]
    assert doc["scenarios_requested"] == ["Server"]
    out = capsys.readouterr().out
    assert "Under load (MLPerf LoadGen) did not run" in out and "latency_bound_ms=0" in out
    report.write_json(tiny_ev.run_folder().file("metrics.json"), {"under_load": doc})


def test_backends_and_precision_that_cannot_run_is_reported_and_the_run_goes_on(tiny_onnx, tiny_model, tiny_dataset,
                                                                                 capsys):
    from types import SimpleNamespace

    from conftest import tiny_recipe

    ev = SimpleNamespace(recipe=tiny_recipe(), dataset=tiny_dataset, onnx_path=tiny_onnx, model=tiny_model,
                         config=SimpleNamespace(bs=1, select=lambda data: data, threads=None, om_path=None,
                                                device_id=0))
    doc, figures = sections.backends_and_precision(ev, ["onnxruntime-fp16"], reference="acl", show=True)
    assert figures == [] and "the reference variant 'acl' cannot run here" in doc["failed"]
    assert "Backends and precision did not run" in capsys.readouterr().out
