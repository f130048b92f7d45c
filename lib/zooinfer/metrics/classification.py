"""Top-k accuracy as the Ascend ``imagenet_acc_eval.py`` computes it (labels 0-based).

Ranking is ``np.argsort(-scores)`` with numpy's default (introsort, not stable) like the guide: for exactly equal
scores the order is numpy's, deterministic for a given numpy build and input. Ties among float32 logits are rare;
a stable sort could differ only on them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MetricInputError

MAX_K = 5


def ranks_of_labels(logits: np.ndarray, labels: np.ndarray, max_k: int = MAX_K) -> np.ndarray:
    """Position (0-based) of each label among the top ``max_k`` scores, ``max_k`` when not among them.

    ``logits``: (N, C) scores; ``labels``: (N,) 0-based class indices.
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels).astype(np.int64)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise MetricInputError(f"topk: logits must be (N, C) and labels (N,), got {logits.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise MetricInputError(f"topk: labels must be 0-based class indices below {logits.shape[1]}")
    order = np.argsort(-logits, axis=1)[:, :max_k]
    hit = order == labels[:, None]
    return np.where(hit.any(axis=1), hit.argmax(axis=1), max_k)


def topk_from_ranks(ranks: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """{"top<k>": fraction of samples whose label rank is below k}."""
    ranks = np.asarray(ranks)
    n = max(len(ranks), 1)
    return {f"top{k}": float(np.count_nonzero(ranks < k) / n) for k in ks}


def topk(logits: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Top-k accuracies (fractions) for (N, C) ``logits`` and (N,) 0-based ``labels``."""
    if max(ks) > MAX_K:
        return topk_from_ranks(ranks_of_labels(logits, labels, max(ks)), ks)
    return topk_from_ranks(ranks_of_labels(logits, labels), ks)


@dataclass(frozen=True)
class TopKScores:
    """A (C,) logits prediction reduced to its best ``MAX_K`` classes, in the order :func:`ranks_of_labels` ranks
    them (what scale-out workers send back instead of the logits: ~60 bytes instead of 4 KB per ImageNet image)."""

    classes: np.ndarray  # (MAX_K,) int32 class indices, best first
    scores: np.ndarray  # (MAX_K,) their logits
    n_classes: int


def compact_logits(logits: np.ndarray) -> TopKScores:
    """The top ``MAX_K`` of (C,) ``logits``, ranked by the same ``np.argsort`` call as :func:`ranks_of_labels`, so
    ``TopKAccumulator`` gives identical ranks (ties included) from either form."""
    row = np.asarray(logits)[None]
    order = np.argsort(-row, axis=1)[0, :MAX_K]
    return TopKScores(order.astype(np.int32), row[0, order].copy(), int(row.shape[1]))


class TopKAccumulator:
    """Streams logits; keeps one small rank per sample (not the logits), so memory is O(N) bytes."""

    def __init__(self) -> None:
        self._ranks: list[int] = []
        self._labels: list[int] = []
        self.keys: list[str] = []

    def update(self, sample, logits: np.ndarray | TopKScores) -> None:
        """``sample.target`` is the 0-based label; ``logits`` the (C,) scores or their :func:`compact_logits`."""
        if isinstance(logits, TopKScores):
            label = int(sample.target)
            if not 0 <= label < logits.n_classes:
                raise MetricInputError(f"topk: labels must be 0-based class indices below {logits.n_classes}")
            hit = np.flatnonzero(logits.classes == label)
            self._ranks.append(int(hit[0]) if hit.size else MAX_K)
        else:
            self._ranks.append(int(ranks_of_labels(np.asarray(logits)[None], np.array([sample.target]))[0]))
        self._labels.append(int(sample.target))
        self.keys.append(sample.key)

    def compute(self) -> dict[str, float]:
        out = topk_from_ranks(np.array(self._ranks), ks=tuple(range(1, MAX_K + 1)))
        out["n_images"] = len(self._ranks)
        return out

    def intervals(self, level: float = 0.95, resamples: int = 200,
                  seed: int = 0) -> dict[str, tuple[float, float] | None]:
        """Wilson ``level`` interval (fractions) of each top-k rate ``compute()`` returns (``top1`` .. ``top5``);
        the samples are the trials. ``resamples`` / ``seed`` are unused (no bootstrap: the interval is closed-form).
        Every key maps to None when no sample was received."""
        from .intervals import wilson

        ranks = self.ranks
        return {f"top{k}": wilson(int(np.count_nonzero(ranks < k)), len(ranks), level) if len(ranks) else None
                for k in range(1, MAX_K + 1)}

    def weighted_figures(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """top1 .. top5 (fractions) with the samples weighted: ``weights`` (R, N) over the samples in arrival order
        (e.g. :func:`~zooinfer.metrics.intervals.bootstrap_weights`), one row per resample; (R,) arrays, NaN where a
        row weights no sample. All-ones weights give compute()'s rates."""
        from .intervals import weighted_ratio

        ranks = self.ranks
        w = np.asarray(weights)
        if w.ndim != 2 or w.shape[1] != len(ranks):
            raise MetricInputError(f"top-k weights must be (R, {len(ranks)}), got {w.shape}")
        return {f"top{k}": weighted_ratio(w, ranks < k, np.ones(len(ranks))) for k in range(1, MAX_K + 1)}

    def per_class(self) -> dict:
        """Top-1 (and top-5) per ground-truth class (0-based index, named ``class <i>``), in class order; ``n``
        images of that class (:mod:`~zooinfer.metrics.per_class`; a report shows the 20 worst)."""
        from .per_class import breakdown

        ranks, labels = self.ranks, np.array(self._labels, dtype=np.int64)
        rows = []
        for c in np.unique(labels):
            r = ranks[labels == c]
            rows.append({"name": f"class {int(c)}", "top1": float(np.mean(r < 1)), "top5": float(np.mean(r < 5)),
                         "n": int(len(r))})
        return breakdown("class", ("top1", "top5"), rows)

    @property
    def ranks(self) -> np.ndarray:
        """(N,) int64 position (0-based) of each sample's label among its top ``MAX_K`` classes (``MAX_K``: not
        among them), in arrival order, aligned with :attr:`keys`."""
        return np.array(self._ranks, dtype=np.int64)

    def write_artifacts(self, folder: Any) -> list:
        """The run's files besides metrics.json: none for top-k (the hook every evaluator has)."""
        return []


def read_result_txt(path: str | Path, n_classes: int | None = None) -> np.ndarray:
    """Scores from an ais_bench/benchmark text result: the first line, split on single spaces, as float32."""
    path = Path(path)
    with open(path) as f:
        line = f.readline().strip()
    try:
        scores = np.array([np.float32(t) for t in line.split(" ") if t != ""], dtype=np.float32)
    except ValueError:
        raise MetricInputError(f"{path}:1: not a line of space-separated numbers") from None
    if n_classes is not None and scores.size != n_classes:
        raise MetricInputError(f"{path}:1: {scores.size} scores, expected {n_classes}")
    return scores


def guide_key(result_file_name: str) -> str:
    """The guide's result -> image key: name before the first '.', cut at the last '_' (``x_1.txt`` -> ``x``)."""
    base = result_file_name.split(".")[0]
    return base.rsplit("_", 1)[0] if "_" in base else base
