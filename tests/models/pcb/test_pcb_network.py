"""PCB network and PCB_3_7.pt loading: whole pickled module (legacy and zip formats) read without its classes,
structural checks (un-strided layer4), refusal of malicious pickles and of other models' checkpoints, ONNX export."""
from __future__ import annotations

import importlib
import os
import sys
import textwrap
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from zooinfer.errors import CheckpointError
from zooinfer.models import build_model
from zooinfer.nn.checkpoints import read_checkpoint
from zooinfer.models.pcb.network import PICKLE_CLASSES, PCB, TorchvisionResNet50, layer4_strides, structural_differences

# Stand-ins for torchvision 0.2.1 ``models/resnet.py`` and upstream ``reid/models/resnet.py`` (PCB_RPP_for_reID):
# same class paths, attribute names, registration order and forward arithmetic (upstream's Python 2 integer pooling
# rule with ``//``, and its dead code), written independently of zooinfer.models.pcb. They are imported from real
# files so the legacy format embeds their source text, as it does in the published file.
TORCHVISION_RESNET = '''
import torch.nn as nn


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super(Bottleneck, self).__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        return self.relu(out + residual)


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000):
        self.inplanes = 64
        super(ResNet, self).__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AvgPool2d(7, stride=1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes))
        return nn.Sequential(*layers)


def resnet50(pretrained=False):
    return ResNet(Bottleneck, [3, 4, 6, 3])
'''

REID_RESNET = '''
import torch
import torch.nn.functional as F
from torch import nn

import torchvision.models.resnet as tv


class ResNet(nn.Module):
    def __init__(self, depth, pretrained=True, cut_at_pooling=False, num_features=0, norm=False, dropout=0,
                 num_classes=0, FCN=False, unstride_layer4=True):
        super(ResNet, self).__init__()
        self.depth = depth
        self.pretrained = pretrained
        self.cut_at_pooling = cut_at_pooling
        self.FCN = FCN
        self.base = tv.resnet50(pretrained=pretrained)
        if unstride_layer4:
            for mo in self.base.layer4[0].modules():
                if isinstance(mo, nn.Conv2d):
                    mo.stride = (1, 1)
        self.num_features = num_features
        self.num_classes = 751
        self.dropout = dropout
        self.local_conv = nn.Conv2d(2048, self.num_features, kernel_size=1, padding=0, bias=False)
        self.feat_bn2d = nn.BatchNorm2d(self.num_features)
        for i in range(6):
            setattr(self, "instance%d" % i, nn.Linear(self.num_features, self.num_classes))
        self.drop = nn.Dropout(self.dropout)

    def forward(self, x):
        for name, module in self.base._modules.items():
            if name == "avgpool":
                break
            x = module(x)
        y = x.unsqueeze(1)
        y = F.avg_pool3d(x, (16, 1, 1)).squeeze(1)
        sx = x.size(2) // 6
        kx = x.size(2) - sx * 5
        x = F.avg_pool2d(x, kernel_size=(kx, x.size(3)), stride=(sx, x.size(3)))
        out0 = x.view(x.size(0), -1)
        out0 = x / x.norm(2, 1).unsqueeze(1).expand_as(x)
        x = self.drop(x)
        x = self.local_conv(x)
        out1 = x / x.norm(2, 1).unsqueeze(1).expand_as(x)
        x = F.relu(self.feat_bn2d(x))
        x = x.chunk(6, 2)
        cs = [getattr(self, "instance%d" % i)(x[i].contiguous().view(x[i].size(0), -1)) for i in range(6)]
        return out0, tuple(cs)
'''


