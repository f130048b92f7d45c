"""The notebook's results section in one call (viz.show_results) and the set-up caveat (viz.show_caveats): which
tables each task shows, and that the plots read the curves the evaluator kept instead of recomputing them."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from types import SimpleNamespace  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from zooinfer import recipes, report, viz  # noqa: E402
from zooinfer.datasets.base import ImageDataset, Sample  # noqa: E402
from zooinfer.metrics import coco, reid  # noqa: E402
from zooinfer.metrics import widerface as wf  # noqa: E402
from zooinfer.pipeline import RunResult, StageTimer  # noqa: E402


@pytest.fixture
def shown(monkeypatch):
    """Every (title, rows) report.show displays, in order."""
    calls: list[tuple[str | None, object]] = []
    monkeypatch.setattr(report, "show", lambda rows, title=None, columns=None: calls.append((title, rows)))
    yield calls
    plt.close("all")


def _result(metrics: dict, kept: list, accumulator=None, n: int = 2) -> RunResult:
    t = StageTimer()
    t.add("infer", 2.0, n)
    t.add("postprocess", 1.0, n)
    return RunResult(metrics, n, n, [], t, 4.0, 1, "onnxruntime", kept=kept, accumulator=accumulator)


def _ev(name: str, dataset, **options) -> SimpleNamespace:
    return SimpleNamespace(recipe=recipes.get(name, **options), dataset=dataset,
                           config=SimpleNamespace(backend="onnxruntime"))


def _image(path, size=(64, 48)) -> str:
    Image.new("RGB", size, (120, 60, 30)).save(path)
    return str(path)


def test_classification_shows_the_top5_grid(tmp_path, shown):
    kept = [(Sample(f"img{i}", _image(tmp_path / f"img{i}.jpg"), i), np.arange(1000, dtype=np.float32))
            for i in range(3)]
    figs = viz.show_results(_ev("dpn131", ImageDataset("x", tmp_path, [])), _result({"top1": 0.0}, kept))
    assert len(figs) == 1 and len(figs[0].axes) == 3 and shown == []
    assert figs[0].axes[0].get_title() == "img0\nlabel 0"


def test_coco_detection_tables_and_drawings(tmp_path, shown):
    gt = {"images": [{"id": 1, "width": 64, "height": 48, "file_name": "000000000001.jpg"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 20], "area": 400,
                           "iscrowd": 0}],
          "categories": [{"id": 1, "name": "person"}]}
    dets = [{"image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 20], "score": 0.9}]
    metrics = coco.evaluate(dets, gt)
    metrics["n_images_missing"] = 0
    sample = Sample("000000000001", _image(tmp_path / "000000000001.jpg"), 1, {"image_id": 1})
    ds = ImageDataset("coco", tmp_path, [sample], extra={"annotations": gt})
    r = recipes.get("ssd_resnet34")
    figs = viz.show_results(_ev("ssd_resnet34", ds), _result(metrics, [(sample, dets)]))
    (stats_title, stats), (ap_title, ap) = shown
    assert stats_title == "COCO bbox statistics over 1 images (1 detections, 0 images missing)"
    assert [row["metric"] for row in stats] == list(coco.STAT_NAMES)
    assert stats[0]["ours_%"] == round(100 * metrics["AP"], 2) == 100.0
    assert ap_title == "AP vs published"
    assert [row["published"] for row in ap] == [r.published.source] + [label for label, _ in r.published.other]
    assert ap[0]["delta_pts"] == round(100 * (metrics["AP"] - r.published.accuracy["AP"]), 2)
    (fig,) = figs
    assert fig.axes[0].get_title() == "000000000001: 1 detections, top 5"
    assert len(fig.axes[0].patches) == 2  # the ground-truth box (dashed) and the detection


def _wider(tmp_path):
    gt_dir = tmp_path / "gt"
    wf.write_ground_truth(gt_dir, {"0--Parade": {"a": np.array([[10, 10, 30, 30], [40, 5, 8, 8]]),
                                                 "b": {"boxes": np.array([[5, 5, 20, 20]]), "easy": [0]}}})
    gt = wf.load_ground_truth(gt_dir)
    # keys as the WIDER FACE reader makes them: the image name (a plain name: it is the .bin stem)
    samples = [Sample(n, _image(tmp_path / f"{n}.jpg"), ("0--Parade", n), {"event": "0--Parade"}) for n in ("a", "b")]
    preds = [np.array([[10, 10, 30, 30, 0.9], [100, 30, 10, 10, 0.5]]), np.array([[5, 5, 20, 20, 0.8]])]
    acc = wf.WiderFaceAccumulator(gt)
    for s, p in zip(samples, preds):
        acc.update(s, p)
    metrics = acc.compute()
    metrics["n_ground_truth_images"] = 3
    ds = ImageDataset("wider", tmp_path, samples, extra={"ground_truth": gt},
                      rejected=[("WIDER_val/images/0--Parade/c.jpg", "not in the ground truth")])
    return ds, _result(metrics, list(zip(samples, preds)), acc)


def test_faces_read_the_kept_curves_and_show_every_table(tmp_path, shown, monkeypatch):
    ds, result = _wider(tmp_path)
    monkeypatch.setattr(wf, "pr_curves", lambda *a, **k: pytest.fail("the PR curves were recomputed"))
    ev = _ev("pyramidbox", ds, canvas=250)
    figs = viz.show_results(ev, result)
    titles = [t for t, _ in shown]
    assert titles[0].startswith(f"AP vs published: ours easy {100 * result.metrics['easy']:.2f}%")
    assert "(a subset: 2 of 3 images)" in titles[0]
    assert titles[1:] == ["Files not evaluated",
                          "Estimated time for the full val set at 1000x1000 (onnxruntime)"]
    published = ev.recipe.published
    assert len(shown[0][1]) == 1 + len(published.other)
    assert shown[1][1] == [{"path": "WIDER_val/images/0--Parade/c.jpg", "reason": "not in the ground truth"}]
    (estimate,) = shown[2][1]
    assert estimate["canvas"] == 250 and estimate["pixel_factor_to_1000"] == pytest.approx(16.0)
    pr, drawings = figs
    for line, s in zip(pr.axes[0].get_lines(), wf.SETTINGS):
        curve = result.accumulator.curves[s]
        ok = ~(np.isnan(curve.recall) | np.isnan(curve.precision))
        np.testing.assert_array_equal(line.get_xdata(), curve.recall[ok])
        assert line.get_label().startswith(f"{s}: AP {100 * result.metrics[s]:.1f}%")
    assert len(drawings.axes) == 2


def test_reid_reads_the_kept_cmc_curve(shown, monkeypatch):
    ds = recipes.get("pcb").open_dataset(None)
    acc = reid.ReidAccumulator(ds)
    rng = np.random.default_rng(0)
    for s in ds:
        f = np.zeros((2048, 6), np.float32)
        f[s.info["pid"] % 2048, :4] = 1.0
        f[:, 4:] = rng.standard_normal((2048, 2)) * 0.1
        acc.update(s, f.reshape(-1))
    metrics = acc.compute()
    monkeypatch.setattr(reid, "cmc", lambda *a, **k: pytest.fail("the CMC curve was recomputed"))
    ds.rejected = [("query/bad.jpg", "name does not follow the Market-1501 pattern")]
    cmc_fig, matches = viz.show_results(_ev("pcb", ds), _result(metrics, [], acc))
    assert shown == [("Files the Market-1501 reader skipped",
                      [{"path": "query/bad.jpg", "reason": "name does not follow the Market-1501 pattern"}])]
    np.testing.assert_array_equal(cmc_fig.axes[0].lines[0].get_ydata(), 100 * acc.cmc[:20])
    assert len(matches.axes) == 11  # the query and its 10 nearest gallery images


def test_caveats(shown):
    assert viz.show_caveats(_ev("pyramidbox", None)) is None  # the guide's canvas
    assert viz.show_caveats(_ev("dpn131", None)) is None
    assert shown == []
    text = viz.show_caveats(_ev("pyramidbox", None, canvas=256))
    assert text.startswith("**Canvas 256x256, not the guide's 1000x1000:**") and "`canvas=1000`" in text
    assert shown == [(None, text)]


def test_unknown_task_is_refused():
    ev = SimpleNamespace(recipe=SimpleNamespace(task="segmentation", notebook=None))
    with pytest.raises(ValueError, match="segmentation"):
        viz.show_results(ev, None)
