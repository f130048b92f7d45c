"""Repeatability: the same selection evaluated N times in fresh sessions, to tell non-determinism (threads, kernels,
GPUs) apart from a regression.

- ``-p repeats N`` (the notebook's "Repeatability" cell, :func:`repeatability`): the run's own evaluation is the
  first of the N; N - 1 more run in fresh backend sessions over the same samples (their preprocessed views are held
  in memory after the first repeat when they fit :data:`CACHE_MB`, so a repeat re-runs inference only; else each
  repeat reads and preprocesses them again). The summary goes into metrics.json as ``repeatability``.
- ``zooinfer repeat RUN N`` (:func:`repeat_run`): the same for a finished run folder; the run's stored predictions
  are the first of the N. It writes ``RUN/repeats/<id>/`` (metrics.json, report.md; under a temporary name, then
  renamed) and never changes the run's own files.

What is compared: per sample, each repeat's prediction with the first's (:func:`prediction_change`: the top-1 class;
detections matched one-to-one at IoU 0.5 with their scores within :data:`SCORE_TOLERANCE`; re-ID: the rank-1
gallery image); a sample that changes in any repeat is a *flip*. Per metric: its values over the N evaluations,
min, max, std and ``spread`` (max - min). ``zooinfer diff`` reads the spread: a change within it is not a
regression.
"""
from __future__ import annotations

import datetime as _dt
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import ZooinferError

#: preprocessed views held in memory between repeats up to this many MiB (beyond: each repeat preprocesses again)
CACHE_MB = 1024.0
#: a matched detection's score may move this much between repeats and still be the same prediction
SCORE_TOLERANCE = 1e-3
#: re-ID features (and raw outputs) may differ this much relative to their largest |value|
FEATURE_TOLERANCE = 1e-3
#: keys listed in the summary (the first flipped samples)
LISTED = 10
#: where ``zooinfer repeat`` writes inside a run folder
REPEATS = "repeats"


# ------------------------------------------------------------------------------------------------ parameters
def repeats_value(value: Any) -> int:
    """The ``repeats`` parameter as an int >= 1 (1: the run alone, no repeatability section), else a
    ZooinferError."""
    from .parameters import integer

    return integer("repeats", value, 1)


# ------------------------------------------------------------------------------------------------ comparing
def _top1(pred: Any) -> int:
    """The best class of a ``TopKScores``, (C,) logits, or a list of outputs whose first is the logits."""
    classes = getattr(pred, "classes", None)
    if classes is not None:
        return int(classes[0])
    if isinstance(pred, (list, tuple)):
        pred = pred[0]
    return int(np.argmax(np.asarray(pred)))


def prediction_change(task: str, a: Any, b: Any) -> str | None:
    """Why prediction ``b`` of one sample is not prediction ``a`` (compact or full forms), or None when it is the
    same: classification -> the top-1 class; detection / face_detection -> a detection lost or new at IoU 0.5 (same
    class), or a matched score moved by more than :data:`SCORE_TOLERANCE`; anything else (re-ID features, raw
    arrays) -> the values differ by more than :data:`FEATURE_TOLERANCE` of the largest |value|."""
    if task == "classification":
        ta, tb = _top1(a), _top1(b)
        return None if ta == tb else f"top-1 {ta} -> {tb}"
    if task in ("detection", "face_detection"):
        from .diff.samples import _rows, match

        ra, rb = _rows(a), _rows(b)
        to_b, used = match(ra, rb)
        matched = to_b >= 0
        lost, new = int((~matched).sum()), int((~used).sum())
        moved = float(np.abs(rb[to_b[matched], 4] - ra[matched, 4]).max(initial=0.0))
        if lost or new or moved > SCORE_TOLERANCE:
            return f"{lost} detections lost, {new} new, scores moved by up to {moved:.3g}"
        return None
    from .bench import _peak_rel

    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rel = _peak_rel(xb, xa)
    return None if rel <= FEATURE_TOLERANCE else f"values differ by {rel:.3g} of the largest"


