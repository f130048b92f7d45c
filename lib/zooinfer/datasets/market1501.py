"""Market-1501 (Zheng et al., ICCV 2015) query/gallery in its release layout, read as the PCB guide reads it.

Layout (``data_root`` = the extracted ``Market-1501-v15.09.15`` folder)::

    query/0001_c1s1_001051_00.jpg ...        3,368 query crops
    bounding_box_test/0000_c1s1_000151_01.jpg ...   19,732 gallery crops (incl. 3,819 junk "-1_..." files)
    bounding_box_train/, gt_bbox/, ...       ignored

Names are ``PPPP_cCsS_FFFFFF_BB.jpg`` (person id, camera 1..6, sequence, frame, box). As upstream ``reid/datasets/
market.py``: every ``*.jpg`` directly in the folder (``glob``: non-recursive, case-sensitive, no dot-files) sorted by
path, pid and camera from the first match of ``([-\\d]+)_c(\\d)``; junk (pid -1) dropped, distractors (pid 0) kept,
pids not relabelled, camera made 0-based. Names the guide's pattern does not match (the guide would crash on them)
are skipped and listed in ``ImageDataset.rejected``. The sample order is all queries, then all gallery images: it
defines the rows and columns of the distance matrix.
"""
from __future__ import annotations

import glob
import math
import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from ..errors import DatasetError
from ..paths import why_not_plain
from .base import ImageDataset, Sample, require_dir
from .samples import ensure, skimage_path

LAYOUT = """  <data_root>/query/PPPP_cCsS_FFFFFF_BB.jpg ...              query crops
  <data_root>/bounding_box_test/PPPP_cCsS_FFFFFF_BB.jpg ...  gallery crops (-1_... junk, 0000_... distractors)
  (PPPP person id, C camera 1-6, S sequence, FFFFFF frame, BB box; bounding_box_train/ is not needed)"""

#: the upstream loader's pattern (searched, first match): person id and 1-based camera
NAME_PATTERN = re.compile(r"([-\d]+)_c(\d)")
SPLITS = (("query", "query"), ("gallery", "bounding_box_test"))
JUNK_PID, DISTRACTOR_PID = -1, 0


def parse_name(name: str) -> tuple[int, int] | None:
    """(pid, 0-based camera) of a Market-1501 file name, or None when the guide's pattern does not apply."""
    m = NAME_PATTERN.search(name)
    if m is None:
        return None
    try:
        pid, cam = int(m.group(1)), int(m.group(2))
    except ValueError:  # e.g. "1-2_c3": the pattern matches but is no integer (upstream would crash)
        return None
    return pid, cam - 1


def stem(name: str) -> str:
    """The guide's ``.bin`` stem: the file name up to its first dot (``x.jpg.jpg`` -> ``x``)."""
    return name.split(".")[0]


class MarketDataset(ImageDataset):
    """An :class:`ImageDataset` whose ``subset(limit)`` keeps both splits (a re-ID metric needs both)."""

    def subset(self, limit: int | None) -> "MarketDataset":
        """At most ``limit`` images: the first queries (share proportional to the split sizes, at least one) and,
        from the gallery, the images of those queries' identities first, then the others, each split in its order."""
        if limit is None or limit >= len(self.samples):
            return self
        limit = int(limit)
        queries = [s for s in self.samples if s.info["split"] == "query"]
        gallery = [s for s in self.samples if s.info["split"] == "gallery"]
        n_q = min(len(queries), max(1, math.ceil(limit * len(queries) / max(len(self.samples), 1))))
        n_g = max(limit - n_q, 0)
        chosen_q = queries[:n_q]
        pids = {s.target for s in chosen_q}
        ranked = sorted(range(len(gallery)), key=lambda i: (gallery[i].target not in pids, i))
        keep = sorted(ranked[:n_g])
        return replace(self, samples=chosen_q + [gallery[i] for i in keep])


