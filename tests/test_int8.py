"""zooinfer.int8: the types ONNX Runtime runs fast on this CPU, calibration outside the evaluated selection, and the
count of int8 / fp32 convolutions in ONNX Runtime's optimised graph."""
from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytest

from conftest import tiny_recipe
from zooinfer import compare, cpu, int8, variants
from zooinfer.errors import ZooinferError

pytest.importorskip("onnxruntime.quantization")

x86 = pytest.mark.skipif(not int8.is_x86(), reason="ONNX Runtime's x86 int8 kernels (elsewhere s8s8 fuses)")


def _warns_on_x86(match: str):
    return pytest.warns(UserWarning, match=match) if int8.is_x86() else contextlib.nullcontext()


def residual_block_onnx(path, input_name: str = "image", channels: int = 8):
    """A tiny residual block, (N, 3, 8, 8) -> (N, 4): conv1 -> relu, whose output feeds both conv2 and the Add
    (a tensor with two consumers, as in DPN's dual paths and ResNet's residual adds), then pool and a Gemm."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def w(name, *shape):
        return numpy_helper.from_array((0.3 * rng.standard_normal(shape)).astype(np.float32), name)

    c = channels
    nodes = [helper.make_node("Conv", [input_name, "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c2", "r1"], ["sum"], name="add"),
             helper.make_node("Relu", ["sum"], ["r2"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["pooled"], name="pool"),
             helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], name="fc", transB=1)]
    graph = helper.make_graph(
        nodes, "residual", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
        [w("w1", c, 3, 3, 3), w("b1", c), w("w2", c, c, 3, 3), w("b2", c), w("wf", 4, c), w("bf", 4)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@x86
def test_int8_activations_leave_fp32_convolutions_and_uint8_activations_none(tmp_path, tiny_dataset):
    src = residual_block_onnx(tmp_path / "residual.onnx")
    r = tiny_recipe()
    with pytest.warns(UserWarning, match="2 convolutions stayed fp32"):
        s8, s8_info = int8.int8_onnx(r, src, tiny_dataset, calibration=3, activation_type="int8")
    u8, u8_info = int8.int8_onnx(r, src, tiny_dataset, calibration=3)  # the x86 default: uint8 activations
    assert u8_info["activations"] == "uint8" and u8_info["weights"] == "int8"
    assert u8_info["reduce_range"] is (not cpu.has_int8_dot())
    ks8, ku8 = int8.kernel_counts(s8), int8.kernel_counts(u8)
    assert ks8["conv_fp32"] == 2 and ks8["conv_int8"] == 0 and set(ks8["fp32_conv_nodes"]) == {"conv1", "conv2"}
    assert ku8["conv_fp32"] == 0 and ku8["conv_int8"] == 2 and ku8["matmul_int8"] == 1
    assert u8_info["kernels"]["conv_fp32"] == 0 and u8_info["kernel_warning"] is None
    assert s8_info["kernels"]["conv_fp32"] == 2 and "uint8 activations" in s8_info["kernel_warning"]
    assert "runs 2 Conv + 1 Gemm/MatMul as int8; 0 Conv" in u8_info["kernel_summary"]
    # the fp32 graph: every convolution fp32 (NCHWc or plain Conv), none int8
    k32 = int8.kernel_counts(src)
    assert k32["conv_fp32"] == 2 and k32["conv_int8"] == 0


@x86
def test_excluded_convolutions_are_not_warned_about(tmp_path, tiny_dataset):
    src = residual_block_onnx(tmp_path / "residual.onnx")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path, info = int8.int8_onnx(tiny_recipe(), src, tiny_dataset, calibration=2, nodes_to_exclude=["conv2"])
    assert info["kernels"]["excluded"] == {"conv": 1, "matmul": 0}
    assert info["kernels"]["conv_fp32"] == 1 and info["kernels"]["conv_int8"] == 1
    assert info["kernel_warning"] is None and not [w for w in caught if "stayed fp32" in str(w.message)]
    # ONNX Runtime's WeightBiasQuantization would quantise the excluded conv's weights and fuse it into an int8
    # kernel: the build says so, and the variant's session runs without it
    assert info["ort_disabled_optimizers"] == ["WeightBiasQuantization"]
    assert int8.kernel_counts(path)["conv_fp32"] == 0
    v = variants.open_variant("onnxruntime-int8", tiny_recipe(), onnx_path=src, dataset=tiny_dataset, calibration=2,
                              int8_options={"nodes_to_exclude": ["conv2"]})
    assert v.onnx_path == path
    import onnxruntime as ort

    x = np.random.default_rng(1).random((2, 3, 8, 8), dtype=np.float32)
    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    kept = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"],
                                disabled_optimizers=["WeightBiasQuantization"]).run(None, {"image": x})[0]
    assert not np.array_equal(plain, kept)
    np.testing.assert_array_equal(v.session.run(x)[0], kept)


def test_default_types_follow_the_cpu(monkeypatch):
    monkeypatch.setattr(int8, "is_x86", lambda: True)
    monkeypatch.setattr(cpu, "has_int8_dot", lambda: True)
    assert int8.default_types() == {"activation_type": "uint8", "weight_type": "int8", "reduce_range": False}
    assert int8.speed_note() is None
    monkeypatch.setattr(cpu, "has_int8_dot", lambda: False)
    monkeypatch.setattr(cpu, "known", lambda: True)
    assert int8.default_types()["reduce_range"] is True
    assert "no int8 dot-product instructions" in int8.speed_note()
    monkeypatch.setattr(int8, "is_x86", lambda: False)
    assert int8.default_types() == {"activation_type": "int8", "weight_type": "int8", "reduce_range": False}


def test_calibration_comes_from_outside_the_evaluated_selection(tiny_dataset):
    evaluated = ["img0", "img1", "img2"]
    chosen, cal = int8.calibration_samples(tiny_dataset, 3, evaluated=evaluated)
    assert cal.keys == ("img3", "img5", "img6") and cal.source == "outside the evaluated selection"
    assert "outside the 3 evaluated" in cal.note
    with pytest.warns(UserWarning, match="clipped to 4"):
        _, cal = int8.calibration_samples(tiny_dataset, 8, evaluated=evaluated)
    assert cal.keys == ("img3", "img4", "img5", "img6") and "outside the evaluated selection (4 images)" in cal.note
    _, cal = int8.calibration_samples(tiny_dataset, 3, evaluated=[s.key for s in tiny_dataset])
    assert cal.keys == ("img0", "img3", "img6") and cal.source == "evaluated images"
    assert "calibrated on evaluated images" in cal.note
    _, cal = int8.calibration_samples(tiny_dataset, keys=["img1", "img4"], evaluated=evaluated)
    assert cal.keys == ("img1", "img4") and "1 of the given calibration images are evaluated too" in cal.note
    _, cal = int8.calibration_samples(tiny_dataset, 3)  # the caller did not say what it evaluates
    assert cal.source is None and cal.note is None


def test_s8s8_is_a_variant_of_its_own(tiny_onnx, tiny_model, tiny_dataset):
    with pytest.raises(ZooinferError, match="onnxruntime-int8-s8s8"):
        variants.parse_name("onnxruntime-int8-s9s9")
    assert variants.PRECISION["onnxruntime-int8-s8s8"] == "int8"
    r = tiny_recipe()
    with _warns_on_x86("stayed fp32"):  # even TinyNet's one conv stays fp32 with int8 activations
        v = variants.open_variant("onnxruntime-int8-s8s8", r, onnx_path=tiny_onnx, model=tiny_model,
                                  dataset=tiny_dataset, calibration=2, evaluated=["img0"])
    assert isinstance(v, variants.Variant) and v.info["activations"] == "int8" and v.info["reduce_range"] is False
    assert v.info["calibration_from"] == "outside the evaluated selection" and "img0" not in v.info["calibration_keys"]
    assert v.info["cpu"] == cpu.isa_note() and "kernels" in v.info
    # int8_options cannot override what the variant's name fixes
    with _warns_on_x86("stayed fp32"):
        v = variants.open_variant("onnxruntime-int8-s8s8", r, onnx_path=tiny_onnx, model=tiny_model,
                                  dataset=tiny_dataset, calibration=2, int8_options={"activation_type": "uint8"})
    assert v.info["activations"] == "int8"


def test_compare_calibrates_outside_the_compared_samples_and_shows_the_kernels(tiny_onnx, tiny_model,
                                                                                tiny_dataset):
    cmp = compare.compare(tiny_recipe(), tiny_dataset, ["onnxruntime-int8"], limit=3, onnx_path=tiny_onnx,
                          model=tiny_model, calibration=2)
    info = cmp.result("onnxruntime-int8").info
    assert info["calibration_keys"] == ["img3", "img6"] and cmp.samples == ["img0", "img1", "img2"]
    md = cmp.markdown()
    assert "calibrated on images outside the 3 evaluated ones" in md
    assert "as int8;" in md and cpu.isa_note() in md
    assert cmp.to_dict()["variants"][1]["info"]["kernels"]["conv_int8"] >= 1 or not int8.is_x86()


def test_backends_and_precision_calibrates_outside_the_runs_selection(tiny_onnx, tiny_model, tiny_dataset):
    from types import SimpleNamespace

    from zooinfer import sections

    ev = SimpleNamespace(recipe=tiny_recipe(), dataset=tiny_dataset, onnx_path=tiny_onnx, model=tiny_model,
                         config=SimpleNamespace(bs=1, select=lambda data: data.subset(4), threads=None, om_path=None,
                                                device_id=0))
    doc, _ = sections.backends_and_precision(ev, ["onnxruntime-int8"], calibration=3, localise=False, show=False)
    info = next(v["info"] for v in doc["variants"] if v["name"] == "onnxruntime-int8")
    assert doc["n_samples"] == 4 and info["calibration_keys"] == ["img4", "img5", "img6"]
    assert info["calibration_from"] == "outside the evaluated selection" and doc["cpu"] == cpu.isa_note()


def test_the_quantizers_root_logger_warnings_are_kept_off_the_terminal(caplog):
    """ONNX Runtime's quantizer warns on the root logger per 1-D weight; the block that calls it is quiet, and the
    root logger's level is restored afterwards."""
    import logging

    from zooinfer import int8

    root = logging.getLogger()
    before = root.level
    with caplog.at_level(logging.WARNING), int8._quiet_root_logger():
        logging.warning("Axis 1 is out-of-range for weight 'x.bn.weight' with rank 1")
        logging.error("a real error")
    assert [r.getMessage() for r in caplog.records] == ["a real error"] and root.level == before


def test_the_quantizers_preprocessing_runs_in_its_own_temporary_folder(tmp_path, monkeypatch):
    """ONNX Runtime's shape inference may write temporary files into the working folder: quant_pre_process runs with
    the working folder set to the build's temporary folder, and the caller's is restored afterwards."""
    import os

    from onnxruntime.quantization import shape_inference

    from zooinfer import int8

    src = residual_block_onnx(tmp_path / "m.onnx")
    seen = []
    real = shape_inference.quant_pre_process
    monkeypatch.setattr(shape_inference, "quant_pre_process",
                        lambda *a, **kw: seen.append(os.getcwd()) or real(*a, **kw))
    here = os.getcwd()
    int8.preprocessed_onnx(src)
    assert seen and seen[0] != here and seen[0].startswith(str(tmp_path)) and os.getcwd() == here
