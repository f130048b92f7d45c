"""PCB re-ID path: Market-1501 reader, preprocessing, feature postprocess -> streamed distances -> CMC/mAP
(hand-worked case and numbers from the upstream evaluation code run outside the project), embedded sample."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zooinfer import pipeline, recipes
from zooinfer.backends import open_session
from zooinfer.datasets.base import Sample
from zooinfer.datasets.market1501 import open_market1501, parse_name
from zooinfer.errors import DatasetError, MetricInputError
from zooinfer.metrics import reid
from zooinfer.models import build_model
from zooinfer.metrics.reid import ReidAccumulator
from zooinfer.models.pcb.recipe import postprocess, preprocess

RECIPE = recipes.get("pcb")
LOGITS = [np.zeros(751, np.float32)] * 6  # the six classifier outputs: ignored by the postprocess


def _sample(split: str, pid: int, cam: int, i: int) -> Sample:
    return Sample(f"{split[0]}{i}", f"/nowhere/{pid:04d}_c{cam + 1}s1_{i:06d}_00.jpg", pid,
                  {"split": split, "pid": pid, "camid": cam})


def _run(entries, acc=None):
    """entries: (split, pid, cam, (2048, 6, 1) feature) in update order -> accumulator after all updates."""
    acc = acc or ReidAccumulator()
    for i, (split, pid, cam, f) in enumerate(entries):
        acc.update(_sample(split, pid, cam, i), postprocess([f, *LOGITS], {}))
    return acc


# ------------------------------------------------------------------------------------------------ hand-worked case
def _one_hot(code: list[int]) -> np.ndarray:
    """Part p holds the unit vector on channel code[p]: distance = 12 - 2 * (number of parts with equal codes)."""
    f = np.zeros((2048, 6, 1), np.float32)
    for p, c in enumerate(code):
        f[c, p, 0] = 1.0
    return f


HAND_QUERIES = [  # (pid, 0-based cam, code)
    (1, 0, [0] * 6), (2, 1, [1] * 6), (3, 0, [2] * 6), (5, 0, [4] * 6),
]
HAND_GALLERY = [
    (1, 0, [0] * 6),                  # g0: q0's own camera: ignored for q0
    (0, 1, [0, 0, 0, 0, 0, 9]),       # g1: distractor, 5 parts like q0 -> d 2
    (1, 2, [0, 0, 0, 0, 9, 9]),       # g2: q0 positive, d 4
    (2, 1, [1] * 6),                  # g3: q1's own camera: ignored for q1
    (1, 3, [0, 0, 9, 9, 9, 9]),       # g4: q0 positive, d 8
    (2, 3, [1, 1, 1, 1, 9, 9]),       # g5: q1 positive, d 4
    (3, 0, [2] * 6),                  # g6: q2's only positive, same camera -> q2 is not a valid query
    (0, 2, [1, 1, 1, 0, 9, 9]),       # g7: distractor, q0 d 10, q1 d 6
    (5, 4, [4, 9, 9, 9, 9, 9]),       # g8: q3 positive, d 10
    (0, 1, [4, 4, 9, 9, 9, 9]),       # g9..g13: distractors closer to q3 (d 8, 6, 4, 2, 8)
    (0, 2, [4, 4, 4, 9, 9, 9]),
    (0, 3, [4, 4, 4, 4, 9, 9]),
    (0, 5, [4, 4, 4, 4, 4, 9]),
    (0, 1, [4, 4, 8, 8, 9, 9]),
]
# By hand: valid queries q0, q1, q3 (q2 skipped). Ranked valid entries:
#   q0: g1 (neg, 2), g2 (pos, 4), g4 (pos, 8), ...     first match at position 1; AP = (1/2 + 2/3) / 2 = 7/12
#   q1: g5 (pos, 4), ...                                first match at position 0; AP = 1
#   q3: g12 2, g11 4, g10 6, g9/g13 8, g8 (pos, 10)     first match at position 5; AP = 1/6
# CMC top-1 = 1/3, top-5 = 2/3, top-10 = 1; mAP = (7/12 + 1 + 1/6) / 3 = 7/12.
HAND_EXPECTED = {"top1": 1 / 3, "top5": 2 / 3, "top10": 1.0, "mAP": 7 / 12, "n_valid_queries": 3}


def _hand_entries():
    q = [("query", p, c, _one_hot(code)) for p, c, code in HAND_QUERIES]
    g = [("gallery", p, c, _one_hot(code)) for p, c, code in HAND_GALLERY]
    return q, g


def test_hand_worked_cmc_and_map_through_postprocess_distance_and_metric():
    q, g = _hand_entries()
    acc = _run(q + g)
    expected_d = np.array([[12 - 2 * sum(a == b for a, b in zip(qc, gc)) for _, _, gc in HAND_GALLERY]
                           for _, _, qc in HAND_QUERIES], np.float32)
    np.testing.assert_array_equal(acc.distances(), expected_d)
    got = acc.compute()
    for k, v in HAND_EXPECTED.items():
        assert got[k] == pytest.approx(v, abs=1e-12), k
    assert got["n_query"] == 4 and got["n_gallery"] == 14
    np.testing.assert_allclose(acc.cmc_curve(10), [1 / 3] + [2 / 3] * 4 + [1.0] * 5)


def test_update_order_does_not_matter():
    q, g = _hand_entries()
    mixed = g[:5] + q[:2] + g[5:] + q[2:]
    got = _run(mixed).compute()
    for k, v in HAND_EXPECTED.items():
        assert got[k] == pytest.approx(v, abs=1e-12), k


def test_gallery_backlog_before_the_queries_grows_the_buffer_and_keeps_every_column():
    """Gallery features that arrive while queries are still missing wait (the buffer grows past one block), then
    stream in blocks; the distances are those of the whole set, in arrival order."""
    q, g = _hand_entries()
    acc = ReidAccumulator(_dataset_of([(None, p, c) for _, p, c, _ in q]), block=3, min_cols=2)
    _run(g[:10] + q + g[10:], acc)
    # the 10 waiting (buffer grown 3 -> 6 -> 12) flush when the last query arrives, then a block of 3; 1 left over
    assert len(acc._gbuf) == 12 and acc._filled == 13 and acc._gn == 1
    expected_d = np.array([[12 - 2 * sum(a == b for a, b in zip(qc, gc)) for _, _, gc in HAND_GALLERY]
                           for _, _, qc in HAND_QUERIES], np.float32)
    np.testing.assert_array_equal(acc.distances(), expected_d)
    assert acc.compute()["mAP"] == pytest.approx(HAND_EXPECTED["mAP"], abs=1e-12)


def test_no_valid_query_and_missing_split_are_clear_errors():
    q, g = _hand_entries()
    with pytest.raises(MetricInputError, match="no valid query"):
        _run([q[2], g[6]]).compute()
    with pytest.raises(MetricInputError, match="need query and gallery"):
        _run(q).compute()
    with pytest.raises(MetricInputError, match="split"):
        ReidAccumulator().update(Sample("x", "x.jpg", 1, {"pid": 1}), np.zeros(12288, np.float32))


# ------------------------------------------------------------------------------------------------ upstream reference
def scenario(seed: int = 20240607, sigma: float = 5.0):
    """Confusable synthetic part features: 8 identities sharing a common component, 9 queries (pid 99's gallery
    images all share its camera), 24 identity + 10 distractor gallery images. (N, 2048, 6, 1) float32 each."""
    rng = np.random.default_rng(seed)
    pids = [3, 11, 25, 42, 57, 64, 80, 99]
    common = rng.random((2048, 6), dtype=np.float32) ** 4
    base = {p: 0.6 * common + rng.random((2048, 6), dtype=np.float32) ** 4 for p in pids}

    def feat(b):
        f = b + np.float32(sigma) * rng.random((2048, 6), dtype=np.float32) ** 4
        f = f / np.sqrt((f * f).sum(0, keepdims=True, dtype=np.float32))
        return f.astype(np.float32)[:, :, None]

    q = [(feat(base[p]), p, i % 6) for i, p in enumerate(pids)] + [(feat(base[3]), 3, 5)]
    g = []
    for i, p in enumerate(pids):
        cams = [i % 6] * 3 if p == 99 else [int(c) for c in rng.integers(0, 6, 3)]
        g += [(feat(base[p]), p, c) for c in cams]
    for _ in range(10):
        g.append((feat(common + rng.random((2048, 6), dtype=np.float32) ** 4), 0, int(rng.integers(0, 6))))
    return q, g


# Produced OUTSIDE the project (/tmp) by the upstream PCB_RPP_for_reID code at e29cf544 (= the Ascend
# PCB_pth_postprocess.py functions): evaluators.pairwise_distance (torch 2.13 addmm_) + evaluation_metrics/ranking.py
# cmc(market1501 settings) / mean_ap with scikit-learn 1.9.1, on scenario() above.
UPSTREAM = {"top1": 0.5, "top5": 1.0, "top10": 1.0, "mAP": 0.5822637432}
UPSTREAM_CMC_1_TO_5 = [0.5, 0.75, 0.875, 0.875, 1.0]
UPSTREAM_DIST_ROW0 = [5.910457134246826, 5.942357063293457, 6.120440483093262, 6.186399459838867, 6.20698356628418]
UPSTREAM_DIST_SUM = 1851.9635243415833  # float64 sum of the (9, 34) float32 matrix


def _dataset_of(queries, gallery=()):
    """A stand-in dataset: the accumulator only counts its query and gallery samples."""
    return type("DS", (), {"samples": [_sample("query", p, c, i) for i, (_, p, c) in enumerate(queries)]
                           + [_sample("gallery", p, c, i) for i, (_, p, c) in enumerate(gallery)]})()


@pytest.mark.parametrize("block", [256, 5])
def test_matches_the_upstream_evaluation_on_fixed_features(block):
    q, g = scenario()
    entries = [("query", p, c, f) for f, p, c in q] + [("gallery", p, c, f) for f, p, c in g]
    # block 5 with the query count known: gallery columns are streamed as soon as all queries are in
    acc = _run(entries, ReidAccumulator(_dataset_of(q) if block == 5 else None, block=block))
    d = acc.distances()
    assert d.shape == (9, 34) and d.dtype == np.float32
    np.testing.assert_allclose(d[0, :5], UPSTREAM_DIST_ROW0, rtol=0, atol=1e-5)
    assert float(d.astype(np.float64).sum()) == pytest.approx(UPSTREAM_DIST_SUM, abs=1e-3)
    got = acc.compute()
    for k, v in UPSTREAM.items():
        assert got[k] == pytest.approx(v, abs=1e-9), k
    assert got["n_valid_queries"] == 8
    np.testing.assert_allclose(acc.cmc_curve(5), UPSTREAM_CMC_1_TO_5)


@pytest.mark.parametrize("listed", [34, 3])  # 3: more gallery images arrive than the dataset listed (grows)
def test_streamed_columns_equal_one_matrix_product(listed):
    """Gallery blocks (padded to 64 columns) give the guide's single-addmm distances: bit-identical here once the
    full matrix has 64+ columns (measured up to 500 x 1100); this 9 x 34 one takes MKL's narrow path (1e-6)."""
    q, g = scenario(seed=3)
    acc = ReidAccumulator(_dataset_of(q, g[:listed]), block=7)
    _run([("query", p, c, f) for f, p, c in q] + [("gallery", p, c, f) for f, p, c in g], acc)
    assert acc._filled == 28  # 4 blocks of 7 streamed
    assert acc._dist.shape == ((9, 34) if listed == 34 else (9, 28))  # preallocated, or grown to 2 x 14
    assert acc._qbuf is None and acc._Q.shape == (9, 12288)
    full = reid.pairwise_distance(np.stack([f for f, _, _ in q]).reshape(9, -1),
                                  np.stack([f for f, _, _ in g]).reshape(34, -1))
    np.testing.assert_allclose(acc.distances(), full, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------------ dataset reader
def _jpg(path: Path, seed: int = 0, size=(64, 128)) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, format="JPEG")


