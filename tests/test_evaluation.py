"""The notebook's orchestration on DPN131: step results, the Ascend result-folder path, errors, the report folder."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from zooinfer import cli, report
from zooinfer.backends import open_session
from zooinfer.config import RunConfig
from zooinfer.errors import BackendError, ZooinferError
from zooinfer.evaluation import Evaluation, ExportResult, Prepared


@pytest.fixture(scope="module")
def ev_ort():
    ev = Evaluation.for_model("dpn131", bs=4, limit=5, progress=False)
    ev.prepare()
    ev.export()
    ev.evaluate()
    return ev


def _reported(ev: Evaluation, **config_changes) -> Evaluation:
    """An evaluation over ``ev``'s step results with a changed configuration (e.g. another output root)."""
    return Evaluation(replace(ev.config, **config_changes), recipe=ev.recipe, steps=ev.steps)


def test_steps_return_their_results_and_the_evaluation_keeps_the_latest(ev_ort):
    prepared, exported, result = ev_ort.steps.prepared, ev_ort.steps.exported, ev_ort.steps.run
    assert isinstance(prepared, Prepared) and isinstance(exported, ExportResult) and result is ev_ort.result
    assert prepared.model is ev_ort.model and prepared.dataset is ev_ort.dataset and prepared.images == 5
    # the notebooks read both as the dicts they show
    assert prepared["checkpoint"] == "synthetic" and prepared["md5_matches"] is None and prepared["images"] == 5
    assert "| checkpoint |" in report.markdown_table([prepared])
    assert set(exported) >= {"path", "opset", "inputs", "outputs", "size_mb", "parity", "batch_invariance_max_abs"}
    assert exported["path"] == exported.path == ev_ort.onnx_path and exported["opset"] == ev_ort.recipe.opset
    assert exported["parity"][0]["output"] == "class" and exported["parity"] == list(exported.parity)
    assert exported["batch_invariance_max_abs"] == exported.batch_invariance < 1e-3
    assert ev_ort.steps.session_info["name"] == "onnxruntime" and ev_ort.steps.session_info["device"] == "cpu"


def test_evaluation_takes_a_run_config():
    with pytest.raises(ZooinferError, match="Evaluation takes a RunConfig, got str"):
        Evaluation("dpn131")
    ev = Evaluation(RunConfig(model="dpn131", bs=2))
    assert ev.recipe.name == "dpn131" and ev.config.bs == 2 and ev.result is None and ev.model is None


def test_accuracy_is_flagged_not_meaningful_on_the_embedded_default(ev_ort):
    ok, why = ev_ort.meaningful()
    assert not ok and "synthetic" in why and "embedded" in why and "limit=5" in why
    assert "NOT meaningful" in ev_ort.banner()
    assert ev_ort.result.n_done == 5 and ev_ort.result.metrics["n_images"] == 5


def test_ascend_result_folder_gives_the_same_accuracy(ev_ort, tmp_path):
    """zooinfer bins -> (an NPU tool, emulated here with ONNX Runtime) -> <stem>_0.bin -> backend='bins'."""
    prep = tmp_path / "prep_bin"
    assert cli.main(["bins", "dpn131", "--out", str(prep), "--limit", "5"]) == 0
    result = tmp_path / "result" / "subdir"
    result.mkdir(parents=True)
    sess = open_session("onnxruntime", onnx_path=ev_ort.onnx_path)
    for f in sorted(prep.glob("*.bin")):
        out = sess.run(np.fromfile(f, np.float32).reshape(1, 3, 224, 224))[0]
        out.astype(np.float32).tofile(result / f"{f.stem}_0.bin")
    ev = Evaluation.for_model("dpn131", backend="bins", results_dir=str(result), limit=5, progress=False)
    ev.prepare()
    res = ev.evaluate()
    assert res.n_done == 5 and res.metrics == ev_ort.result.metrics
    assert res.backend == "bins"
    assert ev.benchmark([1], min_time=0.0) != [] and {r["backend"] for r in ev.bench_rows} == {"torch"}  # no bins


def test_bins_without_a_results_folder_names_the_parameter(ev_ort):
    ev = Evaluation(replace(ev_ort.config, backend="bins"), steps=ev_ort.steps)
    with pytest.raises(BackendError, match=r"backend 'bins' needs results_dir= \(the folder ais_bench"):
        ev.evaluate()


def test_acl_without_an_om_file_names_the_parameter(ev_ort):
    ev = Evaluation(replace(ev_ort.config, backend="acl"), steps=ev_ort.steps)
    with pytest.raises(BackendError, match=r"backend 'acl' needs om_path="):
        ev.session_for()


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ZooinferError, match="checkpoint file not found: .*published file is dpn131-7af84be88.pth"):
        Evaluation.for_model("dpn131", weights=str(tmp_path / "dpn131-7af84be88.pth"))  # before any step
    ev = Evaluation(RunConfig(model="dpn131", weights=str(tmp_path / "dpn131-7af84be88.pth")))  # unchecked
    with pytest.raises(ZooinferError, match="checkpoint file not found: .*published file is dpn131-7af84be88.pth"):
        ev.prepare()


