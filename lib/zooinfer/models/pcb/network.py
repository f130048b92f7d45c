"""PCB (Part-based Convolutional Baseline, Sun et al. ECCV 2018) as the Ascend ``reid_PCB_baseline`` guide exports it.

The network is upstream ``reid/models/resnet.py`` ``ResNet(50, num_features=256, dropout=0.5, num_classes=751,
FCN=True)`` with the Ascend ``test/resnet.diff`` applied (part pooling hard-coded to kernel = stride = (4, 8)); module
names match the published whole-module pickle ``PCB_3_7.pt`` key for key (338 state-dict entries, docs/models/pcb.md 3.6).

Input: float32 (N, 3, 384, 128), ImageNet-normalised RGB. Outputs, in ONNX order (docs/models/pcb.md 3.3; the upstream nested tuple
``(out0, (c0, ..., c5))`` flattened as the exporter flattens it):

* ``output_1``: (N, 2048, 6, 1) pooled part features, each of the 6 parts L2-normalised over channels (the retrieval
  feature; no epsilon, as upstream);
* six (N, 751) part-classifier logits (training only; exported because the guide's graph has them).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import CheckpointError
from ...nn.checkpoints import load_weights, read_checkpoint
from ...nn.resnet import resnet_stages
from ...nn.synthetic import init_synthetic

#: factory arguments of the published model (docs/models/pcb.md 2: create('resnet50', num_features=256, dropout=0.5, ...))
NUM_FEATURES, NUM_CLASSES, NUM_PARTS, DROPOUT = 256, 751, 6, 0.5
#: the Ascend resnet.diff constants: 6 stripes of 4 rows x full width on the (24, 8) map of a 384x128 input.
#: (Upstream computes stride_h = h // 6, kernel_h = h - 5 * stride_h, kernel_w = stride_w = w: the same at 384x128.)
PART_POOL = (4, 8)

#: class paths a pickle of the published model references (docs/models/pcb.md 2.1), beyond the generic torch.nn classes
PICKLE_CLASSES = (
    "reid.models.resnet.ResNet",
    "torchvision.models.resnet.ResNet",
    "torchvision.models.resnet.Bottleneck",
)
#: non-tensor module attributes that change the computation; checked against the pickle when it has them
STRUCTURAL_ATTRS = ("stride", "padding", "dilation", "kernel_size", "groups", "eps", "ceil_mode")
#: module types whose attributes are compared (containers may carry stale, unused attributes)
CHECKED_TYPES = (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.Linear)
#: modules present in the pickle but never executed (the forward stops at ``base.avgpool``)
UNUSED_MODULES = ("base.avgpool", "base.fc")


class TorchvisionResNet50(nn.Module):
    """torchvision 0.2.1 ``resnet50`` with PCB's un-strided ``layer4`` (stride 1 in ``layer4.0.conv2`` and
    ``layer4.0.downsample.0``): (N, 3, 384, 128) -> (N, 2048, 24, 8). ``avgpool``/``fc`` exist for the keys only."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet_stages(50, strides=(1, 2, 2, 1))
        self.avgpool = nn.AvgPool2d(7, stride=1)
        self.fc = nn.Linear(2048, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Children in order up to (not including) ``avgpool``, as upstream's forward iterates them."""
        for name, module in self._modules.items():
            if name == "avgpool":
                break
            x = module(x)
        return x


class PCB(nn.Module):
    """The PCB wrapper (upstream class ``reid.models.resnet.ResNet`` with ``FCN=True``)."""

    def __init__(self) -> None:
        super().__init__()
        self.base = TorchvisionResNet50()
        self.local_conv = nn.Conv2d(2048, NUM_FEATURES, 1, padding=0, bias=False)
        self.feat_bn2d = nn.BatchNorm2d(NUM_FEATURES)
        for p in range(NUM_PARTS):
            self.add_module(f"instance{p}", nn.Linear(NUM_FEATURES, NUM_CLASSES))
        self.drop = nn.Dropout(DROPOUT)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(N, 3, 384, 128) -> (output_1 (N, 2048, 6, 1), logits part 0 .. part 5 (N, 751) each)."""
        x = self.base(x)
        x = F.avg_pool2d(x, kernel_size=PART_POOL, stride=PART_POOL)
        # per-part L2 normalisation over channels, written as upstream (ReduceL2 -> Unsqueeze -> Expand -> Div)
        out0 = x / x.norm(2, 1).unsqueeze(1).expand_as(x)
        x = self.drop(x)
        x = self.local_conv(x)
        x = F.relu(self.feat_bn2d(x))
        parts = x.chunk(NUM_PARTS, 2)
        logits = [getattr(self, f"instance{p}")(part.contiguous().view(part.size(0), -1))
                  for p, part in enumerate(parts)]
        return (out0, *logits)


# ------------------------------------------------------------------------------------------------ checkpoint checks
def _as_tuple(v: Any) -> Any:
    return tuple(v) if isinstance(v, (tuple, list)) else v


def _same(a: Any, b: Any) -> bool:
    """Equal up to int-vs-tuple spelling (``stride=1`` == ``stride=(1, 1)``)."""
    a, b = _as_tuple(a), _as_tuple(b)
    if isinstance(a, tuple) and not isinstance(b, tuple):
        return all(x == b for x in a)
    if isinstance(b, tuple) and not isinstance(a, tuple):
        return all(x == a for x in b)
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(b)))
    return a == b


def _stub_modules(obj: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted path: object} for an unpickled module tree (stubs), like ``named_modules``."""
    out = {prefix.rstrip("."): obj}
    for name, child in (getattr(obj, "__dict__", {}).get("_modules") or {}).items():
        if child is not None:
            out.update(_stub_modules(child, f"{prefix}{name}."))
    return out


def structural_differences(pickled: Any, model: nn.Module) -> list[str]:
    """Attributes (stride, padding, eps, ...) whose pickled value differs from ``model``'s, as readable lines.

    ``pickled`` is the object a whole-module checkpoint unpickles to (stubs holding each module's ``__dict__``); a
    top-level ``DataParallel`` (single child ``module``) is looked through. Anything else (a state dict) gives [].
    """
    d = getattr(pickled, "__dict__", {})
    if "_modules" not in d:
        return []
    if set(d.get("_modules") or {}) == {"module"} and not d.get("_parameters"):
        pickled = d["_modules"]["module"]
    stubs = _stub_modules(pickled)
    diffs = []
    for path, mod in model.named_modules():
        stub = stubs.get(path)
        if stub is None or path in UNUSED_MODULES or not isinstance(mod, CHECKED_TYPES):
            continue  # e.g. torchvision's Bottleneck keeps an unused ``stride`` attribute of 2 in layer4.0
        for attr in STRUCTURAL_ATTRS:
            if attr in stub.__dict__ and hasattr(mod, attr) and not _same(stub.__dict__[attr], getattr(mod, attr)):
                diffs.append(f"{path}.{attr}: file {stub.__dict__[attr]!r}, network {getattr(mod, attr)!r}")
    return diffs


def layer4_strides(pickled: Any) -> dict[str, Any]:
    """The pickled strides of ``base.layer4.0.conv2`` and ``base.layer4.0.downsample.0`` (PCB sets them to (1, 1))."""
    d = getattr(pickled, "__dict__", {})
    if set(d.get("_modules") or {}) == {"module"}:
        pickled = d["_modules"]["module"]
    stubs = _stub_modules(pickled)
    return {p: stubs[p].__dict__.get("stride") for p in ("base.layer4.0.conv2", "base.layer4.0.downsample.0")
            if p in stubs}


def build(weights: str | None = None) -> PCB:
    """PCB with the published ``PCB_3_7.pt`` (a whole pickled module, read without executing it; any plain state dict
    with the same 338 keys also works) or deterministic synthetic weights.

    Non-tensor attributes the pickle carries (conv strides, paddings, BN eps, ...) must equal the network's: a file
    whose ``layer4`` is strided (a stock ResNet-50 re-save) is refused instead of silently giving wrong features.
    """
    model = PCB()
    if weights is None:
        init_synthetic(model)
        return model.eval()
    seen: list[Any] = []
    sd = read_checkpoint(weights, module_classes=PICKLE_CLASSES, inspect=seen.append)
    diffs = structural_differences(seen[0], model) if seen else []
    if diffs:
        shown = "\n  ".join(diffs[:8]) + (f"\n  ... ({len(diffs)} in all)" if len(diffs) > 8 else "")
        raise CheckpointError(
            f"checkpoint {weights}: the pickled network differs from PCB in non-tensor attributes:\n  {shown}\n"
            "PCB un-strides layer4 (layer4.0.conv2 and layer4.0.downsample.0 have stride (1, 1)); a file with other "
            "values is not the published PCB model and would give different features."
        )
    load_weights(model, sd, what=f"checkpoint {weights}")
    return model.eval()
