"""Does the run reproduce the published accuracy? PASS / FAIL per headline metric against the recipe's reference,
by the recipe's acceptance rule (``Published.acceptance``), or no verdict and why.

A verdict is given only when the accuracy means something: the real checkpoint, the whole dataset, the guide's own
pipeline (``reasons`` lists what is missing otherwise). Values are fractions, as the metrics return them.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

PASS, FAIL = "PASS", "FAIL"


def judge(metrics: Mapping[str, float], published: Any, headline: Sequence[str],
          reasons: Iterable[str] = ()) -> dict[str, Any]:
    """The verdict document: ``{"verdict": "PASS" | "FAIL" | None, "rule": ..., "rows": [...], "why_none": ...}``.

    ``rows`` has one entry per judged quantity (a headline metric, or their mean for ``combine="mean"``): ours,
    the reference, the lowest passing value (reference x (1 - tolerance)), the relative drop and PASS/FAIL.
    ``reasons`` (non-empty) means accuracy is not meaningful: no verdict, and ``why_none`` says why."""
    rule = published.acceptance
    doc: dict[str, Any] = {"verdict": None, "rule": {"tolerance": rule.tolerance, "combine": rule.combine,
                                                     "source": rule.source, "reference": published.source},
                           "rows": [], "why_none": None}
    reasons = [r for r in reasons if r]
    if reasons:
        doc["why_none"] = "; ".join(reasons)
        return doc
    keys = [k for k in headline if k in published.accuracy]
    missing = [k for k in keys if metrics.get(k) is None]
    if not keys or missing:
        doc["why_none"] = (f"no computed value for {', '.join(missing)}" if missing
                           else "the recipe publishes no reference for its headline metrics")
        return doc
    if rule.combine == "mean":
        pairs = [("mean(" + ", ".join(keys) + ")", sum(float(metrics[k]) for k in keys) / len(keys),
                  sum(float(published.accuracy[k]) for k in keys) / len(keys))]
    elif rule.combine == "each":
        pairs = [(k, float(metrics[k]), float(published.accuracy[k])) for k in keys]
    else:
        raise ValueError(f"unknown acceptance combine {rule.combine!r}; expected 'each' or 'mean'")
    for name, ours, ref in pairs:
        floor = ref * (1.0 - rule.tolerance)
        doc["rows"].append({"metric": name, "ours": ours, "reference": ref, "pass_at_least": floor,
                            "relative_drop": (ref - ours) / ref if ref else None,
                            "verdict": PASS if ours >= floor else FAIL})
    doc["verdict"] = PASS if all(r["verdict"] == PASS for r in doc["rows"]) else FAIL
    return doc


def summary_line(doc: Mapping[str, Any]) -> str:
    """One markdown line for the report's first lines."""
    if doc["verdict"] is None:
        return f"**No verdict:** {doc['why_none']}."
    rule = doc["rule"]
    parts = ", ".join(f"{r['metric']} {100 * r['ours']:.2f}% vs {100 * r['reference']:.2f}% ({r['verdict']})"
                      for r in doc["rows"])
    return (f"**Verdict: {doc['verdict']}** (at most {100 * rule['tolerance']:g}% below the reference, "
            f"{'their mean' if rule['combine'] == 'mean' else 'each metric'}): {parts}. Reference: "
            f"{rule['reference']}.")
