"""PCB (ResNet-50 part model, 384x128) on Market-1501 (Ascend guide ACL_PyTorch/contrib/cv/face/reid_PCB_baseline).
Facts: docs/models/pcb.md.

Flow: query and gallery images (one dataset, queries first) -> Pillow bilinear 128x384 -> ImageNet normalisation ->
network -> ``output_1`` (2048, 6, 1) per-part-normalised features flattened to 12,288 values -> squared Euclidean
distances (the guide's torch ``addmm``) -> Market-1501 CMC top-1/5/10 + mAP (``zooinfer.metrics.reid``).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from ...datasets.market1501 import market1501_sample_root, open_market1501
from ...errors import MetricInputError
from ...transforms import read_pil_rgb
from ...metrics import reid
from ...recipes.base import BenchPlan, NotebookSpec, PerfRow, Published, Recipe, dataset_opener
from .network import build

INPUT_H, INPUT_W = 384, 128
#: torchvision 0.2.1 ``Normalize`` constants (RGB), applied in float32
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
FEATURE_SHAPE = (2048, 6, 1)
FEATURE_DIM = int(np.prod(FEATURE_SHAPE))


def input_array(image_path: str) -> np.ndarray:
    """PIL RGB -> resize to 128x384 (W x H) Pillow bilinear unless already that size (upstream ``RectScale``; no
    aspect ratio, no crop) -> /255 -> (x - mean) / std in float32: (3, 384, 128) float32, as the guide's ``.bin``."""
    img = read_pil_rgb(image_path)
    if img.size != (INPUT_W, INPUT_H):
        img = img.resize((INPUT_W, INPUT_H), Image.BILINEAR)
    x = np.asarray(img, dtype=np.uint8).astype(np.float32) / np.float32(255.0)
    x = (x - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess(image_path: str) -> tuple[tuple[np.ndarray], dict]:
    """One view (:func:`input_array`); no meta (split, pid and camera come from the dataset)."""
    return (input_array(image_path),), {}


def postprocess(outputs: list[np.ndarray], meta: dict) -> np.ndarray:
    """The retrieval feature: ``output_1`` (2048, 6, 1) flattened row-major to (12288,) float32 (index c * 6 + p),
    nothing else (the guide reads only ``<stem>_1.bin``; the six logits are ignored)."""
    feat = np.asarray(outputs[0], dtype=np.float32)
    if feat.size != FEATURE_DIM:
        raise MetricInputError(f"PCB postprocess: output_1 has shape {feat.shape}, expected {FEATURE_SHAPE}")
    return feat.reshape(FEATURE_DIM)


def new_accumulator(dataset: Any) -> reid.ReidAccumulator:
    """The streaming Market-1501 evaluator over ``dataset``'s query/gallery counts, with the guide's distance
    (squared Euclidean of the flattened part features: torch norms + ``addmm``, :func:`reid.pairwise_distance`)."""
    return reid.ReidAccumulator(dataset, distance=reid.pairwise_distance)


open_dataset = dataset_opener(open_market1501, market1501_sample_root, name="market1501-sample")


NOTEBOOK = NotebookSpec(
    title="PCB on Market-1501",
    guide="ACL_PyTorch/contrib/cv/face/reid_PCB_baseline",
    steps="query/gallery features -> CMC + mAP",
    guide_steps="pth2onnx, preprocess to `.bin`, benchmark, postprocess with CMC/mAP",
    # the cheapest model: its embedded run also shows the optional sections (an INT8 variant, LoadGen Offline)
    defaults=(("compare", ["onnxruntime-int8"]), ("calibration", 2), ("scenarios", ["Offline"])),
    intro="`PCB_3_7.pt` is a whole pickled module: it is read with a restricted unpickler, without the upstream "
          "`reid` package or torchvision, and nothing in the file is executed.",
    data_root_help="Market-1501 root holding query/ and bounding_box_test/, None for the embedded sample",
    data_example="/data/Market-1501-v15.09.15",
    results_help="CMC curve (Market-1501 protocol: same identity seen by the query's own camera left out) and one "
                 "query with its nearest gallery images (green = same person, red = another person or a distractor).",
)


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
    build=build,
    # --quick keeps 2,000 short samples so that both memory streams include gallery blocks
    bench=BenchPlan(batch_sizes=(1, 8, 32), stream=128, memory=(2000, 20000), memory_quick=(2000, 20000)),
    preprocess=preprocess,
    postprocess=postprocess,
    open_dataset=open_dataset,
    new_accumulator=new_accumulator,
    notebook=NOTEBOOK,
    headline=("top1", "top5", "top10", "mAP"),
    dynamic_axes={"input_1": {0: "-1"}, "output_1": {0: "-1"}},
    notes=(
        "PCB_3_7.pt is a whole pickled nn.Module: it is read with a restricted unpickler (the allow-listed "
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