@pytest.fixture
def market_root(tmp_path: Path) -> Path:
    root = tmp_path / "Market-1501-v15.09.15"
    names = {
        "query": ["0005_c2s1_000151_00.jpg", "0001_c1s1_001051_00.jpg", "0001_c3s1_000551_00.jpg"],
        "bounding_box_test": ["0001_c2s1_000301_01.jpg", "-1_c1s1_000401_03.jpg", "0000_c6s3_094992_01.jpg.jpg",
                              "0005_c1s1_000001_02.jpg", "0000_c1s1_000002_01.jpg", "Thumbs.jpg",
                              "._0001_c1s1_000001_00.jpg", "0001_c4s2_000001_01.png", "0002_c1s1_000001_01.JPG"],
    }
    for folder, files in names.items():
        (root / folder).mkdir(parents=True)
        for i, n in enumerate(random.Random(0).sample(files, len(files))):
            _jpg(root / folder / n, i, (8, 16))
    (root / "bounding_box_test" / "0009_c1s1_000001_01.jpg").mkdir()  # a folder with a .jpg name
    return root


def test_market_layout_order_junk_distractors_and_rejects(market_root):
    ds = open_market1501(market_root)
    q = [s for s in ds if s.info["split"] == "query"]
    g = [s for s in ds if s.info["split"] == "gallery"]
    assert [s.key for s in ds][:3] == [s.key for s in q]  # queries first
    assert [Path(s.path).name for s in q] == ["0001_c1s1_001051_00.jpg", "0001_c3s1_000551_00.jpg",
                                              "0005_c2s1_000151_00.jpg"]
    assert [Path(s.path).name for s in g] == ["0000_c1s1_000002_01.jpg", "0000_c6s3_094992_01.jpg.jpg",
                                              "0001_c2s1_000301_01.jpg", "0005_c1s1_000001_02.jpg"]
    assert [(s.target, s.info["pid"], s.info["camid"]) for s in g] == [(0, 0, 0), (0, 0, 5), (1, 1, 1), (5, 5, 0)]
    assert g[1].key == "0000_c6s3_094992_01"  # the bin stem: name up to the first dot
    assert ds.extra["junk"] == {"query": 0, "gallery": 1} and ds.extra["distractors"] == 2
    rejected = sorted(Path(p).name for p, _ in ds.rejected)
    assert rejected == ["0009_c1s1_000001_01.jpg", "Thumbs.jpg"]
    assert parse_name("0001_c1s1_001051_00.jpg") == (1, 0) and parse_name("-1_c6s1_0_00.jpg") == (-1, 5)
    assert parse_name("1-2_c3s1_000001_00.jpg") is None