def _randomise(net: torch.nn.Module, seed: int) -> None:
    """Random weights and BN statistics (so a wrong eps, stride or pooling shows in the outputs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if not t.is_floating_point():
                t.fill_(7)
            elif name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith(("running_mean", "bias")):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif t.ndim == 1:
                t.copy_(0.6 + 0.4 * torch.rand(t.shape, generator=g))
            else:
                t.copy_(torch.randn(t.shape, generator=g) * (1.0 / np.prod(t.shape[1:])) ** 0.5)


def _flat(out) -> list[torch.Tensor]:
    return [out[0], *out[1]] if isinstance(out[1], tuple) else list(out)


@pytest.fixture(scope="module")
def upstream_files(tmp_path_factory):
    """The stand-in upstream module pickled whole: zip, legacy, DataParallel-wrapped, strided-layer4 variants,
    plus its outputs on a fixed batch. The fake packages are gone from sys.modules and sys.path afterwards."""
    root = tmp_path_factory.mktemp("upstream")
    src = root / "src"
    for rel, text in {"torchvision/__init__.py": "", "torchvision/models/__init__.py": "",
                      "torchvision/models/resnet.py": TORCHVISION_RESNET, "reid/__init__.py": "",
                      "reid/models/__init__.py": "", "reid/models/resnet.py": REID_RESNET}.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(textwrap.dedent(text))
    assert "torchvision" not in sys.modules and "reid" not in sys.modules
    sys.path.insert(0, str(src))
    files: dict[str, Path] = {}
    try:
        reid_resnet = importlib.import_module("reid.models.resnet")
        torch.manual_seed(0)
        net = reid_resnet.ResNet(50, pretrained=False, num_features=256, dropout=0.5, num_classes=751, FCN=True)
        _randomise(net, 1)
        net.eval()
        x = torch.from_numpy(np.random.default_rng(3).standard_normal((2, 3, 384, 128), dtype=np.float32))
        with torch.no_grad():
            expected = [t.clone() for t in _flat(net(x))]
        for name, legacy, obj in (("zip", False, net), ("legacy", True, net),
                                  ("dataparallel", False, torch.nn.DataParallel(net))):
            files[name] = root / f"PCB_3_7_{name}.pt"
            torch.save(obj, files[name], _use_new_zipfile_serialization=not legacy)
        strided = reid_resnet.ResNet(50, pretrained=False, num_features=256, dropout=0.5, FCN=True,
                                     unstride_layer4=False)
        files["strided"] = root / "PCB_strided.pt"
        torch.save(strided, files["strided"])
        state = OrderedDict((k, v.clone()) for k, v in net.state_dict().items())
    finally:
        sys.path.remove(str(src))
        for mod in [m for m in sys.modules if m.split(".")[0] in ("reid", "torchvision")]:
            del sys.modules[mod]
    yield {"files": files, "x": x, "expected": expected, "state": state}
    for f in files.values():  # 4 x 109 MB: do not leave them in pytest's kept temporary folders
        f.unlink(missing_ok=True)


def test_network_matches_the_spec():
    model = PCB().eval()
    sd = model.state_dict()
    assert len(sd) == 338
    assert list(sd)[:2] == ["base.conv1.weight", "base.bn1.weight"] and list(sd)[-1] == "instance5.bias"
    assert sum(p.numel() for p in model.parameters()) == 27_239_874
    assert sum(v.numel() for v in sd.values() if v.is_floating_point()) == 27_293_506
    assert model.base.layer4[0].conv2.stride == (1, 1) and model.base.layer4[0].downsample[0].stride == (1, 1)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 384, 128))
    assert [tuple(o.shape) for o in out] == [(2, 2048, 6, 1)] + [(2, 751)] * 6
    assert torch.allclose(out[0].norm(dim=1), torch.ones(2, 6, 1), atol=1e-5)


@pytest.mark.parametrize("fmt", ["zip", "legacy", "dataparallel"])
def test_whole_pickled_module_loads_without_its_classes(upstream_files, fmt):
    assert "reid" not in sys.modules and "torchvision" not in sys.modules
    path = upstream_files["files"][fmt]
    sd = read_checkpoint(path, module_classes=PICKLE_CLASSES)
    assert list(sd) == list(upstream_files["state"])  # 338 entries, module registration order
    model = build_model("pcb", path)
    assert not model.training
    with torch.no_grad():
        got = _flat(model(upstream_files["x"]))
    for g, e in zip(got, upstream_files["expected"], strict=True):
        assert torch.equal(g, e)  # same ops in the same order: bit-identical
    assert "reid" not in sys.modules and "torchvision" not in sys.modules


def test_layer4_stride_is_read_from_the_pickle(upstream_files):
    seen = []
    read_checkpoint(upstream_files["files"]["legacy"], module_classes=PICKLE_CLASSES, inspect=seen.append)
    assert layer4_strides(seen[0]) == {"base.layer4.0.conv2": (1, 1), "base.layer4.0.downsample.0": (1, 1)}
    # the stand-in Bottleneck keeps torchvision's unused ``stride = 2`` attribute in layer4.0: not a difference
    def stub(path):
        obj = seen[0]
        for name in path.split("."):
            obj = obj._modules[name]
        return obj

    assert stub("base.layer4.0").stride == 2
    assert structural_differences(seen[0], PCB()) == []
    stub("feat_bn2d").eps = 1e-3
    assert structural_differences(seen[0], PCB()) == ["feat_bn2d.eps: file 0.001, network 1e-05"]
    with pytest.raises(CheckpointError) as e:
        build_model("pcb", upstream_files["files"]["strided"])
    assert "base.layer4.0.conv2.stride: file (2, 2), network (1, 1)" in str(e.value)
    assert "base.layer4.0.downsample.0.stride" in str(e.value)


def test_state_dict_of_the_same_model_loads(tmp_path, upstream_files):
    path = tmp_path / "pcb_state.pth"
    torch.save({"state_dict": OrderedDict((f"module.{k}", v) for k, v in upstream_files["state"].items())}, path)
    with torch.no_grad():
        got = build_model("pcb", path)(upstream_files["x"])[0]
    assert float((got - upstream_files["expected"][0]).abs().max()) <= 1e-6


def test_torch_04_parameter_pickles_load(tmp_path, monkeypatch):
    """torch 0.4.x wrote Parameters as GLOBAL torch.nn.parameter.Parameter + REDUCE (tensor, requires_grad)."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4)).eval()
    monkeypatch.setattr(torch.nn.Parameter, "__reduce_ex__",
                        lambda self, proto: (torch.nn.Parameter, (self.data, self.requires_grad)))
    path = tmp_path / "old.pt"
    torch.save(net, path, _use_new_zipfile_serialization=False)
    monkeypatch.undo()
    assert b"torch.nn.parameter" in path.read_bytes()
    sd = read_checkpoint(path)
    assert torch.equal(sd["0.weight"], net[0].weight.detach())


