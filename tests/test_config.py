"""RunConfig: one frozen description of a run, built from notebook parameters (normalised, or refused clearly)."""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest

from zooinfer import recipes
from zooinfer.backends import BACKENDS
from zooinfer.config import RunConfig
from zooinfer.errors import BackendError, CheckpointError, DatasetError, ZooinferError


def test_a_config_is_frozen():
    cfg = RunConfig(model="dpn131")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.bs = 8
    changed = dataclasses.replace(cfg, bs=8)
    assert changed.bs == 8 and cfg.bs == 1


def test_every_field_has_a_default_but_the_model():
    required = [f.name for f in dataclasses.fields(RunConfig)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    assert required == ["model"]


def test_command_line_spellings_are_normalised():
    cfg = RunConfig.from_parameters({"model": "dpn131", "bs": "8", "limit": "none", "weights": "", "threads": "2",
                                     "prep_threads": None, "processes": None, "batch_sizes": [1, "4", 8.0],
                                     "bench_min_time": "0.5", "static_batch": "true", "data_root": "/data/x"},
                                    check=False)  # /data/x need not exist: the paths are checked separately
    assert (cfg.bs, cfg.limit, cfg.weights, cfg.threads, cfg.prep_threads, cfg.processes) == (8, None, None, 2, None, 1)
    assert cfg.batch_sizes == (1, 4, 8) and cfg.bench_min_time == 0.5 and cfg.static_batch is True
    assert cfg.data_root == "/data/x" and cfg.synthetic and not cfg.embedded and not cfg.distributed
    assert RunConfig.from_parameters({"model": "dpn131", "batch_sizes": 16}).batch_sizes == (16,)


def test_the_parameters_round_trip():
    cfg = RunConfig.from_parameters({"model": "pyramidbox", "canvas": 256, "bs": 2, "processes": 3,
                                     "ray_address": "auto"})
    assert RunConfig.from_parameters(cfg.parameters()) == cfg
    assert cfg.parameters()["canvas"] == 256 and "model_options" not in cfg.parameters()


def test_model_options_select_a_recipe_variant():
    cfg = RunConfig.from_parameters({"model": "pyramidbox", "canvas": 256})
    assert cfg.model_options == (("canvas", 256),) and cfg.recipe().input_shape == (3, 256, 256)
    with pytest.raises(ZooinferError, match="unknown parameter 'canvas' for dpn131; valid: .*backend"):
        RunConfig.from_parameters({"model": "dpn131", "canvas": 256})


def test_workers_is_the_deprecated_name_of_processes():
    with pytest.warns(FutureWarning, match="'workers' is now called 'processes'"):
        cfg = RunConfig.from_parameters({"model": "dpn131", "workers": 2})
    assert cfg.processes == 2 and cfg.distributed
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new name warns about nothing
        assert RunConfig.from_parameters({"model": "dpn131", "processes": 2}).processes == 2
    with pytest.warns(FutureWarning), pytest.raises(ZooinferError, match="'workers' .* and 'processes' disagree"):
        RunConfig.from_parameters({"model": "dpn131", "workers": 2, "processes": 3})


@pytest.mark.parametrize("params, message", [
    ({}, "parameters need 'model'"),
    ({"model": "no-such-model"}, "unknown model 'no-such-model'; known: " + ", ".join(recipes.NAMES)),
    ({"model": "dpn131", "batch": 8}, r"unknown parameter 'batch' for dpn131 \(did you mean .*\); valid: .*bs"),
    ({"model": "dpn131", "backend": "tensorflow"}, "unknown backend 'tensorflow'; choose one of onnxruntime, "),
    ({"model": "dpn131", "bs": 0}, "'bs' must be an integer >= 1, got 0"),
    ({"model": "dpn131", "bs": "eight"}, "'bs' must be an integer >= 1, got 'eight'"),
    ({"model": "dpn131", "limit": 2.5}, "'limit' must be an integer >= 1"),
    ({"model": "dpn131", "processes": 0}, "'processes' must be an integer >= 1"),
    ({"model": "dpn131", "precision": "int8"}, "'precision' must be one of fp32, fp16"),
    ({"model": "dpn131", "batch_sizes": []}, "'batch_sizes' must be a list of integers >= 1"),
    ({"model": "dpn131", "progress": "maybe"}, "'progress' must be true or false"),
    ({"model": "dpn131", "backend": "bins", "processes": 2}, "nothing to spread over processes; run it with "
                                                             "processes=1"),
])
def test_bad_parameters_are_refused_with_what_was_expected(params, message):
    with pytest.raises(ZooinferError, match=message):
        RunConfig.from_parameters(params)


def test_direct_construction_is_checked_too():
    with pytest.raises(ZooinferError, match="unknown backend 'onnx'; choose one of " + ", ".join(BACKENDS)):
        RunConfig(model="dpn131", backend="onnx")
    with pytest.raises(ZooinferError, match="'batch_sizes' must be a non-empty tuple"):
        RunConfig(model="dpn131", batch_sizes=[1, 8])
    assert RunConfig(model="dpn131", precision="fp16").fp16


# ---------------------------------------------------------------------------------------------------- issue 18
@pytest.mark.parametrize("text, sizes", [("[1]", (1,)), ("[1, 8]", (1, 8)), ("1,8", (1, 8)), ("16", (16,))])
def test_4_list_parameters_in_their_text_form_are_parsed(text, sizes):
    """papermill hands -p batch_sizes "[1]" over as the string "[1]"."""
    assert RunConfig.from_parameters({"model": "dpn131", "batch_sizes": text}).batch_sizes == sizes


@pytest.mark.parametrize("key, text, value", [("static_batch", "false", False), ("profile_ops", "True", True),
                                              ("progress", "no", False), ("bs", "8", 8), ("limit", "3", 3),
                                              ("bench_min_time", "0.25", 0.25)])
def test_4_bool_and_number_parameters_in_their_text_form_are_parsed(key, text, value):
    assert getattr(RunConfig.from_parameters({"model": "dpn131", key: text}), key) == value


@pytest.mark.parametrize("params, message", [
    ({"batch_sizes": "[one]"}, r"'batch_sizes' must be a list of integers >= 1, e.g. \[1, 8\] \(on a command line"),
    ({"batch_sizes": "[1, 8"}, r"'batch_sizes' must be a list of integers"),
    ({"bench_min_time": "-1"}, r"'bench_min_time' must be a number of seconds >= 0"),
    ({"bs": -1}, r"'bs' must be an integer >= 1, got -1"),
    ({"limit": 0}, r"'limit' must be an integer >= 1, got 0"),
    ({"limit": -1}, r"'limit' must be an integer >= 1, got -1"),
    ({"batchsize": 2}, r"unknown parameter 'batchsize' for dpn131 \(did you mean 'batch_sizes'\?\); valid:"),
    ({"backend": "onnxrutime"}, r"unknown backend 'onnxrutime' \(did you mean 'onnxruntime'\?\)"),
    ({"backend": "bins"}, r"backend 'bins' needs results_dir= \(the folder ais_bench/benchmark wrote\)"),
    ({"backend": "acl", "om_path": "/nonexistent/x.om"}, r"'acl'|om_path"),
])
def test_bad_values_are_refused_when_the_configuration_is_built(params, message):
    with pytest.raises(ZooinferError, match=message):
        RunConfig.from_parameters({"model": "dpn131", **params})


def test_10_the_python_api_refuses_non_positive_limits_too():
    from zooinfer.evaluation import Evaluation

    with pytest.raises(ZooinferError, match="'limit' must be an integer >= 1, got -1"):
        Evaluation.for_model("dpn131", limit=-1)


def test_1_missing_and_empty_checkpoints_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(CheckpointError, match="parameter 'weights': checkpoint file not found: .*dpn131-7af84be88"):
        RunConfig.from_parameters({"model": "dpn131", "weights": str(tmp_path / "x.pth")})
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty.pth is empty \(0 bytes\); expected the PyTorch checkpoint"):
        RunConfig.from_parameters({"model": "dpn131", "weights": str(tmp_path / "empty.pth")})
    with pytest.raises(DatasetError, match="parameter 'data_root': dataset folder not found"):
        RunConfig.from_parameters({"model": "dpn131", "data_root": str(tmp_path / "imagenet")})


def test_6_output_folders_are_checked_when_the_configuration_is_built(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ZooinferError, match=f"parameter 'output_root': cannot create {afile}/out: {afile} is a file"):
        RunConfig.from_parameters({"model": "dpn131", "output_root": str(afile / "out")})
    with pytest.raises(ZooinferError, match="parameter 'output_root': cannot write into /proc"):
        RunConfig.from_parameters({"model": "dpn131", "output_root": "/proc/zooinfer-test"})
    with pytest.raises(ZooinferError, match="parameter 'run_dir': .* is a file"):
        RunConfig.from_parameters({"model": "dpn131", "run_dir": str(afile)})
    assert RunConfig.from_parameters({"model": "dpn131", "output_root": str(tmp_path / "new" / "out")}).output_root


def test_8_a_backend_whose_runtime_cannot_open_is_refused_first(monkeypatch):
    from zooinfer.backends import registry

    monkeypatch.setitem(registry.REGISTRY, "ort-cuda", dataclasses.replace(registry.REGISTRY["ort-cuda"],
                                                                           probe=lambda: "no GPU here"))
    with pytest.raises(BackendError, match="parameter 'backend': 'ort-cuda' cannot open on this machine: no GPU"):
        RunConfig.from_parameters({"model": "dpn131", "backend": "ort-cuda"})
    # a Ray cluster's nodes may have what the driver lacks: not probed here
    assert RunConfig.from_parameters({"model": "dpn131", "backend": "ort-cuda", "ray_address": "auto"})


def _static_onnx(path: Path, batch: int) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, 224, 224])
    y = helper.make_tensor_value_info("class", TensorProto.FLOAT, [batch, 3, 224, 224])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["class"])], "g", [x], [y])
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_8_a_bs_the_static_onnx_file_cannot_take_is_refused_first(tmp_path):
    onnx_file = _static_onnx(tmp_path / "bs8.onnx", 8)
    with pytest.raises(BackendError, match=r"parameter 'bs': .*bs8.onnx has a static batch size of 8, got bs=4"):
        RunConfig.from_parameters({"model": "dpn131", "onnx_path": str(onnx_file), "bs": 4})
    assert RunConfig.from_parameters({"model": "dpn131", "onnx_path": str(onnx_file), "bs": 8}).bs == 8
    with pytest.raises(BackendError, match="parameter 'onnx_path': ONNX file not found"):
        RunConfig.from_parameters({"model": "dpn131", "onnx_path": str(tmp_path / "none.onnx")})


