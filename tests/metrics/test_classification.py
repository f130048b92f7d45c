"""Top-k as imagenet_acc_eval.py computes it, and the Ascend result-file readers."""
from __future__ import annotations

import numpy as np
import pytest

from zooinfer.datasets.base import Sample
from zooinfer.errors import MetricInputError
from zooinfer.metrics.classification import TopKAccumulator, guide_key, read_result_txt, topk


def test_topk_hand_worked():
    logits = np.array([[0.1, 0.9, 0.0, 0.5, 0.2, 0.3],   # label 1: rank 0
                       [0.9, 0.1, 0.8, 0.7, 0.6, 0.05],  # label 5: rank 5 -> miss at top-5
                       [0.2, 0.3, 0.1, 0.9, 0.8, 0.0],   # label 0: rank 3
                       [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]])  # label 4: rank 1
    labels = np.array([1, 5, 0, 4])
    assert topk(logits, labels, ks=(1, 2, 3, 4, 5)) == {"top1": 0.25, "top2": 0.5, "top3": 0.5, "top4": 0.75,
                                                        "top5": 0.75}


def test_accumulator_matches_batch_function():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((50, 1000)).astype(np.float32)
    labels = rng.integers(0, 1000, 50)
    logits[np.arange(0, 50, 3), labels[::3]] += 10  # some hits
    acc = TopKAccumulator()
    for i in range(50):
        acc.update(Sample(str(i), "", int(labels[i])), logits[i])
    out = acc.compute()
    ref = topk(logits, labels, ks=(1, 5))
    assert out["top1"] == ref["top1"] == 17 / 50 and out["top5"] == ref["top5"] and out["n_images"] == 50


def test_bad_inputs():
    with pytest.raises(MetricInputError):
        topk(np.zeros((2, 10)), np.array([1]))
    with pytest.raises(MetricInputError, match="0-based"):
        topk(np.zeros((2, 10)), np.array([1, 10]))


def test_result_file_readers(tmp_path):
    p = tmp_path / "ILSVRC2012_val_00000001_1.txt"
    p.write_text("0.5 1.25 -3\nignored second line\n")
    np.testing.assert_array_equal(read_result_txt(p), np.array([0.5, 1.25, -3], dtype=np.float32))
    with pytest.raises(MetricInputError, match="3 scores, expected 1000"):
        read_result_txt(p, 1000)
    assert guide_key(p.name) == "ILSVRC2012_val_00000001"
    assert guide_key("ILSVRC2012_val_00000001_0.bin") == "ILSVRC2012_val_00000001"
