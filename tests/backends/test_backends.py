"""Backends: selection errors, static-batch checks, ONNX Runtime vs torch, result-file reading."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zooinfer.backends import open_session
from zooinfer.backends.bins import OutputReader, write_info, write_input
from zooinfer.errors import BackendError


def _onnx(tmp_path, model, batch=None):
    path = tmp_path / "tiny.onnx"
    axes = None if batch else {"image": {0: "-1"}, "logits": {0: "-1"}, "maps": {0: "-1"}}
    torch.onnx.export(model, (torch.zeros(batch or 1, 3, 8, 8),), str(path), input_names=["image"],
                      output_names=["logits", "maps"], opset_version=13, dynamic_axes=axes, dynamo=False)
    return path


def test_unknown_backend_lists_choices():
    with pytest.raises(BackendError, match="choose one of onnxruntime, ort-cuda, ort-tensorrt, torch"):
        open_session("tensorflow")


def test_missing_execution_provider_lists_available(tmp_path, tiny_model):
    import onnxruntime as ort

    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("TensorRT is available here")
    with pytest.raises(BackendError, match=r"needs TensorrtExecutionProvider, but this onnxruntime build offers only \[.*'CPUExecutionProvider'"):
        open_session("ort-tensorrt", onnx_path=_onnx(tmp_path, tiny_model))


def test_acl_without_ascend_says_how_to_install():
    with pytest.raises(BackendError, match="ais_bench"):
        open_session("acl", om_path="model.om")


def test_onnxruntime_matches_torch_and_reports_dynamic_batch(tmp_path, tiny_model):
    sess = open_session("onnxruntime", onnx_path=_onnx(tmp_path, tiny_model), threads=1)
    assert sess.input_shape[0] is None and sess.input_shape[1:] == (3, 8, 8)
    x = np.random.default_rng(0).standard_normal((5, 3, 8, 8), dtype=np.float32)
    ref = open_session("torch", model=tiny_model).run(x)
    for a, b in zip(sess.run(x), ref):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_io_binding_path_gives_the_same_outputs(tmp_path, tiny_model):
    """The GPU providers run through IO binding; the same code path is exercised here on the CPU device."""
    from zooinfer.backends.onnxruntime import OrtSession

    path = _onnx(tmp_path, tiny_model)
    plain, bound = OrtSession(path, threads=1), OrtSession(path, threads=1, io_binding=True)
    assert not plain.io_binding and bound.io_binding
    x = np.random.default_rng(1).standard_normal((3, 3, 8, 8), dtype=np.float32)
    got, want = bound.run(x), plain.run(x)
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want):
        assert np.array_equal(g, w)


def test_static_onnx_batch_mismatch_is_a_clear_error(tmp_path, tiny_model):
    sess = open_session("onnxruntime", onnx_path=_onnx(tmp_path, tiny_model, batch=4), threads=1)
    assert sess.input_shape[0] == 4
    with pytest.raises(BackendError, match="static batch size of 4 but was given a batch of 2"):
        sess.run(np.zeros((2, 3, 8, 8), np.float32))


def test_bins_round_trip_and_benchmark_txt_outputs(tmp_path):
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    write_input(a, tmp_path / "x.bin")
    np.testing.assert_array_equal(np.fromfile(tmp_path / "x.bin", np.float32).reshape(2, 3, 4), a)
    write_info([(str(tmp_path / "x.bin"), 4, 3)], tmp_path / "x.info")
    assert (tmp_path / "x.info").read_text() == f"0 {tmp_path / 'x.bin'} 4 3\n"
    res = tmp_path / "dumpOutput_device0"
    res.mkdir()
    (res / "img_1.txt").write_text("1 2 3 4\n")  # old benchmark tool: outputs counted from 1, text
    (res / "img_2.txt").write_text("5 6\n")
    np.float16([7, 8]).tofile(res / "other_0.bin")  # an fp16 output
    np.float16([9, 10]).tofile(res / "other_1.bin")
    got = OutputReader(res, [(2, 2), (2,)]).read("img")
    np.testing.assert_array_equal(got[0], [[1, 2], [3, 4]])
    got = OutputReader(res, [(2,), (2,)]).read("other")
    assert got[0].dtype == np.float32 and got[1].tolist() == [9, 10]
    with pytest.raises(BackendError, match="expected 16 \\(float32\\) or 8 \\(float16\\)"):
        OutputReader(res, [(4,), (2,)]).read("other")
    with pytest.raises(FileNotFoundError, match="no result file missing_0"):
        OutputReader(res, [(2,)]).read("missing")
    with pytest.raises(BackendError, match="result folder not found"):
        OutputReader(tmp_path / "nope", [(2,)])


def test_outputs_written_in_another_order_are_matched_by_size(tmp_path):
    """ATC's --out_nodes can reorder the outputs (M2Det's guide puts the probabilities first)."""
    np.arange(6, dtype=np.float32).tofile(tmp_path / "img_0.bin")  # the (3, 2) output, written first
    np.arange(4, dtype=np.float32).tofile(tmp_path / "img_1.bin")  # the (4,) output
    got = OutputReader(tmp_path, [(4,), (3, 2)]).read("img")
    assert got[0].tolist() == [0, 1, 2, 3] and got[1].shape == (3, 2)
    np.arange(4, dtype=np.float32).tofile(tmp_path / "same_0.bin")  # equal sizes: positional, then checked
    np.arange(4, dtype=np.float32).tofile(tmp_path / "same_1.bin")
    assert [a.shape for a in OutputReader(tmp_path, [(4,), (2, 2)]).read("same")] == [(4,), (2, 2)]


def test_replay_and_per_sample_slicing_of_row_blocked_outputs():
    """Outputs like M2Det's (N * 32760, 81) hold k rows per sample: slice blocks, not rows."""
    from zooinfer.backends.base import sample_outputs
    from zooinfer.bench import ReplaySession

    class Blocky:
        name, device, input_shape = "blocky", "cpu", (None, 1, 2, 2)

        def run(self, batch):
            n = batch.shape[0]
            return [batch.reshape(n, 4), np.repeat(batch.reshape(n, 4), 3, axis=0)]  # (n, 4) and (3n, 4)

    x = np.arange(12, dtype=np.float32).reshape(3, 1, 2, 2)
    outs = Blocky().run(x)
    one = sample_outputs(outs, 3, 1)
    assert one[0].tolist() == [4, 5, 6, 7] and one[1].shape == (3, 4) and (one[1] == one[0]).all()
    replay = ReplaySession(Blocky(), x)
    got = replay.run(np.zeros((5, 1, 2, 2), np.float32))
    assert got[0].shape == (5, 4) and got[1].shape == (15, 4)
    np.testing.assert_array_equal(got[1][12:15], outs[1][3:6])  # row 4 replays sample 1