def _list_split(folder: Path, split: str) -> tuple[list[Sample], list[tuple[str, str]], int]:
    """Samples of one split (junk dropped), rejected (path, reason) pairs and the number of junk files."""
    samples, rejected, junk = [], [], 0
    for fpath in sorted(glob.glob(os.path.join(glob.escape(str(folder)), "*.jpg"))):
        name = os.path.basename(fpath)
        if not os.path.isfile(fpath):
            rejected.append((fpath, "not a regular file"))
            continue
        unusable = why_not_plain(stem(name))  # the key is the .bin file name: one path component
        if unusable is not None:
            rejected.append((fpath, f"its name up to the first '.' cannot be a .bin file name: {unusable}"))
            continue
        parsed = parse_name(name)
        if parsed is None:
            rejected.append((fpath, "name does not follow the Market-1501 pattern PPPP_cCsS_FFFFFF_BB.jpg"))
            continue
        pid, camid = parsed
        if pid == JUNK_PID:
            junk += 1
            continue
        samples.append(Sample(stem(name), fpath, pid, {"split": split, "pid": pid, "camid": camid}))
    return samples, rejected, junk


def open_market1501(data_root: str | Path, name: str = "market1501") -> MarketDataset:
    """Query then gallery samples of a Market-1501 root: ``target`` = person id, ``info`` = split, pid, camid."""
    root = Path(data_root)
    samples: list[Sample] = []
    rejected: list[tuple[str, str]] = []
    extra: dict = {"junk": {}}
    for split, folder_name in SPLITS:
        folder = require_dir(root / folder_name, f"Market-1501 {split} folder", LAYOUT)
        got, bad, junk = _list_split(folder, split)
        rejected += bad
        extra["junk"][split] = junk
        if not got:
            raise DatasetError(f"no {split} images in {folder} ({junk} junk, {len(bad)} with other names)\n"
                               f"Expected layout:\n{LAYOUT}")
        extra[split] = len(got)
        samples += got
    extra["distractors"] = sum(1 for s in samples if s.info["split"] == "gallery" and s.target == DISTRACTOR_PID)
    seen: set[str] = set()
    for i, s in enumerate(samples):  # bin files share one folder: keep keys unique (never happens on the release)
        if s.key in seen:
            samples[i] = replace(s, key=f"{s.info['split']}-{s.key}")
        seen.add(samples[i].key)
    return MarketDataset(name, root, samples, embedded=False, extra=extra, rejected=rejected)


# ---------------------------------------------------------------------------------------------------- embedded sample
#: identity -> (scikit-image picture, crop box (left, top, right, bottom) of the "person", 1:2 W:H)
SAMPLE_IDENTITIES = {
    2: ("astronaut.png", (150, 20, 350, 420)),
    7: ("chelsea.png", (100, 10, 240, 290)),
    10: ("coffee.png", (140, 40, 320, 400)),
    23: ("rocket.jpg", (240, 15, 440, 415)),
}
#: (split, pid, 1-based camera): two queries per identity for pid 10; pid 23's only positive shares its camera
SAMPLE_LAYOUT = [
    ("query", 2, 1), ("query", 7, 2), ("query", 10, 3), ("query", 10, 6), ("query", 23, 4),
    ("gallery", 2, 1), ("gallery", 2, 2), ("gallery", 2, 3), ("gallery", 2, 5),
    ("gallery", 7, 1), ("gallery", 7, 4),
    ("gallery", 10, 1), ("gallery", 10, 3), ("gallery", 10, 5),
    ("gallery", 23, 4),
]
#: distractors (pid 0) and junk (pid -1) from other pictures: (file, box, camera, pid, name suffix)
SAMPLE_OTHERS = [
    ("motorcycle_left.png", (300, 40, 480, 400), 1, 0, ".jpg"),
    ("hubble_deep_field.jpg", (60, 20, 220, 340), 3, 0, ".jpg.jpg"),  # the Ascend copy's doubled extension
    ("coffee.png", (380, 20, 560, 380), 2, -1, ".jpg"),
]
#: per-camera colour gains (R, G, B) and brightness: what makes the same person look different between cameras
CAMERA_TONE = {1: ((1.0, 1.0, 1.0), 1.0), 2: ((1.08, 1.0, 0.92), 0.92), 3: ((0.92, 1.0, 1.08), 1.08),
               4: ((1.0, 1.06, 0.96), 0.96), 5: ((1.05, 0.95, 1.0), 1.05), 6: ((0.95, 1.0, 1.05), 0.9)}


