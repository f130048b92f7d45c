"""RunConfig: one frozen description of a run, built from notebook parameters (normalised, or refused clearly)."""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest

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
    ({"model": "resnet50"}, "unknown model 'resnet50'"),
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


def test_metric_parameters_are_the_recipes_and_reach_its_accumulator():
    config = RunConfig.from_parameters({"model": "pyramidbox", "iou_thresh": "0.4"})
    assert config.metric_options == (("iou_thresh", 0.4),) and config.parameters()["iou_thresh"] == 0.4
    recipe = config.recipe()
    assert recipe.new_accumulator(recipe.open_dataset(None)).iou_thresh == 0.4
    with pytest.raises(ZooinferError, match="unknown parameter 'iou_thresh' for dpn131"):
        RunConfig.from_parameters({"model": "dpn131", "iou_thresh": 0.4})
    with pytest.raises(ZooinferError, match="metric parameter 'iou_thresh' must be a number"):
        RunConfig.from_parameters({"model": "pyramidbox", "iou_thresh": "half"})
