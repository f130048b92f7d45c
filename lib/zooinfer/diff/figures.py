"""Every metric of both runs on the samples both hold, with paired bootstrap intervals of their change.

Paired bootstrap: the evaluated units (images; queries for re-ID) are resampled with replacement, and **the same
draws** weight both runs (:func:`~zooinfer.metrics.intervals.bootstrap_weights`, one seed): each resample gives both
runs' figures on the same resampled data set, and the interval of the change is the percentile interval of
``B - A`` over the resamples. What the two runs share (the hard images, the rare classes) cancels, so the interval
is much narrower than either run's own interval. Each run's accumulator recomputes its figures for all resamples at
once (``weighted_figures``); an all-ones row first gives the point figures (those of compute(), see each
accumulator). Two identical runs give identical figures in every resample: a change of exactly 0, interval [0, 0].

Each run is scored on its own (:func:`side_figures`: its store, configuration and accumulator, only the sample keys
in common passed in), so the two can run in two processes: COCO at full size spends ~30 s per run in pycocotools'
per-image matching (pure Python), which two cores then do side by side.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..metrics.intervals import LEVEL, RESAMPLES, bootstrap_weights, percentile_interval

#: units (images) from which a COCO diff scores its two runs in two processes (below: in this one)
PARALLEL_FROM = 500


@dataclass
class SideFigures:
    """One run's figures on the common samples: ``point`` {metric: fraction} (the all-ones weighting),
    ``resampled`` {metric: (R,) fractions} (the shared bootstrap draws), ``per_class`` (its breakdown, or None),
    ``rank1`` (re-ID: query key -> its rank-1 gallery key), ``units`` (how many units were resampled)."""

    point: dict[str, float]
    resampled: dict[str, np.ndarray]
    units: int
    per_class: dict | None = None
    rank1: dict[str, str | None] = field(default_factory=dict)


def _units(acc: Any, task: str, per_image: Any) -> int:
    """How many units the accumulator's ``weighted_figures`` weights (images, or queries for re-ID)."""
    if per_image is not None:
        return len(per_image.img_ids)
    if task == "reid":
        return len(acc.q_pids)
    if task == "face_detection":
        return len(acc._evaluated()[1].images)
    return len(acc.ranks)


def score(recipe: Any, data: Any, predictions: Any, *, resamples: int = RESAMPLES, seed: int = 0) -> SideFigures:
    """``recipe``'s accumulator over the samples ``data`` (a dataset), fed ``predictions(sample)`` in order, then
    every figure for an all-ones row and ``resamples`` bootstrap rows (draws from ``seed``)."""
    acc = recipe.new_accumulator(data)
    for s in data:
        acc.update(s, predictions(s))
    per_image = acc.per_image() if hasattr(acc, "per_image") else None
    n = _units(acc, recipe.task, per_image)
    weights = np.vstack([np.ones((1, n), dtype=np.int64), bootstrap_weights(n, resamples, seed)])
    figs = acc.weighted_figures(weights, per_image) if per_image is not None else acc.weighted_figures(weights)
    point = {k: float(v[0]) for k, v in figs.items()}
    resampled = {k: np.asarray(v[1:], dtype=np.float64) for k, v in figs.items()}
    breakdown = None
    if hasattr(acc, "per_class"):
        breakdown = acc.per_class(per_image) if per_image is not None else acc.per_class()
    rank1 = {}
    if recipe.task == "reid":
        from ..compare import rank1_gallery

        rank1 = rank1_gallery(acc)
    return SideFigures(point, resampled, n, breakdown, rank1)


def side_figures(folder: str | Path, overrides: dict, keys: Sequence[str], *, resamples: int = RESAMPLES,
                 seed: int = 0) -> SideFigures:
    """:func:`score` of the run in ``folder`` (read-only: its store, its configuration with the metric parameters
    ``overrides``) on the samples ``keys`` (the samples both runs predicted, in dataset order). Opens everything
    itself, so that it can run in another process."""
    from ..errors import ZooinferError
    from ..rescore import stored_config
    from ..store import PredictionStore, Skip

    store = PredictionStore.open(folder, writable=False)
    config, _ = stored_config(store, overrides)
    recipe = config.recipe()
    dataset = recipe.open_dataset(config.data_root)
    by_key = {s.key: s for s in config.select(dataset)}
    data = replace(dataset, samples=[by_key[k] for k in keys])

    def prediction(sample: Any) -> Any:
        p = store.get(sample.key)
        if isinstance(p, Skip):
            raise ZooinferError(f"{folder}: the stored predictions hold {sample.key} as skipped ({p.reason}) but "
                                "metrics.json does not list it as skipped (an edited run folder?)")
        return p

    return score(recipe, data, prediction, resamples=resamples, seed=seed)


def both_sides(a: Any, b: Any, keys: Sequence[str], task: str, *, resamples: int = RESAMPLES,
               seed: int = 0, parallel: bool | None = None) -> tuple[SideFigures, SideFigures]:
    """:func:`side_figures` of the two runs (``RunSide``); RUN_B in a second process when ``parallel`` (None: for
    COCO from :data:`PARALLEL_FROM` images on a machine with two CPUs or more)."""
    from ..pipeline import available_cpus

    if parallel is None:
        parallel = task == "detection" and len(keys) >= PARALLEL_FROM and available_cpus() >= 2
    args_a = (str(a.folder), dict(a.overrides), list(keys))
    args_b = (str(b.folder), dict(b.overrides), list(keys))
    if not parallel:
        return (side_figures(*args_a, resamples=resamples, seed=seed),
                side_figures(*args_b, resamples=resamples, seed=seed))
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: a fresh interpreter (this process may hold threads: ONNX Runtime, torch), importing zooinfer again
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        future_b = pool.submit(side_figures, *args_b, resamples=resamples, seed=seed)
        side_a = side_figures(*args_a, resamples=resamples, seed=seed)
        return side_a, future_b.result()


def metric_rows(a: SideFigures, b: SideFigures, headline: Sequence[str], level: float = LEVEL) -> list[dict]:
    """One row per metric both runs have (headline metrics first): A, B, the change ``B - A`` and its paired
    bootstrap ``level`` interval, in fractions; ``interval`` None where the change is undefined in every resample."""
    names = [k for k in headline if k in a.point and k in b.point]
    names += [k for k in a.point if k in b.point and k not in names]
    rows = []
    for k in names:
        pa, pb = a.point[k], b.point[k]
        delta = None if np.isnan(pa) or np.isnan(pb) else pb - pa
        ci = percentile_interval(b.resampled[k] - a.resampled[k], level)
        rows.append({"metric": k, "headline": k in headline, "a": None if np.isnan(pa) else pa,
                     "b": None if np.isnan(pb) else pb, "delta": delta, "interval": ci,
                     "contains_0": None if ci is None else bool(ci[0] <= 0.0 <= ci[1])})
    return rows