def test_empty_or_missing_split_is_a_clear_error(market_root, tmp_path):
    for f in (market_root / "query").iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match=r"no query images in .*query"):
        open_market1501(market_root)
    (tmp_path / "other" / "query").mkdir(parents=True)
    with pytest.raises(DatasetError, match="bounding_box_test"):
        open_market1501(tmp_path / "other")


def test_limit_keeps_both_splits_and_the_queries_identities(market_root):
    ds = open_market1501(market_root)
    sub = ds.subset(4)  # 2 of 3 queries (both pid 1), then pid 1's gallery image and the first other one
    assert [s.info["split"] for s in sub] == ["query", "query", "gallery", "gallery"]
    assert [s.target for s in sub] == [1, 1, 0, 1]
    assert ds.subset(None) is ds


# ------------------------------------------------------------------------------------------------ preprocessing
def _torchvision_021(img: Image.Image) -> np.ndarray:
    """RectScale + to_tensor + normalize as torchvision 0.2.1 does them (torch ops, python float constants)."""
    if img.size != (128, 384):
        img = img.resize((128, 384), Image.BILINEAR)
    t = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(384, 128, 3)
    t = t.transpose(0, 1).transpose(0, 2).contiguous().float().div(255)
    for c, m, s in zip(t, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]):
        c.sub_(m).div_(s)
    return t.numpy()


