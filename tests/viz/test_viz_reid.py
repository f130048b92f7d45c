"""Re-ID plots: CMC curve values and the query's top matches with green/red borders in the right order."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from zooinfer import recipes  # noqa: E402
from zooinfer.metrics.reid import ReidAccumulator  # noqa: E402
from zooinfer.viz.reid import GREEN, RED, first_valid_query, plot_cmc, ranked_gallery, show_query_matches  # noqa: E402


@pytest.fixture(scope="module")
def acc():
    """Embedded sample with features that encode the identity in parts 0-3 and the camera in parts 4-5: same
    identity -> 4 apart (other camera) or 0 (same camera, excluded by the metric); others 8 or 12 apart."""
    ds = recipes.get("pcb").open_dataset(None)
    a = ReidAccumulator(ds)
    for s in ds:
        f = np.zeros((2048, 6), np.float32)
        for p in range(4):
            f[(7 * s.target + p) % 2048 if s.target else 1000 + len(a.g_pids), p] = 1.0
        for p in (4, 5):
            f[s.info["camid"], p] = 1.0
        a.update(s, f.reshape(-1))
    return a


def test_ranked_gallery_leaves_out_same_camera_images(acc):
    i = acc.q_pids.index(2)  # pid 2 seen by camera 1; gallery has pid 2 on cameras 1, 2, 3, 5
    ranked = ranked_gallery(acc, i, topk=20)
    assert [same for _, _, same in ranked][:3] == [True, True, True]
    assert all(acc.g_camids[j] != acc.q_camids[i] for j, _, same in ranked if same)
    assert len(ranked) == 11  # 12 gallery images minus the same-id same-camera one
    assert [d for _, d, _ in ranked] == sorted(d for _, d, _ in ranked)


def test_query_matches_figure_has_green_and_red_frames_in_rank_order(acc):
    i = first_valid_query(acc)
    fig = show_query_matches(acc, topk=5)
    ranked = ranked_gallery(acc, i, topk=5)
    tiles = [ax.get_images()[0].get_array() for ax in fig.axes]
    assert len(tiles) == 6
    for tile, (_, _, same) in zip(tiles[1:], ranked):
        assert tuple(tile[0, 0]) == (GREEN if same else RED)
    assert {tuple(t[0, 0]) for t in tiles[1:]} == {GREEN, RED}


def test_cmc_plot_draws_the_curve_and_published_points(acc):
    curve = acc.cmc_curve(20)
    fig = plot_cmc(curve, {"top1": 0.921, "top5": 0.969, "top10": 0.981, "mAP": 0.5})
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), 100 * curve)
    assert list(ax.lines[0].get_xdata()) == list(range(1, len(curve) + 1))
    np.testing.assert_allclose(ax.collections[0].get_offsets(), [[1, 92.1], [5, 96.9], [10, 98.1]])
    assert curve[0] == 1.0  # every valid query's nearest valid image is its own identity here
