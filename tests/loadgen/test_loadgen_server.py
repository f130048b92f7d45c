"""zooinfer.loadgen.server: the Server search's bisection against sessions of known latency."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from zooinfer import loadgen

from conftest import make_recipe
from loadgen_helpers import Sleepy


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
