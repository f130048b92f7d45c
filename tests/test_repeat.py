"""Repeatability (issue 24, item 2): the same selection evaluated N times in fresh sessions; per-sample flips and
each metric's spread in metrics.json; ``zooinfer repeat RUN N`` writes RUN/repeats/<id>/ and nothing else; diff
reads the measured spread."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from zooinfer import cli, repeat
from zooinfer.config import RunConfig
from zooinfer.errors import ZooinferError
from zooinfer.evaluation import Evaluation, Prepared


def _tiny(tiny_dataset, **config) -> Evaluation:
    from conftest import TinyNet, tiny_recipe

    ev = Evaluation(RunConfig(model="dpn131", backend="torch", progress=False, bs=2, **config), recipe=tiny_recipe())
    ev.steps = replace(ev.steps, prepared=Prepared(model=TinyNet().eval(), dataset=tiny_dataset, weights=None,
                                                   weights_md5=None, published_md5=None, images=7))
    return ev


class Noisy:
    """A session whose logits get a large random offset per session (another kernel, another answer)."""

    def __init__(self, inner, seed: int):
        self.inner, self.rng = inner, np.random.default_rng(seed)
        self.name, self.device, self.input_shape = inner.name, inner.device, inner.input_shape

    def run(self, batch):
        outs = self.inner.run(batch)
        return [outs[0] + 10 * self.rng.standard_normal(outs[0].shape).astype(np.float32), *outs[1:]]


@pytest.mark.parametrize("bad", [0, -1, "x", 1.5, True])
def test_repeats_must_be_an_integer_of_at_least_one(bad):
    with pytest.raises(ZooinferError, match=r"parameter 'repeats' must be an integer >= 1, got"):
        RunConfig.from_parameters({"model": "dpn131", "repeats": bad}, check=False)
    assert RunConfig.from_parameters({"model": "dpn131", "repeats": "3"}, check=False).repeats == 3


def test_bad_repeats_and_audits_are_said_before_anything_slow(capsys):
    assert cli.main(["run", "dpn131", "-p", "repeats", "0"]) == 2
    assert "parameter 'repeats' must be an integer >= 1, got 0" in capsys.readouterr().err
    assert cli.main(["run", "dpn131", "-p", "audits", "[TEST09]", "-p", "scenarios", "[Offline]"]) == 2
    assert "unknown LoadGen audit 'TEST09'; valid audits: TEST01, TEST04, TEST05" in capsys.readouterr().err
    assert cli.main(["run", "dpn131", "-p", "audits", "[TEST01]"]) == 2
    assert "parameter 'audits' (TEST01) needs parameter 'scenarios'" in capsys.readouterr().err
    assert cli.main(["repeat", "/nowhere", "1"]) == 2
    assert "N must be an integer >= 2" in capsys.readouterr().err


def test_a_deterministic_backend_repeats_exactly(tiny_dataset):
    ev = _tiny(tiny_dataset, repeats=3)
    ev.evaluate()
    doc = repeat.repeatability(ev, show=False)
    assert doc["repeats"] == 3 and doc["fresh_sessions"] == 2 and doc["samples"] == 7
    assert doc["flips"]["count"] == 0 and doc["flips"]["per_repeat"] == [0, 0] and doc["deterministic"]
    assert ev.metrics_document()["repeatability"] == doc  # in metrics.json
    assert repeat.repeatability(_tiny(tiny_dataset), show=False) == {}  # repeats 1: nothing to do


def test_a_nondeterministic_backend_shows_flips(tiny_dataset, monkeypatch):
    ev = _tiny(tiny_dataset, repeats=3)
    ev.evaluate()
    opened = []
    real = ev.session_for

    def fresh(backend=None):
        opened.append(1)
        return Noisy(real(backend), seed=len(opened))

    monkeypatch.setattr(ev, "session_for", fresh)
    doc = repeat.repeatability(ev, show=False)
    assert len(opened) == 2  # one fresh session per repeat
    assert doc["flips"]["count"] > 0 and not doc["deterministic"]
    assert doc["flips"]["keys"] and set(doc["flips"]["per_sample"]) <= set(doc["flips"]["keys"])
    assert "sample(s) changed prediction (top-1 class changed)" in doc["statement"]


def test_preprocessing_is_done_once_for_all_repeats(tiny_dataset):
    from conftest import tiny_recipe

    calls = []
    recipe = tiny_recipe()
    counted = replace(recipe, preprocess=lambda path: calls.append(path) or recipe.preprocess(path))
    from zooinfer.backends import registry
    from zooinfer.backends.registry import Artefacts
    from conftest import TinyNet

    runs = repeat.run_repeats(counted, tiny_dataset, lambda: registry.get("torch").open(
        Artefacts(model=TinyNet().eval())), 3, bs=2)
    assert len(runs) == 3 and len(calls) == 7  # the views were kept between repeats
    assert all(set(p) == {s.key for s in tiny_dataset} for _, p in runs)


def test_prediction_change_rules():
    from zooinfer.metrics.classification import compact_logits

    a, b = compact_logits(np.array([0, 1, 5.0])), compact_logits(np.array([0, 5, 1.0]))
    assert repeat.prediction_change("classification", a, a) is None
    assert repeat.prediction_change("classification", a, b) == "top-1 2 -> 1"
    boxes = np.array([[1, 10, 10, 20, 20, 0.9, 3]], dtype=np.float32)
    assert repeat.prediction_change("detection", boxes, boxes + np.array([0, 0, 0, 0, 0, 1e-5, 0])) is None
    assert "scores moved by up to 0.1" in repeat.prediction_change(
        "detection", boxes, boxes - np.array([0, 0, 0, 0, 0, 0.1, 0], np.float32))
    assert "1 detections lost, 0 new" in repeat.prediction_change("detection", boxes, boxes[:0])
    assert repeat.prediction_change("reid", np.ones(4), np.ones(4) * 1.01) is not None


def test_spreads_of_the_metrics():
    s = repeat.spreads([{"top1": 0.5, "n": 7}, {"top1": 0.52, "n": 7}, {"top1": 0.51, "n": 7}])
    assert set(s) == {"top1"}  # counts are not figures
    assert s["top1"]["min"] == 0.5 and s["top1"]["max"] == 0.52 and abs(s["top1"]["spread"] - 0.02) < 1e-12
    assert abs(s["top1"]["std"] - 0.01) < 1e-12


def test_diff_does_not_fail_a_drop_within_the_measured_spread():
    from zooinfer.diff import present

    rows = [{"metric": "top1", "headline": True, "a": 0.5, "b": 0.495, "delta": -0.005, "interval": None}]
    strict = present.judge(rows, {}, max_drop=0.1, max_slowdown=None)
    assert strict["status"] == "FAIL" and strict["exit"] == 1
    loose = present.judge(rows, {}, max_drop=0.1, max_slowdown=None, spread={"top1": 0.01})
    assert loose["status"] == "PASS" and loose["exit"] == 0
    assert "top1 dropped 0.500 pts, within the 1.000 pts its repeats spread over" in loose["line"]
    beyond = present.judge(rows, {}, max_drop=0.1, max_slowdown=None, spread={"top1": 0.001})
    assert beyond["status"] == "FAIL" and "beyond the measured spread 0.100 pts" in beyond["line"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    ev = Evaluation.for_model("dpn131", limit=2, bs=2, progress=False,
                              output_root=str(tmp_path_factory.mktemp("outputs")))
    ev.prepare()
    ev.evaluate()
    return ev.finish()


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_zooinfer_repeat_writes_beside_the_run_and_changes_none_of_its_files(finished_run, capsys):
    before = _files(finished_run)
    assert cli.main(["repeat", str(finished_run), "2", "-q"]) == 0
    out = capsys.readouterr().out
    assert "2 evaluations of the same 2 samples (1 in fresh sessions): 0 sample(s) changed prediction" in out
    after = _files(finished_run)
    new = {k for k in after if k not in before}
    assert {k: after[k] for k in before} == before  # the run's own files, byte for byte
    assert len(new) == 2 and all(k.startswith("repeats/") for k in new)
    doc = json.loads(next((finished_run / "repeats").glob("*/metrics.json")).read_text())
    rep = doc["repeatability"]
    assert rep["repeats"] == 2 and rep["flips"]["count"] == 0 and rep["first"] == "the run's stored predictions"
    assert rep["metrics"]["top1"]["spread"] == 0.0
    assert repeat.read_spread(finished_run, json.loads((finished_run / "metrics.json").read_text())) == \
        {k: 0.0 for k in rep["metrics"]}  # what diff reads


def test_zooinfer_repeat_refuses_what_is_not_a_finished_run(finished_run, tmp_path, capsys):
    partial = tmp_path / ".x.partial"
    partial.mkdir()
    assert cli.main(["repeat", str(partial), "2"]) == 2
    assert "is not a finished run" in capsys.readouterr().err
    assert cli.main(["repeat", str(finished_run), "two"]) == 2
    assert "N must be an integer >= 2" in capsys.readouterr().err
