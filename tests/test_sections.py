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
