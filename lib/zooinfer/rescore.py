"""Rescore: a run's metrics again from its stored predictions, with other metric parameters (no model, no images).

``zooinfer rescore <run folder> -p iou_thresh 0.4`` reads the run's ``predictions/`` (its fingerprint holds the
parameters the run had), opens the dataset's annotations at the run's ``data_root`` (the images are not read),
feeds every stored prediction in dataset order into the recipe's accumulator built with the new metric parameters
(``Recipe.metric_options``), and writes ``<run folder>/rescored/<id>/`` beside the run's own report: metrics.json
(the new figures, the run's, what changed) and report.md. Only metric parameters may change: anything else would
change the predictions, which needs a new run.
"""
from __future__ import annotations

import datetime as _dt
import json
import warnings
from pathlib import Path
from typing import Any

from . import pipeline, report
from .config import RunConfig
from .errors import ZooinferError
from .store import FINGERPRINT, PredictionStore, StoreError, ground_truth_digest, keys_digest

RESCORED = "rescored"


def stored_config(store: PredictionStore, overrides: dict[str, Any] | None = None) -> tuple[RunConfig, dict]:
    """The configuration the run of ``store`` had (from its fingerprint), with ``overrides`` of its metric
    parameters; and the fingerprint. Any other override is refused: it would change the predictions."""
    fingerprint = store.fingerprint
    model = store.model()
    params = fingerprint.get("parameters") or {}
    if not isinstance(params, dict):
        raise StoreError(f"{store.folder / FINGERPRINT}: 'parameters' is a {type(params).__name__}, expected the "
                         "run's parameters as an object (an edited file); run the model again")
    params = dict(params)
    from . import recipes

    recipe = recipes.get(model)
    metric_names = [n for n, _, _ in recipe.metric_options]
    for key in overrides or {}:
        if key not in metric_names:
            what = f"its metric parameters are {', '.join(metric_names)}" if metric_names else \
                "it has no metric parameters"
            raise ZooinferError(f"rescore changes only metric parameters; {key!r} would change the predictions "
                                f"(run the model again for that). For {model}, {what}")
    params.update(overrides or {})
    params["model"] = model
    for key in ("run_dir", "resume"):
        params.pop(key, None)
    return RunConfig.from_parameters(params, check=False), fingerprint


def rescore_run(folder: str | Path, overrides: dict[str, Any] | None = None, *, progress: bool = False) -> Path:
    """Recompute the metrics of the run in ``folder`` from its stored predictions with the metric parameters
    ``overrides`` (e.g. ``{"iou_thresh": 0.4}``); returns the new report's folder ``folder/rescored/<id>``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ZooinferError(f"run folder not found: {folder} (outputs/<model>/<run-id>)")
    store = PredictionStore.open(folder, writable=False)
    config, fingerprint = stored_config(store, overrides)
    recipe = config.recipe()
    dataset = recipe.open_dataset(config.data_root)
    data = config.select(dataset)
    selection = fingerprint.get("selection") or {}
    if selection.get("keys_sha1") not in (None, keys_digest(s.key for s in data)):
        raise ZooinferError(f"the dataset at {config.data_root or 'the embedded sample'} no longer lists the samples "
                            f"the run in {folder} evaluated ({selection.get('samples')} then, {len(data)} now): "
                            "its annotations changed; rescore against the dataset the run had")
    check_ground_truth(folder, fingerprint, dataset)
    result = pipeline.rescore(recipe, data, store, progress=progress)
    before = _run_metrics(folder)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    label = "-".join(f"{k}={v}" for k, v in sorted((overrides or {}).items())) or "same-parameters"
    final = folder / RESCORED / f"{stamp}-{_safe(label)}"
    rows = _comparison(recipe, result.metrics, before)
    doc = {"model": recipe.name, "run": str(folder), "metric_parameters": dict(config.metric_options),
           "overrides": overrides or {},
           "accuracy": result.metrics, "accuracy_before": before,
           "accuracy_vs_published": report.accuracy_rows(result.metrics, recipe.published, recipe.headline),
           "comparison": rows, "samples": result.n_samples, "predicted": result.n_done,
           "skipped": len(result.skipped), "seconds": round(result.wall_s, 3)}
    report.write_report_folder(final, doc, _markdown(recipe, folder, overrides or {}, rows, result),
                               "the rescored report", "or rescore a copy of the run folder")
    return final


def check_ground_truth(folder: Path, fingerprint: dict, dataset: Any) -> None:
    """Refuse a rescore against ground-truth files that changed since the run (naming each one); a run made before
    the store kept their digests is only warned about."""
    stored = fingerprint.get("ground_truth")
    truth = getattr(dataset, "ground_truth_files", None)
    files = truth() if callable(truth) else []
    if stored is None:
        if files:
            warnings.warn(f"the run in {folder} recorded no digest of its ground-truth files (made by an older "
                          f"zooinfer): cannot check that {', '.join(map(str, files))} are the files it had",
                          stacklevel=3)
        return
    now = ground_truth_digest(files)
    changed = sorted(k for k in set(stored if isinstance(stored, dict) else {}) | set(now)
                     if (stored.get(k) if isinstance(stored, dict) else None) != now.get(k))
    if changed:
        raise ZooinferError(f"cannot rescore {folder}: its ground-truth files (changed: {', '.join(changed)}) are not "
                            "the ones the run was scored against (same names, other contents); rescore against the "
                            "files the run had, or run the model again")


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in text)[:80]


def _run_metrics(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "metrics.json").read_text()).get("accuracy")
    except (OSError, ValueError):
        return None


def _comparison(recipe: Any, after: dict, before: dict | None) -> list[dict]:
    """One row per headline metric (and the other figures both have): the run's value, the rescored one, in %."""
    keys = list(recipe.headline) + [k for k in after if k not in recipe.headline and isinstance(after[k], float)]
    rows = []
    for k in keys:
        new = after.get(k)
        old = (before or {}).get(k)
        if not isinstance(new, (int, float)):
            continue
        rows.append({"metric": k, "run_%": None if not isinstance(old, (int, float)) else round(100 * old, 3),
                     "rescored_%": round(100 * new, 3),
                     "delta_pts": None if not isinstance(old, (int, float)) else round(100 * (new - old), 3)})
    return rows


def _markdown(recipe: Any, folder: Path, overrides: dict, rows: list[dict], result: pipeline.RunResult) -> str:
    what = ", ".join(f"{k} = {v}" for k, v in overrides.items()) or "the run's own metric parameters"
    lines = [f"# {recipe.name}: rescored from the stored predictions", "",
             f"Run: `{folder}`. Metric parameters: {what}. {result.n_done} predictions of {result.n_samples} "
             f"samples ({len(result.skipped)} skipped by the run), scored in {result.wall_s:.2f} s without the model "
             "or the images.", "", report.markdown_table(rows), ""]
    return "\n".join(lines)
