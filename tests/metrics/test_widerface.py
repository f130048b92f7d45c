"""WIDER FACE AP: reference numbers from the Python port run outside the project (as is, and with the official
MATLAB behaviour patched into the /tmp copy: see tests/metrics/data/widerface/reference.json), a hand-worked case,
properties, the .mat writer, the submission format and bad input."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.io import loadmat

from zooinfer.datasets.base import Sample
from zooinfer.errors import DatasetError, MetricInputError
from zooinfer.metrics import widerface as wf

DATA = Path(__file__).parent / "data" / "widerface"
GT = DATA / "gt"
REF = json.loads((DATA / "reference.json").read_text())
PRED = {tuple(k.split("/")): np.array(v, dtype=np.float64).reshape(-1, 5)
        for k, v in json.loads((DATA / "predictions.json").read_text())["images"].items()}


def _aps(res: dict) -> dict:
    return {s: res[s] for s in wf.SETTINGS}


def _assert_ref(res: dict, ref: dict) -> None:
    for s in wf.SETTINGS:
        assert res[s] == pytest.approx(ref[s], abs=1e-12), s


def _write_folder(folder: Path, preds: dict) -> Path:
    for (ev, name), d in preds.items():
        wf.write_submission(folder, ev, name, d)
    return folder


@pytest.fixture(scope="module")
def pred_folder(tmp_path_factory) -> Path:
    return _write_folder(tmp_path_factory.mktemp("wider") / "pred", PRED)


def test_score_sorted_files_equal_the_port(tmp_path):
    """Rows pre-sorted by score: the port as is and the MATLAB semantics agree, and so must we."""
    assert REF["port_as_is_score_sorted_files"] == REF["matlab_score_sorted_files"]
    sorted_preds = {k: v[np.argsort(-v[:, 4], kind="stable")] for k, v in PRED.items()}
    res = wf.evaluate(_write_folder(tmp_path / "p", sorted_preds), GT)
    _assert_ref(res, REF["port_as_is_score_sorted_files"])
    assert (res["n_images"], res["n_missing"], res["n_unknown"]) == (30, 0, 0)


def test_file_order_is_ranked_by_score_like_matlab(pred_folder):
    """Rows in file order (not score order): MATLAB ranks by score, the port does not (its number differs)."""
    res = wf.evaluate(pred_folder, GT)
    _assert_ref(res, REF["matlab_file_order"])
    assert abs(res["easy"] - REF["port_as_is_file_order"]["easy"]) > 0.05
    _assert_ref(wf.evaluate(PRED, GT), REF["matlab_file_order"])  # in memory, (event, name) keys
    _assert_ref(wf.evaluate({f"{e}/{n}.jpg": v for (e, n), v in PRED.items()}, GT), REF["matlab_file_order"])


def test_missing_empty_and_unknown_files(tmp_path, pred_folder):
    var = REF["variant_missing_empty_unknown"]
    folder = tmp_path / "p"
    shutil.copytree(pred_folder, folder)
    ev, name = var["missing"].split("/")
    (folder / ev / f"{name}.txt").unlink()
    ev, name = var["empty"].split("/")
    wf.write_submission(folder, ev, name, np.zeros((0, 5)))
    for key, rows in var["unknown"].items():
        wf.write_submission(folder, *key.split("/"), np.array(rows))
    with pytest.warns(UserWarning) as caught:
        res = wf.evaluate(folder, GT)
    text = " ".join(str(w.message) for w in caught)
    assert var["missing"] in text and "not in the ground truth" in text
    _assert_ref(res, REF["matlab_missing_empty_unknown"])
    assert (res["n_missing"], res["n_unknown"]) == (1, 1)
    with pytest.warns(UserWarning):
        _assert_ref(wf.evaluate(folder, GT, iou_thresh=0.4), REF["matlab_missing_empty_unknown_iou0.4"])
    # the same through a dict: the missing image is simply absent
    d = {k: v for k, v in PRED.items() if "/".join(k) != var["missing"]}
    d[tuple(var["empty"].split("/"))] = np.zeros((0, 5))
    d.update({k: np.array(v) for k, v in var["unknown"].items()})
    with pytest.warns(UserWarning):
        _assert_ref(wf.evaluate(d, GT), REF["matlab_missing_empty_unknown"])


def test_shuffling_rows_changes_nothing():
    rng = np.random.default_rng(0)
    shuffled = {k: v[rng.permutation(len(v))] for k, v in PRED.items()}
    assert _aps(wf.evaluate(shuffled, GT)) == _aps(wf.evaluate(PRED, GT))


def _hand_gt(tmp_path: Path) -> Path:
    entries = {"0--Parade": {"0_Parade_a_1": {"boxes": [[0, 0, 10, 10], [100, 100, 10, 10]], "easy": [0]}}}
    wf.write_ground_truth(tmp_path / "gt", entries)
    return tmp_path / "gt"


def test_hand_worked(tmp_path):
    """Faces A (counted everywhere) and B (ignored in easy). Detections: B exact 0.9, a false positive 0.7,
    A exact 0.5 -> normalised 1.0, ~0.5, 0.0.
    easy: the hit on B is no proposal; above 0 only the false positive is proposed (precision 0, recall 0); at
    t = 0 two proposals, A recalled: precision 1/2, recall 1 -> AP = 1 * 1/2 = 0.5.
    medium/hard: B recalled at the top (P 1, R 1/2), then P 1/2 R 1/2, at t = 0 P 2/3 R 1
    -> AP = 1/2 * 1 + 1/2 * 2/3 = 5/6."""
    gt = _hand_gt(tmp_path)
    dets = np.array([[0, 0, 10, 10, 0.5], [300, 300, 10, 10, 0.7], [100, 100, 10, 10, 0.9]])
    res = wf.evaluate({("0--Parade", "0_Parade_a_1"): dets}, gt)
    assert res["easy"] == pytest.approx(0.5, abs=1e-12)
    assert res["medium"] == pytest.approx(5 / 6, abs=1e-12) and res["hard"] == pytest.approx(5 / 6, abs=1e-12)
    curves = wf.pr_curves({("0--Parade", "0_Parade_a_1"): dets}, gt)
    hard = curves["hard"]
    assert hard.faces == 2 and hard.recall[0] == 0.5 and hard.precision[0] == 1.0 and hard.recall[-1] == 1.0
    assert hard.precision[-1] == pytest.approx(2 / 3) and np.isnan(curves["easy"].precision[0])


def _perfect(gt: wf.GroundTruth) -> dict:
    rng = np.random.default_rng(1)
    out = {}
    for key, boxes in zip(gt.images, gt.boxes["hard"]):
        out[key] = np.column_stack([boxes, np.round(rng.uniform(0.3, 1.0, len(boxes)), 3)])
    return out


def test_perfect_detector_gives_one_and_duplicates_lower_precision():
    gt = wf.load_ground_truth(GT)
    perfect = _perfect(gt)
    res = wf.evaluate(perfect, gt)
    for s in wf.SETTINGS:
        assert res[s] == pytest.approx(1.0, abs=1e-12), s
    # a duplicate of the best-scoring box (same score) is a false positive at the top of the ranking
    key = max(perfect, key=lambda k: perfect[k][:, 4].max() if len(perfect[k]) else -1)
    top = perfect[key][np.argmax(perfect[key][:, 4])]
    dup = dict(perfect)
    dup[key] = np.vstack([perfect[key], top])
    before, after = wf.pr_curves(perfect, gt)["hard"], wf.pr_curves(dup, gt)["hard"]
    assert np.all(after.precision[~np.isnan(before.precision)] <= before.precision[~np.isnan(before.precision)])
    assert np.nanmin(after.precision - before.precision) < 0
    assert np.array_equal(after.recall, before.recall)
    assert wf.evaluate(dup, gt)["hard"] < 1.0


def test_ground_truth_writer_round_trip(tmp_path):
    """Rebuild the committed (plain-scipy) ground truth with write_ground_truth: same structure, same numbers."""
    gt = wf.load_ground_truth(GT)
    entries: dict = {}
    for i, (ev, name) in enumerate(gt.images):
        entries.setdefault(ev, {})[name] = {"boxes": gt.boxes["hard"][i], **{s: gt.keep[s][i] for s in wf.SETTINGS}}
    paths = wf.write_ground_truth(tmp_path / "gt", entries)
    assert sorted(p.name for p in paths.values()) == sorted(wf.GT_FILES.values())
    for name in wf.GT_FILES.values():
        a, b = loadmat(str(GT / name)), loadmat(str(tmp_path / "gt" / name))
        assert {k for k in a if not k.startswith("__")} == {k for k in b if not k.startswith("__")}
        for i in range(len(a["event_list"])):
            assert a["event_list"][i][0][0] == b["event_list"][i][0][0]
            for j in range(len(a["file_list"][i][0])):
                assert a["file_list"][i][0][j][0][0] == b["file_list"][i][0][j][0][0]
                assert np.array_equal(a["face_bbx_list"][i][0][j][0], b["face_bbx_list"][i][0][j][0])
                if "gt_list" in a:
                    assert np.array_equal(a["gt_list"][i][0][j][0].ravel(), b["gt_list"][i][0][j][0].ravel())
    _assert_ref(wf.evaluate(PRED, tmp_path / "gt"), REF["matlab_file_order"])


def test_writer_defaults_and_event_order(tmp_path):
    wf.write_ground_truth(tmp_path, {"2--B": {"2_b_1.jpg": [[1, 2, 3, 4]]}, "10--A": {"10_a_1": np.zeros((0, 4))}})
    gt = wf.load_ground_truth(tmp_path)
    assert gt.images == [("10--A", "10_a_1"), ("2--B", "2_b_1")]  # lexicographic events, .jpg dropped
    assert [k.tolist() for k in gt.keep["easy"]] == [[], [0]]  # a setting left out: every face counts
    with pytest.raises(MetricInputError, match="indices"):
        wf.write_ground_truth(tmp_path, {"0--A": {"x": {"boxes": [[1, 2, 3, 4]], "easy": [1]}}})


def test_submission_format(tmp_path):
    dets = np.array([[1.25, 2.35, 10, 20.05, 0.12345], [-3.04, 0, 5.55, 6, 1]])
    path = wf.write_submission(tmp_path, "0--Parade", "0_Parade_x_1.jpg", dets)
    assert path == tmp_path / "0--Parade" / "0_Parade_x_1.txt"
    assert path.read_text() == ("0--Parade/0_Parade_x_1.jpg\n2\n"
                                "1.2 2.4 10.0 20.1 0.123\n-3.0 0.0 5.5 6.0 1.000\n")
    back = wf.read_prediction_file(path)
    assert np.array_equal(back, wf.as_written(dets))
    wf.write_submission(tmp_path, "0--Parade", "empty", np.zeros((0, 5)))
    assert (tmp_path / "0--Parade" / "empty.txt").read_text() == "0--Parade/empty.jpg\n0\n"


def test_as_written_equals_string_formatting():
    rng = np.random.default_rng(5)
    v = np.concatenate([rng.uniform(-3000, 3000, 5000), np.arange(-400, 400) / 20, np.arange(0, 2000) / 2000 + 5e-4])
    d = np.column_stack([v, v, v, v, v])
    got = wf.as_written(d)
    assert np.array_equal(got[:, 0], [float(f"{x:.1f}") for x in v])
    assert np.array_equal(got[:, 4], [float(f"{x:.3f}") for x in v])


def test_quantize_makes_memory_equal_files(tmp_path):
    rng = np.random.default_rng(2)
    noisy = {k: v + np.column_stack([rng.uniform(-0.04, 0.04, (len(v), 4)), rng.uniform(-4e-4, 4e-4, len(v))])
             for k, v in PRED.items()}
    folder = _write_folder(tmp_path / "p", noisy)
    assert _aps(wf.evaluate(noisy, GT)) == _aps(wf.evaluate(folder, GT))


def test_malformed_predictions(tmp_path):
    gt = _hand_gt(tmp_path)
    folder = tmp_path / "pred"
    f = folder / "0--Parade" / "0_Parade_a_1.txt"
    f.parent.mkdir(parents=True)
    f.write_text("0--Parade/0_Parade_a_1.jpg\n2\n1 2 3 4 0.5\n1 2 3 oops 0.5\n")
    with pytest.raises(MetricInputError, match=r"0_Parade_a_1.txt:4: expected 'x y w h score'"):
        wf.evaluate(folder, gt)
    f.write_text("0--Parade/0_Parade_a_1.jpg\n2\n1 2 3 4 0.5\n1 2 3 4\n")
    with pytest.raises(MetricInputError, match=r":4:"):
        wf.evaluate(folder, gt)
    f.write_text("0--Parade/0_Parade_a_1.jpg\n3\n1 2 3 4 0.5\n")
    with pytest.raises(MetricInputError, match="announces 3 boxes but has 1"):
        wf.evaluate(folder, gt)
    f.write_text("0--Parade/0_Parade_a_1.jpg\nmany\n")
    with pytest.raises(MetricInputError, match=r"0_Parade_a_1.txt:2: expected the number of boxes"):
        wf.evaluate(folder, gt)
    f.write_text("0--Parade/0_Parade_a_1.jpg\n1\n0 0 10 10 0.9\n5 5 10 10 0.8\n")
    with pytest.warns(UserWarning, match="ignored"):  # like MATLAB, only `count` rows are read
        assert len(wf.read_prediction_file(f)) == 1
    with pytest.raises(MetricInputError, match=r"\(K, 5\)"):
        wf.evaluate({("0--Parade", "0_Parade_a_1"): np.zeros((2, 4))}, gt)
    with pytest.raises(MetricInputError, match="not found"):
        wf.evaluate(tmp_path / "nope", gt)
    with pytest.raises(DatasetError, match="wider_face_val.mat"):
        wf.evaluate({}, tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        wf.evaluate({}, tmp_path / "nope")


def test_accumulator(tmp_path):
    acc = wf.WiderFaceAccumulator(GT)
    acc_part = wf.WiderFaceAccumulator(GT, predicted_only=True)
    items = list(PRED.items())
    for (ev, name), d in items:
        acc.update(Sample(f"{ev}/{name}", f"/x/images/{ev}/{name}.jpg", info={"event": ev}), d)
    for (ev, name), d in items[:10]:
        acc_part.update(Sample(name, f"/x/images/{ev}/{name}.jpg"), d)  # event from the parent folder
    _assert_ref(acc.compute(), REF["matlab_file_order"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing missing in a predicted-only run
        part = acc_part.compute()
    gt = wf.load_ground_truth(GT)
    assert part["n_images"] == 10
    assert _aps(part) == _aps(wf.evaluate(dict(items[:10]), gt.subset(k for k, _ in items[:10])))


def test_iou_exactly_at_threshold_counts(tmp_path):
    """boxoverlap.m with +1 widths: face 0 0 9 9 (area 100) and detection 0 0 9 4 (area 50, all inside) give
    IoU 50 / 100 = 0.5 exactly, which is a hit (>=). A second detection keeps max > min for the normalisation."""
    wf.write_ground_truth(tmp_path, {"0--A": {"0_a_1": [[0, 0, 9, 9], [500, 500, 20, 20]]}})
    dets = np.array([[0, 0, 9, 4, 0.9], [0, 300, 9, 9, 0.1]])
    assert wf.evaluate({("0--A", "0_a_1"): dets}, tmp_path)["hard"] == pytest.approx(0.5)  # 1 of 2 faces, P = 1
    dets[0, 3] = 3.9  # IoU just below 0.5: no hit
    assert wf.evaluate({("0--A", "0_a_1"): dets}, tmp_path)["hard"] == 0.0


def test_scores_outside_unit_range_are_normalised_with_their_own_min():
    """norm_score.m starts from realmax/realmin('single'), so scaling every score by 64 (exact in binary, all
    scores then > 1) changes nothing; the ports' start values (min 1, max 0) would keep min = 1 here and move
    detections between the 1000 threshold buckets (continuous scores, so that buckets matter)."""
    rng = np.random.default_rng(3)
    fine = {k: np.column_stack([v[:, :4], rng.uniform(0.02, 1.0, len(v))]) for k, v in PRED.items()}
    scaled = {k: np.column_stack([v[:, :4], v[:, 4] * 64]) for k, v in fine.items()}
    assert min(v[:, 4].min() for v in scaled.values() if len(v)) > 1
    assert _aps(wf.evaluate(scaled, GT, quantize=False)) == _aps(wf.evaluate(fine, GT, quantize=False))


# ---------------------------------------------------------------------------------------------------- issue 22
@pytest.mark.parametrize("event, image", [("../evil", "x"), ("/tmp", "abs_evil"), ("0--A", "../../evil"),
                                          ("0--A", "/tmp/abs_evil"), ("..", "x")])
def test_2_a_submission_file_is_never_written_outside_its_folder(tmp_path, event, image):
    folder = tmp_path / "run" / "submission"
    with pytest.raises(DatasetError, match="not a plain file name"):
        wf.write_submission(folder, event, image, np.zeros((0, 5)))
    assert not any(p.suffix == ".txt" for p in tmp_path.rglob("*")) and not Path("/tmp/abs_evil.txt").exists()


def test_2_the_accumulator_refuses_crafted_ground_truth_names_before_writing(tmp_path):
    """A GroundTruth built in memory (not read from the checked .mat files) holding '../evil': nothing is written
    outside the submission folder, and no .txt anywhere."""
    gt = wf.GroundTruth([("0--A", "0_a_1"), ("../..", "evil")], {s: [np.zeros((0, 4))] * 2 for s in wf.SETTINGS},
                        {s: [np.zeros(0, np.int64)] * 2 for s in wf.SETTINGS})
    acc = wf.WiderFaceAccumulator(gt)
    (tmp_path / "run").mkdir()
    with pytest.raises(DatasetError, match=r"event name '\.\./\.\.' is not a plain file name"):
        acc.write_artifacts(tmp_path / "run")
    assert not any(p.suffix == ".txt" for p in tmp_path.rglob("*"))


def test_2_ground_truth_names_that_are_not_plain_are_refused_when_loaded(tmp_path):
    wf.write_ground_truth(tmp_path, {"0--A": {"/tmp/abs_evil": [[1, 2, 3, 4]]}})
    with pytest.raises(DatasetError, match=r"wider_face_val.mat: image name '/tmp/abs_evil' is not a plain file name"):
        wf.load_ground_truth(tmp_path)
