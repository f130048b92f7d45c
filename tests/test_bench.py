"""The pure-inference sweep times distinct real batches and checks its timed outputs (issue 24, item 4)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from zooinfer import bench


class Linear:
    """A session computing ``x.sum((2, 3)) @ w``: one (N, 4) output; records every batch it ran."""

    name, device, input_shape = "linear", "cpu", None

    def __init__(self) -> None:
        self.w = np.arange(12, dtype=np.float32).reshape(3, 4)
        self.seen: list[bytes] = []

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        self.seen.append(batch.tobytes())
        return [batch.sum((2, 3)) @ self.w]


class OneCallLate(Linear):
    """Answers each call with the previous call's outputs (an asynchronous backend read too early)."""

    def __init__(self) -> None:
        super().__init__()
        self.last = None

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        outs = super().run(batch)
        previous, self.last = self.last, outs
        return previous if previous is not None else outs


def _samples(n: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 3, 2, 2)).astype(np.float32)


def test_distinct_batches_cycle_through_every_sample():
    samples = _samples(5)
    batches = bench.distinct_batches(samples, 2)
    assert len(batches) == 3 and all(b.shape == (2, 3, 2, 2) for b in batches)
    assert len({b.tobytes() for b in batches}) == 3
    rows = np.concatenate(batches)
    assert all(any(np.array_equal(s, r) for r in rows) for s in samples)  # every sample is timed
    assert np.array_equal(batches[2][1], samples[0])  # the last batch wraps round


def test_the_sweep_times_distinct_batches_not_one_reused():
    session = Linear()
    rows = bench.inference_sweep(session, _samples(8), [2], min_time=0.0, min_iters=8, warmup=0)
    assert len(set(session.seen)) >= 4  # the old sweep ran one batch on every call
    assert rows[0]["distinct_batches"] == 4 and rows[0]["outputs_checked"] is True
    assert "4 of 4 distinct batches checked" in rows[0]["outputs_note"]


def test_timed_outputs_that_are_not_the_batch_mark_the_row_and_warn():
    with pytest.warns(UserWarning, match="the timed outputs are not the model's: batch 0: the timed outputs differ"):
        rows = bench.inference_sweep(OneCallLate(), _samples(6), [2], min_time=0.0, min_iters=6, warmup=1)
    assert rows[0]["outputs_checked"] is False and "differ from an untimed rerun" in rows[0]["outputs_note"]


def test_timed_outputs_other_than_the_evaluations_mark_the_row():
    seen_rows: list[int] = []

    def expected(row, outputs):
        seen_rows.append(row)
        return "s3: another prediction" if row == 3 else None

    with pytest.warns(UserWarning, match="s3: another prediction"):
        rows = bench.inference_sweep(Linear(), _samples(4), [4], min_time=0.0, min_iters=1, warmup=0,
                                     expected=expected)
    assert rows[0]["outputs_checked"] is False and sorted(seen_rows) == [0, 1, 2, 3]


def test_a_batch_larger_than_the_samples_checks_each_row_against_its_sample():
    seen_rows: list[int] = []
    rows = bench.inference_sweep(Linear(), _samples(3), [5], min_time=0.0, min_iters=1, warmup=0,
                                 expected=lambda row, outs: seen_rows.append(row))
    assert rows[0]["outputs_checked"] is True and seen_rows == [0, 1, 2, 0, 1]


def test_sweep_samples_compare_with_the_stored_predictions(tiny_dataset):
    from conftest import tiny_recipe

    recipe = tiny_recipe()
    views, expected = bench.sweep_samples(recipe, tiny_dataset, 4, stored=lambda key: np.array([0, 0, 0, 9.0]))
    assert views.shape == (4, 3, 8, 8)
    assert expected(0, [np.array([0, 0, 0, 9.0])]) is None
    assert "img0: the timed outputs give another prediction than the evaluation stored (top-1 3 -> 0)" == \
        expected(0, [np.array([9.0, 0, 0, 0])])


def test_the_evaluations_sweep_is_checked_against_its_stored_predictions(tiny_dataset):
    """End to end on the tiny model: the run's own samples, distinct batches, every row checked."""
    from conftest import TinyNet, tiny_recipe

    from zooinfer.config import RunConfig
    from zooinfer.evaluation import Evaluation, Prepared

    ev = Evaluation(RunConfig(model="dpn131", backend="torch", progress=False, bs=2), recipe=tiny_recipe())
    ev.steps = replace(ev.steps, prepared=Prepared(model=TinyNet().eval(), dataset=tiny_dataset, weights=None,
                                                   weights_md5=None, published_md5=None, images=7))
    ev.evaluate()
    rows = ev.benchmark([1, 2], backends=["torch"], min_time=0.0, min_iters=4, warmup=0)
    assert [r["distinct_batches"] for r in rows] == [4, 2]
    assert all(r["outputs_checked"] for r in rows), rows
    assert all("and to the evaluation's predictions" in r["outputs_note"] for r in rows)


def test_strict_names_each_speed_figure_that_cannot_be_trusted(capsys):
    from zooinfer import cli

    doc = {"throughput": [{"backend": "onnxruntime", "bs": 1, "cv": 0.02, "outputs_checked": True},
                          {"backend": "onnxruntime", "bs": 8, "cv": 0.31, "outputs_checked": True},
                          {"backend": "torch", "bs": 8, "cv": 0.01, "outputs_checked": False,
                           "outputs_note": "batch 0: differ"}],
           "under_load": {"scenarios": {"Offline": {"validity": "INVALID", "reason": "min queries not met"}},
                          "audits": {"TEST04": {"result": "PASS", "rows": []}}}}
    assert cli._strict(doc) == cli.EXIT_UNTRUSTED_SPEED == 4
    err = capsys.readouterr().err
    assert "strict: throughput onnxruntime bs 8: unstable (cv 31% > 15%)" in err
    assert "strict: throughput torch bs 8: timed outputs not the model's (batch 0: differ)" in err
    assert "strict: LoadGen Offline: INVALID (min queries not met)" in err and "bs 1" not in err
    assert cli._strict({"throughput": doc["throughput"][:1]}) == 0
    assert cli.build_parser().parse_args(["run", "dpn131", "--strict"]).strict is True
    assert "4    with --strict only" in cli.RUN_EXIT_HELP
