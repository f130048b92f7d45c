"""WIDER FACE val reader, the guide's preprocessing (original + flipped letterbox), the embedded sample, and the
recipe's accumulator / submission writer read back by the metric (hand-worked APs), through the pipeline."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zooinfer import pipeline
from zooinfer.datasets.widerface import LAYOUT, open_widerface_val, widerface_sample_root
from zooinfer.models.pyramidbox.recipe import preprocess as preprocess_pyramidbox
from zooinfer.errors import DatasetError
from zooinfer.metrics import widerface
from zooinfer.models.pyramidbox.network import feature_sizes
from zooinfer.models.pyramidbox import recipe as pb

PAD = np.array([-123.0, -117.0, -104.0], dtype=np.float32)


def _save(tmp_path: Path, arr: np.ndarray, name: str = "img.png", mode: str | None = None) -> Path:
    p = tmp_path / name
    Image.fromarray(arr, mode=mode).save(p)  # PNG: lossless, so pixel values are exact
    return p


# ------------------------------------------------------------------------------------------------ preprocessing
def test_letterbox_999_and_mean_rgb(tmp_path):
    """683 x 456 -> scale 0.683: int(683 / 0.683) = 999 columns, int(456 / 0.683) = 667 rows, image top-left,
    zero padding before the mean: R-123, G-117, B-104 inside, (-123, -117, -104) outside; no /255."""
    p = _save(tmp_path, np.full((456, 683, 3), (200, 100, 50), dtype=np.uint8))
    (x, xf), meta = preprocess_pyramidbox(p)
    assert x.shape == xf.shape == (3, 1000, 1000) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, :667, :999], np.broadcast_to(np.float32([77, -17, -54])[:, None, None],
                                                                    (3, 667, 999)))
    np.testing.assert_array_equal(x[:, :, 999], np.broadcast_to(PAD[:, None], (3, 1000)))
    np.testing.assert_array_equal(x[:, 667:, :], np.broadcast_to(PAD[:, None, None], (3, 333, 1000)))
    assert meta == {"event": tmp_path.name, "name": "img", "height": 456, "width": 683, "canvas": 1000}


def test_flip_before_letterbox_and_portrait_pads_right(tmp_path):
    """100 wide x 200 high, left half red, right half blue, canvas 200 (scale 1: no interpolation). The original
    view has red at x < 50, the flipped view blue; both pad columns 100..199 on the right."""
    img = np.zeros((200, 100, 3), dtype=np.uint8)
    img[:, :50] = (255, 0, 0)
    img[:, 50:] = (0, 0, 255)
    (x, xf), meta = preprocess_pyramidbox(_save(tmp_path, img), canvas=200)
    assert x.shape == (3, 200, 200) and meta["canvas"] == 200
    np.testing.assert_array_equal(x[:, 0, 0], [255 - 123, -117, -104])
    np.testing.assert_array_equal(xf[:, 0, 0], [-123, -117, 255 - 104])
    np.testing.assert_array_equal(x[:, 5, 60], xf[:, 5, 30])
    np.testing.assert_array_equal(x[:, :, 100:], np.broadcast_to(PAD[:, None, None], (3, 200, 100)))
    np.testing.assert_array_equal(xf[:, :, 100:], np.broadcast_to(PAD[:, None, None], (3, 200, 100)))


def test_grayscale_becomes_three_equal_channels(tmp_path):
    g = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) % 251
    (x, _), _ = preprocess_pyramidbox(_save(tmp_path, g.astype(np.uint8), mode="L"), canvas=64)
    np.testing.assert_array_equal(x[0] + 123, x[1] + 117)
    np.testing.assert_array_equal(x[0] + 123, x[2] + 104)
    np.testing.assert_array_equal(x[0] + 123, g.astype(np.float32))


def test_unreadable_image_raises(tmp_path):
    p = tmp_path / "broken.jpg"
    p.write_bytes(b"not a jpeg")
    with pytest.raises(Exception):
        preprocess_pyramidbox(p)


# ------------------------------------------------------------------------------------------------ reader
@pytest.fixture(scope="module")
def sample_root() -> Path:
    return widerface_sample_root()


def test_embedded_sample_layout(sample_root):
    ds = pb.RECIPE.open_dataset(None)
    assert ds.embedded and len(ds) == 4
    assert [(s.info["event"], s.key) for s in ds] == [
        ("0--Parade", "0_Parade_Parade_0_43"), ("0--Parade", "0_Parade_marchingband_1_5"),
        ("12--Group", "12_Group_Group_12_Group_Group_12_10"),
        ("9--Press_Conference", "9_Press_Conference_Press_Conference_9_3")]
    assert all(Path(s.path).is_file() and s.path.endswith(f"{s.info['event']}/{s.key}.jpg") for s in ds)
    assert [Path(p).parent.name for p, _ in ds.rejected] == ["13--Interview"]
    gt = ds.extra["ground_truth"]
    assert gt.events == sorted(gt.events)  # the guide pairs sorted(event_list) with file_list (pitfall 16)
    assert sum(len(b) for b in gt.boxes["hard"]) == 48 and sum(len(k) for k in gt.keep["easy"]) == 20
    sizes = {}
    for s in ds:
        with Image.open(s.path) as im:
            sizes[s.key] = (im.size, im.mode)
    assert sizes["0_Parade_marchingband_1_5"] == ((1024, 768), "RGB")
    assert sizes["12_Group_Group_12_Group_Group_12_10"] == ((683, 456), "L")
    assert sizes["9_Press_Conference_Press_Conference_9_3"][0] == (320, 512)
    assert (sample_root / "wider_face_split" / "wider_face_val.mat").is_file()


def test_missing_ground_truth_and_images(tmp_path, sample_root):
    root = tmp_path / "wider"
    shutil.copytree(sample_root / "WIDER_val", root / "WIDER_val")
    with pytest.raises(DatasetError, match="eval_tools/ground_truth"):
        open_widerface_val(root)
    shutil.copytree(sample_root / "eval_tools", root / "eval_tools")
    (root / "eval_tools" / "ground_truth" / "wider_hard_val.mat").unlink()
    with pytest.raises(DatasetError, match="wider_hard_val.mat"):
        open_widerface_val(root)
    with pytest.raises(DatasetError, match="WIDER_val/images"):
        open_widerface_val(tmp_path / "nowhere")
    assert "WIDER_val/images/<event>/<image>.jpg" in LAYOUT


# ------------------------------------------------------------------------------------------------ metric round trip
def _gt_predictions(gt, drop_below: float = 0.0) -> dict:
    """Every ground-truth box as a detection (x y w h), distinct descending scores; faces smaller than
    ``drop_below`` pixels left out."""
    preds, score = {}, 1.0
    for key, boxes in zip(gt.images, gt.boxes["hard"]):
        rows = []
        for b in boxes:
            if b[3] >= drop_below:
                rows.append([*b, score])
                score -= 0.01
        preds[key] = np.array(rows).reshape(-1, 5)
    return preds


def test_submission_writer_read_back_by_metric(tmp_path):
    """Perfect detections give AP 1; leaving out the 16 faces of 14 px (hard only) gives hard AP = recall 32/48
    with precision 1 throughout = 2/3, easy and medium stay 1."""
    ds = pb.RECIPE.open_dataset(None)
    gt_dir = ds.extra["gt_dir"]
    for drop, expect in ((0.0, (1.0, 1.0, 1.0)), (15.0, (1.0, 1.0, 2 / 3))):
        acc = pb.RECIPE.new_accumulator(ds)
        for s in ds:
            acc.update(s, _gt_predictions(ds.extra["ground_truth"], drop)[s.target])
        folder = acc.write_submission(tmp_path / f"sub{drop}")
        got = widerface.evaluate(folder, gt_dir)
        assert (got["easy"], got["medium"], got["hard"]) == pytest.approx(expect, abs=1e-12)
        assert got["n_missing"] == 0
        mem = acc.compute()
        assert (mem["easy"], mem["medium"], mem["hard"]) == pytest.approx(expect, abs=1e-12)
    lines = (folder / "0--Parade" / "0_Parade_Parade_0_43.txt").read_text().splitlines()
    assert lines == ["0--Parade/0_Parade_Parade_0_43.jpg", "1", "184.0 66.0 90.0 108.0 0.980"]  # after the 2 faces of marchingband_1_5


class FakeSession:
    """Deterministic stand-in for the network at a 64x64 canvas: outputs derived from each view's pixels."""

    name, device, input_shape = "fake", "cpu", None

    def __init__(self) -> None:
        self.rows_seen = 0

    def run(self, batch):
        n = batch.shape[0]
        self.rows_seen += n
        p = sum(h * w for h, w in feature_sizes(batch.shape[2], batch.shape[3]))
        loc, conf = np.empty((n, p, 4), np.float32), np.empty((n, p, 2), np.float32)
        for i in range(n):
            rng = np.random.default_rng(int(abs(batch[i]).sum()) % 2**32)
            loc[i] = rng.normal(0, 0.5, (p, 4))
            f = rng.uniform(0, 0.3, p).astype(np.float32)
            conf[i] = np.stack([1 - f, f], 1)
        return [loc, conf]


