"""M2Det recipe, COCO 2014 minival reader, OpenCV preprocessing and postprocessing (docs/models/m2det.md 5-7, 9)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from zooinfer import recipes
from zooinfer.datasets.coco import LAYOUT_MINIVAL2014, build_coco2014_sample, coco2014_sample_root, open_coco2014_minival
from zooinfer.errors import DatasetError
from zooinfer.models.m2det.recipe import input_array
from zooinfer.metrics.coco import COCO80_TO_91

from test_m2det_head import DATA, _formula_inputs

R = recipes.get("m2det")


@pytest.fixture(scope="module")
def sample() -> Path:
    return coco2014_sample_root()


def test_recipe_facts():
    assert R.input_shape == (3, 512, 512) and R.input_names == ["image"] and R.opset == 11
    assert R.output_names == ["scores", "boxes"]  # scores = loc, boxes = probabilities (pitfall 1)
    assert R.dynamic_batch and R.batch_dim_param == "-1"
    assert R.checkpoint_file == "m2det512_vgg.pth" and R.published.accuracy == {"AP": 0.378}
    assert {p.hardware.split(" (")[0] for p in R.published.performance} >= {"Ascend 310", "Ascend 310P", "NVIDIA T4"}
    assert R.published.performance[1].fps[4] == 54.707
    assert any("vgg16_reducedfc.pth" in n for n in R.notes)
    assert R.atc["out_nodes"].startswith("/softmax/Softmax:0;")  # probabilities first, as the guide's OM
    assert len(R.headline) == 12 and R.headline[0] == "AP"


# ------------------------------------------------------------------------------------------------ reader
def test_minival_reader_on_the_sample(sample):
    ds = open_coco2014_minival(sample)
    assert (sample / "images" / "val2014").is_dir() and (sample / "annotations" / "instances_minival2014.json").is_file()
    ids = [s.info["image_id"] for s in ds]
    assert ids == sorted(ids) == list(range(1, 9))  # ascending ids, although the file lists them in another order
    assert [s.key for s in ds][:2] == ["COCO_val2014_000000000001", "COCO_val2014_000000000002"]
    data = json.loads((sample / "annotations" / "instances_minival2014.json").read_text())
    assert [im["id"] for im in data["images"]] != ids
    assert 7 in ids and not any(a["image_id"] == 7 for a in data["annotations"])  # no annotation: still evaluated
    assert ds.extra["category_ids"] == list(COCO80_TO_91)
    assert ds.extra["img_ids"] == ids
    for s in ds:
        img = cv2.imread(s.path)
        entry = next(im for im in data["images"] if im["id"] == s.info["image_id"])
        assert img.shape[:2] == (entry["height"], entry["width"])


def test_reader_layout_errors(tmp_path, sample):
    with pytest.raises(DatasetError, match="COCO data root not found"):
        open_coco2014_minival(tmp_path / "nowhere")
    (tmp_path / "annotations").mkdir()
    with pytest.raises(DatasetError) as e:
        open_coco2014_minival(tmp_path)
    assert "images/val2014" in str(e.value) and LAYOUT_MINIVAL2014.splitlines()[1] in str(e.value)
    (tmp_path / "images" / "val2014").mkdir(parents=True)
    with pytest.raises(DatasetError, match="instances_minival2014.json"):
        open_coco2014_minival(tmp_path)
    data = json.loads((sample / "annotations" / "instances_minival2014.json").read_text())
    data["categories"] = data["categories"][:79]
    (tmp_path / "annotations" / "instances_minival2014.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="79 categories"):
        open_coco2014_minival(tmp_path)


def test_sample_builder_layout(tmp_path):
    build_coco2014_sample(tmp_path / "s")
    names = sorted(p.name for p in (tmp_path / "s" / "images" / "val2014").iterdir())
    assert names[0] == "COCO_val2014_000000000001.jpg" and len(names) == 8
    data = json.loads((tmp_path / "s" / "annotations" / "instances_minival2014.json").read_text())
    assert [c["id"] for c in data["categories"]] == list(COCO80_TO_91)
    assert all(a["area"] > 0 for a in data["annotations"])


# ------------------------------------------------------------------------------------------------ preprocessing
def test_preprocess_bgr_means_no_scaling(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)  # BGR as OpenCV holds it; 512 -> resize is identity
    path = tmp_path / "COCO_val2014_000000000042.png"
    cv2.imwrite(str(path), img)
    (x,), meta = R.preprocess(str(path))
    assert x.shape == (3, 512, 512) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_array_equal(x[0], img[:, :, 0].astype(np.float32) - 104)  # channel 0 = blue - 104
    np.testing.assert_array_equal(x[1], img[:, :, 1].astype(np.float32) - 117)
    np.testing.assert_array_equal(x[2], img[:, :, 2].astype(np.float32) - 123)
    assert meta["image_id"] == 42 and (meta["width"], meta["height"]) == (512, 512)


def test_preprocess_resize_is_opencv_linear_on_uint8(tmp_path):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), img)
    x, (h, w) = input_array(path)
    assert (h, w) == (300, 200)
    want = cv2.resize(img, (512, 512), interpolation=cv2.INTER_LINEAR).astype(np.float32) - [104, 117, 123]
    np.testing.assert_array_equal(x, want.transpose(2, 0, 1))
    assert np.all(x == np.round(x))  # resized as uint8 (integers), then mean-subtracted
    pil = np.asarray(Image.fromarray(img[:, :, ::-1]).resize((512, 512), Image.BILINEAR))[:, :, ::-1]
    assert not np.array_equal(x[0] + 104, pil[:, :, 0].astype(np.float32))  # not Pillow's antialiased bilinear


def test_preprocess_grayscale_and_unreadable(tmp_path):
    gray = np.arange(512 * 512, dtype=np.uint32).reshape(512, 512).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    x, _ = input_array(tmp_path / "g.png")
    np.testing.assert_array_equal(x[0] + 104, x[2] + 123)
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="cannot decode"):
        R.preprocess(str(tmp_path / "bad.jpg"))


def test_meta_size_comes_from_the_decoded_image(tmp_path, sample):
    root = tmp_path / "r"
    shutil.copytree(sample, root)
    ann = root / "annotations" / "instances_minival2014.json"
    data = json.loads(ann.read_text())
    for im in data["images"]:
        im["width"], im["height"] = 1, 1  # the json lies; the guide reads sizes from the JPEG
    ann.write_text(json.dumps(data))
    ds = open_coco2014_minival(root)
    meta = R.meta_for(ds[0], R.preprocess(ds[0].path)[1])  # the dataset's id and categories, decoded sizes
    assert (meta["width"], meta["height"]) == (600, 400) and meta["image_id"] == 1
    assert meta["category_ids"] == tuple(COCO80_TO_91)


# ------------------------------------------------------------------------------------------------ postprocessing
def test_postprocess_matches_upstream_rows_in_either_output_order():
    ref = json.loads((DATA / "postprocess_ref.json").read_text())
    loc, probs = _formula_inputs()
    meta = {"image_id": 42, "width": ref["width"], "height": ref["height"], "category_ids": tuple(COCO80_TO_91)}
    onnx_order = R.postprocess([loc, probs], meta)  # ONNX: scores (= loc), boxes (= probabilities)
    om_order = R.postprocess([probs.ravel(), loc.ravel()], meta)  # OM with --out_nodes, read from flat .bin files
    assert onnx_order == om_order
    want = [{"image_id": 42, "category_id": COCO80_TO_91[j - 1], "bbox": [x, y, w, h], "score": s}
            for j, x, y, w, h, s in ref["rows_j_x_y_w_h_score"]]
    assert onnx_order == want
    rows = R.compact(onnx_order)
    assert rows.shape == (300, 7) and rows[0, 6] == 1 and rows[-1, 6] == 90


def test_postprocess_rejects_wrong_outputs():
    with pytest.raises(ValueError, match="2 outputs"):
        R.postprocess([np.zeros((32760, 4), np.float32)], {})
    with pytest.raises(ValueError, match="32760"):
        R.postprocess([np.zeros((8732, 4), np.float32), np.zeros((8732, 81), np.float32)], {})


def test_accumulator_on_the_sample(sample):
    """Ground-truth boxes given back as detections (minus the +1 the guide adds) score AP 1 on the sample; the image
    without annotations and the crowd-only one are evaluated too."""
    ds = R.open_dataset(None)
    assert ds.embedded and len(ds) == 8
    acc = R.new_accumulator(ds)
    gt = ds.extra["annotations"]
    for s in ds:
        dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
                for a in gt["annotations"] if a["image_id"] == s.info["image_id"] and not a["iscrowd"]]
        acc.update(s, dets)
    m = acc.compute()
    assert m["AP"] == pytest.approx(1.0) and m["n_images"] == 8


# ------------------------------------------------------------------------------------------------ pipeline
class _FormulaSession:
    """A backend session returning the formula outputs for every image, laid out as the ONNX graph: loc
    (N, 32760, 4) and probabilities (N * 32760, 81), image-major."""

    name, device, input_shape = "formula", "cpu", (None, 3, 512, 512)

    def __init__(self):
        self.loc, self.probs = _formula_inputs()

    def run(self, batch):
        n = batch.shape[0]
        return [np.repeat(self.loc[None], n, axis=0), np.tile(self.probs, (n, 1))]


def test_pipeline_hands_each_image_its_outputs():
    from zooinfer import pipeline

    ds = R.open_dataset(None).subset(3)
    res = pipeline.run(R, ds, _FormulaSession(), bs=2, progress=False, keep=3)
    loc, probs = _formula_inputs()
    for sample, pred in res.kept:
        meta = R.meta_for(sample, R.preprocess(sample.path)[1])
        assert pred == R.postprocess([loc, probs], meta)
    assert res.n_done == 3 and res.metrics["n_images"] == 3
