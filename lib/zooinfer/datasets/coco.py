"""COCO detection sets in their official layouts, the image selections of the guides, and the embedded sample.

COCO 2017 val (SSD-ResNet34 guide), ``data_root``::

    val2017/000000000139.jpg ...               5,000 images
    annotations/instances_val2017.json         the official instances file, unchanged

One function per layout/selection (``open_coco2017_val``), sharing the JSON loading and checks
(:func:`load_instances`: clear errors naming the missing file or key) and :func:`_dataset` (samples keyed by file
stem, which is also the ``.bin`` stem). Annotation views the guides prepare as extra files (SSD's
``bbox_only_instances_val2017.json``) are built in memory (:func:`bbox_only_view`).

Each sample's ``info`` holds its image id, the annotation file's height/width and the file's category order: the
pipeline hands the keys a recipe names (``Recipe.sample_meta``) to its postprocessing, explicitly, with no
module-level state.
"""
from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DatasetError
from ..paths import plain_name
from .base import ImageDataset, Sample, require_dir, require_file
from .samples import ensure, skimage_path

LAYOUT_2017 = """  <data_root>/val2017/000000000139.jpg ...              (the 5,000 COCO 2017 val images)
  <data_root>/annotations/instances_val2017.json      (the official annotation file, unchanged)"""

#: keys a COCO instances file must have, per section, for the readers and pycocotools' COCOeval
REQUIRED_KEYS = {
    "images": ("id", "file_name", "height", "width"),
    "annotations": ("id", "image_id", "category_id", "bbox", "iscrowd", "area"),
    "categories": ("id", "name"),
}


# ------------------------------------------------------------------------------------------------ annotation files
def validate_instances(data: object, path: Path) -> None:
    """Raise DatasetError naming the first missing section or key (checks every entry's keys)."""
    what = f"{path} is not a COCO instances annotation file"
    if not isinstance(data, dict):
        raise DatasetError(f"{what}: it holds a JSON {type(data).__name__}, expected an object with keys "
                           f"{', '.join(map(repr, REQUIRED_KEYS))}")
    for section, keys in REQUIRED_KEYS.items():
        if section not in data:
            raise DatasetError(f"{what}: missing key {section!r} (top-level keys: {sorted(data)[:10]})")
        entries = data[section]
        if not isinstance(entries, list):
            raise DatasetError(f"{what}: {section!r} must be a list, got {type(entries).__name__}")
        for i, entry in enumerate(entries):
            missing = [k for k in keys if not isinstance(entry, dict) or k not in entry]
            if missing:
                raise DatasetError(f"{what}: {section}[{i}] has no key {missing[0]!r} (every {section[:-1]} "
                                   f"needs {', '.join(map(repr, keys))})")


def load_instances(path: str | os.PathLike, layout: str = LAYOUT_2017) -> dict:
    """Read and check a COCO instances JSON file (missing file: the path and the expected layout)."""
    path = require_file(Path(path), "COCO annotation file", layout)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path} is not a JSON file ({e})") from None
    validate_instances(data, path)
    return data


def bbox_only_view(data: dict) -> dict:
    """Upstream ``prepare-json.py --keep-keys`` in memory (the guide's ``bbox_only_instances_val2017.json``).

    Images keep only ``id``, ``file_name``, ``height``, ``width``; every annotation keeps all its keys but
    ``segmentation`` becomes ``[]`` and ``area`` becomes 1.0; ``categories`` unchanged; nothing else (no ``info``,
    ``licenses``). The input is not modified. Only all-area COCO metrics are meaningful with it (every area is 1).
    """
    keep = ("id", "file_name", "height", "width")
    images = [{k: img[k] for k in img if k in keep} for img in data["images"]]
    annotations = []
    for a in data["annotations"]:
        a = dict(a)
        a["segmentation"] = []
        a["area"] = 1.0
        annotations.append(a)
    return {"images": images, "annotations": annotations, "categories": copy.deepcopy(data["categories"])}


def images_with_annotations(data: dict) -> list[dict]:
    """The SSD guide's selection: image entries with at least one annotation (crowd ones count), in ``images``
    order (COCO 2017 val: 4,952 of 5,000)."""
    annotated = {a["image_id"] for a in data["annotations"]}
    return [img for img in data["images"] if img["id"] in annotated]


def category_ids(data: dict) -> tuple[int, ...]:
    """Category ids in the file's ``categories`` order (what the guides index model classes with)."""
    return tuple(int(c["id"]) for c in data["categories"])


