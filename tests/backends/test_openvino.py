"""The OpenVINO backend and variants: f32 set explicitly, parity with ONNX Runtime on every model's embedded sample,
bf16 only where the CPU has it, NNCF INT8 from the ONNX Runtime INT8 variant's calibration images, and the install
line when openvino / nncf are missing."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from conftest import tiny_recipe
from zooinfer import cpu, export, recipes, variants
from zooinfer.backends import get, open_session
from zooinfer.errors import BackendError, ZooinferError

pytest.importorskip("openvino", reason='the OpenVINO backend needs pip install -e ".[openvino]"')

INSTALL = 'pip install -e ".[openvino]"'


def _hide(monkeypatch, module: str) -> None:
    """Make ``import <module>`` raise ImportError, as where the package is not installed."""
    monkeypatch.setitem(sys.modules, module, None)


# ------------------------------------------------------------------------------------------------ the backend
def test_openvino_is_a_registered_cpu_backend_reading_the_onnx_file():
    b = get("openvino")
    assert b.needs == ("onnx_path",) and b.resource == "cpu" and b.unavailable() is None
    with pytest.raises(BackendError, match="needs an ONNX file"):
        open_session("openvino")


def test_f32_is_set_explicitly_and_agrees_with_onnxruntime_on_a_dynamic_batch(tiny_onnx):
    sess = open_session("openvino", onnx_path=tiny_onnx, threads=1)
    # the CPU plugin's default is bf16 on a bf16 CPU (this machine's): the session must not inherit it
    assert sess.inference_precision == "f32" and sess.threads == 1
    assert sess.compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert sess.input_shape[0] is None and sess.input_shape[1:] == (3, 8, 8)
    ort = open_session("onnxruntime", onnx_path=tiny_onnx, threads=1)
    for n in (1, 5):
        x = np.random.default_rng(n).standard_normal((n, 3, 8, 8), dtype=np.float32)
        got, want = sess.run(x), ort.run(x)
        assert [g.shape for g in got] == [w.shape for w in want]
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    first = sess.run(x)[0]
    sess.run(np.zeros_like(x))
    assert np.array_equal(first, sess.run(x)[0])  # outputs are copies, not views the next request overwrites


def test_static_batch_mismatch_is_a_clear_error(tmp_path, tiny_model):
    path = export.export_onnx(tiny_recipe(), tiny_model, batch=2, out_path=tmp_path / "bs2.onnx")
    sess = open_session("openvino", onnx_path=path, threads=1)
    with pytest.raises(BackendError, match="static batch size of 2 but was given a batch of 3"):
        sess.run(np.zeros((3, 3, 8, 8), np.float32))


def test_missing_openvino_gives_the_install_line(monkeypatch, tiny_onnx, tiny_dataset):
    import importlib.util

    from zooinfer.config import RunConfig

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino"
                        else real_find_spec(name, *a))
    why = get("openvino").unavailable()
    assert "openvino is not installed" in why and INSTALL in why
    with pytest.raises(BackendError, match=r"'backend': 'openvino' cannot open on this machine: openvino is not "
                                           r"installed\. pip install -e \"\.\[openvino\]\""):
        RunConfig.from_parameters({"model": "dpn131", "backend": "openvino"})
    monkeypatch.undo()
    _hide(monkeypatch, "openvino")
    with pytest.raises(BackendError, match=r"needs the Python package 'openvino'.*\.\[openvino\]"):
        open_session("openvino", onnx_path=tiny_onnx)
    v = variants.open_variant("openvino-int8", tiny_recipe(), onnx_path=tiny_onnx, dataset=tiny_dataset)
    assert isinstance(v, variants.Skipped) and INSTALL in v.reason


# ------------------------------------------------------------------------------------------------ the variants
def test_f32_and_bf16_variants_run_in_what_they_say(tiny_onnx):
    f32 = variants.open_variant("openvino", tiny_recipe(), onnx_path=tiny_onnx, threads=1)
    assert (f32.backend, f32.precision, f32.info["inference_precision"]) == ("openvino", "fp32", "f32")
    if not cpu.has_bf16():
        pytest.skip(f"this CPU has no bf16 ({cpu.isa_note()})")
    bf16 = variants.open_variant("openvino-bf16", tiny_recipe(), onnx_path=tiny_onnx, threads=1)
    assert bf16.precision == "bf16" and bf16.info["inference_precision"] == "bf16" and "avx512_bf16" in bf16.info["cpu"]
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8), dtype=np.float32)
    rows = export.parity(f32.session.run(x), bf16.session.run(x), ["logits", "maps"])
    assert 0 < max(r["peak_rel"] for r in rows) < 0.05  # rounded to bf16 (8 bits of mantissa), not f32 again


def test_bf16_variant_is_skipped_with_the_reason_on_a_cpu_without_bf16(monkeypatch, tiny_onnx):
    monkeypatch.setattr(cpu, "has_bf16", lambda: False)
    v = variants.open_variant("openvino-bf16", tiny_recipe(), onnx_path=tiny_onnx)
    assert isinstance(v, variants.Skipped)
    assert "no bf16 instructions" in v.reason and "f32" in v.reason and "CPU flags" in v.reason


def test_int8_variant_is_nncf_calibrated_on_the_onnxruntime_int8_images_and_cached(tiny_onnx, tiny_dataset):
    evaluated = ["img0", "img1", "img2"]
    ov = variants.open_variant("openvino-int8", tiny_recipe(), onnx_path=tiny_onnx, dataset=tiny_dataset,
                               calibration=3, evaluated=evaluated, threads=1)
    ort = variants.open_variant("onnxruntime-int8", tiny_recipe(), onnx_path=tiny_onnx, dataset=tiny_dataset,
                                calibration=3, evaluated=evaluated, threads=1)
    assert (ov.backend, ov.precision) == ("openvino", "int8") and not ov.info["cached"]
    assert ov.info["calibration_keys"] == ort.info["calibration_keys"]
    assert not set(ov.info["calibration_keys"]) & set(evaluated)
    import onnx

    ops = {n.op_type for n in onnx.load(str(ov.onnx_path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # NNCF's QDQ graph, which OpenVINO runs as int8
    k = ov.info["kernels"]  # read from OpenVINO's compiled runtime graph
    assert (k["conv_int8"], k["conv_float"]) == (1, 0) and "runs 1 Conv" in ov.info["kernel_summary"]
    x = np.stack([tiny_recipe().preprocess(s.path)[0][0] for s in tiny_dataset])
    ref = open_session("onnxruntime", onnx_path=tiny_onnx).run(x)[0]
    got = ov.session.run(x)[0]
    assert np.abs(got - ref).max() <= 0.1 * np.abs(ref).max()
    again = variants.open_variant("openvino-int8", tiny_recipe(), onnx_path=tiny_onnx, dataset=tiny_dataset,
                                  calibration=3, evaluated=evaluated)
    assert again.info["cached"] and again.onnx_path == ov.onnx_path


def test_int8_ignored_scope_keeps_the_named_conv_in_f32(tiny_onnx, tiny_dataset):
    import onnx

    from zooinfer import int8

    pre, _ = int8.preprocessed_onnx(tiny_onnx)
    conv = next(n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Conv")
    v = variants.open_variant("openvino-int8", tiny_recipe(), onnx_path=tiny_onnx, dataset=tiny_dataset,
                              calibration=2, int8_options={"nodes_to_exclude": [conv]})
    g = onnx.load(str(v.onnx_path)).graph
    node = next(n for n in g.node if n.name == conv)
    producers = {o: n.op_type for n in g.node for o in n.output}
    assert v.info["ignored_scope"] == [conv]
    assert producers.get(node.input[1]) != "DequantizeLinear"  # its weight stays f32
    assert (v.info["kernels"]["conv_int8"], v.info["kernels"]["conv_float"]) == (0, 1)
    with pytest.raises(ZooinferError, match="ignored_scope names no node of .*: no_such_node"):
        variants.open_variant("openvino-int8", tiny_recipe(), onnx_path=tiny_onnx, dataset=tiny_dataset,
                              calibration=2, int8_options={"nodes_to_exclude": ["no_such_node"]})


def test_int8_on_a_cpu_without_vnni_says_what_that_means_for_speed(monkeypatch):
    from zooinfer import int8, openvino_variants

    assert openvino_variants.int8_speed_note() is None or not cpu.has_int8_dot()
    monkeypatch.setattr(int8, "is_x86", lambda: True)
    monkeypatch.setattr(cpu, "known", lambda: True)
    monkeypatch.setattr(cpu, "has_int8_dot", lambda: False)
    note = openvino_variants.int8_speed_note()
    assert "no int8 dot-product instructions (VNNI / AMX)" in note and "gains much less" in note and "still runs" in note


def test_int8_without_nncf_or_data_is_a_clear_error(monkeypatch, tiny_onnx, tiny_dataset):
    with pytest.raises(ZooinferError, match="'openvino-int8' needs dataset="):
        variants.open_variant("openvino-int8", tiny_recipe(), onnx_path=tiny_onnx)
    _hide(monkeypatch, "nncf")
    with pytest.raises(ZooinferError, match=r"needs the Python package 'nncf'.*\.\[openvino\]"):
        variants.open_variant("openvino-int8", tiny_recipe(), onnx_path=tiny_onnx, dataset=tiny_dataset)


# ------------------------------------------------------------------------------------------------ every model
#: OpenVINO f32 vs ONNX Runtime fp32 on every view of every embedded sample: export.parity's ``peak_rel`` (max abs
#: error / max |ONNX Runtime output|, per output) below this. The heavy models (seconds per image) are marked slow;
#: PyramidBox at its notebook's default canvas (256; the guide's 1000 is the same graph at 15x the pixels).
PARITY = 1e-4
MODELS = [pytest.param(name, {o: v for o, v, _ in (r.notebook.extra if r.notebook else ())},
                       marks=[pytest.mark.slow] if r.bench.heavy else [], id=name)
          for name, r in ((name, recipes.get(name)) for name in recipes.NAMES)]


@pytest.fixture(scope="module")
def exported():
    """One synthetic-weights export per model (and recipe options) for this module."""
    from zooinfer.models import build_model

    made: dict = {}

    def get_onnx(name: str, options: dict):
        key = (name, tuple(sorted(options.items())))
        if key not in made:
            made[key] = export.export_onnx(recipes.get(name, **options), build_model(name))
        return made[key]

    return get_onnx


@pytest.mark.parametrize("name,options", MODELS)
def test_openvino_f32_agrees_with_onnxruntime_on_every_embedded_sample(name, options, exported):
    r = recipes.get(name, **options)
    path = exported(name, options)
    ov, ort = open_session("openvino", onnx_path=path), open_session("onnxruntime", onnx_path=path)
    ds = r.open_dataset(None)
    worst = []
    for s in ds:
        for view in r.preprocess(s.path)[0]:
            rows = export.parity(ort.run(view[None]), ov.run(view[None]), list(r.output_names))
            worst.append(max(rows, key=lambda row: row["peak_rel"]) | {"sample": s.key})
    assert len(worst) >= len(ds) > 0
    bad = max(worst, key=lambda row: row["peak_rel"])
    assert bad["peak_rel"] < PARITY, bad
