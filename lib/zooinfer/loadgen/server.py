"""The Server search: the highest target QPS whose percentile latency (ms) meets a bound, by bisection over short
LoadGen Server runs (:func:`server_search`, :class:`ServerSearch`)."""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import ZooinferError
from .harness import Harness
from .results import ScenarioResult
from .settings import LoadSettings


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

    def drop_log_paths(self) -> None:
        """Say ``log_dir=None`` in every probe (the temporary folder LoadGen wrote into is gone)."""
        for p in self.probes:
            p["log_dir"] = None
        if self.best is not None:
            self.best.log_dir = None

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
        search = _server_search(h, float(latency_bound_ms), None)
    finally:
        h.close()
    if not h.keeps_logs:  # written into a temporary folder, removed by close()
        search.drop_log_paths()
    return search