@pytest.mark.parametrize("size, mode", [((64, 128), "RGB"), ((128, 384), "RGB"), ((50, 140), "L")])
def test_preprocess_is_the_guides(tmp_path, size, mode):
    rng = np.random.default_rng(size[0])
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    path = tmp_path / "x.png"
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    (x,), meta = preprocess(str(path))
    assert x.shape == (3, 384, 128) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    with Image.open(path) as im:
        ref = _torchvision_021(im.convert("RGB"))
    np.testing.assert_array_equal(x, ref)


def test_preprocess_raises_on_unreadable_file(tmp_path):
    p = tmp_path / "0001_c1s1_000001_00.jpg"
    p.write_bytes(b"not a jpeg")
    with pytest.raises(Exception):
        preprocess(str(p))


# ------------------------------------------------------------------------------------------------ embedded sample
def test_embedded_sample_layout():
    ds = RECIPE.open_dataset(None)
    assert ds.embedded
    splits = [s.info["split"] for s in ds]
    assert splits.count("query") == 5 and splits.count("gallery") == 12
    assert ds.extra["junk"]["gallery"] == 1 and ds.extra["distractors"] == 2
    assert [Path(p).name for p, _ in ds.rejected] == ["Thumbs.jpg"]
    assert any(Path(s.path).name.endswith(".jpg.jpg") for s in ds)
    with Image.open(ds[0].path) as im:
        assert im.size == (64, 128) and im.mode == "RGB"


