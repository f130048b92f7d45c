"""PyramidBox (Tang et al., ECCV 2018) as yxlijun/Pyramidbox.pytorch builds it for testing (``build_net('test', 2)``).

Module names match the published ``pyramidbox_120000_99.02.pth`` key for key (281 tensors, plus 24
``num_batches_tracked`` when the file was written by torch >= 0.4.1; docs/models/pyramidbox.md 3.8).

Input: float32 (N, 3, H, W), RGB minus (123, 117, 104), unscaled (the guide's letterbox makes H = W = 1000). The
network is fully convolutional: any H, W >= 32 works, and the ONNX export keeps H and W symbolic when asked to.
The forward stops where upstream's test-phase ``Detect`` begins (decode, threshold and NMS are data-dependent
Python and live in ``zooinfer.boxes`` / the recipe's postprocess) and returns, in ONNX order:

* ``loc``  (N, P, 4): face box offsets (tx, ty, tw, th) per anchor;
* ``conf`` (N, P, 2): softmax over (background, face) after max-in-out.

P = sum of the six source maps' H*W (83,250 at 1000x1000: 250^2 + 125^2 + 62^2 + 31^2 + 16^2 + 8^2); anchors are
ordered layer by layer (strides 4 .. 128), row-major inside a layer (index y * W + x).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...nn.checkpoints import load_weights, read_checkpoint
from ...nn.synthetic import init_synthetic
from ...nn.vgg import conv_stack, fc6_fc7

#: VGG16 conv widths ('M' = 2x2 max pool, floor rounding), then fc6 (3x3 dilation 6) and fc7 (1x1) as convs
VGG_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
#: input channels of the six CPMs: LFPN on conv3_3 / conv4_3 / conv5_3, fc7, conv6_2, conv7_2
CPM_CHANNELS = (256, 512, 512, 1024, 512, 256)
#: L2Norm initial scales (the checkpoint's learned values replace them)
L2NORM_SCALES = {"L2Norm3_3": (256, 10.0), "L2Norm4_3": (512, 8.0), "L2Norm5_3": (512, 5.0)}
#: ``vgg`` indices after which conv3_3, conv4_3, conv5_3 (their ReLUs) and fc7 are tapped (exclusive ends)
TAPS = (16, 23, 30, 35)


def vgg_layers() -> list[nn.Module]:
    """The 35 ``vgg.{i}`` modules: conv1_1 .. conv5_3 (3x3 pad 1, ReLU), 5 pools, fc6, ReLU, fc7, ReLU."""
    return conv_stack(VGG_CFG) + fc6_fc7()


def extra_layers() -> list[nn.Module]:
    """``extras.0..3``: 1x1 1024->256, 3x3/2 256->512 (conv6_2), 1x1 512->128, 3x3/2 128->256 (conv7_2)."""
    return [nn.Conv2d(1024, 256, kernel_size=1), nn.Conv2d(256, 512, kernel_size=3, stride=2, padding=1),
            nn.Conv2d(512, 128, kernel_size=1), nn.Conv2d(128, 256, kernel_size=3, stride=2, padding=1)]


class L2Norm(nn.Module):
    """``x / (sqrt(sum_c x^2) + 1e-10) * weight[c]`` (eps added after the square root, as upstream)."""

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        self.eps = 1e-10
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        x = torch.div(x, norm)
        return self.weight.view(1, -1, 1, 1) * x


class ConvBN(nn.Module):
    """Conv (with bias) then BatchNorm; no activation (upstream ``conv_bn``)."""

    def __init__(self, cin: int, cout: int, kernel: int, padding: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, kernel_size=kernel, stride=1, padding=padding)
        self.bn1 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn1(self.conv1(x))


class CPM(nn.Module):
    """Context-sensitive prediction module: residual block (C -> 1024) then SSH context (256 + 128 + 128 = 512)."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch1 = ConvBN(cin, 1024, 1, 0)
        self.branch2a = ConvBN(cin, 256, 1, 0)
        self.branch2b = ConvBN(256, 256, 3, 1)
        self.branch2c = ConvBN(256, 1024, 1, 0)
        self.ssh_1 = nn.Conv2d(1024, 256, kernel_size=3, padding=1)
        self.ssh_dimred = nn.Conv2d(1024, 128, kernel_size=3, padding=1)
        self.ssh_2 = nn.Conv2d(128, 128, kernel_size=3, padding=1)
        self.ssh_3a = nn.Conv2d(128, 128, kernel_size=3, padding=1)
        self.ssh_3b = nn.Conv2d(128, 128, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.branch1(x)
        x = F.relu(self.branch2a(x))
        x = F.relu(self.branch2b(x))
        rescomb = F.relu(self.branch2c(x) + residual)
        ssh1 = self.ssh_1(rescomb)
        dimred = F.relu(self.ssh_dimred(rescomb))
        ssh2 = self.ssh_2(dimred)
        ssh3 = self.ssh_3b(F.relu(self.ssh_3a(dimred)))
        return F.relu(torch.cat([ssh1, ssh2, ssh3], dim=1))


def upsample_prod(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bilinear upsampling of ``x`` to ``y``'s exact H x W (align_corners=False), times ``y``.

    ``size=`` from the lateral tensor (not a scale factor): 62 -> 125 is not x2, and opset >= 11 exports this as a
    Resize with exact output sizes (docs/models/pyramidbox.md 4, pitfall 13)."""
    return F.interpolate(x, size=y.shape[2:], mode="bilinear", align_corners=False) * y


def _flat(t: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """(N, k, H, W) -> (N, H*W, k), row-major over locations."""
    return t.permute(0, 2, 3, 1).reshape(n, -1, k)


class PyramidBox(nn.Module):
    """The face branch of upstream ``PyramidBox`` in test phase, without ``Detect`` (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.vgg = nn.ModuleList(vgg_layers())
        self.extras = nn.ModuleList(extra_layers())
        for name, (c, scale) in L2NORM_SCALES.items():
            self.add_module(name, L2Norm(c, scale))
        # top-down 1x1 convs on fc7 / lfpn2 / lfpn1 and lateral 1x1 convs on conv5_3 / conv4_3 / conv3_3
        self.lfpn_topdown = nn.ModuleList([nn.Conv2d(1024, 512, 1), nn.Conv2d(512, 512, 1), nn.Conv2d(512, 256, 1)])
        self.lfpn_later = nn.ModuleList([nn.Conv2d(512, 512, 1), nn.Conv2d(512, 512, 1), nn.Conv2d(256, 256, 1)])
        self.cpm = nn.ModuleList([CPM(c) for c in CPM_CHANNELS])
        self.loc_layers = nn.ModuleList([nn.Conv2d(512, 8, kernel_size=3, padding=1) for _ in range(6)])
        self.conf_layers = nn.ModuleList([nn.Conv2d(512, 8 if k == 0 else 6, kernel_size=3, padding=1)
                                          for k in range(6)])

    def sources(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The six CPM outputs (N, 512, H_k, W_k), strides 4, 8, 16, 32, 64, 128 (nominal)."""
        taps = []
        start = 0
        for end in TAPS:
            for k in range(start, end):
                x = self.vgg[k](x)
            taps.append(x)
            start = end
        conv3_3, conv4_3, conv5_3, fc7 = taps
        x = F.relu(self.extras[0](fc7))
        conv6_2 = F.relu(self.extras[1](x))
        x = F.relu(self.extras[2](conv6_2))
        conv7_2 = F.relu(self.extras[3](x))

        x = F.relu(self.lfpn_topdown[0](fc7))
        lfpn2_on_conv5 = F.relu(upsample_prod(x, self.lfpn_later[0](conv5_3)))
        x = F.relu(self.lfpn_topdown[1](lfpn2_on_conv5))
        lfpn1_on_conv4 = F.relu(upsample_prod(x, self.lfpn_later[1](conv4_3)))
        x = F.relu(self.lfpn_topdown[2](lfpn1_on_conv4))
        lfpn0_on_conv3 = F.relu(upsample_prod(x, self.lfpn_later[2](conv3_3)))

        feats = [self.L2Norm3_3(lfpn0_on_conv3), self.L2Norm4_3(lfpn1_on_conv4), self.L2Norm5_3(lfpn2_on_conv5),
                 fc7, conv6_2, conv7_2]
        return [cpm(f) for cpm, f in zip(self.cpm, feats)]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        locs, confs = [], []
        for k, feat in enumerate(self.sources(x)):
            loc = self.loc_layers[k](feat)[:, 0:4]  # face offsets; channels 4..7 are the head branch (training)
            conf = self.conf_layers[k](feat)
            if k == 0:  # max-in-out: 3 background logits vs 1 face logit
                bg = torch.max(conf[:, 0:3], dim=1, keepdim=True)[0]
                face = conf[:, 3:4]
            else:  # 1 background logit vs max over 3 face logits
                bg = conf[:, 0:1]
                face = torch.max(conf[:, 1:4], dim=1, keepdim=True)[0]
            locs.append(_flat(loc, n, 4))
            confs.append(_flat(torch.cat((bg, face), dim=1), n, 2))
        return torch.cat(locs, dim=1), F.softmax(torch.cat(confs, dim=1), dim=-1)


def feature_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """(H_k, W_k) of the six source maps for an input of ``height`` x ``width`` (1000 -> 250, 125, 62, 31, 16, 8).

    Four floor-halving pools give conv3_3 (/4), conv4_3 (/8), conv5_3 (/16), fc7 (/32); the two stride-2 3x3 pad-1
    extras give ceil halves."""
    out = []
    for dim in (height, width):
        s = [dim // 4, dim // 8, dim // 16, dim // 32]
        s.append((s[3] + 1) // 2)
        s.append((s[4] + 1) // 2)
        out.append(s)
    return list(zip(out[0], out[1]))


def build(weights: str | None = None) -> PyramidBox:
    """The network in eval mode: the published state dict (plain, as downloaded; ``module.`` prefixes and missing
    ``num_batches_tracked`` tolerated), or deterministic synthetic weights for ``None``."""
    model = PyramidBox()
    if weights is None:
        init_synthetic(model)
    else:
        load_weights(model, read_checkpoint(weights), what=f"checkpoint {weights}")
    return model.eval()
