"""The streaming pipeline: order, batching, padding for static batches, multi-view samples, skips, bins results."""
from __future__ import annotations

import numpy as np
import pytest

from zooinfer import pipeline
from zooinfer.backends import open_session
from zooinfer.backends.bins import OutputReader
from zooinfer.datasets.base import ImageDataset, Sample
from zooinfer.errors import BackendError

from conftest import make_recipe, tiny_preprocess


class FixedBatchSession:
    """Wraps a session and pretends the model has a static batch of ``n`` (like an OM or static ONNX file)."""

    def __init__(self, inner, n):
        self.inner, self.name, self.device, self.input_shape = inner, "static", "cpu", (n, 3, 8, 8)
        self.seen = []

    def run(self, batch):
        assert batch.shape[0] == self.input_shape[0]
        self.seen.append(batch.shape[0])
        return self.inner.run(batch)


def _expected(model, dataset):
    sess = open_session("torch", model=model)
    return {s.key: sess.run(tiny_preprocess(s.path)[0][None]) for s in dataset}


@pytest.mark.parametrize("bs", [1, 3, 8])
def test_results_equal_one_at_a_time_in_dataset_order(tiny_model, tiny_dataset, bs):
    recipe = make_recipe()
    res = pipeline.run(recipe, tiny_dataset, open_session("torch", model=tiny_model), bs=bs, progress=False, keep=3)
    expected = _expected(tiny_model, tiny_dataset)
    keys = [k for k, _ in res.accumulator.items]
    assert keys == [s.key for s in tiny_dataset]
    for key, outs in res.accumulator.items:
        for got, want in zip(outs, expected[key]):
            np.testing.assert_allclose(got, want[0], atol=1e-5)
    assert res.metrics == {"n": 7} and res.n_done == 7 and not res.skipped
    assert [s.key for s, _ in res.kept] == keys[:3]
    stages = {row["stage"]: row for row in res.stage_table()}
    assert stages["infer"]["items"] == 7 and stages["end-to-end"]["items"] == 7


def test_inference_share_is_the_part_of_wall_time_spent_inferring(tiny_model, tiny_dataset):
    import time

    class Sleepy:  # inference that takes 50 ms per batch: with 7 tiny images nearly all wall time is inference
        name, device, input_shape = "sleepy", "cpu", (None, 3, 8, 8)
        inner = open_session("torch", model=tiny_model)

        def run(self, batch):
            time.sleep(0.05)
            return self.inner.run(batch)

    res = pipeline.run(make_recipe(), tiny_dataset, Sleepy(), bs=1, progress=False)
    assert res.timer.seconds["infer"] >= 7 * 0.05
    assert 0.0 < res.inference_share <= 1.0
    assert res.inference_share == pytest.approx(res.timer.seconds["infer"] / res.wall_s)


def test_static_batch_pads_last_batch_and_drops_padding(tiny_model, tiny_dataset):
    sess = FixedBatchSession(open_session("torch", model=tiny_model), 4)
    res = pipeline.run(make_recipe(), tiny_dataset, sess, bs=4, progress=False)
    assert sess.seen == [4, 4] and len(res.accumulator.items) == 7
    expected = _expected(tiny_model, tiny_dataset)
    key, outs = res.accumulator.items[-1]
    np.testing.assert_allclose(outs[0], expected[key][0][0], atol=1e-5)


def test_static_batch_wrong_bs_is_a_clear_error(tiny_model, tiny_dataset):
    sess = FixedBatchSession(open_session("torch", model=tiny_model), 4)
    with pytest.raises(BackendError, match="static batch size of 4; run with bs=4"):
        pipeline.run(make_recipe(), tiny_dataset, sess, bs=8, progress=False)


