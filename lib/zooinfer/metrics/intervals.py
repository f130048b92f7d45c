"""Confidence intervals for accuracy figures measured on a random subset: Wilson intervals for rates (top-k) and
percentile bootstraps over the evaluated units (images, queries) for everything else (AP, mAP, CMC).

Every interval is a ``(lo, hi)`` pair of fractions, in the units of the figure it belongs to. A bootstrap here is
expressed as **draw counts**: resampling ``n`` units with replacement is the same as giving unit ``i`` the weight
``c_i`` = how many times it was drawn (a multinomial draw, ``sum(c) == n``); the accumulators recompute their figure
with those weights, vectorised over all resamples at once, instead of materialising resampled data sets. With every
weight 1 the weighted figure is the figure itself (each accumulator's tests check that).
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

#: confidence level of every interval unless told otherwise
LEVEL = 0.95
#: bootstrap resamples unless told otherwise
RESAMPLES = 200

Interval = tuple[float, float]


def wilson(successes: int, n: int, level: float = LEVEL) -> Interval:
    """Wilson score interval (no continuity correction) for ``successes`` out of ``n`` trials, as fractions.

    ``scipy.stats.binomtest(...).proportion_ci(method="wilson")`` (exactly 0 / 1 at the ends: 0/n gives lo 0,
    n/n gives hi 1). ``n`` must be >= 1 and ``0 <= successes <= n``."""
    from scipy.stats import binomtest

    successes, n = int(successes), int(n)
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"wilson: need 0 <= successes <= n and n >= 1, got {successes} of {n}")
    ci = binomtest(successes, n).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def percentile_interval(values: Iterable[float] | np.ndarray, level: float = LEVEL) -> Interval | None:
    """Percentile-bootstrap interval: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles (numpy's default,
    linear interpolation) of the (R,) resampled figures ``values``. NaN entries (resamples where the figure is
    undefined, e.g. no valid unit drawn) are left out; None when none is left.

    Written here rather than with ``scipy.stats.bootstrap``: that function draws and resamples the data itself and
    calls the statistic on each resampled data set, while the figures here are computed from draw counts for all
    resamples at once (:func:`bootstrap_weights`); what remains is two quantiles."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    if not v.size:
        return None
    lo, hi = np.quantile(v, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap_weights(n_units: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """(resamples, n_units) int64 draw counts: row r says how many times each unit is drawn when ``n_units`` units
    are resampled with replacement (``np.random.default_rng(seed).multinomial``; each row sums to ``n_units``).
    Same seed, same counts."""
    n_units, resamples = int(n_units), int(resamples)
    if n_units < 0 or resamples < 1:
        raise ValueError(f"bootstrap_weights: need n_units >= 0 and resamples >= 1, got {n_units}, {resamples}")
    if n_units == 0:
        return np.zeros((resamples, 0), dtype=np.int64)
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=resamples).astype(np.int64)


def percentile_intervals(figures: Mapping[str, np.ndarray], level: float = LEVEL) -> dict[str, Interval | None]:
    """:func:`percentile_interval` of each (R,) array of resampled figures, by key (None: undefined in every
    resample)."""
    return {k: percentile_interval(v, level) for k, v in figures.items()}


def weighted_ratio(weights: np.ndarray, numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """(R,) ``weights @ numerator / weights @ denominator`` for (R, n) unit weights and (n,) per-unit values (NaN
    where the weighted denominator is 0): a mean over units (``denominator`` all 1 or a validity mask) per
    resample."""
    w = np.asarray(weights, dtype=np.float64)
    num = w @ np.asarray(numerator, dtype=np.float64)
    den = w @ np.asarray(denominator, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
