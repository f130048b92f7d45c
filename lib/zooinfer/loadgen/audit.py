"""MLPerf's compliance audits through LoadGen's ``audit.config`` (the ``audits`` parameter): after the scenarios,
each audit reruns every scenario that completed with the same settings, with an ``audit.config`` LoadGen reads from
its working directory, and compares the rerun with the scenario's own run.

- **TEST01** (accuracy in performance mode): LoadGen logs a sample of the responses of a performance run
  (``accuracy_log_sampling_target``); each response carries its compact prediction (``store.encode_chunk`` bytes),
  and every logged one must be the prediction accuracy mode gave for the same sample
  (``repeat.prediction_change``). The performance ratio is reported, not judged.
- **TEST04** (no caching): LoadGen issues one sample over and over (``performance_issue_same``); the rerun may be at
  most :data:`TEST04_FASTER` faster than the scenario's own run.
- **TEST05** (other RNG seeds): LoadGen's qsl, sample-index and schedule seeds changed (in the TestSettings the
  rerun requests: LoadGen 6 reads no seed from an audit.config; its detail log shows the effective seeds, checked);
  the rerun's performance must be within :data:`TEST05_WITHIN` of the scenario's own (:data:`TEST05_WITHIN_FAST`
  when the SingleStream latency is at most :data:`TEST05_FAST_MS`).

"Performance" is what the scenario reports: Offline samples/s, SingleStream p90 latency, Server p99 latency (faster
= a higher rate or a lower latency). Each audit runs in ``<log_dir>/audits/<TEST>/`` (its audit.config there, the
working directory during the run, put back after; LoadGen's logs in ``<TEST>/<scenario>/``): nothing is written
outside the log folder. The facts below are MLPerf's compliance rules (mlcommons/inference, ``compliance/``); the
code is ours.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from ..errors import ZooinferError
from ..paths import working_folder
from ..parameters import AUDITS, audit_name  # noqa: F401 - the names and their parser live below config

#: TEST04: the repeated-sample run may be at most this much faster (fraction)
TEST04_FASTER = 0.10
#: TEST05: the other seeds' performance within this fraction; SingleStream latencies at most TEST05_FAST_MS get
#: TEST05_WITHIN_FAST (run-to-run noise of very short latencies)
TEST05_WITHIN, TEST05_WITHIN_FAST, TEST05_FAST_MS = 0.05, 0.20, 0.2
#: TEST01: responses LoadGen logs in the performance run (about; it samples with this target)
TEST01_SAMPLING_TARGET = 32
#: TEST01: LoadGen's accuracy-log seed; TEST04: the index of the repeated sample; TEST05: the seeds (any values
#: other than the run's own)
TEST01_LOG_SEED = 7203815392
TEST04_SAME_INDEX = 3
TEST05_SEEDS = {"qsl_rng_seed": 3135883583, "sample_index_rng_seed": 4713971561, "schedule_rng_seed": 4139145733}
#: per scenario: the figure compared, and whether higher is faster
MEASURES = {"Offline": ("samples_per_s", True), "SingleStream": ("latency_ms_p90", False),
            "Server": ("latency_ms_p99", False)}


def audit_config(test: str, n_samples: int) -> str:
    """The text of the ``audit.config`` for ``test`` (``*.*.key = value`` lines: every model and scenario)."""
    lines = ["*.*.mode = 2"]  # a performance run
    if test == "TEST01":
        lines += [f"*.*.accuracy_log_rng_seed = {TEST01_LOG_SEED}",
                  f"*.*.accuracy_log_sampling_target = {TEST01_SAMPLING_TARGET}"]
    elif test == "TEST04":
        lines += ["*.*.performance_issue_unique = 0", "*.*.performance_issue_same = 1",
                  f"*.*.performance_issue_same_index = {min(TEST04_SAME_INDEX, max(0, n_samples - 1))}"]
    # TEST05: LoadGen (6.x) reads no seed from an audit.config (nor its test05 keys): _rerun sets the seeds in the
    # TestSettings it requests, and _not_applied checks LoadGen's effective seeds
    return "# zooinfer: MLPerf compliance audit " + test + "\n" + "\n".join(lines) + "\n"


def encode_prediction(prediction: Any) -> bytes:
    """A compact prediction as the bytes of a one-record store chunk (numpy .npz, no pickle): what a TEST01
    response carries."""
    import numpy as np

    from ..store import encode_chunk

    buffer = io.BytesIO()
    np.savez(buffer, **encode_chunk([("r", prediction)]))
    return buffer.getvalue()


def decode_prediction(data: bytes) -> Any:
    """:func:`encode_prediction`'s bytes back to the prediction."""
    import numpy as np

    from ..store import decode_chunk

    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return decode_chunk(npz)["r"]


