"""MLPerf's compliance audits through LoadGen's audit.config (zooinfer.loadgen.audit): TEST01 (the responses of a
performance run are accuracy mode's), TEST04 (no caching), TEST05 (other seeds); each PASS / FAIL in the document,
audit.config read from the audit's own folder inside the log folder."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from zooinfer import loadgen
from zooinfer.errors import ZooinferError
from zooinfer.loadgen import audit

from conftest import make_recipe
from loadgen_helpers import SHORT, Sleepy


class LastRowCache(Sleepy):
    """Sleeps per row unless the row is the one it answered last (a one-entry cache): as fast as it can be when
    LoadGen issues one sample over and over (TEST04), slow otherwise."""

    def __init__(self, seconds: float):
        super().__init__(seconds)
        self.last = None

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        for row in batch:
            key = row.tobytes()
            if key != self.last:
                time.sleep(self.seconds)
            self.last = key
        n = batch.shape[0]
        m = batch.reshape(n, -1).mean(1)
        return [np.stack([m, -m, 2 * m, m * m], 1).astype(np.float32), np.zeros((n, 2, 4), np.float32)]


def test_the_three_audits_pass_on_an_honest_session(tiny_dataset, tmp_path):
    cwd = os.getcwd()
    run = loadgen.run_scenarios(make_recipe(), tiny_dataset, Sleepy(0.002), bs=1, scenarios=["Offline"],
                                settings=loadgen.LoadSettings(**SHORT), accuracy=True, log_dir=tmp_path / "loadgen",
                                audits=["TEST01", "test04", "TEST05"])
    assert os.getcwd() == cwd  # the working directory is put back
    assert set(run.audits) == {"TEST01", "TEST04", "TEST05"}
    assert run.audits["TEST01"]["result"] == "PASS", run.audits["TEST01"]
    assert run.audits["TEST01"]["rows"][0]["logged"] > 0
    for test in ("TEST04", "TEST05"):  # LoadGen applied each audit's settings (else the row says so and FAILs)
        assert "audit.config" not in run.audits[test]["rows"][0]["note"]
    folder = tmp_path / "loadgen" / "audits"
    assert "performance_issue_same = 1" in (folder / "TEST04" / "audit.config").read_text()
    assert (folder / "TEST05" / "Offline" / "mlperf_log_detail.txt").is_file()
    doc = run.document(relative_to=tmp_path)
    assert doc["audits"]["TEST04"]["log_dir"] == "loadgen/audits/TEST04"
    assert {r["audit"] for r in audit.audit_rows(doc["audits"])} == {"TEST01", "TEST04", "TEST05"}


def test_test04_fails_a_session_that_caches(tiny_dataset, tmp_path):
    run = loadgen.run_scenarios(make_recipe(), tiny_dataset, LastRowCache(0.004), bs=1, scenarios=["SingleStream"],
                                settings=loadgen.LoadSettings(**SHORT), log_dir=tmp_path / "loadgen",
                                audits=["TEST04"])
    row = run.audits["TEST04"]["rows"][0]
    assert run.audits["TEST04"]["result"] == "FAIL" and row["speed_ratio"] > 1.5, row
    assert "audit TEST04: FAIL (SingleStream: " in audit.problems(run.document())[-1]


def test_test01_fails_responses_other_than_accuracy_modes(tiny_dataset, tmp_path):
    h = loadgen.Harness(make_recipe(), tiny_dataset, Sleepy(0.001), bs=2, settings=loadgen.LoadSettings(**SHORT),
                        log_dir=tmp_path / "loadgen")
    try:
        results = {"Offline": h.run("Offline", expected_qps=500)}
        wrong = {i: [np.full(4, 9.0, np.float32), np.zeros((2, 4), np.float32)] for i in range(len(tiny_dataset))}
        doc = audit.run_audits(h, results, ["TEST01"], accuracy=wrong)
    finally:
        h.close()
    row = doc["TEST01"]["rows"][0]
    assert doc["TEST01"]["result"] == "FAIL" and row["mismatched"] == row["logged"] > 0
    assert "sample " in row["note"] and "top-1 0 -> " in row["note"]


def test_bad_audit_input_is_refused_before_any_run(tiny_dataset):
    with pytest.raises(ZooinferError, match="unknown LoadGen audit 'TEST02'; valid audits: TEST01, TEST04, TEST05"):
        loadgen.run_scenarios(make_recipe(), tiny_dataset, Sleepy(0.0), scenarios=["Offline"], audits=["TEST02"])
    with pytest.raises(ZooinferError, match="the audits rerun the LoadGen scenarios: give scenarios too"):
        loadgen.run_scenarios(make_recipe(), tiny_dataset, Sleepy(0.0), scenarios=[], accuracy=True,
                              audits=["TEST01"])


def test_predictions_travel_as_bytes_and_back():
    from zooinfer.metrics.classification import compact_logits

    p = compact_logits(np.arange(10, dtype=np.float32))
    q = audit.decode_prediction(audit.encode_prediction(p))
    assert np.array_equal(q.classes, p.classes) and q.n_classes == 10


def test_strict_problems_name_invalid_runs_and_failed_audits():
    doc = {"scenarios": {"Offline": {"validity": "INVALID", "reason": "min duration not met"},
                         "SingleStream": {"validity": "VALID"}},
           "failures": {"Server": "refused"},
           "audits": {"TEST05": {"result": "FAIL", "rows": [{"scenario": "Offline", "result": "FAIL",
                                                             "note": "1.2x"}]},
                      "TEST04": {"result": "PASS", "rows": []}}}
    assert audit.problems(doc) == ["LoadGen Offline: INVALID (min duration not met)", "LoadGen Server: FAILED "
                                   "(refused)", "audit TEST05: FAIL (Offline: 1.2x)"]
    assert audit.problems(None) == [] and audit.problems({"failed": "no LoadGen"}) == [
        "Under load did not run: no LoadGen"]
