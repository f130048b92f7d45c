"""PCB (ResNet-50 part model, 384x128) on Market-1501 (Ascend guide ACL_PyTorch/contrib/cv/face/reid_PCB_baseline).
Facts: specs/pcb.md.

Flow: query and gallery images (one dataset, queries first) -> Pillow bilinear 128x384 -> ImageNet normalisation ->
network -> ``output_1`` (2048, 6, 1) per-part-normalised features flattened to 12,288 values -> squared Euclidean
distances (the guide's torch ``addmm``) -> Market-1501 CMC top-1/5/10 + mAP (``zooinfer.metrics.reid``).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from ..datasets.market1501 import market1501_sample_root, open_market1501
from ..errors import MetricInputError
from ..metrics import reid
from .base import PerfRow, Published, Recipe, dataset_opener

INPUT_H, INPUT_W = 384, 128
#: torchvision 0.2.1 ``Normalize`` constants (RGB), applied in float32
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
FEATURE_SHAPE = (2048, 6, 1)
FEATURE_DIM = int(np.prod(FEATURE_SHAPE))


def preprocess(image_path: str) -> tuple[np.ndarray, dict]:
    """PIL RGB -> resize to 128x384 (W x H) Pillow bilinear unless already that size (upstream ``RectScale``; no
    aspect ratio, no crop) -> /255 -> (x - mean) / std in float32: (3, 384, 128) float32, as the guide's ``.bin``."""
    with Image.open(image_path) as im:
        img = im.convert("RGB")
    if img.size != (INPUT_W, INPUT_H):
        img = img.resize((INPUT_W, INPUT_H), Image.BILINEAR)
    x = np.asarray(img, dtype=np.uint8).astype(np.float32) / np.float32(255.0)
    x = (x - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)), {}


def postprocess(outputs: list[np.ndarray], meta: dict) -> np.ndarray:
    """The retrieval feature: ``output_1`` (2048, 6, 1) flattened row-major to (12288,) float32 (index c * 6 + p),
    nothing else (the guide reads only ``<stem>_1.bin``; the six logits are ignored)."""
    feat = np.asarray(outputs[0], dtype=np.float32)
    if feat.size != FEATURE_DIM:
        raise MetricInputError(f"PCB postprocess: output_1 has shape {feat.shape}, expected {FEATURE_SHAPE}")
    return feat.reshape(FEATURE_DIM)


def _identity(sample: Any) -> tuple[str, int, int]:
    """(split, pid, camid) from ``sample.info`` (what ``open_market1501`` writes)."""
    info = getattr(sample, "info", None) or {}
    if info.get("split") not in ("query", "gallery") or "pid" not in info or "camid" not in info:
        raise MetricInputError(f"re-ID sample {getattr(sample, 'key', sample)!r}: info must hold split "
                               f"('query'/'gallery'), pid and camid, got {info!r}")
    return info["split"], int(info["pid"]), int(info["camid"])


