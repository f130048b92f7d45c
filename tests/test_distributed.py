"""Scale-out with Ray: 2 local workers (actors) over small chunks give the single-process figures exactly; a failed
chunk (raised, or its worker process killed) is repeated alone, once per failure, without losing or duplicating a
sample; a chunk that always fails is a clear error; chunks land in the prediction store and a resume hands out only
the missing samples; no Ray -> how to install it."""
from __future__ import annotations

import os
import sys
from collections import deque
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from zooinfer import distributed, export, pipeline
from zooinfer.backends import open_session, registry
from zooinfer.config import RunConfig
from zooinfer.distributed import (Ledger, WorkerSpec, _local_onnx, _task_resources, cpus_per_task,
                                  default_chunk_size, evaluate_distributed, ship_file)
from zooinfer.datasets.base import ImageDataset, Sample
from zooinfer.errors import ZooinferError
from zooinfer.evaluation import Evaluation
from zooinfer.metrics.classification import MAX_K, TopKAccumulator, compact_logits
from zooinfer.store import PredictionStore, Skip

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


class FakeRay:
    """Stands for the ray module where a test must not start or join a cluster: records ray.init's arguments."""

    def __init__(self, fail_on_init: bool = False):
        self.fail_on_init, self.inits = fail_on_init, []

    def is_initialized(self) -> bool:
        return False

    def init(self, **kwargs) -> None:
        if self.fail_on_init:
            raise AssertionError(f"ray.init{kwargs} called: it would retry an unreachable address for minutes")
        self.inits.append(kwargs)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_ray_address_fails_in_seconds_naming_it(tiny_ev_parts, monkeypatch):
    import time

    monkeypatch.setattr(distributed, "import_ray", lambda: FakeRay(fail_on_init=True))
    address = f"127.0.0.1:{_free_port()}"  # nobody listens there
    t0 = time.perf_counter()
    with pytest.raises(ZooinferError, match=rf"ray_address '{address}': nothing answers at {address}"):
        evaluate_distributed(tiny_config(tiny_ev_parts, 2, ray_address=address), tiny_recipe(), tiny_ev_parts[0])
    assert time.perf_counter() - t0 < 10
    with pytest.raises(ZooinferError, match=r"ray_address 'no-port': expected host:port"):
        distributed._init_ray(FakeRay(fail_on_init=True), "no-port")


def test_auto_without_a_cluster_is_a_clear_error(monkeypatch):
    services = pytest.importorskip("ray._private.services")

    def no_cluster(address, temp_dir=None):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(services, "canonicalize_bootstrap_address", no_cluster)
    with pytest.raises(ZooinferError, match=r"ray_address 'auto': no running Ray cluster found on this machine"):
        distributed._init_ray(FakeRay(fail_on_init=True), "auto")
    dead = f"127.0.0.1:{_free_port()}"
    monkeypatch.setattr(services, "canonicalize_bootstrap_address", lambda a, temp_dir=None: dead)
    with pytest.raises(ZooinferError, match=r"ray_address 'auto': nothing answers at 127\.0\.0\.1:"):
        distributed._init_ray(FakeRay(fail_on_init=True), "auto")


def test_processes_without_an_address_start_a_private_local_instance(monkeypatch):
    """Not the cluster RAY_ADDRESS names, nor one another user started here: ray.init(address="local")."""
    monkeypatch.setenv("RAY_ADDRESS", "10.255.255.1:6379")
    fake = FakeRay()
    assert distributed._init_ray(fake, None) is True
    assert fake.inits == [{"address": "local", "num_cpus": pipeline.available_cpus(), "include_dashboard": False}]


