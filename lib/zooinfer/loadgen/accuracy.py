"""LoadGen's accuracy mode: every sample issued once, the postprocessed responses fed to the recipe's metric in
dataset order (:func:`run_accuracy`): the same metric as ``pipeline.run`` on the same samples."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .harness import Harness
from .results import ScenarioResult
from .settings import LoadSettings, scenario_name


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
        acc = _accuracy(h, scenario)
    finally:
        h.close()
    if not h.keeps_logs:  # written into a temporary folder, removed by close()
        acc.result.log_dir = None
    return acc