def flips(task: str, keys: Sequence[str], reference: Callable[[str], Any], repeats: Sequence[dict],
          rank1: Sequence[dict] | None = None) -> dict:
    """The samples whose prediction changed in any repeat: {"count", "share", "keys" (the first :data:`LISTED`),
    "per_sample" ({key: repeats in which it changed}, the first :data:`LISTED`), "per_repeat" (changed samples per
    repeat), "rule"}. ``reference(key)``: the first evaluation's prediction; ``repeats``: {key: prediction} per
    later repeat (a key missing or skipped there counts as changed). Re-ID compares ``rank1`` ({query key:
    rank-1 gallery key}, the first evaluation's then each repeat's) instead of the features."""
    from .store import Skip

    changed: dict[str, int] = {}
    per_repeat = []
    for r, preds in enumerate(repeats):
        n = 0
        for key in keys:
            ref = reference(key)
            if isinstance(ref, Skip):
                continue
            if task == "reid" and rank1 is not None:
                differs = rank1[0].get(key) != rank1[r + 1].get(key) if key in rank1[0] else False
            else:
                other = preds.get(key)
                differs = other is None or isinstance(other, Skip) or prediction_change(task, ref, other) is not None
            if differs:
                changed[key] = changed.get(key, 0) + 1
                n += 1
        per_repeat.append(n)
    flipped = [k for k in keys if k in changed]
    rule = {"classification": "top-1 class changed",
            "detection": f"a detection lost or new (IoU 0.5) or a score moved by more than {SCORE_TOLERANCE:g}",
            "face_detection": f"a face lost or new (IoU 0.5) or a score moved by more than {SCORE_TOLERANCE:g}",
            "reid": "rank-1 gallery image changed"}.get(task, f"values moved by more than {FEATURE_TOLERANCE:g}")
    return {"count": len(flipped), "share": len(flipped) / len(keys) if keys else 0.0, "keys": flipped[:LISTED],
            "per_sample": {k: changed[k] for k in flipped[:LISTED]}, "per_repeat": per_repeat, "rule": rule}


