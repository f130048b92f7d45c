"""The fastest-passing table: speed-ups over fp32 at the same batch size, the fastest passing row marked."""
from __future__ import annotations

from zooinfer.tune import fastest
from zooinfer.tune.search import Predictions


def _ref(budget=0.01):
    return fastest.Reference("fp32", budget, "fp32 predictions", "classification")


def _rows(config, precision, verdict, speeds):
    judged = {"metric": "agreement with fp32", "value": 1.0, "drop": 0.0 if verdict == "PASS" else 0.2,
              "verdict": verdict}
    return fastest.rows_for(config, "onnxruntime", precision, judged,
                            [{"bs": bs, "throughput": tp} for bs, tp in speeds])


def test_the_fastest_passing_row_is_marked():
    rows = (_rows("onnxruntime fp32", "fp32", "PASS", [(1, 10.0), (8, 12.0)])
            + _rows("onnxruntime int8", "int8", "FAIL", [(1, 40.0), (8, 50.0)])
            + _rows("onnxruntime int8, 2 layer(s) fp32", "int8+fp32", "PASS", [(1, 25.0), (8, 33.0)]))
    doc = fastest.table(rows, _ref(), [{"configuration": "openvino", "reason": "pip install -e \".[openvino]\""}])
    assert doc["passed"] and doc["fastest"]["configuration"] == "onnxruntime int8, 2 layer(s) fp32"
    assert doc["fastest"]["bs"] == 8 and doc["fastest"]["speedup_vs_fp32"] == 33.0 / 12.0
    assert [r["fastest"] for r in doc["rows"]] == [False, False, False, False, False, True]
    assert doc["rows"][2]["speedup_vs_fp32"] == 4.0  # int8 bs1 over fp32 bs1
    md = fastest.markdown(doc)
    assert "**fastest passing**" in md and "Skipped `openvino`" in md and "CPU flags" in md


def test_no_passing_row():
    doc = fastest.table(_rows("onnxruntime int8", "int8", "FAIL", [(1, 40.0)]), _ref())
    assert not doc["passed"] and doc["fastest"] is None
    assert "No configuration passes" in fastest.markdown(doc)


def test_the_fp32_reference_judges_agreement():
    import numpy as np

    ref = Predictions(["a", "b"], {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0])}, {})
    same = Predictions(["a", "b"], dict(ref.compact), {})
    flipped = Predictions(["a", "b"], {"a": np.array([1.0, 0.0]), "b": np.array([1.0, 0.0])}, {})
    r = fastest.Reference("fp32", 0.01, "fp32", "classification", fp32=ref)
    assert r.judge(same)["verdict"] == "PASS" and r.judge(same)["drop"] == 0.0
    assert r.judge(flipped)["verdict"] == "FAIL" and r.judge(flipped)["drop"] == 0.5