def _stem(file_name: str) -> str:
    return Path(file_name).name.split(".")[0]


def _dataset(name: str, root: Path, image_dir: Path, images: list[dict], cats: tuple[int, ...],
             extra: dict) -> ImageDataset:
    """Samples (key = file stem, target = image id) for ``images``; each sample's ``info`` carries what
    postprocessing may need: ``image_id``, the annotation file's ``height`` / ``width``, and ``category_ids`` (the
    file's category ids in order, one tuple shared by all samples: model class k >= 1 -> ``category_ids[k - 1]``).
    Every ``file_name`` must be a plain file name (``extra["ann_file"]`` is named otherwise)."""
    samples = []
    for img in images:
        image_id = int(img["id"])
        file_name = plain_name(img["file_name"], f"file_name of image id {image_id}", extra["ann_file"])
        samples.append(Sample(_stem(file_name), str(image_dir / file_name), image_id,
                              {"image_id": image_id, "height": int(img["height"]), "width": int(img["width"]),
                               "category_ids": cats}))
    return ImageDataset(name, root, samples, embedded=False, extra=extra)


def id_from_file_name(path: str | os.PathLike) -> int:
    """The image id COCO file names end with (``COCO_val2014_000000000042.jpg`` -> 42), -1 when there is none: the
    id of an image met outside a reader (the reader's samples carry the annotation file's id)."""
    m = re.search(r"(\d+)$", _stem(os.fspath(path)))
    return int(m.group(1)) if m else -1


def open_coco2017_val(data_root: str | os.PathLike) -> ImageDataset:
    """COCO 2017 val as the SSD-ResNet34 guide evaluates it.

    Samples: the images with at least one annotation (4,952), in annotation-file order. ``extra``:
    ``annotations`` (the bbox-only view, a dict pycocotools takes), ``ann_file``, ``img_ids`` (the selected ids),
    ``category_ids``, ``n_images_in_file``. Images missing on disk are not checked here: the pipeline skips,
    counts and names them, and the metric then covers fewer images.
    """
    root = Path(data_root)
    require_dir(root, "COCO data root", LAYOUT_2017)
    image_dir = require_dir(root / "val2017", "COCO 2017 val image folder", LAYOUT_2017)
    ann_file = root / "annotations" / "instances_val2017.json"
    data = load_instances(ann_file, LAYOUT_2017)
    selected = images_with_annotations(data)
    if not selected:
        raise DatasetError(f"{ann_file}: no image has an annotation; nothing to evaluate")
    cats = category_ids(data)
    extra = {"annotations": bbox_only_view(data), "ann_file": str(ann_file),
             "ground_truth_files": [str(ann_file)],
             "img_ids": [int(img["id"]) for img in selected], "category_ids": list(cats),
             "n_images_in_file": len(data["images"]),
             "selection": "images with at least one annotation (the SSD guide's ssd_preprocess.py)"}
    return _dataset("coco2017-val", root, image_dir, selected, cats, extra)