def spreads(runs: Sequence[dict]) -> dict[str, dict]:
    """Per metric (the fractions every run has): its ``values`` over the runs, ``min``, ``max``, ``std`` (sample std,
    0 for one run) and ``spread`` (max - min), fractions as the metrics are."""
    names = [k for k, v in runs[0].items() if isinstance(v, float)]  # figures; counts (n_images) are not
    out = {}
    for k in names:
        values = [float(r[k]) for r in runs if isinstance(r.get(k), (int, float))]
        if len(values) != len(runs):
            continue
        arr = np.asarray(values)
        out[k] = {"values": values, "min": float(arr.min()), "max": float(arr.max()),
                  "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, "spread": float(arr.max() - arr.min())}
    return out


def statement(doc: dict) -> str:
    """One line: how many repeats, how many samples flipped, the widest metric spread."""
    f = doc["flips"]
    widest = max(doc["metrics"].items(), key=lambda kv: kv[1]["spread"], default=None)
    head = (f"{doc['repeats']} evaluations of the same {doc['samples']} samples ({doc['repeats'] - 1} in fresh "
            f"sessions): {f['count']} sample(s) changed prediction ({f['rule']})")
    if widest is None:
        return head + "."
    name, s = widest
    if s["spread"] == 0:
        return head + "; every metric identical in every repeat (deterministic)."
    return (head + f"; widest metric spread: {name} {100 * s['spread']:.3g} pts (std {100 * s['std']:.3g}): a "
                   "difference within it between two runs is non-determinism, not a regression.")


# ------------------------------------------------------------------------------------------------ running
class MemoryPredictions:
    """What the pipeline writes into a prediction store, kept in memory (a repeat's predictions, never written):
    ``add`` / ``skip`` / ``flush`` as ``store.PredictionStore``, nothing ``done`` before the run."""

    def __init__(self) -> None:
        self.done: dict[str, Any] = {}
        self.predictions: dict[str, Any] = {}

    def add(self, key: str, prediction: Any) -> None:
        self.predictions[key] = prediction

    def skip(self, key: str, path: str, reason: str) -> None:
        from .store import Skip

        self.predictions[key] = Skip(str(path), str(reason))

    def flush(self) -> None:
        """Nothing to write."""

    def get(self, key: str) -> Any:
        return self.predictions[key]


class CachedPreprocessing:
    """``recipe`` with its ``preprocess`` remembered per image path while the views fit ``limit_mb`` (a repeat then
    re-runs inference only); every other attribute is the recipe's. Written by hand: functools.lru_cache cannot
    bound by bytes, and the views are reused as they are (the pipeline copies them into its batches)."""

    def __init__(self, recipe: Any, limit_mb: float = CACHE_MB):
        self._recipe, self._limit = recipe, limit_mb * 2 ** 20
        self._cache: dict[str, Any] = {}
        self._bytes = 0

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not yet set (e.g. while unpickling): never the recipe's private names
            raise AttributeError(name)
        return getattr(self._recipe, name)

    def preprocess(self, path: Any) -> Any:
        key = str(path)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        views, meta = self._recipe.preprocess(path)
        size = sum(np.asarray(v).nbytes for v in views)
        if self._bytes + size <= self._limit:
            self._cache[key] = (views, meta)
            self._bytes += size
        return views, meta


def run_repeats(recipe: Any, data: Any, open_session: Callable[[], Any], n: int, *, bs: int,
                prep_threads: int | None = None, progress: bool = False,
                say: Callable[[str], None] | None = None) -> list:
    """``n`` evaluations of ``data`` through ``recipe``, each in a fresh session from ``open_session()``; returns
    (RunResult, {key: compact prediction or Skip}) per evaluation. Preprocessed views are remembered between them
    (:class:`CachedPreprocessing`)."""
    from . import pipeline

    cached = CachedPreprocessing(recipe)
    out = []
    for i in range(n):
        if say is not None:
            say(f"repeat {i + 1} of {n}: a fresh session")
        session = open_session()
        try:
            memory = MemoryPredictions()
            result = pipeline.run(cached, data, session, bs=bs, prep_threads=prep_threads, progress=progress,
                                  store=memory)
        finally:
            del session
        out.append((result, memory.predictions))
    return out


def summarize(recipe: Any, data: Any, reference_metrics: dict, reference: Callable[[str], Any],
              reference_accumulator: Any, repeats: list, seconds: float) -> dict:
    """The ``repeatability`` document from the first evaluation (its metrics, predictions by key, accumulator) and
    the later ``repeats`` ((RunResult, predictions) each)."""
    keys = [s.key for s in data]
    rank1 = None
    if recipe.task == "reid":
        from .compare import rank1_gallery

        rank1 = [rank1_gallery(reference_accumulator)] + [rank1_gallery(r.accumulator) for r, _ in repeats]
    doc = {"repeats": 1 + len(repeats), "fresh_sessions": len(repeats), "samples": len(keys),
           "first": "the run's own evaluation",
           "flips": flips(recipe.task, keys, reference, [p for _, p in repeats], rank1),
           "metrics": spreads([reference_metrics] + [r.metrics for r, _ in repeats]),
           "seconds": round(seconds, 3)}
    doc["deterministic"] = doc["flips"]["count"] == 0 and all(m["spread"] == 0 for m in doc["metrics"].values())
    doc["statement"] = statement(doc)
    return doc


def table(doc: dict) -> list[dict]:
    """One row per metric (percent) for the report."""
    return [{"metric": k, "min_%": round(100 * m["min"], 4), "max_%": round(100 * m["max"], 4),
             "spread_pts": round(100 * m["spread"], 4), "std_pts": round(100 * m["std"], 4)}
            for k, m in doc["metrics"].items()]


def repeatability(ev: Any, repeats: int | None = None, *, show: bool = True) -> dict:
    """The notebook's "Repeatability" section: the run's selection evaluated ``repeats`` times in all (default: the
    ``repeats`` parameter; the run's own evaluation is the first, the others run in fresh sessions), the flips and
    metric spreads (module docstring); puts the document into metrics.json (``repeatability``) and returns it.
    ``ev`` must have run ``evaluate()`` on this machine (not as Ray tasks)."""
    from . import report

    n = repeats_value(ev.config.repeats if repeats is None else repeats)
    if n < 2:
        return {}
    if ev.result is None or ev._store is None:
        raise ZooinferError("call evaluate() before repeatability(): its predictions are the first repeat")
    cfg = ev.config
    data = cfg.select(ev.dataset)
    t0 = time.perf_counter()
    runs = run_repeats(ev.recipe, data, ev.session_for, n - 1, bs=cfg.bs, prep_threads=cfg.prep_threads)
    store = ev._store
    doc = summarize(ev.recipe, data, ev.result.metrics, store.get, ev.result.accumulator, runs,
                    time.perf_counter() - t0)
    ev.add_section("repeatability", doc)
    if show:
        report.show(doc["statement"])
        report.show(table(doc), "Repeatability: each metric over the repeats")
        if doc["flips"]["count"]:
            report.show([{"key": k, "changed_in_repeats": c} for k, c in doc["flips"]["per_sample"].items()],
                        "Samples whose prediction changed between repeats (the first)")
    return doc


# ------------------------------------------------------------------------------------------------ zooinfer repeat
def check_count(value: Any) -> int:
    """``zooinfer repeat``'s N: an integer >= 2 (the run itself is the first), else a ZooinferError."""
    from .parameters import integer

    try:
        return integer("N", value, 2)
    except ZooinferError:
        raise ZooinferError(f"N must be an integer >= 2 (the evaluations in all; the run's own stored predictions "
                            f"are the first), got {value!r}") from None


def _open_finished(folder: Path) -> tuple[Any, dict, dict]:
    """The finished run in ``folder``: its store (read-only), configuration and fingerprint; clear errors for a
    folder that is not one."""
    from .rescore import stored_config
    from .store import FOLDER, PredictionStore

    if not folder.is_dir():
        raise ZooinferError(f"run folder not found: {folder} (a finished run, outputs/<model>/<run-id>)")
    if folder.name.endswith(".partial") or not (folder / "metrics.json").is_file():
        raise ZooinferError(f"{folder} is not a finished run (no metrics.json, or a partial folder); finish it "
                            f"with zooinfer run MODEL --resume {folder}, then repeat it")
    if not (folder / FOLDER).is_dir():
        raise ZooinferError(f"{folder} holds no stored predictions ({FOLDER}/); run the model again")
    store = PredictionStore.open(folder, writable=False)
    config, fingerprint = stored_config(store)
    return store, config, fingerprint


def repeat_run(folder: str | Path, n: Any, *, progress: bool = False,
               say: Callable[[str], None] | None = None) -> Path:
    """``zooinfer repeat RUN N``: the run's selection evaluated N - 1 more times in fresh sessions, compared with
    its stored predictions; writes ``RUN/repeats/<id>/`` (metrics.json with ``repeatability``, report.md) and
    returns that folder. The run's own files are not changed."""
    from . import pipeline, report
    from .evaluation import Evaluation
    from .rescore import check_ground_truth
    from .store import keys_digest

    n = check_count(n)  # before anything slow
    folder = Path(folder)
    store, config, fingerprint = _open_finished(folder)
    ev = Evaluation(config)
    ev.prepare()
    data = config.select(ev.dataset)
    selection = fingerprint.get("selection") or {}
    if selection.get("keys_sha1") not in (None, keys_digest(s.key for s in data)):
        raise ZooinferError(f"the dataset at {config.data_root or 'the embedded sample'} no longer lists the samples "
                            f"the run in {folder} evaluated; repeat it against the dataset the run had")
    check_ground_truth(folder, fingerprint, ev.dataset)
    missing = [s.key for s in data if s.key not in store]
    if missing:
        raise ZooinferError(f"{folder}: {len(missing)} samples have no stored prediction (first: {missing[0]}); "
                            "a partial run: resume it first")
    t0 = time.perf_counter()
    first = pipeline.rescore(config.recipe(), data, store)
    runs = run_repeats(ev.recipe, data, ev.session_for, n - 1, bs=config.bs, prep_threads=config.prep_threads,
                       progress=progress, say=say)
    doc = summarize(ev.recipe, data, first.metrics, store.get, first.accumulator, runs, time.perf_counter() - t0)
    doc["first"] = "the run's stored predictions"
    out = {"model": config.model, "run": str(folder), "backend": config.backend, "bs": config.bs,
           "repeatability": doc}
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    final = folder / REPEATS / f"{stamp}-n{n}"
    lines = [f"# {config.model}: repeatability of `{folder}`", "", doc["statement"], "",
             report.markdown_table(table(doc)) if doc["metrics"] else "_(no metrics)_", ""]
    if doc["flips"]["count"]:
        lines += ["Samples whose prediction changed (the first):", "",
                  report.markdown_table([{"key": k, "changed_in_repeats": c}
                                         for k, c in doc["flips"]["per_sample"].items()]), ""]
    report.write_report_folder(final, out, "\n".join(lines), "the repeatability report")
    return final


def measured_spread(metrics_doc: dict) -> dict[str, float]:
    """{metric: spread (max - min, a fraction)} from a run's metrics.json ``repeatability`` section, or from the
    newest ``zooinfer repeat`` report of that run (``read_spread``); {} when none was measured."""
    rep = metrics_doc.get("repeatability") if isinstance(metrics_doc, dict) else None
    if not isinstance(rep, dict):
        return {}
    return {k: float(v["spread"]) for k, v in (rep.get("metrics") or {}).items()
            if isinstance(v, dict) and isinstance(v.get("spread"), (int, float))}


def read_spread(run_folder: str | Path, metrics_doc: dict | None = None) -> dict[str, float]:
    """The measured spread of a run (:func:`measured_spread`): its own metrics.json's, else the newest
    ``RUN/repeats/<id>/metrics.json``'s; {} when neither has one."""
    found = measured_spread(metrics_doc or {})
    if found:
        return found
    folder = Path(run_folder) / REPEATS
    for report_dir in sorted(folder.glob("[!.]*"), reverse=True) if folder.is_dir() else []:
        try:
            doc = json.loads((report_dir / "metrics.json").read_text())
        except (OSError, ValueError):
            continue
        found = measured_spread(doc)
        if found:
            return found
    return {}
