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


# ------------------------------------------------------------------------------------------------ issue 22 item 3
def _three_chunks(folder, fingerprint=None) -> PredictionStore:
    """A released store of six samples k0..k5 in three chunks of two."""
    store = PredictionStore.create(folder, {"model": "m"} if fingerprint is None else fingerprint, chunk_size=2)
    for i in range(6):
        store.add(f"k{i}", np.array([i]))
    store.close()
    return store


@pytest.mark.parametrize("outside", ["../../other/predictions/chunk-000001.npz", "ABSOLUTE"])
def test_3_an_index_line_naming_a_file_outside_the_store_is_refused(tmp_path, outside):
    from zooinfer.store import StoreError

    other = PredictionStore.create(tmp_path / "other", {"model": "m"})
    other.write_chunk([("k0", np.array([100])), ("k1", np.array([101]))])  # another run's predictions
    other.close()
    chunk = str(other.folder / "chunk-000001.npz") if outside == "ABSOLUTE" else outside
    store = PredictionStore.create(tmp_path / "run", {"model": "m"})
    store.close()
    (store.folder / INDEX).write_text(json.dumps({"chunk": chunk, "n": 2, "skipped": 0, "keys": ["k0", "k1"]})
                                      + "\n" + json.dumps({"chunk": "chunk-000002.npz", "n": 0, "skipped": 0,
                                                           "keys": []}) + "\n")
    with pytest.raises(StoreError, match=rf"{store.folder / INDEX}:1: .*not a chunk name of this store"):
        PredictionStore.open(tmp_path / "run", writable=False)
    with pytest.warns(UserWarning, match="index.jsonl:1"):
        resumed = PredictionStore.open(tmp_path / "run")
    assert len(resumed) == 0  # nothing is read from outside the store: those samples run again


def test_3_a_symlink_in_place_of_a_chunk_is_refused(tmp_path):
    from zooinfer.store import StoreError

    other = _three_chunks(tmp_path / "other")
    store = _three_chunks(tmp_path / "run")
    (store.folder / "chunk-000002.npz").unlink()
    (store.folder / "chunk-000002.npz").symlink_to(other.folder / "chunk-000002.npz")
    with pytest.raises(StoreError, match=r"chunk-000002.npz: .*symbolic link"):
        PredictionStore.open(tmp_path / "run", writable=False)


def test_3_a_chunk_holding_keys_its_index_line_does_not_list_is_refused(tmp_path):
    from zooinfer.store import StoreError

    store = _three_chunks(tmp_path / "run")
    lines = (store.folder / INDEX).read_text().splitlines()
    entry = json.loads(lines[1])
    entry["keys"] = ["k0", "k1"]  # an edited line: chunk 2 (k2, k3) claimed to hold k0, k1
    lines[1] = json.dumps(entry)
    (store.folder / INDEX).write_text("\n".join(lines) + "\n")
    with pytest.raises(StoreError, match=r"index.jsonl:2: .*already"):
        PredictionStore.open(tmp_path / "run", writable=False)
    entry["keys"] = ["x2", "x3"]
    lines[1] = json.dumps(entry)
    (store.folder / INDEX).write_text("\n".join(lines) + "\n")
    reader = PredictionStore.open(tmp_path / "run", writable=False)
    with pytest.raises(StoreError, match=r"chunk-000002.npz: .*holds samples its index line does not list"):
        reader.get("x2")


# ------------------------------------------------------------------------------------------------ issue 22 item 13
def _damage(folder, kind: str) -> str:
    """Damage the store in ``folder`` (made by :func:`_three_chunks`); returns the file (and line) to be named."""
    pred = folder / "predictions"
    chunk = pred / "chunk-000002.npz"
    if kind == "torn chunk":
        chunk.write_bytes(chunk.read_bytes()[:60])
    elif kind == "foreign npz":
        with open(chunk, "wb") as f:
            np.savez(f, weights=np.zeros(3))
    elif kind == "not npz":
        chunk.write_text("hello")
    elif kind == "folder chunk":
        chunk.unlink()
        chunk.mkdir()
    elif kind == "symlink chunk":
        target = folder / "elsewhere.npz"
        chunk.rename(target)
        chunk.symlink_to(target)
    elif kind.startswith("index "):
        lines = (pred / INDEX).read_text().splitlines()
        lines[1] = kind.removeprefix("index ")
        (pred / INDEX).write_text("\n".join(lines) + "\n")
        return "index.jsonl:2"
    return "chunk-000002.npz"


