"""zooinfer.loadgen.scenarios (through the real mlcommons-loadgen library, short durations): LoadGen's verdicts
and reasons, the SUT's batching and padding, a failing session raised rather than hung."""
from __future__ import annotations

from pathlib import Path

import pytest

from zooinfer import loadgen
from zooinfer.errors import ZooinferError

from conftest import make_recipe
from loadgen_helpers import SHORT, Sleepy


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