# ------------------------------------------------------------------------------------------------ embedded sample
#: (category id, name, supercategory) of the 80 COCO detection categories, in the official files' order
CATEGORIES = (
    (1, "person", "person"), (2, "bicycle", "vehicle"), (3, "car", "vehicle"), (4, "motorcycle", "vehicle"),
    (5, "airplane", "vehicle"), (6, "bus", "vehicle"), (7, "train", "vehicle"), (8, "truck", "vehicle"),
    (9, "boat", "vehicle"), (10, "traffic light", "outdoor"), (11, "fire hydrant", "outdoor"),
    (13, "stop sign", "outdoor"), (14, "parking meter", "outdoor"), (15, "bench", "outdoor"), (16, "bird", "animal"),
    (17, "cat", "animal"), (18, "dog", "animal"), (19, "horse", "animal"), (20, "sheep", "animal"),
    (21, "cow", "animal"), (22, "elephant", "animal"), (23, "bear", "animal"), (24, "zebra", "animal"),
    (25, "giraffe", "animal"), (27, "backpack", "accessory"), (28, "umbrella", "accessory"),
    (31, "handbag", "accessory"), (32, "tie", "accessory"), (33, "suitcase", "accessory"), (34, "frisbee", "sports"),
    (35, "skis", "sports"), (36, "snowboard", "sports"), (37, "sports ball", "sports"), (38, "kite", "sports"),
    (39, "baseball bat", "sports"), (40, "baseball glove", "sports"), (41, "skateboard", "sports"),
    (42, "surfboard", "sports"), (43, "tennis racket", "sports"), (44, "bottle", "kitchen"),
    (46, "wine glass", "kitchen"), (47, "cup", "kitchen"), (48, "fork", "kitchen"), (49, "knife", "kitchen"),
    (50, "spoon", "kitchen"), (51, "bowl", "kitchen"), (52, "banana", "food"), (53, "apple", "food"),
    (54, "sandwich", "food"), (55, "orange", "food"), (56, "broccoli", "food"), (57, "carrot", "food"),
    (58, "hot dog", "food"), (59, "pizza", "food"), (60, "donut", "food"), (61, "cake", "food"),
    (62, "chair", "furniture"), (63, "couch", "furniture"), (64, "potted plant", "furniture"),
    (65, "bed", "furniture"), (67, "dining table", "furniture"), (70, "toilet", "furniture"),
    (72, "tv", "electronic"), (73, "laptop", "electronic"), (74, "mouse", "electronic"),
    (75, "remote", "electronic"), (76, "keyboard", "electronic"), (77, "cell phone", "electronic"),
    (78, "microwave", "appliance"), (79, "oven", "appliance"), (80, "toaster", "appliance"),
    (81, "sink", "appliance"), (82, "refrigerator", "appliance"), (84, "book", "indoor"), (85, "clock", "indoor"),
    (86, "vase", "indoor"), (87, "scissors", "indoor"), (88, "teddy bear", "indoor"), (89, "hair drier", "indoor"),
    (90, "toothbrush", "indoor"),
)

#: (image id, scikit-image file, [(category id, [x, y, w, h] in pixels, iscrowd)]), in the file's ``images`` order
#: (not sorted by id, as in the official file). Boxes were drawn by eye on the objects in the pictures.
SAMPLE_IMAGES = (
    (3, "astronaut.png", [(1, [20.0, 15.0, 345.0, 497.0], 0)]),
    (1, "coffee.png", [(47, [172.0, 8.0, 238.0, 290.0], 0), (50, [322.0, 66.0, 103.0, 260.0], 0),
                       (67, [0.0, 0.0, 600.0, 400.0], 0)]),
    (7, "rocket.jpg", []),  # no annotation: the SSD guide's selection skips it
    (6, "chelsea.png", [(17, [5.0, 0.0, 440.0, 300.0], 0)]),
    (2, "motorcycle_left.png", [(4, [92.0, 60.0, 595.0, 390.0], 0), (15, [40.0, 105.0, 245.0, 200.0], 0),
                                (2, [0.0, 110.0, 45.0, 125.0], 0)]),
    (5, "camera.png", [(1, [0.0, 65.0, 335.0, 447.0], 0)]),  # grayscale JPEG, as some COCO images are
    (8, "horse.png", [(19, [18.0, 8.0, 372.0, 297.0], 0)]),  # RGBA source, saved as RGB JPEG
    (4, "clock_motion.png", [(85, [140.0, 95.0, 130.0, 120.0], 1)]),  # only a crowd annotation: still selected
)


def _rle_of_box(box: list[float], h: int, w: int) -> dict:
    """Uncompressed RLE (column-major run lengths, as crowd annotations store it) of a filled box."""
    m = np.zeros((h, w), dtype=np.uint8)
    x, y, bw, bh = (int(round(v)) for v in box)
    m[y:y + bh, x:x + bw] = 1
    flat = m.flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]]))
    counts = ([0] if flat[0] == 1 else []) + runs.tolist()
    return {"counts": [int(c) for c in counts], "size": [h, w]}