def test_pipeline_two_views_corrupt_image_and_limit(tmp_path, sample_root):
    root = tmp_path / "wider"
    shutil.copytree(sample_root, root)
    bad = root / "WIDER_val" / "images" / "12--Group" / "12_Group_Group_12_Group_Group_12_10.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    recipe = pb.make_recipe(64)
    ds = recipe.open_dataset(str(root))
    sess = FakeSession()
    with pytest.warns(UserWarning, match="1 of 4 images have no predictions"):
        res = pipeline.run(recipe, ds, sess, bs=3, progress=False, keep=4)
    assert res.n_done == 3 and [k for k, _, _ in res.skipped] == ["12_Group_Group_12_Group_Group_12_10"]
    assert sess.rows_seen == 6  # two views per readable image
    assert res.metrics["n_images"] == 4 and res.metrics["n_missing"] == 1  # its 44 faces still count as missed
    for sample, pred in res.kept:
        assert pred.ndim == 2 and pred.shape[1] == 5 and len(pred) <= 750
    folder = res.accumulator.write_submission(tmp_path / "sub")
    assert (folder / "12--Group" / "12_Group_Group_12_Group_Group_12_10.txt").read_text().splitlines()[1] == "0"
    from_files = widerface.evaluate(folder, ds.extra["gt_dir"])
    for s in widerface.SETTINGS:
        assert from_files[s] == pytest.approx(res.metrics[s], abs=1e-12)
    part = pipeline.run(recipe, ds, FakeSession(), bs=2, progress=False, limit=2)
    assert part.metrics["n_images"] == 2 and part.metrics["n_ground_truth_images"] == 4
