"""DPN-131 on ImageNet-1k val (Ascend guide ACL_PyTorch/contrib/cv/classfication/DPN131). Facts: docs/models/dpn131.md."""
from __future__ import annotations


import numpy as np

from ...datasets.imagenet import imagenet_sample_root, open_imagenet
from ...transforms import center_crop, normalize_chw, read_pil_rgb, resize_short_side, to_unit_chw
from ...metrics.classification import TopKAccumulator, compact_logits
from ...recipes.base import BenchPlan, NotebookSpec, PerfRow, Published, Recipe, dataset_opener
from .network import build


#: the guide's constants (rounded versions of Cadene's 124/255, 117/255, 104/255 and 1/(0.0167*255)); docs/models/dpn131.md 4
MEAN = np.array([0.486, 0.459, 0.408], dtype=np.float32)
STD = np.array([0.235, 0.235, 0.235], dtype=np.float32)
RESIZE, CROP = 256, 224


def input_array(image_path: str) -> np.ndarray:
    """PIL RGB -> short side 256 (bilinear) -> center crop 224 -> /255 -> (x - MEAN) / STD: float32 (3, 224, 224)."""
    img = center_crop(resize_short_side(read_pil_rgb(image_path), RESIZE), CROP)
    return normalize_chw(to_unit_chw(img), MEAN, STD)


def preprocess(image_path: str) -> tuple[tuple[np.ndarray], dict]:
    """One view (the guide's ``.bin``: :func:`input_array`); no meta (the label comes from the dataset)."""
    return (input_array(image_path),), {}


def postprocess(outputs: list[np.ndarray], meta: dict) -> np.ndarray:
    """The (1000,) logits (output ``class``); ranking happens in the metric."""
    return outputs[0]


open_dataset = dataset_opener(open_imagenet, imagenet_sample_root)


NOTEBOOK = NotebookSpec(
    title="DPN-131 on ImageNet-1k val",
    guide="ACL_PyTorch/contrib/cv/classfication/DPN131",
    data_root_help="ImageNet root holding val/ and val_label.txt, None for the embedded sample",
    data_example="/data/imagenet",
)


RECIPE = Recipe(
    name="dpn131",
    task="classification",
    input_shape=(3, 224, 224),
    input_names=["image"],
    output_names=["class"],
    opset=11,
    checkpoint_file="dpn131-7af84be88.pth",
    checkpoint_md5="71e7844aa8646dc75494976c7c86241a",
    published=Published(
        accuracy={"top1": 0.79432, "top5": 0.94574},
        source="Cadene pretrained-models.pytorch README 'Our porting' (the figure the guide quotes)",
        other=(
            ("Ascend contrib README 2022-03, Ascend 310, bs1 = bs16", {"top1": 0.7943, "top5": 0.9458}),
            ("contrib README 2023-01-06 / built-in README HEAD", {"top1": 0.7947, "top5": 0.9454}),
            ("contrib README current (efc27449e)", {"top1": 0.7942, "top5": 0.9458}),
        ),
        performance=(
            PerfRow("Ascend 310 (per card, benchmark)", "contrib README 2022-03",
                    {1: 148.6748, 4: 153.7376, 8: 157.466, 16: 157.5588, 32: 160.758}),
            PerfRow("Ascend 310P fp16 (benchmark)", "built-in README until 2023-01",
                    {1: 158.108, 4: 371.75, 8: 378.015, 16: 310.731, 32: 360.543, 64: 355.648}),
            PerfRow("NVIDIA T4, TensorRT 7.2.3.4 fp16", "built-in README until 2023-01",
                    {1: 181.36, 4: 256.61, 8: 287.40, 16: 294.93, 32: 299.40}),
            PerfRow("Ascend 310P3 (ais_bench --loop=1000)", "contrib README current (efc27449e)",
                    {1: 371, 4: 550, 8: 441, 16: 355, 32: 344, 64: 318}),
        ),
    ),
    build=build,
    bench=BenchPlan(batch_sizes=(1, 8, 32), stream=64, memory=(2000, 20000), memory_quick=(200, 2000)),
    preprocess=preprocess,
    postprocess=postprocess,
    open_dataset=open_dataset,
    new_accumulator=lambda dataset: TopKAccumulator(),
    notebook=NOTEBOOK,
    compact=compact_logits,
    headline=("top1", "top5"),
    notes=(
        "Eval head = the Ascend dpn.diff path (global average pool -> 1x1 conv); equal to upstream's test-time pool "
        "only at 224x224.",
        "Preprocessing uses the guide's rounded constants (mean 0.486/0.459/0.408, std 0.235), not torchvision's.",
        "Both directory layouts of the guide's preprocess revisions are read (flat val/ and val/<wnid>/); every "
        "image is processed (the init revision stopped at 50,000 directory entries, HEAD ignored flat files).",
    ),
    atc={"soc_version": "Ascend310P3"},
)

