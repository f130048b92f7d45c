"""zooinfer.variants: names, missing runtimes, fp16 conversion and its CPU simulation, INT8 calibration."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import tiny_recipe
from zooinfer import variants
from zooinfer.errors import ZooinferError

pytest.importorskip("onnxconverter_common", reason='the variants extra: pip install -e ".[variants]"')




def test_unknown_variant_lists_the_known_ones():
    with pytest.raises(ZooinferError) as e:
        variants.parse_name("onnxruntime-int4")
    msg = str(e.value)
    for name in ("onnxruntime-int8", "onnxruntime-fp16", "tensorrt-fp16", "bins:<folder>", "torch"):
        assert name in msg
    with pytest.raises(ZooinferError, match="folder after the colon"):
        variants.parse_name("bins:")
    assert variants.parse_name("bins:/some/dir") == ("bins", "/some/dir")


def test_unknown_name_raises_before_anything_is_built(tiny_dataset):
    class Boom:
        @property
        def model(self):
            raise AssertionError("built a model for a list with an unknown name")

        onnx_path = model

    with pytest.raises(ZooinferError, match="unknown variant"):
        variants.open_variants(["onnxruntime", "fp8"], tiny_recipe(), sources=Boom(), dataset=tiny_dataset)


def test_check_bins_folder_names_a_missing_or_malformed_folder(tmp_path):
    with pytest.raises(ZooinferError, match=r"variant 'bins:.*no-such': result folder not found"):
        variants.check_bins_folder(tmp_path / "no-such")
    (tmp_path / "file.bin").write_bytes(b"")
    with pytest.raises(ZooinferError, match="is a file, expected the folder"):
        variants.check_bins_folder(tmp_path / "file.bin")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("not a result")
    with pytest.raises(ZooinferError, match="holds no result files"):
        variants.check_bins_folder(tmp_path / "empty")
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "img0_0.bin").write_bytes(b"\0" * 4)
    assert variants.check_bins_folder(tmp_path / "ok") is None
    (tmp_path / "views" / "view0").mkdir(parents=True)
    (tmp_path / "views" / "view0" / "img0_0.bin").write_bytes(b"\0" * 4)
    assert variants.check_bins_folder(tmp_path / "views") is None


def test_a_malformed_bins_folder_is_a_skipped_variant(tiny_onnx, tiny_model, tmp_path, tiny_dataset):
    (tmp_path / "empty").mkdir()
    (tmp_path / "a-file").write_text("x")
    for folder, why in ((tmp_path / "empty", "holds no result files"), (tmp_path / "a-file", "is a file")):
        s = variants.open_variant(f"bins:{folder}", tiny_recipe(), onnx_path=tiny_onnx, model=tiny_model,
                                  dataset=tiny_dataset)
        assert isinstance(s, variants.Skipped) and why in s.reason and str(folder) in s.reason


def test_missing_runtimes_are_skipped_with_the_reason(tiny_onnx, tiny_model, tmp_path, tiny_dataset):
    import onnxruntime as ort

    r = tiny_recipe()
    providers = ort.get_available_providers()
    names = ["acl", "bins:" + str(tmp_path / "no-such-folder")]
    if "TensorrtExecutionProvider" not in providers:
        names += ["ort-tensorrt", "tensorrt-fp16"]
    if "CUDAExecutionProvider" not in providers:
        names += ["ort-cuda", "ort-cuda-fp16"]
    opened, skipped = variants.open_variants(["onnxruntime", *names], r, onnx_path=tiny_onnx, model=tiny_model,
                                             dataset=tiny_dataset)
    assert [v.name for v in opened] == ["onnxruntime"]
    reasons = {s.name: s.reason for s in skipped}
    assert set(reasons) == set(names)
    assert "om_path" in reasons["acl"]
    assert "result folder not found" in reasons[names[1]]
    for n in names[2:]:
        assert "ExecutionProvider" in reasons[n], reasons[n]
    # an OM file given but no aclruntime here: skipped with the install hint, not a crash
    try:
        import ais_bench  # noqa: F401
    except ImportError:
        om = tmp_path / "m.om"
        om.write_bytes(b"")
        s = variants.open_variant("acl", r, onnx_path=tiny_onnx, om_path=om)
        assert isinstance(s, variants.Skipped) and "aclruntime" in s.reason


def test_fp16_file_keeps_float32_io_and_is_cached(tiny_onnx):
    import onnx

    p = variants.fp16_onnx(tiny_onnx)
    assert p.parent == tiny_onnx.parent and p.is_file()
    m = onnx.load(str(p))
    assert {i.type.tensor_type.elem_type for i in m.graph.input} == {onnx.TensorProto.FLOAT}
    assert {o.type.tensor_type.elem_type for o in m.graph.output} == {onnx.TensorProto.FLOAT}
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in m.graph.initializer)
    mtime = p.stat().st_mtime_ns
    assert variants.fp16_onnx(tiny_onnx) == p and p.stat().st_mtime_ns == mtime  # cache hit, not rewritten
    assert json.loads(p.with_suffix(".json").read_text())["source_md5"] == variants.file_md5(tiny_onnx)


def test_fp16_simulation_stores_every_float16_tensor_rounded(tiny_onnx):
    """Every tensor that is float16 in the converted file holds float16-representable values in the simulation
    (ONNX Runtime could not merge the roundings away), and the outputs are close to, but not equal to, fp32."""
    import onnx

    from zooinfer.localise import run_all_tensors

    f16 = onnx.shape_inference.infer_shapes(onnx.load(str(variants.fp16_onnx(tiny_onnx))))
    half = {v.name for v in f16.graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16}
    sim = variants.fp16_simulation_onnx(tiny_onnx)
    x = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32) * 3
    outs = run_all_tensors(sim, x, engine="onnxruntime")
    checked = [t for t in half if t in outs and outs[t].dtype == np.float32]
    assert len(checked) >= 3
    for t in checked:
        a = outs[t]
        np.testing.assert_array_equal(a, a.astype(np.float16).astype(np.float32), err_msg=t)
    ref = run_all_tensors(tiny_onnx, x, engine="onnxruntime")["logits"]
    assert 0 < np.abs(outs["logits"] - ref).max() < 1e-2 * np.abs(ref).max()


def test_calibration_count_larger_than_the_dataset_is_clipped_and_said(tiny_dataset):
    with pytest.warns(UserWarning, match="clipped to 7"):
        chosen, cal = variants.calibration_samples(tiny_dataset, 50)
    assert len(chosen) == 7 and cal.requested == 50 and "larger than the dataset" in cal.note
    chosen, cal = variants.calibration_samples(tiny_dataset, 3)
    assert cal.keys == ("img0", "img3", "img6") and cal.note is None  # spread, first and last included
    chosen, cal = variants.calibration_samples(tiny_dataset, keys=["img5", "img1"])
    assert cal.keys == ("img5", "img1")
    with pytest.raises(ZooinferError, match="not in the dataset"):
        variants.calibration_samples(tiny_dataset, keys=["img9"])
    with pytest.raises(ZooinferError, match="at least 1"):
        variants.calibration_samples(tiny_dataset, 0)


def test_int8_variant_names_its_calibration_images_and_is_cached(tiny_onnx, tiny_model, tiny_dataset):
    r = tiny_recipe()
    with pytest.warns(UserWarning, match="clipped"):
        v = variants.open_variant("onnxruntime-int8", r, onnx_path=tiny_onnx, model=tiny_model, dataset=tiny_dataset,
                                  calibration=100)
    assert isinstance(v, variants.Variant) and v.precision == "int8"
    assert v.info["calibration_keys"] == [f"img{i}" for i in range(7)]
    assert "clipped to 7" in v.info["calibration_note"]
    assert v.onnx_path.parent == tiny_onnx.parent and ".int8-" in v.onnx_path.name
    import onnx

    ops = {n.op_type for n in onnx.load(str(v.onnx_path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    x = np.stack([r.preprocess(s.path)[0][0] for s in tiny_dataset])
    out = v.session.run(x)
    assert out[0].shape == (7, 4) and np.isfinite(out[0]).all()
    # same calibration set -> the cached file; another set -> another file
    again, info = variants.int8_onnx(r, tiny_onnx, tiny_dataset, calibration=7)
    assert again == v.onnx_path and info["cached"]
    other, _ = variants.int8_onnx(r, tiny_onnx, tiny_dataset, keys=["img0", "img1"])
    assert other != v.onnx_path
    assert json.loads(other.with_suffix(".json").read_text())["calibration_keys"] == ["img0", "img1"]
