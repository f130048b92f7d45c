"""ImageNet-1k validation set in the Ascend guide's layout, and the DPN131 guide's preprocessing.

Layout (``data_root``)::

    val/ILSVRC2012_val_00000001.JPEG ...      flat, or one level of class sub-folders (val/<wnid>/<file>)
    val_label.txt                             "<file name> <0-based label>" per line, single space

Both walking variants of the guide (flat files, class sub-folders) are accepted; every image is processed and keyed
by its name up to the first '.', which is also its ``.bin`` stem. A key found twice (an image both flat and in a
class folder, a symbolic link to a folder) is an error naming both paths; file names in ``val_label.txt`` must be
plain names (no folder part).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DatasetError
from ..paths import plain_name
from .base import ImageDataset, Sample, require_dir, require_file
from .samples import ensure, skimage_path

LAYOUT = """  <data_root>/val/ILSVRC2012_val_00000001.JPEG ...  (flat, or val/<wnid>/<file>)
  <data_root>/val_label.txt   one '<file name> <0-based label>' line per image"""

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def stem(name: str) -> str:
    """The guide's sample key: the file name up to the first '.'."""
    return name.split(".")[0]


def read_labels(path: Path) -> dict[str, int]:
    """``val_label.txt`` -> {stem: 0-based label}; a malformed line raises naming the file and line number."""
    labels: dict[str, int] = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(" ")
        try:
            labels[stem(plain_name(parts[0], f"file name on line {n}", path))] = int(parts[1])
        except (IndexError, ValueError):
            raise DatasetError(f"{path}:{n}: expected '<file name> <0-based label>', got {line!r}") from None
    return labels


def _label_names(path: Path) -> dict[str, str]:
    """``val_label.txt`` -> {stem: file name as written} (plain names: :func:`read_labels` checked them)."""
    names = {}
    for line in path.read_text().splitlines():
        if line.strip():
            name = line.split(" ")[0]
            names[stem(name)] = name
    return names


def _listed(p: Path) -> bool:
    """An image entry of the val folder: a file, or a symbolic link that does not lead to one (a loop, a dangling
    target): listed so that reading it reports it as unreadable, with the system's reason, not as missing."""
    return p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or (p.is_symlink() and not p.exists()))


def open_imagenet(data_root: str | Path) -> ImageDataset:
    """Read the val folder and labels; images without a label are an error (the guide would KeyError on them)."""
    root = Path(data_root)
    val = require_dir(root / "val", "ImageNet validation image folder", LAYOUT)
    labels = read_labels(require_file(root / "val_label.txt", "ImageNet label file", LAYOUT))
    files = sorted(p for p in val.iterdir() if _listed(p))
    files += sorted(p for d in sorted(val.iterdir()) if d.is_dir() for p in d.iterdir() if _listed(p))
    if not files:
        raise DatasetError(f"no images found in {val}\nExpected layout:\n{LAYOUT}")
    unlabeled = [p.name for p in files if stem(p.name) not in labels]
    if unlabeled:
        raise DatasetError(f"{len(unlabeled)} images in {val} have no line in {root / 'val_label.txt'} "
                           f"(first: {', '.join(unlabeled[:3])})")
    samples = [Sample(stem(p.name), str(p), labels[stem(p.name)]) for p in files]
    # lines of the label file naming an image that is not on disk: kept as samples the pipeline skips, counts and
    # names (a user evaluating "50,000" images must not get 49,999 silently)
    on_disk = {s.key for s in samples}
    names = _label_names(root / "val_label.txt")
    samples += [Sample(key, str(val / names.get(key, key)), label,
                       {"missing": f"not found: named in {root / 'val_label.txt'} but not under {val}"})
                for key, label in labels.items() if key not in on_disk]
    samples.sort(key=lambda s: s.key)
    return ImageDataset("imagenet-val", root, samples, embedded=False,
                        extra={"ground_truth_files": [str(root / "val_label.txt")]})


# ---------------------------------------------------------------------------------------------------- embedded sample
#: (scikit-image file, label, why it is here) -- labels plausible where the picture has an ImageNet class
SAMPLE_IMAGES = [
    ("chelsea.png", 285, "Egyptian cat; landscape"),
    ("coffee.png", 967, "espresso; landscape"),
    ("astronaut.png", 834, "suit; square"),
    ("rocket.jpg", 812, "space shuttle; landscape, already JPEG"),
    ("camera.png", 759, "reflex camera; grayscale (mode L)"),
    ("logo.png", 919, "street sign; RGBA"),
    ("hubble_deep_field.jpg", 980, "volcano (arbitrary); landscape"),
    ("motorcycle_left.png", 670, "motor scooter; landscape"),
]


def build_imagenet_sample(root: Path) -> None:
    """Write the embedded sample in the guide's layout: flat ``val/`` of JPEGs + ``val_label.txt``.

    Besides the pictures above (grayscale, RGBA, landscape, square), two derived crops exercise the preprocessing
    branches: a portrait whose short side is already 256 (returned unchanged) and one with odd (H-224) (half-to-even
    crop offset).
    """
    val = root / "val"
    val.mkdir(parents=True)
    lines = []
    entries: list[tuple[Image.Image, int]] = []
    for fname, label, _why in SAMPLE_IMAGES:
        with Image.open(skimage_path(fname)) as im:
            im.load()
            entries.append((im.copy(), label))
    chelsea = entries[0][0].convert("RGB")
    entries.append((chelsea.crop((0, 0, 256, 300)), 281))  # portrait, short side already 256
    entries.append((chelsea.crop((50, 20, 350, 271)), 282))  # 300x251: odd H-224 -> half-to-even offset
    for i, (img, label) in enumerate(entries, start=1):
        name = f"ILSVRC2012_val_{i:08d}.JPEG"
        if img.mode not in ("RGB", "L"):  # RGBA / P: keep the original file's pixels, the reader converts
            img.save(val / name.replace(".JPEG", ".png"), format="PNG")
            name = name.replace(".JPEG", ".png")
        else:
            img.save(val / name, format="JPEG", quality=95)
        lines.append(f"{name} {label}")
    (root / "val_label.txt").write_text("\n".join(lines) + "\n")


def imagenet_sample_root() -> Path:
    """Root of the embedded ImageNet-layout sample (built on first use)."""
    return ensure("imagenet", build_imagenet_sample)
