"""The null backend (shapes without compute), the resource-aware default preprocessing workers, the opt-in
process-based preprocessing pool, and the ceiling benchmark's table/README plumbing. No timed assertions."""
from __future__ import annotations

import dataclasses
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from zooinfer import bench, pipeline, recipes
from zooinfer.backends import get, open_session, registry
from zooinfer.backends.null import NullSession
from zooinfer.datasets.base import Sample
from zooinfer.errors import BackendError

from conftest import ListAccumulator, make_recipe


class RowsPerSampleNet(torch.nn.Module):
    """Like M2Det's export: one output (N, 5, 4) with a batch axis, one (N * 6, 3) flattened over the batch, int64."""

    def forward(self, x):
        n = x.shape[0]
        return x.new_ones((n, 5, 4)), x.new_ones((n * 6, 3)), torch.ones((n, 2), dtype=torch.int64)


# ------------------------------------------------------------------------------------------------ null backend
def test_null_registered_as_cpu_backend_needing_the_torch_model():
    spec = get("null")
    assert spec.needs == ("model",) and spec.resource == "cpu" and not spec.reads_stored_results
    with pytest.raises(BackendError, match="backend 'null' needs the torch model"):
        open_session("null")


def test_null_outputs_have_the_real_forwards_shapes_and_dtypes_and_are_zero(tiny_model):
    sess = open_session("null", model=tiny_model)
    real = open_session("torch", model=tiny_model)
    x = np.random.default_rng(0).random((5, 3, 8, 8), dtype=np.float32)
    for n in (5, 1, 3):
        got, want = sess.run(x[:n]), real.run(x[:n])
        assert [(o.shape, o.dtype) for o in got] == [(o.shape, o.dtype) for o in want]
        assert all(not o.any() for o in got)
    assert sess.forwards == 1  # one real forward per view shape, then none
    sess.run(np.zeros((2, 3, 16, 16), np.float32))
    assert sess.forwards == 2 and sess.name == "null" and sess.input_shape == (None, None, None, None)


def test_null_keeps_rows_per_sample_layout_and_dtype():
    sess = NullSession(RowsPerSampleNet())
    outs = sess.run(np.zeros((4, 3, 2, 2), np.float32))
    assert [o.shape for o in outs] == [(4, 5, 4), (24, 3), (4, 2)]
    assert [o.dtype for o in outs] == [np.float32, np.float32, np.int64]
    from zooinfer.backends.base import sample_outputs

    assert [o.shape for o in sample_outputs(outs, 4, 3)] == [(5, 4), (6, 3), (2,)]


def test_null_replay_repeats_the_first_forward(tiny_model):
    x = np.random.default_rng(1).random((3, 3, 8, 8), dtype=np.float32)
    sess = NullSession(tiny_model, fill="replay")
    first = open_session("torch", model=tiny_model).run(x[:1])
    for got, want in zip(sess.run(x), first):
        np.testing.assert_array_equal(got, np.concatenate([want] * 3))
    with pytest.raises(BackendError, match="fill must be one of"):
        NullSession(tiny_model, fill="ones")


def test_null_learns_shapes_from_onnx(tmp_path, tiny_model):
    pytest.importorskip("onnxruntime")
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(tiny_model, torch.zeros(1, 3, 8, 8), str(path), input_names=["image"],
                      output_names=["logits", "maps"], dynamic_axes={"image": {0: "n"}}, dynamo=False)
    outs = NullSession(onnx_path=path).run(np.zeros((3, 3, 8, 8), np.float32))
    assert [o.shape for o in outs] == [(3, 4), (3, 2, 4)]


def test_pipeline_through_null_gives_zero_outputs_in_order(tiny_model, tiny_dataset):
    res = pipeline.run(make_recipe(), tiny_dataset, open_session("null", model=tiny_model), bs=3, progress=False)
    assert [k for k, _ in res.accumulator.items] == [s.key for s in tiny_dataset]
    for _, outs in res.accumulator.items:
        assert [o.shape for o in outs] == [(4,), (2, 4)] and not any(o.any() for o in outs)


