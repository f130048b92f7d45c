"""SSD-ResNet34 at 300x300 (NVIDIA's MLPerf Training v0.7 ``SSD300``), as the Ascend SSD-Resnet34 guide exports it.

Module names follow upstream ``ssd300.py`` / ``resnet.py`` so the published ``iter_183250.pt``
(``{"model": state_dict}``, 206 entries) loads key for key (docs/models/ssd_resnet34.md 3):

* ``model``: ``nn.Sequential`` of torchvision ResNet-34 conv1, bn1 (+ReLU), maxpool, layer1, layer2, layer3, with
  layer3's first block at stride 1 (38x38 output for a 300x300 input); no layer4, no L2Norm;
* ``additional_blocks.0..4``: 1x1 conv (bias) -> ReLU -> 3x3 conv (bias) -> ReLU, no BatchNorm;
* ``mbox.0..5``: one fused 3x3 head per source whose first nd*81 channels are the class logits and the last nd*4
  the box offsets, each flattened default-box-major (anchor = d*H*W + y*W + x).

Forward: float32 (N, 3, 300, 300) ImageNet-normalised RGB -> ``(ploc (N, 4, 8732), plabel (N, 81, 8732))``, raw
offsets and raw logits (no softmax, decoding or NMS in the graph).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...nn.checkpoints import load_weights, read_checkpoint
from ...nn.resnet import BasicBlock, make_layer
from ...nn.synthetic import init_synthetic

LABEL_NUM = 81  # background + 80 COCO classes
NUM_DEFAULTS = (4, 6, 6, 6, 4, 4)
OUT_CHANNELS = (256, 512, 512, 256, 256, 256)
#: additional block i: (intermediate channels, 3x3 stride, 3x3 padding)
EXTRAS = ((256, 2, 1), (256, 2, 1), (128, 2, 1), (128, 1, 0), (128, 1, 0))


class BnReLU(nn.BatchNorm2d):
    """BatchNorm followed by ReLU in one module (upstream ``BnAddRelu_`` with ``fuse_relu``): keeps the stem's keys
    at ``model.1`` with the max pool at ``model.2``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(super().forward(x), inplace=True)


def resnet34_backbone() -> nn.Sequential:
    """ResNet-34 up to layer3, layer3 at stride 1: (N, 3, 300, 300) -> (N, 256, 38, 38)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
        BnReLU(64),
        nn.MaxPool2d(3, stride=2, padding=1),
        make_layer(BasicBlock, 64, 64, 3, stride=1),
        make_layer(BasicBlock, 64, 128, 4, stride=2),
        make_layer(BasicBlock, 128, 256, 6, stride=1),  # 1x1 stride-1 downsample: 128 -> 256 channels
    )


def _extra_block(cin: int, mid: int, cout: int, stride: int, pad: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, mid, 1), nn.ReLU(inplace=True),
                         nn.Conv2d(mid, cout, 3, stride=stride, padding=pad), nn.ReLU(inplace=True))


class SSD300(nn.Module):
    """SSD300 with the truncated ResNet-34 backbone (upstream class ``SSD300``, NCHW path)."""

    def __init__(self, label_num: int = LABEL_NUM):
        super().__init__()
        self.label_num = label_num
        self.model = resnet34_backbone()
        self.additional_blocks = nn.ModuleList(
            _extra_block(cin, mid, cout, s, p)
            for cin, cout, (mid, s, p) in zip(OUT_CHANNELS[:-1], OUT_CHANNELS[1:], EXTRAS))
        self.mbox = nn.ModuleList(nn.Conv2d(c, nd * (4 + label_num), 3, padding=1)
                                  for nd, c in zip(NUM_DEFAULTS, OUT_CHANNELS))

    def bbox_view(self, src: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused heads -> (locs (N, 4, A), confs (N, label_num, A)): class logits are the *first* nd*label_num
        channels; both parts are flattened as plain row-major views (default-box-major anchors)."""
        locs, confs = [], []
        for s, m, nd in zip(src, self.mbox, NUM_DEFAULTS):
            conf, loc = m(s).split([nd * self.label_num, nd * 4], dim=1)
            conf, loc = conf.contiguous(), loc.contiguous()
            locs.append(loc.view(s.size(0), 4, -1))
            confs.append(conf.view(s.size(0), self.label_num, -1))
        return torch.cat(locs, 2), torch.cat(confs, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        layers = self.model(x)
        src = [layers]
        for block in self.additional_blocks:
            src.append(block(src[-1]))
        return self.bbox_view(src)  # (ploc, plabel)


def build(weights: str | None = None) -> SSD300:
    """SSD300-ResNet34 with the published ``iter_183250.pt`` (``{"model": state_dict}``, any serialisation and
    storage location; a leading ``module.`` is stripped) or deterministic synthetic weights."""
    model = SSD300()
    if weights is None:
        init_synthetic(model)
    else:
        load_weights(model, read_checkpoint(weights), what=f"checkpoint {weights}")
    return model.eval()
