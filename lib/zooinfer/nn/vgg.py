"""The VGG-16 layer stack shared by the VGG-based detectors (M2Det, PyramidBox), as upstream ``vgg(cfg, i)`` builds it.

torchvision cannot be used beside the pinned CPU torch build, so the layers are written here. Returned as flat module
lists: the detectors keep them in an ``nn.ModuleList`` whose indices are the published state dicts' keys
(``base.{i}`` / ``vgg.{i}``), so the order of modules is part of the checkpoint format.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn


def conv_stack(cfg: Sequence[int | str], in_channels: int = 3) -> list[nn.Module]:
    """``cfg`` in upstream's notation: an int adds a 3x3 pad-1 conv to that many channels and its ReLU, ``"M"`` a
    2x2 stride-2 max-pool, ``"C"`` the same pool with ``ceil_mode`` (odd map sizes round up)."""
    layers: list[nn.Module] = []
    c = in_channels
    for v in cfg:
        if v in ("M", "C"):
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=v == "C"))
        else:
            layers += [nn.Conv2d(c, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            c = int(v)
    return layers


def fc6_fc7() -> list[nn.Module]:
    """The reduced fully connected layers as convolutions (SSD-style): fc6 = 3x3 512->1024 with dilation 6 and
    padding 6, ReLU, fc7 = 1x1 1024->1024, ReLU."""
    return [nn.Conv2d(512, 1024, kernel_size=3, padding=6, dilation=6), nn.ReLU(inplace=True),
            nn.Conv2d(1024, 1024, kernel_size=1), nn.ReLU(inplace=True)]