def render_crop(picture: Image.Image, box: tuple[int, int, int, int], camera: int, rng: np.random.Generator,
                size: tuple[int, int] = (64, 128)) -> Image.Image:
    """A Market-like 64x128 (W x H) RGB crop of ``box``: jittered position/scale, camera tone, mirrored on some
    cameras, slight blur from the downscale."""
    l, t, r, b = box
    w, h = r - l, b - t
    s = rng.uniform(0.92, 1.08)
    dx, dy = rng.uniform(-0.06, 0.06) * w, rng.uniform(-0.04, 0.04) * h
    cx, cy = (l + r) / 2 + dx, (t + b) / 2 + dy
    nw, nh = w * s / 2, h * s / 2
    crop = picture.crop((int(cx - nw), int(cy - nh), int(cx + nw), int(cy + nh))).resize(size, Image.BILINEAR)
    gains, bright = CAMERA_TONE[camera]
    a = np.asarray(crop, dtype=np.float32) * np.array(gains, dtype=np.float32)
    crop = ImageEnhance.Brightness(Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))).enhance(bright)
    return crop.transpose(Image.FLIP_LEFT_RIGHT) if camera % 2 == 0 else crop


def build_market1501_sample(root: Path) -> None:
    """Write the embedded sample in the release layout (see ``SAMPLE_LAYOUT``): 5 queries of 4 identities, 13
    gallery images (a same-id same-camera one, two distractors, one named ``.jpg.jpg``), one junk file, one file with
    a non-Market name (rejected), an empty ``bounding_box_train/``. Files are written in shuffled order."""
    rng = np.random.default_rng(1501)
    pictures: dict[str, Image.Image] = {}

    def picture(fname: str) -> Image.Image:
        if fname not in pictures:
            with Image.open(skimage_path(fname)) as im:
                pictures[fname] = im.convert("RGB")
        return pictures[fname]

    jobs = []
    for i, (split, pid, cam) in enumerate(SAMPLE_LAYOUT):
        fname, box = SAMPLE_IDENTITIES[pid]
        folder = "query" if split == "query" else "bounding_box_test"
        name = f"{pid:04d}_c{cam}s{1 + i % 6}_{int(rng.integers(1000, 999999)):06d}_{0 if split == 'query' else 1:02d}"
        jobs.append((folder, name + ".jpg", fname, box, cam))
    for fname, box, cam, pid, suffix in SAMPLE_OTHERS:
        prefix = "-1" if pid == JUNK_PID else f"{pid:04d}"
        jobs.append(("bounding_box_test", f"{prefix}_c{cam}s2_{int(rng.integers(1000, 999999)):06d}_02{suffix}",
                     fname, box, cam))
    for folder in ("query", "bounding_box_test", "bounding_box_train"):
        (root / folder).mkdir(parents=True)
    for j in rng.permutation(len(jobs)):
        folder, name, fname, box, cam = jobs[j]
        render_crop(picture(fname), box, cam, rng).save(root / folder / name, format="JPEG", quality=92)
    # a stray file whose name does not follow the pattern: skipped and reported, as on a hand-copied dataset
    render_crop(picture("chelsea.png"), (0, 0, 150, 300), 1, rng).save(root / "bounding_box_test" / "Thumbs.jpg",
                                                                       format="JPEG")


def market1501_sample_root() -> Path:
    """Root of the embedded Market-1501-layout sample (built on first use)."""
    return ensure("market1501", build_market1501_sample)
