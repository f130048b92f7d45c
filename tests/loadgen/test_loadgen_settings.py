"""zooinfer.loadgen.settings: scenario names, LoadSettings' checks, the lazy ``mlperf_loadgen`` import."""
from __future__ import annotations

import subprocess
import sys

import pytest

from zooinfer import loadgen
from zooinfer.errors import BackendError, ZooinferError

from conftest import make_recipe
from loadgen_helpers import Sleepy


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
