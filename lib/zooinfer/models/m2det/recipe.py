"""M2Det-512 (VGG16) on COCO 2014 minival (Ascend guide ACL_PyTorch/contrib/cv/detection/M2Det, 2022-08 revision).

Facts: docs/models/m2det.md. Network: models/m2det.py; priors, decoding, the per-class threshold, linear soft-NMS, the
per-class cap and the ``+1`` COCO boxes: boxes.py; layout, image order and OpenCV preprocessing: datasets/coco.py.
"""
from __future__ import annotations

import numpy as np

from .head import M2DET512, coco_xywh_plus_one, m2det_decode, m2det_select
from ...datasets.coco import coco2014_sample_root, id_from_file_name, open_coco2014_minival
from ...transforms import read_bgr_resized_minus_mean
from ...metrics.coco import COCO80_TO_91, COCO_METRIC_OPTIONS, STAT_NAMES, CocoAccumulator, result_rows
from ...recipes.base import BenchPlan, NotebookSpec, PerfRow, Published, Recipe, dataset_opener
from .network import build

NUM_PRIORS, NUM_CLASSES = 32760, 81


#: upstream ``BaseTransform(512, (104, 117, 123), (2, 0, 1))``: means subtracted from B, G, R in that order
MEANS_BGR = np.array([104, 117, 123], dtype=np.float32)
#: what the COCO reader knows of each sample that postprocessing reads; the sizes are the decoded image's (the
#: guide's gen_dataset_info.py), so they come from preprocessing, not from the annotation file
SAMPLE_META = ("image_id", "category_ids")


def input_array(image_path: str) -> tuple[np.ndarray, tuple[int, int]]:
    """OpenCV BGR -> 512x512 INTER_LINEAR on uint8 -> float32 minus (104, 117, 123) in B, G, R order ->
    (3, 512, 512) float32, and the decoded image's (height, width)."""
    return read_bgr_resized_minus_mean(image_path, M2DET512["size"], MEANS_BGR)


def preprocess(image_path: str) -> tuple[tuple[np.ndarray], dict]:
    """One view (:func:`input_array`) and meta: the **decoded** image's width and height, the image id (the digits
    ending the file stem) and the 80 standard category ids; through the pipeline the dataset's id and category
    order replace the last two (``SAMPLE_META``)."""
    x, (h, w) = input_array(image_path)
    return (x,), {"image_id": id_from_file_name(image_path), "width": w, "height": h, "category_ids": COCO80_TO_91}


