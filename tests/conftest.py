"""Shared fixtures: a tiny recipe + model for fast pipeline/backend tests, and a few images on disk."""
from __future__ import annotations

import os

# The exactness tests compare our float32 torch arithmetic (exp, softmax) bit for bit with numbers the upstream code
# produced. torch picks its vector kernels by CPU (AVX-512 machines use other exp/softmax code paths than AVX2 ones)
# and MKL picks its own per CPU vendor and ISA, so the last bit of those results depends on the machine. Pin both to
# paths every x86-64 CI machine has, set before torch is imported (the notebooks' kernels inherit them); the
# references were produced on such paths. Users' runs are not affected.
os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")
# every evaluation writes its stored predictions into a run folder: tests (and the notebooks nbmake runs, which
# inherit it) write theirs into a temporary folder, not into the checkout's outputs/
os.environ.setdefault("ZOOINFER_OUTPUTS", __import__("tempfile").mkdtemp(prefix="zooinfer-test-outputs-"))



def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


# numpy's AVX-512 sort kernels order equal keys differently from its AVX2 ones (PyramidBox's box voting sorts scores
# as the guide does, ties included): on an AVX-512 machine use the AVX2 kernels, as the references were made with.
# Only where the machine has AVX-512 (numpy refuses to disable features a machine lacks), before numpy is imported.
if "avx512f" in _cpu_flags() and "numpy" not in __import__("sys").modules:
    os.environ.setdefault("NPY_DISABLE_CPU_FEATURES", "X86_V4 AVX512_ICL AVX512_SPR")

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zooinfer.datasets.base import ImageDataset, Sample
from zooinfer.recipes.base import Published, Recipe


class TinyNet(torch.nn.Module):
    """(N, 3, 8, 8) -> (N, 4) logits and (N, 2, 4) maps: small, deterministic, two outputs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return self.fc(y.mean((2, 3))), y[:, :2, :2, :2].flatten(2)


class ListAccumulator:
    def __init__(self) -> None:
        self.items: list = []

    def update(self, sample, prediction) -> None:
        self.items.append((sample.key, prediction))

    def compute(self) -> dict:
        return {"n": len(self.items)}


def tiny_preprocess(path: str):
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB").resize((8, 8), Image.BILINEAR), dtype=np.float32) / 255.0
    return a.transpose(2, 0, 1).copy(), {"size": 8}


def make_recipe(multi_view: bool = False) -> Recipe:
    def pre(path):
        x, meta = tiny_preprocess(path)
        return ((x, x[:, :, ::-1].copy()), meta) if multi_view else ((x,), meta)

    return Recipe(
        name="tiny", task="classification", input_shape=(3, 8, 8), input_names=["image"],
        output_names=["logits", "maps"], opset=13, checkpoint_file="tiny.pth", checkpoint_md5=None,
        published=Published(accuracy={"n": 1.0}, source="test"), preprocess=pre,
        postprocess=lambda outputs, meta: outputs, open_dataset=lambda root: None,
        new_accumulator=lambda ds: ListAccumulator(), headline=("n",),
    )


@pytest.fixture
def tiny_model() -> TinyNet:
    return TinyNet().eval()


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """Seven small RGB JPEGs img0..img6 with distinct content."""
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(1)
    for i in range(7):
        Image.fromarray(rng.integers(0, 255, (12 + i, 10 + 2 * i, 3), dtype=np.uint8)).save(d / f"img{i}.jpg")
    return d


@pytest.fixture
def tiny_dataset(image_dir: Path) -> ImageDataset:
    samples = [Sample(p.stem, str(p), int(p.stem[3:])) for p in sorted(image_dir.iterdir())]
    return ImageDataset("tiny", image_dir, samples)


def tiny_recipe() -> Recipe:
    """The tiny recipe with the logits as the prediction (what classification agreement reads)."""
    import dataclasses

    return dataclasses.replace(make_recipe(), postprocess=lambda outputs, meta: outputs[0])


@pytest.fixture
def tiny_onnx(tmp_path: Path, tiny_model: TinyNet) -> Path:
    """The tiny net exported to ONNX (dynamic batch) with :func:`tiny_recipe`'s names."""
    from zooinfer import export

    return export.export_onnx(tiny_recipe(), tiny_model, out_path=tmp_path / "tiny.onnx")



@pytest.fixture
def sixth_model(monkeypatch) -> Recipe:
    """A throw-away sixth model, ``sixth``, registered as a new contributor's folder would be (its ``recipe`` module
    importable as ``zooinfer.models.sixth.recipe``, its name in ``recipes.NAMES``) and touching no existing file: the
    tiny net and recipe, a notebook spec that names no Ascend guide, the default benchmark plan."""
    import dataclasses
    import sys
    import types

    from zooinfer import recipes
    from zooinfer.recipes.base import NotebookSpec

    recipe = dataclasses.replace(make_recipe(), name="sixth", build=lambda weights: TinyNet(),
                                 notebook=NotebookSpec(title="A sixth model on a tiny sample"))
    package = types.ModuleType("zooinfer.models.sixth")
    package.__path__ = []
    module = types.ModuleType("zooinfer.models.sixth.recipe")
    module.RECIPE = recipe
    monkeypatch.setitem(sys.modules, package.__name__, package)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(recipes, "NAMES", tuple(sorted((*recipes.NAMES, "sixth"))))
    return recipe
