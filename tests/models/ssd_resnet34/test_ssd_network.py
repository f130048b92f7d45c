"""SSD-ResNet34 network against the spec (architecture, keys, head layout), upstream outputs, checkpoint loading,
ONNX."""
from __future__ import annotations

import copy
from collections import OrderedDict

import numpy as np
import pytest
import torch

from zooinfer import export, recipes
from zooinfer.backends import open_session
from zooinfer.errors import CheckpointError
from zooinfer.models import build_model

LAYER_OFFSETS = [0, 5776, 7942, 8542, 8692, 8728]
ND = [4, 6, 6, 6, 4, 4]
SIZES = [38, 19, 10, 5, 3, 1]


@pytest.fixture(scope="module")
def ssd():
    return build_model("ssd_resnet34")


def test_state_dict_matches_spec(ssd):
    sd = ssd.state_dict()
    assert len(sd) == 206
    assert sum(v.is_floating_point() for v in sd.values()) == 177
    counters = [k for k, v in sd.items() if v.dtype == torch.int64 and v.shape == ()]
    assert len(counters) == 29 and all(k.endswith("num_batches_tracked") for k in counters)
    assert sum(p.numel() for p in ssd.parameters()) == 19_972_534
    assert sum(v.numel() for v in sd.values() if v.is_floating_point()) == 19_982_390
    shapes = {
        "model.0.weight": (64, 3, 7, 7), "model.1.running_var": (64,),
        "model.3.2.conv2.weight": (64, 64, 3, 3), "model.4.0.conv1.weight": (128, 64, 3, 3),
        "model.4.3.conv1.weight": (128, 128, 3, 3), "model.4.0.downsample.0.weight": (128, 64, 1, 1),
        "model.5.0.conv1.weight": (256, 128, 3, 3), "model.5.5.conv2.weight": (256, 256, 3, 3),
        "model.5.0.downsample.0.weight": (256, 128, 1, 1), "model.5.0.downsample.1.running_mean": (256,),
        "additional_blocks.0.0.weight": (256, 256, 1, 1), "additional_blocks.0.2.weight": (512, 256, 3, 3),
        "additional_blocks.1.2.bias": (512,), "additional_blocks.2.0.weight": (128, 512, 1, 1),
        "additional_blocks.4.2.weight": (256, 128, 3, 3),
        "mbox.0.weight": (340, 256, 3, 3), "mbox.1.weight": (510, 512, 3, 3), "mbox.2.weight": (510, 512, 3, 3),
        "mbox.3.bias": (510,), "mbox.4.weight": (340, 256, 3, 3), "mbox.5.weight": (340, 256, 3, 3),
    }
    for k, s in shapes.items():
        assert tuple(sd[k].shape) == s, k
    keys = list(sd)
    assert keys[:7] == ["model.0.weight", "model.1.weight", "model.1.bias", "model.1.running_mean",
                        "model.1.running_var", "model.1.num_batches_tracked", "model.3.0.conv1.weight"]
    assert not any(k.startswith("model.2.") or k.startswith("model.6.") for k in keys)  # max pool, no layer4
    i = keys.index("model.5.0.bn2.num_batches_tracked")
    assert keys[i + 1:i + 3] == ["model.5.0.downsample.0.weight", "model.5.0.downsample.1.weight"]
    order = [keys.index(k) for k in ("additional_blocks.0.0.weight", "additional_blocks.0.2.weight", "mbox.0.weight")]
    assert order == sorted(order)
    assert keys[-2:] == ["mbox.5.weight", "mbox.5.bias"]
    assert "model.4.1.downsample.0.weight" not in sd and "model.3.0.downsample.0.weight" not in sd
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in ssd.additional_blocks.modules())


def test_feature_maps_and_strides(ssd):
    shapes = []
    hooks = [ssd.model.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))]
    hooks += [b.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape))) for b in ssd.additional_blocks]
    with torch.no_grad():
        ploc, plabel = ssd(torch.zeros(1, 3, 300, 300))
    for h in hooks:
        h.remove()
    assert shapes == [(1, 256, 38, 38), (1, 512, 19, 19), (1, 512, 10, 10), (1, 256, 5, 5), (1, 256, 3, 3),
                      (1, 256, 1, 1)]
    assert ploc.shape == (1, 4, 8732) and plabel.shape == (1, 81, 8732)
    assert ssd.model[5][0].conv1.stride == (1, 1) and ssd.model[5][0].downsample[0].stride == (1, 1)
    assert ssd.model[4][0].conv1.stride == (2, 2)


