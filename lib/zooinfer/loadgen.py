"""MLPerf LoadGen scenarios for any model on any backend session: SingleStream, Offline, Server.

Speed as deployments see it, measured by the standard load generator (``mlcommons-loadgen``, imported only here and
only when called: ``pip install "zooinfer[loadgen]"``):

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
  most ``bs`` rows; ``bs`` counts views as in the pipeline: a PyramidBox sample is two rows). Responses are postprocessed
  with the recipe before they are reported complete (``LoadSettings.postprocess``): a deployment answers with boxes
  or labels, not raw tensors;
- **accuracy mode** (:func:`run_accuracy`): LoadGen issues every sample once; the postprocessed predictions are fed
  to the recipe's accumulator in dataset order, which gives the same metric as ``pipeline.run`` on the same samples.

Every LoadGen run writes its own log folder (``mlperf_log_summary.txt``, ``mlperf_log_detail.txt``, ...); the verdict
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
    doc["under_load"] = run.document()
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .backends.base import sample_outputs, static_batch
from .errors import BackendError, ZooinferError

#: the scenarios this module runs, in the order :func:`run_scenarios` runs them (Server's search starts from the
#: Offline throughput and, without an explicit bound, takes its latency bound from the SingleStream p90)
SCENARIOS = ("SingleStream", "Offline", "Server")
_ALIASES = {re.sub(r"[\s_-]", "", s).lower(): s for s in SCENARIOS}

INSTALL_HINT = 'pip install "zooinfer[loadgen]"  (the mlcommons-loadgen wheel)'


def _loadgen():
    """The ``mlperf_loadgen`` module, or a ZooinferError saying how to install it."""
    try:
        import mlperf_loadgen
    except ImportError as e:
        raise ZooinferError(f"LoadGen scenarios need MLCommons LoadGen, which is not installed ({e}). "
                            f"Install it with: {INSTALL_HINT}") from None
    return mlperf_loadgen


def available() -> bool:
    """Whether ``mlcommons-loadgen`` is installed."""
    try:
        import mlperf_loadgen  # noqa: F401
    except ImportError:
        return False
    return True


def scenario_name(name: str) -> str:
    """The canonical scenario name for ``name`` (case, ``_``, ``-`` and spaces ignored), or a ZooinferError listing
    the valid ones."""
    key = re.sub(r"[\s_-]", "", str(name)).lower()
    if key not in _ALIASES:
        raise ZooinferError(f"unknown LoadGen scenario {name!r}; valid scenarios: {', '.join(SCENARIOS)}")
    return _ALIASES[key]


# ------------------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class LoadSettings:
    """What LoadGen is asked for. Durations in ms, rates in samples (queries) per second.

    ``None`` means "derived from this run": the SingleStream expected latency and the Offline expected QPS from a
    short calibration of the session (LoadGen sizes its pre-generated query schedule from them); the Server search's
    upper end from the Offline throughput; the Server latency bound from 3x the SingleStream p90.
    """

    #: each LoadGen run lasts at least this long (ms)
    min_duration_ms: int = 2000
    #: LoadGen stops issuing after this (ms; 0: no cap). A run cut short is INVALID ("min queries not met")
    max_duration_ms: int = 60_000
    #: at least this many queries per run (SingleStream, Server; Offline: samples). LoadGen's early-stopping check
    #: needs about 64 queries for the SingleStream p90 and about 460 for the Server p99 to call a run VALID
    min_query_count: int = 64
    #: Server runs' own ``min_query_count`` (None: ``min_query_count``)
    server_min_query_count: int | None = None
    #: Server: the p99 latency bound (ms); None: 3x the SingleStream p90 (or 3x one calibrated inference)
    latency_bound_ms: float | None = None
    #: Server: the percentile the bound applies to (LoadGen's ``server_target_latency_percentile``)
    latency_percentile: float = 0.99
    #: Server search: the first (highest) target QPS probed; None: the Offline samples/s (or the calibration's)
    target_qps: float | None = None
    #: Server search: stop when the gap between the best passing and the lowest failing target is below this
    #: fraction of the failing one
    search_tolerance: float = 0.1
    #: Server search: at most this many LoadGen runs
    max_probes: int = 8
    #: Offline: LoadGen issues ``expected_qps x min_duration x 1.1`` samples; None: calibrated (and one rerun with
    #: LoadGen's measured rate if the run came out shorter than ``min_duration_ms``)
    offline_expected_qps: float | None = None
    #: SingleStream: LoadGen pre-generates ``min_duration / expected latency`` queries; None: calibrated (ms)
    single_stream_expected_latency_ms: float | None = None
    #: samples held in memory for performance runs (None: all of the dataset that fits ``max_sample_memory_mb``)
    performance_sample_count: int | None = None
    #: memory cap for the preprocessed samples held in memory (MiB)
    max_sample_memory_mb: float = 2048.0
    #: postprocess every response with the recipe before reporting it complete (timed, as a deployment answers)
    postprocess: bool = True
    #: LoadGen's qsl, sample-index and schedule seeds
    seed: int = 0

    def validate(self) -> "LoadSettings":
        bad = []
        if self.min_duration_ms < 0:
            bad.append(f"min_duration_ms={self.min_duration_ms} (ms, >= 0)")
        if self.max_duration_ms < 0 or (self.max_duration_ms and self.max_duration_ms < self.min_duration_ms):
            bad.append(f"max_duration_ms={self.max_duration_ms} (ms, 0 for no cap, else >= min_duration_ms)")
        if self.min_query_count < 1:
            bad.append(f"min_query_count={self.min_query_count} (>= 1)")
        if self.server_min_query_count is not None and self.server_min_query_count < 1:
            bad.append(f"server_min_query_count={self.server_min_query_count} (>= 1)")
        if self.latency_bound_ms is not None and not self.latency_bound_ms > 0:
            bad.append(f"latency_bound_ms={self.latency_bound_ms} (ms, > 0)")
        if not 0.0 < self.latency_percentile < 1.0:
            bad.append(f"latency_percentile={self.latency_percentile} (between 0 and 1, e.g. 0.99)")
        if self.target_qps is not None and not self.target_qps > 0:
            bad.append(f"target_qps={self.target_qps} (> 0)")
        if not 0.0 < self.search_tolerance < 1.0:
            bad.append(f"search_tolerance={self.search_tolerance} (a fraction, e.g. 0.1)")
        if self.max_probes < 1:
            bad.append(f"max_probes={self.max_probes} (>= 1)")
        if self.offline_expected_qps is not None and not self.offline_expected_qps > 0:
            bad.append(f"offline_expected_qps={self.offline_expected_qps} (> 0)")
        if self.single_stream_expected_latency_ms is not None and not self.single_stream_expected_latency_ms > 0:
            bad.append(f"single_stream_expected_latency_ms={self.single_stream_expected_latency_ms} (ms, > 0)")
        if self.performance_sample_count is not None and self.performance_sample_count < 1:
            bad.append(f"performance_sample_count={self.performance_sample_count} (>= 1)")
        if bad:
            raise ZooinferError("bad LoadGen settings: " + "; ".join(bad))
        return self

    @classmethod
    def quick(cls, **overrides: Any) -> "LoadSettings":
        """Short runs for a notebook on the embedded sample or a smoke test (figures, not VALID results)."""
        base = dict(min_duration_ms=1000, max_duration_ms=20_000, min_query_count=16, max_probes=6)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def for_latency(cls, sample_latency_ms: float, budget_s: float = 120.0, **overrides: Any) -> "LoadSettings":
        """Settings sized so that SingleStream + Offline + a Server search on a session whose one-sample latency is
        ``sample_latency_ms`` take roughly ``budget_s`` seconds: fast models get LoadGen's early-stopping counts
        (64 SingleStream queries), slow ones (M2Det, PyramidBox on a few CPU cores) as few as 3 queries per run and
        3 Server probes -- figures, not VALID results."""
        lat = max(float(sample_latency_ms), 1e-3)
        probes = 6 if lat < 500 else 3
        per_run_ms = 1e3 * budget_s / (2 + probes)
        q = int(min(64, max(3, per_run_ms / lat)))
        base = dict(min_duration_ms=int(min(5000, per_run_ms / 2)), min_query_count=q,
                    server_min_query_count=int(min(32, max(3, q // 2))), max_probes=probes,
                    max_duration_ms=int(max(3 * per_run_ms, 5000, 4 * lat)))
        base.update(overrides)
        return cls(**base)


# ----------------------------------------------------------------------------------------------- results
LATENCY_KEYS = (("mean", "result_mean_latency_ns"), ("min", "result_min_latency_ns"),
                ("max", "result_max_latency_ns"), ("p50", "result_50.00_percentile_latency_ns"),
                ("p90", "result_90.00_percentile_latency_ns"), ("p95", "result_95.00_percentile_latency_ns"),
                ("p99", "result_99.00_percentile_latency_ns"), ("p99.9", "result_99.90_percentile_latency_ns"))


@dataclass
class ScenarioResult:
    """One LoadGen run: its verdict, the settings LoadGen used, its figures (ms, samples/s) and its log folder."""

    scenario: str
    mode: str  # "PerformanceOnly" | "AccuracyOnly"
    validity: str  # "VALID" | "INVALID" (LoadGen's "Result is")
    #: why LoadGen found it INVALID (its failed checks and recommendations); "" when VALID
    reason: str
    #: the effective settings (LoadGen's effective_* values): target_qps, latency_bound_ms, min_duration_ms,
    #: max_duration_ms, min_query_count, performance_sample_count, total_sample_count, bs
    settings: dict[str, Any]
    #: latency_ms_{mean,min,max,p50,p90,p95,p99,p99.9}, samples_per_s, qps, queries, samples, duration_s
    figures: dict[str, Any]
    checks: dict[str, bool | None]
    log_dir: str
    #: LoadGen's errors and warnings logged during the run
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.validity == "VALID"

    @property
    def meets_latency_bound(self) -> bool | None:
        """Server: LoadGen's "performance constraints satisfied" (the percentile latency is within the bound)."""
        return self.checks.get("perf_constraints_met")

    def row(self) -> dict[str, Any]:
        """One flat row for :func:`scenario_table` and metrics.json."""
        f, s = self.figures, self.settings
        return {"scenario": self.scenario, "mode": self.mode, "result": self.validity,
                "samples_per_s": f.get("samples_per_s"), "qps": f.get("qps"),
                "latency_ms_p50": f.get("latency_ms_p50"), "latency_ms_p90": f.get("latency_ms_p90"),
                "latency_ms_p99": f.get("latency_ms_p99"), "queries": f.get("queries"), "samples": f.get("samples"),
                "duration_s": f.get("duration_s"), "target_qps": s.get("target_qps"),
                "latency_bound_ms": s.get("latency_bound_ms"), "min_duration_ms": s.get("min_duration_ms"),
                "min_query_count": s.get("min_query_count"),
                "performance_sample_count": s.get("performance_sample_count"), "bs": s.get("bs"),
                "reason": self.reason, "log_dir": self.log_dir}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_detail_log(path: str | os.PathLike) -> dict[str, Any]:
    """LoadGen's ``mlperf_log_detail.txt`` (one ``:::MLLOG {json}`` record per line) as {key: value}; repeated keys
    (errors, warnings) are collected under ``"<key>[]"`` lists as well."""
    out: dict[str, Any] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.startswith(":::MLLOG"):
                continue
            try:
                rec = json.loads(line[len(":::MLLOG"):].strip())
            except json.JSONDecodeError:
                continue
            key, value = rec.get("key"), rec.get("value")
            if key is None:
                continue
            meta = rec.get("metadata") or {}
            if meta.get("is_error"):
                out.setdefault("errors[]", []).append(f"{key}: {value}")
            if meta.get("is_warning"):
                out.setdefault("warnings[]", []).append(f"{key}: {value}")
            out[key] = value
    return out


