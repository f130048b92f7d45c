"""Verdict logic on hand-made metric values: pass, fail, the mean rule, no verdict when accuracy is not meaningful."""
from __future__ import annotations

import pytest

from zooinfer import recipes, verdict
from zooinfer.recipes.base import Acceptance, Published

PUB = Published(accuracy={"top1": 0.80, "top5": 0.95}, source="test README")


def test_pass_within_one_percent_relative():
    doc = verdict.judge({"top1": 0.7921, "top5": 0.9406}, PUB, ("top1", "top5"))  # 0.99 x ref is 0.792 / 0.9405
    assert doc["verdict"] == verdict.PASS
    assert [r["verdict"] for r in doc["rows"]] == ["PASS", "PASS"]
    assert doc["rows"][0]["pass_at_least"] == pytest.approx(0.792)
    assert "PASS" in verdict.summary_line(doc)


def test_fail_names_the_metric_that_dropped():
    doc = verdict.judge({"top1": 0.7919, "top5": 0.95}, PUB, ("top1", "top5"))
    assert doc["verdict"] == verdict.FAIL
    assert [r["metric"] for r in doc["rows"] if r["verdict"] == "FAIL"] == ["top1"]
    assert doc["rows"][0]["relative_drop"] == pytest.approx((0.80 - 0.7919) / 0.80)


def test_better_than_published_passes():
    assert verdict.judge({"top1": 0.9, "top5": 0.99}, PUB, ("top1", "top5"))["verdict"] == verdict.PASS


def test_no_verdict_on_a_subset_or_synthetic_weights():
    doc = verdict.judge({"top1": 0.80, "top5": 0.95}, PUB, ("top1", "top5"),
                        reasons=["only the first 100 images are evaluated (limit=100)"])
    assert doc["verdict"] is None and "limit=100" in doc["why_none"]
    assert doc["rows"] == []
    assert verdict.summary_line(doc).startswith("**No verdict:**")


def test_headline_without_reference_is_skipped_and_missing_value_gives_no_verdict():
    doc = verdict.judge({"top1": 0.80, "top5": 0.95, "mAP": 0.1}, PUB, ("top1", "top5", "mAP"))
    assert [r["metric"] for r in doc["rows"]] == ["top1", "top5"]  # no published mAP: not judged
    doc = verdict.judge({"top1": 0.80}, PUB, ("top1", "top5"))
    assert doc["verdict"] is None and "top5" in doc["why_none"]


def test_mean_rule_judges_the_mean():
    pub = Published(accuracy={"easy": 0.96, "medium": 0.95, "hard": 0.88}, source="x",
                    acceptance=Acceptance(combine="mean"))
    # hard drops 3% alone, but the mean drops less than 1%
    doc = verdict.judge({"easy": 0.965, "medium": 0.955, "hard": 0.8536}, pub, ("easy", "medium", "hard"))
    assert len(doc["rows"]) == 1 and doc["rows"][0]["metric"].startswith("mean(")
    assert doc["verdict"] == verdict.PASS
    doc = verdict.judge({"easy": 0.94, "medium": 0.93, "hard": 0.86}, pub, ("easy", "medium", "hard"))
    assert doc["verdict"] == verdict.FAIL


def test_pyramidbox_uses_the_mean_rule_and_other_canvases_are_not_comparable():
    r = recipes.get("pyramidbox")
    assert r.published.acceptance.combine == "mean" and r.incomparable_because is None
    assert "256x256" in recipes.get("pyramidbox", canvas=256).incomparable_because
    for name in recipes.NAMES:  # every published reference carries a rule with its source
        acc = recipes.get(name).published.acceptance
        assert 0 < acc.tolerance < 0.1 and acc.source
