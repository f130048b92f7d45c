"""ResNet building blocks with torchvision's module names (so published state dicts load key for key).

torchvision cannot be used beside the pinned CPU torch build, so the blocks are written here. Names and layer order
follow torchvision's ``resnet.py`` (``conv1, bn1, relu, conv2, bn2, [conv3, bn3], downsample.{0,1}``); stride sits on
the 3x3 conv of a Bottleneck (torchvision >= 0.2 "ResNet v1.5"), and on ``conv1`` of a BasicBlock.
"""
from __future__ import annotations

import torch
from torch import nn


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs + identity (ResNet-18/34)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 x4 + identity (ResNet-50/101)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def make_layer(block: type[BasicBlock] | type[Bottleneck], cin: int, planes: int, blocks: int,
               stride: int = 1) -> nn.Sequential:
    """One ResNet stage (``layerN``): a ``downsample`` (1x1 conv + BN) on the first block when shapes change."""
    downsample = None
    if stride != 1 or cin != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(cin, planes * block.expansion, 1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * block.expansion),
        )
    layers = [block(cin, planes, stride, downsample)]
    layers += [block(planes * block.expansion, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


#: blocks per stage
DEPTHS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3)),
          101: (Bottleneck, (3, 4, 23, 3))}


def resnet_stages(depth: int, strides: tuple[int, int, int, int] = (1, 2, 2, 2)) -> list[nn.Sequential]:
    """``[layer1, layer2, layer3, layer4]`` of a torchvision ResNet of ``depth`` with per-stage strides."""
    block, counts = DEPTHS[depth]
    stages, cin = [], 64
    for i, (n, s) in enumerate(zip(counts, strides)):
        planes = 64 * 2 ** i
        stages.append(make_layer(block, cin, planes, n, s))
        cin = planes * block.expansion
    return stages