def test_head_split_and_default_box_major_flattening(ssd):
    """Zero head weights, bias = channel index: every output is its head channel's number, so the mapping
    (anchor, class / coordinate) -> channel is read off directly (spec 3.3: class logits first, anchor d*H*W+y*W+x)."""
    net = copy.deepcopy(ssd)
    with torch.no_grad():
        for m in net.mbox:
            m.weight.zero_()
            m.bias.copy_(torch.arange(m.bias.numel(), dtype=torch.float32))
        ploc, plabel = (t[0].numpy() for t in net(torch.zeros(1, 3, 300, 300)))
    for off, nd, f in zip(LAYER_OFFSETS, ND, SIZES):
        for d in range(nd):
            for y, x in [(0, 0), (f - 1, f - 1), (0, f - 1)]:
                a = off + d * f * f + y * f + x
                assert plabel[:, a].tolist() == [c * nd + d for c in range(81)], (off, d, y, x)
                assert ploc[:, a].tolist() == [81 * nd + i * nd + d for i in range(4)], (off, d, y, x)


# Upstream SSD300 (mlcommons/training_results_v0.7 NVIDIA ssd300.py + resnet.py, run outside the project with
# pretrained=False and this project's synthetic state dict loaded strictly) on
# RandomState(20240101).standard_normal((1, 3, 300, 300)): bit-identical to ours there (max abs diff 0.0).
IDX = [0, 1, 37, 38, 5775, 5776, 7942, 8542, 8692, 8728, 8731]
UP_PLOC = [[-1.585044, 0.064792, -0.972609, 0.664192], [-2.125468, 0.557345, -1.07819, -0.815774],
           [-0.151875, 0.95831, 1.545335, -2.132583], [-3.302832, -0.211738, -1.725391, 0.62902],
           [0.246423, -0.167376, 0.686779, -0.56606], [-0.788101, 0.013633, -0.42704, 0.245481],
           [0.136217, -0.025339, 0.018887, -0.272916], [-0.006217, -0.073419, 0.192508, -0.405322],
           [0.076928, 0.101716, -0.120436, -0.125073], [0.036636, -0.007399, 0.023267, -0.012861],
           [0.00059, 0.009361, 0.015487, 0.029914]]
UP_PLABEL_0_1_80 = [[0.666382, -0.666868, -1.060528], [0.337898, -1.732911, -0.537841],
                    [-0.475434, -0.48825, -0.280611], [1.306135, -1.714117, -2.074024],
                    [-0.087565, 0.258199, -0.420245], [0.132201, -0.154417, -0.104847],
                    [-0.183581, -0.168702, 0.38195], [0.017851, 0.056534, -0.135884],
                    [0.128637, 0.153784, -0.013199], [-0.024295, -0.014268, 0.000369],
                    [-0.029231, 0.055438, 0.005617]]
UP_SUMS = [-3557.302449, 49028.740325, -57937.180066, 901354.568172]  # ploc sum, |ploc| sum, plabel sum, |plabel|


def test_outputs_equal_upstream_ssd300(ssd):
    x = torch.from_numpy(np.random.RandomState(20240101).standard_normal((1, 3, 300, 300)).astype(np.float32))
    with torch.no_grad():
        ploc, plabel = (t[0].double().numpy() for t in ssd(x))
    np.testing.assert_allclose(ploc[:, IDX].T, UP_PLOC, atol=2e-5)
    np.testing.assert_allclose(plabel[[0, 1, 80]][:, IDX].T, UP_PLABEL_0_1_80, atol=2e-5)
    np.testing.assert_allclose([ploc.sum(), np.abs(ploc).sum(), plabel.sum(), np.abs(plabel).sum()], UP_SUMS,
                               rtol=1e-5)


def _fake_cuda_legacy_save(obj, path, monkeypatch):
    """torch.save in the pre-1.6 format with every storage tagged 'cuda:0' (as a GPU/NPU training run writes it)."""
    import torch.serialization as ser

    with monkeypatch.context() as m:
        m.setattr(ser, "location_tag", lambda storage: "cuda:0")
        torch.save(obj, path, _use_new_zipfile_serialization=False)