def parse_summary(path: str | os.PathLike) -> dict[str, Any]:
    """The parts of ``mlperf_log_summary.txt`` the detail log does not hold verbatim: the "Result is" line and the
    "Recommendations" and "Early Stopping Result" blocks (text)."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    m = re.search(r"Result is\s*:\s*(\w+)", text)
    out: dict[str, Any] = {"result": m.group(1) if m else None, "text": text}
    lines = text.splitlines()
    for name, key in (("Recommendations:", "recommendations"), ("Early Stopping Result:", "early_stopping")):
        body: list[str] = []
        if name in lines:  # the block: the lines after its title, up to a blank line or the next title
            for line in lines[lines.index(name) + 1:]:
                if not line.strip() or (not line.startswith((" ", "*")) and line.rstrip().endswith(":")):
                    break
                body.append(line)
        out[key] = " ".join(" ".join(body).split())
    return out


def _bool(v: Any) -> bool | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return v
    return str(v).strip().lower() in ("true", "yes", "1")


def _ms(ns: Any) -> float | None:
    return None if ns is None else float(ns) / 1e6


def result_from_logs(log_dir: str | os.PathLike, scenario: str, bs: int | None = None) -> ScenarioResult:
    """A :class:`ScenarioResult` parsed from one LoadGen run's log folder."""
    log_dir = Path(log_dir)
    detail_path, summary_path = log_dir / "mlperf_log_detail.txt", log_dir / "mlperf_log_summary.txt"
    if not detail_path.is_file():
        raise ZooinferError(f"LoadGen wrote no detail log in {log_dir} (did the run start?)")
    d = parse_detail_log(detail_path)
    summ = parse_summary(summary_path) if summary_path.is_file() else {"result": None, "recommendations": "",
                                                                        "early_stopping": ""}
    mode = str(d.get("effective_test_mode", d.get("requested_test_mode", "?")))
    checks = {"min_duration_met": _bool(d.get("result_min_duration_met")),
              "min_queries_met": _bool(d.get("result_min_queries_met")),
              "early_stopping_met": _bool(d.get("early_stopping_met")),
              "perf_constraints_met": _bool(d.get("result_perf_constraints_met"))}
    validity = str(d.get("result_validity") or summ.get("result") or ("VALID" if mode == "AccuracyOnly" else "?"))
    lat = {f"latency_ms_{name}": _ms(d.get(key)) for name, key in LATENCY_KEYS}
    bound_ms = _ms(d.get("effective_target_latency_ns")) if scenario == "Server" else None
    reasons: list[str] = []
    if validity != "VALID":
        if checks["perf_constraints_met"] is False:
            pct = d.get("effective_target_latency_percentile", 0.99)
            p = lat.get("latency_ms_p99") if abs(float(pct) - 0.99) < 1e-9 else None
            reasons.append("performance constraints not met" + (
                f" (p{100 * float(pct):g} latency {p:.1f} ms > bound {bound_ms:.1f} ms)" if p is not None and bound_ms
                else ""))
        if checks["min_duration_met"] is False:
            reasons.append(f"min duration ({d.get('effective_min_duration_ms')} ms) not met")
        if checks["min_queries_met"] is False:
            reasons.append(f"min query count ({d.get('effective_min_query_count')}) not met")
        if checks["early_stopping_met"] is False:
            es = " ".join(str(d.get("early_stopping_result") or summ.get("early_stopping") or "").split())
            reasons.append("early stopping not satisfied" + (f": {es.lstrip('* ')}" if es else ""))
        rec = " ".join(str(d.get("result_invalid_reason") or "").split()) or summ.get("recommendations", "")
        if rec and not any(rec in r for r in reasons):
            reasons.append(f"LoadGen recommends: {rec}")
        if not reasons:
            reasons.append("LoadGen gave no reason")
    if scenario == "SingleStream":
        sps = d.get("result_qps_with_loadgen_overhead")
        qps, queries = sps, d.get("result_query_count")
        samples = queries
    elif scenario == "Offline":
        sps = d.get("result_samples_per_second")
        qps, queries = sps, d.get("result_query_count")
        samples = d.get("generated_samples_per_query")
    else:
        sps = d.get("result_completed_samples_per_sec")
        qps, queries = d.get("result_scheduled_samples_per_sec"), d.get("result_query_count")
        samples = queries
    n_samples = None if samples is None else int(samples)
    duration = (n_samples / float(sps)) if n_samples and sps else None
    figures = {**lat, "samples_per_s": None if sps is None else float(sps), "qps": None if qps is None else float(qps),
               "queries": None if queries is None else int(queries), "samples": n_samples, "duration_s": duration}
    if mode == "AccuracyOnly":  # LoadGen computes no performance figures in accuracy mode
        figures = {k: None for k in figures}
    settings = {"target_qps": float(d["effective_target_qps"]) if "effective_target_qps" in d else None,
                "latency_bound_ms": bound_ms,
                "latency_percentile": d.get("effective_target_latency_percentile"),
                "min_duration_ms": d.get("effective_min_duration_ms"),
                "max_duration_ms": d.get("effective_max_duration_ms"),
                "min_query_count": d.get("effective_min_query_count"),
                "performance_sample_count": d.get("effective_performance_sample_count"),
                "total_sample_count": d.get("qsl_reported_total_count"),
                "samples_per_query": d.get("effective_samples_per_query"),
                "bs": bs, "loadgen_version": d.get("loadgen_version")}
    if scenario != "Server":  # LoadGen's effective_target_qps is the expected rate it sized the schedule from
        settings["expected_qps"], settings["target_qps"] = settings["target_qps"], None
    return ScenarioResult(scenario, mode, validity, "; ".join(reasons), settings, figures, checks, str(log_dir),
                          errors=list(d.get("errors[]", [])), warnings=list(d.get("warnings[]", [])))


