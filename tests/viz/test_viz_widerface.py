"""WIDER FACE plots and the full-run estimate used by the PyramidBox notebook."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from zooinfer.metrics import widerface  # noqa: E402
from zooinfer.pipeline import RunResult, StageTimer  # noqa: E402
from zooinfer.models.pyramidbox import recipe as pb  # noqa: E402
from zooinfer.viz.widerface import face_ground_truth, plot_pr_curves  # noqa: E402


def test_pr_curves_plot_and_ground_truth(tmp_path):
    import matplotlib.pyplot as plt

    gt_dir = tmp_path / "gt"
    widerface.write_ground_truth(gt_dir, {"0--Parade": {"a": np.array([[10, 10, 50, 50], [100, 10, 8, 8]]),
                                                        "b": {"boxes": np.array([[5, 5, 40, 40]]), "easy": [0]}}})
    pred = {("0--Parade", "a"): np.array([[10, 10, 50, 50, 0.9], [300, 300, 20, 20, 0.5]]),
            ("0--Parade", "b"): np.array([[5, 5, 40, 40, 0.8]])}
    curves = widerface.pr_curves(pred, gt_dir)
    fig = plot_pr_curves(curves, published={"easy": 0.96, "hard": 0.88})
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert len(labels) == 3
    ap = widerface.evaluate(pred, gt_dir)
    assert labels[0] == f"easy: AP {100 * ap['easy']:.1f}% (published 96.0%)"
    assert labels[1] == f"medium: AP {100 * ap['medium']:.1f}%"
    # hard: 2 of 3 faces found, the false positive scores lowest: the curve ends at recall 2/3
    assert ax.get_lines()[2].get_xdata().max() == pytest.approx(2 / 3)
    plt.close(fig)
    g = face_ground_truth(widerface.load_ground_truth(gt_dir))
    assert g[("0--Parade", "a")] == [{"bbox": [10.0, 10.0, 50.0, 50.0]}, {"bbox": [100.0, 10.0, 8.0, 8.0]}]


def test_full_val_estimate_scales_inference_only():
    t = StageTimer()
    t.add("infer", 8.0, 4)
    t.add("postprocess", 2.0, 4)
    t.add("preprocess", 1.0, 4)
    res = RunResult({}, 4, 4, [], t, 12.0, 2, "fake")
    est = pb.full_val_estimate(res, 250)
    # 3 s measured per image; inference + postprocess 2.5 s per image grow 16x: 3 + 2.5 * 15 = 40.5 s
    assert est["est_s_per_image_at_1000"] == pytest.approx(40.5)
    assert est["est_hours"] == pytest.approx(40.5 * 3226 / 3600)
    assert pb.full_val_estimate(res, 1000)["est_s_per_image_at_1000"] == pytest.approx(3.0)