@pytest.mark.parametrize("model", recipes.NAMES)
def test_every_models_postprocess_and_metric_survive_all_zero_outputs(model):
    from zooinfer.evaluation import Evaluation

    ev = Evaluation.for_model(model, progress=False)
    prepared = ev.prepare()
    sess = get("null").open(registry.Artefacts(model=prepared.model))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the metrics warn about empty or degenerate predictions; errors still raise
        # re-ID (PCB): the whole sample (its first images are all queries: the metric needs a gallery)
        limit = None if ev.recipe.task == "reid" else 2
        res = pipeline.run(ev.recipe, prepared.dataset, sess, bs=2, limit=limit, progress=False, prep_threads=1)
    assert res.n_done == len(prepared.dataset.subset(limit)) and not res.skipped and res.metrics
    assert sess.forwards == 1


# ------------------------------------------------------------------------------- default preprocessing workers
@pytest.mark.parametrize("resource, cpus, want", [
    ("cpu", 1, 1), ("cpu", 2, 1), ("cpu", 16, 4), ("cpu", 64, 8),
    ("gpu", 1, 1), ("gpu", 2, 1), ("gpu", 16, 15), ("npu", 64, 63)])
def test_default_prep_threads_by_resource(resource, cpus, want):
    assert pipeline.default_prep_threads(resource, cpus) == want


def test_backend_resource_comes_from_the_registry():
    class Named:
        def __init__(self, name):
            self.name = name

    assert [pipeline.backend_resource(Named(n)) for n in ("torch", "ort-cuda", "torch-cuda", "acl", "null")] == \
        ["cpu", "gpu", "gpu", "npu", "cpu"]
    assert pipeline.backend_resource(Named("some-wrapper")) == "cpu" and pipeline.backend_resource(object()) == "cpu"


@pytest.mark.parametrize("name, want", [("torch", 4), ("torch-cuda", 15), ("acl", 15), ("unregistered", 4)])
def test_run_picks_default_workers_from_the_sessions_resource(monkeypatch, tiny_model, tiny_dataset, name, want):
    seen = []
    real_pool = pipeline._prep_pool

    def spy(recipe, threads, processes):
        seen.append((threads, processes))
        return real_pool(recipe, threads, processes)

    class Renamed:  # a CPU torch session that calls itself ``name`` (a GPU/NPU backend's name, for the default)
        device, input_shape = "cpu", None
        inner = open_session("torch", model=tiny_model)

        def __init__(self):
            self.name = name

        def run(self, batch):
            return self.inner.run(batch)

    monkeypatch.setattr(pipeline, "available_cpus", lambda: 16)
    monkeypatch.setattr(pipeline, "_prep_pool", spy)
    pipeline.run(make_recipe(), tiny_dataset, Renamed(), bs=2, progress=False)
    pipeline.run(make_recipe(), tiny_dataset, Renamed(), bs=2, progress=False, prep_threads=3)
    assert seen == [(want, None), (3, None)]


# --------------------------------------------------------------------------------- process-based preprocessing
@pytest.mark.parametrize("multi_view", [False, True])
@pytest.mark.parametrize("bs", [1, 3])
def test_prep_processes_equal_the_thread_path(tiny_model, tiny_dataset, multi_view, bs):
    recipe = make_recipe(multi_view)
    sess = open_session("torch", model=tiny_model)
    threads = pipeline.run(recipe, tiny_dataset, sess, bs=bs, progress=False, prep_threads=2, keep=2)
    procs = pipeline.run(recipe, tiny_dataset, sess, bs=bs, progress=False, prep_processes=2, keep=2)
    assert [k for k, _ in procs.accumulator.items] == [s.key for s in tiny_dataset]
    assert [k for k, _ in procs.accumulator.items] == [k for k, _ in threads.accumulator.items]
    for (_, a), (_, b) in zip(threads.accumulator.items, procs.accumulator.items):
        for x, y in zip(np.asarray(a, dtype=object).ravel(), np.asarray(b, dtype=object).ravel()):
            np.testing.assert_array_equal(x, y)
    assert procs.n_done == 7 and [s.key for s, _ in procs.kept] == [s.key for s, _ in threads.kept]
    assert procs.timer.items["preprocess"] == 7