class PartFeatureAccumulator:
    """Streams features into the query x gallery distance matrix without keeping gallery features.

    Query features are stored (float32: float16 moves distances by ~1e-4 and changed mAP; see the notes).
    Gallery features wait in blocks of ``block`` until every query of ``dataset`` has arrived, then become distance
    columns computed exactly as the guide (``reid.pairwise_distance``: torch norms + ``addmm``; a column does not
    depend on the block it was computed in, except on BLAS paths for very narrow matrices, avoided by padding short
    blocks to ``min_cols``). Both are allocated once at the dataset's sizes: for full Market-1501 165 MB of query
    features + the 214 MB distance matrix, instead of 948 MB of features. Works in any update order (gallery features
    then wait until the queries are in); rows/columns follow the order of arrival.
    """

    def __init__(self, dataset: Any = None, *, block: int = 256, min_cols: int = 64,
                 store_dtype: Any = np.float32) -> None:
        splits = [(getattr(s, "info", None) or {}).get("split") for s in (getattr(dataset, "samples", None) or [])]
        #: query / gallery counts of the dataset (None when unknown): buffers are allocated once at these sizes
        self.expected_queries = splits.count("query") or None
        self.expected_gallery = splits.count("gallery") or None
        self.block, self.min_cols, self.store_dtype = block, min_cols, np.dtype(store_dtype)
        self._qbuf: np.ndarray | None = None  # (expected_queries, D) when the count is known, else rows in _qlist
        self._qlist: list[np.ndarray] = []
        self._Q: np.ndarray | None = None  # the float32 query matrix, fixed once the queries are final
        self._Qnorm: np.ndarray | None = None  # its squared row norms, computed once (not a Q-sized temp per block)
        #: gallery features waiting for their distance columns, copied into one reused buffer (grown only while
        #: queries are still missing): no per-feature arrays, no stacking, and the batch outputs are let go at once
        self._gbuf: np.ndarray | None = None
        self._gn = 0
        #: one reused buffer for a block's (num_query, block) distance columns: a fresh one per block of a size that
        #: grows with the queries fragments the allocator's heap over a long run
        self._cols: np.ndarray | None = None
        self._dist: np.ndarray | None = None  # (num_query, capacity) distance columns, ``_filled`` of them valid
        self._filled = 0
        self.query_samples: list[Any] = []
        self.gallery_samples: list[Any] = []
        self.q_pids: list[int] = []
        self.q_camids: list[int] = []
        self.g_pids: list[int] = []
        self.g_camids: list[int] = []
        self._queries_final = False

    # ------------------------------------------------------------------------------------------------ streaming
    def update(self, sample: Any, feature: np.ndarray) -> None:
        """``sample.info`` holds ``split`` ('query' | 'gallery'), ``pid``, ``camid``; ``feature`` is (12288,)."""
        split, pid, camid = _identity(sample)
        f = np.asarray(feature, dtype=np.float32).reshape(-1)
        if split == "query":
            if self._queries_final:
                raise MetricInputError(f"re-ID: query {getattr(sample, 'key', sample)!r} arrived after the gallery "
                                       "distances were computed; all queries of the dataset were already counted")
            n = len(self.q_pids)
            if self.expected_queries is not None and n < self.expected_queries:
                if self._qbuf is None:
                    self._qbuf = np.empty((self.expected_queries, f.size), self.store_dtype)
                self._qbuf[n] = f
            else:
                self._qlist.append(f.astype(self.store_dtype))
            self.query_samples.append(sample)
            self.q_pids.append(pid)
            self.q_camids.append(camid)
            if self.expected_queries is not None and n + 1 == self.expected_queries:
                self._queries_final = True
        else:
            if self._gbuf is None or self._gn == len(self._gbuf):
                grown = np.zeros((max(self.block, self.min_cols, 2 * self._gn), f.size), np.float32)
                if self._gbuf is not None:
                    grown[:self._gn] = self._gbuf[:self._gn]
                self._gbuf = grown
            self._gbuf[self._gn] = f
            self._gn += 1
            self.gallery_samples.append(sample)
            self.g_pids.append(pid)
            self.g_camids.append(camid)
        if self._queries_final and self._gn >= self.block:
            self._flush()

    def _query_matrix(self) -> np.ndarray:
        if self._Q is None:
            rows = [] if self._qbuf is None else [self._qbuf[:min(len(self.q_pids), len(self._qbuf))]]
            rows += [np.stack(self._qlist)] if self._qlist else []
            q = rows[0] if len(rows) == 1 else np.concatenate(rows)
            self._Q = np.ascontiguousarray(q, dtype=np.float32)
            self._qbuf, self._qlist = None, []
            self._Qnorm = reid.squared_norms(self._Q)
        return self._Q

    def _flush(self) -> None:
        if not self._gn or not self.q_pids:
            return
        k, self._gn = self._gn, 0
        if k < self.min_cols:  # keep the GEMM on the same code path as the guide's one big matrix product
            self._gbuf[k:self.min_cols] = 0.0
        g = self._gbuf[:max(k, self.min_cols)]
        q = self._query_matrix()
        m, n = q.shape[0], g.shape[0]
        if self._cols is None or self._cols.size < m * n:
            self._cols = np.empty(m * n, np.float32)
        out = self._cols[:m * n].reshape(m, n)  # C-contiguous (m, n), as a fresh result would be
        cols = reid.pairwise_distance(q, g, query_sqnorm=self._Qnorm, out=out)[:, :k]
        if self._dist is None or self._filled + k > self._dist.shape[1]:  # first block, or more than listed
            cap = max(self.expected_gallery or 0, self._filled + k, 2 * self._filled)
            grown = np.empty((m, cap), np.float32)
            if self._dist is not None:
                grown[:, :self._filled] = self._dist[:, :self._filled]
            self._dist = grown
        self._dist[:, self._filled:self._filled + k] = cols
        self._filled += k

    # ------------------------------------------------------------------------------------------------ results
    def distances(self) -> np.ndarray:
        """The (num_query, num_gallery) float32 squared Euclidean distance matrix of everything received."""
        if not self.q_pids or not self.gallery_samples:
            raise MetricInputError(f"re-ID: need query and gallery features, got {len(self.q_pids)} query and "
                                   f"{len(self.gallery_samples)} gallery (a limit too small, or every image of one "
                                   "split unreadable?)")
        self._queries_final = True
        self._flush()
        return self._dist[:, :self._filled]

    def compute(self) -> dict[str, float]:
        """CMC top-1/5/10, mAP (fractions), valid-query count and split sizes."""
        out = reid.evaluate(self.distances(), self.q_pids, self.g_pids, self.q_camids, self.g_camids)
        out["n_query"], out["n_gallery"] = len(self.q_pids), len(self.g_pids)
        return out

    def cmc_curve(self, topk: int = 20) -> np.ndarray:
        """(topk,) CMC, Market-1501 configuration (the values behind top-1/5/10)."""
        return reid.cmc(self.distances(), self.q_pids, self.g_pids, self.q_camids, self.g_camids)[:topk]