DAMAGE = ["torn chunk", "foreign npz", "not npz", "folder chunk", "symlink chunk", "index [1,2]", 'index "x"',
          "index {}", 'index {"chunk": "chunk-000002.npz"}']


@pytest.mark.parametrize("kind", DAMAGE)
def test_13_a_damaged_store_is_refused_for_reading_naming_the_file(tmp_path, kind):
    from zooinfer.store import StoreError

    store = _three_chunks(tmp_path)
    named = _damage(tmp_path, kind)
    with pytest.raises(StoreError) as e:
        reader = PredictionStore.open(tmp_path, writable=False)
        for k in sorted(reader.done):
            reader.get(k)
    assert str(store.folder / named) in str(e.value)


@pytest.mark.parametrize("kind", DAMAGE)
def test_13_a_resume_recomputes_what_a_damaged_store_cannot_give(tmp_path, kind):
    _three_chunks(tmp_path)
    _damage(tmp_path, kind)
    with pytest.warns(UserWarning, match=r"chunk-000002.npz|index.jsonl:2") as got:
        resumed = PredictionStore.open(tmp_path)
    text = " ".join(str(w.message) for w in got)
    if not kind.startswith("index"):
        assert "2 samples of chunk-000002.npz unreadable" in text and "recomputed" in text
        assert sorted(resumed.done) == ["k0", "k1", "k4", "k5"]
    for k in ("k2", "k3"):
        if k not in resumed:
            resumed.add(k, np.array([int(k[1])]))
    resumed.close()
    healthy = PredictionStore.open(tmp_path, writable=False)  # repaired: read back whole
    assert {k: int(healthy.get(k)[0]) for k in healthy.done} == {f"k{i}": i for i in range(6)}


@pytest.mark.parametrize("text", ['{"model": "m", "sel', "[1, 2]", ""])
def test_13_a_torn_or_foreign_fingerprint_is_named(tmp_path, text):
    from zooinfer.store import StoreError

    store = _three_chunks(tmp_path)
    (store.folder / FINGERPRINT).write_text(text)
    for writable in (False, True):
        with pytest.raises(StoreError, match=rf"{store.folder / FINGERPRINT}: .*start a new run"):
            PredictionStore.open(tmp_path, writable=writable)


# ------------------------------------------------------------------------------------------------ issue 22 item 4
def test_4_the_run_lock_says_who_holds_a_run_folder(tmp_path):
    import os

    from zooinfer.store import FolderInUse, RunLock, holder

    run = tmp_path / "run"
    run.mkdir()
    assert holder(run) is None and holder(tmp_path / "absent") is None
    lock = RunLock.take(run, doing="resumed")
    assert holder(run) == os.getpid()
    with pytest.raises(FolderInUse, match=rf"{run} is being resumed by another process \(pid {os.getpid()}\)"):
        RunLock.take(run, doing="resumed")
    lock.release()
    assert holder(run) is None
    writer = PredictionStore.create(run, {"model": "m"})  # a store being written counts as well
    assert holder(run) == os.getpid()
    writer.release()
    assert holder(run) is None


# ------------------------------------------------------------------------------------------------ issue 22 item 7
def test_7_a_changed_ground_truth_file_is_named(tmp_path):
    from zooinfer.store import ground_truth_digest

    labels = tmp_path / "val_label.txt"
    labels.write_text("a 1\n")
    fp = {"model": "m", "ground_truth": ground_truth_digest([labels])}
    store = PredictionStore.create(tmp_path / "run", fp)
    store.check(fp)
    labels.write_text("a 2\n")
    with pytest.raises(ResumeRefused, match=rf"ground-truth files \(changed: {labels}\)"):
        store.check({**fp, "ground_truth": ground_truth_digest([labels])})
    old = {"model": "m"}  # a store made before ground-truth digests: nothing to compare with
    assert differences(old, fp) == []
