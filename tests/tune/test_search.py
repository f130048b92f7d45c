"""The precision search on a tiny colour classifier whose conv2 breaks under INT8 (tune_helpers.py)."""
from __future__ import annotations

import pytest
from tune_helpers import colour  # noqa: F401 - the fixture

from zooinfer.backends import open_session
from zooinfer.errors import ZooinferError
from zooinfer.int8 import calibration_samples
from zooinfer.tune import search as S


def _setup(colour):  # noqa: F811
    recipe, ds, onnx = colour
    _, cal = calibration_samples(ds, 4)
    builder = S.OrtInt8Builder(recipe, onnx, ds, cal.keys)
    reference = S.predict(recipe, ds, open_session("onnxruntime", onnx_path=onnx))
    return recipe, ds, builder, reference


def test_the_sensitive_layer_is_kept_first_and_the_search_stops_once_the_budget_holds(colour):  # noqa: F811
    recipe, ds, builder, reference = _setup(colour)
    assert reference.metrics == {"top1": 1.0}  # the fp32 model knows every colour
    res = S.search(recipe, ds, builder, reference, budget=0.01, max_keep=3, min_time=0.05)
    assert res.layers[0].name == "conv2" and res.layers[0].samples_fixed == 6
    assert res.chosen == ("conv2",) and res.passed
    assert [p.kept for p in res.curve] == [0, 1]  # stopped after the first layer: the budget holds
    assert res.curve[0].drop == pytest.approx(6 / 9) and not res.curve[0].passes  # full INT8: one class for all
    assert res.curve[1].drop == 0.0 and res.curve[1].passes and res.curve[1].images_per_s > 0
    doc = res.to_dict()
    assert doc["chosen"] == ["conv2"] and doc["ranking"][0]["node"] == "conv2" and "CPU flags" in doc["cpu"]
    assert "| 1 | conv2 |" in res.markdown()


def test_a_build_within_the_budget_keeps_nothing(colour):  # noqa: F811
    recipe, ds, builder, reference = _setup(colour)
    res = S.search(recipe, ds, builder, reference, budget=0.9, min_time=0.05)
    assert res.passed and res.chosen == () and len(res.curve) == 1 and res.layers == []


def test_no_set_within_max_keep_is_said(colour):  # noqa: F811
    recipe, ds, builder, reference = _setup(colour)
    res = S.search(recipe, ds, builder, reference, budget=0.01, verify=0, max_keep=1, min_time=0.05)
    # unverified, the noisiest layer by tensor noise is not conv2 (its error hides behind its weight of 1000)
    assert not res.passed and len(res.chosen) == 1 and res.chosen != ("conv2",)
    assert any("still" in n for n in res.notes)


def test_quantized_layers_and_their_noise(colour):  # noqa: F811
    recipe, ds, builder, _ = _setup(colour)
    path = builder.build(())
    layers = {name: op for name, op, *_ in S.quantized_layers(path)}
    assert layers == {"conv1": "Conv", "conv2": "Conv", "fc": "Gemm"}
    weight = S.weight_noise(path, builder.graph)
    assert weight["conv2"] == pytest.approx(3 / (3 * 1000 ** 2 + 3), rel=1e-3)  # its weights of 1 round to 0
    noise = S.input_noise(path, recipe, ds.subset(3))
    assert set(noise) == set(layers) and all(v >= 0 for v in noise.values())


def test_unknown_and_untunable_variants_are_refused():
    with pytest.raises(ZooinferError, match="unknown variant 'int9'.*onnxruntime-int8"):
        S.check_variant("int9")
    with pytest.raises(ZooinferError, match="'onnxruntime' cannot be tuned.*tunable: onnxruntime-int8"):
        S.check_variant("onnxruntime")
    assert S.check_variant("onnxruntime-int8") == "onnxruntime-int8"


def test_a_ranking_subset_larger_than_the_samples_is_clipped_and_said():
    assert S.rank_subset_size(8, 10) == (8, None)
    n, note = S.rank_subset_size(64, 10)
    assert n == 10 and "ranking subset 64 is larger than the 10 samples" in note and "clipped to 10" in note
    with pytest.raises(ZooinferError, match="rank-subset must be an integer >= 1"):
        S.rank_subset_size(0, 10)


def test_a_build_with_layers_kept_fp32_opens_without_the_transformer_that_quantises_them_again(colour, monkeypatch):  # noqa: F811
    """ONNX Runtime's WeightBiasQuantization would quantise the kept layers' weights again at session start: the
    builder's sessions of such builds turn it off (what the build's sidecar records)."""
    from zooinfer import backends
    from zooinfer.int8 import KEEP_FP32_DISABLED_OPTIMIZERS

    recipe, ds, builder, _ = _setup(colour)
    seen = []
    real = backends.open_session
    monkeypatch.setattr(backends, "open_session", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    builder.session(builder.build(("conv2",)))
    builder.session(builder.build(()))
    assert seen[0]["disabled_optimizers"] == KEEP_FP32_DISABLED_OPTIMIZERS and seen[1]["disabled_optimizers"] == ()