def test_default_chunk_size_gives_several_chunks_per_worker_of_at_least_four_batches():
    assert default_chunk_size(50_000, 16, 4) == 256  # capped: 196 chunks, ~12 per worker
    assert default_chunk_size(3226, 4, 1) == 101  # WIDER FACE val over 4 workers: 32 chunks
    assert default_chunk_size(9, 2, 2) == 8 and default_chunk_size(0, 2, 2) == 8  # at least 4 batches
    assert default_chunk_size(10_000, 2, 1) == 256 and default_chunk_size(1000, 2, 1) == 63
    assert default_chunk_size(100_000, 1, 128) == 512  # 4 batches beat the cap


def test_the_fault_hook_is_read_from_the_environment(monkeypatch, tmp_path):
    assert distributed._fault_hook() == {}
    monkeypatch.setenv(distributed.FAIL_ENV, "3, 5")
    assert distributed._fault_hook() == {"chunks": [3, 5], "mode": "raise", "once": None}
    monkeypatch.setenv(distributed.FAIL_MODE_ENV, "exit")
    monkeypatch.setenv(distributed.FAIL_ONCE_ENV, str(tmp_path))
    fail = distributed._fault_hook()
    assert fail == {"chunks": [3, 5], "mode": "exit", "once": str(tmp_path)}
    distributed._inject_fault(fail, 4)  # not listed: nothing happens
    (tmp_path / "chunk-3.failed").touch()
    distributed._inject_fault(fail, 3)  # listed, but its one failure happened already (marker file)
    with pytest.raises(distributed.InjectedFault, match="injected failure of chunk 5"):
        distributed._inject_fault({**fail, "mode": "raise"}, 5)
    assert (tmp_path / "chunk-5.failed").is_file()
    distributed._inject_fault({**fail, "mode": "raise"}, 5)  # once
    monkeypatch.setenv(distributed.FAIL_MODE_ENV, "segfault")
    with pytest.raises(ZooinferError, match="expected raise or exit"):
        distributed._fault_hook()
    monkeypatch.setenv(distributed.FAIL_ENV, "two")
    with pytest.raises(ZooinferError, match="expected chunk numbers"):
        distributed._fault_hook()


def attempts(res) -> list[int]:
    return [c["attempts"] for c in res.chunks]


def test_two_workers_equal_one_process(ray, tiny_ev_parts, single):
    """Through Evaluation (which passes its prediction store): the default chunk size (4 batches of 2 -> 8)."""
    ev = tiny_evaluation(tiny_ev_parts, 2)
    res = ev.evaluate()
    ds = tiny_ev_parts[0]
    assert res.shards is res.workers  # the old name still reads
    assert res.metrics == single.metrics and 0 < res.metrics["top1"] < 1 and res.metrics["n_images"] == 9
    assert res.accumulator.keys == [s.key for s in ds] == single.accumulator.keys
    assert res.n_done == res.n_samples == 9 and not res.skipped and res.n_stored == 0
    assert [(c["chunk"], c["samples"], c["first"], c["last"], c["attempts"]) for c in res.chunks] == \
           [(0, 8, "img0", "img7", 1), (1, 1, "img8", "img8", 1)]
    assert sum(r["chunks"] for r in res.shards) == 2 and sum(r["samples"] for r in res.shards) == 9
    assert sum(r["n_done"] for r in res.shards) == 9 and {r["state"] for r in res.shards} == {"ok"}
    assert {r["cpus"] for r in res.shards} == {1} and {r["threads"] for r in res.shards if r["chunks"]} == {1}
    assert {r["cores"] for r in res.shards} == {None}  # not pinned unless asked
    assert len({r["where"] for r in res.shards}) == len(res.shards) <= 2
    # every chunk landed in the run's store, which holds every sample once
    assert res.stored["samples"] == 9 and res.stored["chunks_written"] == 2
    # full predictions are kept for plots, in dataset order, and equal to the single-process ones
    assert [s.key for s, _ in res.kept] == [s.key for s, _ in single.kept] == ["img0", "img1", "img2", "img3"]
    for (_, a), (_, b) in zip(res.kept, single.kept):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert res.timer.items["infer"] == 9


