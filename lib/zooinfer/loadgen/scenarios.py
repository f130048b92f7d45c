"""SingleStream and Offline runs (their expected latency / rate calibrated on the session when not given), and
:func:`run_scenario` for one performance run."""
from __future__ import annotations

import os

from ..errors import ZooinferError
from .harness import Harness
from .results import ScenarioResult
from .settings import LoadSettings, scenario_name


def _single_stream(h: Harness) -> ScenarioResult:
    s = h.settings
    expected = s.single_stream_expected_latency_ms
    if expected is None:  # an underestimate only makes LoadGen pre-generate more queries; an overestimate too few
        expected = 0.5 * h.calibrate()["sample_latency_ms"]
    res = h.run("SingleStream", expected_latency_ms=expected)
    res.settings["expected_latency_ms"] = expected
    return res


def _offline(h: Harness) -> ScenarioResult:
    s = h.settings
    auto = s.offline_expected_qps is None
    expected = s.offline_expected_qps or 1.25 * h.calibrate()["samples_per_s"]
    res = h.run("Offline", expected_qps=expected)
    if auto and res.checks.get("min_duration_met") is False and res.figures.get("samples_per_s"):
        # the calibration overestimated the rate (busy machine): LoadGen's own measured rate sizes the rerun
        h._say(f"  Offline ran shorter than {s.min_duration_ms} ms at expected {expected:.3g} samples/s; "
               "rerunning with LoadGen's measured rate")
        expected = 1.1 * res.figures["samples_per_s"]
        res = h.run("Offline", expected_qps=expected)
    res.settings["expected_qps"] = expected
    return res


def run_scenario(recipe, dataset, session, scenario: str, *, bs: int = 1, settings: LoadSettings | None = None,
                 log_dir: str | os.PathLike | None = None, progress: bool = False) -> ScenarioResult:
    """One performance run of ``scenario`` (SingleStream or Offline; Server needs ``settings.target_qps`` and
    ``settings.latency_bound_ms`` and runs once at that rate: use :func:`server_search` for the search)."""
    name = scenario_name(scenario)
    h = Harness(recipe, dataset, session, bs=bs, settings=settings, log_dir=log_dir, progress=progress)
    try:
        res = _run_one(h, name)
    finally:
        h.close()
    if not h.keeps_logs:  # written into a temporary folder, removed by close()
        res.log_dir = None
    return res


def _run_one(h: Harness, name: str) -> ScenarioResult:
    if name == "SingleStream":
        return _single_stream(h)
    if name == "Offline":
        return _offline(h)
    s = h.settings
    if s.target_qps is None or s.latency_bound_ms is None:
        raise ZooinferError("a single Server run needs settings.target_qps and settings.latency_bound_ms "
                            "(or use server_search)")
    return h.run("Server", target_qps=s.target_qps, latency_bound_ms=s.latency_bound_ms,
                 min_query_count=s.server_min_query_count)
