"""The notebook's orchestration on DPN131: the Ascend result-folder path, errors, and the report folder."""
from __future__ import annotations

import json

import numpy as np
import pytest

from zooinfer import cli
from zooinfer.backends import open_session
from zooinfer.errors import ZooinferError
from zooinfer.evaluation import Evaluation


@pytest.fixture(scope="module")
def ev_ort():
    ev = Evaluation("dpn131", bs=4, limit=5, progress=False)
    ev.prepare()
    ev.export()
    ev.evaluate()
    return ev


def test_accuracy_is_flagged_not_meaningful_on_the_embedded_default(ev_ort):
    ok, why = ev_ort.meaningful()
    assert not ok and "synthetic" in why and "embedded" in why and "limit=5" in why
    assert "NOT meaningful" in ev_ort.banner()
    assert ev_ort.result.n_done == 5 and ev_ort.result.metrics["n_images"] == 5


def test_ascend_result_folder_gives_the_same_accuracy(ev_ort, tmp_path):
    """zooinfer bins -> (an NPU tool, emulated here with ONNX Runtime) -> <stem>_0.bin -> backend='bins'."""
    prep = tmp_path / "prep_bin"
    assert cli.main(["bins", "dpn131", "--out", str(prep), "--limit", "5"]) == 0
    result = tmp_path / "result" / "subdir"
    result.mkdir(parents=True)
    sess = open_session("onnxruntime", onnx_path=ev_ort.onnx_path)
    for f in sorted(prep.glob("*.bin")):
        out = sess.run(np.fromfile(f, np.float32).reshape(1, 3, 224, 224))[0]
        out.astype(np.float32).tofile(result / f"{f.stem}_0.bin")
    ev = Evaluation("dpn131", backend="bins", results_dir=str(result), limit=5, progress=False)
    ev.prepare()
    res = ev.evaluate()
    assert res.n_done == 5 and res.metrics == ev_ort.result.metrics
    assert res.backend == "bins"


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    ev = Evaluation("dpn131", weights=str(tmp_path / "dpn131-7af84be88.pth"))
    with pytest.raises(ZooinferError, match="checkpoint file not found: .*published file is dpn131-7af84be88.pth"):
        ev.prepare()


def test_missing_dataset_names_the_layout(tmp_path):
    ev = Evaluation("dpn131", data_root=str(tmp_path / "imagenet"))
    with pytest.raises(ZooinferError, match="Expected layout"):
        ev.prepare()


def test_steps_out_of_order_say_what_to_call():
    with pytest.raises(ZooinferError, match=r"call prepare\(\) first"):
        Evaluation("dpn131").export()


def test_finish_writes_a_complete_run_folder(ev_ort, tmp_path, monkeypatch):
    monkeypatch.delenv("ZOOINFER_RUN_DIR", raising=False)
    ev_ort.output_root = str(tmp_path)
    ev_ort.bench_rows = [{"backend": "onnxruntime", "bs": 4, "throughput": 4.0, "latency_ms_p50": 1000.0,
                          "latency_ms_p90": 1000.0, "latency_ms_p99": 1000.0, "cv": 0.0, "unstable": False},
                         {"backend": "torch", "bs": 4, "throughput": 2.0, "latency_ms_p50": 2000.0,
                          "latency_ms_p90": 2000.0, "latency_ms_p99": 2000.0, "cv": 0.0, "unstable": False},
                         {"backend": "onnxruntime", "bs": 8, "throughput": 3.0, "latency_ms_p50": 2667.0,
                          "latency_ms_p90": 2667.0, "latency_ms_p99": 2667.0, "cv": 0.0, "unstable": False},
                         {"backend": "torch", "bs": 8, "throughput": 9.0, "latency_ms_p50": 889.0,
                          "latency_ms_p90": 889.0, "latency_ms_p99": 889.0, "cv": 0.0, "unstable": False}]
    path = ev_ort.finish()
    assert path.parent == tmp_path / "dpn131" and not path.name.startswith(".")
    doc = json.loads((path / "metrics.json").read_text())
    assert doc["accuracy_meaningful"] is False and doc["accuracy"]["n_images"] == 5
    assert doc["published"]["reference"] == {"top1": 0.79432, "top5": 0.94574}
    assert doc["ratios"]["onnxruntime_vs_torch_bs4"] == 2.0
    assert doc["best_batch_size"] == 4 == ev_ort.best_batch()  # this run's backend, not torch's best (bs 8)
    assert doc["checkpoint"]["published_md5"] == "71e7844aa8646dc75494976c7c86241a"
    assert doc["onnx"]["parity"][0]["output"] == "class" and doc["dataset"]["evaluated"] == 5
    assert "atc --framework=5" in doc["ascend_commands"]["atc"]
    assert (path / "throughput_latency.png").stat().st_size > 1000


def test_profile_lists_operators_by_time_and_lands_in_metrics_json(ev_ort, tmp_path, monkeypatch):
    rows = ev_ort.profile(top=5, runs=1)
    assert 0 < len(rows) <= 5 and any("Conv" in r["op"] for r in rows)  # a CNN: convolutions among the top
    times = [r["ms_per_run"] for r in rows]
    assert times == sorted(times, reverse=True) and times[0] > 0 and sum(r["share"] for r in rows) <= 1.0 + 1e-9
    monkeypatch.delenv("ZOOINFER_RUN_DIR", raising=False)
    ev_ort.output_root = str(tmp_path)
    doc = json.loads((ev_ort.finish() / "metrics.json").read_text())
    assert doc["onnxruntime_profile"] == json.loads(json.dumps(rows))

