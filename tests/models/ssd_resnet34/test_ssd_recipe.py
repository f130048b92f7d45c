"""SSD-ResNet34 data side: COCO 2017 reader, the guide's selection and bbox-only view, preprocessing, the guide's
postprocessing (reference rows from its own script), the metric wiring and missing images."""
from __future__ import annotations

import copy
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zooinfer import pipeline, recipes
from zooinfer.datasets import coco
from zooinfer.errors import DatasetError
from zooinfer.metrics.coco import COCO80_TO_91
from zooinfer.models.ssd_resnet34 import recipe as ssd_recipe
from zooinfer.models.ssd_resnet34.recipe import input_array

R = recipes.get("ssd_resnet34")
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def sample_root() -> Path:
    return coco.coco_sample_root()


@pytest.fixture(scope="module")
def raw(sample_root) -> dict:
    with open(sample_root / "annotations" / "instances_val2017.json") as f:
        return json.load(f)


# ------------------------------------------------------------------------------------------------ embedded sample
def test_embedded_sample_has_the_official_structure(sample_root, raw):
    assert list(raw) == ["info", "licenses", "images", "annotations", "categories"]
    assert [c["id"] for c in raw["categories"]] == list(COCO80_TO_91)
    assert [c["name"] for c in raw["categories"]][:4] == ["person", "bicycle", "car", "motorcycle"]
    assert raw["categories"][-1] == {"supercategory": "indoor", "id": 90, "name": "toothbrush"}
    for img in raw["images"]:
        assert set(img) == {"license", "file_name", "coco_url", "height", "width", "date_captured", "flickr_url", "id"}
        assert img["file_name"] == f"{img['id']:012d}.jpg"
        with Image.open(sample_root / "val2017" / img["file_name"]) as im:
            assert im.format == "JPEG" and im.size == (img["width"], img["height"])
    for a in raw["annotations"]:
        assert set(a) == {"segmentation", "area", "iscrowd", "image_id", "bbox", "category_id", "id"}
        x, y, w, h = a["bbox"]
        img = next(i for i in raw["images"] if i["id"] == a["image_id"])
        assert 0 <= x and 0 <= y and x + w <= img["width"] and y + h <= img["height"]
    crowd = [a for a in raw["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1 and set(crowd[0]["segmentation"]) == {"counts", "size"}
    assert sum(crowd[0]["segmentation"]["counts"][1::2]) == 130 * 120  # RLE of the 130x120 box
    modes = {Image.open(sample_root / "val2017" / i["file_name"]).mode for i in raw["images"]}
    assert modes == {"RGB", "L"}  # grayscale JPEGs too, as in COCO


def test_selection_order_and_bbox_only_view(raw):
    ds = R.open_dataset(None)
    assert ds.embedded and len(ds) == 7
    # annotation-file order, the image without annotations (id 7) skipped, the crowd-only image (id 4) kept
    assert [s.info["image_id"] for s in ds] == [3, 1, 6, 2, 5, 8, 4]
    assert [s.key for s in ds][:2] == ["000000000003", "000000000001"]
    assert ds.extra["img_ids"] == [3, 1, 6, 2, 5, 8, 4] and ds.extra["n_images_in_file"] == 8
    # the view prepare-json.py --keep-keys writes, derived here from its source
    expected = copy.deepcopy(raw)
    for img in expected["images"]:
        for k in [k for k in img if k not in ("id", "file_name", "height", "width")]:
            del img[k]
    for a in expected["annotations"]:
        a["segmentation"] = []
        a["area"] = 1.0
    expected = {"images": expected["images"], "annotations": expected["annotations"],
                "categories": expected["categories"]}
    assert json.loads(json.dumps(ds.extra["annotations"])) == expected
    assert raw["annotations"][0]["area"] != 1.0  # the source is not modified


def test_preprocess_meta_from_annotations_and_fallback(tmp_path):
    ds = R.open_dataset(None)
    s = ds[0]
    (x,), meta = R.preprocess(s.path)
    meta = R.meta_for(s, meta)  # the annotation file's id and sizes over the decoded ones
    assert x.shape == (3, 300, 300) and x.dtype == np.float32 and x.flags.c_contiguous
    assert (meta["image_id"], meta["height"], meta["width"]) == (3, 512, 512)
    assert tuple(meta["category_ids"]) == COCO80_TO_91
    other = tmp_path / "000000000777.jpg"
    Image.new("RGB", (64, 48), (1, 2, 3)).save(other)
    _, meta = R.preprocess(str(other))
    assert (meta["image_id"], meta["height"], meta["width"]) == (777, 48, 64)


# ------------------------------------------------------------------------------------------------ bad input
def test_layout_errors_name_the_path(tmp_path):
    with pytest.raises(DatasetError, match="val2017"):
        R.open_dataset(str(tmp_path))
    (tmp_path / "val2017").mkdir()
    with pytest.raises(DatasetError, match=r"annotations/instances_val2017\.json"):
        R.open_dataset(str(tmp_path))


@pytest.mark.parametrize("content, key", [
    ({"images": [], "categories": []}, "'annotations'"),
    ({"annotations": [], "categories": []}, "'images'"),
    ({"images": [{"id": 1, "file_name": "a.jpg", "width": 3}], "annotations": [], "categories": []}, "'height'"),
    ({"images": [], "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "area": 1}],
      "categories": []}, "'iscrowd'"),
    ([["0--Parade/0_Parade_marchingband_1_849.jpg", 1]], "JSON list"),
])
def test_not_coco_annotation_file_names_the_missing_key(tmp_path, content, key):
    (tmp_path / "val2017").mkdir()
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(content))
    with pytest.raises(DatasetError, match="not a COCO instances annotation file") as e:
        R.open_dataset(str(tmp_path))
    assert key in str(e.value)


def test_not_json(tmp_path):
    (tmp_path / "val2017").mkdir()
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text("<html>")
    with pytest.raises(DatasetError, match="not a JSON file"):
        R.open_dataset(str(tmp_path))


# ------------------------------------------------------------------------------------------------ preprocessing
def _norm(v: float) -> np.ndarray:
    return ((np.float32(v) / np.float32(255) - MEAN.astype(np.float32)) / STD.astype(np.float32)).astype(np.float32)


def test_preprocess_uniform_and_grayscale(tmp_path):
    p = tmp_path / "u.png"
    Image.new("RGB", (123, 77), (10, 128, 250)).save(p)
    x = input_array(p)[0]
    for c, v in enumerate((10, 128, 250)):
        assert np.all(x[c] == _norm(v)[c])
    g = tmp_path / "g.png"
    Image.new("L", (50, 400), 200).save(g)
    x = input_array(g)[0]
    assert np.allclose(x * STD[:, None, None] + MEAN[:, None, None], 200 / 255, atol=1e-6)  # 3 equal channels


def test_preprocess_is_antialiased_bilinear(tmp_path):
    """900 -> 300 wide: Pillow's bilinear has support 3 input pixels per side, weights 1 (centre), 2/3, 1/3 (sum 3).
    Columns lit where x % 3 == 1 give 255/3 = 85 inside; OpenCV INTER_LINEAR would sample the lit column (255)."""
    a = np.zeros((300, 900, 3), np.uint8)
    a[:, 1::3] = 255
    p = tmp_path / "cols.png"
    Image.fromarray(a).save(p)
    x = input_array(p)[0]
    np.testing.assert_array_equal(x[:, :, 2:-2], np.broadcast_to(_norm(85)[:, None, None], (3, 300, 296)))


# ------------------------------------------------------------------------------------------------ postprocessing
REF = Path(__file__).parent / "data" / "postprocess_ref.npz"
CASES = ["dense", "sparse", "huge", "single", "none", "tiny"]


def _case(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Random (ploc, plabel) for one image; legacy RandomState streams are frozen across numpy versions."""
    seed = {"dense": 0, "sparse": 1, "huge": 2, "single": 3, "none": 5, "tiny": 4}[name]
    rs = np.random.RandomState(seed)
    ploc = (rs.standard_normal((4, 8732)) * 1.5).astype(np.float32)
    plabel = (rs.standard_normal((81, 8732)) * 2.5).astype(np.float32)
    if name == "sparse":  # 110 anchors pass the 0.05 filter
        plabel[0] += np.float32(15.0)
    elif name == "huge":  # boxes far beyond the image: classes interact through the coordinate trick
        ploc[2:, rs.rand(8732) < 0.3] += np.float32(25.0)
    elif name == "single":  # one anchor passes: its 80 classes are the 80 detections
        plabel[0] += np.float32(19.0)
    elif name == "none":
        plabel[0] += np.float32(40.0)
    elif name == "tiny":
        ploc[2:] -= np.float32(30.0)
    return ploc, plabel


@pytest.mark.parametrize("name", CASES)
def test_postprocess_equals_the_guides_script(name):
    """Expected rows: the guide's ssd_postprocess.py loop body (Ascend commit b3af873) run outside the project on
    these inputs with torch 2.13, its NMSOp being torchvision 0.6's batched_nms with the CPU nms kernel
    (torchvision/csrc/cpu/nms_cpu.cpp) compiled unchanged; identical with the kernel's unstable and a stable sort."""
    ref = np.load(REF)
    ploc, plabel = _case(name)
    np.testing.assert_allclose([ploc.astype(np.float64).sum(), plabel.astype(np.float64).sum()],
                               ref[f"{name}_input_sums"], rtol=1e-12)
    image_id, h, w = (int(v) for v in ref[f"{name}_meta"])
    meta = {"image_id": image_id, "height": h, "width": w, "category_ids": COCO80_TO_91}
    rows = ssd_recipe.detections([ploc, plabel], meta)
    expected = ref[f"{name}_rows"]
    assert rows.shape == expected.shape
    assert np.array_equal(rows, expected)
    dets = R.postprocess([ploc, plabel], meta)
    assert len(dets) == len(expected)
    for d, r in zip(dets, expected):
        assert d == {"image_id": image_id, "category_id": int(r[6]), "bbox": [float(v) for v in r[1:5]],
                     "score": float(r[5])}
    assert ploc.astype(np.float64).sum() == ref[f"{name}_input_sums"][0]  # inputs not modified


# ------------------------------------------------------------------------------------------------ metric wiring
def _gt_as_detections(ds) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for a in ds.extra["annotations"]["annotations"]:
        out.setdefault(a["image_id"], []).append({"image_id": a["image_id"], "category_id": a["category_id"],
                                                  "bbox": list(a["bbox"]), "score": 0.9})
    return out


def test_perfect_detections_score_one_on_the_bbox_only_view():
    ds = R.open_dataset(None)
    acc = R.new_accumulator(ds)
    dets = _gt_as_detections(ds)
    for s in ds:
        acc.update(s, dets[s.info["image_id"]])
    m = acc.compute()
    assert m["AP"] == 1.0 and m["AP50"] == 1.0 and m["AR100"] == 1.0
    assert m["APs"] == 1.0 and m["APm"] == -1.0 and m["APl"] == -1.0  # every ground-truth area is 1.0
    assert m["n_images_missing"] == 0 and m["n_images"] == 7


class ZeroSession:
    """A backend stand-in: all-zero logits (every probability 1/81 < 0.05: no detections)."""

    name, device, input_shape = "zeros", "cpu", None

    def run(self, batch):
        n = batch.shape[0]
        return [np.zeros((n, 4, 8732), np.float32), np.zeros((n, 81, 8732), np.float32)]


def test_missing_image_is_skipped_counted_and_reported(tmp_path, sample_root):
    root = tmp_path / "coco"
    shutil.copytree(sample_root, root)
    (root / "val2017" / "000000000006.jpg").unlink()
    ds = R.open_dataset(str(root))
    assert len(ds) == 7
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = pipeline.run(R, ds, ZeroSession(), bs=2, progress=False)
    assert [k for k, _, _ in res.skipped] == ["000000000006"] and "000000000006.jpg" in res.skipped[0][1]
    assert res.n_done == 6
    assert res.metrics["n_images_missing"] == 1 and res.metrics["n_images"] == 6
    assert res.metrics["n_detections"] == 0 and res.metrics["AP"] == 0.0
    assert any("1 of 7 images were not predicted" in str(w.message) for w in caught)


# ------------------------------------------------------------------------------------------------ Ascend files
class InputDerivedSession:
    """Outputs computed from the input pixels (so a sample's outputs can be recomputed from its .bin file)."""

    name, device, input_shape = "derived", "cpu", None

    @staticmethod
    def outputs(x: np.ndarray) -> list[np.ndarray]:
        flat = x.reshape(-1)
        return [np.resize(flat, 4 * 8732).reshape(4, 8732) * np.float32(0.5),
                np.resize(flat[::-1], 81 * 8732).reshape(81, 8732) * np.float32(3.0)]

    def run(self, batch):
        outs = [self.outputs(x) for x in batch]
        return [np.stack([o[k] for o in outs]) for k in range(2)]


def test_ascend_bins_round_trip(tmp_path):
    """Inputs as the guide writes them (``<file_name stem>.bin``, raw float32 3x300x300), results as ais_bench
    writes them (``<stem>_0.bin`` = ploc 4x8732, ``<stem>_1.bin`` = plabel 81x8732): the same detections and
    metrics as running the session directly."""
    from zooinfer.backends.bins import OutputReader

    ds = R.open_dataset(None)
    result_dir = tmp_path / "result"
    result_dir.mkdir()
    for s in ds:
        (x,), _ = R.preprocess(s.path)
        x.tofile(tmp_path / f"{s.key}.bin")
        back = np.fromfile(tmp_path / f"{s.key}.bin", dtype=np.float32).reshape(3, 300, 300)
        for k, o in enumerate(InputDerivedSession.outputs(back)):
            o.astype(np.float32).tofile(result_dir / f"{s.key}_{k}.bin")
    live = pipeline.run(R, ds, InputDerivedSession(), bs=3, progress=False, keep=7)
    files = pipeline.run(R, ds, OutputReader(result_dir, [(4, 8732), (81, 8732)]), progress=False, keep=7)
    assert files.n_done == live.n_done == 7
    assert [p for _, p in files.kept] == [p for _, p in live.kept]
    assert sum(len(p) for _, p in live.kept) > 0
    assert files.metrics == live.metrics