def test_11_bins_needs_a_results_folder_with_result_files(tmp_path):
    with pytest.raises(BackendError, match="parameter 'results_dir': result folder not found"):
        RunConfig.from_parameters({"model": "dpn131", "backend": "bins", "results_dir": str(tmp_path / "r")})
    with pytest.raises(BackendError, match="holds no result files"):
        RunConfig.from_parameters({"model": "dpn131", "backend": "bins", "results_dir": str(tmp_path)})
    (tmp_path / "x_0.bin").write_bytes(b"\0" * 4000)
    assert RunConfig.from_parameters({"model": "dpn131", "backend": "bins", "results_dir": str(tmp_path)})


def test_subset_and_seed_select_a_reproducible_random_subset():
    config = RunConfig.from_parameters({"model": "dpn131", "subset": "4", "seed": "3"})
    assert (config.subset, config.seed) == (4, 3)
    ds = config.recipe().open_dataset(None)
    picked = [s.key for s in config.select(ds)]
    assert picked == [s.key for s in config.select(ds)] and len(picked) == 4
    assert picked != [s.key for s in ds.subset(4)] or len(ds) == 4
    with pytest.raises(ZooinferError, match="'limit' .* and 'subset' .* both select samples; give one"):
        RunConfig.from_parameters({"model": "dpn131", "subset": 4, "limit": 2})
    with pytest.raises(ZooinferError, match="parameter 'seed' must be an integer >= 0"):
        RunConfig(model="dpn131", seed=-1)