class _RunsCommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _WritesFile:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("payload, refused", [(_RunsCommand, r"posix\.system"), (_WritesFile, r"(builtins|__builtin__)\.exec")])
def test_malicious_whole_module_pickle_is_refused_and_nothing_runs(tmp_path, legacy, payload, refused):
    marker = tmp_path / "marker"
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1))
    net.evil = payload(marker)  # a plain attribute: pickled inside the module's __dict__
    path = tmp_path / "PCB_3_7.pt"
    torch.save(net, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(CheckpointError, match=f"refusing to load global '{refused}'"):
        build_model("pcb", path)
    assert not marker.exists()


def test_checkpoint_of_another_model_names_the_keys(tmp_path):
    path = tmp_path / "resnet50-19c8e357.pth"  # a stock ImageNet ResNet-50: no base. prefix, no PCB head
    torch.save(TorchvisionResNet50().state_dict(), path)
    with pytest.raises(CheckpointError) as e:
        build_model("pcb", path)
    msg = str(e.value)
    assert "missing keys: base.conv1.weight" in msg
    assert "unexpected keys: conv1.weight" in msg
    assert "another model" in msg


def test_onnx_export_names_opset_dynamic_batch_and_parity(tmp_path):
    import onnx
    import onnxruntime as ort

    from zooinfer import export, recipes

    recipe = recipes.get("pcb")
    model = build_model("pcb")
    path = export.export_onnx(recipe, model, out_path=tmp_path / "pcb.onnx")
    info = export.describe_onnx(path)
    assert info["opset"] == 11
    assert info["inputs"] == {"input_1": ["-1", 3, 384, 128]}
    assert list(info["outputs"]) == recipe.output_names and info["outputs"]["output_1"][0] == "-1"
    g = onnx.load(str(path)).graph
    pool = [n for n in g.node if n.op_type == "AveragePool"]
    assert len(pool) == 1
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in pool[0].attribute}
    assert attrs["kernel_shape"] == [4, 8] and attrs["strides"] == [4, 8]
    assert sum(n.op_type == "ReduceL2" for n in g.node) == 1
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 3, 384, 128), dtype=np.float32)
    got = sess.run(None, {"input_1": x})
    with torch.no_grad():
        ref = [t.numpy() for t in model(torch.from_numpy(x))]
    assert [o.shape for o in got] == [(3, 2048, 6, 1)] + [(3, 751)] * 6
    assert max(float(np.abs(a - b).max()) for a, b in zip(got, ref)) < 1e-5
    alone = sess.run(None, {"input_1": x[1:2]})
    assert max(float(np.abs(a[1:2] - b).max()) for a, b in zip(got, alone)) < 1e-5