def build_coco_sample(root: Path, *, image_dir: str = "val2017", file_name: str = "{:012d}.jpg",
                      ann_name: str = "instances_val2017.json",
                      description: str = "zooinfer embedded COCO 2017 val sample (pictures from scikit-image's data)",
                      ) -> None:
    """Write the embedded COCO 2017 val sample: ``val2017/<id:012d>.jpg`` + ``annotations/instances_val2017.json``
    with the official file's structure (info, licenses, images, annotations with polygon or crowd-RLE segmentation,
    area, iscrowd; the 80 real categories). The keywords give other layouts the same pictures (COCO 2014:
    ``images/val2014/COCO_val2014_<id:012d>.jpg`` + ``annotations/instances_minival2014.json``)."""
    (root / image_dir).mkdir(parents=True)
    (root / "annotations").mkdir()
    images, annotations = [], []
    ann_id = 900001
    for image_id, fname, objects in SAMPLE_IMAGES:
        with Image.open(skimage_path(fname)) as im:
            im.load()
            img = im.convert("RGB") if im.mode not in ("RGB", "L") else im.copy()
        name = file_name.format(image_id)
        img.save(root / image_dir / name, format="JPEG", quality=95)
        w, h = img.size
        images.append({"license": 1, "file_name": name, "coco_url": "", "height": h, "width": w,
                       "date_captured": "2013-11-14 17:02:52", "flickr_url": "", "id": image_id})
        for cat, (x, y, bw, bh), crowd in objects:
            seg = (_rle_of_box([x, y, bw, bh], h, w) if crowd
                   else [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]])
            annotations.append({"segmentation": seg, "area": float(bw * bh), "iscrowd": crowd,
                                "image_id": image_id, "bbox": [x, y, bw, bh], "category_id": cat, "id": ann_id})
            ann_id += 1
    data = {
        "info": {"description": description,
                 "url": "https://scikit-image.org", "version": "1.0", "year": 2017,
                 "contributor": "zooinfer", "date_created": "2017/09/01"},
        "licenses": [{"url": "https://github.com/scikit-image/scikit-image/blob/main/skimage/data/README.txt",
                      "id": 1, "name": "scikit-image data (see its README for each picture's license)"}],
        "images": images,
        "annotations": annotations,
        "categories": [{"supercategory": s, "id": i, "name": n} for i, n, s in CATEGORIES],
    }
    with open(root / "annotations" / ann_name, "w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"))


def coco_sample_root() -> Path:
    """Root of the embedded COCO 2017 val-layout sample (built on first use)."""
    return ensure("coco2017-val", build_coco_sample)


# ------------------------------------------------------------------------------------------------ COCO 2014 minival
LAYOUT_MINIVAL2014 = """  <data_root>/images/val2014/COCO_val2014_000000000042.jpg ...   (val2014 images; the 5,000 minival ones suffice)
  <data_root>/annotations/instances_minival2014.json                (the 5k minival split's instances file)"""


def open_coco2014_minival(data_root: str | os.PathLike) -> ImageDataset:
    """COCO 2014 minival as the M2Det guide evaluates it (docs/models/m2det.md 7): **every** image of
    ``instances_minival2014.json`` (5,000; those without annotations too), in ascending id order (the guide's patch
    sorts them). ``extra``: ``annotations`` (the loaded file, unchanged), ``ann_file``, ``img_ids``,
    ``category_ids`` (model class j >= 1 -> ``category_ids[j - 1]``: positional, file order). Images missing on disk
    are left to the pipeline (skipped, counted, named)."""
    root = Path(data_root)
    require_dir(root, "COCO data root", LAYOUT_MINIVAL2014)
    image_dir = require_dir(root / "images" / "val2014", "COCO val2014 image folder", LAYOUT_MINIVAL2014)
    ann_file = root / "annotations" / "instances_minival2014.json"
    data = load_instances(ann_file, LAYOUT_MINIVAL2014)
    images = sorted(data["images"], key=lambda img: int(img["id"]))
    if not images:
        raise DatasetError(f"{ann_file}: the file lists no images; nothing to evaluate")
    cats = category_ids(data)
    if len(cats) != 80:
        raise DatasetError(f"{ann_file}: {len(cats)} categories; the model's 80 classes map positionally onto the "
                           "80 entries of a COCO instances file, which must all be present in the standard order")
    extra = {"annotations": data, "ann_file": str(ann_file), "ground_truth_files": [str(ann_file)],
             "img_ids": [int(img["id"]) for img in images],
             "category_ids": list(cats), "n_images_in_file": len(images),
             "selection": "every image of the annotation file, ascending id (the M2Det guide)"}
    return _dataset("coco2014-minival", root, image_dir, images, cats, extra)



def build_coco2014_sample(root: Path) -> None:
    """The embedded sample in the COCO 2014 minival layout (same pictures and annotations as the 2017 one)."""
    build_coco_sample(root, image_dir="images/val2014", file_name="COCO_val2014_{:012d}.jpg",
                      ann_name="instances_minival2014.json",
                      description="zooinfer embedded COCO 2014 minival sample (pictures from scikit-image's data)")


def coco2014_sample_root() -> Path:
    """Root of the embedded COCO 2014 minival-layout sample (built on first use)."""
    return ensure("coco2014-minival", build_coco2014_sample)