def logged_responses(log_dir: str | os.PathLike) -> list[tuple[int, bytes]]:
    """(sample index, response bytes) of every response LoadGen logged in ``mlperf_log_accuracy.json``."""
    path = Path(log_dir) / "mlperf_log_accuracy.json"
    try:
        entries = json.loads(path.read_text() or "[]")
    except (OSError, ValueError) as e:
        raise ZooinferError(f"LoadGen's accuracy log {path} cannot be read ({e})") from None
    return [(int(e["qsl_idx"]), bytes.fromhex(e.get("data") or "")) for e in entries]


def _speed(result: Any, scenario: str) -> tuple[str, float | None]:
    """(figure name, its value as a speed: higher = faster) of a scenario result."""
    name, higher = MEASURES[scenario]
    value = result.figures.get(name)
    if not isinstance(value, (int, float)) or value <= 0:
        return name, None
    return name, float(value) if higher else 1.0 / float(value)


def _rerun(h: Any, test: str, scenario: str, reference: Any, subdir: str) -> Any:
    """``scenario`` again with the settings of its own run ``reference``, logs in ``subdir`` of the log folder.
    TEST05's seeds are set in the requested TestSettings (LoadGen reads none from an audit.config)."""
    s, st = h.settings, reference.settings
    extra = dict(TEST05_SEEDS) if test == "TEST05" else None
    if scenario == "Offline":
        return h.run("Offline", expected_qps=st.get("expected_qps"), subdir=subdir, test_settings=extra)
    if scenario == "SingleStream":
        return h.run("SingleStream", expected_latency_ms=st.get("expected_latency_ms"), subdir=subdir,
                     test_settings=extra)
    return h.run("Server", target_qps=st.get("target_qps"), latency_bound_ms=st.get("latency_bound_ms"),
                 min_query_count=s.server_min_query_count, subdir=subdir, test_settings=extra)


def _not_applied(test: str, log_dir: str) -> str | None:
    """Why LoadGen's detail log shows the audit.config was not applied (None: it was): the file was not found, or
    the setting the audit changes is not in effect."""
    from .results import parse_detail_log

    detail = parse_detail_log(Path(log_dir) / "mlperf_log_detail.txt")
    if not any("audit.config" in w for w in detail.get("warnings[]", [])):
        return "LoadGen did not find the audit.config in its working directory"
    if test == "TEST04" and not detail.get("effective_performance_issue_same"):
        return "LoadGen did not issue one sample repeatedly (effective_performance_issue_same is false)"
    if test == "TEST05" and any(str(detail.get(f"effective_{k}")) != str(v) for k, v in TEST05_SEEDS.items()):
        return "LoadGen kept its seeds (effective_*_rng_seed are not the audit's)"
    return None


def _judge(test: str, scenario: str, reference: Any, audited: Any, accuracy: dict | None, task: str) -> dict:
    """One audit row: PASS / FAIL and why."""
    name, ref = _speed(reference, scenario)
    _, got = _speed(audited, scenario)
    ratio = got / ref if got and ref else None
    row = {"audit": test, "scenario": scenario, "measure": name, "reference": reference.figures.get(name),
           "audited": audited.figures.get(name), "speed_ratio": ratio, "log_dir": audited.log_dir}
    unapplied = _not_applied(test, audited.log_dir)
    if unapplied:
        row.update(result="FAIL", criterion="LoadGen applies the audit.config", note=unapplied)
        return row
    if test == "TEST01":
        from ..repeat import prediction_change

        logged = logged_responses(audited.log_dir)
        bad = []
        for index, data in logged:
            want = (accuracy or {}).get(index)
            if want is None:
                bad.append(f"sample {index}: no accuracy-mode prediction")
                continue
            why = prediction_change(task, want, decode_prediction(data)) if data else "an empty response"
            if why:
                bad.append(f"sample {index}: {why}")
        row.update(logged=len(logged), mismatched=len(bad))
        if not logged:
            row.update(result="FAIL", criterion="logged responses equal accuracy mode's",
                       note="LoadGen logged no response (too few queries for its sampling)")
        else:
            row.update(result="FAIL" if bad else "PASS", criterion="logged responses equal accuracy mode's",
                       note="; ".join(bad[:3]) or f"{len(logged)} logged responses equal accuracy mode's predictions")
        return row
    if ratio is None:
        row.update(result="FAIL", criterion="", note=f"no {name} to compare")
        return row
    if test == "TEST04":
        passed = ratio <= 1.0 + TEST04_FASTER
        row.update(criterion=f"at most {TEST04_FASTER:.0%} faster than the scenario's run",
                   note=f"{ratio:.3f}x the scenario's speed with one sample repeated")
    else:
        fast = scenario == "SingleStream" and (reference.figures.get(name) or 1e9) <= TEST05_FAST_MS
        within = TEST05_WITHIN_FAST if fast else TEST05_WITHIN
        passed = abs(ratio - 1.0) <= within
        row.update(criterion=f"within {within:.0%} of the scenario's run",
                   note=f"{ratio:.3f}x the scenario's speed with other RNG seeds")
    row["result"] = "PASS" if passed else "FAIL"
    return row