@pytest.fixture(scope="module")
def reference(tiny_ev_parts):
    """The single-process pipeline.run over the nine images (no Ray, no store)."""
    ds, model, onnx_path = tiny_ev_parts
    return pipeline.run(tiny_recipe(None, ds, model), ds, open_session("onnxruntime", onnx_path=onnx_path), bs=2,
                        progress=False, keep=4)


def test_small_chunks_equal_pipeline_run(ray, tiny_ev_parts, reference):
    ds, model, onnx_path = tiny_ev_parts
    res = evaluate_distributed(tiny_config(tiny_ev_parts, 2), tiny_recipe(None, ds, model), ds, chunk_size=2)
    assert res.metrics == reference.metrics and res.accumulator.keys == reference.accumulator.keys
    assert [(c["samples"], c["first"], c["attempts"]) for c in res.chunks] == \
           [(2, "img0", 1), (2, "img2", 1), (2, "img4", 1), (2, "img6", 1), (1, "img8", 1)]
    assert sum(r["chunks"] for r in res.shards) == 5 and sum(r["samples"] for r in res.shards) == 9
    assert res.n_done == 9 and res.n_stored == 0 and res.timer.items["infer"] == 9
    assert [s.key for s, _ in res.kept] == ["img0", "img1", "img2", "img3"]  # from the first two chunks
    for (_, a), (_, b) in zip(res.kept, reference.kept):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert 0 < res.wall_s and all(r["busy_s"] > 0 for r in res.shards if r["chunks"])


def test_limit_more_workers_than_samples_and_pinning(ray, tiny_ev_parts, monkeypatch):
    monkeypatch.setenv("ZOOINFER_PIN_CORES", "1")
    ds, model, _ = tiny_ev_parts
    res = evaluate_distributed(tiny_config(tiny_ev_parts, 4, limit=3), tiny_recipe(None, ds, model), ds,
                               chunk_size=1)
    assert res.n_samples == 3 and res.accumulator.keys == ["img0", "img1", "img2"]
    assert attempts(res) == [1, 1, 1]
    # 3 chunks for 4 processes: 3 workers asked; 2 fit the 2 CPUs (1 CPU each)
    assert 1 <= len(res.shards) <= 2 and sum(r["samples"] for r in res.shards) == 3
    allowed = os.sched_getaffinity(0)
    for r in res.shards:  # 1 CPU per worker: each ran on one core of its own
        if r["chunks"]:
            assert r["cpus"] == 1 and r["cores"] is not None and int(r["cores"]) in allowed
    assert len({r["cores"] for r in res.shards if r["chunks"]}) == len([r for r in res.shards if r["chunks"]])
    assert os.sched_getaffinity(0) == allowed


def test_cpus_per_task_fit_the_nodes():
    assert cpus_per_task([2], 2) == 1 and cpus_per_task([2], 1) == 2 and cpus_per_task([2], 5) == 1
    assert cpus_per_task([16, 16], 3) == 8  # 32 // 3 = 10 would fit one task per node only
    assert cpus_per_task([16, 16], 2) == 16 and cpus_per_task([4, 2], 3) == 2


def test_ledger_hands_out_disjoint_core_blocks_and_counts_attempts():
    led = Ledger()
    assert [led.claim("n1", 2), led.claim("n1", 2), led.claim("n1", 2), led.claim("n2", 2)] == [0, 1, None, 0]
    led.release("n1", 0)
    assert led.claim("n1", 2) == 0
    assert led.started_count(3) == 0
    assert [led.started(3, "a"), led.started(3, "b")] == [1, 2] and led.started_count(3) == 2
    led.progress(3, 5)
    led.progress(4, 2)
    assert led.progress_total() == 7
    assert led.summary() == {3: ["a", "b"]}


