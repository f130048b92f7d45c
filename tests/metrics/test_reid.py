"""Market-1501 CMC + mAP: the spec's hand-worked case (pcb.md 6.6), reference numbers from the upstream
ranking.py + scikit-learn run outside the project (tests/metrics/data/reid/reference.json), properties, the guide's
distance, bad input and the accumulator."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from zooinfer.datasets.base import Sample
from zooinfer.errors import MetricInputError
from zooinfer.metrics import reid

DATA = Path(__file__).parent / "data" / "reid"
REF = json.loads((DATA / "reference.json").read_text())
IN = dict(np.load(DATA / "inputs.npz"))
IDS = (IN["q_pids"], IN["g_pids"], IN["q_camids"], IN["g_camids"])

# pcb.md 6.6: (pid, camera) of queries and gallery, float32 distances
Q66 = np.array([[1, 0], [2, 1], [3, 0]])
G66 = np.array([[1, 0], [1, 2], [0, 1], [2, 3], [2, 1], [3, 0], [1, 4]])
D66 = np.array([[0.1, 0.5, 0.3, 0.2, 0.9, 0.8, 0.6],
                [0.7, 0.4, 0.05, 0.02, 0.01, 0.6, 0.2],
                [0.3, 0.2, 0.1, 0.4, 0.5, 0.05, 0.6]], dtype=np.float32)


def _ids66():
    return Q66[:, 0], G66[:, 0], Q66[:, 1], G66[:, 1]


def test_spec_worked_check():
    """q0: g0 is same id + same camera (dropped); valid order g3, g2, g1*, g6*, g5, g4 -> first match at 2,
    AP = (1/3 + 2/4) / 2 = 5/12. q1: g4 dropped, g3* first -> AP 1. q2: only positive shares its camera -> skipped."""
    out = reid.evaluate(D66, *_ids66())
    assert out["top1"] == 0.5 and out["top5"] == 1.0 and out["top10"] == 1.0
    assert out["mAP"] == pytest.approx((5 / 12 + 1) / 2, abs=1e-15) and out["n_valid_queries"] == 2
    ref = REF["spec_6_6"]  # the same case through upstream ranking.py + sklearn
    assert [out[k] for k in ("top1", "top5", "top10")] == [ref["top1"], ref["top5"], ref["top10"]]
    assert out["mAP"] == pytest.approx(ref["mAP"], abs=1e-12)
    assert reid.cmc(D66, *_ids66())[:10].tolist() == ref["cmc"]


def test_reference_numbers():
    ref = REF["distmat"]
    out = reid.evaluate(IN["distmat"], *IDS)
    assert [out[k] for k in ("top1", "top5", "top10")] == [ref["top1"], ref["top5"], ref["top10"]]
    assert out["mAP"] == pytest.approx(ref["mAP"], abs=1e-12)
    assert out["n_valid_queries"] == REF["n_valid_queries"]
    assert np.array_equal(reid.cmc(IN["distmat"], *IDS), ref["cmc"])
    assert reid.mean_ap(IN["distmat"], *IDS) == pytest.approx(ref["mAP"], abs=1e-12)
    # torch tensors work too (upstream passes the torch distance matrix)
    t = reid.evaluate(torch.from_numpy(IN["distmat"]), *(torch.from_numpy(a) for a in IDS))
    assert t == out


def test_ties_are_grouped_like_sklearn():
    """mAP with exact distance ties: sklearn's AP takes precision at the end of a tie group (order-independent)."""
    out = reid.evaluate(IN["distmat_tied"], *IDS)
    assert out["mAP"] == pytest.approx(REF["tied"]["mAP"], abs=1e-12)
    # pcb.md 6.5: tied [positive, negative] at the top, then a positive -> 1/2 * 1/2 + 1/2 * 2/3 = 0.58333
    d = np.array([[0.1, 0.1, 0.3]], dtype=np.float32)
    for order in ([0, 1, 2], [1, 0, 2]):
        g = np.array([5, 7, 5])[order]
        assert reid.evaluate(d, [5], g, [0], [1, 1, 1])["mAP"] == pytest.approx(7 / 12, abs=1e-15)


def test_blocks_give_the_same_result(monkeypatch):
    full = reid.evaluate(IN["distmat"], *IDS)
    monkeypatch.setattr(reid, "_BLOCK_ELEMENTS", 500)  # two queries per block
    assert reid.evaluate(IN["distmat"], *IDS) == full