def test_published_container_legacy_cuda_round_trip(tmp_path, ssd, monkeypatch):
    """``{"model": state_dict}``, legacy serialisation, CUDA storage locations (spec section 2)."""
    sd = OrderedDict((k, v.clone()) for k, v in ssd.state_dict().items())
    sd["mbox.0.bias"][:4 * 81] += 0.25  # the 38x38 class logits differ, so loading must really happen
    for k in sd:
        if k.endswith("num_batches_tracked"):
            sd[k].fill_(183250)
    path = tmp_path / "iter_183250.pt"
    _fake_cuda_legacy_save({"model": sd}, path, monkeypatch)
    with open(path, "rb") as f:
        assert f.read(2) != b"PK"  # not the zip format
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError):
            torch.load(path, weights_only=True)  # really tagged with a CUDA location
    loaded = build_model("ssd_resnet34", path)
    assert not loaded.training
    x = torch.from_numpy(np.random.RandomState(1).standard_normal((1, 3, 300, 300)).astype(np.float32))
    with torch.no_grad():
        ref_loc, ref_lab = ssd(x)
        loc, lab = loaded(x)
    assert torch.equal(loc, ref_loc)
    assert torch.equal(lab[:, :, 5776:], ref_lab[:, :, 5776:])  # layers 1-5 unchanged
    assert torch.allclose(lab[:, :, :5776], ref_lab[:, :, :5776] + 0.25, atol=1e-5)  # mbox.0 class logits +0.25
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_module_prefix_and_extra_top_level_keys(tmp_path, ssd):
    sd = OrderedDict((f"module.{k}", v) for k, v in ssd.state_dict().items())
    path = tmp_path / "ddp.pt"
    torch.save({"model": sd, "epoch": 3}, path)
    loaded = build_model("ssd_resnet34", path)
    for (k, a), b in zip(ssd.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k


def test_other_models_checkpoint_names_the_keys(tmp_path, ssd):
    dpn = OrderedDict([("features.conv1_1.conv.weight", torch.zeros(128, 3, 7, 7)),
                       ("last_linear.weight", torch.zeros(1000, 2688, 1, 1))])
    path = tmp_path / "dpn131-7af84be88.pth"
    torch.save(dpn, path)
    with pytest.raises(CheckpointError) as e:
        build_model("ssd_resnet34", path)
    msg = str(e.value)
    assert "unexpected keys: features.conv1_1.conv.weight, last_linear.weight" in msg
    assert "missing keys: model.0.weight" in msg
    # an SSD with a 21-class (VOC) head: same keys, different head shapes
    sd = OrderedDict((k, v) for k, v in ssd.state_dict().items())
    sd["mbox.0.weight"] = torch.zeros(100, 256, 3, 3)
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointError, match=r"mismatches.*mbox\.0\.weight \(100, 256, 3, 3\) vs \(340, 256, 3, 3\)"):
        build_model("ssd_resnet34", path)


def test_onnx_export_names_parity_and_batch_invariance(ssd):
    r = recipes.get("ssd_resnet34")
    path = export.export_onnx(r, ssd)  # cached by settings + source hash, shared with the notebook
    info = export.describe_onnx(path)
    assert info["inputs"] == {"image": ["-1", 3, 300, 300]}
    assert info["outputs"] == {"ploc": ["-1", 4, 8732], "plabel": ["-1", 81, 8732]}
    assert info["opset"] == 11
    ops = info["ops"]
    counts = tuple(ops[k] for k in ("Conv", "Relu", "Add", "MaxPool", "Split", "Reshape"))
    assert counts == (45, 37, 13, 1, 6, 12)
    assert "BatchNormalization" not in ops and "Softmax" not in ops
    sess = open_session("onnxruntime", onnx_path=path)
    x = np.random.default_rng(0).standard_normal((2, 3, 300, 300), dtype=np.float32)
    rows = export.parity(open_session("torch", model=ssd).run(x), sess.run(x), r.output_names)
    assert [row["output"] for row in rows] == ["ploc", "plabel"]
    for row in rows:
        assert row["max_abs"] < 1e-4 and row["max_rel"] < 1e-2, row
    assert export.batch_invariance(sess.run, x) < 1e-4
