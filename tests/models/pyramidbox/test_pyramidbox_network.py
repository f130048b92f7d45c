"""PyramidBox network, prior boxes, decode, Detect and the guide's postprocessing against the spec, hand-worked cases
and upstream reference runs.

Reference numbers (tests/models/pyramidbox/data/) were produced outside the project:
* ``network.npz``: yxlijun/Pyramidbox.pytorch @76cf355 ``build_net('train', 2)`` (face loc, softmax(face conf)) with
  zooinfer's synthetic weights (``init_synthetic``: drawn per tensor name, so identical in both networks) on
  ``default_rng(h * 1000 + w).standard_normal((1, 3, h, w)) * 50``.
* ``reference.npz``: upstream ``PriorBox`` (its own feature maps for a 136x200 input; 1000x1000 rows), ``decode``
  and ``Detect.forward`` (called directly: the autograd.Function call fails on torch >= 1.5) on fixed inputs, and
  the Ascend guide's ``pyramidbox_postprocess.py`` functions (``detect_face``/``flip_test``/``multi_scale_test``/
  ``bbox_vote`` + the main loop's write) fed with the Detect rows as the guide reads them (zero-padded to 1000,
  float16).
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from zooinfer import recipes
from zooinfer.boxes import decode_center_offsets as pyramidbox_decode  # with PyramidBox's default variance
from zooinfer.models.pyramidbox.head import pyramidbox_detect, pyramidbox_priors
from zooinfer.errors import CheckpointError
from zooinfer.metrics.widerface import LINE_FORMAT
from zooinfer.models import build_model
from zooinfer.models.pyramidbox.network import L2Norm, feature_sizes
from zooinfer.models.pyramidbox import recipe as pb

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def ref():
    return np.load(DATA / "reference.npz")


@pytest.fixture(scope="module")
def net():
    return build_model("pyramidbox")


# ------------------------------------------------------------------------------------------------ network
def test_state_dict_matches_spec(net):
    sd = net.state_dict()
    assert len(sd) == 305  # 281 tensors + 24 num_batches_tracked
    assert sum(k.endswith("num_batches_tracked") for k in sd) == 24
    assert sum(p.numel() for p in net.parameters()) == 57_177_366
    assert sum(v.numel() for v in sd.values() if v.is_floating_point()) == 57_208_086
    shapes = {
        "vgg.0.weight": (64, 3, 3, 3), "vgg.28.weight": (512, 512, 3, 3), "vgg.31.weight": (1024, 512, 3, 3),
        "vgg.33.weight": (1024, 1024, 1, 1), "extras.0.weight": (256, 1024, 1, 1), "extras.1.weight": (512, 256, 3, 3),
        "extras.2.weight": (128, 512, 1, 1), "extras.3.weight": (256, 128, 3, 3), "L2Norm3_3.weight": (256,),
        "L2Norm4_3.weight": (512,), "L2Norm5_3.weight": (512,), "lfpn_topdown.0.weight": (512, 1024, 1, 1),
        "lfpn_topdown.2.weight": (256, 512, 1, 1), "lfpn_later.2.weight": (256, 256, 1, 1),
        "cpm.0.branch1.conv1.weight": (1024, 256, 1, 1), "cpm.3.branch2a.conv1.weight": (256, 1024, 1, 1),
        "cpm.5.branch2b.conv1.weight": (256, 256, 3, 3), "cpm.1.branch2c.bn1.running_var": (1024,),
        "cpm.2.ssh_1.weight": (256, 1024, 3, 3), "cpm.4.ssh_dimred.weight": (128, 1024, 3, 3),
        "cpm.4.ssh_3b.bias": (128,), "loc_layers.0.weight": (8, 512, 3, 3), "conf_layers.0.weight": (8, 512, 3, 3),
        "conf_layers.1.weight": (6, 512, 3, 3), "conf_layers.5.bias": (6,),
    }
    for k, s in shapes.items():
        assert tuple(sd[k].shape) == s, k
    keys = [k for k in sd if not k.endswith("num_batches_tracked")]
    firsts = [next(i for i, k in enumerate(keys) if k.startswith(p)) for p in
              ("vgg.", "extras.", "L2Norm3_3", "L2Norm4_3", "L2Norm5_3", "lfpn_topdown.", "lfpn_later.", "cpm.0.",
               "cpm.5.", "loc_layers.", "conf_layers.")]
    assert firsts == sorted(firsts)
    assert keys[keys.index("cpm.0.branch1.conv1.weight"):][:6] == [
        "cpm.0.branch1.conv1.weight", "cpm.0.branch1.conv1.bias", "cpm.0.branch1.bn1.weight", "cpm.0.branch1.bn1.bias",
        "cpm.0.branch1.bn1.running_mean", "cpm.0.branch1.bn1.running_var"]
    assert not any("bn64" in k for k in keys)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.vgg.modules())


def test_feature_sizes_and_anchor_count():
    assert feature_sizes(1000, 1000) == [(250, 250), (125, 125), (62, 62), (31, 31), (16, 16), (8, 8)]
    assert feature_sizes(640, 640) == [(160, 160), (80, 80), (40, 40), (20, 20), (10, 10), (5, 5)]
    sizes = [h * w for h, w in feature_sizes(1000, 1000)]
    assert sum(sizes) == 83250
    assert list(np.cumsum([0] + sizes[:-1])) == [0, 62500, 78125, 81969, 82930, 83186]


@pytest.mark.parametrize("hw", [(64, 64), (96, 64)])
def test_forward_matches_upstream(net, hw):
    h, w = hw
    d = np.load(DATA / "network.npz")
    x = (np.random.default_rng(h * 1000 + w).standard_normal((1, 3, h, w)) * 50).astype(np.float32)
    with torch.no_grad():
        loc, conf = net(torch.from_numpy(x))
    assert loc.shape == (1, sum(a * b for a, b in feature_sizes(h, w)), 4) and conf.shape[2] == 2
    np.testing.assert_allclose(loc[0].numpy(), d[f"loc_{h}x{w}"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(conf[0].numpy(), d[f"conf_{h}x{w}"], rtol=0, atol=1e-6)


def test_max_in_out_is_asymmetric(net):
    """Zero conv weights: the logits are the biases. Layer 0: bg = max(b0, b1, b2), face = b3; layers 1..5:
    bg = c0, face = max(c1, c2, c3); softmax over (bg, face)."""
    m = build_model("pyramidbox")
    with torch.no_grad():
        for k, layer in enumerate(m.conf_layers):
            layer.weight.zero_()
            layer.bias.copy_(torch.tensor([0.0, 2.0, -1.0, 1.0, 9.0, 9.0, 9.0, 9.0][:layer.bias.numel()]))
        _, conf = m(torch.zeros(1, 3, 64, 64))
    # layer 0: bg = 2, face = 1 -> p(face) = 1 / (1 + e);  layers 1..5: bg = 0, face = 2 -> 1 / (1 + e^-2)
    n0 = 16 * 16
    np.testing.assert_allclose(conf[0, :n0, 1].numpy(), 1 / (1 + np.e), rtol=1e-6)
    np.testing.assert_allclose(conf[0, n0:, 1].numpy(), 1 / (1 + np.exp(-2.0)), rtol=1e-6)
    np.testing.assert_allclose(conf[0].sum(-1).numpy(), 1.0, rtol=1e-6)


def test_l2norm_eps_after_sqrt():
    n = L2Norm(2, 10.0)
    x = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)
    np.testing.assert_allclose(n(x).detach().flatten().numpy(), [6.0, 8.0], rtol=1e-6)
    z = torch.zeros(1, 2, 1, 1)
    assert torch.equal(n(z), z)  # 0 / (0 + 1e-10): no NaN


def test_checkpoint_loading(tmp_path, net):
    """The published container: a plain state dict (torch 0.3 era: legacy, non-zip serialisation, no
    num_batches_tracked); here also with module. prefixes."""
    sd = OrderedDict(("module." + k, v.clone()) for k, v in net.state_dict().items()
                     if not k.endswith("num_batches_tracked"))
    assert len(sd) == 281
    p = tmp_path / "pyramidbox_120000_99.02.pth"
    torch.save(sd, p, _use_new_zipfile_serialization=False)
    assert p.read_bytes()[:2] == b"\x80\x02"  # a bare pickle, not a zip archive
    m = build_model("pyramidbox", p)
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((1, 3, 64, 64)).astype(np.float32) * 50)
    with torch.no_grad():
        for a, b in zip(m(x), net(x)):
            assert torch.equal(a, b)
    del sd


def test_checkpoint_of_another_model_names_keys(tmp_path):
    p = tmp_path / "bad.pth"
    torch.save(OrderedDict([("bn64.weight", torch.ones(64)), ("vgg.0.weight", torch.zeros(64, 3, 3, 3))]), p)
    with pytest.raises(CheckpointError) as e:
        build_model("pyramidbox", p)
    msg = str(e.value)
    assert "bn64.weight" in msg and "missing keys" in msg and "vgg.0.bias" in msg


# ------------------------------------------------------------------------------------------------ prior boxes
def test_priors_spec_check_values():
    p = pyramidbox_priors(1000, 1000, feature_sizes(1000, 1000))
    assert p.shape == (83250, 4) and p.dtype == np.float32
    np.testing.assert_allclose(p[0], [0.002, 0.002, 0.016, 0.016], rtol=1e-6)
    np.testing.assert_allclose(p[1], [0.006, 0.002, 0.016, 0.016], rtol=1e-6)
    np.testing.assert_allclose(p[62500], [0.004, 0.004, 0.032, 0.032], rtol=1e-6)
    np.testing.assert_allclose(p[83249], [0.96, 0.96, 0.512, 0.512], rtol=1e-6)
    # layer 2 (62x62, step 16): f = 62.5, not 62: the last centre is 61.5 / 62.5
    np.testing.assert_allclose(p[78125 + 61], [61.5 / 62.5, 0.5 / 62.5, 0.064, 0.064], rtol=1e-6)


def test_priors_match_upstream(ref):
    p = pyramidbox_priors(1000, 1000, feature_sizes(1000, 1000))
    assert p.shape[0] == int(ref["priors_1000_n"])
    assert np.array_equal(p[ref["priors_1000_idx"]], ref["priors_1000_rows"])
    # upstream's own feature maps for a 136 x 200 input (not square: x uses W, y uses H)
    assert np.array_equal(pyramidbox_priors(136, 200, feature_sizes(136, 200)), ref["priors_136x200"])


# ------------------------------------------------------------------------------------------------ decode / Detect
def test_decode_hand_worked():
    prior = np.array([[0.5, 0.5, 0.2, 0.2]], dtype=np.float32)
    loc = np.array([[1.0, -1.0, 0.0, np.log(2.0) / 0.2]], dtype=np.float32)
    # cx = 0.5 + 1 * 0.1 * 0.2 = 0.52, cy = 0.48, w = 0.2, h = 0.2 * 2 = 0.4
    np.testing.assert_allclose(pyramidbox_decode(loc, prior)[0], [0.42, 0.28, 0.62, 0.68], rtol=1e-6)


def test_decode_matches_upstream(ref):
    pri = pyramidbox_priors(160, 160, feature_sizes(160, 160))
    assert np.array_equal(pyramidbox_decode(ref["e2e_loc0"], pri), ref["e2e_decoded0"])


def test_detect_hand_worked():
    """IoU exactly float32(0.3) is kept (upstream keeps IoU <= 0.3), 0.31 suppressed; score exactly 0.05 is no
    candidate (strict >); rows are (score, x1, y1, x2, y2) by descending score."""
    boxes = np.array([[0, 0, 1, 1], [0, 0, 1, 0.3], [0, 0, 1, 0.31], [2, 2, 3, 3], [5, 5, 6, 6]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.85, 0.7, 0.05], dtype=np.float32)
    rows = pyramidbox_detect(boxes, scores)
    np.testing.assert_array_equal(rows[:, 0], np.float32([0.9, 0.8, 0.7]))
    np.testing.assert_array_equal(rows[:, 1:], boxes[[0, 1, 3]])
    assert pyramidbox_detect(boxes, np.zeros(5, np.float32)).shape == (0, 5)


def test_detect_matches_upstream_with_ties_and_top_k(ref):
    """5,218 candidates with scores on a 1/32 grid (many exact ties: order = torch.sort's, unstable) and the
    top-5000 cut."""
    pri = pyramidbox_priors(256, 256, feature_sizes(256, 256))
    rows = pyramidbox_detect(pyramidbox_decode(ref["ties_loc"], pri), ref["ties_conf"][:, 1])
    assert np.array_equal(rows, ref["ties_rows"])


def test_detect_rows_match_upstream_network_outputs(ref):
    for v in range(2):
        rows = pb.detect_rows(ref[f"e2e_loc{v}"], ref[f"e2e_conf{v}"], 160)
        assert np.array_equal(rows, ref[f"e2e_rows{v}"][:1000])


# ------------------------------------------------------------------------------------------------ the guide's merge
def _lines(dets_xyxy: np.ndarray) -> str:
    return "".join(LINE_FORMAT.format(*r) + "\n" for r in pb.to_xywh(dets_xyxy).tolist())


def test_postprocess_matches_guide_end_to_end(ref):
    """Both views' network outputs -> Detect -> float16 rows -> flip merge -> voting, as the guide writes them."""
    h, w = (int(v) for v in ref["e2e_hw"])
    outputs = [[ref["e2e_loc0"], ref["e2e_conf0"]], [ref["e2e_loc1"], ref["e2e_conf1"]]]
    pred = pb.postprocess(outputs, {"height": h, "width": w, "canvas": 160})
    dets = ref["e2e_dets"]
    assert pred.shape == dets.shape
    np.testing.assert_array_equal(pred, pb.to_xywh(dets))
    assert _lines(dets) == str(ref["e2e_text"])
    assert "".join(LINE_FORMAT.format(*r) + "\n" for r in pred.tolist()) == str(ref["e2e_text"])


@pytest.mark.parametrize("case", ["hand_small", "hand_large", "hand_portrait"])
def test_merge_matches_guide_hand_rows(ref, case):
    """Clusters, exact duplicates, equal scores, a 0.049 row (dropped), boxes leaving the image; image sizes on both
    sides of the bt > 1 branch (1024x768: small-box copies; 1500x1400: large-box copies)."""
    h, w = (int(v) for v in ref[f"{case}_hw"])
    got = pb.merge_views(ref["hand_rows0"], ref["hand_rows1"], h, w)
    np.testing.assert_array_equal(got, ref[f"{case}_dets"])
    assert _lines(got) == str(ref[f"{case}_text"])


def test_merge_single_row_and_no_group(ref):
    got = pb.merge_views(np.zeros((0, 5), np.float32), np.array([[0.8, 0.3, 0.3, 0.5, 0.5]], np.float32), 768, 1024)
    np.testing.assert_array_equal(got, ref["single_dets"])
    assert bool(ref["nogroup_raises"])  # the guide's bbox_vote raises UnboundLocalError here; we write nothing
    assert pb.merge_views(ref["nogroup_rows0"], np.zeros((0, 5), np.float32), 1400, 1500).shape == (0, 5)


def test_flip_merge_hand_worked():
    """A face at x 256..512 of a 1024x768 image: the original view sees (0.25 .. 0.5) of the 1000-canvas-normalised
    width, the mirrored view (0.5 .. 0.75). Flipped back, both agree; with the filtered copy of the original (side
    257 > 30) the group has 3 rows -> one voted box = the face, score = the max. A box seen only in the flipped
    view is a singleton and is dropped (as the guide does)."""
    rows0 = np.array([[0.9, 0.25, 0.25, 0.5, 0.5]], dtype=np.float32)
    rows1 = np.array([[0.95, 0.5, 0.25, 0.75, 0.5], [0.6, 0.0, 0.7, 0.05, 0.75]], dtype=np.float32)
    got = pb.merge_views(rows0, rows1, 768, 1024, fp16=False)
    np.testing.assert_allclose(got, [[256.0, 256.0, 512.0, 512.0, 0.95]], rtol=1e-6)
    np.testing.assert_allclose(pb.to_xywh(got), [[256.0, 256.0, 257.0, 257.0, 0.95]], rtol=1e-6)
    np.testing.assert_array_equal(pb.flip_back(np.array([[10.0, 5.0, 30.0, 25.0, 0.5]]), 100),
                                  [[70.0, 5.0, 90.0, 25.0, 0.5]])


def test_detect_face_float16_emulation():
    rows = np.array([[0.3, 0.1, 0.2, 0.3, 0.4]], dtype=np.float32)
    d16 = pb.detect_face(rows, 768, 1024, fp16=True)
    d32 = pb.detect_face(rows, 768, 1024, fp16=False)
    assert d16.dtype == np.float16 and d32.dtype == np.float32
    # 1280 * float16(0.1) = 127.96875 -> float16 128.0; * float16(0.8) = 102.375 -> float16 102.375
    assert float(d16[0, 0]) == 102.375
    np.testing.assert_allclose(d32[0, :4], [102.4, 204.8, 307.2, 409.6], rtol=1e-6)


def test_bbox_vote_weights_and_cap():
    det = np.array([[0, 0, 10, 10, 0.5], [2, 2, 12, 12, 1.0], [100, 100, 110, 110, 0.3]], dtype=np.float64)
    # group 1: IoU((2,2,12,12),(0,0,10,10)) = 81/(121+121-81) = 0.503 >= 0.3: weighted mean by score
    got = pb.bbox_vote(det)
    np.testing.assert_allclose(got, [[4 / 3, 4 / 3, 34 / 3, 34 / 3, 1.0]])  # (0*0.5 + 2*1) / 1.5 ...; singleton gone
    many = np.concatenate([np.array([[20.0 * i, 0, 20.0 * i + 10, 10, 1 - i / 2000]] * 2) for i in range(800)])
    assert pb.bbox_vote(many).shape == (750, 5)


# ------------------------------------------------------------------------------------------------ recipe
def test_recipe_facts():
    r = recipes.get("pyramidbox")
    assert r.input_shape == (3, 1000, 1000) and r.input_names == ["image"] and r.output_names == ["loc", "conf"]
    assert r.opset >= 11 and r.headline == ("easy", "medium", "hard")
    assert r.published.accuracy == pytest.approx({"easy": 0.9628280209085509, "medium": 0.9538134269337523,
                                                   "hard": 0.8798007442124222})
    others = dict(r.published.other)
    assert any(v == pytest.approx({"easy": 0.958986327388428, "medium": 0.9504929578311708,
                                   "hard": 0.907248372271328}) for v in others.values())
    assert r.dynamic_axes["image"] == {0: "-1", 2: "height", 3: "width"}
    fixed = pb.make_recipe(1000, shape_free=False)
    assert fixed.dynamic_axes is None and fixed.input_shape == (3, 1000, 1000)
    assert pb.make_recipe(256).input_shape == (3, 256, 256)


def test_postprocess_rejects_wrong_canvas(ref):
    from zooinfer.errors import MetricInputError

    with pytest.raises(MetricInputError, match="anchors"):
        pb.postprocess([[ref["e2e_loc0"], ref["e2e_conf0"]]], {"height": 10, "width": 10, "canvas": 256})


# ------------------------------------------------------------------------------------------------ ONNX
def test_onnx_shape_free_exact_resize_and_parity(net):
    """Opset 11: the three LFPN upsamplings are Resize (linear, half_pixel = align_corners=False) with sizes from the
    lateral tensor, never opset-9 Upsample; batch, height and width symbolic; ONNX Runtime = PyTorch at sizes the
    export never saw (odd maps: 96 -> 6 -> 3 -> 2, 200 -> 50 -> 25 -> 13)."""
    import onnx
    import onnxruntime as ort

    from zooinfer import export

    r = pb.make_recipe(256)  # the notebook's default: the cached file is shared with it
    path = export.export_onnx(r, net)
    g = onnx.load(str(path), load_external_data=False)
    assert g.opset_import[0].version == 11
    ops = [n.op_type for n in g.graph.node]
    assert ops.count("Resize") == 3 and "Upsample" not in ops and ops.count("Conv") == 91
    for n in g.graph.node:
        if n.op_type == "Resize":
            attrs = {a.name: a.s.decode() for a in n.attribute if a.s}
            assert attrs["mode"] == "linear" and attrs["coordinate_transformation_mode"] == "half_pixel"
            assert len(n.input) == 4 and n.input[3]  # sizes given (not scales)
    dims = [d.dim_param or d.dim_value for d in g.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["-1", 3, "height", "width"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for hw in [(96, 200), (64, 64)]:
        x = (np.random.default_rng(5).standard_normal((2, 3, *hw)) * 50).astype(np.float32)
        got = sess.run(None, {"image": x})
        with torch.no_grad():
            want = net(torch.from_numpy(x))
        for a, b in zip(got, want):
            assert a.shape == tuple(b.shape)
            np.testing.assert_allclose(a, b.numpy(), rtol=0, atol=2e-5)
