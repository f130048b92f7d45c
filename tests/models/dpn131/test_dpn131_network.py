"""DPN-131 network against the spec's architecture facts, its checkpoint loading, and ONNX parity."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch

from zooinfer import export, recipes
from zooinfer.backends import open_session
from zooinfer.errors import CheckpointError
from zooinfer.models import build_model


@pytest.fixture(scope="module")
def dpn():
    return build_model("dpn131")


def test_state_dict_matches_spec(dpn):
    sd = dpn.state_dict()
    assert len(sd) == 811
    assert sum(not k.endswith("num_batches_tracked") for k in sd) == 676
    assert sum(p.numel() for p in dpn.parameters()) == 79_254_504
    shapes = {
        "features.conv1_1.conv.weight": (128, 3, 7, 7),
        "features.conv2_1.c1x1_w_s1.conv.weight": (288, 128, 1, 1),
        "features.conv3_1.c1x1_w_s2.conv.weight": (576, 352, 1, 1),
        "features.conv4_1.c1x1_w_s2.conv.weight": (1088, 832, 1, 1),
        "features.conv5_1.c1x1_w_s2.conv.weight": (2304, 1984, 1, 1),
        "features.conv2_2.c1x1_a.conv.weight": (160, 304, 1, 1),
        "features.conv4_28.c1x1_a.conv.weight": (640, 1952, 1, 1),
        "features.conv5_3.c1x1_a.conv.weight": (1280, 2560, 1, 1),
        "features.conv3_4.c3x3_b.conv.weight": (320, 8, 3, 3),
        "features.conv5_2.c1x1_c.conv.weight": (2176, 1280, 1, 1),
        "features.conv5_bn_ac.bn.running_var": (2688,),
        "last_linear.weight": (1000, 2688, 1, 1),
        "last_linear.bias": (1000,),
    }
    for k, s in shapes.items():
        assert tuple(sd[k].shape) == s, k
    keys = list(sd)
    # registration order: stem, numeric block order (conv4_10 after conv4_9), head last
    assert keys[0].startswith("features.conv1_1.conv")
    assert keys.index("features.conv4_10.c1x1_a.bn.weight") > keys.index("features.conv4_9.c1x1_c.conv.weight")
    assert keys[-2:] == ["last_linear.weight", "last_linear.bias"]


def test_every_batchnorm_has_eps_1e3(dpn):
    bns = [m for m in dpn.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 135 and all(m.eps == 1e-3 for m in bns)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in dpn.modules()) == 135


def test_feature_map_and_logits_shapes(dpn):
    x = torch.zeros(2, 3, 224, 224)
    with torch.no_grad():
        feats = dpn.features(x)
        out = dpn(x)
    assert feats.shape == (2, 2688, 7, 7)
    assert out.shape == (2, 1000) and out.dtype == torch.float32


def test_synthetic_weights_are_deterministic(dpn):
    again = build_model("dpn131")
    for (k, a), b in zip(dpn.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k
    w = dpn.state_dict()["features.conv1_1.conv.weight"]
    assert w.std() > 0 and not torch.equal(w, dpn.state_dict()["features.conv2_1.c1x1_a.conv.weight"][:128, :3])


def test_published_container_loads_unchanged(tmp_path, dpn):
    """A 676-entry plain OrderedDict in the legacy format, like dpn131-7af84be88.pth (spec section 2)."""
    sd = OrderedDict((k, v.clone()) for k, v in dpn.state_dict().items() if not k.endswith("num_batches_tracked"))
    sd["last_linear.bias"] += 0.5  # differ from the synthetic weights, so loading must really happen
    path = tmp_path / "dpn131-7af84be88.pth"
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    loaded = build_model("dpn131", path)
    assert not loaded.training
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = loaded(x) - dpn(x)
    assert torch.allclose(diff, torch.full_like(diff, 0.5), atol=1e-5)


def test_other_models_checkpoint_names_the_keys(tmp_path):
    sd = OrderedDict([("vgg.0.weight", torch.zeros(64, 3, 3, 3)), ("vgg.0.bias", torch.zeros(64))])
    path = tmp_path / "pyramidbox.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as e:
        build_model("dpn131", path)
    assert "unexpected keys: vgg.0.weight, vgg.0.bias" in str(e.value)
    assert "missing keys: features.conv1_1.conv.weight" in str(e.value)


def test_onnx_export_parity_and_batch_invariance(dpn):
    r = recipes.get("dpn131")
    path = export.export_onnx(r, dpn)
    info = export.describe_onnx(path)
    assert info["inputs"] == {"image": ["-1", 3, 224, 224]}
    assert info["outputs"] == {"class": ["-1", 1000]}
    assert info["opset"] == 11 and info["ops"]["Conv"] == 135 and info["ops"].get("GlobalAveragePool") == 1
    sess = open_session("onnxruntime", onnx_path=path)
    x = np.random.default_rng(0).standard_normal((3, 3, 224, 224), dtype=np.float32)
    rows = export.parity(open_session("torch", model=dpn).run(x), sess.run(x), r.output_names)
    assert rows[0]["max_abs"] < 1e-4 and rows[0]["argmax_agree"] == 1.0
    assert export.batch_invariance(sess.run, x) < 1e-4
