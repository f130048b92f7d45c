"""LoadGen's verdict and figures, read from the log folder it writes per run (``mlperf_log_detail.txt``,
``mlperf_log_summary.txt``): :class:`ScenarioResult` (latencies in ms, rates in samples/s)."""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ZooinferError

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
    #: LoadGen's log folder of this run (None: it went into a temporary folder, removed after the run)
    log_dir: str | None
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