def test_missing_dataset_names_the_layout(tmp_path):
    with pytest.raises(ZooinferError, match="parameter 'data_root': dataset folder not found"):
        Evaluation.for_model("dpn131", data_root=str(tmp_path / "imagenet"))
    (tmp_path / "imagenet").mkdir()
    ev = Evaluation.for_model("dpn131", data_root=str(tmp_path / "imagenet"))
    with pytest.raises(ZooinferError, match="Expected layout"):
        ev.prepare()


def _tiny_evaluation(config: RunConfig, dataset) -> Evaluation:
    from conftest import TinyNet, make_recipe

    ev = Evaluation(config, recipe=make_recipe())
    ev.steps = replace(ev.steps, prepared=Prepared(model=TinyNet().eval(), dataset=dataset, weights=None,
                                                   weights_md5=None, published_md5=None, images=len(dataset)))
    return ev


def test_11_a_run_that_evaluated_nothing_is_an_error(tiny_dataset, tmp_path):
    """bins over a results folder holding none of the dataset's files: every sample is skipped."""
    (tmp_path / "other_0.bin").write_bytes(b"\0" * 16)
    ev = _tiny_evaluation(RunConfig(model="dpn131", backend="bins", results_dir=str(tmp_path), progress=False),
                          tiny_dataset)
    with pytest.raises(ZooinferError, match=r"nothing was evaluated: all 7 images were skipped \(first: .*img0.jpg: "
                                            r"FileNotFoundError: no result file img0_0.bin.*check results_dir="):
        ev.evaluate()


def test_9_skipped_images_are_said_when_the_evaluation_ends(tiny_dataset, tmp_path, capsys):
    from zooinfer.datasets.base import Sample

    gone = Sample("gone", str(tmp_path / "gone.jpg"), 0, {"missing": "not found: named in labels.txt"})
    ds = replace(tiny_dataset, samples=[gone, *tiny_dataset.samples])
    ev = _tiny_evaluation(RunConfig(model="dpn131", backend="torch", progress=False), ds)
    with pytest.warns(UserWarning, match=r"1 of 8 images skipped \(12.5%\), not evaluated; first: .*gone.jpg: not "
                                         r"found: named in labels.txt. More than 5% of the images"):
        res = ev.evaluate()
    assert res.n_done == 7 and "**1 of 8 images skipped" in capsys.readouterr().out


def test_4_benchmark_takes_the_sizes_in_their_text_form(tiny_dataset):
    """The notebook passes its raw batch_sizes parameter: papermill hands -p batch_sizes "[1]" over as text."""
    ev = _tiny_evaluation(RunConfig(model="dpn131", backend="torch", progress=False), tiny_dataset)
    rows = ev.benchmark("[1, 2]", backends=["torch"], min_time="0", min_iters=1, warmup=0)
    assert [r["bs"] for r in rows] == [1, 2]
    with pytest.raises(ZooinferError, match="'batch_sizes' must be a list of integers >= 1, e.g. \\[1, 8\\]"):
        ev.benchmark("[one]", backends=["torch"])


def test_steps_out_of_order_say_what_to_call():
    with pytest.raises(ZooinferError, match=r"call prepare\(\) first"):
        Evaluation.for_model("dpn131").export()
    with pytest.raises(ZooinferError, match=r"call evaluate\(\) first"):
        Evaluation.for_model("dpn131").accuracy()


