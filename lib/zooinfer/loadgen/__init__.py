"""MLPerf LoadGen scenarios for any model on any backend session: SingleStream, Offline, Server.

Speed as deployments see it, measured by the standard load generator (``mlcommons-loadgen``, imported only in
``settings._loadgen`` and only when called: ``pip install "zooinfer[loadgen]"``):

- **SingleStream**: one sample at a time, the next issued when the previous answered (a camera): latency
  percentiles, LoadGen's metric is the 90th percentile (ms).
- **Offline**: every sample at once (a batch job): throughput (samples/s).
- **Server**: samples arrive one by one at Poisson times of a target rate (QPS); the result is the highest target
  QPS whose 99th-percentile latency stays under a bound the user gives (ms), found by bisection over short LoadGen
  Server runs (:func:`server_search`).

How a run is built (LoadGen's contracts):

- the **QSL** (query sample library) is the run's dataset; LoadGen's load/unload callbacks preprocess the samples it
  asks for with the recipe and hold them in memory (``performance_sample_count`` of them in performance mode, all of
  them in chunks in accuracy mode), so preprocessing is never timed;
- the **SUT** (system under test) queues the samples LoadGen issues and one worker thread runs them through the
  session in batches of up to ``bs`` rows (greedy dynamic batching: whatever is queued when the session is free, at
  most ``bs`` rows; ``bs`` counts views as in the pipeline: a sample with a mirrored second view is two rows).
  Responses are postprocessed with the recipe before they are reported complete (``LoadSettings.postprocess``): a
  deployment answers with boxes or labels, not raw tensors;
- **accuracy mode** (:func:`run_accuracy`): LoadGen issues every sample once; the postprocessed predictions are fed
  to the recipe's accumulator in dataset order, which gives the same metric as ``pipeline.run`` on the same samples.

Every LoadGen run writes its own log folder, ``<log_dir>/<scenario>/`` (``mlperf_log_summary.txt``,
``mlperf_log_detail.txt``, ...; a report section's ``log_dir`` is ``<run folder>/loadgen``; without one, a temporary
folder removed when the runs end); the verdict
(VALID/INVALID and why), the effective settings and the figures are parsed from LoadGen's detail log. Short runs are
usually INVALID for a reason LoadGen states (e.g. Server early stopping needs roughly 460 queries at the 99th
percentile): the reason is reported, the figures are still LoadGen's.

Typical use (a notebook's "Under load" section)::

    from zooinfer import loadgen
    run = loadgen.run_scenarios(recipe, dataset, session, bs=8,
                                settings=loadgen.LoadSettings(min_duration_ms=5000, latency_bound_ms=200),
                                log_dir=run_dir / "loadgen", accuracy=True, reference_metrics=result.metrics)
    report.show(loadgen.scenario_table(run.rows), "Under load (MLPerf LoadGen)")
    loadgen.plot_server_search(run.server)
    doc["under_load"] = run.document(relative_to=run_dir)   # log paths relative to the run folder

The package, one job per module (``from zooinfer.loadgen import X`` works for every name below):

- ``settings``: scenario names, :class:`LoadSettings`, the ``mlperf_loadgen`` import;
- ``results``: LoadGen's log files parsed into :class:`ScenarioResult`;
- ``sut``: the QSL (:class:`SampleStore`) and the SUT (:class:`BatchingSUT`);
- ``harness``: :class:`Harness`, one LoadGen run at a time;
- ``scenarios`` / ``server`` / ``accuracy``: SingleStream and Offline, the Server search, accuracy mode;
- ``suite``: :func:`run_scenarios` and :class:`LoadGenRun` (what a report section runs);
- ``present``: tables and the latency-vs-QPS plot; ``cli``: ``python -m zooinfer.loadgen``.
"""
from __future__ import annotations

from .accuracy import AccuracyResult, run_accuracy
from .cli import main, measure_model
from .harness import Harness
from .present import TABLE_COLUMNS, plot_server_search, probe_table, scenario_table
from .results import LATENCY_KEYS, ScenarioResult, metrics_match, parse_detail_log, parse_summary, result_from_logs
from .scenarios import run_scenario
from .server import ServerSearch, server_search
from .settings import INSTALL_HINT, SCENARIOS, LoadSettings, _loadgen, available, scenario_name  # noqa: F401
from .suite import LoadGenRun, run_scenarios
from .sut import BatchingSUT, SampleStore

__all__ = ["AccuracyResult", "BatchingSUT", "Harness", "INSTALL_HINT", "LATENCY_KEYS", "LoadGenRun", "LoadSettings",
           "SCENARIOS", "SampleStore", "ScenarioResult", "ServerSearch", "TABLE_COLUMNS", "available", "main",
           "measure_model", "metrics_match", "parse_detail_log", "parse_summary", "plot_server_search",
           "probe_table", "result_from_logs", "run_accuracy", "run_scenario", "run_scenarios", "scenario_name",
           "scenario_table", "server_search"]
