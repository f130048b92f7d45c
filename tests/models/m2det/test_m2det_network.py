"""M2Det network and checkpoint loading (docs/models/m2det.md 2-3).

Structure facts are the spec's tables; the forward reference numbers come from upstream qijiezhao/M2Det
(``build_net('test', 512, ...)``) run outside the project with the same synthetic state dict and input
(tests/models/m2det/data/forward_ref.json). One forward at batch 1 (the network is ~130 GMAC per image).
"""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from zooinfer.errors import CheckpointError
from zooinfer.models import build_model
from zooinfer.models.m2det.network import M2Det

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def net() -> M2Det:
    return build_model("m2det")


def test_state_dict_keys_as_the_spec(net):
    sd = net.state_dict()
    keys = list(sd)
    assert len(keys) == 887
    assert sum(k.endswith("num_batches_tracked") for k in keys) == 139
    groups = list(OrderedDict.fromkeys(k.split(".")[0] for k in keys))
    assert groups == [f"unet{i}" for i in range(1, 9)] + ["base", "reduce", "up_reduce", "Norm", "leach", "loc", "conf"]
    counts = {g: sum(k.split(".")[0] == g for k in keys) for g in groups}
    assert counts == {**{f"unet{i}": 96 for i in range(1, 9)}, "base": 30, "reduce": 6, "up_reduce": 6, "Norm": 5,
                      "leach": 48, "loc": 12, "conf": 12}
    assert sum(p.numel() for p in net.parameters()) == 132_633_140  # unique parameters (leach once)
    shapes = {
        "unet1.layers.0.conv.weight": (256, 128, 3, 3), "unet1.latlayer.4.conv.weight": (256, 128, 3, 3),
        "unet5.layers.0.conv.weight": (256, 384, 3, 3), "unet8.latlayer.4.conv.weight": (256, 384, 3, 3),
        "unet3.layers.4.conv.weight": (256, 256, 3, 3), "unet2.toplayer.0.conv.weight": (256, 256, 1, 1),
        "unet2.smooth.4.conv.weight": (256, 256, 1, 1), "base.0.weight": (64, 3, 3, 3),
        "base.31.weight": (1024, 512, 3, 3), "base.33.weight": (1024, 1024, 1, 1), "base.33.bias": (1024,),
        "reduce.conv.weight": (256, 512, 3, 3), "up_reduce.conv.weight": (512, 1024, 1, 1),
        "Norm.running_var": (2048,), "leach.7.conv.weight": (128, 768, 1, 1), "loc.5.weight": (24, 2048, 3, 3),
        "conf.0.weight": (486, 2048, 3, 3), "conf.3.bias": (486,),
    }
    assert {k: tuple(sd[k].shape) for k in shapes} == shapes
    base_convs = sorted(int(k.split(".")[1]) for k in keys if k.startswith("base.") and k.endswith("weight"))
    assert base_convs == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28, 31, 33]
    assert not any("sfam" in k for k in keys)


def test_leach_is_one_shared_module(net):
    assert all(net.leach[i] is net.leach[0] for i in range(8))
    sd = net.state_dict()
    assert all(sd[f"leach.{i}.conv.weight"].data_ptr() == sd["leach.0.conv.weight"].data_ptr() for i in range(8))


def test_tum_details(net):
    t1, t2 = net.unet1, net.unet2
    assert t1.layers[4].conv.padding == (0, 0) and t1.layers[3].conv.stride == (2, 2)
    assert t1.latlayer[4].conv.in_channels == 128 and t2.latlayer[4].conv.in_channels == 384
    assert len(t1.smooth) == 5
    bn = t1.layers[0].bn
    assert (bn.eps, bn.momentum) == (1e-5, 0.01) and net.Norm.momentum == 0.1
    assert net.base[16].ceil_mode and net.base[31].dilation == (6, 6) and net.base[31].padding == (6, 6)