# ------------------------------------------------------------------------------------------- QSL: samples in memory
@dataclass
class _Loaded:
    views: tuple[np.ndarray, ...] | None
    meta: dict | None
    error: str | None


class SampleStore:
    """LoadGen's query sample library over a dataset: ``load``/``unload`` are LoadGen's callbacks (lists of dataset
    indices); loaded samples are preprocessed views held in memory. Unloaded samples stay cached (up to
    ``cache_limit``) so the many short runs of a Server search do not preprocess the same samples again."""

    def __init__(self, recipe, dataset, workers: int | None = None, cache_limit: int = 0):
        self.recipe, self.dataset = recipe, dataset
        self.workers = workers or max(1, min(8, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                                 else (os.cpu_count() or 1))))
        self.cache_limit = cache_limit
        self._loaded: dict[int, _Loaded] = {}
        self._cache: OrderedDict[int, _Loaded] = OrderedDict()
        self._lock = threading.Lock()
        self.preprocessed = 0  # preprocess calls made (cache misses)

    def __len__(self) -> int:
        return len(self.dataset)

    def _prepare(self, index: int) -> _Loaded:
        sample = self.dataset[index]
        try:
            views, meta = self.recipe.preprocess(sample.path)
        except Exception as e:  # noqa: BLE001 - an unreadable image is answered empty and skipped, as in the pipeline
            return _Loaded(None, None, f"{type(e).__name__}: {e}")
        views = tuple(np.ascontiguousarray(v, dtype=np.float32) for v in views)
        return _Loaded(views, self.recipe.meta_for(sample, meta), None)

    def load(self, indices: Iterable[int]) -> None:
        indices = [int(i) for i in indices]
        with self._lock:
            missing = [i for i in indices if i not in self._cache and i not in self._loaded]
        if missing:
            if len(missing) == 1 or self.workers == 1:
                prepared = [self._prepare(i) for i in missing]
            else:
                with ThreadPoolExecutor(min(self.workers, len(missing)), thread_name_prefix="zooinfer-qsl") as pool:
                    prepared = list(pool.map(self._prepare, missing))
            self.preprocessed += len(missing)
            fresh = dict(zip(missing, prepared))
        else:
            fresh = {}
        with self._lock:
            for i in indices:
                item = fresh.get(i) or self._loaded.get(i) or self._cache.pop(i, None)
                self._loaded[i] = item

    def unload(self, indices: Iterable[int]) -> None:
        with self._lock:
            for i in indices:
                item = self._loaded.pop(int(i), None)
                if item is not None and self.cache_limit > 0:
                    self._cache[int(i)] = item
                    self._cache.move_to_end(int(i))
            while len(self._cache) > self.cache_limit:
                self._cache.popitem(last=False)

    def get(self, index: int) -> _Loaded:
        try:
            return self._loaded[index]
        except KeyError:
            raise ZooinferError(f"LoadGen issued sample {index}, which it has not loaded") from None

    def clear(self) -> None:
        with self._lock:
            self._loaded.clear()
            self._cache.clear()