def test_multi_view_samples_get_one_output_list_per_view(tiny_model, tiny_dataset):
    res = pipeline.run(make_recipe(multi_view=True), tiny_dataset, open_session("torch", model=tiny_model), bs=3,
                       progress=False)
    sess = open_session("torch", model=tiny_model)
    for (key, per_view), sample in zip(res.accumulator.items, tiny_dataset):
        assert key == sample.key and len(per_view) == 2
        x = tiny_preprocess(sample.path)[0]
        np.testing.assert_allclose(per_view[1][0], sess.run(x[:, :, ::-1].copy()[None])[0][0], atol=1e-5)
        np.testing.assert_allclose(per_view[0][0], sess.run(x[None])[0][0], atol=1e-5)


def test_unreadable_and_missing_images_are_skipped_and_counted(tiny_model, tiny_dataset, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    samples = list(tiny_dataset) + [Sample("broken", str(broken)), Sample("gone", str(tmp_path / "gone.jpg"))]
    ds = ImageDataset("tiny", tmp_path, samples[:3] + samples[7:] + samples[3:7])
    res = pipeline.run(make_recipe(), ds, open_session("torch", model=tiny_model), bs=2, progress=False)
    assert res.n_done == 7 and res.metrics == {"n": 7}
    assert [k for k, _, _ in res.skipped] == ["broken", "gone"]
    assert "UnidentifiedImageError" in res.skipped[0][2] and "FileNotFoundError" in res.skipped[1][2]


def test_limit(tiny_model, tiny_dataset):
    res = pipeline.run(make_recipe(), tiny_dataset, open_session("torch", model=tiny_model), bs=2, limit=3,
                       progress=False)
    assert res.n_samples == 3 and [k for k, _ in res.accumulator.items] == ["img0", "img1", "img2"]


def test_results_from_an_external_tool(tiny_model, tiny_dataset, tmp_path):
    """ais_bench writes <key>_0.bin, <key>_1.bin ...: the reader feeds them to postprocessing."""
    expected = _expected(tiny_model, tiny_dataset)
    out = tmp_path / "result"
    out.mkdir()
    for key, outs in expected.items():
        for k, o in enumerate(outs):
            o[0].astype(np.float32).tofile(out / f"{key}_{k}.bin")
    reader = OutputReader(out, [(4,), (2, 4)])
    res = pipeline.run(make_recipe(), tiny_dataset, reader, progress=False)
    assert res.n_done == 7
    for key, outs in res.accumulator.items:
        np.testing.assert_array_equal(outs[1], expected[key][1][0])


def test_multi_view_results_from_an_external_tool(tiny_model, tiny_dataset, tmp_path):
    """Two-view models (PyramidBox: image + flipped) read <folder>/view0 and <folder>/view1."""
    sess = open_session("torch", model=tiny_model)
    out = tmp_path / "result"
    recipe = make_recipe(multi_view=True)
    for s in tiny_dataset:
        views, _ = recipe.preprocess(s.path)
        for v, x in enumerate(views):
            (out / f"view{v}").mkdir(parents=True, exist_ok=True)
            for k, o in enumerate(sess.run(x[None])):
                o[0].tofile(out / f"view{v}" / f"{s.key}_{k}.bin")
    with pytest.raises(BackendError, match="expected result folders .*view2"):
        OutputReader(out, [(4,), (2, 4)], views=3)
    res = pipeline.run(recipe, tiny_dataset, OutputReader(out, [(4,), (2, 4)], views=2), progress=False)
    direct = pipeline.run(recipe, tiny_dataset, sess, bs=4, progress=False)
    for (k1, a), (k2, b) in zip(res.accumulator.items, direct.accumulator.items):
        assert k1 == k2 and len(a) == 2
        for va, vb in zip(a, b):
            np.testing.assert_allclose(va[0], vb[0], atol=1e-6)


class _StoredOutputs:
    """Outputs computed elsewhere, handed out by key (what bins.OutputReader does with files); ``missing`` keys
    raise FileNotFoundError as a missing result file does."""

    name, device = "stored", "memory"

    def __init__(self, outputs, missing=()):
        self.outputs, self.missing, self.reads = outputs, set(missing), []

    def read(self, key):
        self.reads.append(key)
        if key in self.missing:
            raise FileNotFoundError(f"no result file {key}_0.bin")
        return self.outputs[key]


def test_stored_results_are_scored_without_inference(tiny_model, tiny_dataset):
    expected = {k: [o[0] for o in outs] for k, outs in _expected(tiny_model, tiny_dataset).items()}
    stored = _StoredOutputs(expected, missing={"img3"})
    res = pipeline.score_stored(make_recipe(), tiny_dataset, stored, progress=False, keep=2)
    assert stored.reads == [s.key for s in tiny_dataset]
    assert res.n_done == 6 and [k for k, _, _ in res.skipped] == ["img3"] and "FileNotFoundError" in res.skipped[0][2]
    assert res.timer.items["infer"] == 0 and res.timer.items["preprocess"] == 0 and res.timer.items["read"] == 6
    assert [k for k, _ in res.accumulator.items] == [s.key for s in tiny_dataset if s.key != "img3"]
    assert [s.key for s, _ in res.kept] == ["img0", "img1"] and res.backend == "stored"
    # run() takes the same path for a reader, and the inference path for a session
    again = pipeline.run(make_recipe(), tiny_dataset, _StoredOutputs(expected), bs=4, prep_threads=2, progress=False)
    assert again.n_done == 7 and again.timer.items["infer"] == 0
    direct = pipeline.run(make_recipe(), tiny_dataset, open_session("torch", model=tiny_model), bs=4, progress=False)
    assert direct.timer.items["infer"] == 7
    for (k1, a), (k2, b) in zip(again.accumulator.items, direct.accumulator.items):
        assert k1 == k2
        np.testing.assert_allclose(a[0], b[0], atol=1e-6)


def test_the_inference_path_refuses_a_bad_static_batch_before_reading(tiny_model, tiny_dataset):
    sess = FixedBatchSession(open_session("torch", model=tiny_model), 4)
    with pytest.raises(BackendError, match="static batch size of 4"):
        pipeline.run_inference(make_recipe(), tiny_dataset, sess, bs=2, progress=False)
    assert sess.seen == []


def test_progress_bar_is_a_widget_only_where_ipywidgets_is_installed(monkeypatch):
    import importlib.util
    import sys
    import types

    import tqdm

    class WidgetBar(tqdm.tqdm):
        pass

    monkeypatch.setitem(sys.modules, "tqdm.auto", types.SimpleNamespace(tqdm=WidgetBar))
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "ipywidgets" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    bar = pipeline.progress_bar(3, "x", True)
    assert type(bar) is tqdm.std.tqdm  # plain bar: tqdm.auto would warn "IProgress not found" into the report
    bar.close()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: object())
    bar = pipeline.progress_bar(3, "x", True)
    assert type(bar) is WidgetBar
    bar.close()
    assert pipeline.progress_bar(3, "x", False) is None


# ---------------------------------------------------------------------------------------------------- issue 18
@pytest.mark.parametrize("bs", [0, -1])
def test_3_a_non_positive_bs_is_refused_before_any_image_is_read(tiny_model, tiny_dataset, bs):
    from zooinfer.errors import ZooinferError

    with pytest.raises(ZooinferError, match=f"bs must be an integer >= 1, got {bs}"):
        pipeline.run(make_recipe(), tiny_dataset, open_session("torch", model=tiny_model), bs=bs, progress=False)


def test_9_a_sample_missing_on_disk_is_skipped_counted_and_named(tiny_model, tiny_dataset, tmp_path):
    from dataclasses import replace

    gone = Sample("gone", str(tmp_path / "gone.jpg"), 0, {"missing": "not found: named in labels.txt"})
    ds = replace(tiny_dataset, samples=[gone, *tiny_dataset.samples])
    res = pipeline.run(make_recipe(), ds, open_session("torch", model=tiny_model), bs=2, progress=False)
    assert res.n_samples == 8 and res.n_done == 7
    assert res.skipped == [("gone", str(tmp_path / "gone.jpg"), "not found: named in labels.txt")]
