"""Image transforms several models share, each reproducing one upstream library call's arithmetic exactly.

Inputs and outputs: PIL images or (H, W, C) uint8 arrays in, as each function says; models compose them (and their
own constants) in ``models/<name>/recipe.py`` into the float32 CHW arrays their guides write to ``.bin`` files.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image


# ------------------------------------------------------------------------------------------------ Pillow
def read_pil_rgb(path: str | os.PathLike) -> Image.Image:
    """``Image.open(path).convert("RGB")`` (decoded fully, file closed; EXIF orientation not applied)."""
    with Image.open(path) as im:
        return im.convert("RGB")


def resize_short_side(img: Image.Image, size: int) -> Image.Image:
    """torchvision-0.6 ``Resize(size)``: Pillow bilinear (antialiased); long side ``int()``-truncated."""
    w, h = img.size
    if (w <= h and w == size) or (h <= w and h == size):
        return img
    if w < h:
        return img.resize((size, int(size * h / w)), Image.BILINEAR)
    return img.resize((int(size * w / h), size), Image.BILINEAR)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """Center crop with Python 3 (half-to-even) rounding of the offsets, as torchvision 0.6."""
    w, h = img.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def to_unit_chw(img: Image.Image) -> np.ndarray:
    """uint8 RGB image -> float32 (3, H, W) in [0, 1] (``ToTensor``: cast, then / 255 in float32)."""
    return np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)


def normalize_chw(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(x - mean) / std per channel of a float32 (3, H, W) array (``Normalize``), C-contiguous float32 out."""
    return np.ascontiguousarray((x - mean[:, None, None]) / std[:, None, None])


# ------------------------------------------------------------------------------------------------ OpenCV
def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """PIL decode, any non-RGB mode ('L', 'RGBA', ...) converted to RGB -> (H, W, 3) uint8 RGB (EXIF orientation
    not applied). PyramidBox's guide converts only 'L'; RGBA gives the same values, palette/CMYK would be garbage
    there and are proper RGB here."""
    with Image.open(path) as im:
        img = im.convert("RGB") if im.mode != "RGB" else im.copy()
    return np.asarray(img)


def letterbox(img: np.ndarray, canvas: int) -> np.ndarray:
    """Scale the long side to ``canvas`` with ``int(side / (max(w, h) / canvas))`` (may give canvas - 1, e.g.
    683 -> 999), OpenCV INTER_LINEAR on the uint8 image, zero padding at the bottom and right: (canvas, canvas, C)."""
    import cv2

    h, w = img.shape[:2]
    scale = max(w, h) / float(canvas)
    new_w, new_h = int(w / scale), int(h / scale)
    if new_w < 1 or new_h < 1:
        raise ValueError(f"image of {w}x{h} pixels is too thin to letterbox into {canvas}x{canvas}")
    resized = cv2.resize(img, (new_w, new_h))
    return cv2.copyMakeBorder(resized, 0, canvas - new_h, 0, canvas - new_w, cv2.BORDER_CONSTANT, value=[0, 0, 0])


def read_bgr_resized_minus_mean(path: str | os.PathLike, size: int,
                                means_bgr: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """``cv2.imread`` (BGR, EXIF orientation applied; grayscale -> 3 equal channels) -> ``cv2.resize`` of the
    uint8 image to size x size, INTER_LINEAR, no aspect keeping -> float32 - means (BGR order; no /255, no std) ->
    CHW. Returns the (3, size, size) float32 array and the decoded image's (height, width)."""
    import cv2

    img = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"OpenCV cannot decode {path}")
    h, w = img.shape[:2]
    x = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    x -= means_bgr
    return np.ascontiguousarray(x.transpose(2, 0, 1)), (h, w)