# ------------------------------------------------------------------------------------------------ SUT: batching
class BatchingSUT:
    """LoadGen's system under test over a session: queues issued samples (one row per view) and runs them in batches
    of up to ``bs`` rows of one shape on one worker thread; a second thread postprocesses and reports completion.

    Written by hand because LoadGen leaves batching to the SUT (its Python demos answer from a thread per query).
    ``record``: accuracy mode, keep every postprocessed prediction by dataset index."""

    def __init__(self, lg, recipe, store: SampleStore, session, bs: int, *, postprocess: bool = True):
        fixed = static_batch(session)
        if fixed is not None and bs != fixed:
            raise BackendError(f"{getattr(session, 'name', 'session')}: the model has a static batch size of {fixed}; "
                               f"run LoadGen with bs={fixed} (got bs={bs})")
        if bs < 1:
            raise ZooinferError(f"bs must be >= 1 (got {bs})")
        self.lg, self.recipe, self.store, self.session = lg, recipe, store, session
        self.bs, self.pad_to, self.postprocess = int(bs), fixed, postprocess
        self.record = False
        self.predictions: dict[int, Any] = {}
        self.skipped: dict[int, str] = {}
        self.batches: list[int] = []  # rows per batch run (for tests and the batching statistics)
        self.error: BaseException | None = None
        self._rows: deque = deque()  # (query id, sample index, view index, view)
        self._pending: dict[int, list] = {}  # query id -> [index, outputs per view, remaining]
        self._cv = threading.Condition()
        self._stop = False
        self._post = ThreadPoolExecutor(1, thread_name_prefix="zooinfer-sut-post")
        self._worker = threading.Thread(target=self._loop, name="zooinfer-sut", daemon=True)
        self._worker.start()

    # LoadGen callbacks ---------------------------------------------------------------------------------
    def issue_queries(self, query_samples) -> None:
        immediate = []
        with self._cv:
            for qs in query_samples:
                item = self.store.get(qs.index)
                if item.error is not None or self.error is not None:
                    immediate.append((qs.id, qs.index))
                    if item.error is not None:
                        self.skipped[qs.index] = item.error
                    continue
                self._pending[qs.id] = [qs.index, [None] * len(item.views), len(item.views)]
                for v, view in enumerate(item.views):
                    self._rows.append((qs.id, qs.index, v, view))
            self._cv.notify()
        if immediate:
            self._complete([(qid, idx, None) for qid, idx in immediate])

    def flush_queries(self) -> None:
        """Nothing is held back (the worker runs whatever is queued), so there is nothing to flush."""

    # worker ----------------------------------------------------------------------------------------------
    def _take(self) -> list:
        rows = [self._rows.popleft()]
        shape = rows[0][3].shape
        while self._rows and len(rows) < self.bs and self._rows[0][3].shape == shape:
            rows.append(self._rows.popleft())
        return rows

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._rows and not self._stop:
                    self._cv.wait()
                if self._stop and not self._rows:
                    return
                rows = self._take()
            self._run(rows)

    def _run(self, rows: list) -> None:
        n = len(rows)
        size = self.pad_to or n
        try:
            if self.error is not None:
                raise self.error
            batch = np.empty((size, *rows[0][3].shape), dtype=np.float32)
            for r, row in enumerate(rows):
                batch[r] = row[3]
            if size > n:
                batch[n:] = 0.0
            outs = self.session.run(batch)
            self.batches.append(n)
        except BaseException as e:  # noqa: BLE001 - LoadGen waits for every response: answer, then re-raise later
            if self.error is None:
                self.error = e
            outs = None
        done = []
        with self._cv:
            for r, (qid, index, view, _) in enumerate(rows):
                entry = self._pending.get(qid)
                if entry is None:
                    continue
                entry[1][view] = None if outs is None else sample_outputs(outs, size, r)
                entry[2] -= 1
                if entry[2] == 0:
                    del self._pending[qid]
                    done.append((qid, index, None if outs is None else entry[1]))
        if done:
            if self.postprocess or self.record:
                self._post.submit(self._finish, done)
            else:
                self._complete(done)

    def _finish(self, done: list) -> None:
        answered = []
        for qid, index, per_view in done:
            if per_view is not None and self.error is None:
                try:
                    item = self.store.get(index)
                    pred = self.recipe.postprocess(per_view[0] if len(per_view) == 1 else per_view, item.meta)
                    if self.record:
                        compact = getattr(self.recipe, "compact", None)
                        self.predictions[index] = compact(pred) if compact else pred
                except BaseException as e:  # noqa: BLE001 - answered anyway, raised after the run
                    if self.error is None:
                        self.error = e
            answered.append((qid, index, None))
        self._complete(answered)

    def _complete(self, done: list) -> None:
        lg = self.lg
        if self.record:
            # accuracy mode: each response carries its dataset index (8 bytes), so LoadGen's accuracy log records
            # which sample each response answered (checked after the run: every sample exactly once)
            payload = np.array([index for _, index, _ in done], dtype=np.int64)
            responses = [lg.QuerySampleResponse(qid, int(payload.ctypes.data) + 8 * k, 8)
                         for k, (qid, _, _) in enumerate(done)]
            lg.QuerySamplesComplete(responses)
            del payload
        else:
            lg.QuerySamplesComplete([lg.QuerySampleResponse(qid, 0, 0) for qid, _, _ in done])

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._worker.join(timeout=30)
        self._post.shutdown(wait=True)

    def reset(self, record: bool = False) -> None:
        """Before a new LoadGen run: clear the per-run state."""
        self.record = record
        self.predictions, self.skipped, self.batches = {}, {}, []