def test_22_10_a_subset_at_or_above_the_dataset_size_is_the_whole_dataset_and_a_full_run():
    """subset 100 of 10 samples: clipped, said in a note, and judged as a full run (a verdict is given)."""
    from zooinfer import report

    config = RunConfig(model="dpn131", weights="/w/dpn131.pth", data_root="/data/imagenet", subset=100, seed=3)
    assert not report.meaningful(config)[0]
    for n in (10, 100):
        full, note = config.fitted(n)
        assert full.subset is None and full.limit is None and full == dataclasses.replace(config, subset=None)
        assert note == f"subset 100 >= the dataset's {n} samples: the whole dataset is evaluated (a full run)"
        assert report.meaningful(full) == (True, "")
    assert config.fitted(101) == (config, None)
    assert RunConfig(model="dpn131").fitted(5) == (RunConfig(model="dpn131"), None)


def test_22_10_a_limit_at_or_above_the_dataset_size_is_a_full_run_too():
    """limit 50 of 10 samples evaluates them all: a full run with a verdict, not "only the first 50"."""
    from zooinfer import report

    config = RunConfig(model="dpn131", weights="/w/dpn131.pth", data_root="/data/imagenet", limit=50)
    full, note = config.fitted(10)
    assert full == dataclasses.replace(config, limit=None) and report.meaningful(full) == (True, "")
    assert note == "limit 50 >= the dataset's 10 samples: the whole dataset is evaluated (a full run)"
    assert config.fitted(51) == (config, None)