def test_prep_processes_skip_unreadable_images_like_threads(tiny_model, tiny_dataset, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    samples = list(tiny_dataset.samples)
    samples.insert(3, Sample("broken", str(bad), -1))
    samples.append(Sample("gone", str(tmp_path / "missing.jpg"), -1))
    ds = dataclasses.replace(tiny_dataset, samples=samples)
    sess = open_session("torch", model=tiny_model)
    threads = pipeline.run(make_recipe(), ds, sess, bs=2, progress=False, prep_threads=2)
    procs = pipeline.run(make_recipe(), ds, sess, bs=2, progress=False, prep_processes=2)
    assert [k for k, _, _ in procs.skipped] == ["broken", "gone"] == [k for k, _, _ in threads.skipped]
    assert [r for _, _, r in procs.skipped] == [r for _, _, r in threads.skipped]
    assert [k for k, _ in procs.accumulator.items] == [k for k, _ in threads.accumulator.items]


class ViewDigest:
    """Outputs derived from every input pixel (a sum and a strided sample per row): equal outputs mean equal views."""

    name, device, input_shape = "digest", "cpu", None

    def run(self, batch):
        flat = batch.reshape(batch.shape[0], -1).astype(np.float64)
        return [flat.sum(1), flat[:, ::101].copy()]


@pytest.mark.parametrize("model", ["dpn131", "ssd_resnet34", "pyramidbox"])  # Pillow, OpenCV, two views
def test_prep_processes_give_the_same_views_for_real_recipes(model):
    from zooinfer import recipes

    base = recipes.get(model)
    recipe = dataclasses.replace(base, postprocess=lambda outputs, meta: (outputs, meta),
                                 new_accumulator=lambda ds: ListAccumulator())
    ds = recipe.open_dataset(None)
    threads = pipeline.run(recipe, ds, ViewDigest(), bs=2, limit=4, progress=False, prep_threads=2)
    procs = pipeline.run(recipe, ds, ViewDigest(), bs=2, limit=4, progress=False, prep_processes=2)
    assert len(procs.accumulator.items) == 4
    for (ka, (oa, ma)), (kb, (ob, mb)) in zip(threads.accumulator.items, procs.accumulator.items):
        assert ka == kb and ma == mb
        flat_a = [o for view in oa for o in view] if isinstance(oa[0], list) else oa  # two views: a list each
        flat_b = [o for view in ob for o in view] if isinstance(ob[0], list) else ob
        for x, y in zip(flat_a, flat_b):
            np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------------------------------------ the benchmark
def _bench_module():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "pipeline_ceiling.py"
    spec = importlib.util.spec_from_file_location("pipeline_ceiling", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_section_is_replaced_not_duplicated(tmp_path):
    mod = _bench_module()
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nintro\n\n## Other\n\nkeep me\n")
    bench.replace_section(readme, mod.HEADING, f"{mod.HEADING}\n\nfirst\n")
    bench.replace_section(readme, mod.HEADING, f"{mod.HEADING}\n\nsecond\n")
    text = readme.read_text()
    assert text.count(mod.HEADING) == 1 and "second" in text and "first" not in text and "keep me" in text
    readme.write_text(f"# B\n\n{mod.HEADING}\n\nold\n\n## After\n\nstays\n")
    bench.replace_section(readme, mod.HEADING, f"{mod.HEADING}\n\nnew\n")
    assert readme.read_text() == f"# B\n\n{mod.HEADING}\n\nnew\n\n## After\n\nstays\n"


def test_long_stream_repeats_in_place(tiny_dataset):
    mod = _bench_module()
    s = mod.long_stream(tiny_dataset, 16)
    keys = [x.key for x in s]
    assert len(keys) == 16 and keys[:3] == ["img0", "img0~1", "img0~2"] and keys[-2:] == ["img6", "img6~1"]
    assert [x.path for x in s][:3] == [tiny_dataset[0].path] * 3


def test_prep_processes_preprocess_in_other_processes(tiny_dataset):
    import os

    base = make_recipe()

    def pre(path):
        views, meta = base.preprocess(path)
        return views, {**meta, "pid": os.getpid()}

    recipe = dataclasses.replace(base, preprocess=pre, postprocess=lambda outputs, meta: meta["pid"])
    sess = ViewDigest()
    procs = pipeline.run(recipe, tiny_dataset, sess, bs=2, progress=False, prep_processes=2)
    threads = pipeline.run(recipe, tiny_dataset, sess, bs=2, progress=False, prep_threads=2)
    assert os.getpid() not in {pid for _, pid in procs.accumulator.items}
    assert {pid for _, pid in threads.accumulator.items} == {os.getpid()}
