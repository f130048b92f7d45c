"""``zooinfer diff RUN_A RUN_B``: what changed between two runs of one model, from their stored predictions.

    d = diff_runs("outputs/dpn131/<run A>", "outputs/dpn131/<run B>", max_drop=0.5, max_slowdown=0.1)
    print(d.text())          # metrics with paired 95% intervals, per-class changes, changed samples, speed, manifests
    d.write_html("diff.html")
    d.exit_code              # 0 within the thresholds, 1 past them (bad input raised DiffInputError: exit 2)

Both runs are read, never written: their ``predictions/`` (``store.PredictionStore`` opened read-only), their
metrics.json and, for a rescored folder (``<run>/rescored/<id>``), its metric parameters. The runs must be of the
same model, dataset (name, size, ground-truth contents) and selection (the same sample keys); the diff is made on
the samples both predicted (one skipped by either is left out and said).

- :mod:`.runs`: reading and checking the two folders; parameter / environment differences; speed ratios.
- :mod:`.figures`: every metric of both runs with the paired bootstrap interval of its change; per-class breakdowns.
- :mod:`.samples`: the samples whose prediction changed, worst first.
- :mod:`.present`: the verdict against ``--max-drop`` (percentage points) / ``--max-slowdown`` (fraction), the text
  report and the HTML page.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from ..metrics.intervals import LEVEL, RESAMPLES
from ..metrics.per_class import deltas
from . import figures as _figures
from . import present, runs, samples
from .present import EXIT_BAD_INPUT, EXIT_PAST, EXIT_WITHIN, threshold_value  # noqa: F401
from .runs import DiffInputError, RunSide  # noqa: F401

#: what the units of the paired bootstrap are, by task
UNIT_NAMES = {"classification": "images", "detection": "images", "face_detection": "images", "reid": "queries"}


@dataclass
class RunDiff:
    """Everything a diff found (:func:`diff_runs`); :meth:`to_dict` for JSON, :meth:`text`, :meth:`write_html`."""

    model: str
    task: str
    a: RunSide
    b: RunSide
    samples: int
    left_out: dict
    units: int
    metrics: list[dict]
    per_class_by: str | None
    per_class_figures: list[str]
    per_class: list[dict]
    changed: list[dict]
    speed: dict
    differences: list[dict]
    verdict: dict
    resamples: int = RESAMPLES
    level: float = LEVEL
    seconds: dict = field(default_factory=dict)

    @property
    def unit_name(self) -> str:
        return UNIT_NAMES.get(self.task, "samples")

    @property
    def exit_code(self) -> int:
        """0 within the thresholds (or none given), 1 past them."""
        return self.verdict["exit"]

    def samples_sentence(self) -> str:
        lo = self.left_out
        parts = [f"{len(lo[k])} skipped by {w}" for k, w in (("skipped_a", "RUN_A only"), ("skipped_b", "RUN_B only"),
                                                          ("skipped_both", "both")) if lo.get(k)]
        return (f"{self.samples} samples predicted by both runs" + (f" ({', '.join(parts)}: left out)" if parts
                                                                    else "") + f"; {len(self.changed)} changed.")

    def to_dict(self) -> dict:
        return {"model": self.model, "task": self.task, "run_a": str(self.a.given), "run_b": str(self.b.given),
                "samples": self.samples, "left_out": self.left_out, "bootstrap": {
                    "resamples": self.resamples, "level": self.level, "units": self.units, "unit": self.unit_name,
                    "paired": True},
                "metrics": self.metrics, "per_class": {"by": self.per_class_by, "figures": self.per_class_figures,
                                                       "deltas": self.per_class},
                "changed_samples": self.changed, "speed": self.speed, "differences": self.differences,
                "verdict": self.verdict, "seconds": self.seconds}

    def text(self) -> str:
        """The markdown report ``zooinfer diff`` prints."""
        return present.text_report(self)

    def write_html(self, path: str | Path) -> Path:
        """The HTML page (tables, pictures of the worst changed samples) at ``path``."""
        return present.write_html(self, path)


def _measured_spread(a: RunSide, b: RunSide) -> dict[str, float]:
    """{metric: the larger spread (max - min, a fraction) either run's repeats measured}: the run's own
    ``repeatability`` (``-p repeats N``) or its newest ``zooinfer repeat`` report; {} when neither has one."""
    from ..repeat import read_spread

    out: dict[str, float] = {}
    for side in (a, b):
        for k, v in read_spread(side.folder, side.metrics).items():
            out[k] = max(v, out.get(k, 0.0))
    return out


def _stored(side: RunSide):
    return lambda sample: side.store.get(sample.key)


def diff_runs(run_a: str | Path, run_b: str | Path, *, max_drop: float | None = None,
              max_slowdown: float | None = None, resamples: int = RESAMPLES, seed: int = 0,
              parallel: bool | None = None) -> RunDiff:
    """The diff of two finished (or rescored) run folders of one model (module docstring). ``max_drop``: the most
    any headline metric may fall (percentage points); ``max_slowdown``: the most B's throughput may fall, as a
    fraction of A's. :class:`DiffInputError` (exit 2) for folders that are not finished runs with stored
    predictions, or runs of different models, datasets or selections. ``parallel``: score RUN_B in a second
    process (None: for large COCO runs, :data:`.figures.PARALLEL_FROM`)."""
    t0 = time.perf_counter()
    max_drop = threshold_value("--max-drop", max_drop)
    max_slowdown = threshold_value("--max-slowdown", max_slowdown, fraction=True)
    a, b = runs.open_run(run_a, "RUN_A"), runs.open_run(run_b, "RUN_B")
    runs.check_comparable(a, b)
    _, common, left_out = runs.common_samples(a, b)
    recipe = a.config.recipe()
    t1 = time.perf_counter()
    keys = [s.key for s in common]
    side_a, side_b = _figures.both_sides(a, b, keys, recipe.task, resamples=resamples, seed=seed, parallel=parallel)
    if side_a.units != side_b.units:  # the same samples give the same units: a guard, never expected
        raise DiffInputError(f"the two runs evaluate different numbers of units ({side_a.units} vs {side_b.units})")
    metric_rows = _figures.metric_rows(side_a, side_b, recipe.headline)
    t2 = time.perf_counter()
    changed = samples.changed_samples(recipe.task, common, _stored(a), _stored(b), side_a.rank1, side_b.rank1)
    t3 = time.perf_counter()
    speed = runs.speed_ratios(a, b)
    pa, pb = side_a.per_class, side_b.per_class
    spread = _measured_spread(a, b)
    for row in metric_rows:  # the non-determinism a repeat measured (zooinfer.repeat), where either run has one
        row["measured_spread"] = spread.get(row["metric"])
    verdict = present.judge(metric_rows, speed, max_drop=max_drop, max_slowdown=max_slowdown, spread=spread)
    return RunDiff(model=a.model, task=recipe.task, a=a, b=b, samples=len(common), left_out=left_out,
                   units=side_a.units, metrics=metric_rows, per_class_by=(pa or {}).get("by"),
                   per_class_figures=list((pa or {}).get("figures") or []), per_class=deltas(pa, pb),
                   changed=changed, speed=speed, differences=runs.manifest_differences(a, b), verdict=verdict,
                   resamples=resamples, seconds={"open": round(t1 - t0, 3), "figures": round(t2 - t1, 3),
                                                 "changed_samples": round(t3 - t2, 3),
                                                 "total": round(time.perf_counter() - t0, 3)})