def test_metric_parameters_are_the_recipes_and_reach_its_accumulator():
    config = RunConfig.from_parameters({"model": "pyramidbox", "iou_thresh": "0.4"})
    assert config.metric_options == (("iou_thresh", 0.4),) and config.parameters()["iou_thresh"] == 0.4
    recipe = config.recipe()
    assert recipe.new_accumulator(recipe.open_dataset(None)).iou_thresh == 0.4
    with pytest.raises(ZooinferError, match="unknown parameter 'iou_thresh' for dpn131"):
        RunConfig.from_parameters({"model": "dpn131", "iou_thresh": 0.4})
    with pytest.raises(ZooinferError, match="metric parameter 'iou_thresh' must be a number"):
        RunConfig.from_parameters({"model": "pyramidbox", "iou_thresh": "half"})


# ---------------------------------------------------------------------------------------------------- issue 22
#: modules whose parameters config checks through zooinfer.parameters, never by importing them
FEATURE_MODULES = {"loadgen", "variants", "report", "store", "export", "bench"}


def test_config_imports_no_feature_module_not_even_inside_a_function():
    """config sits below the features: it parses their parameters with zooinfer.parameters (no import circle)."""
    import ast

    import zooinfer.config

    tree = ast.parse(Path(zooinfer.config.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {part for alias in node.names for part in alias.name.split(".")}
        elif isinstance(node, ast.ImportFrom):
            imported |= set((node.module or "").split("."))
            if not (node.module or "").strip("."):  # from . import report
                imported |= {alias.name for alias in node.names}
    assert not imported & FEATURE_MODULES, sorted(imported & FEATURE_MODULES)


def test_the_backend_registry_config_imports_does_not_import_config_back():
    """config imports the registry; the registry names RunConfig for type checkers only (no import circle)."""
    import ast

    import zooinfer.backends.registry

    tree = ast.parse(Path(zooinfer.backends.registry.__file__).read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and
                   getattr(node.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(node)}
    imported = {node.module for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and id(node) not in typing_only}
    assert not {m for m in imported if m and m.strip(".").split(".")[-1] == "config"}


@pytest.mark.parametrize("key, value, what", [
    ("om_path", b'" + str(__import__("os").system("true")) + "', "binary data"),
    ("results_dir", {"a", "b"}, "a set"),
    ("ray_address", __import__("datetime").date(2024, 1, 31), "a date or time"),
    ("compare", ["onnxruntime", b"x"], r"its value\[1\] is binary data"),
])
def test_22_1_values_that_are_not_plain_data_are_refused_for_every_parameter(key, value, what):
    with pytest.raises(ZooinferError, match=f"parameter '{key}': .*{what}.*not plain data"):
        RunConfig.from_parameters({"model": "dpn131", key: value}, check=False)


def test_22_6_a_bool_is_not_a_number_for_metric_parameters():
    for value in (True, "yes", False):
        with pytest.raises(ZooinferError, match=r"metric parameter 'iou_thresh' must be a number in \(0, 1\], got"):
            RunConfig.from_parameters({"model": "pyramidbox", "iou_thresh": value})
    for value in (0, "0", 1.5, -0.5, "nan"):
        with pytest.raises(ZooinferError, match=r"metric parameter 'iou_thresh' must be a number in \(0, 1\]"):
            RunConfig.from_parameters({"model": "pyramidbox", "iou_thresh": value})
    assert RunConfig.from_parameters({"model": "pyramidbox", "iou_thresh": 1}).metric_options == (("iou_thresh", 1.0),)
    with pytest.raises(ZooinferError, match="metric parameter 'evaluator' must be a name"):
        RunConfig.from_parameters({"model": "ssd_resnet34", "evaluator": True})


@pytest.mark.parametrize("field, value", [("limit", True), ("processes", True), ("threads", True), ("keep", True),
                                          ("device_id", False), ("calibration", True), ("bench_min_time", True),
                                          ("latency_bound_ms", True)])
def test_22_6_direct_construction_refuses_a_bool_for_a_number(field, value):
    with pytest.raises(ZooinferError, match=f"parameter '{field}' must be"):
        RunConfig(model="dpn131", **{field: value})


def test_22_15_a_latency_bound_must_be_a_number_of_ms_above_zero():
    for value in (0, "0", -5, True, "yes"):
        with pytest.raises(ZooinferError, match=r"parameter 'latency_bound_ms' must be a number of ms > 0, got"):
            RunConfig.from_parameters({"model": "dpn131", "latency_bound_ms": value})
    with pytest.raises(ZooinferError, match=r"parameter 'latency_bound_ms' must be a number of ms > 0, got 0"):
        RunConfig(model="dpn131", latency_bound_ms=0)
    assert RunConfig.from_parameters({"model": "dpn131", "latency_bound_ms": "250"}).latency_bound_ms == 250.0
    assert RunConfig.from_parameters({"model": "dpn131", "latency_bound_ms": "none"}).latency_bound_ms is None


@pytest.mark.parametrize("name, text", [("ZOOINFER_CHUNK_SIZE", "many"), ("ZOOINFER_FLUSH_S", "0"),
                                        ("ZOOINFER_PIN_CORES", "maybe"), ("ZOOINFER_FAIL_CHUNK", "x"),
                                        ("ZOOINFER_FAIL_CHUNK_MODE", "boom"), ("ZOOINFER_OUTPUTS", "/proc/zooinfer-x")])
def test_22_15_environment_variables_are_checked_with_the_parameters(monkeypatch, name, text):
    monkeypatch.setenv(name, text)
    with pytest.raises(ZooinferError, match=f"environment variable {name}"):
        RunConfig.from_parameters({"model": "dpn131"})
    assert RunConfig.from_parameters({"model": "dpn131"}, check=False)  # only the check reads them


def test_22_15_a_malformed_bins_compare_folder_is_refused_before_anything_runs(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    (tmp_path / "empty").mkdir()
    for folder, message in ((afile, "is a file, expected the folder"), (tmp_path / "empty", "holds no result files")):
        with pytest.raises(ZooinferError, match=f"parameter 'compare' \\(bins:{folder}\\): .*{message}"):
            RunConfig.from_parameters({"model": "dpn131", "compare": f"[onnxruntime-fp16, bins:{folder}]"})
    # a missing folder stays what it was: a variant the section skips, with the reason
    assert RunConfig.from_parameters({"model": "dpn131", "compare": f"[bins:{tmp_path / 'none'}]"}).compare


def _interrupted_run(tmp_path: Path, **parameters) -> Path:
    """A partial run folder whose stored fingerprint says: dpn131, synthetic weights, bs 1, the first 4 samples."""
    import json

    folder = tmp_path / "dpn131" / ".run-1.partial"
    (folder / "predictions").mkdir(parents=True)
    params = {"model": "dpn131", "bs": 1, "limit": 4, "backend": "onnxruntime", "data_root": None, **parameters}
    fingerprint = {
        "model": "dpn131", "recipe": {"options": {}, "input_shape": [3, 224, 224], "task": "classification"},
        "checkpoint": {"md5": "synthetic weights"},
        "dataset": {"name": "imagenet", "root": "/somewhere", "images": 5},
        "selection": {"limit": 4, "subset": None, "seed": None, "samples": 4, "keys_sha1": "0" * 40},
        "backend": {"backend": "onnxruntime", "precision": "fp32", "bs": 1, "static_batch": False,
                    "onnx_path": None, "om_path": None, "results_dir": None},
        "parameters": params}
    (folder / "predictions" / "fingerprint.json").write_text(json.dumps(fingerprint))
    return folder


def test_22_10_a_clipped_selection_resumes_when_given_again(tmp_path):
    """A run given limit 50 on 5 samples stored itself as full: giving limit 50 again on resume is the same run."""
    import json

    folder = _interrupted_run(tmp_path, limit=None)
    doc = json.loads((folder / "predictions" / "fingerprint.json").read_text())
    doc["selection"].update(limit=None, samples=5)
    (folder / "predictions" / "fingerprint.json").write_text(json.dumps(doc))
    for given in ({"limit": 50}, {"subset": 5}, {}):
        assert RunConfig.from_parameters({"model": "dpn131", "resume": str(folder), **given}).resume == str(folder)
    with pytest.raises(ZooinferError, match=r"selected samples \(limit: None -> 4\)"):
        RunConfig.from_parameters({"model": "dpn131", "resume": str(folder), "limit": 4})


def test_22_15_a_resume_that_differs_is_refused_when_the_configuration_is_built(tmp_path):
    folder = _interrupted_run(tmp_path)
    same = {"model": "dpn131", "resume": str(folder), "limit": 4}
    assert RunConfig.from_parameters(same).resume == str(folder)
    with pytest.raises(ZooinferError, match=r"cannot resume .*: this run differs from the stored one in selected "
                                            r"samples \(limit: 4 -> 2\); backend settings \(bs: 1 -> 4\)"):
        RunConfig.from_parameters({**same, "bs": 4, "limit": 2})
    weights = tmp_path / "dpn131.pth"
    weights.write_bytes(b"not synthetic")
    with pytest.raises(ZooinferError, match=r"checkpoint \(md5: 'synthetic weights' -> "
                                            r"'[0-9a-f]{32}'\)"):
        RunConfig.from_parameters({**same, "weights": str(weights)})
    with pytest.raises(ZooinferError, match=r"model \('dpn131' -> 'pcb'\)"):
        RunConfig.from_parameters({**same, "model": "pcb"})
    with pytest.raises(ZooinferError, match=r"dataset \(data_root: None -> '.*imagenet'\)"):
        (tmp_path / "imagenet").mkdir()
        RunConfig.from_parameters({**same, "data_root": str(tmp_path / "imagenet")})
