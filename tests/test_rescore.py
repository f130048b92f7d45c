"""Rescore: the metrics again from stored predictions, with other metric parameters, no model and no images."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from zooinfer import recipes
from zooinfer.errors import ZooinferError
from zooinfer.metrics.widerface import WiderFaceAccumulator
from zooinfer.rescore import rescore_run
from zooinfer.store import PredictionStore, ground_truth_digest, keys_digest


@pytest.fixture
def wider_run(tmp_path):
    """A PyramidBox run folder on the embedded WIDER FACE sample whose stored predictions are the ground-truth
    faces shifted by a few pixels (so the IoU threshold matters), and the predictions themselves."""
    recipe = recipes.get("pyramidbox")
    data = recipe.open_dataset(None)
    gt = data.extra["ground_truth"]
    rng = np.random.default_rng(0)
    preds = {}
    for s in data:
        boxes = gt.boxes["hard"][gt.index[tuple(s.target)]]
        shifted = boxes + np.c_[rng.uniform(-0.3, 0.3, (len(boxes), 2)) * boxes[:, 2:4], np.zeros((len(boxes), 2))]
        preds[s.key] = np.c_[shifted, rng.uniform(0.1, 1.0, len(boxes))]
    folder = tmp_path / "pyramidbox" / "20261202-000000-pyramidbox-1"
    fingerprint = {"model": "pyramidbox", "parameters": {"model": "pyramidbox", "data_root": None, "bs": 1},
                   "selection": {"samples": len(data), "keys_sha1": keys_digest(s.key for s in data)},
                   "ground_truth": ground_truth_digest(data.ground_truth_files())}
    store = PredictionStore.create(folder, fingerprint, chunk_size=3)
    for k, p in preds.items():
        store.add(k, p)
    store.close()
    return folder, data, preds


def _direct(data, preds, iou: float) -> dict:
    acc = WiderFaceAccumulator.for_dataset(data, iou_thresh=iou)
    for s in data:
        acc.update(s, preds[s.key])
    return acc.compute()


def test_rescore_with_another_iou_threshold_changes_the_aps_as_the_metric_does(wider_run):
    folder, data, preds = wider_run
    at_05, at_04 = _direct(data, preds, 0.5), _direct(data, preds, 0.4)
    assert any(at_05[s] != at_04[s] for s in ("easy", "medium", "hard")), "the fixture must make the IoU matter"
    out = rescore_run(folder, {"iou_thresh": "0.4"})  # as a command line gives it
    doc = json.loads((out / "metrics.json").read_text())
    for s in ("easy", "medium", "hard"):
        assert doc["accuracy"][s] == at_04[s]
    assert doc["metric_parameters"] == {"iou_thresh": 0.4}
    assert out.parent.name == "rescored" and "iou_thresh=0.4" in out.name
    same = json.loads((rescore_run(folder) / "metrics.json").read_text())
    assert {s: same["accuracy"][s] for s in ("easy", "medium", "hard")} == \
        {s: at_05[s] for s in ("easy", "medium", "hard")}
    assert "rescored from the stored predictions" in (out / "report.md").read_text()


def test_rescore_refuses_what_would_change_the_predictions(wider_run):
    folder, _, _ = wider_run
    with pytest.raises(ZooinferError, match=r"rescore changes only metric parameters; 'bs' would change the "
                                            r"predictions .*iou_thresh"):
        rescore_run(folder, {"bs": 4})
    with pytest.raises(ZooinferError, match=r"'iou_thresh' must be a number in \(0, 1\]"):
        rescore_run(folder, {"iou_thresh": 1.5})


def test_rescore_of_an_incomplete_run_names_the_missing_samples(wider_run):
    folder, data, preds = wider_run
    partial = folder.with_name("partial")
    store = PredictionStore.create(partial, PredictionStore.open(folder).fingerprint)
    store.add(data[0].key, preds[data[0].key])
    store.close()
    with pytest.raises(ZooinferError, match=rf"3 of 4 samples have no stored prediction .*resume that run"):
        rescore_run(partial)


def test_cli_rescore_prints_the_comparison(wider_run):
    folder, _, _ = wider_run
    proc = subprocess.run([sys.executable, "-m", "zooinfer.cli", "rescore", str(folder), "-p", "iou_thresh", "0.4",
                           "-q"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "| metric" in proc.stdout and "rescored_%" in proc.stdout and "rescored report:" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "zooinfer.cli", "rescore", str(folder), "-p", "bs", "4"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "rescore changes only metric parameters" in bad.stderr


# ------------------------------------------------------------------------------------------------ issue 22 items
def test_3_rescore_reads_no_chunk_outside_the_run(wider_run, tmp_path):
    """An index line naming another run's chunk (perfect predictions) must not be scored as this run's."""
    import shutil

    from zooinfer.store import StoreError

    folder, data, preds = wider_run
    other = tmp_path / "other"
    gt = data.extra["ground_truth"]
    store = PredictionStore.create(other, {"model": "pyramidbox"})
    store.write_chunk([(s.key, np.c_[gt.boxes["hard"][gt.index[tuple(s.target)]], np.ones(len(
        gt.boxes["hard"][gt.index[tuple(s.target)]]))]) for s in data])
    store.close()
    index = folder / "predictions" / "index.jsonl"
    keys = [s.key for s in data]
    index.write_text(json.dumps({"chunk": "../../../other/predictions/chunk-000001.npz", "n": len(keys),
                                 "skipped": 0, "keys": keys}) + "\n")
    for p in (folder / "predictions").glob("chunk-*.npz"):
        shutil.move(p, tmp_path / p.name)  # this run's own chunks are gone
    with pytest.raises(StoreError, match=r"index.jsonl:1: 'chunk' '\.\./\.\./\.\./other.*not a chunk name"):
        rescore_run(folder)


def test_13_rescore_refuses_a_damaged_store_naming_the_file(wider_run):
    folder, _, _ = wider_run
    chunk = folder / "predictions" / "chunk-000001.npz"
    chunk.write_bytes(chunk.read_bytes()[:100])
    proc = subprocess.run([sys.executable, "-m", "zooinfer.cli", "rescore", str(folder), "-q"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(f"error: {chunk}: cannot be read as a chunk (BadZipFile"), \
        proc.stderr
    (folder / "predictions" / "fingerprint.json").write_text('{"model": "pyramidbox", "param')
    with pytest.raises(ZooinferError, match=r"fingerprint.json: not valid JSON"):
        rescore_run(folder)


@pytest.fixture
def wider_copy_run(tmp_path):
    """A PyramidBox run folder over a copy of the embedded WIDER FACE sample (its .mat files may be changed), with
    the fingerprint an evaluation writes (ground-truth digests included); predictions: the ground truth."""
    import shutil

    from zooinfer.config import RunConfig
    from zooinfer.datasets.widerface import widerface_sample_root
    from zooinfer.evaluation import run_fingerprint

    root = tmp_path / "wider"
    shutil.copytree(widerface_sample_root(), root)
    config = RunConfig.from_parameters({"model": "pyramidbox", "data_root": str(root), "output_root":
                                        str(tmp_path / "out")})
    recipe = recipes.get("pyramidbox")
    data = recipe.open_dataset(str(root))
    gt = data.extra["ground_truth"]
    folder = tmp_path / "out" / "pyramidbox" / "20261202-000000-pyramidbox-1"
    store = PredictionStore.create(folder, run_fingerprint(config, recipe, data, data, None))
    for s in data:
        boxes = gt.boxes["hard"][gt.index[tuple(s.target)]]
        store.add(s.key, np.c_[boxes, np.linspace(0.5, 1.0, len(boxes))])
    store.close()
    return folder, root


def test_7_rescore_refuses_a_changed_ground_truth_naming_the_file(wider_copy_run):
    folder, root = wider_copy_run
    rescore_run(folder)  # unchanged: accepted
    mats = root / "eval_tools" / "ground_truth"
    (mats / "wider_hard_val.mat").write_bytes((mats / "wider_easy_val.mat").read_bytes())  # same names, other faces
    with pytest.raises(ZooinferError, match=rf"ground-truth files \(changed: {mats / 'wider_hard_val.mat'}\)"):
        rescore_run(folder)


@pytest.mark.parametrize("error", [(30, "Read-only file system"), (28, "No space left on device")],
                         ids=["read-only", "full"])
def test_14_rescore_into_an_unwritable_run_folder_is_a_clear_error_leaving_nothing(wider_run, monkeypatch, error):
    from zooinfer import report

    folder, _, _ = wider_run
    real = report.write_json

    def failing(path, doc):
        real(path, doc)  # part of the report is written, then the disk refuses
        raise OSError(*error)

    monkeypatch.setattr(report, "write_json", failing)
    with pytest.raises(ZooinferError, match=rf"cannot write the rescored report into {folder / 'rescored'} "
                                            rf"\({error[1]}\)"):
        rescore_run(folder)
    assert not any((folder / "rescored").iterdir()), "nothing half-written is left"