def test_every_backend_declares_what_it_needs_and_where_it_runs():
    from zooinfer.backends import BACKENDS, registry

    assert BACKENDS == ("onnxruntime", "ort-cuda", "ort-tensorrt", "torch", "torch-cuda", "openvino", "acl", "bins",
                        "null")
    declared = {name: (registry.get(name).needs, registry.get(name).resource) for name in BACKENDS}
    assert declared == {
        "onnxruntime": (("onnx_path",), "cpu"), "ort-cuda": (("onnx_path",), "gpu"),
        "ort-tensorrt": (("onnx_path",), "gpu"), "torch": (("model",), "cpu"), "torch-cuda": (("model",), "gpu"),
        "openvino": (("onnx_path",), "cpu"), "acl": (("om_path",), "npu"), "bins": (("results_dir", "output_layout"), "cpu"),
        "null": (("model",), "cpu")}
    assert [n for n in BACKENDS if registry.get(n).reads_stored_results] == ["bins"]


def test_a_missing_artefact_is_named_with_the_parameter_that_gives_it():
    from zooinfer.backends import Artefacts, get

    with pytest.raises(BackendError, match=r"backend 'onnxruntime' needs an ONNX file .*onnx_path="):
        open_session("onnxruntime")
    with pytest.raises(BackendError, match="backend 'torch' needs the torch model"):
        open_session("torch")
    with pytest.raises(BackendError, match=r"backend 'acl' needs om_path= \(the .om file atc produced\)"):
        open_session("acl")
    with pytest.raises(BackendError, match=r"backend 'bins' needs results_dir="):
        open_session("bins")
    with pytest.raises(BackendError, match="backend 'bins' needs the per-sample output shapes"):
        get("bins").open(Artefacts(results_dir="."))


def test_bins_opens_a_reader_of_result_files(tmp_path):
    from zooinfer.backends import Artefacts, OutputLayout, get

    np.arange(4, dtype=np.float32).tofile(tmp_path / "img_0.bin")
    reader = get("bins").open(Artefacts(results_dir=tmp_path, output_layout=OutputLayout(((2, 2),))))
    assert isinstance(reader, OutputReader) and reader.read("img")[0].tolist() == [[0, 1], [2, 3]]


def test_session_options_follow_the_run_config():
    from zooinfer.backends import SessionOptions
    from zooinfer.config import RunConfig

    cfg = RunConfig(model="dpn131", threads=3, precision="fp16", device_id=1)
    assert SessionOptions.from_config(cfg) == SessionOptions(threads=3, fp16=True, device_id=1)
    assert SessionOptions.from_config(cfg, device_id=0, optimized_cache="read").device_id == 0
    with pytest.raises(BackendError, match="optimized_cache must be one of write, read, off"):
        SessionOptions(optimized_cache="sometimes")


def test_the_optimised_graph_cache_is_written_read_or_left_alone(tmp_path, tiny_model):
    from zooinfer.backends.onnxruntime import OrtSession

    path = _onnx(tmp_path, tiny_model)
    OrtSession(path, threads=1, cache_optimized="read")
    assert not list(tmp_path.glob("*.ort-opt-*"))  # read-only: nothing written
    OrtSession(path, threads=1)
    assert len(list(tmp_path.glob("*.ort-opt-*"))) == 1
    x = np.zeros((1, 3, 8, 8), np.float32)
    np.testing.assert_allclose(OrtSession(path, threads=1, cache_optimized="read").run(x)[0],
                               OrtSession(path, threads=1, cache_optimized=False).run(x)[0], atol=1e-6)
