"""zooinfer.loadgen.suite: where LoadGen's logs go (the given folder, else a temporary one that is removed), paths in
the document relative to the run folder, and a failing scenario reported while the others still run."""
from __future__ import annotations

import tempfile

import pytest

from zooinfer import loadgen
from zooinfer.errors import BackendError, ZooinferError

from conftest import make_recipe
from loadgen_helpers import SHORT, Sleepy


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """The system temporary folder, redirected to an empty folder of this test (what it holds after is ours)."""
    tmp = tmp_path / "system-tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def test_without_a_log_dir_nothing_is_left_behind(tiny_dataset, private_tmp):
    settings = loadgen.LoadSettings(**SHORT, offline_expected_qps=200)
    run = loadgen.run_scenarios(make_recipe(), tiny_dataset, Sleepy(0.001), bs=2, scenarios=["Offline"],
                                settings=settings)
    assert run.results["Offline"].validity in ("VALID", "INVALID")
    assert list(private_tmp.iterdir()) == []  # LoadGen's logs went into a temporary folder, removed after the run
    assert run.log_dir is None and run.results["Offline"].log_dir is None and run.document()["log_dir"] is None
    with pytest.raises(ZooinferError, match="pass log_dir="):
        run.copy_logs(private_tmp / "x")
    single = loadgen.run_scenario(make_recipe(), tiny_dataset, Sleepy(0.001), "Offline", bs=2, settings=settings)
    assert single.log_dir is None and list(private_tmp.iterdir()) == []
    with pytest.raises(BackendError, match="static batch size of 4"):  # refused before any run: nothing left either
        loadgen.run_scenarios(make_recipe(), tiny_dataset, Sleepy(0.0, fixed=4), bs=2, scenarios=["Offline"])
    assert list(private_tmp.iterdir()) == []


def test_logs_go_under_log_dir_and_the_document_names_them_relative_to_the_run_folder(tiny_dataset, tmp_path):
    run_folder = tmp_path / ".run.partial"
    settings = loadgen.LoadSettings(**SHORT, target_qps=50, latency_bound_ms=500, max_probes=1)
    run = loadgen.run_scenarios(make_recipe(), tiny_dataset, Sleepy(0.001), bs=1, scenarios=["SingleStream", "Server"],
                                settings=settings, log_dir=run_folder / "loadgen")
    assert (run_folder / "loadgen" / "SingleStream" / "mlperf_log_summary.txt").is_file()
    doc = run.document(relative_to=run_folder)
    assert doc["log_dir"] == "loadgen"
    assert doc["scenarios"]["SingleStream"]["log_dir"] == "loadgen/SingleStream"
    assert doc["server_search"]["probes"][0]["log_dir"].startswith("loadgen/Server/probe-01")
    assert run.document()["log_dir"] == str(run_folder / "loadgen")  # absolute without relative_to


def test_a_failing_scenario_is_reported_and_the_others_still_run(tiny_dataset, tmp_path, monkeypatch):
    def refused(*args, **kwargs):
        raise ZooinferError("LoadGen refused the Server settings")

    monkeypatch.setattr(loadgen.suite, "_server_search", refused)
    run = loadgen.run_scenarios(make_recipe(), tiny_dataset, Sleepy(0.001), bs=2,
                                scenarios=["SingleStream", "Server", "Offline"], accuracy=True,
                                settings=loadgen.LoadSettings(**SHORT, offline_expected_qps=200), log_dir=tmp_path)
    assert set(run.results) == {"SingleStream", "Offline"} and run.accuracy is not None
    assert run.failures == {"Server": "LoadGen refused the Server settings"}
    failed = [r for r in run.rows if r["result"] == "FAILED"]
    assert [(r["scenario"], r["reason"]) for r in failed] == [("Server", "LoadGen refused the Server settings")]
    assert run.document()["failures"] == {"Server": "LoadGen refused the Server settings"}
    assert "| Server |" in loadgen.scenario_table(run) and "FAILED" in loadgen.scenario_table(run)
