"""SSD300's head geometry and the guide's selection: default boxes, decoding and ``ssd_postprocess.py``'s
class-aware NMS for one image (docs/models/ssd_resnet34.md 6).

Boxes are normalised [0, 1] xyxy; labels are 0-based foreground class indices (model class k >= 1 -> label k - 1).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np

from ...boxes import batched_nms

#: NVIDIA / MLPerf SSD300 ``dboxes300_coco()`` constants (docs/models/ssd_resnet34.md 6.1)
SSD300_COCO = dict(fig_size=300, feat_size=(38, 19, 10, 5, 3, 1), steps=(8, 16, 32, 64, 100, 300),
                   scales=(21, 45, 99, 153, 207, 261, 315), aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)))


@lru_cache(maxsize=8)
def _ssd_default_boxes(fig_size: int, feat_size: tuple, steps: tuple, scales: tuple,
                       aspect_ratios: tuple) -> np.ndarray:
    blocks = []
    for idx, sfeat in enumerate(feat_size):
        fk = fig_size / steps[idx]
        sk1 = scales[idx] / fig_size
        sk2 = scales[idx + 1] / fig_size
        sk3 = math.sqrt(sk1 * sk2)
        sizes = [(sk1, sk1), (sk3, sk3)]
        for alpha in aspect_ratios[idx]:
            w, h = sk1 * math.sqrt(alpha), sk1 / math.sqrt(alpha)
            sizes += [(w, h), (h, w)]
        i, j = np.meshgrid(np.arange(sfeat), np.arange(sfeat), indexing="ij")  # row-major: i (row) outer
        cx, cy = ((j + 0.5) / fk).ravel(), ((i + 0.5) / fk).ravel()
        for w, h in sizes:  # size-major: all locations of one size, then the next size
            blocks.append(np.stack([cx, cy, np.full_like(cx, w), np.full_like(cx, h)], axis=1))
    boxes = np.clip(np.concatenate(blocks).astype(np.float32), 0.0, 1.0)  # float64 -> float32, then clamp all four
    boxes.flags.writeable = False
    return boxes


def ssd_default_boxes(fig_size: int = 300, feat_size: Sequence[int] = SSD300_COCO["feat_size"],
                      steps: Sequence[int] = SSD300_COCO["steps"], scales: Sequence[int] = SSD300_COCO["scales"],
                      aspect_ratios: Sequence[Sequence[int]] = SSD300_COCO["aspect_ratios"]) -> np.ndarray:
    """SSD default boxes, float32 ``(A, 4)`` cx cy w h in [0, 1] (8732 for SSD300), read-only and cached.

    Order = the head's flattening (default-box-major within a layer): per layer, per size (s1, s1), (s3, s3), then
    (s1*sqrt(a), s1/sqrt(a)), (s1/sqrt(a), s1*sqrt(a)) per ratio a; per row i; per column j. Centres use
    fk = fig_size / step (not the feature size); computed in float64, rounded to float32, all four values clamped
    to [0, 1] (as upstream ``DefaultBoxes``)."""
    return _ssd_default_boxes(int(fig_size), tuple(feat_size), tuple(steps), tuple(scales),
                              tuple(tuple(a) for a in aspect_ratios))


def ssd_layer_offsets(feat_size: Sequence[int] = SSD300_COCO["feat_size"],
                      aspect_ratios: Sequence[Sequence[int]] = SSD300_COCO["aspect_ratios"]) -> list[int]:
    """Start index of each layer along the anchor axis (SSD300: 0, 5776, 7942, 8542, 8692, 8728)."""
    counts = [(2 + 2 * len(a)) * f * f for f, a in zip(feat_size, aspect_ratios)]
    return [int(v) for v in np.concatenate([[0], np.cumsum(counts)[:-1]])]


def ssd_decode(ploc: np.ndarray, plabel: np.ndarray, dboxes: np.ndarray | None = None, scale_xy: float = 0.1,
               scale_wh: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """One image's SSD outputs -> (xyxy boxes (A, 4) float32 normalised, softmax probabilities (A, C) float32).

    ``ploc (4, A)`` encoded offsets, ``plabel (C, A)`` raw logits (class 0 = background). Boxes:
    cx = (0.1*tx)*dw + dcx, w = exp(0.2*tw)*dw, then xyxy = cx -+ w/2; no clipping. Softmax over all C logits.
    Computed with torch float32 operations in the order of the guide's ``scale_back_batch`` (same softmax and exp
    kernels as the reference, so the results are bit-identical to it; the inputs are not modified).
    """
    import torch
    import torch.nn.functional as F

    d = torch.tensor(ssd_default_boxes() if dboxes is None else np.asarray(dboxes), dtype=torch.float32)
    b = torch.from_numpy(np.array(ploc, dtype=np.float32, copy=True))[None].permute(0, 2, 1)
    s = torch.from_numpy(np.ascontiguousarray(plabel, dtype=np.float32))[None].permute(0, 2, 1)
    with torch.no_grad():
        b[:, :, :2] = scale_xy * b[:, :, :2]
        b[:, :, 2:] = scale_wh * b[:, :, 2:]
        b[:, :, :2] = b[:, :, :2] * d[None, :, 2:] + d[None, :, :2]
        b[:, :, 2:] = b[:, :, 2:].exp() * d[None, :, 2:]
        l, t = b[:, :, 0] - 0.5 * b[:, :, 2], b[:, :, 1] - 0.5 * b[:, :, 3]
        r, btm = b[:, :, 0] + 0.5 * b[:, :, 2], b[:, :, 1] + 0.5 * b[:, :, 3]
        boxes = torch.stack([l, t, r, btm], dim=-1)[0]
        probs = F.softmax(s, dim=-1)[0]
    return boxes.numpy(), probs.numpy()


def ssd_select(boxes: np.ndarray, probs: np.ndarray, *, score_threshold: float = 0.05, max_anchors: int = 200,
               iou_threshold: float = 0.5, max_detections: int = 200,
               coordinate_trick: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The SSD-ResNet34 guide's selection (``ssd_postprocess.py``, docs/models/ssd_resnet34.md 6.3) for one image.

    ``boxes (A, 4)`` normalised xyxy and ``probs (A, 1 + K)`` softmax probabilities with background in column 0.
    1. boxes -> (boxes + 1) / 2; 2. keep anchors whose best foreground probability > 0.05 (float32 compare);
    3. at most the 200 best of them (by that probability); 4. every kept anchor with every one of the K classes
    (no per-class threshold); 5. class-aware NMS, IoU > 0.5 (torchvision 0.6 ``batched_nms``: coordinate trick);
    6. boxes -> boxes * 2 - 1; 7. the 200 highest scores. Returns (boxes (D, 4) normalised xyxy float32,
    labels (D,) 0-based foreground class, scores (D,) float32), in descending score order.
    """
    b = np.asarray(boxes, dtype=np.float32)
    p = np.asarray(probs, dtype=np.float32)[:, 1:]
    k = p.shape[1]
    b = (b + np.float32(1)) / np.float32(2)
    best = p.max(axis=1)
    keep = np.flatnonzero(best > np.float32(score_threshold))
    if keep.size > max_anchors:
        keep = keep[np.argsort(-best[keep], kind="stable")[:max_anchors]]
    cand_boxes = np.repeat(b[keep], k, axis=0)  # anchor-major, class-minor (as ``repeat(1, 80, 1).view(-1, 4)``)
    cand_scores = p[keep].reshape(-1)
    cand_labels = np.tile(np.arange(k, dtype=np.int64), keep.size)
    kept = batched_nms(cand_boxes, cand_scores, cand_labels, iou_threshold, coordinate_trick=coordinate_trick,
                       max_out=max_detections)
    out = cand_boxes[kept] * np.float32(2) - np.float32(1)
    return out.reshape(-1, 4), cand_labels[kept], cand_scores[kept]
