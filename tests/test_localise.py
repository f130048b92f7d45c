"""zooinfer.localise: a damaged weight is found at the node that consumes it; QDQ tensors map to their originals;
NPU variants get the msit command; the plots draw."""
from __future__ import annotations


import numpy as np
import pytest

from conftest import tiny_recipe
from zooinfer import compare, export, localise, recipes, variants
from zooinfer.models import build_model

pytest.importorskip("onnxconverter_common", reason='the variants extra: pip install -e ".[variants]"')
ENGINES = ["onnxruntime"] + (["polygraphy"] if localise.polygraphy_available() else [])




@pytest.fixture
def x():
    return np.random.default_rng(5).standard_normal((1, 3, 8, 8)).astype(np.float32)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("weight", ["fc.weight", "conv"])
def test_damaged_weight_is_localised_to_its_consumer(tiny_onnx, tmp_path, x, engine, weight):
    import onnx

    g = onnx.load(str(tiny_onnx)).graph
    name = weight if weight != "conv" else next(n.input[1] for n in g.node if n.op_type == "Conv")
    dmg = localise.perturb_initializer(tiny_onnx, tmp_path / "damaged.onnx", name, scale=0.5)
    loc = localise.localise(tiny_onnx, dmg["path"], x, tolerance=1e-4, engine=engine)
    consumer_nodes = [n for n, _ in dmg["consumers"]]
    assert loc.first_node in consumer_nodes, loc.markdown()
    first = loc.first[0]
    assert first.op_type == dmg["consumers"][0][1] and first.rel_to_range > 1e-3
    # nothing upstream of the damaged node moved, and its error propagates downstream
    assert all(r.max_abs == 0.0 for r in loc.rows if r.depth < first.depth)
    assert all(r.exceeds for r in loc.rows if r.tensor == "logits")
    assert loc.table()[0]["node"] == first.node and "first exceeds" in loc.summary()


def test_identical_graphs_have_no_exceeding_tensor(tiny_onnx, x):
    loc = localise.localise(tiny_onnx, tiny_onnx, x, tolerance=1e-6)
    assert loc.rows and not loc.exceeding and loc.first_node is None
    assert all(r.max_abs == 0.0 and r.cosine == pytest.approx(1.0) for r in loc.rows if r.cosine is not None)


def test_chunked_passes_give_the_same_rows(tiny_onnx, tmp_path, x):
    dmg = localise.perturb_initializer(tiny_onnx, tmp_path / "d.onnx", "fc.weight")
    whole = localise.localise(tiny_onnx, dmg["path"], x, tolerance=1e-4)
    parts = localise.localise(tiny_onnx, dmg["path"], x, tolerance=1e-4, max_tensors_per_pass=3)
    assert [(r.tensor, r.max_abs, r.exceeds) for r in whole.rows] == [(r.tensor, r.max_abs, r.exceeds)
                                                                       for r in parts.rows]


def test_int8_tensors_compare_with_their_dequantised_copies(tiny_onnx, tiny_model, tiny_dataset):
    r = tiny_recipe()
    path, _ = variants.int8_onnx(r, tiny_onnx, tiny_dataset, calibration=7)
    loc = localise.localise(tiny_onnx, path, r.preprocess(tiny_dataset[2].path)[0][0], tolerance=0.1)
    by = {r.tensor: r for r in loc.rows}
    assert by["/Relu_output_0"].variant_tensor == "/Relu_output_0_DequantizeLinear_Output"
    assert by["/Relu_output_0"].cosine > 0.99  # the Relu the quantizer removed is compared after its clipping Q/DQ
    assert any("QuantizeLinear" in t for t in loc.only_in_variant)


def test_localise_worst_sample_of_a_comparison(tiny_onnx, tiny_model, tiny_dataset, tmp_path):
    from zooinfer.backends import open_session

    r = tiny_recipe()
    sess = open_session("onnxruntime", onnx_path=tiny_onnx)
    out = tmp_path / "result"
    out.mkdir()
    for s in tiny_dataset:
        for k, o in enumerate(sess.run(r.preprocess(s.path)[0][0][None])):
            (o[0] * (1.1 if s.key == "img3" else 1.0)).astype(np.float32).tofile(out / f"{s.key}_{k}.bin")
    cmp = compare.compare(r, tiny_dataset, ["onnxruntime-fp16", f"bins:{out}"], onnx_path=tiny_onnx,
                          model=tiny_model)
    loc = localise.localise_worst(cmp, "onnxruntime-fp16", r)
    assert isinstance(loc, localise.Localisation)
    assert loc.sample == cmp.worst_sample("onnxruntime-fp16") and loc.tolerance == localise.DEFAULT_TOLERANCE["fp16"]
    dev = localise.localise_worst(cmp, f"bins:{out}", r, om_path="tiny_bs1.om")
    assert isinstance(dev, localise.DeviceLocalisation) and dev.sample == "img3"
    assert dev.command.startswith("msit debug compare") and f"-gm {tiny_onnx}" in dev.command
    assert "-om tiny_bs1.om" in dev.command and "-i ./prep_bin/img3.bin" in dev.command
    assert '-is "image:1,3,8,8"' in dev.command


def test_plots_draw(tiny_onnx, tiny_model, tiny_dataset, tmp_path, x):
    import matplotlib

    matplotlib.use("Agg")
    from zooinfer.viz import compare as vc

    cmp = compare.compare(tiny_recipe(), tiny_dataset, ["onnxruntime-fp16"], onnx_path=tiny_onnx, model=tiny_model)
    vc.plot_accuracy_vs_throughput(cmp, path=tmp_path / "a.png")
    vc.plot_disagreement(cmp, path=tmp_path / "b.png")
    vc.show_worst(cmp, "onnxruntime-fp16", 2, path=tmp_path / "c.png")
    dmg = localise.perturb_initializer(tiny_onnx, tmp_path / "d.onnx", "fc.weight")
    vc.plot_error_by_depth(localise.localise(tiny_onnx, dmg["path"], x), path=tmp_path / "d.png")
    assert all((tmp_path / f"{c}.png").stat().st_size > 1000 for c in "abcd")


@pytest.mark.parametrize("name", ["ssd_resnet34", pytest.param("dpn131", marks=pytest.mark.slow)])
def test_damaged_real_model_is_localised_to_the_consumer(name, tmp_path):
    """A real exported graph (synthetic weights): one weight tensor a third of the way in perturbed; the first
    node over the tolerance is the node that reads it."""
    r = recipes.get(name)
    ds = r.open_dataset(None)
    src = export.export_onnx(r, build_model(name))
    dmg = localise.perturb_initializer(src, tmp_path / "damaged.onnx", scale=0.3, seed=1)
    feed = r.preprocess(ds[0].path)[0][0]
    loc = localise.localise(src, dmg["path"], feed, tolerance=1e-4)
    assert loc.first_node in [n for n, _ in dmg["consumers"]], loc.markdown()
    print(f"\n{name}: perturbed {dmg['initializer']} (read by {dmg['consumers']}): {loc.summary()}")
