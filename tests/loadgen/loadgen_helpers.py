"""Shared by the tests of zooinfer.loadgen: sessions whose latency is known (they sleep a fixed time per batch), an
accumulator that records what it was fed, and short LoadGen settings."""
from __future__ import annotations

import dataclasses
import time

import numpy as np

SHORT = dict(min_duration_ms=300, max_duration_ms=10_000, min_query_count=8)


class Sleepy:
    """A session that takes ``seconds`` per batch whatever its size (capacity: bs / seconds samples/s) and returns
    outputs derived from its input, so results can be traced back to samples."""

    name, device = "sleepy", "cpu"

    def __init__(self, seconds: float, fixed: int | None = None):
        self.seconds = seconds
        self.input_shape = (fixed, 3, 8, 8)
        self.calls: list[int] = []

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        time.sleep(self.seconds)
        self.calls.append(batch.shape[0])
        n = batch.shape[0]
        m = batch.reshape(n, -1).mean(1)
        return [np.stack([m, -m, 2 * m, m * m], 1).astype(np.float32), np.zeros((n, 2, 4), np.float32)]


class Recording:
    """Wraps a metric accumulator and records (key, prediction) in arrival order."""

    def __init__(self, inner):
        self.inner, self.items = inner, []

    def update(self, sample, prediction) -> None:
        self.items.append((sample.key, prediction))
        self.inner.update(sample, prediction)

    def compute(self) -> dict:
        return self.inner.compute()


def recording(recipe):
    return dataclasses.replace(recipe, new_accumulator=lambda ds: Recording(recipe.new_accumulator(ds)))


def _assert_same_predictions(a: list, b: list, exact: bool = True, compact=None) -> None:
    """``a``: LoadGen's predictions, in the recipe's compact form where it has one; ``b``: the pipeline's."""
    assert [k for k, _ in a] == [k for k, _ in b]
    for (_, p), (_, q) in zip(a, b):
        pa, pb = _flat(p), _flat(compact(q) if compact else q)
        assert len(pa) == len(pb)
        for x, y in zip(pa, pb):
            if exact:
                np.testing.assert_array_equal(x, y)
            else:
                np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4)


def _flat(p) -> list[np.ndarray]:
    if isinstance(p, np.ndarray):
        return [p]
    if isinstance(p, (list, tuple)):
        return [a for item in p for a in _flat(item)]
    if isinstance(p, dict):
        return [np.asarray(v, dtype=object if isinstance(v, str) else None) for _, v in sorted(p.items())]
    if dataclasses.is_dataclass(p):
        return [np.asarray(v) for v in dataclasses.astuple(p)]
    return [np.asarray(p)]
