"""DPN-131 (Dual Path Networks, Chen et al. 2017) as the Ascend DPN131 guide exports it.

Module names follow Cadene's ``pretrainedmodels/models/dpn.py`` so ``dpn131-7af84be88.pth`` (a plain state dict)
loads key for key. Eval-mode head = the Ascend ``dpn.diff`` path: global average pool -> 1x1 conv classifier
(docs/models/dpn131.md 3.4). Every BatchNorm has eps 1e-3 (MXNet heritage).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...nn.checkpoints import load_weights, read_checkpoint
from ...nn.synthetic import init_synthetic

BN_EPS = 1e-3
#: DPN131 factory arguments (docs/models/dpn131.md 3)
NUM_INIT_FEATURES, K_R, GROUPS = 128, 160, 40
K_SEC = (4, 8, 28, 3)
INC_SEC = (16, 32, 32, 128)


class BnActConv2d(nn.Module):
    """Pre-activation unit: BN -> ReLU -> conv (no bias)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, padding: int = 0, groups: int = 1):
        super().__init__()
        self.bn = nn.BatchNorm2d(cin, eps=BN_EPS)
        self.act = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(cin, cout, k, stride, padding, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.act(self.bn(x)))


class InputBlock(nn.Module):
    """Stem: 7x7/2 conv -> BN -> ReLU -> 3x3/2 max pool (224 -> 56)."""

    def __init__(self, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(3, cout, 7, stride=2, padding=3, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.bn(self.conv(x))))


class CatBnAct(nn.Module):
    """concat(residual, dense) -> BN -> ReLU."""

    def __init__(self, cin: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(cin, eps=BN_EPS)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.act(self.bn(torch.cat(x, dim=1)))


class DualPathBlock(nn.Module):
    """One dual-path block (b=False variant). ``kind``: "proj" (stride 1 projection), "down" (stride 2), "normal"."""

    def __init__(self, cin: int, r: int, bw: int, inc: int, groups: int, kind: str):
        super().__init__()
        self.bw = bw
        stride = 2 if kind == "down" else 1
        if kind == "proj":
            self.c1x1_w_s1 = BnActConv2d(cin, bw + 2 * inc, 1, 1)
        elif kind == "down":
            self.c1x1_w_s2 = BnActConv2d(cin, bw + 2 * inc, 1, 2)
        self.kind = kind
        self.c1x1_a = BnActConv2d(cin, r, 1, 1)
        self.c3x3_b = BnActConv2d(r, r, 3, stride, padding=1, groups=groups)
        self.c1x1_c = BnActConv2d(r, bw + inc, 1, 1)

    def forward(self, x: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x_in = torch.cat(x, dim=1) if isinstance(x, tuple) else x
        if self.kind == "normal":
            x_s1, x_s2 = x
        else:
            proj = self.c1x1_w_s1 if self.kind == "proj" else self.c1x1_w_s2
            x_s = proj(x_in)
            x_s1, x_s2 = x_s[:, : self.bw], x_s[:, self.bw:]
        out = self.c1x1_c(self.c3x3_b(self.c1x1_a(x_in)))
        resid = x_s1 + out[:, : self.bw]
        dense = torch.cat([x_s2, out[:, self.bw:]], dim=1)
        return resid, dense


class DPN(nn.Module):
    """DPN-131: ``features`` (stem, 43 dual-path blocks, final BN-ReLU) and ``last_linear`` (1x1 conv with bias).

    Input: float32 (N, 3, 224, 224) normalised RGB; output: float32 (N, 1000) logits (ImageNet-1k, sorted-WNID order).
    """

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        blocks: dict[str, nn.Module] = {"conv1_1": InputBlock(NUM_INIT_FEATURES)}
        cin = NUM_INIT_FEATURES
        for stage, (n, inc) in enumerate(zip(K_SEC, INC_SEC), start=2):
            bw = 64 * 2 ** stage  # 256, 512, 1024, 2048 (bw_factor 4)
            r = K_R * bw // 256
            for j in range(1, n + 1):
                kind = ("proj" if stage == 2 else "down") if j == 1 else "normal"
                blocks[f"conv{stage}_{j}"] = DualPathBlock(cin, r, bw, inc, GROUPS, kind)
                cin = bw + (j + 2) * inc  # residual width + dense width after block j
        blocks["conv5_bn_ac"] = CatBnAct(cin)
        self.features = nn.Sequential()
        for name, block in blocks.items():
            self.features.add_module(name, block)
        self.last_linear = nn.Conv2d(cin, num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, (1, 1))  # the dpn.diff eval path: exports as one GlobalAveragePool
        return self.last_linear(x).flatten(1)


def build(weights: str | None = None) -> DPN:
    """DPN-131 with the published ``dpn131-7af84be88.pth`` (plain state dict, 676 or 811 entries) or synthetic weights."""
    model = DPN()
    if weights is None:
        init_synthetic(model)
    else:
        load_weights(model, read_checkpoint(weights), what=f"checkpoint {weights}")
    return model.eval()