def test_finish_writes_a_complete_run_folder(ev_ort, tmp_path):
    bench_rows = [{"backend": "onnxruntime", "bs": 4, "throughput": 4.0, "latency_ms_p50": 1000.0,
                          "latency_ms_p90": 1000.0, "latency_ms_p99": 1000.0, "cv": 0.0, "unstable": False},
                         {"backend": "torch", "bs": 4, "throughput": 2.0, "latency_ms_p50": 2000.0,
                          "latency_ms_p90": 2000.0, "latency_ms_p99": 2000.0, "cv": 0.0, "unstable": False},
                         {"backend": "onnxruntime", "bs": 8, "throughput": 3.0, "latency_ms_p50": 2667.0,
                          "latency_ms_p90": 2667.0, "latency_ms_p99": 2667.0, "cv": 0.0, "unstable": False},
                         {"backend": "torch", "bs": 8, "throughput": 9.0, "latency_ms_p50": 889.0,
                          "latency_ms_p90": 889.0, "latency_ms_p99": 889.0, "cv": 0.0, "unstable": False}]
    ev = Evaluation(replace(ev_ort.config, output_root=str(tmp_path)), recipe=ev_ort.recipe,
                    steps=replace(ev_ort.steps, benchmark=tuple(bench_rows)))
    path = ev.finish()
    assert path.parent == tmp_path / "dpn131" and not path.name.startswith(".")
    doc = json.loads((path / "metrics.json").read_text())
    assert doc["accuracy_meaningful"] is False and doc["accuracy"]["n_images"] == 5
    assert doc["published"]["reference"] == {"top1": 0.79432, "top5": 0.94574}
    assert doc["ratios"]["onnxruntime_vs_torch_bs4"] == 2.0
    assert doc["best_batch_size"] == 4 == ev.best_batch()  # this run's backend, not torch's best (bs 8)
    assert doc["checkpoint"]["published_md5"] == "71e7844aa8646dc75494976c7c86241a"
    assert doc["onnx"]["parity"][0]["output"] == "class" and doc["dataset"]["evaluated"] == 5
    assert "atc --framework=5" in doc["ascend_commands"]["atc"]
    assert (path / "throughput_latency.png").stat().st_size > 1000
    assert doc["parameters"]["processes"] == 1 and doc["parameters"]["limit"] == 5 and "workers" not in doc["parameters"]
    assert doc["backend"] == {"name": "onnxruntime", "device": "cpu", "providers": ["CPUExecutionProvider"],
                              "threads": ev_ort.session.threads}
    assert doc["shards"] == [] and doc["end_to_end"]["bs"] == 4


def test_finish_writes_into_the_run_dir_a_caller_owns_and_leaves_it_there(ev_ort, tmp_path):
    partial = tmp_path / "dpn131" / ".r2.partial"
    path = _reported(ev_ort, run_dir=str(partial)).finish()
    assert path == tmp_path / "dpn131" / "r2" and not path.exists()  # zooinfer run renames it after rendering
    assert json.loads((partial / "metrics.json").read_text())["model"] == "dpn131"


def test_finish_lets_the_metric_write_its_files_before_the_folder_is_complete(ev_ort, tmp_path):
    class WritingAccumulator:
        seen = []

        def write_artifacts(self, folder):
            self.seen.append(folder.name)
            (folder / "submission.txt").write_text("rows\n")

    ev = _reported(ev_ort, output_root=str(tmp_path))
    ev.steps = replace(ev.steps, run=replace(ev.steps.run, accumulator=WritingAccumulator()))
    path = ev.finish()
    assert WritingAccumulator.seen and WritingAccumulator.seen[0].endswith(".partial")  # written before the rename
    assert (path / "submission.txt").read_text() == "rows\n"


def test_profile_lists_operators_by_time_and_lands_in_metrics_json(ev_ort, tmp_path):
    rows = ev_ort.profile(top=5, runs=1)
    assert 0 < len(rows) <= 5 and any("Conv" in r["op"] for r in rows)  # a CNN: convolutions among the top
    times = [r["ms_per_run"] for r in rows]
    assert times == sorted(times, reverse=True) and times[0] > 0 and sum(r["share"] for r in rows) <= 1.0 + 1e-9
    doc = json.loads((_reported(ev_ort, output_root=str(tmp_path)).finish() / "metrics.json").read_text())
    assert doc["onnxruntime_profile"] == json.loads(json.dumps(rows))



def test_22_10_a_subset_as_large_as_the_dataset_is_clipped_with_a_note_and_reported_as_full(tiny_dataset,
                                                                                            monkeypatch):
    from conftest import TinyNet, make_recipe

    monkeypatch.setattr("zooinfer.distributed.build_network", lambda recipe, weights: TinyNet().eval())
    recipe = replace(make_recipe(), open_dataset=lambda root: tiny_dataset)
    ev = Evaluation(RunConfig(model="dpn131", backend="torch", subset=100, seed=5, progress=False), recipe=recipe)
    with pytest.warns(UserWarning, match="subset 100 >= the dataset's 7 samples: the whole dataset is evaluated"):
        prepared = ev.prepare()
    assert ev.config.subset is None and prepared.images == 7 and "subset 100 >=" in prepared["selection"]
    ok, why = ev.meaningful()
    assert "subset" not in why and "random" not in why  # only the synthetic weights and the embedded data remain
    doc = report.metrics_document(ev.config, ev.recipe, ev.steps, environment_info={})
    dataset = doc["dataset"]
    assert (dataset["subset"], dataset["seed"], dataset["subset_keys"], dataset["limit"]) == (None, None, None, None)
    assert dataset["selection"] == "full" and "whole dataset is evaluated" in dataset["selection_note"]
    assert doc["parameters"]["subset"] is None
    assert ev.evaluate().n_samples == 7 and ev.result.intervals is None