def test_distance_as_the_guide():
    d = reid.pairwise_distance(IN["query_feats"], IN["gallery_feats"])
    assert d.dtype == np.float32 and d.shape == IN["distmat"].shape
    # bit-equal on the machine that made it; within 2 float32 ulp where BLAS takes another code path (MKL_CBWR pin)
    np.testing.assert_allclose(d, IN["distmat"], rtol=2.4e-7, atol=1e-5)
    x = IN["query_feats"].astype(np.float64)
    y = IN["gallery_feats"].astype(np.float64)
    np.testing.assert_allclose(d, ((x[:, None, :] - y[None]) ** 2).sum(-1), rtol=0, atol=1e-4)  # it is ||x - y||^2
    out = reid.evaluate(d, *IDS)
    assert out["top1"] == REF["distmat"]["top1"] and out["mAP"] == pytest.approx(REF["distmat"]["mAP"], abs=1e-9)
    # (N, C, P, 1) part features are flattened per row
    q4 = IN["query_feats"].reshape(-1, 4, 4, 1)
    assert np.array_equal(reid.pairwise_distance(q4, IN["gallery_feats"]), d)
    # precomputed query norms (the streaming accumulator computes them once) give the same bits
    norms = reid.squared_norms(IN["query_feats"])
    assert np.array_equal(reid.squared_norms(IN["query_feats"], rows=2), norms)  # chunked: same bits
    assert np.array_equal(reid.pairwise_distance(IN["query_feats"], IN["gallery_feats"], query_sqnorm=norms), d)
    buf = np.full(d.shape, np.nan, np.float32)  # written in place: same bits
    assert reid.pairwise_distance(IN["query_feats"], IN["gallery_feats"], query_sqnorm=norms, out=buf) is not None
    assert np.array_equal(buf, d)
    with pytest.raises(MetricInputError, match="out must be"):
        reid.pairwise_distance(IN["query_feats"], IN["gallery_feats"], out=np.zeros(d.shape[::-1], np.float32))
    with pytest.raises(MetricInputError, match="query_sqnorm"):
        reid.pairwise_distance(IN["query_feats"], IN["gallery_feats"], query_sqnorm=norms[:-1])


def test_properties():
    q_p, g_p, q_c, g_c = IDS
    base = reid.evaluate(IN["distmat"], *IDS)
    perm = np.random.default_rng(0).permutation(len(g_p))  # gallery order does not matter
    assert reid.evaluate(IN["distmat"][:, perm], q_p, g_p[perm], q_c, g_c[perm]) == base
    # a same-id same-camera copy of each query at distance 0 is excluded: nothing changes
    d = np.hstack([IN["distmat"], np.full((len(q_p), len(q_p)), 1e6, np.float32)])
    d[np.arange(len(q_p)), IN["distmat"].shape[1] + np.arange(len(q_p))] = 0.0
    assert reid.evaluate(d, q_p, np.concatenate([g_p, q_p]), q_c, np.concatenate([g_c, q_c])) == base
    # a perfect ranking: every valid positive closer than every negative
    pos = (g_p[None] == q_p[:, None]) & (g_c[None] != q_c[:, None])
    perfect = np.where(pos, 0.5, 2.0).astype(np.float32) + np.arange(len(g_p), dtype=np.float32) * 1e-4
    out = reid.evaluate(perfect, *IDS)
    assert out["top1"] == 1.0 and out["mAP"] == pytest.approx(1.0, abs=1e-15)


def test_bad_inputs():
    with pytest.raises(MetricInputError, match="g_pids has 6"):
        reid.evaluate(D66, Q66[:, 0], G66[:6, 0], Q66[:, 1], G66[:, 1])
    with pytest.raises(MetricInputError, match="q_camids has 2"):
        reid.evaluate(D66, Q66[:, 0], G66[:, 0], Q66[:2, 1], G66[:, 1])
    with pytest.raises(MetricInputError, match="no valid query"):
        reid.evaluate(D66[2:], Q66[2:, 0], G66[:, 0], Q66[2:, 1], G66[:, 1])
    bad = D66.copy()
    bad[0, 0] = np.nan
    with pytest.raises(MetricInputError, match="NaN"):
        reid.evaluate(bad, *_ids66())
    with pytest.raises(MetricInputError, match="shape"):
        reid.evaluate(D66[0], *_ids66())
    with pytest.warns(UserWarning, match="junk"):
        reid.evaluate(D66, Q66[:, 0], np.array([1, 1, -1, 2, 2, 3, 1]), Q66[:, 1], G66[:, 1])
    with pytest.raises(MetricInputError, match="values"):
        reid.pairwise_distance(np.zeros((2, 3)), np.zeros((2, 4)))


