"""WIDER FACE val in its official layout, the PyramidBox guide's preprocessing, and the embedded sample.

``data_root``::

    WIDER_val/images/<event>/<image>.jpg           61 events, 3,226 images (e.g. 0--Parade/0_Parade_marchingband_1_20.jpg)
    eval_tools/ground_truth/wider_face_val.mat     the official eval_tools ground truth (event_list, file_list,
    eval_tools/ground_truth/wider_{easy,medium,hard}_val.mat    face_bbx_list; gt_list per setting)

(``ground_truth/`` or the guide's ``evaluate/ground_truth/`` directly under the root are accepted too.)

Samples are the images the ground truth lists (events sorted, names sorted inside an event: the guide's order), so
an image missing or unreadable on disk is skipped and counted by the pipeline and its faces still count as missed.
Files on disk that the ground truth does not list (an extra event folder, a stray image) are not evaluated; they are
reported in ``dataset.rejected``. Event and image names read from the .mat files become paths (images, ``.bin`` and
submission files): each must be a plain name (``zooinfer.paths.plain_name``), and an image name must not repeat
across events (it is the sample key); a DatasetError names the file otherwise.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DatasetError
from .base import ImageDataset, Sample, require_dir
from .samples import ensure, skimage_path

LAYOUT = """  <data_root>/WIDER_val/images/<event>/<image>.jpg               (61 events, 3,226 images)
  <data_root>/eval_tools/ground_truth/wider_face_val.mat          (official eval_tools ground truth; also accepted
  <data_root>/eval_tools/ground_truth/wider_easy_val.mat           under <data_root>/ground_truth/ or
  <data_root>/eval_tools/ground_truth/wider_medium_val.mat         <data_root>/evaluate/ground_truth/)
  <data_root>/eval_tools/ground_truth/wider_hard_val.mat"""
#: folders (relative to the root) searched, in order, for the four official .mat files
GT_DIRS = ("eval_tools/ground_truth", "ground_truth", "evaluate/ground_truth")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")



# ------------------------------------------------------------------------------------------------ reader
def find_gt_dir(root: Path) -> Path:
    """The first of ``GT_DIRS`` under ``root`` holding the four .mat files (DatasetError listing what is missing)."""
    from ..metrics.widerface import GT_FILES

    tried = []
    for rel in GT_DIRS:
        d = root / rel
        missing = [f for f in GT_FILES.values() if not (d / f).is_file()]
        if not missing:
            return d
        if d.is_dir():
            tried.append(f"{d} (missing {', '.join(missing)})")
    where = "; ".join(tried) if tried else "none of " + ", ".join(str(root / r) for r in GT_DIRS) + " exists"
    raise DatasetError(f"WIDER FACE ground truth not found under {root}: {where}\nExpected layout:\n{LAYOUT}")


def open_widerface_val(data_root: str | os.PathLike) -> ImageDataset:
    """WIDER FACE val as the PyramidBox guide evaluates it.

    Samples: every image of the ground truth, events in sorted order, names sorted within an event (key = image
    name, ``info['event']``). ``extra``: ``gt_dir`` (folder of the four .mat files) and ``ground_truth`` (the loaded
    ``metrics.widerface.GroundTruth``). ``rejected``: image files on disk the ground truth does not list.
    """
    from ..metrics.widerface import GT_FILES, load_ground_truth

    root = require_dir(Path(data_root), "WIDER FACE data root", LAYOUT)
    image_dir = require_dir(root / "WIDER_val" / "images", "WIDER FACE val image folder", LAYOUT)
    gt_dir = find_gt_dir(root)
    gt = load_ground_truth(gt_dir)
    by_event: dict[str, list[str]] = {}
    for event, name in gt.images:
        by_event.setdefault(event, []).append(name)
    samples = [Sample(name, str(image_dir / event / f"{name}.jpg"), (event, name), {"event": event})
               for event in sorted(by_event) for name in sorted(by_event[event])]
    rejected = []
    for entry in sorted(os.scandir(image_dir), key=lambda e: e.name):
        if not entry.is_dir():
            continue
        for f in sorted(os.scandir(entry.path), key=lambda e: e.name):
            if not f.name.lower().endswith(IMAGE_EXTS):
                continue
            if entry.name not in by_event:
                rejected.append((f.path, f"event folder {entry.name!r} is not in the ground truth ({gt_dir})"))
            elif (entry.name, os.path.splitext(f.name)[0]) not in gt.index or not f.name.endswith(".jpg"):
                rejected.append((f.path, f"image is not in the ground truth of event {entry.name!r}"))
    if not samples:
        raise DatasetError(f"{gt_dir}: the ground truth lists no image; nothing to evaluate")
    truth_files = [str(gt_dir / f) for f in GT_FILES.values()]
    return ImageDataset("widerface-val", root, samples, extra={"gt_dir": str(gt_dir), "ground_truth": gt,
                                                             "ground_truth_files": truth_files}, rejected=rejected)


# ------------------------------------------------------------------------------------------------ embedded sample
#: (event, image name, builder key) of the sample images; boxes x y w h placed by eye on the pictures
SAMPLE_IMAGES = (
    ("0--Parade", "0_Parade_marchingband_1_5", "astronaut_landscape"),  # 1024x768 RGB: two faces, two scales
    ("0--Parade", "0_Parade_Parade_0_43", "astronaut"),  # 512x512 RGB
    ("12--Group", "12_Group_Group_12_Group_Group_12_10", "lfw_group"),  # 683x456 grayscale 'L' (999-wide letterbox)
    ("9--Press_Conference", "9_Press_Conference_Press_Conference_9_3", "camera_portrait"),  # 320x512 portrait
)
#: an image in an event folder the sample's ground truth does not have (reported in ``dataset.rejected``)
SAMPLE_STRAY = ("13--Interview", "13_Interview_Interview_On_Location_13_3")
ASTRONAUT_FACE = (184.0, 66.0, 90.0, 108.0)
CAMERA_FACE = (178.0, 95.0, 78.0, 102.0)
#: LFW mosaic rows: (top y, face size, count, x pitch); faces start at x = 20
LFW_ROWS = ((20, 100, 4, 170), (150, 56, 7, 92), (240, 30, 12, 54), (300, 14, 16, 40), (340, 80, 5, 130))
#: setting membership by face height in pixels (easy: large faces, medium: not tiny, hard: every face)
SETTING_MIN_SIZE = {"easy": 50.0, "medium": 20.0, "hard": 0.0}


def _astronaut() -> tuple[Image.Image, list]:
    with Image.open(skimage_path("astronaut.png")) as im:
        return im.convert("RGB"), [ASTRONAUT_FACE]


def _astronaut_landscape() -> tuple[Image.Image, list]:
    pic, _ = _astronaut()
    canvas = np.zeros((768, 1024, 3), dtype=np.uint8)
    canvas[:] = np.linspace(90, 170, 1024, dtype=np.float64).astype(np.uint8)[None, :, None]
    canvas[:, :768] = np.asarray(pic.resize((768, 768), Image.BILINEAR))
    canvas[256:512, 768:1024] = np.asarray(pic.resize((256, 256), Image.BILINEAR))
    x, y, w, h = ASTRONAUT_FACE
    return Image.fromarray(canvas), [(x * 1.5, y * 1.5, w * 1.5, h * 1.5), (768 + x / 2, 256 + y / 2, w / 2, h / 2)]


def _lfw_group() -> tuple[Image.Image, list]:
    import cv2

    faces = np.load(skimage_path("lfw_subset.npy"))  # (200, 25, 25) float in [0, 1], tight face crops
    grad = np.linspace(70, 150, 456, dtype=np.float64)[:, None] + np.linspace(0, 40, 683)[None, :]
    canvas = grad.astype(np.uint8)
    boxes, k = [], 0
    for top, size, count, pitch in LFW_ROWS:
        for i in range(count):
            x = 20 + i * pitch
            tile = cv2.resize(faces[k].astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
            canvas[top:top + size, x:x + size] = np.clip(tile * 255.0, 0, 255).astype(np.uint8)
            boxes.append((float(x), float(top), float(size), float(size)))
            k += 1
    return Image.fromarray(canvas, mode="L"), boxes


def _camera_portrait() -> tuple[Image.Image, list]:
    with Image.open(skimage_path("camera.png")) as im:
        pic = np.asarray(im.convert("L"))[:, 100:420]
    x, y, w, h = CAMERA_FACE
    return Image.fromarray(np.stack([pic] * 3, axis=-1)), [(x - 100, y, w, h)]


_BUILDERS = {"astronaut": _astronaut, "astronaut_landscape": _astronaut_landscape, "lfw_group": _lfw_group,
             "camera_portrait": _camera_portrait}


def build_widerface_sample(root: Path) -> None:
    """Write the embedded sample in the real layout: ``WIDER_val/images/<event>/<name>.jpg``, the four official
    .mat files in ``eval_tools/ground_truth/`` (written by ``metrics.widerface.write_ground_truth``; events sorted)
    and ``wider_face_split/wider_face_val.mat``, plus one stray image in an event folder the ground truth lacks."""
    from ..metrics.widerface import GT_FILES, write_ground_truth

    entries: dict[str, dict] = {}
    for event, name, key in SAMPLE_IMAGES:
        img, boxes = _BUILDERS[key]()
        folder = root / "WIDER_val" / "images" / event
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"{name}.jpg", format="JPEG", quality=92)
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        spec = {"boxes": b}
        for s, lo in SETTING_MIN_SIZE.items():
            spec[s] = np.flatnonzero(b[:, 3] >= lo)
        entries.setdefault(event, {})[name] = spec
    write_ground_truth(root / "eval_tools" / "ground_truth", entries)
    split = root / "wider_face_split"
    split.mkdir(parents=True)
    (split / GT_FILES["all"]).write_bytes((root / "eval_tools" / "ground_truth" / GT_FILES["all"]).read_bytes())
    stray = root / "WIDER_val" / "images" / SAMPLE_STRAY[0]
    stray.mkdir(parents=True)
    with Image.open(skimage_path("chelsea.png")) as im:
        im.convert("RGB").save(stray / f"{SAMPLE_STRAY[1]}.jpg", format="JPEG", quality=90)


def widerface_sample_root() -> Path:
    """Root of the embedded WIDER FACE val-layout sample (built on first use)."""
    return ensure("widerface-val", build_widerface_sample)