open_dataset = dataset_opener(open_market1501, market1501_sample_root, name="market1501-sample")


RECIPE = Recipe(
    name="pcb",
    task="reid",
    input_shape=(3, INPUT_H, INPUT_W),
    input_names=["input_1"],
    # only output_1 is named by the guide; the six logits carry exporter-generated numbers there (use positions)
    output_names=["output_1", "logits_0", "logits_1", "logits_2", "logits_3", "logits_4", "logits_5"],
    opset=11,
    checkpoint_file="PCB_3_7.pt",
    checkpoint_md5="c5bc5ddabcbcc45f127ead797fe8cb35",
    published=Published(
        accuracy={"top1": 0.921, "top5": 0.969, "top10": 0.981},
        source="Ascend reid_PCB_baseline Readme.md, open-source PCB_3_7.pt (= OM on Ascend 310); no mAP published",
        other=(
            ("newer guide (ais_bench), Ascend310P3: 'Top1 92.1%', 'Top5 98.1%' (the top-10 value, label error)",
             {"top1": 0.921, "top10": 0.981}),
            ("upstream PCB_RPP_for_reID README (PyTorch 0.4.0, own training, approximate)", {"top1": 0.93, "mAP": 0.78}),
            ("Ascend training copy README, 8p 60 epochs, GPU", {"mAP": 0.772}),
            ("Ascend training copy README, 8p 60 epochs, NPU", {"mAP": 0.775}),
        ),
        performance=(
            PerfRow("Ascend 310 (per card = 4 chips, benchmark)", "guide Readme.md rev b4a996ca",
                    {1: 549.688, 4: 1296.72, 8: 1375.24, 16: 1411.96, 32: 1212.25, 64: 1188.12}),
            PerfRow("Ascend 310P", "guide Readme.md rev b4a996ca",
                    {1: 352.617, 4: 1512.1, 8: 1897.91, 16: 1492.53, 32: 1706.04, 64: 1857.43}),
            PerfRow("Ascend 310P, AOE tuned", "guide Readme.md rev b4a996ca",
                    {1: 1033.16, 4: 2364.58, 8: 2228.24, 16: 1999.29, 32: 2002.7, 64: 2039.35}),
            PerfRow("NVIDIA T4, TensorRT 7.2.3.4 fp16 (trtexec)", "guide Readme.md rev b4a996ca",
                    {1: 749.002, 4: 1209.63, 8: 1383.09, 16: 1495.91, 32: 1554.99, 64: 1578.09}),
            PerfRow("Ascend 310 after onnxsim + ReduceL2 split + autotune", "guide Readme.md rev 05360171",
                    {1: 1015.42, 4: 1415.364, 8: 1467.92, 16: 1449.656, 32: 1418.528}),
            PerfRow("Ascend 310P3 (ais_bench)", "newer PCB guide README",
                    {1: 975.7, 16: 2031.3, 32: 1888.9}),
        ),
    ),
    preprocess=preprocess,
    postprocess=postprocess,
    open_dataset=open_dataset,
    new_accumulator=lambda dataset: PartFeatureAccumulator(dataset),
    headline=("top1", "top5", "top10", "mAP"),
    dynamic_axes={"input_1": {0: "-1"}, "output_1": {0: "-1"}},
    notes=(
        "PCB_3_7.pt is a whole pickled nn.Module: it is read with a restricted unpickler (the spec's allow-listed "
        "class paths become inert stubs, any other global is refused), so neither the upstream reid package nor "
        "torchvision is needed and nothing in the file runs. Its pickled conv strides/paddings/BN eps are checked "
        "against the network (layer4 must be un-strided).",
        "Part pooling uses the Ascend resnet.diff constants (kernel = stride = (4, 8)); the network is only defined "
        "for 384x128 inputs, like the guide's.",
        "Query and gallery go through one dataset and one pipeline run (queries first); the guide runs two "
        "preprocess/benchmark passes into two folders. Features are keyed by file names from the listing, so the "
        "postprocess's '.jpg.jpg' special case is not needed.",
        "Gallery features are not kept: once all queries are in, they become distance columns in blocks of 256 "
        "(bit-identical to the guide's single addmm on this machine for 64+ gallery columns). Query features stay "
        "float32: stored as float16 they move distances by up to 1.2e-4 (2e-4 with float16 gallery too), reorder "
        "near-tied gallery entries of every query and changed mAP by 3e-6 (6e-6) on a confusable 300 x 2000 "
        "synthetic set (measured), so float16 is not used.",
        "Only output_1 is used; the six part logits are exported (the guide's graph has them) under the names "
        "logits_0..logits_5 instead of exporter-generated numbers.",
        "bins interop: one input folder for both splits (<stem>.bin); results may come from ais_bench (outputs "
        "counted from 0) or the old benchmark tool (from 1, as the guide's postprocess expects).",
    ),
    atc={"soc_version": "Ascend310P3"},
)
