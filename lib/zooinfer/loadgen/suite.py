"""The scenario list of a report section: :func:`run_scenarios` runs SingleStream, Offline, the Server search and
accuracy mode on one :class:`~zooinfer.loadgen.harness.Harness` and returns a :class:`LoadGenRun` (rows, the
``under_load`` document of metrics.json)."""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import ZooinferError
from .accuracy import AccuracyResult, _accuracy
from .harness import Harness
from .results import ScenarioResult, metrics_match, result_from_logs
from .scenarios import _offline, _single_stream
from .server import ServerSearch, _server_search
from .settings import SCENARIOS, LoadSettings, scenario_name


@dataclass
class LoadGenRun:
    """What :func:`run_scenarios` measured: one :class:`ScenarioResult` per scenario, the Server search, the
    accuracy-mode metric, the scenarios that failed (and why), and where LoadGen's logs are (None: they were written
    into a temporary folder, removed after the run)."""

    model: str
    backend: str
    device: str | None
    bs: int
    settings: LoadSettings
    results: dict[str, ScenarioResult]
    server: ServerSearch | None
    accuracy: AccuracyResult | None
    log_dir: str | None
    calibration: dict[str, float] | None
    reference_metrics: dict[str, float] | None = None
    wall_s: float = 0.0
    #: scenario (or "accuracy") -> why it did not complete (LoadGen refused it, the session failed); the others ran
    failures: dict[str, str] = field(default_factory=dict)
    #: MLPerf's compliance audits (``audit.run_audits``): {TEST01: {"result": PASS / FAIL, "rows": ...}, ...}
    audits: dict[str, dict] = field(default_factory=dict)

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
        for name, why in self.failures.items():
            out.append({"model": self.model, "backend": self.backend, "scenario": name, "bs": self.bs,
                        "result": "FAILED", "reason": why})
        return out

    def accuracy_matches(self, tol: float = 1e-9) -> bool | None:
        """Whether accuracy mode gave the reference (normal run's) metrics, within ``tol`` per key."""
        if self.accuracy is None or self.reference_metrics is None:
            return None
        return metrics_match(self.accuracy.metrics, self.reference_metrics, tol)

    def document(self, relative_to: str | os.PathLike | None = None) -> dict:
        """The ``under_load`` section of metrics.json. ``relative_to``: a folder (the run folder) that every
        ``log_dir`` inside it is written relative to, so the paths stay right when the folder is renamed or
        moved."""
        doc = {"loadgen_version": _loadgen_version(), "model": self.model, "backend": self.backend,
               "device": self.device, "bs": self.bs, "settings": asdict(self.settings),
               "calibration": self.calibration, "log_dir": self.log_dir, "wall_s": self.wall_s,
               "scenarios": {k: v.as_dict() for k, v in self.results.items()},
               "failures": dict(self.failures), "audits": self.audits,
               "server_search": None if self.server is None else self.server.as_dict(),
               "accuracy_mode": None if self.accuracy is None else {
                   **self.accuracy.as_dict(), "reference_metrics": self.reference_metrics,
                   "matches_normal_run": self.accuracy_matches()}}
        return doc if relative_to is None else _relative_log_dirs(doc, Path(relative_to))

    def copy_logs(self, dest: str | os.PathLike) -> Path:
        """Copy every LoadGen log folder into ``dest`` (e.g. ``<run folder>/loadgen``); returns ``dest``."""
        if self.log_dir is None:
            raise ZooinferError("LoadGen's logs were not kept (they went into a temporary folder): pass log_dir= to "
                                "run_scenarios to keep them")
        dest = Path(dest)
        if dest.resolve() != Path(self.log_dir).resolve():
            shutil.copytree(self.log_dir, dest, dirs_exist_ok=True)
        return dest

    def drop_log_paths(self) -> None:
        """Say ``log_dir=None`` everywhere (the temporary folder LoadGen wrote into is gone)."""
        self.log_dir = None
        for res in self.results.values():
            res.log_dir = None
        if self.server is not None:
            self.server.drop_log_paths()
        if self.accuracy is not None:
            self.accuracy.result.log_dir = None
        for doc in self.audits.values():
            doc["log_dir"] = None
            for row in doc.get("rows", []):
                row["log_dir"] = None


def _relative_log_dirs(doc: Any, base: Path) -> Any:
    """``doc`` with every ``"log_dir"`` value under ``base`` written relative to it (POSIX separators)."""
    if isinstance(doc, dict):
        return {k: (_relative_path(v, base) if k == "log_dir" and isinstance(v, str) else _relative_log_dirs(v, base))
                for k, v in doc.items()}
    if isinstance(doc, list):
        return [_relative_log_dirs(v, base) for v in doc]
    return doc


