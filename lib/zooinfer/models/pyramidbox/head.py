"""PyramidBox's head: prior boxes, decoding and upstream's test-phase ``Detect`` (threshold, torch-ordered top-k,
NMS) for one view (docs/models/pyramidbox.md 6).

Boxes are normalised [0, 1] xyxy of the letterboxed canvas.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

from ...boxes import nms

#: yxlijun/Pyramidbox.pytorch ``data/config.py`` (docs/models/pyramidbox.md 6.1-6.2); KEEP_TOP_K (750) is bbox voting's cap
PYRAMIDBOX_CFG = dict(steps=(4, 8, 16, 32, 64, 128), anchor_sizes=(16, 32, 64, 128, 256, 512), variance=(0.1, 0.2),
                      conf_thresh=0.05, nms_thresh=0.3, top_k=5000)


@lru_cache(maxsize=8)
def _pyramidbox_priors(height: int, width: int, feature_maps: tuple, steps: tuple, sizes: tuple) -> np.ndarray:
    blocks = []
    for (fh, fw), step, size in zip(feature_maps, steps, sizes):
        f_kw, f_kh = width / step, height / step  # not the map size: 1000 / 16 = 62.5 for a 62-wide map
        i, j = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")  # row-major: i (row) outer
        cx, cy = ((j + 0.5) / f_kw).ravel(), ((i + 0.5) / f_kh).ravel()
        blocks.append(np.stack([cx, cy, np.full_like(cx, size / width), np.full_like(cx, size / height)], axis=1))
    out = np.concatenate(blocks).astype(np.float32)  # Python float64 -> float32 (torch.Tensor(list)); no clipping
    out.flags.writeable = False
    return out


def pyramidbox_priors(height: int, width: int, feature_maps: Sequence[Sequence[int]],
                      steps: Sequence[int] = PYRAMIDBOX_CFG["steps"],
                      anchor_sizes: Sequence[int] = PYRAMIDBOX_CFG["anchor_sizes"]) -> np.ndarray:
    """Upstream ``PriorBox`` for an input of ``height`` x ``width``: float32 ``(A, 4)`` cx cy w h normalised to the
    input, one square anchor per location, layer by layer, row-major (read-only, cached).

    ``feature_maps``: the six source maps' (H_k, W_k) (1000x1000: 250, 125, 62, 31, 16, 8). Centres
    ``(j + 0.5) / (W / step_k)``, sizes ``anchor_k / W`` (and H for y), computed in float64, stored as float32."""
    fm = tuple((int(h), int(w)) for h, w in feature_maps)
    return _pyramidbox_priors(int(height), int(width), fm, tuple(steps), tuple(anchor_sizes))


def pyramidbox_detect(boxes: np.ndarray, scores: np.ndarray, *, conf_thresh: float = PYRAMIDBOX_CFG["conf_thresh"],
                      nms_thresh: float = PYRAMIDBOX_CFG["nms_thresh"],
                      top_k: int = PYRAMIDBOX_CFG["top_k"]) -> np.ndarray:
    """Upstream test-phase ``Detect`` for one image's face class: float32 rows ``(K, 5)`` score x1 y1 x2 y2.

    ``boxes (A, 4)`` decoded xyxy, ``scores (A,)`` softmax face probability. Candidates: score > 0.05 (float32
    compare, as ``gt`` on a float tensor). Their scores are ordered with ``torch.sort`` (ascending; the CPU sort is
    not stable for large inputs, so ties are ordered exactly as upstream's call orders them) and the last ``top_k``
    (5000) are kept. Greedy NMS from the highest: suppress IoU > 0.3 (float32 compare of
    ``inter / ((area_rest - inter) + area_kept)``, areas without +1). Rows in keep order (descending score), no
    padding (upstream zero-pads to 5000). ``nms`` below gets each candidate's rank in that order as its score, so
    it follows the torch order exactly.
    """
    import torch

    b = np.asarray(boxes, dtype=np.float32)
    s = np.asarray(scores, dtype=np.float32)
    if b.ndim != 2 or b.shape[1] != 4 or s.shape != (b.shape[0],):
        raise ValueError(f"pyramidbox_detect: boxes must be (A, 4) and scores (A,), got {b.shape} and {s.shape}")
    cand = np.flatnonzero(s > np.float32(conf_thresh))
    if cand.size == 0:  # upstream's nms returns a bare tensor here and Detect fails to unpack it: we return nothing
        return np.zeros((0, 5), dtype=np.float32)
    _, idx = torch.from_numpy(np.ascontiguousarray(s[cand])).sort(0)  # ascending, as upstream nms
    order = cand[idx.numpy()[-top_k:]]
    kept = order[nms(b[order], np.arange(order.size), np.float32(nms_thresh), union="b-i+a")]
    rows = np.empty((kept.size, 5), dtype=np.float32)
    rows[:, 0] = s[kept]
    rows[:, 1:] = b[kept]
    return rows
