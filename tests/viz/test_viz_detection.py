"""Detection drawing (viz/detection.py): what is drawn for COCO result dicts and for (K, 5) face arrays."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.patches as patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from zooinfer.datasets.base import Sample  # noqa: E402
from zooinfer.viz import detection as viz  # noqa: E402


def _dets():
    return [{"image_id": 1, "category_id": 17, "bbox": [10, 20, 30, 40], "score": 0.4},
            {"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.9},
            {"image_id": 1, "category_id": 90, "bbox": [5, 5, 5, 5], "score": 0.1}]


def test_top_detections_drawn_in_score_order():
    fig, ax = plt.subplots()
    n = viz.draw_detections(ax, np.zeros((60, 80, 3), np.uint8), _dets(), top=2, names=viz.coco_names(),
                            ground_truth=[{"bbox": [0, 0, 8, 8]}])
    rects = [p for p in ax.patches if isinstance(p, patches.Rectangle)]
    assert n == 2 and len(rects) == 3  # 1 ground truth (dashed) + the 2 best detections
    assert rects[1].get_xy() == (1, 2) and rects[2].get_xy() == (10, 20)
    assert [t.get_text() for t in ax.texts] == ["person 0.90", "cat 0.40"]
    assert rects[0].get_linestyle() == "--"
    plt.close(fig)


def test_min_score_and_face_arrays():
    fig, ax = plt.subplots()
    faces = np.array([[1, 1, 5, 5, 0.3], [2, 2, 6, 6, 0.95]])
    assert viz.draw_detections(ax, np.zeros((10, 10)), faces, min_score=0.5) == 1
    assert [t.get_text() for t in ax.texts] == ["0.95"]
    assert viz.draw_detections(ax, np.zeros((10, 10)), np.zeros((0, 5))) == 0
    assert viz.draw_detections(ax, np.zeros((10, 10)), []) == 0
    plt.close(fig)


def test_show_detections_grid(tmp_path):
    from PIL import Image

    p = tmp_path / "000000000001.jpg"
    Image.new("RGB", (64, 48), (200, 100, 0)).save(p)
    kept = [(Sample("000000000001", str(p), 1, {"image_id": 1}), _dets())] * 2
    fig = viz.show_detections(kept, top=1, names=viz.coco_names(),
                              ground_truth=viz.ground_truth_by_image({"annotations": [
                                  {"image_id": 1, "bbox": [0, 0, 9, 9]}]}))
    axes = fig.get_axes()
    assert len(axes) == 2 and axes[0].get_title() == "000000000001: 3 detections, top 1"
    assert [t.get_text() for t in axes[0].texts] == ["person 0.90"]
    plt.close(fig)