# ------------------------------------------------------------------------------------------------ harness
class Harness:
    """One session + dataset + batch size, set up once for several LoadGen runs (a scenario list, a Server search):
    the sample store and the SUT are shared, the samples stay preprocessed between runs."""

    def __init__(self, recipe, dataset, session, *, bs: int = 1, settings: LoadSettings | None = None,
                 log_dir: str | os.PathLike | None = None, workers: int | None = None,
                 progress: bool | Callable[[str], None] = False):
        self.lg = _loadgen()
        self.settings = (settings or LoadSettings()).validate()
        if len(dataset) == 0:
            raise ZooinferError("LoadGen needs at least one sample; the dataset is empty")
        self.recipe, self.dataset, self.session, self.bs = recipe, dataset, session, int(bs)
        self.log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="zooinfer-loadgen-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.views = _views_per_sample(recipe, dataset)
        self.perf_count = self._performance_count()
        self.store = SampleStore(recipe, dataset, workers=workers, cache_limit=self.perf_count)
        self.sut = BatchingSUT(self.lg, recipe, self.store, session, self.bs, postprocess=self.settings.postprocess)
        self._say = progress if callable(progress) else (print if progress else (lambda _m: None))
        self.calibration: dict[str, float] | None = None
        self.runs = 0

    def _performance_count(self) -> int:
        s = self.settings
        n = len(self.dataset)
        if s.performance_sample_count is not None:
            return min(n, s.performance_sample_count)
        c, h, w = self.recipe.input_shape
        per_sample_mb = self.views * c * h * w * 4 / 2**20
        return max(1, min(n, int(s.max_sample_memory_mb // max(per_sample_mb, 1e-9))))

    # -------------------------------------------------------------------------------------- calibration
    def calibrate(self) -> dict[str, float]:
        """Time the session on real loaded samples: one sample alone and a full batch (after a warm-up); gives the
        expected SingleStream latency (ms) and Offline rate (samples/s) LoadGen sizes its schedules from."""
        if self.calibration is not None:
            return self.calibration
        k = min(len(self.dataset), max(1, -(-self.bs // self.views)))
        idx = list(range(k))
        self.store.load(idx)
        views = [v for i in idx if (it := self.store.get(i)).views for v in it.views]
        self.store.unload(idx)
        if not views:
            raise ZooinferError(f"none of the first {k} samples could be preprocessed; cannot calibrate")
        rows = min(self.views, self.bs)  # the SUT runs a sample's views in batches of at most bs rows
        one = self._padded(np.stack(views[:rows]))
        full = self._padded(np.stack([views[r % len(views)] for r in range(self.bs)]))
        self.session.run(one)  # warm-up
        t_one = min(_timed(self.session.run, one) for _ in range(2)) * -(-self.views // rows)
        t_full = min(_timed(self.session.run, full) for _ in range(2))
        samples_per_batch = self.bs / self.views
        self.calibration = {"sample_latency_ms": 1e3 * t_one, "batch_latency_ms": 1e3 * t_full,
                            "samples_per_s": samples_per_batch / t_full if t_full > 0 else float("inf")}
        return self.calibration

    def _padded(self, x: np.ndarray) -> np.ndarray:
        fixed = self.sut.pad_to
        if fixed is None or x.shape[0] == fixed:
            return x
        return np.concatenate([x, np.zeros((fixed - x.shape[0], *x.shape[1:]), np.float32)])

    # -------------------------------------------------------------------------------------- one LoadGen run
    def run(self, scenario: str, *, mode: str = "PerformanceOnly", target_qps: float | None = None,
            latency_bound_ms: float | None = None, expected_qps: float | None = None,
            expected_latency_ms: float | None = None, min_query_count: int | None = None,
            subdir: str | None = None) -> ScenarioResult:
        """One LoadGen test (its own log folder under ``log_dir``); returns its parsed result."""
        lg, s = self.lg, self.settings
        scenario = scenario_name(scenario)
        ts = lg.TestSettings()
        ts.scenario = getattr(lg.TestScenario, scenario)
        ts.mode = getattr(lg.TestMode, mode)
        ts.min_duration_ms = int(s.min_duration_ms)
        ts.max_duration_ms = int(s.max_duration_ms)
        ts.min_query_count = int(min_query_count or s.min_query_count)
        ts.qsl_rng_seed = ts.sample_index_rng_seed = ts.schedule_rng_seed = int(s.seed)
        if scenario == "Server":
            if target_qps is None or latency_bound_ms is None:
                raise ZooinferError("a Server run needs target_qps and latency_bound_ms")
            ts.server_target_qps = float(target_qps)
            ts.server_target_latency_ns = int(latency_bound_ms * 1e6)
            ts.server_target_latency_percentile = float(s.latency_percentile)
        elif scenario == "Offline":
            ts.offline_expected_qps = float(expected_qps or 1.0)
        else:
            ts.single_stream_expected_latency_ns = max(1, int((expected_latency_ms or 1.0) * 1e6))
        self.runs += 1
        out = self.log_dir / (subdir or (scenario if mode == "PerformanceOnly" else f"{scenario}-accuracy"))
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        log = lg.LogSettings()
        log.log_output.outdir = str(out)
        log.log_output.copy_summary_to_stdout = False
        log.enable_trace = False
        self.sut.reset(record=mode == "AccuracyOnly")
        sut = lg.ConstructSUT(self.sut.issue_queries, self.sut.flush_queries)
        n_total = len(self.dataset)
        qsl = lg.ConstructQSL(n_total, self.perf_count if mode == "PerformanceOnly" else min(n_total, self.perf_count),
                              self.store.load, self.store.unload)
        try:
            lg.StartTestWithLogSettings(sut, qsl, ts, log)
        finally:
            lg.DestroyQSL(qsl)
            lg.DestroySUT(sut)
        if self.sut.error is not None:
            err, self.sut.error = self.sut.error, None
            if isinstance(err, ZooinferError):
                raise err
            raise ZooinferError(f"{getattr(self.session, 'name', 'session')} failed during the LoadGen {scenario} run: "
                                f"{type(err).__name__}: {err}") from err
        res = result_from_logs(out, scenario, self.bs)
        if self.sut.batches:
            res.figures["mean_rows_per_batch"] = float(np.mean(self.sut.batches))
        return res

    def close(self) -> None:
        self.sut.close()
        self.store.clear()


def _views_per_sample(recipe, dataset, tries: int = 8) -> int:
    """Rows one sample occupies (PyramidBox: 2), from the first sample that preprocesses."""
    for sample in list(dataset)[:tries]:
        try:
            return max(1, len(recipe.preprocess(sample.path)[0]))
        except Exception:  # noqa: BLE001 - unreadable samples are the store's business
            continue
    return 1


def _timed(fn: Callable, x: np.ndarray) -> float:
    t0 = time.perf_counter()
    fn(x)
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------ scenarios
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


@dataclass
class ServerSearch:
    """The Server search: every probe (one LoadGen Server run each) and the highest target QPS that met the bound."""

    latency_bound_ms: float
    latency_percentile: float
    #: one dict per LoadGen run, in the order run: target_qps, latency_ms_p50/p90/p99, completed samples_per_s,
    #: meets_bound (LoadGen's "performance constraints satisfied"), result (VALID/INVALID), reason, log_dir
    probes: list[dict]
    best: ScenarioResult | None
    #: the lowest probed target that failed above ``best`` (None if none failed)
    ceiling_qps: float | None
    statement: str
    capacity_samples_per_s: float | None = None
    bound_source: str = "given"

    @property
    def qps(self) -> float | None:
        """The highest probed target QPS whose latency percentile met the bound (None: none did)."""
        return None if self.best is None else self.best.settings["target_qps"]

    @property
    def best_p99_ms(self) -> float | None:
        vals = [p["latency_ms_p99"] for p in self.probes if p.get("latency_ms_p99") is not None]
        return min(vals) if vals else None

    def as_dict(self) -> dict:
        return {"latency_bound_ms": self.latency_bound_ms, "latency_percentile": self.latency_percentile,
                "bound_source": self.bound_source, "qps": self.qps, "ceiling_qps": self.ceiling_qps,
                "capacity_samples_per_s": self.capacity_samples_per_s, "statement": self.statement,
                "best": None if self.best is None else self.best.row(), "probes": self.probes}


def _probe_row(res: ScenarioResult) -> dict:
    f = res.figures
    return {"target_qps": res.settings["target_qps"], "latency_ms_p50": f.get("latency_ms_p50"),
            "latency_ms_p90": f.get("latency_ms_p90"), "latency_ms_p99": f.get("latency_ms_p99"),
            "samples_per_s": f.get("samples_per_s"), "queries": f.get("queries"),
            "meets_bound": res.meets_latency_bound, "result": res.validity, "reason": res.reason,
            "log_dir": res.log_dir}


def _server_search(h: Harness, latency_bound_ms: float, capacity: float | None,
                   bound_source: str = "given") -> ServerSearch:
    """Bisection over LoadGen Server runs for the highest target QPS whose percentile latency meets the bound.

    Written here rather than LoadGen's FindPeakPerformance mode because: every probe's latency is kept (the
    latency-vs-QPS plot), the number of runs is bounded by ``max_probes`` and a relative tolerance (LoadGen refines
    to a fixed number of decimals), and a bound that no rate can meet ends with the best latency reached (LoadGen's
    mode stops with an error when its first rate fails). The pass/fail criterion is LoadGen's own per run
    ("performance constraints satisfied": the percentile latency within the bound)."""
    s = h.settings
    pct = s.latency_percentile
    hi_start = s.target_qps or capacity or h.calibrate()["samples_per_s"]
    min_q = s.server_min_query_count or s.min_query_count
    probes: list[dict] = []
    results: dict[float, ScenarioResult] = {}

    def probe(q: float) -> bool:
        q = float(f"{q:.4g}")
        if q in results:
            return bool(results[q].meets_latency_bound)
        res = h.run("Server", target_qps=q, latency_bound_ms=latency_bound_ms, min_query_count=min_q,
                    subdir=f"Server/probe-{len(probes) + 1:02d}-qps-{q:g}")
        results[q] = res
        probes.append(_probe_row(res))
        p99 = res.figures.get("latency_ms_p99")
        h._say(f"  Server probe {len(probes)}: {q:.4g} QPS -> p{100 * pct:g} "
               f"{'n/a' if p99 is None else f'{p99:.1f} ms'} "
               f"({'meets' if res.meets_latency_bound else 'misses'} {latency_bound_ms:.1f} ms), {res.validity}")
        return bool(res.meets_latency_bound)

    # The search never probes above the capacity (the Offline samples/s): a rate the SUT cannot sustain builds a
    # queue that a short run may end before it breaks the bound, so such a "pass" would mean nothing.
    lo = hi = None  # highest passing, lowest failing target
    q = hi_start
    if probe(q):
        lo = q
    else:
        hi = q
        while len(probes) < s.max_probes:
            q /= 2
            if probe(q):
                lo = q
                break
            hi = q
    while lo is not None and hi is not None and len(probes) < s.max_probes and (hi - lo) / hi > s.search_tolerance:
        mid = 0.5 * (lo + hi)
        if probe(mid):
            lo = mid
        else:
            hi = mid
    key = (lambda v: float(f"{v:.4g}"))
    best = results[key(lo)] if lo is not None else None
    n = len(probes)
    what = f"p{100 * pct:g} latency"
    if best is not None:
        p = best.figures.get("latency_ms_p99")
        verdict = best.validity + (f": {best.reason.split(';')[0]}" if best.reason else "")
        statement = (f"Server: {best.settings['target_qps']:.4g} QPS is the highest probed target whose {what} "
                     f"({p:.1f} ms) meets the {latency_bound_ms:.1f} ms bound"
                     + (f"; {key(hi):.4g} QPS did not" if hi is not None else
                        "; it is the first probe, the capacity (Offline samples/s), above which the search does not go")
                     + f" ({n} LoadGen runs of >= {s.min_duration_ms} ms; LoadGen's verdict on that run: {verdict}).")
    else:
        lat = [(p["latency_ms_p99"], p["target_qps"]) for p in probes if p["latency_ms_p99"] is not None]
        bp, bq = min(lat) if lat else (None, None)
        single = h.calibration["sample_latency_ms"] if h.calibration else None
        statement = (f"Server: no target QPS met the {what} bound of {latency_bound_ms:.1f} ms: the best {what} "
                     f"reached was " + ("n/a" if bp is None else f"{bp:.1f} ms at {bq:.4g} QPS")
                     + f" (lowest target probed {min(p['target_qps'] for p in probes):.4g} QPS, {n} LoadGen runs)"
                     + (f"; one inference alone takes {single:.1f} ms here" if single else "")
                     + ". Raise latency_bound_ms, or use a faster backend or a smaller batch.")
    return ServerSearch(latency_bound_ms, pct, probes, best, None if hi is None else key(hi), statement,
                        capacity, bound_source)


def server_search(recipe, dataset, session, *, bs: int = 1, latency_bound_ms: float,
                  settings: LoadSettings | None = None, log_dir: str | os.PathLike | None = None,
                  progress: bool = False) -> ServerSearch:
    """The highest target QPS (queries = samples per second) whose p99 latency (ms) meets ``latency_bound_ms``,
    by bisection over short LoadGen Server runs starting at ``settings.target_qps`` (None: the calibrated
    throughput at ``bs``). Logs of every probe under ``log_dir/Server/``."""
    if not latency_bound_ms or latency_bound_ms <= 0:
        raise ZooinferError(f"latency_bound_ms must be > 0 (ms), got {latency_bound_ms}")
    h = Harness(recipe, dataset, session, bs=bs, settings=settings, log_dir=log_dir, progress=progress)
    try:
        return _server_search(h, float(latency_bound_ms), None)
    finally:
        h.close()


def run_scenario(recipe, dataset, session, scenario: str, *, bs: int = 1, settings: LoadSettings | None = None,
                 log_dir: str | os.PathLike | None = None, progress: bool = False) -> ScenarioResult:
    """One performance run of ``scenario`` (SingleStream or Offline; Server needs ``settings.target_qps`` and
    ``settings.latency_bound_ms`` and runs once at that rate: use :func:`server_search` for the search)."""
    name = scenario_name(scenario)
    h = Harness(recipe, dataset, session, bs=bs, settings=settings, log_dir=log_dir, progress=progress)
    try:
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
    finally:
        h.close()


@dataclass
class AccuracyResult:
    """LoadGen accuracy mode: every sample issued once, the postprocessed responses fed to the recipe's metric."""

    metrics: dict[str, float]
    scenario: str
    n_samples: int
    n_answered: int
    skipped: dict[int, str]
    #: LoadGen's accuracy log lists every sample exactly once (checked from ``mlperf_log_accuracy.json``)
    each_sample_once: bool | None
    result: ScenarioResult
    #: the recipe's accumulator after the run (fed in dataset order), as ``RunResult.accumulator``
    accumulator: Any = None

    def as_dict(self) -> dict:
        return {"metrics": self.metrics, "scenario": self.scenario, "n_samples": self.n_samples,
                "n_answered": self.n_answered, "skipped": {str(k): v for k, v in self.skipped.items()},
                "each_sample_once": self.each_sample_once, "log_dir": self.result.log_dir,
                "result": self.result.validity}


def _accuracy_log_indices(log_dir: Path) -> list[int] | None:
    path = log_dir / "mlperf_log_accuracy.json"
    try:
        return [int(e["qsl_idx"]) for e in json.loads(path.read_text() or "[]")]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _accuracy(h: Harness, scenario: str = "Offline") -> AccuracyResult:
    name = scenario_name(scenario)
    s = h.settings
    kw: dict[str, Any] = {}
    if name == "Server":
        kw = {"target_qps": s.target_qps or h.calibrate()["samples_per_s"],
              "latency_bound_ms": s.latency_bound_ms or 1e6}
    elif name == "Offline":
        kw = {"expected_qps": s.offline_expected_qps or 1.0}
    else:
        kw = {"expected_latency_ms": s.single_stream_expected_latency_ms or 1.0}
    res = h.run(name, mode="AccuracyOnly", **kw)
    preds, skipped = h.sut.predictions, dict(h.sut.skipped)
    acc = h.recipe.new_accumulator(h.dataset)
    for i, sample in enumerate(h.dataset):  # dataset order, as the pipeline feeds it (re-ID: queries first)
        if i in preds:
            acc.update(sample, preds[i])
    metrics = acc.compute() if preds else {}
    logged = _accuracy_log_indices(Path(res.log_dir))
    once = None if logged is None else sorted(logged) == list(range(len(h.dataset)))
    return AccuracyResult(metrics, name, len(h.dataset), len(preds), skipped, once, res, acc)


def run_accuracy(recipe, dataset, session, *, bs: int = 1, scenario: str = "Offline",
                 settings: LoadSettings | None = None, log_dir: str | os.PathLike | None = None) -> AccuracyResult:
    """LoadGen accuracy mode over ``dataset``: the same metric dict as ``pipeline.run`` on the same samples."""
    h = Harness(recipe, dataset, session, bs=bs, settings=settings, log_dir=log_dir)
    try:
        return _accuracy(h, scenario)
    finally:
        h.close()


# ------------------------------------------------------------------------------------------------ the suite
@dataclass
class LoadGenRun:
    """What :func:`run_scenarios` measured: one :class:`ScenarioResult` per scenario, the Server search, the
    accuracy-mode metric, and where LoadGen's logs are."""

    model: str
    backend: str
    device: str | None
    bs: int
    settings: LoadSettings
    results: dict[str, ScenarioResult]
    server: ServerSearch | None
    accuracy: AccuracyResult | None
    log_dir: str
    calibration: dict[str, float] | None
    reference_metrics: dict[str, float] | None = None
    wall_s: float = 0.0

    @property
    def rows(self) -> list[dict]:
        """One row per scenario (the Server row is the search's best probe, or its last one when none met the
        bound), for :func:`scenario_table`."""
        out = []
        for name, res in self.results.items():
            row = {"model": self.model, "backend": self.backend, **res.row()}
            if name == "Server" and self.server is not None:
                row["server_qps_at_bound"] = self.server.qps
                row["latency_bound_ms"] = self.server.latency_bound_ms
                if self.server.best is None:
                    row["result"] = f"no QPS meets p99 <= {self.server.latency_bound_ms:.4g} ms"
            out.append(row)
        return out

    def accuracy_matches(self, tol: float = 1e-9) -> bool | None:
        """Whether accuracy mode gave the reference (normal run's) metrics, within ``tol`` per key."""
        if self.accuracy is None or self.reference_metrics is None:
            return None
        return metrics_match(self.accuracy.metrics, self.reference_metrics, tol)

    def document(self) -> dict:
        """The ``under_load`` section of metrics.json."""
        return {"loadgen_version": _loadgen_version(), "model": self.model, "backend": self.backend,
                "device": self.device, "bs": self.bs, "settings": asdict(self.settings),
                "calibration": self.calibration, "log_dir": self.log_dir, "wall_s": self.wall_s,
                "scenarios": {k: v.as_dict() for k, v in self.results.items()},
                "server_search": None if self.server is None else self.server.as_dict(),
                "accuracy_mode": None if self.accuracy is None else {
                    **self.accuracy.as_dict(), "reference_metrics": self.reference_metrics,
                    "matches_normal_run": self.accuracy_matches()}}

    def copy_logs(self, dest: str | os.PathLike) -> Path:
        """Copy every LoadGen log folder into ``dest`` (e.g. ``<run folder>/loadgen``); returns ``dest``."""
        dest = Path(dest)
        if dest.resolve() != Path(self.log_dir).resolve():
            shutil.copytree(self.log_dir, dest, dirs_exist_ok=True)
        return dest


def metrics_match(a: dict, b: dict, tol: float = 1e-9) -> bool:
    """Same keys, and every value within ``tol`` (NaN equals NaN)."""
    if set(a) != set(b):
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, (int, float)) and isinstance(y, (int, float)):
            if math.isnan(x) and math.isnan(y):
                continue
            if abs(float(x) - float(y)) > tol:
                return False
        elif x != y:
            return False
    return True


def _loadgen_version() -> str | None:
    try:
        from importlib import metadata

        return metadata.version("mlcommons-loadgen")
    except Exception:  # noqa: BLE001
        return None


def run_scenarios(recipe, dataset, session, *, bs: int = 1, settings: LoadSettings | None = None,
                  scenarios: Sequence[str] = SCENARIOS, log_dir: str | os.PathLike | None = None,
                  accuracy: bool = False, accuracy_scenario: str = "Offline",
                  reference_metrics: dict[str, float] | None = None, workers: int | None = None,
                  progress: bool = False) -> LoadGenRun:
    """Run ``scenarios`` (any of SingleStream, Offline, Server; run in that order) through LoadGen on ``session``
    over ``dataset`` at batch size ``bs`` (rows; views count), plus LoadGen's accuracy mode when ``accuracy``.

    Server: the search of :func:`server_search` with ``settings.latency_bound_ms`` (None: 3x the SingleStream p90,
    else 3x one calibrated inference), starting at ``settings.target_qps`` (None: the Offline samples/s).
    ``log_dir``: where LoadGen's log folders go (one per run; None: a temporary folder, see ``LoadGenRun.log_dir``).
    ``reference_metrics``: the normal run's metrics, compared with accuracy mode's in ``document()``.
    """
    names = [scenario_name(s) for s in scenarios]
    if not names and not accuracy:
        raise ZooinferError(f"no scenario given; valid scenarios: {', '.join(SCENARIOS)}")
    ordered = [s for s in SCENARIOS if s in names]
    t0 = time.perf_counter()
    h = Harness(recipe, dataset, session, bs=bs, settings=settings, log_dir=log_dir, workers=workers,
                progress=progress)
    s = h.settings
    results: dict[str, ScenarioResult] = {}
    search = acc = None
    try:
        for name in ordered:
            h._say(f"LoadGen {name} ({recipe.name}, {getattr(session, 'name', '?')}, bs {bs})")
            if name == "SingleStream":
                results[name] = _single_stream(h)
            elif name == "Offline":
                results[name] = _offline(h)
            else:
                bound, source = s.latency_bound_ms, "given"
                if bound is None:
                    ss = results.get("SingleStream")
                    p90 = ss.figures.get("latency_ms_p90") if ss else None
                    if p90:
                        bound, source = 3.0 * p90, "3x SingleStream p90"
                    else:
                        bound, source = 3.0 * h.calibrate()["sample_latency_ms"], "3x one calibrated inference"
                off = results.get("Offline")
                capacity = off.figures.get("samples_per_s") if off else None
                search = _server_search(h, float(bound), capacity, source)
                results[name] = search.best or _closest_probe(search, h)
            r = results[name]
            h._say(f"  {name}: {r.validity}" + (f" ({r.reason})" if r.reason else ""))
        if accuracy:
            h._say(f"LoadGen accuracy mode ({accuracy_scenario})")
            acc = _accuracy(h, accuracy_scenario)
    finally:
        h.close()
    return LoadGenRun(recipe.name, getattr(session, "name", "?"), getattr(session, "device", None), int(bs), s,
                      results, search, acc, str(h.log_dir), h.calibration, reference_metrics,
                      time.perf_counter() - t0)


def _closest_probe(search: ServerSearch, h: Harness) -> ScenarioResult:
    """When no probe met the bound: the result of the probe with the lowest latency (re-parsed from its logs)."""
    best = min((p for p in search.probes if p["latency_ms_p99"] is not None), key=lambda p: p["latency_ms_p99"],
               default=search.probes[-1])
    return result_from_logs(best["log_dir"], "Server", h.bs)


# ------------------------------------------------------------------------------------------------ presentation
TABLE_COLUMNS = ["model", "backend", "scenario", "bs", "result", "latency_ms_p50", "latency_ms_p90",
                 "latency_ms_p99", "samples_per_s", "qps", "target_qps", "latency_bound_ms", "server_qps_at_bound",
                 "queries", "min_duration_ms", "min_query_count", "performance_sample_count", "reason"]


def scenario_table(rows: "Sequence[dict] | LoadGenRun", columns: Sequence[str] | None = None) -> str:
    """A markdown table of scenario rows (``LoadGenRun.rows`` or a LoadGenRun): verdict, latencies (ms),
    throughput (samples/s), QPS, settings and LoadGen's reason; columns no row has are left out."""
    from .report import markdown_table

    if isinstance(rows, LoadGenRun):
        rows = rows.rows
    rows = list(rows)
    cols = [c for c in (columns or TABLE_COLUMNS) if any(r.get(c) is not None for r in rows)]
    return markdown_table(rows, cols)


def probe_table(search: ServerSearch) -> str:
    """A markdown table of the Server search's probes (target QPS, latencies ms, meets bound, LoadGen verdict)."""
    from .report import markdown_table

    return markdown_table(search.probes, ["target_qps", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99",
                                          "samples_per_s", "queries", "meets_bound", "result"])


def plot_server_search(search: ServerSearch, path: str | os.PathLike | None = None, title: str = "",
                       offline_samples_per_s: float | None = None):
    """Latency (p50/p90/p99, ms) vs target QPS over the Server search's probes, with the bound, the QPS found and
    the Offline throughput (capacity); saved as PNG when ``path`` is given. Returns the figure."""
    import sys

    import matplotlib

    if path is not None and "ipykernel" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probes = sorted(search.probes, key=lambda p: p["target_qps"])
    fig, ax = plt.subplots(figsize=(7, 4))
    x = [p["target_qps"] for p in probes]
    for key, style in (("latency_ms_p50", "o-"), ("latency_ms_p90", "s--"), ("latency_ms_p99", "^-")):
        ax.plot(x, [p[key] for p in probes], style, label=key.replace("latency_ms_", ""), alpha=0.85)
    miss = [p for p in probes if not p["meets_bound"]]
    if miss:
        ax.plot([p["target_qps"] for p in miss], [p["latency_ms_p99"] for p in miss], "x", color="red", ms=9,
                label="misses the bound")
    ax.axhline(search.latency_bound_ms, color="gray", ls=":", label=f"bound {search.latency_bound_ms:.4g} ms "
                                                                     f"(p{100 * search.latency_percentile:g})")
    if search.qps is not None:
        ax.axvline(search.qps, color="green", ls="--", label=f"found {search.qps:.4g} QPS")
    cap = offline_samples_per_s or search.capacity_samples_per_s
    if cap:
        ax.axvline(cap, color="black", ls="-.", alpha=0.5, label=f"Offline {cap:.4g} samples/s")
    ax.set_xlabel("target QPS (LoadGen Server)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title or "Server: latency vs target QPS")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


# ------------------------------------------------------------------------------------------------ command line
def _real_views(recipe, dataset, n: int) -> np.ndarray:
    from .bench import real_views

    views = real_views(recipe, dataset, n)
    if not views:
        raise ZooinferError(f"{recipe.name}: no sample of the dataset could be preprocessed")
    return np.stack(views)


def measure_model(name: str, *, backend: str = "onnxruntime", data_root: str | None = None, bs: int | None = None,
                  batch_sizes: Sequence[int] | None = None, budget_s: float = 120.0, sweep_min_time: float = 2.0,
                  latency_bound_ms: float | None = None, log_dir: str | os.PathLike | None = None,
                  recipe_options: dict | None = None, threads: int | None = None, progress: bool = True) -> dict:
    """Batch sweep (``zooinfer.bench``) then SingleStream, Offline and the Server search for one model on
    ``backend`` with synthetic weights: the row of the benchmarks/README.md "Under load" table and its details.
    ``bs``: images per LoadGen batch (rows = images x views; None: the sweep's best batch size). Settings:
    :meth:`LoadSettings.for_latency` for ``budget_s``."""
    from . import bench, export, recipes
    from .backends import open_session
    from .models import build_model

    t0 = time.perf_counter()
    recipe = recipes.get(name, **(recipe_options or {}))
    model = build_model(name)
    if backend in ("torch", "torch-cuda"):
        session = open_session(backend, model=model, threads=threads)
    else:
        session = open_session(backend, onnx_path=export.export_onnx(recipe, model), threads=threads)
    dataset = recipe.open_dataset(data_root)
    samples = _real_views(recipe, dataset, 4)
    sizes = list(batch_sizes or recipe.bench.batch_sizes)
    sweep = bench.inference_sweep(session, samples, sizes, min_time=sweep_min_time, min_iters=3, warmup=1)
    views = _views_per_sample(recipe, dataset)
    run_bs = int(bs * views) if bs else int(bench.best_batch(sweep) or 1)
    bs1 = next((r for r in sweep if r["bs"] == 1), sweep[0])
    sample_latency_ms = bs1["latency_ms_p50"] * views / bs1["bs"]
    settings = LoadSettings.for_latency(sample_latency_ms, budget_s, latency_bound_ms=latency_bound_ms)
    run = run_scenarios(recipe, dataset, session, bs=run_bs, settings=settings, log_dir=log_dir, progress=progress)
    ss, off, srv = (run.results.get(k) for k in SCENARIOS)
    best = max(sweep, key=lambda r: r["throughput"])
    row = {"model": name, "backend": backend, "images": len(dataset),
           "sweep_bs1_img_s": bs1["throughput"] / views, "sweep_bs1_p90_ms": bs1["latency_ms_p90"] * views,
           "sweep_best_img_s": best["throughput"] / views, "sweep_best_bs": best["bs"], "loadgen_bs": run_bs,
           "ss_p90_ms": ss.figures.get("latency_ms_p90") if ss else None, "ss_result": ss.validity if ss else None,
           "offline_img_s": off.figures.get("samples_per_s") if off else None,
           "offline_result": off.validity if off else None,
           "server_bound_ms": run.server.latency_bound_ms if run.server else None,
           "server_qps": run.server.qps if run.server else None,
           "server_p99_ms": srv.figures.get("latency_ms_p99") if srv and run.server and run.server.qps else None,
           "server_probes": len(run.server.probes) if run.server else None,
           "min_query_count": settings.min_query_count, "min_duration_ms": settings.min_duration_ms,
           "wall_s": time.perf_counter() - t0}
    return {"row": row, "sweep": sweep, "under_load": run.document(),
            "server_statement": run.server.statement if run.server else None}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zooinfer.loadgen [models] [--backend onnxruntime] [--budget-s 120] [--out DIR]``: the batch sweep
    and the three LoadGen scenarios per model on this machine (synthetic weights, embedded samples); prints the
    markdown table of benchmarks/README.md and writes ``<out>/loadgen-<timestamp>.json``."""
    import argparse
    import datetime as dt

    from . import recipes
    from .report import markdown_table, write_json

    ap = argparse.ArgumentParser(prog="python -m zooinfer.loadgen", description=main.__doc__)
    ap.add_argument("models", nargs="*", default=list(recipes.NAMES), help=f"default: {' '.join(recipes.NAMES)}")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--bs", type=int, default=None,
                    help="images per LoadGen batch (PyramidBox: 2 rows each; default: the sweep's best batch size)")
    ap.add_argument("--budget-s", type=float, default=120.0, help="LoadGen time per model (s), roughly")
    ap.add_argument("--latency-bound-ms", type=float, default=None,
                    help="Server p99 bound (ms; default 3x the SingleStream p90)")
    ap.add_argument("--pyramidbox-canvas", type=int, default=None, help="PyramidBox variant (default: the guide's)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)
    for m in args.models:
        if m not in recipes.NAMES:
            ap.error(f"unknown model {m!r}; known: {', '.join(recipes.NAMES)}")
    _loadgen()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    results = {}
    for m in args.models:
        opts = {"canvas": args.pyramidbox_canvas} if m == "pyramidbox" and args.pyramidbox_canvas else None
        results[m] = measure_model(m, backend=args.backend, bs=args.bs, budget_s=args.budget_s,
                                   latency_bound_ms=args.latency_bound_ms, recipe_options=opts, threads=args.threads,
                                   log_dir=out / f"loadgen-{stamp}" / m)
        print(results[m]["server_statement"])
        write_json(out / f"loadgen-{stamp}.json", results)
    print(markdown_table([r["row"] for r in results.values()]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
