"""M2Det-512's head: priors, decoding, the guide's per-class threshold + linear soft-NMS + per-class cap, and the
``+1`` COCO boxes (docs/models/m2det.md 6).

Boxes are xyxy in original image pixels after decoding.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np

from ...boxes import decode_center_offsets, soft_nms

#: configs/m2det512_vgg.py ``anchor_config`` with upstream ``mk_anchors(512, 512, ...)`` (docs/models/m2det.md 6.1) and
#: ``test_cfg`` as the guide really runs it (6.3-6.4): soft-NMS gets ``iou`` 0.45 in its unused ``sigma`` slot, so the
#: effective parameters are its defaults Nt 0.3 and pruning threshold 0.001, method 1 (linear)
M2DET512 = dict(size=512, steps=(8, 16, 32, 64, 128, 256), size_pattern=(0.06, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05),
                variance=(0.1, 0.2), score_threshold=0.1, keep_per_class=50, soft_nms_nt=0.3,
                soft_nms_threshold=0.001, soft_nms_method=1)


def m2det_feature_maps(size: int = 512, num_layers: int = 6, size_the: int = 2) -> list[int]:
    """Upstream ``reglayer_scale``: halve ``size`` with ceil, keep from the 3rd halving on, and append
    ``last - size_the`` (512: [64, 32, 16, 8, 4, 2])."""
    out = []
    for i in range(num_layers + 1):
        size = math.ceil(size / 2.0)
        if i >= 2:
            out.append(int(size))
            if i == num_layers and size_the:
                out.append(int(size - size_the))
    return out


@lru_cache(maxsize=4)
def _m2det_priors(size: int, steps: tuple, size_pattern: tuple) -> np.ndarray:
    blocks = []
    for k, f in enumerate(m2det_feature_maps(size, len(steps))):
        fk = size / steps[k]
        s = round(size_pattern[k] * size, 2) / size  # upstream get_scales: round(p * size, 2), then / min_dim
        s_prime = math.sqrt(s * (round(size_pattern[k + 1] * size, 2) / size))
        sizes = [(s, s), (s_prime, s_prime)]
        for ar in (2, 3):
            sizes += [(s * math.sqrt(ar), s / math.sqrt(ar)), (s / math.sqrt(ar), s * math.sqrt(ar))]
        i, j = np.meshgrid(np.arange(f), np.arange(f), indexing="ij")  # row i outer, column j inner
        cx, cy = (j + 0.5) / fk, (i + 0.5) / fk
        wh = np.array(sizes)  # (6, 2)
        block = np.empty((f, f, len(sizes), 4))
        block[..., 0], block[..., 1] = cx[..., None], cy[..., None]
        block[..., 2:] = wh
        blocks.append(block.reshape(-1, 4))  # location-major: the 6 anchors of a cell, then the next cell
    out = np.clip(np.concatenate(blocks).astype(np.float32), 0.0, 1.0)  # float64 -> float32, clamp all four
    out.flags.writeable = False
    return out


def m2det_priors(size: int = M2DET512["size"], steps: Sequence[int] = M2DET512["steps"],
                 size_pattern: Sequence[float] = M2DET512["size_pattern"]) -> np.ndarray:
    """Upstream M2Det ``PriorBox``: float32 ``(P, 4)`` cx cy w h in [0, 1] (32,760 for 512), read-only, cached.

    Per scale k (map f x f, fk = size / step_k), per row i, per column j, 6 priors: (s, s), (s', s'),
    (s*sqrt2, s/sqrt2), (s/sqrt2, s*sqrt2), (s*sqrt3, s/sqrt3), (s/sqrt3, s*sqrt3) with s = min_k / size,
    s' = sqrt(s * max_k / size); centres ((j + 0.5) / fk, (i + 0.5) / fk). Computed in float64, stored as float32,
    all four columns clamped to [0, 1] (docs/models/m2det.md 6.1)."""
    return _m2det_priors(int(size), tuple(steps), tuple(size_pattern))


def m2det_level_offsets(size: int = M2DET512["size"], num_layers: int = 6, anchors: int = 6) -> list[int]:
    """Start of each scale along the prior axis (512: 0, 24576, 30720, 32256, 32640, 32736)."""
    counts = [anchors * f * f for f in m2det_feature_maps(size, num_layers)]
    return [int(v) for v in np.concatenate([[0], np.cumsum(counts)[:-1]])]


def m2det_decode(loc: np.ndarray, width: int, height: int, priors: np.ndarray | None = None,
                 variance: Sequence[float] = M2DET512["variance"]) -> np.ndarray:
    """One image's encoded offsets ``loc (P, 4)`` -> float32 xyxy boxes ``(P, 4)`` in original-image pixels.

    Upstream ``Detect`` + ``image_forward``: the same ``decode`` as PyramidBox's (x2 = x1 + w), then times float32
    ``[W, H, W, H]`` (the decoded image's size); no clipping. torch float32 ops, bit-identical to upstream."""
    import torch

    p = m2det_priors() if priors is None else priors
    boxes = torch.from_numpy(decode_center_offsets(np.asarray(loc, dtype=np.float32).reshape(-1, 4), p, variance))
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    return (boxes * scale).numpy()


def m2det_select(boxes: np.ndarray, probs: np.ndarray, *, score_threshold: float = M2DET512["score_threshold"],
                 keep_per_class: int = M2DET512["keep_per_class"], nt: float = M2DET512["soft_nms_nt"],
                 threshold: float = M2DET512["soft_nms_threshold"],
                 method: int = M2DET512["soft_nms_method"]) -> list[tuple[int, np.ndarray]]:
    """Upstream ``nms_process`` as the M2Det guide runs it, for one image (docs/models/m2det.md 6.3-6.4).

    ``boxes (P, 4)`` xyxy pixels, ``probs (P, C)`` softmax with background in column 0. For each class j = 1..C-1:
    candidates with probability > 0.1 (float32 compare), float32 rows [x1, y1, x2, y2, p] in prior order, linear
    soft-NMS (Nt 0.3, pruning 0.001), the first 50 rows with their decayed scores. No per-image cap.
    Returns ``[(j, rows (k, 5) float32), ...]`` for the classes with at least one row, j ascending."""
    b = np.asarray(boxes, dtype=np.float32)
    p = np.asarray(probs, dtype=np.float32)
    mask = p[:, 1:] > np.float32(score_threshold)
    out = []
    for j in np.flatnonzero(mask.any(axis=0)) + 1:
        inds = np.flatnonzero(mask[:, j - 1])
        dets = np.empty((inds.size, 5), dtype=np.float32)
        dets[:, :4] = b[inds]
        dets[:, 4] = p[inds, j]
        n = soft_nms(dets, nt=nt, threshold=threshold, method=method, max_keep=keep_per_class)
        if n:
            out.append((int(j), dets[:min(n, keep_per_class)]))
    return out


def coco_xywh_plus_one(rows: np.ndarray) -> np.ndarray:
    """xyxy rows -> float64 COCO ``[x, y, w, h]`` with the legacy pixel convention w = x2 - x1 + 1, h = y2 - y1 + 1
    (computed in float64 from the float32 values, as the guide's ``_coco_results_one_category``)."""
    d = np.asarray(rows)[:, :4].astype(np.float64)
    return np.stack([d[:, 0], d[:, 1], d[:, 2] - d[:, 0] + 1, d[:, 3] - d[:, 1] + 1], axis=1)
