"""The whole search of one run on the tiny colour classifier, and `zooinfer tune`'s bad input (exit 2, said
before anything slow)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from tune_helpers import colour  # noqa: F401 - the fixture

from zooinfer import cli
from zooinfer.tune import tune_evaluation


def _evaluation(colour, **config):  # noqa: F811
    recipe, ds, onnx = colour
    cfg = SimpleNamespace(select=lambda d: d, bs=1, threads=None, calibration=3, batch_sizes=(1, 2),
                          bench_min_time=0.05, synthetic=True, embedded=True, limit=None, subset=None, seed=0,
                          **config)
    return SimpleNamespace(recipe=recipe, config=cfg, dataset=ds, onnx_path=str(onnx), model=None)


def test_the_run_finds_the_set_marks_the_fastest_passing_row_and_writes_the_files(colour, tmp_path):  # noqa: F811
    ev = _evaluation(colour)
    with pytest.warns(UserWarning, match="ranking subset 64 is larger than the 9 samples"):
        out = tune_evaluation(ev, budget=0.01, rank_subset=64, folder=tmp_path / "precision")
    assert out.search.chosen == ("conv2",) and out.passed
    doc = out.fastest
    assert doc["reference"]["kind"] == "fp32" and "own predictions on the same 9 samples" in \
        doc["reference"]["description"]
    configs = {r["configuration"]: r["verdict"] for r in doc["rows"] if r["runtime"] == "onnxruntime"}
    assert configs == {"onnxruntime fp32": "PASS", "onnxruntime int8": "FAIL",
                       "onnxruntime int8, 1 layer(s) fp32": "PASS"}
    assert [r["bs"] for r in doc["rows"] if r["runtime"] == "onnxruntime"] == [1, 2, 1, 2, 1, 2]
    assert sum(r["fastest"] for r in doc["rows"]) == 1 and doc["fastest"]["configuration"] != "onnxruntime int8"
    # OpenVINO's variants: rows where the extra is installed, else skipped with the reason
    openvino = {r["configuration"] for r in doc["rows"] if r["configuration"].startswith("openvino")}
    assert openvino | {s["configuration"] for s in doc["skipped"]} == {"openvino", "openvino-bf16", "openvino-int8"}
    assert json.loads((tmp_path / "precision" / "nodes_to_exclude.json").read_text()) == ["conv2"]
    assert (tmp_path / "precision" / "keep_dtype.cfg").read_text() == "conv2\n"
    assert "--keep_dtype=" in out.atc and "## Ascend" in out.markdown()
    assert any("clipped to 9" in n for n in out.notes) and any("calibration on 3 images" in n for n in out.notes)
    json.dumps(out.to_dict())  # metrics.json-able


@pytest.mark.parametrize("argv, message", [
    (["--budget", "5"], "parameter 'budget' must be a fraction in (0, 1), e.g. 0.01"),
    (["--budget", "abc"], "parameter 'budget' must be a fraction in (0, 1)"),
    (["--budget", "0"], "parameter 'budget' must be a fraction in (0, 1)"),
    (["--budget", "1"], "parameter 'budget' must be a fraction in (0, 1)"),
    (["--budget", "-0.01"], "parameter 'budget' must be a fraction in (0, 1)"),
    (["--variant", "onnxruntime-int9"], "unknown variant 'onnxruntime-int9'; known: onnxruntime"),
    (["--variant", "torch"], "variant 'torch' cannot be tuned"),
    (["--rank-subset", "0"], "parameter 'rank_subset' must be"),
    (["-p", "bogus", "1"], "unknown parameter 'bogus'"),
])
def test_bad_input_is_a_clear_error_before_anything_slow(argv, message, capsys, monkeypatch):
    import zooinfer.tune.run as run

    monkeypatch.setattr(run, "tune_evaluation", lambda *a, **k: pytest.fail("ran the search on bad input"))
    assert cli.main(["tune", "dpn131", *argv]) == 2
    assert message in capsys.readouterr().err


def test_the_notebook_section_puts_fastest_passing_into_the_run(colour, tmp_path):  # noqa: F811
    from zooinfer import sections

    ev = _evaluation(colour, budget=None, rank_subset=4)
    added = {}
    ev.steps = SimpleNamespace(exported=object())
    ev.run_folder = lambda: SimpleNamespace(path=tmp_path)
    ev.add_section = lambda name, doc: added.__setitem__(name, doc)
    doc, figures = sections.precision_search(ev, show=False)
    assert set(added) == {"fastest_passing", "precision_search"} and added["fastest_passing"]["passed"]
    assert doc["search"]["chosen"] == ["conv2"] and doc["search"]["budget"] == 0.01  # the recipe's rule
    assert (tmp_path / "precision" / "ignored_scope.json").is_file() and figures == []


def test_the_run_parameters_tune_budget_and_rank_subset():
    from zooinfer.config import RunConfig
    from zooinfer.errors import ZooinferError

    cfg = RunConfig.from_parameters({"model": "dpn131", "tune": "true", "budget": "0.02", "rank_subset": "32"},
                                    check=False)
    assert (cfg.tune, cfg.budget, cfg.rank_subset) == (True, 0.02, 32)
    assert RunConfig.from_parameters({"model": "dpn131", "budget": "none"}, check=False).budget is None
    for bad in ("5", 0, 1, "x", True):
        with pytest.raises(ZooinferError, match="parameter 'budget' must be a fraction in"):
            RunConfig.from_parameters({"model": "dpn131", "budget": bad}, check=False)
    with pytest.raises(ZooinferError, match="parameter 'rank_subset' must be an integer >= 1"):
        RunConfig.from_parameters({"model": "dpn131", "rank_subset": 0}, check=False)