def test_accumulator():
    acc = reid.ReidAccumulator()
    for i, f in enumerate(IN["query_feats"]):
        acc.update(Sample(f"q{i}", "", info={"split": "query", "pid": int(IDS[0][i]), "camid": int(IDS[2][i])}), f)
    for i, f in enumerate(IN["gallery_feats"]):
        acc.update(Sample(f"g{i}", "", (int(IDS[1][i]), int(IDS[3][i])), info={"split": "gallery"}), f)
    out = acc.compute()
    assert out["top1"] == REF["distmat"]["top1"] and out["top10"] == REF["distmat"]["top10"]
    assert out["mAP"] == pytest.approx(REF["distmat"]["mAP"], abs=1e-9)
    assert (out["n_query"], out["n_gallery"]) == (len(IDS[0]), len(IDS[1]))
    with pytest.raises(MetricInputError, match="split"):
        acc.update(Sample("x", ""), np.zeros(16))
    with pytest.raises(MetricInputError, match="need query and gallery"):
        reid.ReidAccumulator().compute()


def test_squared_norms_chunked_equal_one_shot_at_pcb_width():
    """The streaming accumulator computes query norms in row chunks; the guide in one shot over all queries."""
    x = np.random.default_rng(1).standard_normal((600, 12288)).astype(np.float32) * 3
    one_shot = torch.pow(torch.from_numpy(x), 2).sum(1).numpy()
    for rows in (1, 37, 256, 1000):
        assert np.array_equal(reid.squared_norms(x, rows=rows), one_shot)


def _bits(a: np.ndarray) -> np.ndarray:
    return np.nan_to_num(a, nan=-7.0).view(np.int64)


def test_fast_ranking_is_bit_for_bit_the_argsort_ranking(monkeypatch):
    """``_block_stats`` (sorted values + the query identity's entries located in them) against the full argsort
    (``_block_stats_argsort``): the same CMC positions and the same AP bits, on random cases with heavy ties, +-0,
    +-inf, float64 and integer distances, junk (-1) and distractor (0) ids; rows with a tied match go to the argsort
    path, and only those."""
    rng = np.random.default_rng(0)
    fallback_rows = []
    orig = reid._block_stats_argsort
    monkeypatch.setattr(reid, "_block_stats_argsort",
                        lambda d, *a, **k: fallback_rows.append(len(d)) or orig(d, *a, **k))
    for trial in range(300):
        m, n, n_ids = int(rng.integers(1, 25)), int(rng.integers(1, 250)), int(rng.integers(1, 15))
        qp, gp = rng.integers(0, n_ids, m), rng.integers(-1, n_ids, n)
        qc, gc = rng.integers(0, 4, m), rng.integers(0, 4, n)
        d = [rng.normal(size=(m, n)).astype(np.float32), rng.integers(0, 5, (m, n)).astype(np.float32),
             rng.normal(size=(m, n)), rng.choice(np.array([-0.0, 0.0, 1.0, np.inf, -np.inf], np.float32), (m, n)),
             rng.integers(0, 40, (m, n)).astype(np.int32)][trial % 5]
        fast, ref = reid._block_stats(d, qp, qc, gp, gc), orig(d, qp, qc, gp, gc)
        assert np.array_equal(fast[0], ref[0]) and np.array_equal(_bits(fast[1]), _bits(ref[1])), trial
    assert fallback_rows  # the tie cases did reach the argsort path
    fallback_rows.clear()
    d = np.array([[0.1, 0.2, 0.2, 0.3]], np.float32)  # a tie between two non-matches: no fallback needed
    out = reid._block_stats(d, np.array([1]), np.array([0]), np.array([2, 3, 4, 1]), np.array([1, 1, 1, 1]))
    assert not fallback_rows and out[0].tolist() == [3] and out[1].tolist() == [0.25]


def test_fast_ranking_full_gallery_width():
    """300 queries against a full-size synthetic Market-1501 gallery (15,913, the benchmark's generator): every
    query's CMC position and AP bits equal the argsort path's; so do ``evaluate``'s figures."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_metrics.py"
    spec = importlib.util.spec_from_file_location("bench_metrics", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    d, qp, gp, qc, gc = bench.synthetic_market(seed=3, n_query=300)
    first, ap, n_valid = reid._stats(d, qp, gp, qc, gc)
    ref_first, ref_ap = reid._block_stats_argsort(d, qp, qc, gp, gc)
    assert np.array_equal(first, ref_first) and np.array_equal(_bits(ap), _bits(ref_ap))
    assert n_valid == int((ref_first >= 0).sum())
