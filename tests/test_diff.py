"""``zooinfer diff``: two runs of identical configuration differ in nothing (every model); fp32 vs INT8 on DPN131
lists the changed samples and fails --max-drop 0; the paired bootstrap; the changed-sample matching; bad input
refused with exit 2 and one line; nothing written into the compared folders."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from zooinfer import cli, recipes
from zooinfer.datasets.base import ImageDataset, Sample
from zooinfer.diff import DiffInputError, diff_runs, present
from zooinfer.diff import figures as dfig
from zooinfer.diff import samples as dsamp
from zooinfer.evaluation import Evaluation, StepResults
from zooinfer.metrics.classification import TopKAccumulator, compact_logits


def _run(model: str, root: Path, **fields) -> tuple[Path, Evaluation]:
    """A finished run folder of ``model`` under ``root`` (library calls, no notebook: prepare, evaluate, finish)."""
    ev = Evaluation.for_model(model, output_root=str(root), progress=False, **fields)
    ev.prepare()
    ev.evaluate()
    return ev.finish(), ev


def _again(ev: Evaluation) -> Path:
    """The same configuration evaluated again in a fresh session, into a new run folder (the network and the ONNX
    file are reused: building them again changes nothing a diff sees)."""
    ev2 = Evaluation(ev.config, recipe=ev.recipe, steps=StepResults(prepared=ev.steps.prepared,
                                                                    exported=ev.steps.exported))
    ev2.evaluate()
    return ev2.finish()


def _snapshot(*folders: Path) -> dict:
    """Every file under ``folders`` with its size and modification time (what 'nothing written' is checked on)."""
    out = {}
    for folder in folders:
        for dirpath, _, files in os.walk(folder):
            for f in files:
                st = os.stat(os.path.join(dirpath, f))
                out[os.path.join(dirpath, f)] = (st.st_size, st.st_mtime_ns)
    return out


#: (model, fields of its runs): every registered model; the heavy ones on one image at their notebook's options
REAL = [pytest.param(name, {"limit": 1 if r.bench.heavy else (4 if r.task == "reid" else 2),
                            **{o: v for o, v, _ in (r.notebook.extra if r.notebook else ())}},
                     marks=[pytest.mark.slow] if r.bench.heavy else [], id=name)
        for name, r in ((name, recipes.get(name)) for name in recipes.NAMES)]


@pytest.mark.parametrize("model,fields", REAL)
def test_two_runs_of_identical_configuration_differ_in_nothing(model, fields, tmp_path):
    a, ev = _run(model, tmp_path, **fields)
    b = _again(ev)
    before = _snapshot(a, b)
    d = diff_runs(a, b, max_drop=0.0)
    assert d.changed == [], d.changed[:3]
    assert d.samples == ev.steps.run.n_done and d.units >= 1
    headline = [r for r in d.metrics if r["headline"]]
    assert headline and all(r["delta"] in (0.0, None) for r in d.metrics)
    for r in d.metrics:
        assert r["interval"] is None or r["interval"][0] <= 0.0 <= r["interval"][1], r
    assert any(r["interval"] is not None for r in headline)
    assert all(all(row.get(f"delta_{f}") in (0.0, None) for f in d.per_class_figures) for row in d.per_class)
    assert d.exit_code == 0 and d.verdict["status"] == "PASS"
    assert _snapshot(a, b) == before  # nothing written into either run folder
    per_class = json.loads((a / "metrics.json").read_text())["per_class"]
    assert per_class["by"] == {"classification": "class", "detection": "category", "face_detection": "event",
                               "reid": "camera"}[d.task] == d.per_class_by
    if d.task == "detection":
        assert len(per_class["rows"]) == 80  # every COCO category, defined or not
    if model == "dpn131":
        assert cli.main(["diff", str(a), str(b), "--max-drop", "0"]) == 0


# ------------------------------------------------------------------------------------------------ fp32 vs INT8
@pytest.fixture(scope="module")
def fp32_int8(tmp_path_factory):
    """DPN131 fp32 and INT8 runs over four embedded images whose labels are the fp32 model's own top-1 (so the fp32
    run is right on each, and every top-1 the INT8 model changes is a drop)."""
    from zooinfer import variants
    from zooinfer.datasets.imagenet import imagenet_sample_root

    tmp = tmp_path_factory.mktemp("int8")
    root = tmp / "imagenet"
    (root / "val").mkdir(parents=True)
    files = sorted((imagenet_sample_root() / "val").iterdir())[:4]
    for f in files:
        shutil.copy(f, root / "val" / f.name)
    (root / "val_label.txt").write_text("".join(f"{f.name} 0\n" for f in files))
    probe = Evaluation.for_model("dpn131", data_root=str(root), output_root=str(tmp / "probe"), progress=False)
    probe.prepare()
    session = probe.session_for()
    labels = [int(compact_logits(session.run(probe.recipe.preprocess(s.path)[0][0][None])[0][0]).classes[0])
              for s in probe.dataset]
    (root / "val_label.txt").write_text("".join(f"{f.name} {c}\n" for f, c in zip(files, labels)))
    out = tmp / "outputs"
    a, ev = _run("dpn131", out, data_root=str(root))
    int8, _ = variants.int8_onnx(ev.recipe, ev.onnx_path, ev.dataset, calibration=2)
    with pytest.warns(UserWarning):  # the INT8 file's outputs are not the network's to the parity tolerance
        b, _ = _run("dpn131", out, data_root=str(root), onnx_path=str(int8))
    return a, b


def test_fp32_vs_int8_lists_the_changed_samples_and_fails_max_drop_0(fp32_int8, tmp_path, capsys):
    a, b = fp32_int8
    d = diff_runs(a, b, max_drop=0)
    assert d.metrics[0]["metric"] == "top1" and d.metrics[0]["a"] == 1.0  # the labels are fp32's top-1
    assert d.changed, "INT8 must change a top-1 of the synthetic network for this test to mean anything"
    assert all(r["effect"] == "lost" and r["top1_a"] == r["label"] != r["top1_b"] for r in d.changed)
    assert d.metrics[0]["delta"] == pytest.approx(-len(d.changed) / d.samples)
    lo, hi = d.metrics[0]["interval"]
    assert hi <= 0.0 and lo < 0.0  # paired: no resample can favour B, which only lost samples
    assert d.exit_code == 1 and d.verdict["status"] == "FAIL" and "top1 dropped" in d.verdict["line"]
    assert any(r["field"] == "onnx_path" for r in d.differences)
    html = tmp_path / "diff.html"
    assert cli.main(["diff", str(a), str(b), "--max-drop", "0", "--html", str(html)]) == 1
    out = capsys.readouterr().out
    assert "Changed samples, worst first" in out and d.changed[0]["key"] in out
    assert out.rstrip().splitlines()[-1].startswith("diff FAIL: top1 dropped")
    assert html.read_text().count("<img") == min(len(d.changed), present.DRAWN)
    assert cli.main(["diff", str(a), str(b), "--max-drop", "100"]) == 0  # within a loose threshold


# ------------------------------------------------------------------------------------------------ bad input
@pytest.fixture(scope="module")
def dpn_run(tmp_path_factory):
    return _run("dpn131", tmp_path_factory.mktemp("bad"), limit=2)[0]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_bad_input_exits_2_with_one_clear_line(dpn_run, tmp_path, capsys):
    a = dpn_run
    cases = []
    empty = tmp_path / "empty"
    empty.mkdir()
    cases.append(([str(empty), str(a)], r"RUN_A .*empty: not a run folder"))
    cases.append(([str(a), str(tmp_path / "nowhere")], r"RUN_B .*nowhere: no such folder"))
    partial = tmp_path / ".20260101-000000-dpn131-1.partial"
    shutil.copytree(a, partial)
    cases.append(([str(a), str(partial)], r"RUN_B .*: a partial run .*--resume"))
    unfinished = tmp_path / "unfinished"
    shutil.copytree(a, unfinished)
    (unfinished / "metrics.json").unlink()
    cases.append(([str(a), str(unfinished)], r"a partial run \(predictions/ but no metrics.json"))
    bare = tmp_path / "bare"
    shutil.copytree(a, bare)
    shutil.rmtree(bare / "predictions")
    cases.append(([str(bare), str(a)], r"RUN_A .*: a run without stored predictions"))
    other = tmp_path / "other-selection"
    shutil.copytree(a, other)
    fp = other / "predictions" / "fingerprint.json"
    doc = json.loads(fp.read_text())
    doc["selection"].update(limit=None, subset=2, seed=7, keys_sha1="0" * 40)  # two other samples
    fp.write_text(json.dumps(doc))
    cases.append(([str(a), str(other)], r"different selections: RUN_A evaluated the first 2 samples \(limit 2\), "
                                        r"RUN_B a random subset of 2 samples \(seed 7\)"))
    cases.append(([str(a), str(a), "--max-drop", "half"], r"--max-drop must be a number .*'half'"))
    cases.append(([str(a), str(a), "--max-drop", "nan"], r"--max-drop must be"))
    cases.append(([str(a), str(a), "--max-slowdown", "1.5"], r"--max-slowdown must be a fraction"))
    cases.append(([str(a), str(a), "--html", str(tmp_path / "no" / "such" / "d.html")], r"--html .* does not exist"))
    import re

    before = _snapshot(a)
    for argv, pattern in cases:
        assert cli.main(["diff", *argv]) == 2, argv
        line = _error_line(capsys)
        assert line.startswith("error: ") and re.search(pattern, line), (argv, line)
    assert _snapshot(a) == before


def test_runs_of_different_models_are_refused_naming_both(dpn_run, tmp_path):
    pcb, _ = _run("pcb", tmp_path, limit=4)
    with pytest.raises(DiffInputError, match="different models: RUN_A is dpn131, RUN_B is pcb"):
        diff_runs(dpn_run, pcb)


def test_a_rescored_folder_is_diffed_with_its_metric_parameters(dpn_run):
    from zooinfer.rescore import rescore_run

    rescored = rescore_run(dpn_run)
    d = diff_runs(rescored, dpn_run)
    assert d.a.folder == dpn_run and d.a.rescored is not None and d.changed == []
    assert (dpn_run / "rescored").is_dir()  # the rescore wrote it; the diff wrote nothing
    shutil.rmtree(dpn_run / "rescored")


# ------------------------------------------------------------------------------------------------ the parts
def _topk_data(n: int) -> ImageDataset:
    return ImageDataset("t", Path("."), [Sample(f"s{i}", "", i % 3) for i in range(n)])


def test_paired_bootstrap_uses_the_same_draws_for_both_runs():
    recipe = replace(recipes.get("dpn131"), new_accumulator=lambda ds: TopKAccumulator())
    data = _topk_data(40)
    right = {s.key: np.eye(3)[s.target if not 10 <= i < 30 else (s.target + 1) % 3] for i, s in enumerate(data)}
    worse = dict(right)
    for s in list(data)[:4]:  # A is right on 20 of 40, B loses 4 of them
        worse[s.key] = np.eye(3)[(s.target + 1) % 3]
    a = dfig.score(recipe, data, lambda s: right[s.key])
    b = dfig.score(recipe, data, lambda s: worse[s.key])
    (top1, *_), = [[r for r in dfig.metric_rows(a, b, ("top1",)) if r["metric"] == "top1"]]
    assert top1["delta"] == pytest.approx(-0.1)
    lo, hi = top1["interval"]
    assert lo < -0.1 < hi <= 0.0  # B is never better in a resample: the same draws weight both
    # unpaired (B with other draws) the interval of the difference would reach above 0
    b_other = dfig.score(recipe, data, lambda s: worse[s.key], seed=1)
    diff = b_other.resampled["top1"] - a.resampled["top1"]
    assert diff.max() > 0.0


def test_detections_are_matched_at_iou_05_and_lost_new_and_rescored_ones_counted():
    a = np.array([[10, 10, 20, 20, 0.9, 1], [100, 100, 10, 10, 0.8, 1], [50, 50, 10, 10, 0.3, 2]], dtype=float)
    b = np.array([[11, 10, 20, 20, 0.85, 1],  # a[0] moved a pixel: matched, score -0.05
                  [50, 50, 10, 10, 0.3, 3],  # a[2]'s box with another class: not a match -> a[2] lost, this new
                  [300, 300, 5, 5, 0.4, 1]], dtype=float)  # new; a[1] lost
    to_b, used = dsamp.match(a, b)
    assert to_b.tolist() == [0, -1, -1] and used.tolist() == [True, False, False]
    data = [Sample("img", "/x.jpg")]
    rows = dsamp.detection_changes(data, lambda s: np.c_[np.zeros(3), a], lambda s: np.c_[np.zeros(3), b])
    (r,) = rows
    assert (r["matched"], r["lost"], r["new"]) == (1, 2, 2)
    assert r["largest_score_change"] == pytest.approx(-0.05)
    assert r["severity"] == pytest.approx(0.8 + 0.3 + 0.3 + 0.4 + 0.05)
    assert dsamp.detection_changes(data, lambda s: a[:, :5], lambda s: a[:, :5].copy()) == []


def test_classification_changes_worst_first():
    data = [Sample("lost", "", 0), Sample("gained", "", 1), Sample("changed", "", 1), Sample("same", "", 0)]
    a = {"lost": [5, 1, 0], "gained": [5, 1, 0], "changed": [5, 1, 0], "same": [5, 1, 0]}
    b = {"lost": [1, 5, 0], "gained": [1, 5, 0], "changed": [0, 1, 5], "same": [5, 1, 0]}
    logits = {k: np.array(v, dtype=np.float32) for k, v in a.items()}
    rows = dsamp.classification_changes(data, lambda s: compact_logits(logits[s.key]),
                                        lambda s: compact_logits(np.array(b[s.key], dtype=np.float32)))
    assert [(r["key"], r["effect"]) for r in rows] == [("lost", "lost"), ("changed", "changed"), ("gained", "gained")]


def test_thresholds_and_verdict():
    assert present.threshold_value("--max-drop", None) is None
    assert present.threshold_value("--max-drop", "0.5") == 0.5
    for bad in ("x", "-1", "inf", True):
        with pytest.raises(DiffInputError, match="--max-drop must be"):
            present.threshold_value("--max-drop", bad)
    with pytest.raises(DiffInputError, match="fraction"):
        present.threshold_value("--max-slowdown", "1", fraction=True)
    metrics = [{"metric": "AP", "headline": True, "delta": -0.004}, {"metric": "AR1", "headline": False, "delta": -0.5}]
    speed = {"throughput": [{"bs": 1, "own": True, "ratio": 0.95}, {"bs": 8, "own": True, "ratio": 0.85},
                            {"bs": 8, "own": False, "ratio": 0.5}], "end_to_end": None}
    assert present.judge(metrics, speed, max_drop=0.5, max_slowdown=0.1)["failures"] == [
        "bs 8: B runs at 0.850x A's throughput (15.0% slower, 10% allowed; pure-inference sweep)"]
    v = present.judge(metrics, speed, max_drop=0.3, max_slowdown=0.2)
    assert v["exit"] == 1 and v["failures"] == ["AP dropped 0.400 pts (more than 0.3 allowed)"]
    assert present.judge(metrics, speed, max_drop=None, max_slowdown=None)["exit"] == 0
    none = present.judge(metrics, {"throughput": [], "end_to_end": None}, max_drop=None, max_slowdown=0.1)
    assert none["exit"] == 0 and "not checked" in none["checks"][0]


def test_variant_comparison_lists_per_class_deltas(tiny_onnx, tiny_model, tiny_dataset):
    from conftest import tiny_recipe

    from zooinfer import compare

    recipe = replace(tiny_recipe(), task="classification", new_accumulator=lambda ds: TopKAccumulator(),
                     headline=("top1",))
    data = replace(tiny_dataset, samples=[replace(s, target=i % 4) for i, s in enumerate(tiny_dataset)])
    cmp = compare.compare(recipe, data, ["torch"], onnx_path=tiny_onnx, model=tiny_model)
    ref, torch_ = cmp.result("onnxruntime"), cmp.result("torch")
    assert ref.per_class["by"] == torch_.per_class["by"] == "class"
    assert [r["n"] for r in ref.per_class["rows"]] == [2, 2, 2, 1]
    doc = cmp.to_dict()
    rows = doc["variants"][1]["per_class_deltas"]
    assert doc["variants"][0]["per_class_deltas"] == []
    assert {r["name"] for r in rows} == {"class 0", "class 1", "class 2", "class 3"}
    assert all("delta_top1" in r for r in rows)
    sizes = [max(abs(r[f"delta_{f}"]) for f in ("top1", "top5")) for r in rows]
    assert sizes == sorted(sizes, reverse=True)  # largest first


def test_the_environment_manifest_records_the_cpu_flags():
    from zooinfer import cpu, report

    assert report.environment()["cpu_flags"] == list(cpu.isa_flags())