def _relative_path(path: str, base: Path) -> str:
    try:
        return Path(path).resolve().relative_to(base.resolve()).as_posix()
    except ValueError:  # outside ``base``: left as given
        return path


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
                  progress: bool = False, audits: Sequence[str] = ()) -> LoadGenRun:
    """Run ``scenarios`` (any of SingleStream, Offline, Server; run in that order) through LoadGen on ``session``
    over ``dataset`` at batch size ``bs`` (rows; views count), plus LoadGen's accuracy mode when ``accuracy``.

    Server: the search of :func:`server_search` with ``settings.latency_bound_ms`` (None: 3x the SingleStream p90,
    else 3x one calibrated inference), starting at ``settings.target_qps`` (None: the Offline samples/s).
    ``log_dir``: where LoadGen's log folders go (``<log_dir>/<scenario>/``, one per run; None: a temporary folder
    removed when the runs end). ``reference_metrics``: the normal run's metrics, compared with accuracy mode's in
    ``document()``.

    A scenario that fails (LoadGen refuses its settings, the session fails during it) does not end the others: it
    is recorded in ``LoadGenRun.failures`` with the reason (a FAILED row in ``rows``). Bad arguments, and what stops
    every scenario (no LoadGen, a static batch size ``bs`` does not fit), raise ZooinferError before any run.

    ``audits``: MLPerf's compliance audits (TEST01, TEST04, TEST05; :mod:`.audit`) rerun every scenario that
    completed, after the scenarios and accuracy mode: PASS / FAIL per audit in ``LoadGenRun.audits``.
    """
    from .audit import audit_name, run_audits

    names = [scenario_name(s) for s in scenarios]
    tests = [audit_name(a) for a in audits]
    if tests and not names:
        raise ZooinferError("the audits rerun the LoadGen scenarios: give scenarios too (e.g. Offline)")
    if not names and not accuracy:
        raise ZooinferError(f"no scenario given; valid scenarios: {', '.join(SCENARIOS)}")
    ordered = [s for s in SCENARIOS if s in names]
    t0 = time.perf_counter()
    h = Harness(recipe, dataset, session, bs=bs, settings=settings, log_dir=log_dir, workers=workers,
                progress=progress)
    s = h.settings
    results: dict[str, ScenarioResult] = {}
    search = acc = None
    failures: dict[str, str] = {}
    audited: dict[str, dict] = {}
    accuracy_predictions = None
    try:
        for name in ordered:
            h._say(f"LoadGen {name} ({recipe.name}, {getattr(session, 'name', '?')}, bs {bs})")
            try:
                if name == "Server":
                    search = _server(h, results)
                    results[name] = search.best or _closest_probe(search, h)
                else:
                    results[name] = _single_stream(h) if name == "SingleStream" else _offline(h)
            except Exception as e:  # noqa: BLE001 - one scenario's failure is reported; the others still run
                failures[name] = _failure_reason(e)
                h._say(f"  {name}: FAILED ({failures[name]})")
                continue
            r = results[name]
            h._say(f"  {name}: {r.validity}" + (f" ({r.reason})" if r.reason else ""))
        if accuracy:
            h._say(f"LoadGen accuracy mode ({accuracy_scenario})")
            try:
                acc = _accuracy(h, accuracy_scenario)
                accuracy_predictions = dict(h.sut.predictions)
            except Exception as e:  # noqa: BLE001 - as a scenario
                failures["accuracy"] = _failure_reason(e)
                h._say(f"  accuracy mode: FAILED ({failures['accuracy']})")
        if tests:
            try:
                audited = run_audits(h, results, tests, accuracy_predictions)
            except Exception as e:  # noqa: BLE001 - as a scenario
                failures["audits"] = _failure_reason(e)
    finally:
        h.close()
    run = LoadGenRun(recipe.name, getattr(session, "name", "?"), getattr(session, "device", None), int(bs), s,
                     results, search, acc, str(h.log_dir), h.calibration, reference_metrics,
                     time.perf_counter() - t0, failures, audited)
    if not h.keeps_logs:
        run.drop_log_paths()
    return run


def _server(h: Harness, results: dict[str, ScenarioResult]) -> ServerSearch:
    """The Server search with the given bound, else 3x the SingleStream p90 (else 3x one calibrated inference),
    from the Offline samples/s when Offline ran."""
    bound, source = h.settings.latency_bound_ms, "given"
    if bound is None:
        ss = results.get("SingleStream")
        p90 = ss.figures.get("latency_ms_p90") if ss else None
        if p90:
            bound, source = 3.0 * p90, "3x SingleStream p90"
        else:
            bound, source = 3.0 * h.calibrate()["sample_latency_ms"], "3x one calibrated inference"
    off = results.get("Offline")
    capacity = off.figures.get("samples_per_s") if off else None
    return _server_search(h, float(bound), capacity, source)


def _failure_reason(error: BaseException) -> str:
    """One line: a ZooinferError's own message, else the exception's type and message."""
    return str(error) if isinstance(error, ZooinferError) else f"{type(error).__name__}: {error}"


def _closest_probe(search: ServerSearch, h: Harness) -> ScenarioResult:
    """When no probe met the bound: the result of the probe with the lowest latency (re-parsed from its logs)."""
    best = min((p for p in search.probes if p["latency_ms_p99"] is not None), key=lambda p: p["latency_ms_p99"],
               default=search.probes[-1])
    return result_from_logs(best["log_dir"], "Server", h.bs)