@pytest.mark.parametrize("mode", ["raise", "exit"])
def test_an_injected_failure_repeats_only_its_chunk(ray, tiny_ev_parts, reference, tmp_path, monkeypatch, mode):
    """The test hook fails chunk 2's first attempt: by raising, or by killing its worker process (the worker is
    replaced; the chunk queued behind it on that worker never started and is handed out again at no cost)."""
    monkeypatch.setenv(distributed.FAIL_ENV, "2")
    monkeypatch.setenv(distributed.FAIL_MODE_ENV, mode)
    monkeypatch.setenv(distributed.FAIL_ONCE_ENV, str(tmp_path))
    ds, model, _ = tiny_ev_parts
    store = PredictionStore.create(tmp_path / "run", {})
    res = evaluate_distributed(tiny_config(tiny_ev_parts, 2), tiny_recipe(None, ds, model), ds, chunk_size=2,
                               store=store)
    assert (tmp_path / "chunk-2.failed").is_file()  # the fault fired
    assert attempts(res) == [1, 1, 2, 1, 1]
    assert res.metrics == reference.metrics and res.accumulator.keys == reference.accumulator.keys
    assert res.n_done == 9 and len(store) == 9 and store.chunks_written == 5  # none lost, none twice
    reason = res.chunks[2]["reasons"]
    failed = [r for r in res.shards if r["failed"]]
    assert len(failed) == 1 and failed[0]["retry_reasons"] == f"chunk 2: {reason}"
    assert sum(r["retried"] for r in res.shards) == 1
    if mode == "raise":
        assert reason == "InjectedFault: injected failure of chunk 2 (ZOOINFER_FAIL_CHUNK)"
        assert {r["state"] for r in res.shards} == {"ok"}
    else:
        assert reason == "the worker process died"
        assert failed[0]["state"] == "replaced (died)"
        # the repeat ran on another worker than the dead one (its replacement, or the other worker)
        tried, ran = res.chunks[2]["workers"].split(", ")
        assert tried.split(" ")[0] != ran.split(" ")[0]


def test_a_repeat_goes_to_another_worker_unless_it_is_the_only_one():
    disp = object.__new__(distributed._Dispatcher)
    a, b = (distributed._Worker(i, 0, None) for i in (0, 1))
    c0, c1 = distributed._Chunk(0, [0], 0, avoid="w0"), distributed._Chunk(1, [1], 0)
    disp.pending = deque([c0, c1])
    assert disp._pick(a, others=True) is c1 and list(disp.pending) == [c0]  # w0 skips the chunk that failed on it
    assert disp._pick(a, others=True) is None
    assert disp._pick(a, others=False) is c0 and not disp.pending  # the only live worker takes it
    disp.pending = deque([c0])
    assert disp._pick(b, others=True) is c0


def test_a_dying_and_a_raising_sample_are_repeated_once(ray, tiny_ev_parts, reference, faults):
    (faults / "once-die-img1").touch()  # chunk 0 (img0-1): its process is killed mid-chunk
    (faults / "once-raise-img6").touch()  # chunk 3 (img6-7): raises mid-chunk
    ds, model, _ = tiny_ev_parts
    res = evaluate_distributed(tiny_config(tiny_ev_parts, 2), tiny_recipe(faults, ds, model), ds, chunk_size=2)
    assert not list(faults.iterdir())  # both faults fired
    assert res.metrics == reference.metrics and res.accumulator.keys == reference.accumulator.keys
    assert res.n_done == 9 and attempts(res) == [2, 1, 1, 2, 1]
    assert res.chunks[0]["reasons"] == "the worker process died"
    assert res.chunks[3]["reasons"] == "RuntimeError: injected failure on img6"