def test_forward_matches_upstream(net):
    ref = json.loads((DATA / "forward_ref.json").read_text())
    idx = np.arange(3 * 512 * 512, dtype=np.int64)
    x = torch.from_numpy((((idx * 7919) % 256) - 128).astype(np.float32).reshape(1, 3, 512, 512))
    with torch.no_grad():
        loc, prob = net(x)
    assert loc.shape == (1, 32760, 4) and prob.shape == (32760, 81)  # probabilities are 2-D (N * 32760, 81)
    np.testing.assert_allclose(prob.sum(1).numpy(), 1.0, atol=1e-5)  # softmax inside the model, over 81 classes
    np.testing.assert_allclose(loc[0, ref["loc_rows"]].numpy(), ref["loc"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(prob[ref["prob_rows"]][:, ref["prob_cols"]].numpy(), ref["prob"], rtol=1e-4, atol=1e-7)
    assert float(loc.double().sum()) == pytest.approx(ref["loc_sum"], rel=1e-4)
    assert float(prob[:, 1:].max()) == pytest.approx(ref["prob_fg_max"], rel=1e-4)
    # synthetic weights give candidates above the guide's 0.1 score threshold (so the embedded run detects things)
    assert abs(int((prob[:, 1:] > 0.1).sum()) - ref["n_over_threshold"]) <= 5


# ------------------------------------------------------------------------------------------------ checkpoints
def _tiny(sd: dict, value_of) -> OrderedDict:
    """Same keys/shapes/dtypes with one stored value per tensor (stride-0 views: the file stays tiny)."""
    out = OrderedDict()
    for i, (k, v) in enumerate(sd.items()):
        if v.is_floating_point():
            out[k] = torch.full((1,), value_of(i, k), dtype=torch.float32).expand(v.shape) if v.dim() else \
                torch.tensor(value_of(i, k))
        else:
            out[k] = v.clone()
    return out


def test_checkpoint_flat_module_prefix_without_num_batches_tracked(net, tmp_path):
    """The spec's container: a flat name -> tensor mapping, keys with ``module.`` (DataParallel), written by
    torch 0.4.0 (no num_batches_tracked: 748 entries); leach.0..7 are 8 key sets of one module."""
    sd = OrderedDict((k, v) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked"))
    assert len(sd) == 748
    tiny = _tiny(sd, lambda i, k: float(i) / 1000.0)
    path = tmp_path / "m2det512_vgg.pth"
    torch.save(OrderedDict((f"module.{k}", v) for k, v in tiny.items()), path)
    assert path.stat().st_size < 2_000_000
    model = build_model("m2det", path)
    got = model.state_dict()
    index = {k: i for i, k in enumerate(sd)}
    for k in ("unet1.layers.0.conv.weight", "unet8.smooth.4.bn.running_var", "base.33.bias", "Norm.weight",
              "loc.5.bias", "conf.0.weight", "up_reduce.bn.running_mean"):
        assert torch.all(got[k] == index[k] / 1000.0), k
    # the shared leach holds the values of the last key set written (leach.7), as upstream's strict load leaves it
    for i in range(8):
        assert torch.all(got[f"leach.{i}.conv.weight"] == index["leach.7.conv.weight"] / 1000.0)
    assert not model.training


def test_checkpoint_plain_887_entries(net, tmp_path):
    tiny = _tiny(net.state_dict(), lambda i, k: 0.5 if "running_var" in k else 0.01)
    path = tmp_path / "plain.pth"
    torch.save(tiny, path)
    model = build_model("m2det", path)
    assert torch.all(model.state_dict()["conf.2.weight"] == 0.01)


def test_checkpoint_of_another_model_names_keys(tmp_path):
    from zooinfer.models.ssd_resnet34.network import SSD300

    path = tmp_path / "iter_183250.pt"
    torch.save({"model": _tiny(SSD300().state_dict(), lambda i, k: 0.0)}, path)
    with pytest.raises(CheckpointError) as e:
        build_model("m2det", path)
    msg = str(e.value)
    assert "missing keys: unet1.layers.0.conv.weight" in msg and "unexpected keys:" in msg


def test_checkpoint_with_sfam_or_other_size_is_refused(net, tmp_path):
    tiny = _tiny(net.state_dict(), lambda i, k: 0.0)
    tiny["conf.0.weight"] = torch.zeros(1).expand(126, 2048, 3, 3)  # a 21-class (VOC) head
    tiny["sfam_module.fc1.0.weight"] = torch.zeros(1).expand(128, 2048, 1, 1)
    path = tmp_path / "voc.pth"
    torch.save(tiny, path)
    with pytest.raises(CheckpointError) as e:
        build_model("m2det", path)
    assert "conf.0.weight (126, 2048, 3, 3) vs (486, 2048, 3, 3)" in str(e.value)
    assert "sfam_module.fc1.0.weight" in str(e.value)


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        build_model("m2det", tmp_path / "m2det512_vgg.pth")
