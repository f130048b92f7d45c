"""Scale-out with Ray: 2 local workers give the single-process figures exactly; injected faults are retried without
losing or duplicating a shard; a shard that always fails is a clear error; no Ray -> how to install it."""
from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from zooinfer import export, pipeline
from zooinfer.backends import open_session, registry
from zooinfer.config import RunConfig
from zooinfer.distributed import (Ledger, ShardSpec, _local_onnx, _task_resources, cpus_per_task,
                                  evaluate_distributed, ship_file)
from zooinfer.datasets.base import ImageDataset, Sample
from zooinfer.errors import ZooinferError
from zooinfer.evaluation import Evaluation
from zooinfer.metrics.classification import MAX_K, TopKAccumulator, compact_logits

from conftest import TinyNet, make_recipe

TESTS = str(Path(__file__).resolve().parent)


@pytest.fixture(scope="module")
def ray():
    """One local Ray instance (2 CPUs) shared by the tests of this module (start-up takes seconds)."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    # the workers unpickle this module's recipe functions: let them import it (and conftest)
    path = os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", path)
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False)
    yield ray
    ray.shutdown()


# ------------------------------------------------------------------------------------------------ a tiny classifier
def tiny_recipe(faults: Path | None = None, dataset: ImageDataset | None = None, model=None):
    """4-class logits, top-k metric, compact top-5; opens ``dataset`` and builds ``model``. A file ``raise-<key>`` /
    ``die-<key>`` in ``faults`` makes that sample raise / kill its worker process (``once-`` prefix: the file is
    removed first, so only one attempt fails). The closure travels to the workers by value with the recipe."""

    def post(outputs, meta):
        key = meta["key"]
        for once in ("once-", "") if faults is not None else ():
            if (faults / f"{once}die-{key}").exists():
                if once:
                    (faults / f"{once}die-{key}").unlink()
                os._exit(3)
            if (faults / f"{once}raise-{key}").exists():
                if once:
                    (faults / f"{once}raise-{key}").unlink()
                raise RuntimeError(f"injected failure on {key}")
        return outputs[0]

    return replace(make_recipe(), postprocess=post, new_accumulator=lambda ds: TopKAccumulator(),
                   compact=compact_logits, open_dataset=lambda root: dataset, build=lambda weights: model)


@pytest.fixture(scope="module")
def tiny_ev_parts(tmp_path_factory):
    """Nine images labelled i % 4, the tiny network and its ONNX file."""
    from PIL import Image

    d = tmp_path_factory.mktemp("dist")
    rng = np.random.default_rng(7)
    samples = []
    for i in range(9):
        p = d / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (9 + i, 11, 3), dtype=np.uint8)).save(p)
        samples.append(Sample(f"img{i}", str(p), i % 4))
    model = TinyNet().eval()
    onnx_path = export.export_onnx(tiny_recipe(), model, out_path=d / "tiny.onnx")
    return ImageDataset("tiny", d, samples), model, str(onnx_path)


def tiny_config(parts, processes, **kw) -> RunConfig:
    return RunConfig(model="tiny", bs=2, progress=False, processes=processes, onnx_path=parts[2], **kw)


def tiny_evaluation(parts, processes, faults=None, **kw):
    """A prepared evaluation of the tiny recipe over ``parts`` (its ONNX file given as ``onnx_path``)."""
    ds, model, onnx_path = parts
    ev = Evaluation(tiny_config(parts, processes, **kw), recipe=tiny_recipe(faults, ds, model))
    ev.prepare()
    return ev


@pytest.fixture(scope="module")
def single(tiny_ev_parts):
    return tiny_evaluation(tiny_ev_parts, 1).evaluate()


@pytest.fixture
def faults(tmp_path):
    d = tmp_path / "faults"
    d.mkdir()
    return d


# ------------------------------------------------------------------------------------------------ tests
def test_compact_top5_gives_the_ranks_of_the_logits():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((50, 12)).astype(np.float32)
    logits[:10, 3] = logits[:10, 7] = logits[:10].max(axis=1)  # exact ties at the top
    samples = [Sample(str(i), "", int(i * 7 % 12)) for i in range(50)]
    full, small = TopKAccumulator(), TopKAccumulator()
    for s, z in zip(samples, logits):
        full.update(s, z)
        c = compact_logits(z)
        assert c.classes.shape == (MAX_K,) and c.n_classes == 12
        small.update(s, c)
    assert small._ranks == full._ranks and small.compute() == full.compute()
    assert 0 < full.compute()["top5"] < 1
    with pytest.raises(ZooinferError, match="below 12"):
        small.update(Sample("x", "", 12), compact_logits(logits[0]))


def test_without_ray_says_how_to_install(monkeypatch, tiny_ev_parts):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ZooinferError, match=r'pip install "zooinfer\[ray\]"'):
        tiny_evaluation(tiny_ev_parts, 2).evaluate()


def test_bins_backend_is_not_spread():
    with pytest.raises(ZooinferError, match="nothing to spread over processes; run it with processes=1"):
        RunConfig(model="dpn131", backend="bins", processes=2)
    with pytest.raises(ZooinferError, match="processes=1"), pytest.warns(FutureWarning):
        Evaluation.from_parameters({"model": "dpn131", "backend": "bins", "workers": 2})


def test_tasks_ask_ray_for_the_resource_their_backend_declares():
    one = _task_resources(registry.get("onnxruntime"), {"CPU": 4}, [4], 2)
    assert one == {"num_cpus": 2}
    assert _task_resources(registry.get("ort-cuda"), {"CPU": 4, "GPU": 1}, [4], 2) == {"num_cpus": 2,
                                                                                       "num_gpus": 0.5}
    assert _task_resources(registry.get("acl"), {"CPU": 4, "NPU": 2}, [4], 2) == {"num_cpus": 2,
                                                                                  "resources": {"NPU": 1.0}}
    with pytest.raises(ZooinferError, match="backend 'torch-cuda' needs a GPU per process, but the Ray cluster has"):
        _task_resources(registry.get("torch-cuda"), {"CPU": 4}, [4], 2)


def test_an_onnx_backend_needs_the_drivers_onnx_file(tiny_ev_parts):
    with pytest.raises(ZooinferError, match="needs an ONNX file on the driver: export it first"):
        evaluate_distributed(RunConfig(model="tiny", processes=2), tiny_recipe(), tiny_ev_parts[0])


def test_two_workers_equal_one_process(ray, tiny_ev_parts, single):
    res = tiny_evaluation(tiny_ev_parts, 2).evaluate()
    ds = tiny_ev_parts[0]
    assert res.shards is res.workers  # the old name still reads
    assert res.metrics == single.metrics and 0 < res.metrics["top1"] < 1 and res.metrics["n_images"] == 9
    assert res.accumulator.keys == [s.key for s in ds] == single.accumulator.keys
    assert res.n_done == res.n_samples == 9 and not res.skipped
    assert [(r["shard"], r["samples"], r["first"], r["attempts"]) for r in res.shards] == \
           [(0, 4, "img0", 1), (1, 5, "img4", 1)]
    assert {r["cpus"] for r in res.shards} == {1} and {r["threads"] for r in res.shards} == {1}
    assert {r["cores"] for r in res.shards} == {None}  # not pinned unless asked
    assert sum(r["n_done"] for r in res.shards) == 9
    # full predictions are kept for plots, in dataset order, and equal to the single-process ones
    assert [s.key for s, _ in res.kept] == [s.key for s, _ in single.kept] == ["img0", "img1", "img2", "img3"]
    for (_, a), (_, b) in zip(res.kept, single.kept):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert res.timer.items["infer"] == 9


def test_limit_more_workers_than_samples_and_pinning(ray, tiny_ev_parts, monkeypatch):
    monkeypatch.setenv("ZOOINFER_PIN_CORES", "1")
    res = tiny_evaluation(tiny_ev_parts, 4, limit=3).evaluate()
    assert res.n_samples == 3 and res.accumulator.keys == ["img0", "img1", "img2"]
    assert [r["samples"] for r in res.shards] == [1, 1, 1]  # shard 0 of 4 is empty: no task for it
    allowed = os.sched_getaffinity(0)
    for r in res.shards:  # 1 CPU per task: each ran on one core of its own
        assert r["cpus"] == 1 and r["cores"] is not None and int(r["cores"]) in allowed
    assert os.sched_getaffinity(0) == allowed


def test_cpus_per_task_fit_the_nodes():
    assert cpus_per_task([2], 2) == 1 and cpus_per_task([2], 1) == 2 and cpus_per_task([2], 5) == 1
    assert cpus_per_task([16, 16], 3) == 8  # 32 // 3 = 10 would fit one task per node only
    assert cpus_per_task([16, 16], 2) == 16 and cpus_per_task([4, 2], 3) == 2


def test_ledger_hands_out_disjoint_core_blocks():
    led = Ledger()
    assert [led.claim("n1", 2), led.claim("n1", 2), led.claim("n1", 2), led.claim("n2", 2)] == [0, 1, None, 0]
    led.release("n1", 0)
    assert led.claim("n1", 2) == 0
    assert [led.started(3, "a"), led.started(3, "b")] == [1, 2]
    led.failed(3, 1, "boom")
    assert led.summary() == ({3: ["a", "b"]}, {3: {1: "boom"}})


def test_a_dying_and_a_raising_worker_are_retried_once(ray, tiny_ev_parts, single, faults):
    (faults / "once-die-img1").touch()  # shard 0 (img0-3): its process is killed mid-shard
    (faults / "once-raise-img6").touch()  # shard 1 (img4-8): raises mid-shard
    res = tiny_evaluation(tiny_ev_parts, 2, faults).evaluate()
    assert not list(faults.iterdir())  # both faults fired
    assert res.metrics == single.metrics and res.accumulator.keys == single.accumulator.keys  # none lost or twice
    assert res.n_done == 9 and len(res.accumulator.keys) == 9
    assert [(r["attempts"], r["retries"]) for r in res.shards] == [(2, 1), (2, 1)]
    assert "worker process died" in res.shards[0]["retry_reasons"]
    assert "RuntimeError: injected failure on img6" in res.shards[1]["retry_reasons"]


def test_a_shard_that_always_fails_names_its_samples(ray, tiny_ev_parts, faults, tmp_path):
    (faults / "raise-img5").touch()
    ev = tiny_evaluation(tiny_ev_parts, 2, faults, output_root=str(tmp_path / "out"))
    with pytest.raises(ZooinferError) as err:
        ev.evaluate()
    msg = str(err.value)
    assert "shard 2 of 2 (5 samples: img4, img5, img6, ... (+2 more)) failed 3 time(s)" in msg
    assert msg.count("RuntimeError: injected failure on img5") == 3 and "No report was written" in msg
    assert ev.result is None and not (tmp_path / "out").exists()


def test_a_data_root_the_workers_cannot_see_is_named(ray, tiny_ev_parts, tmp_path):
    ds = tiny_ev_parts[0]
    gone = tmp_path / "not-mounted"
    moved = replace(ds, root=gone, samples=[replace(s, path=str(gone / Path(s.path).name)) for s in ds])
    with pytest.raises(ZooinferError, match=f"data root {gone} is not visible on node .*same path"):
        evaluate_distributed(tiny_config(tiny_ev_parts, 2), tiny_recipe(), moved)


def test_a_node_without_the_onnx_file_gets_it_from_the_object_store(ray, tiny_ev_parts, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOOINFER_CACHE", str(tmp_path / "cache"))
    ds, _, onnx_path = tiny_ev_parts
    blob = ship_file(ray, onnx_path)
    cfg = RunConfig(model="tiny", bs=2, threads=1, prep_threads=1, keep=0)
    spec = ShardSpec(config=cfg, recipe=tiny_recipe(), index=0, count=1, first=0, shard=ds, cpus=1,
                     onnx_path=str(tmp_path / "elsewhere" / "tiny.onnx"), onnx_blob=blob)
    local = Path(_local_onnx(spec, ray))
    assert local.parent == tmp_path / "cache" / "onnx" / "shipped" and local.name.startswith("tiny-")
    assert local.read_bytes() == Path(onnx_path).read_bytes()
    assert _local_onnx(replace(spec, onnx_path=onnx_path), ray) == onnx_path  # visible: used as is


def test_dpn131_two_workers_equal_one_process(ray):
    """The embedded ImageNet sample: labels re-chosen from the single-process logits so that the ranks are
    0,1,2,3,4,miss,0,1,2,miss (synthetic weights otherwise miss everything): top-k = 2,4,6,7,8 of 10."""
    ev1 = Evaluation.for_model("dpn131", bs=4, progress=False)
    ev1.prepare()
    onnx_path = str(export.export_onnx(ev1.recipe, ev1.model))  # cached; checked in test_evaluation
    got = pipeline.run(ev1.recipe, ev1.dataset, open_session("onnxruntime", onnx_path=onnx_path), bs=4,
                       accumulator=_Logits(), progress=False)
    logits = np.stack([z for _, z in got.accumulator.items])
    assert logits.shape == (10, 1000)
    top = np.sort(logits, axis=1)[:, ::-1][:, :MAX_K + 1]
    assert np.diff(top, axis=1).max() < -1e-4  # no near-ties among the top 6: ranks do not hinge on rounding
    order = np.argsort(-logits, axis=1)
    ranks = [0, 1, 2, 3, 4, 5, 0, 1, 2, 5]
    labels = [int(order[i, r]) if r < MAX_K else int(order[i, -1]) for i, r in enumerate(ranks)]
    ds = replace(ev1.dataset, samples=[replace(s, target=t) for s, t in zip(ev1.dataset, labels)])
    single = TopKAccumulator()
    for s, z in zip(ds, logits):
        single.update(s, z)
    expected = {"top1": 0.2, "top2": 0.4, "top3": 0.6, "top4": 0.7, "top5": 0.8, "n_images": 10}
    assert single.compute() == expected

    # the Ray path needs no Evaluation: the configuration, the recipe, the dataset and the driver's ONNX file
    res = evaluate_distributed(replace(ev1.config, processes=2), ev1.recipe, ds, onnx_path=onnx_path)
    assert res.metrics == expected and res.accumulator.keys == [s.key for s in ds]
    assert [r["samples"] for r in res.shards] == [5, 5] and len({r["where"] for r in res.shards}) == 2
    for (s, z), want in zip(res.kept, logits):
        np.testing.assert_allclose(z, want, rtol=1e-4, atol=1e-4)


class _Logits:
    def __init__(self):
        self.items = []

    def update(self, sample, prediction):
        self.items.append((sample.key, prediction))

    def compute(self):
        return {}
