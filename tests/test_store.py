"""The prediction store: exact round trips, atomic chunks, recovery after a kill, refusal of a different run."""
from __future__ import annotations

import json

import numpy as np
import pytest

from zooinfer.errors import ZooinferError
from zooinfer.metrics.classification import TopKAccumulator, compact_logits
from zooinfer.store import FINGERPRINT, INDEX, PredictionStore, ResumeRefused, Skip, differences


def _same(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif hasattr(a, "__dataclass_fields__"):
        assert type(a) is type(b)
        for k in a.__dataclass_fields__:
            _same(getattr(a, k), getattr(b, k))
    else:
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("make", [
    lambda rng, i: rng.standard_normal((i % 4, 7)),  # COCO rows: ragged, some images with none
    lambda rng, i: rng.standard_normal(12288).astype(np.float32),  # re-ID features
    lambda rng, i: compact_logits(rng.standard_normal(1000).astype(np.float32)),  # top-k dataclass
    lambda rng, i: [rng.standard_normal((2, 3)).astype(np.float32), np.int64(i)],  # a list of arrays
    lambda rng, i: {"boxes": rng.standard_normal((i, 5)), "n": np.array(i)},  # a dict of arrays
], ids=["rows", "features", "topk", "list", "dict"])
def test_round_trip_is_exact(tmp_path, make):
    rng = np.random.default_rng(0)
    # 300 samples in chunks of 128: a chunk holds more than 255 shape entries (offsets past any 8-bit count)
    preds = {f"k{i}": make(rng, i % 11) for i in range(300)}
    store = PredictionStore.create(tmp_path, {"model": "m"}, chunk_size=128)
    for k, p in preds.items():
        store.add(k, p)
    store.skip("bad", "/data/bad.jpg", "OSError: truncated")
    store.close()
    assert store.chunks_written == 3  # 301 records in chunks of 128
    again = PredictionStore.open(tmp_path)
    assert len(again) == 301
    for k, p in preds.items():
        _same(p, again.get(k))
    assert again.get("bad") == Skip("/data/bad.jpg", "OSError: truncated")


def test_topk_metrics_identical_from_stored(tmp_path, tiny_dataset):
    rng = np.random.default_rng(3)
    logits = {s.key: rng.standard_normal(20).astype(np.float32) for s in tiny_dataset}
    direct, stored = TopKAccumulator(), TopKAccumulator()
    store = PredictionStore.create(tmp_path, {}, chunk_size=3)
    for s in tiny_dataset:
        direct.update(s, logits[s.key])
        store.add(s.key, compact_logits(logits[s.key]))
    store.close()
    for s, p in PredictionStore.open(tmp_path).in_order(tiny_dataset):
        stored.update(s, p)
    assert direct.compute() == stored.compute()


def test_a_torn_index_line_and_an_unindexed_chunk_are_recovered(tmp_path):
    store = PredictionStore.create(tmp_path, {}, chunk_size=2)
    for i in range(6):
        store.add(f"k{i}", np.array([i]))
    store.close()
    index = store.folder / INDEX
    lines = index.read_text().splitlines()
    # the kill came after chunk 3 was renamed into place, while its index line was half written
    index.write_text("\n".join(lines[:2]) + "\n" + lines[2][:17])
    (store.folder / ".chunk-000004.npz.tmp123").write_bytes(b"half a chunk")
    again = PredictionStore.open(tmp_path)
    assert sorted(again.done) == [f"k{i}" for i in range(6)]
    assert not list(store.folder.glob(".chunk-*"))  # half-written files of the killed run are removed
    again.add("k6", np.array([6]))
    again.close()
    assert (store.folder / "chunk-000004.npz").is_file()  # numbering goes on after the last chunk


def test_a_sample_is_never_stored_twice(tmp_path):
    store = PredictionStore.create(tmp_path, {})
    store.write_chunk([("a", np.zeros(1))])
    with pytest.raises(ZooinferError, match="already stored .*first: a"):
        store.write_chunk([("a", np.zeros(1)), ("b", np.zeros(1))])


def test_unstorable_predictions_are_named(tmp_path):
    store = PredictionStore.create(tmp_path, {})
    store.add("a", [{"bbox": [1, 2, 3, 4]}])
    with pytest.raises(ZooinferError, match="cannot store a list prediction .*compact="):
        store.close()


def test_create_refuses_a_folder_that_holds_predictions(tmp_path):
    PredictionStore.create(tmp_path, {})
    with pytest.raises(ZooinferError, match="already holds stored predictions; resume that run"):
        PredictionStore.create(tmp_path, {})


def test_open_names_a_folder_without_predictions(tmp_path):
    with pytest.raises(ZooinferError, match=f"holds no stored predictions .*{FINGERPRINT}"):
        PredictionStore.open(tmp_path)


def test_check_names_every_difference(tmp_path):
    fp = {"model": "pcb", "checkpoint": {"md5": "aa"}, "backend": {"backend": "onnxruntime", "bs": 8},
          "parameters": {"progress": True}}
    store = PredictionStore.create(tmp_path, fp)
    store.check({**fp, "parameters": {"progress": False}})  # parameters that change no prediction: accepted
    other = {**fp, "checkpoint": {"md5": "bb"}, "backend": {"backend": "onnxruntime", "bs": 4}}
    with pytest.raises(ResumeRefused, match=r"checkpoint \(md5: 'aa' -> 'bb'\); backend settings \(bs: 8 -> 4\)"):
        store.check(other)
    assert differences(fp, fp) == []


def test_chunk_size_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOOINFER_CHUNK_SIZE", "2")
    store = PredictionStore.create(tmp_path, {})
    for i in range(5):
        store.add(str(i), np.zeros(1))
    assert store.chunks_written == 2
    monkeypatch.setenv("ZOOINFER_CHUNK_SIZE", "many")
    with pytest.raises(ZooinferError, match="ZOOINFER_CHUNK_SIZE='many': expected a number > 0"):
        PredictionStore(tmp_path)


def test_a_chunk_is_written_after_flush_s_even_when_not_full(tmp_path):
    store = PredictionStore.create(tmp_path, {}, chunk_size=1000, flush_s=0.0)
    store.add("a", np.zeros(1))
    assert store.chunks_written == 1
    assert json.loads((store.folder / INDEX).read_text().splitlines()[0])["keys"] == ["a"]


def test_two_writers_never_share_a_store(tmp_path):
    first = PredictionStore.create(tmp_path, {})
    with pytest.raises(ZooinferError, match="another process is writing this run now"):
        PredictionStore.open(tmp_path)
    reader = PredictionStore.open(tmp_path, writable=False)  # readers (zooinfer list, rescore) may look
    with pytest.raises(ZooinferError, match="opened read-only"):
        reader.write_chunk([("a", np.zeros(1))])
    first.release()
    PredictionStore.open(tmp_path).add("a", np.zeros(1))


def test_a_read_only_open_changes_nothing_on_disk(tmp_path):
    store = PredictionStore.create(tmp_path, {}, chunk_size=1)
    store.add("a", np.zeros(1))
    store.release()
    (store.folder / "index.jsonl").write_text("")  # as if the kill came before the index line
    (store.folder / ".chunk-000002.npz.tmp9").write_bytes(b"x")
    reader = PredictionStore.open(tmp_path, writable=False)
    assert list(reader.done) == ["a"]
    assert (store.folder / "index.jsonl").read_text() == "" and (store.folder / ".chunk-000002.npz.tmp9").exists()