# ---------------------------------------------------------------------------------------------------- issue 22
def _other_model_onnx(tmp_path, name="other.onnx", **recipe_changes):
    """The tiny net with other weights (or names/shapes) exported to ONNX: a file of another model."""
    import torch
    from conftest import TinyNet, make_recipe

    net = TinyNet().eval()
    with torch.no_grad():
        net.fc.weight.mul_(-3.0)
    from zooinfer import export

    return str(export.export_onnx(replace(make_recipe(), **recipe_changes), net, out_path=tmp_path / name))


def test_i22_11_an_onnx_file_of_another_model_fails_parity_and_withholds_the_verdict(tiny_dataset, tmp_path):
    onnx = _other_model_onnx(tmp_path)
    ev = _tiny_evaluation(RunConfig(model="dpn131", backend="onnxruntime", onnx_path=onnx, progress=False,
                                    output_root=str(tmp_path / "out")), tiny_dataset)
    with pytest.warns(UserWarning, match=rf"parity failed: .*{onnx}.* does not compute this model's outputs"):
        exported = ev.export()
    assert exported.parity_failure.startswith("parity failed: output logits") and exported["parity_failure"]
    ev.evaluate()
    doc = ev.verdict(show=False)
    assert doc["verdict"] is None and doc["why_none"].startswith("parity failed")
    metrics = json.loads((ev.finish() / "metrics.json").read_text())
    assert metrics["accuracy_meaningful"] is False and metrics["not_meaningful_because"].startswith("parity failed")
    assert metrics["onnx"]["parity_failure"] == exported.parity_failure


def test_i22_11_evaluate_without_export_checks_the_given_onnx_file_too(tiny_dataset, tmp_path):
    ev = _tiny_evaluation(RunConfig(model="dpn131", backend="onnxruntime", onnx_path=_other_model_onnx(tmp_path),
                                    progress=False, output_root=str(tmp_path / "out")), tiny_dataset)
    with pytest.warns(UserWarning, match="parity failed"):
        ev.evaluate()
    assert ev.verdict(show=False)["why_none"].startswith("parity failed")


@pytest.mark.parametrize("changes, expected", [
    (dict(input_names=["input"]), r"inputs \['input'\] and outputs \['logits', 'maps'\]; tiny expects inputs "
                                  r"\['image'\] and outputs \['logits', 'maps'\]"),
    (dict(output_names=["maps", "logits"]), r"outputs \['maps', 'logits'\]; tiny expects .* outputs "
                                            r"\['logits', 'maps'\]"),
    (dict(input_shape=(3, 16, 16)), r"input 'image' of shape \['-1', 3, 16, 16\]; tiny expects \(N, 3, 8, 8\)"),
])
def test_i22_11_an_onnx_file_that_does_not_fit_the_recipe_is_a_backend_error(tiny_dataset, tmp_path, changes,
                                                                             expected):
    onnx = _other_model_onnx(tmp_path, **changes)
    ev = _tiny_evaluation(RunConfig(model="dpn131", backend="onnxruntime", onnx_path=onnx, progress=False),
                          tiny_dataset)
    with pytest.raises(BackendError, match=rf"parameter 'onnx_path': {onnx} has .*{expected}"):
        ev.export()


def test_i22_11_its_own_export_passes_parity(tiny_dataset, tmp_path, monkeypatch):
    from zooinfer import export

    monkeypatch.setattr(export, "cache_dir", lambda: tmp_path / "cache")
    ev = _tiny_evaluation(RunConfig(model="dpn131", backend="onnxruntime", progress=False), tiny_dataset)
    exported = ev.export()
    assert exported.parity_failure is None and exported["parity_failure"] is None
    assert all(row["peak_rel"] < 1e-5 for row in exported.parity)


def test_i22_8_finish_on_a_full_disk_names_the_file_and_the_folder_stays_partial(tiny_dataset, tmp_path,
                                                                                  monkeypatch):
    from test_report import _DiskFull

    from zooinfer.errors import OutputError

    ev = _tiny_evaluation(RunConfig(model="dpn131", backend="torch", progress=False, output_root=str(tmp_path)),
                          tiny_dataset)
    ev.evaluate()
    partial = ev.run_folder().path
    monkeypatch.setattr(report, "open", _DiskFull(only="metrics"), raising=False)
    with pytest.raises(OutputError, match=rf"could not write {partial / 'metrics.json'}: \[Errno 28\] No space left "
                                          rf"on device; the run folder stays {partial}"):
        ev.finish()
    assert partial.is_dir() and [p.name for p in (tmp_path / "tiny").iterdir()] == [partial.name]
    assert not list(partial.glob("*metrics*"))  # neither a truncated metrics.json nor its temporary file
