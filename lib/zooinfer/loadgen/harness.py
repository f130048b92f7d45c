"""One session + dataset + batch size set up once for several LoadGen runs (:class:`Harness`): the sample store
and the SUT are shared, each run writes its own log folder under ``log_dir`` and is parsed into a
:class:`~zooinfer.loadgen.results.ScenarioResult`."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import ZooinferError
from .results import ScenarioResult, result_from_logs
from .settings import LoadSettings, _loadgen, scenario_name
from .sut import BatchingSUT, SampleStore


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
        self.views = _views_per_sample(recipe, dataset)
        self.perf_count = self._performance_count()
        self.store = SampleStore(recipe, dataset, workers=workers, cache_limit=self.perf_count)
        self.sut = BatchingSUT(self.lg, recipe, self.store, session, self.bs, postprocess=self.settings.postprocess)
        self._temporary: tempfile.TemporaryDirectory | None = None
        try:
            self.log_dir = self._log_folder(log_dir)
        except BaseException:
            self.sut.close()
            raise
        self._say = progress if callable(progress) else (print if progress else (lambda _m: None))
        self.calibration: dict[str, float] | None = None
        self.runs = 0

    def _log_folder(self, log_dir: str | os.PathLike | None) -> Path:
        """``log_dir`` made if missing; None: a temporary folder, removed by :meth:`close`."""
        if log_dir is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="zooinfer-loadgen-")
            return Path(self._temporary.name)
        from ..paths import make_folder

        return make_folder(log_dir, "the LoadGen log folder")

    @property
    def keeps_logs(self) -> bool:
        """Whether LoadGen's log folders outlive :meth:`close` (a ``log_dir`` was given; else they were written into
        a temporary folder that ``close`` removes, and results say ``log_dir=None``)."""
        return self._temporary is None

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
            subdir: str | None = None, test_settings: dict | None = None) -> ScenarioResult:
        """One LoadGen test (its own log folder under ``log_dir``); returns its parsed result. ``test_settings``:
        other LoadGen ``TestSettings`` attributes to set (e.g. an audit's ``test05_*`` seeds)."""
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
        for key, value in (test_settings or {}).items():
            setattr(ts, key, value)
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
        """Stop the SUT's threads, drop the samples held in memory, remove a temporary log folder."""
        try:
            self.sut.close()
            self.store.clear()
        finally:
            if self._temporary is not None:
                self._temporary.cleanup()


def _views_per_sample(recipe, dataset, tries: int = 8) -> int:
    """Rows one sample occupies (2 for a model that also runs a mirrored view), from the first sample that
    preprocesses."""
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
