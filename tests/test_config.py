"""RunConfig: one frozen description of a run, built from notebook parameters (normalised, or refused clearly)."""
from __future__ import annotations

import dataclasses
import warnings

import pytest

from zooinfer.backends import BACKENDS
from zooinfer.config import RunConfig
from zooinfer.errors import ZooinferError


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
                                     "bench_min_time": "0.5", "static_batch": "true", "data_root": "/data/x"})
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
    ({"model": "dpn131", "batch": 8}, "unknown parameter 'batch' for dpn131; valid: .*bs"),
    ({"model": "dpn131", "backend": "tensorflow"}, "unknown backend 'tensorflow'; choose one of onnxruntime, "),
    ({"model": "dpn131", "bs": 0}, "'bs' must be an integer >= 1, got 0"),
    ({"model": "dpn131", "bs": "eight"}, "'bs' must be an integer >= 1, got 'eight'"),
    ({"model": "dpn131", "limit": 2.5}, "'limit' must be an integer >= 1"),
    ({"model": "dpn131", "processes": 0}, "'processes' must be an integer >= 1"),
    ({"model": "dpn131", "precision": "int8"}, "'precision' must be one of fp32, fp16"),
    ({"model": "dpn131", "batch_sizes": []}, "'batch_sizes' must be a non-empty tuple"),
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