def test_a_chunk_that_always_fails_names_its_samples(ray, tiny_ev_parts, faults, tmp_path):
    (faults / "raise-img5").touch()
    ev = tiny_evaluation(tiny_ev_parts, 2, faults, output_root=str(tmp_path / "out"))
    with pytest.raises(ZooinferError) as err:
        ev.evaluate()
    msg = str(err.value)
    assert "chunk 0 of 2 (numbered from 0; 8 samples: img0, img1, img2, ... (+5 more)) failed 3 time(s)" in msg
    assert msg.count("RuntimeError: injected failure on img5") == 3 and "No report was written" in msg
    assert ev.result is None and not list((tmp_path / "out").rglob("metrics.json"))
    stored = ev._store
    assert not any(f"img{i}" in stored for i in range(8))  # chunk 0 never completed; chunk 1 (img8) may have


def test_a_failed_run_keeps_its_chunks_and_a_resume_hands_out_only_the_rest(ray, tiny_ev_parts, reference,
                                                                              tmp_path, monkeypatch):
    ds, model, _ = tiny_ev_parts
    recipe, cfg = tiny_recipe(None, ds, model), tiny_config(tiny_ev_parts, 2)
    store = PredictionStore.create(tmp_path / "run", {})
    monkeypatch.setenv(distributed.FAIL_ENV, "1")  # every attempt of chunk 1 (img2, img3) fails
    with pytest.raises(ZooinferError) as err:
        evaluate_distributed(cfg, recipe, ds, chunk_size=2, store=store)
    msg = str(err.value)
    assert "chunk 1 of 5 (numbered from 0; 2 samples: img2, img3) failed 3 time(s) (max_retries=2)" in msg
    assert msg.count("InjectedFault: injected failure of chunk 1") == 3
    before = set(store.done)
    assert not before & {"img2", "img3"}  # what is stored are whole completed chunks
    for chunk in ({"img0", "img1"}, {"img4", "img5"}, {"img6", "img7"}):
        assert chunk <= before or not chunk & before

    monkeypatch.delenv(distributed.FAIL_ENV)
    res = evaluate_distributed(cfg, recipe, ds, chunk_size=2, store=store)
    assert res.n_stored == len(before) and res.n_samples == 9 and res.n_done == 9
    assert sum(c["samples"] for c in res.chunks) == 9 - len(before) and set(attempts(res)) == {1}
    assert res.metrics == reference.metrics and res.accumulator.keys == reference.accumulator.keys
    assert set(store.done) == {s.key for s in ds}

    again = evaluate_distributed(cfg, recipe, ds, store=store)  # everything stored: nothing is handed out
    assert again.chunks == [] and again.shards == [] and again.n_stored == 9 and again.metrics == reference.metrics


def test_a_store_filled_by_one_process_is_completed_by_the_workers(ray, tiny_ev_parts, tmp_path):
    """A single-process run stored img0-3, img8 was stored as skipped: the workers get only img4-7."""
    ds, model, onnx_path = tiny_ev_parts
    recipe = tiny_recipe(None, ds, model)
    session = open_session("onnxruntime", onnx_path=onnx_path)
    store = PredictionStore.create(tmp_path / "run", {})
    first = pipeline.run(recipe, ds.subset(4), session, bs=2, progress=False, store=store)
    assert first.n_done == 4 and len(store) == 4
    store.write_chunk([("img8", Skip(ds[8].path, "unreadable (test)"))])
    with pytest.warns(UserWarning, match="1 images skipped"):
        res = evaluate_distributed(tiny_config(tiny_ev_parts, 2), recipe, ds, chunk_size=2, store=store)
    assert res.n_stored == 5 and [(c["first"], c["last"], c["attempts"]) for c in res.chunks] == \
           [("img4", "img5", 1), ("img6", "img7", 1)]
    assert res.n_samples == 9 and res.n_done == 8 and res.skipped == [("img8", ds[8].path, "unreadable (test)")]
    want = pipeline.run(recipe, ds.subset(8), session, bs=2, progress=False)
    assert res.metrics == want.metrics and res.metrics["n_images"] == 8
    assert res.accumulator.keys == [f"img{i}" for i in range(8)]
    assert len(store) == 9