def split_outputs(outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One image's two outputs -> (loc (32760, 4), probabilities (32760, 81)), routed by size, not by position or
    name: ONNX gives (``scores`` = loc, ``boxes`` = probabilities) and an OM converted with the guide's
    ``--out_nodes`` gives them the other way round (docs/models/m2det.md pitfall 1). Flat arrays (.bin files) are accepted."""
    if len(outputs) != 2:
        raise ValueError(f"M2Det has 2 outputs (loc, probabilities), got {len(outputs)}")
    a, b = (np.asarray(o, dtype=np.float32) for o in outputs)
    loc, probs = (a, b) if a.size < b.size else (b, a)
    if loc.size != NUM_PRIORS * 4 or probs.size != NUM_PRIORS * NUM_CLASSES:
        raise ValueError(f"M2Det outputs of one image must hold {NUM_PRIORS} x 4 and {NUM_PRIORS} x {NUM_CLASSES} "
                         f"values, got shapes {a.shape} and {b.shape}")
    return loc.reshape(NUM_PRIORS, 4), probs.reshape(NUM_PRIORS, NUM_CLASSES)


def detections(outputs: list[np.ndarray], meta: dict) -> np.ndarray:
    """The guide's COCO results for one image as float64 rows ``[image_id, x, y, w, h, score, category_id]``
    (w = x2 - x1 + 1, h = y2 - y1 + 1; decayed soft-NMS scores), class by class (ascending), soft-NMS order within."""
    loc, probs = split_outputs(outputs)
    boxes = m2det_decode(loc, int(meta["width"]), int(meta["height"]))
    cats = np.asarray(meta["category_ids"], dtype=np.float64)
    parts = []
    for j, rows in m2det_select(boxes, probs):
        part = np.empty((len(rows), 7))
        part[:, 0] = meta["image_id"]
        part[:, 1:5] = coco_xywh_plus_one(rows)
        part[:, 5] = rows[:, 4]
        part[:, 6] = cats[j - 1]
        parts.append(part)
    return np.concatenate(parts) if parts else np.zeros((0, 7))


def postprocess(outputs: list[np.ndarray], meta: dict) -> list[dict]:
    """loc (32760, 4) and probabilities (32760, 81), either order -> COCO result dicts (``image_id``,
    ``category_id``, ``bbox`` [x, y, w, h] original pixels with the +1 convention, ``score``) in the guide's order."""
    return [{"image_id": int(r[0]), "category_id": int(r[6]), "bbox": [r[1], r[2], r[3], r[4]], "score": r[5]}
            for r in detections(outputs, meta).tolist()]


open_dataset = dataset_opener(open_coco2014_minival, coco2014_sample_root)


def new_accumulator(dataset, evaluator: str = "pycocotools") -> CocoAccumulator:
    """pycocotools bbox evaluation on the annotation file as loaded (real areas), over every listed image that was
    predicted (all 5,000 normally; images without ground truth count: their detections are false positives)."""
    return CocoAccumulator(dataset.extra["annotations"], img_ids=[s.info["image_id"] for s in dataset],
                           predicted_only=True, evaluator=evaluator)


_GUIDE = "Ascend M2Det README"
_UPSTREAM = dict(zip(STAT_NAMES, (0.378, 0.560, 0.409, 0.194, 0.431, 0.539, 0.303, 0.483, 0.511, 0.262, 0.577, 0.700)))
NOTEBOOK = NotebookSpec(
    title="M2Det-512 (VGG16) on COCO 2014 minival",
    guide="ACL_PyTorch/contrib/cv/detection/M2Det",
    steps="detections (soft-NMS) -> COCO mAP",
    guide_steps="pth2onnx, preprocess to `.bin`, benchmark / ais_bench, postprocess with the upstream soft-NMS and "
                "pycocotools",
    facts="preprocessing constants, ONNX names, priors, soft-NMS parameters",
    intro="`data_root` holds `images/val2014/` and `annotations/instances_minival2014.json`; the guide's "
          "`vgg16_reducedfc.pth` is not needed (it only initialises the backbone before the checkpoint overwrites it). "
          "The network is heavy (about 130 GMAC per 512x512 image): on a CPU expect seconds per image.",
    data_root_help="COCO root holding images/val2014/ and annotations/, None for the embedded sample",
    data_example="/data/coco",
    results_help="The 12 COCOeval bbox statistics (over every evaluated minival image, those without annotations "
                 "included), AP against every published figure, and the first images with their top detections "
                 "after soft-NMS (dashed: ground truth). Scores are the decayed soft-NMS scores; boxes carry the "
                 "guide's +1 width/height convention.",
    defaults=(("bs", 2), ("limit", 4), ("batch_sizes", [1])),
)
RECIPE = Recipe(
    name="m2det",
    task="detection",
    input_shape=(3, 512, 512),
    input_names=["image"],
    output_names=["scores", "boxes"],  # sic: "scores" holds the loc offsets, "boxes" the class probabilities
    opset=11,
    checkpoint_file="m2det512_vgg.pth",
    checkpoint_md5=None,  # not published by upstream or the guide
    published=Published(
        accuracy={"AP": 0.378},
        source=f"{_GUIDE} revision 2022-08 (COCO minival2014, 310P, bs 1/4/8/16/32) = upstream README 37.8",
        other=(
            ("upstream README eval_result.png (GPU model + CPU soft-NMS)", _UPSTREAM),
            (f"{_GUIDE} revision 2023-01 (val2017, 310P3)", {"AP": 0.378}),
        ),
        performance=(
            PerfRow("Ascend 310 (x4: 4 chips per card)", f"{_GUIDE} revision 2022-08 (CANN 5.1.RC1, benchmark)",
                    {1: 34.212, 4: 34.086, 8: 34.142, 16: 34.32, 32: 34.303}),
            PerfRow("Ascend 310P", f"{_GUIDE} revision 2022-08 (CANN 5.1.RC1, benchmark)",
                    {1: 37.817, 4: 54.707, 8: 46.461, 16: 47.113, 32: 46.84}),
            PerfRow("NVIDIA T4", f"{_GUIDE} revision 2022-08 (TensorRT)",
                    {1: 50.658, 4: 60.997, 8: 52.89, 16: 62.186, 32: 64.602}),
            PerfRow("Ascend 310P3", f"{_GUIDE} revision 2023-01 (CANN 6.0.RC1, ais_bench --loop 1000)",
                    {1: 45.349, 4: 65.976, 8: 62.795, 16: 62.974, 32: 60.897, 64: 56.011}),
        ),
    ),
    build=build,
    bench=BenchPlan(batch_sizes=(1, 8), stream=24, memory=(1000, 10000), memory_quick=(100, 1000), heavy=True),
    preprocess=preprocess,
    sample_meta=SAMPLE_META,
    postprocess=postprocess,
    open_dataset=open_dataset,
    new_accumulator=new_accumulator,
    metric_options=COCO_METRIC_OPTIONS,
    notebook=NOTEBOOK,
    headline=STAT_NAMES,
    compact=result_rows,
    notes=(
        "vgg16_reducedfc.pth, which the guide also downloads, is not needed: upstream init_net loads it into the "
        "backbone only to initialise it before m2det512_vgg.pth overwrites every tensor (strict load of all 887 "
        "entries), so it has no effect on the exported model.",
        "The checkpoint is read as published: a flat state dict (upstream torch.save(net.state_dict())); a leading "
        "'module.' (DataParallel) is stripped and missing num_batches_tracked (torch 0.4.0 files) are tolerated, "
        "as the guide's strict load does. Its md5 is not published, so none is checked.",
        "ONNX output names follow the guide and are swapped relative to their contents: 'scores' is the box "
        "regression (N, 32760, 4), 'boxes' the softmax probabilities (N*32760, 81, rows image-major). The OM that "
        "atc builds with the guide's --out_nodes has the probabilities first; postprocessing routes the two "
        "outputs by size, so either order works.",
        "NMS is the upstream Cython cpu_soft_nms exactly as the guide calls it: cpu_soft_nms(dets, 0.45, "
        "method=1) puts the config's IoU 0.45 into the unused sigma, so the effective soft-NMS is linear with "
        "Nt 0.3 and pruning below 0.001 (not hard NMS at 0.45). It is reimplemented in numpy (Cython is not a "
        "dependency) with the same float32/float64 arithmetic: bit-identical to the compiled upstream function on "
        "240 reference cases. It stops after 50 selections per class, which is exact (earlier rows never change).",
        "Images: all 5,000 minival ids in ascending order, those without annotations included (their detections "
        "are false positives), as the guide. Image sizes come from the decoded image. An image missing on disk is "
        "skipped, counted and named; the mAP is then over fewer images (a warning says how many).",
        "The eight 'leach' convolutions are one shared module applied to the same input: computed once (exact); "
        "the exported graph has one such Conv instead of eight.",
        "instances_minival2014.json is not part of the official COCO downloads (the 5k minival split of "
        "Detectron-era code); the guide's 2023 revision evaluates val2017 instead (same 37.8%).",
        "Preprocessing uses the installed OpenCV; the guide pins opencv-python 4.5.3.56. Other versions may differ "
        "in rare pixels of the INTER_LINEAR resize (not verified).",
    ),
    # --out_nodes as the guide's (probabilities first, then loc); node names of this torch version's export
    atc={"soc_version": "Ascend310P3", "out_nodes": "/softmax/Softmax:0;/Reshape_12:0"},
)