class _Recording:
    """A backend session that remembers every output batch (to write the Ascend tool's result files from them)."""

    def __init__(self, session):
        self.session, self.name, self.device, self.input_shape = session, "torch", "cpu", session.input_shape
        self.batches: list[list[np.ndarray]] = []

    def run(self, batch):
        out = self.session.run(batch)
        self.batches.append(out)
        return out


def test_embedded_sample_end_to_end_and_from_ascend_result_files(tmp_path):
    """Synthetic weights through the pipeline; then the same outputs as the old benchmark tool writes them
    (``<stem>_1.bin`` = output_1 ... ``<stem>_7.bin``, counted from 1) read back give the same distances."""
    from zooinfer.backends.bins import OutputReader

    ds = RECIPE.open_dataset(None)
    session = _Recording(open_session("torch", model=build_model("pcb")))
    res = pipeline.run(RECIPE, ds, session, bs=4, progress=False)
    assert res.n_done == 17 and not res.skipped
    m = res.metrics
    assert m["n_query"] == 5 and m["n_gallery"] == 12
    assert m["n_valid_queries"] == 4  # pid 23's only gallery image shares its camera
    assert 0.0 <= m["mAP"] <= 1.0 and m["top1"] <= m["top5"] <= m["top10"]
    d = res.accumulator.distances()
    assert d.shape == (5, 12) and np.all(d > -1e-4) and np.all(d < 12 + 1e-4)

    rows = [[o[r] for o in batch] for batch in session.batches for r in range(batch[0].shape[0])]
    for sample, outs in zip(ds, rows, strict=True):
        for k, o in enumerate(outs, start=1):
            o.astype(np.float32).tofile(tmp_path / f"{sample.key}_{k}.bin")
    reader = OutputReader(tmp_path, [o.shape for o in rows[0]])
    again = pipeline.run(RECIPE, ds, reader, progress=False)
    np.testing.assert_array_equal(again.accumulator.distances(), d)
    assert again.metrics == m