def run_audits(h: Any, results: dict, tests: Any, accuracy: dict | None = None) -> dict:
    """Each audit of ``tests`` on every scenario of ``results`` (the scenarios' own runs, {name: ScenarioResult})
    through the harness ``h``; ``accuracy``: accuracy mode's compact predictions by sample index (TEST01; None:
    accuracy mode runs first). Returns {test: {"result": PASS / FAIL, "checks": what it checks, "rows": one per
    scenario, "failures": {scenario: why it could not run}}}."""
    from .accuracy import _accuracy

    out: dict[str, dict] = {}
    names = [audit_name(t) for t in tests]
    if "TEST01" in names and accuracy is None:
        _accuracy(h, "Offline")
        accuracy = dict(h.sut.predictions)
    for test in names:
        folder = Path(h.log_dir) / "audits" / test
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "audit.config").write_text(audit_config(test, len(h.dataset)))
        rows, failures = [], {}
        for scenario, reference in results.items():
            h._say(f"LoadGen audit {test} ({scenario})")
            try:
                if test == "TEST01":
                    h.sut.encode = encode_prediction
                with working_folder(folder):  # LoadGen reads audit.config from the working folder
                    audited = _rerun(h, test, scenario, reference, f"audits/{test}/{scenario}")
                rows.append(_judge(test, scenario, reference, audited, accuracy, h.recipe.task))
            except Exception as e:  # noqa: BLE001 - one audit's failure is reported; the others still run
                failures[scenario] = str(e) if isinstance(e, ZooinferError) else f"{type(e).__name__}: {e}"
            finally:
                h.sut.encode = None
            if rows and rows[-1]["scenario"] == scenario:
                h._say(f"  {test} {scenario}: {rows[-1]['result']} ({rows[-1]['note']})")
        passed = bool(rows) and not failures and all(r["result"] == "PASS" for r in rows)
        out[test] = {"result": "PASS" if passed else "FAIL", "checks": AUDITS[test], "rows": rows,
                     "failures": failures, "log_dir": str(folder)}  # its audit.config, LoadGen's logs
    return out


def audit_rows(audits: dict) -> list[dict]:
    """One flat row per (audit, scenario) for the report's table, the audits that could not run included."""
    rows = []
    for test, doc in (audits or {}).items():
        for r in doc.get("rows", []):
            rows.append({k: r.get(k) for k in ("audit", "scenario", "result", "measure", "reference", "audited",
                                               "speed_ratio", "criterion", "note")})
        for scenario, why in (doc.get("failures") or {}).items():
            rows.append({"audit": test, "scenario": scenario, "result": "FAIL", "note": f"did not run: {why}"})
    return rows


def problems(under_load: dict | None) -> list[str]:
    """What ``zooinfer run --strict`` fails on in an ``under_load`` document: each LoadGen run that is INVALID
    (the scenarios, the Server search's reported probe, the audits' reruns are judged by their audit) or failed,
    and each audit that FAILED; [] when none (or no section)."""
    if not isinstance(under_load, dict):
        return []
    if under_load.get("failed"):
        return [f"Under load did not run: {under_load['failed']}"]
    out = []
    for name, res in (under_load.get("scenarios") or {}).items():
        if isinstance(res, dict) and res.get("validity") != "VALID":
            why = res.get("reason") or "LoadGen gave no reason"
            out.append(f"LoadGen {name}: {res.get('validity')} ({why})")
    for name, why in (under_load.get("failures") or {}).items():
        out.append(f"LoadGen {name}: FAILED ({why})")
    for test, doc in (under_load.get("audits") or {}).items():
        if isinstance(doc, dict) and doc.get("result") != "PASS":
            notes = [f"{r.get('scenario')}: {r.get('note')}" for r in doc.get("rows", []) if r.get("result") != "PASS"]
            notes += [f"{s}: did not run ({w})" for s, w in (doc.get("failures") or {}).items()]
            out.append(f"audit {test}: FAIL ({'; '.join(notes) or 'no scenario audited'})")
    return out
