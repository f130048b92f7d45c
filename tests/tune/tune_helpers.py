"""A tiny colour classifier with one deliberately sensitive layer, its images and recipe (fast: 8x8 inputs).

``image`` (N, 3, 8, 8) -> conv1 (3x3: channel 0 always 0, channels 1-3 copy R, G, B) -> Relu -> conv2 (1x1, the
sensitive layer: weight 1000 on the always-zero channel, 1 on the colour channels) -> Relu -> GlobalAveragePool
-> Flatten -> fc (Gemm) -> logits (N, 3): the dominant colour. Per-channel INT8 weights give conv2's output channels a
step of 1000 / 127, so its weights of 1 round to 0 and every image gets the same class; keeping conv2 in fp32 alone
brings every prediction back.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zooinfer.datasets.base import ImageDataset, Sample

COLOURS = [(220, 30, 30), (30, 220, 30), (30, 30, 220), (200, 60, 40), (50, 200, 70), (40, 60, 210),
           (230, 20, 60), (20, 90, 230), (60, 210, 20)]


def colour_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w1 = np.zeros((4, 3, 3, 3), np.float32)
    for c in range(3):
        w1[c + 1, c, 1, 1] = 1.0
    w2 = np.zeros((3, 4, 1, 1), np.float32)
    w2[:, 0] = 1000.0
    w2[:, 1:, 0, 0] = np.eye(3, dtype=np.float32)
    fc = np.eye(3, dtype=np.float32) + 0.01
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (np.zeros(4, np.float32), "b1"), (w2, "w2"),
                                                       (np.zeros(3, np.float32), "b2"), (fc, "fc_w"),
                                                       (np.zeros(3, np.float32), "fc_b"))]
    nodes = [helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "colour", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                              ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


class TopOne:
    """top1 against the sample's label."""

    def __init__(self) -> None:
        self.hits: list[bool] = []

    def update(self, sample, logits) -> None:
        self.hits.append(int(np.argmax(logits)) == sample.target)

    def compute(self) -> dict:
        return {"top1": float(np.mean(self.hits)) if self.hits else 0.0}


def colour_recipe():
    from conftest import tiny_preprocess, tiny_recipe

    return dataclasses.replace(tiny_recipe(), name="colour", output_names=["logits"],
                               preprocess=lambda p: ((tiny_preprocess(p)[0],), {}),
                               postprocess=lambda outputs, meta: outputs[0],
                               new_accumulator=lambda ds: TopOne(), headline=("top1",))


def colour_case(folder: Path):
    """(recipe, dataset of 9 solid-colour images labelled by their dominant colour, ONNX path) in ``folder``."""
    d = folder / "colours"
    d.mkdir()
    rng = np.random.default_rng(0)
    samples = []
    for i, c in enumerate(COLOURS):
        img = np.clip(np.array(c)[None, None] + rng.normal(0, 8, (10, 10, 3)), 0, 255).astype(np.uint8)
        p = d / f"c{i}.png"
        Image.fromarray(img).save(p)
        samples.append(Sample(f"c{i}", str(p), int(np.argmax(c))))
    return colour_recipe(), ImageDataset("colours", d, samples), colour_onnx(folder / "colour.onnx")


@pytest.fixture
def colour(tmp_path: Path):
    return colour_case(tmp_path)