def test_a_data_root_the_workers_cannot_see_is_named(ray, tiny_ev_parts, tmp_path):
    ds = tiny_ev_parts[0]
    gone = tmp_path / "not-mounted"
    moved = replace(ds, root=gone, samples=[replace(s, path=str(gone / Path(s.path).name)) for s in ds])
    with pytest.raises(ZooinferError, match=f"data root {gone} is not visible on node .*same path"):
        evaluate_distributed(tiny_config(tiny_ev_parts, 2), tiny_recipe(), moved)


class _OnlyHere:
    """Pickles on the driver, cannot be rebuilt in any other process (as a module missing on a node)."""

    def __reduce__(self):
        return _only_in, (os.getpid(),)


def _only_in(pid):
    if os.getpid() != pid:
        raise ImportError("No module named 'only_on_the_driver'")
    return _OnlyHere()


def test_a_worker_that_cannot_start_ends_the_run_with_the_reason(ray, tiny_ev_parts, monkeypatch):
    """One worker (the last one left) that dies before it runs: the run ends saying why (no retry here, to keep the
    test short: each start is a new process; the retries are counted in the test below)."""
    monkeypatch.setattr(distributed, "MAX_RETRIES", 0)
    ds, model, _ = tiny_ev_parts
    recipe = replace(tiny_recipe(None, ds, model), published=_OnlyHere())
    with pytest.raises(ZooinferError, match=r"a Ray worker could not start, 1 times in a row \(last: .*"
                                            r"only_on_the_driver"):
        evaluate_distributed(tiny_config(tiny_ev_parts, 1), recipe, ds, chunk_size=2)


def test_a_slot_whose_worker_never_starts_is_given_up_while_others_run():
    disp = object.__new__(distributed._Dispatcher)
    a, b = (distributed._Worker(i, 0, None) for i in (0, 1))
    disp.workers, disp.start_failures, replaced = [a, b], {}, []
    disp._replace = lambda w, why: replaced.append((w.slot, why))
    for _ in range(distributed.MAX_RETRIES):
        disp._not_started(b, RuntimeError("creation failed\nImportError: no module x"))
    assert replaced == [(1, "did not start: ImportError: no module x")] * 2 and not b.dead
    with pytest.warns(UserWarning, match="could not start, 3 times in a row .* going on with the other workers"):
        disp._not_started(b, RuntimeError("ImportError: no module x"))
    assert b.dead and len(replaced) == 2  # not replaced again; w0 goes on
    disp.start_failures[0] = distributed.MAX_RETRIES  # w0's slot failed as often: the last one left
    with pytest.raises(ZooinferError, match=r"could not start, 3 times in a row \(last: boom\); every node"):
        disp._not_started(a, RuntimeError("boom"))


def test_a_node_without_the_onnx_file_gets_it_from_the_object_store(ray, tiny_ev_parts, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOOINFER_CACHE", str(tmp_path / "cache"))
    ds, _, onnx_path = tiny_ev_parts
    blob = ship_file(ray, onnx_path)
    cfg = RunConfig(model="tiny", bs=2, threads=1, prep_threads=1, keep=0)
    spec = WorkerSpec(config=cfg, recipe=tiny_recipe(), data=ds, cpus=1,
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
    res = evaluate_distributed(replace(ev1.config, processes=2), ev1.recipe, ds, onnx_path=onnx_path, chunk_size=4)
    assert res.metrics == expected and res.accumulator.keys == [s.key for s in ds]
    assert [c["samples"] for c in res.chunks] == [4, 4, 2] and sum(r["samples"] for r in res.shards) == 10
    for (s, z), want in zip(res.kept, logits):
        np.testing.assert_allclose(z, want, rtol=1e-4, atol=1e-4)


class _Logits:
    def __init__(self):
        self.items = []

    def update(self, sample, prediction):
        self.items.append((sample.key, prediction))

    def compute(self):
        return {}
