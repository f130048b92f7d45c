"""M2Det-512 (VGG16 reduced-fc backbone, 8 TUMs, no SFAM) as upstream qijiezhao/M2Det builds it for ``phase='test'``.

Module names and registration order match upstream ``M2Det`` (``m2det.py``, ``layers/nn_utils.py``) key for key, so
the published ``m2det512_vgg.pth`` (a flat state dict, possibly with ``module.`` prefixes; 887 entries, or 748
without ``num_batches_tracked``) loads strictly (docs/models/m2det.md 2, 3.7).

Input: float32 (N, 3, 512, 512), BGR minus (104, 117, 123), not scaled. Outputs, in the ONNX order of the Ascend
export (docs/models/m2det.md 3.6; pitfall 1: the ONNX *names* are swapped relative to the contents):

* ``scores`` = box regression, (N, 32760, 4) encoded offsets (tx, ty, tw, th) w.r.t. the priors (boxes.py);
* ``boxes`` = class probabilities, (N * 32760, 81): softmax over the 81 classes (column 0 = background), rows
  image-major. The softmax is inside the network (test phase); do not apply it again.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...nn.checkpoints import load_weights, read_checkpoint
from ...nn.synthetic import init_synthetic
from ...nn.vgg import conv_stack, fc6_fc7

#: ``m2det_config`` of configs/m2det512_vgg.py
INPUT_SIZE, PLANES, NUM_LEVELS, NUM_SCALES, NUM_CLASSES = 512, 256, 8, 6, 81
BASE_OUT = (22, 34)  # taps: after ReLU of conv4_3 (512 x 64 x 64) and after ReLU of conv7 (1024 x 32 x 32)
NUM_ANCHORS = 6  # per location: (s, s), (s', s'), ratio 2 (two), ratio 3 (two)
#: synthetic weights only: factor on the ``conf`` head weights. Plain variance-preserving weights give near-uniform
#: probabilities (max ~0.03 < the 0.1 score threshold: no detections at all); x4 gives a few hundred to a few thousand
#: candidates per image, so the embedded run exercises soft-NMS, the metric and the drawings.
SYNTHETIC_CONF_GAIN = 4.0
#: VGG16 with ceil-mode pool3 ("C"); pool5, dilated conv6 and conv7 follow (SSD's "reduced fc")
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512)


class BasicConv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d(eps 1e-5, momentum 0.01) -> ReLU(inplace); keys ``conv.*``, ``bn.*``."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size=kernel_size, stride=stride, padding=padding,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_planes, eps=1e-5, momentum=0.01, affine=True)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class TUM(nn.Module):
    """Thinned U-shaped module (planes 256, 6 scales, smoothing on; docs/models/m2det.md 3.4).

    ``in1`` = 128 at the first level, 128 + 256 = 384 after (the input is ``cat([leach, previous last output])``).
    Returns 6 maps of sizes [2, 4, 8, 16, 32, 64] for a 64x64 input: the top map unsmoothed, then smoothed ones.
    """

    def __init__(self, first_level: bool, input_planes: int = 128, side_channel: int = 256, scales: int = 6):
        super().__init__()
        self.first_level = first_level
        planes = 2 * input_planes
        in1 = input_planes if first_level else input_planes + side_channel
        self.layers = nn.Sequential()
        self.layers.add_module("0", BasicConv(in1, planes, 3, 2, 1))
        for i in range(scales - 2):  # the last encoder block has padding 0 (4x4 -> 2x2)
            self.layers.add_module(str(i + 1), BasicConv(planes, planes, 3, 2, 1) if i != scales - 3
                                   else BasicConv(planes, planes, 3, 1, 0))
        self.toplayer = nn.Sequential(BasicConv(planes, planes, 1, 1, 0))
        self.latlayer = nn.Sequential(*[BasicConv(planes, planes, 3, 1, 1) for _ in range(scales - 2)],
                                      BasicConv(in1, planes, 3, 1, 1))
        self.smooth = nn.Sequential(*[BasicConv(planes, planes, 1, 1, 0) for _ in range(scales - 1)])

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> list[torch.Tensor]:
        if not self.first_level:
            x = torch.cat([x, y], 1)
        conved = [x]
        for layer in self.layers:
            x = layer(x)
            conved.append(x)
        deconved = [self.toplayer[0](conved[-1])]
        for i, lat in enumerate(self.latlayer):
            lateral = lat(conved[len(self.layers) - 1 - i])
            _, _, h, w = lateral.size()
            deconved.append(F.interpolate(deconved[i], size=(h, w), mode="nearest") + lateral)
        return [deconved[0]] + [s(d) for s, d in zip(self.smooth, deconved[1:])]


def vgg16_reducedfc() -> list[nn.Module]:
    """The 35 modules of upstream ``vgg(base, 3)`` (keys ``base.{0,2,5,...,33}.weight/bias``): the VGG-16 convs with
    a ceil-mode third pool, pool5 = 3x3 stride 1 pad 1, then fc6/fc7 as convolutions."""
    return conv_stack(VGG16_CFG) + [nn.MaxPool2d(kernel_size=3, stride=1, padding=1)] + fc6_fc7()


class M2Det(nn.Module):
    """M2Det512-VGG16 in the test phase: ``forward(x) -> (loc (N, 32760, 4), probabilities (N * 32760, 81))``."""

    def __init__(self) -> None:
        super().__init__()
        half = PLANES // 2
        for i in range(NUM_LEVELS):  # registered first, as upstream (state-dict order)
            setattr(self, f"unet{i + 1}", TUM(first_level=i == 0, input_planes=half,
                                              side_channel=512 if i == 0 else PLANES, scales=NUM_SCALES))
        self.base = nn.ModuleList(vgg16_reducedfc())
        self.reduce = BasicConv(512, 256, kernel_size=3, stride=1, padding=1)
        self.up_reduce = BasicConv(1024, 512, kernel_size=1, stride=1)
        self.softmax = nn.Softmax(dim=1)  # upstream nn.Softmax() without dim: dim 1 for the 2-D input
        self.Norm = nn.BatchNorm2d(PLANES * NUM_LEVELS)
        # one module listed 8 times, as upstream: 8 key sets sharing the same tensors (loading leaves the values of
        # the last set, leach.7, exactly as upstream's strict load_state_dict)
        self.leach = nn.ModuleList([BasicConv(512 + 256, half, kernel_size=(1, 1), stride=(1, 1))] * NUM_LEVELS)
        self.loc = nn.ModuleList([nn.Conv2d(PLANES * NUM_LEVELS, 4 * NUM_ANCHORS, 3, 1, 1)
                                  for _ in range(NUM_SCALES)])
        self.conf = nn.ModuleList([nn.Conv2d(PLANES * NUM_LEVELS, NUM_CLASSES * NUM_ANCHORS, 3, 1, 1)
                                   for _ in range(NUM_SCALES)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = []
        for k, layer in enumerate(self.base):
            x = layer(x)
            if k in BASE_OUT:
                feats.append(x)
        base_feature = torch.cat((self.reduce(feats[0]),
                                  F.interpolate(self.up_reduce(feats[1]), scale_factor=2, mode="nearest")), 1)
        # upstream applies leach[i] to the same base_feature for every level; leach[i] is one shared module, so the
        # 8 results are identical: computing it once is exact (docs/models/m2det.md 3.3)
        leached = self.leach[0](base_feature)
        tum_outs = [self.unet1(leached, None)]
        for i in range(1, NUM_LEVELS):
            tum_outs.append(getattr(self, f"unet{i + 1}")(leached, tum_outs[i - 1][-1]))
        # sources[s]: the 8 levels' maps of size 64 / 2**s (TUM output index 5 - s), concatenated on channels
        sources = [torch.cat([t[i - 1] for t in tum_outs], 1) for i in range(NUM_SCALES, 0, -1)]
        sources[0] = self.Norm(sources[0])  # no SFAM in this config
        loc = torch.cat([l(s).permute(0, 2, 3, 1).contiguous().view(s.size(0), -1)
                         for s, l in zip(sources, self.loc)], 1)
        conf = torch.cat([c(s).permute(0, 2, 3, 1).contiguous().view(s.size(0), -1)
                          for s, c in zip(sources, self.conf)], 1)
        return loc.view(loc.size(0), -1, 4), self.softmax(conf.view(-1, NUM_CLASSES))


def build(weights: str | None = None) -> M2Det:
    """M2Det512-VGG16 with the published ``m2det512_vgg.pth`` (flat state dict; leading ``module.`` stripped;
    ``num_batches_tracked`` optional) or deterministic synthetic weights. ``vgg16_reducedfc.pth`` is not needed:
    upstream loads it only to initialise ``base`` before the checkpoint overwrites every tensor."""
    model = M2Det()
    if weights is None:
        init_synthetic(model)
        with torch.no_grad():  # spread the class logits so that some probabilities pass the 0.1 threshold
            for conv in model.conf:
                conv.weight.mul_(SYNTHETIC_CONF_GAIN)
    else:
        load_weights(model, read_checkpoint(weights), what=f"checkpoint {weights}")
    return model.eval()
