"""The fastest passing configuration: rows of runtime x precision x batch size with the metric, its drop from the
reference, the verdict, images/s and the speed-up over fp32 at the same batch size; the fastest passing row marked.

The reference (:class:`Reference`) is the published figure where the run's accuracy is meaningful (the real
checkpoint on the whole dataset: the recipe's acceptance rule with the budget as its tolerance), otherwise the fp32
model's own predictions on the same samples (the metric is then the fraction of samples that agree with them: top-1
unchanged, detections matched, re-ID rank-1 unchanged; fp32 scores 1.0 by construction). metrics.json holds the
document under ``fastest_passing``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..verdict import FAIL, PASS, judge
from .search import Predictions, agreement, per_sample


@dataclass
class Reference:
    """What a configuration's metric is judged against: ``kind`` "published" (``published``: the recipe's figures
    and rule) or "fp32" (``fp32``: the fp32 model's predictions on the same samples); ``budget``: the largest
    relative drop that passes."""

    kind: str
    budget: float
    description: str
    task: str
    headline: tuple[str, ...] = ()
    published: Any = None
    fp32: Predictions | None = None

    @classmethod
    def choose(cls, recipe: Any, meaningful: bool, why: str, fp32: Predictions, budget: float) -> "Reference":
        """The published figure when ``meaningful``, else the fp32 predictions (``why``: why not meaningful)."""
        if meaningful:
            rule = dataclasses.replace(recipe.published.acceptance, tolerance=budget)
            pub = dataclasses.replace(recipe.published, acceptance=rule)
            return cls("published", budget, f"the published figure ({recipe.published.source})", recipe.task,
                       tuple(recipe.headline), pub, fp32)
        return cls("fp32", budget, f"the fp32 model's own predictions on the same {len(fp32.keys)} samples "
                   f"(the published figure does not apply: {why})", recipe.task, tuple(recipe.headline), None, fp32)

    def judge(self, pred: Predictions) -> dict:
        """{"metric": name, "value": .., "reference": .., "drop": relative drop, "verdict": PASS/FAIL}."""
        if self.kind == "published":
            doc = judge(pred.metrics, self.published, self.headline)
            if doc["verdict"] is None:
                return {"metric": ", ".join(self.headline), "value": None, "reference": None, "drop": None,
                        "verdict": None, "why_none": doc["why_none"]}
            worst = max(doc["rows"], key=lambda r: r["relative_drop"] or 0.0)
            return {"metric": worst["metric"], "value": worst["ours"], "reference": worst["reference"],
                    "drop": worst["relative_drop"], "verdict": doc["verdict"]}
        value = agreement(per_sample(self.task, self.fp32, pred))
        return {"metric": "agreement with fp32", "value": value, "reference": 1.0, "drop": 1.0 - value,
                "verdict": PASS if 1.0 - value <= self.budget + 1e-12 else FAIL}


def rows_for(config: str, runtime: str, precision: str, judged: dict, speed_rows: list[dict], *,
             note: str | None = None) -> list[dict]:
    """One row per batch size of one configuration (``speed_rows``: ``bench.inference_sweep`` rows)."""
    return [{"configuration": config, "runtime": runtime, "precision": precision, "bs": r["bs"],
             "metric": judged["metric"], "value": judged["value"], "drop": judged["drop"],
             "verdict": judged["verdict"], "images_per_s": r["throughput"], "unstable": r.get("unstable", False),
             **({"note": note} if note else {})} for r in speed_rows]


def table(rows: list[dict], reference: Reference, skipped: list[dict] | None = None) -> dict:
    """The ``fastest_passing`` document: ``rows`` with the speed-up over the fp32 row at the same batch size and
    the fastest passing one marked (``fastest``), the reference and budget, the CPU's flags, skipped configurations
    and why."""
    from ..cpu import isa_note

    fp32 = {r["bs"]: r["images_per_s"] for r in rows if r["precision"] == "fp32" and r["runtime"] == "onnxruntime"}
    out = []
    for r in rows:
        base = fp32.get(r["bs"])
        out.append({**r, "speedup_vs_fp32": r["images_per_s"] / base if base else None, "fastest": False})
    passing = [r for r in out if r["verdict"] == PASS]
    fastest = max(passing, key=lambda r: r["images_per_s"]) if passing else None
    if fastest is not None:
        fastest["fastest"] = True
    return {"reference": {"kind": reference.kind, "description": reference.description},
            "budget": reference.budget, "cpu": isa_note(), "rows": out,
            "fastest": {k: fastest[k] for k in ("configuration", "runtime", "precision", "bs", "images_per_s",
                                                "speedup_vs_fp32", "drop")} if fastest else None,
            "passed": fastest is not None, "skipped": list(skipped or [])}


def markdown(doc: dict) -> str:
    """The table with the fastest passing row in bold, the reference, the CPU flags and the skipped
    configurations."""
    from ..report import markdown_table

    def pct(x: Any) -> Any:
        return None if x is None else round(100 * x, 3)

    rows = []
    for r in doc["rows"]:
        mark = "**fastest passing**" if r["fastest"] else ""
        rows.append({"configuration": r["configuration"], "precision": r["precision"], "bs": r["bs"],
                     r["metric"] + " %": pct(r["value"]), "drop %": pct(r["drop"]), "verdict": r["verdict"],
                     "img/s": round(r["images_per_s"], 2),
                     "x fp32": None if r["speedup_vs_fp32"] is None else round(r["speedup_vs_fp32"], 2),
                     "best": mark})
    head = (f"Reference: {doc['reference']['description']}; budget: a drop of at most "
            f"{100 * doc['budget']:g}%. {doc['cpu']}.")
    best = doc["fastest"]
    line = (f"**Fastest passing configuration: {best['configuration']} at bs {best['bs']}, "
            f"{best['images_per_s']:.2f} images/s"
            + (f" ({best['speedup_vs_fp32']:.2f}x fp32)" if best["speedup_vs_fp32"] else "") + "**"
            if best else "**No configuration passes.**")
    parts = [line, head, markdown_table(rows)]
    for s in doc["skipped"]:
        parts.append(f"Skipped `{s['configuration']}`: {s['reason']}")
    return "\n\n".join(parts)
