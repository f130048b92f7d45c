"""The whole precision search of one run: ``zooinfer tune MODEL`` (:func:`tune_run`) and the notebook's section
(:func:`tune_evaluation` on an :class:`~zooinfer.evaluation.Evaluation` that has run ``prepare()`` and
``export()``).

Steps: the fp32 model over the run's samples (the reference predictions); the INT8 build's calibration images,
chosen once outside those samples where the dataset has more (named); the search on the ranking subset (the first N
of the run's samples, clipped to them with a note); the fastest-passing table on the run's samples (ONNX Runtime
fp32, INT8, the tuned INT8, and OpenVINO's variants where installed); the chosen set as each toolchain takes it.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ZooinferError
from ..parameters import budget_value
from . import fastest as zf
from . import files as zfiles
from .search import MAX_KEEP, VERIFY, OrtInt8Builder, Predictions, SearchResult, check_variant, predict, \
    rank_subset_size, search

#: the configurations of the fastest-passing table besides ONNX Runtime's fp32 / INT8 / tuned INT8, opened by name
#: through zooinfer.variants where this checkout has them (skipped with the reason otherwise)
OTHER_VARIANTS = ("openvino", "openvino-bf16", "openvino-int8")
#: timing iterations per batch size in the table (at least; and at least ``bench_min_time`` seconds)
MIN_ITERS = 3


@dataclass
class TuneOutcome:
    """What a precision search produced: the search (None when it could not run), the ``fastest_passing``
    document, the toolchain files, the atc line, notes (clipped subset, no VNNI, ...) and timings (seconds)."""

    search: SearchResult | None
    fastest: dict
    files: dict = field(default_factory=dict)
    atc: str | None = None
    notes: list[str] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Whether some configuration passes (``zooinfer tune`` exits 0, else 1)."""
        return bool(self.fastest.get("passed"))

    def to_dict(self) -> dict:
        return {"search": self.search.to_dict() if self.search else None,
                "files": {k: str(v) for k, v in self.files.items()}, "ascend_atc": self.atc, "notes": self.notes,
                "seconds": self.seconds}

    def markdown(self) -> str:
        parts = ["## Fastest passing configuration", zf.markdown(self.fastest)]
        if self.search is not None:
            parts += ["## Precision search", self.search.markdown()]
        if self.files:
            parts.append("Toolchain files: " + ", ".join(f"`{p}`" for p in self.files.values()))
        if self.atc:
            parts += ["## Ascend", "The chosen nodes kept in their original precision (`--keep_dtype`) and their "
                      "op types on the mixed-precision block list (`--modify_mixlist`; it moves every operator of "
                      "those types, `--keep_dtype` only the named ones):", f"```\n{self.atc}\n```"]
        parts += [f"Note: {n}" for n in self.notes]
        return "\n\n".join(parts)


def check_settings(variant: str, budget: Any, rank_subset: Any) -> tuple[str, float | None, int]:
    """The search's settings checked before anything slow runs: a known, tunable variant; a budget that is a
    fraction in (0, 1) (None: the recipe's acceptance tolerance); a ranking subset of at least 1 sample."""
    from ..parameters import integer

    check_variant(variant)
    budget = None if budget is None else budget_value("budget", budget)
    return variant, budget, integer("rank_subset", rank_subset, 1)


def _speed(session: Any, views: np.ndarray, sizes: Sequence[int], min_time: float) -> list[dict]:
    from .. import bench

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an unstable row is marked in the table
        return bench.inference_sweep(session, views, sizes, min_time=min_time, min_iters=MIN_ITERS, warmup=1)


def tune_evaluation(ev: Any, *, variant: str = "onnxruntime-int8", budget: float | None = None,
                    rank_subset: int = 64, verify: int = VERIFY, max_keep: int = MAX_KEEP,
                    folder: str | Path | None = None, log: Callable[[str], None] | None = None) -> TuneOutcome:
    """The precision search and the fastest-passing table for the evaluation ``ev`` (``prepare()`` and ``export()``
    done) on its samples; the toolchain files into ``folder`` (None: none written). ``budget`` None: the recipe's
    acceptance tolerance (the guides' rule, 1%)."""
    from .. import report
    from ..backends import open_session
    from ..cpu import has_int8_dot
    from ..int8 import calibration_samples, speed_note

    say = log or (lambda _m: None)
    variant, budget, rank_subset = check_settings(variant, budget, rank_subset)
    recipe, cfg = ev.recipe, ev.config
    budget = recipe.published.acceptance.tolerance if budget is None else budget
    t0 = time.perf_counter()
    notes: list[str] = []
    data = cfg.select(ev.dataset)
    n_rank, clip = rank_subset_size(rank_subset, len(data))
    if clip:
        warnings.warn(clip, stacklevel=2)
        notes.append(clip)
    if not has_int8_dot():
        notes.append(speed_note() or "this CPU has no VNNI / AMX int8 instructions: INT8 runs slower here than on "
                     "a CPU with them; the search still runs")
    onnx_path = ev.onnx_path
    say(f"fp32 reference predictions on {len(data)} samples")
    fp32_session = open_session("onnxruntime", onnx_path=onnx_path, threads=cfg.threads)
    fp32_pred = predict(recipe, data, fp32_session, bs=cfg.bs)
    meaningful, why = report.meaningful(cfg, recipe)
    reference = zf.Reference.choose(recipe, meaningful, why, fp32_pred, budget)
    evaluated = [s.key for s in data]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, cal = calibration_samples(ev.dataset, cfg.calibration, evaluated=evaluated)
    if cal.note:
        notes.append(f"INT8 calibration on {len(cal.keys)} images ({', '.join(cal.keys[:10])}"
                     f"{' ...' if len(cal.keys) > 10 else ''}): {cal.note}")
    else:
        notes.append(f"INT8 calibration on {len(cal.keys)} images: {', '.join(cal.keys[:10])}")
    del caught
    builder = OrtInt8Builder(recipe, onnx_path, ev.dataset, cal.keys, threads=cfg.threads)
    rank = data.subset(n_rank)
    say(f"searching on a ranking subset of {n_rank} samples (budget {100 * budget:g}%)")
    found = search(recipe, rank, builder, fp32_pred.subset([s.key for s in rank]), budget=budget, bs=cfg.bs,
                   verify=verify, max_keep=max_keep, reference_name=f"the fp32 model's predictions on the {n_rank} "
                   "ranking samples", log=say)
    t_search = time.perf_counter() - t0
    say("fastest passing configuration: metric on the run's samples, throughput per batch size")
    from .. import bench

    views = np.stack(bench.real_views(recipe, data, 4))
    sizes = list(cfg.batch_sizes)
    rows: list[dict] = []
    skipped: list[dict] = []

    def add(config: str, runtime: str, precision: str, session: Any, pred: Predictions | None = None,
            note: str | None = None) -> None:
        pred = pred or predict(recipe, data, session, bs=cfg.bs)
        judged = reference.judge(pred)
        rows.extend(zf.rows_for(config, runtime, precision, judged, _speed(session, views, sizes,
                                                                            cfg.bench_min_time), note=note))
        say(f"  {config}: {judged['metric']} {judged['value']}, {judged['verdict']}")

    add("onnxruntime fp32", "onnxruntime", "fp32", fp32_session, fp32_pred)
    del fp32_session
    full = builder.build(())
    add("onnxruntime int8", "onnxruntime", "int8", builder.session(full),
        note=builder.info.get("kernel_summary"))
    if found.chosen:
        tuned = builder.build(found.chosen)
        add(f"onnxruntime int8, {len(found.chosen)} layer(s) fp32", "onnxruntime", "int8+fp32",
            builder.session(tuned))
    for name in OTHER_VARIANTS:
        opened = _open_other(name, ev, evaluated, cal.keys)
        if isinstance(opened, str):
            skipped.append({"configuration": name, "reason": opened})
            continue
        add(name, opened.backend, opened.precision, opened.session)
    doc = zf.table(rows, reference, skipped)
    builder.discard([full] + ([tuned] if found.chosen else []))  # the search's other builds: ~160 MB each for DPN131
    out_files: dict = {}
    atc = None
    if folder is not None and found.chosen:
        import onnx

        graph = onnx.load(str(builder.graph), load_external_data=False).graph
        ops = {n.name: n.op_type for n in graph.node}
        source_names = {n.name for n in onnx.load(str(onnx_path), load_external_data=False).graph.node}
        missing = [n for n in found.chosen if n not in source_names]
        if missing:
            notes.append(f"{len(missing)} chosen node(s) are named differently in the exported ONNX file than in "
                         f"the quantizer's pre-processed graph (e.g. {missing[0]}): ATC reads the exported names")
        out_files = zfiles.write_precision_files(folder, found.chosen, ops)
        atc = zfiles.atc_command(recipe, onnx_path, cfg.bs, folder)
    elif folder is not None:
        out_files = zfiles.write_precision_files(folder, (), {})
        notes.append("the full INT8 build fits the budget: nothing needs to be kept in higher precision (the "
                     "precision files list no node)")
    return TuneOutcome(found, doc, out_files, atc, notes + found.notes,
                       {"search": t_search, "total": time.perf_counter() - t0})


def _open_other(name: str, ev: Any, evaluated: list[str], calibration_keys: Sequence[str]) -> Any:
    """The variant ``name`` opened for the table, or the reason it is skipped (text)."""
    from ..variants import KNOWN, Skipped, open_variant

    if name not in KNOWN:
        return f"variant {name!r} is not in this checkout"
    try:
        v = open_variant(name, ev.recipe, onnx_path=ev.onnx_path, model=ev.model, dataset=ev.dataset,
                         calibration_keys=list(calibration_keys), threads=ev.config.threads)
    except ZooinferError as e:  # e.g. the openvino extra not installed: the install line
        return str(e)
    return v.reason if isinstance(v, Skipped) else v


def tune_run(config: Any, *, variant: str = "onnxruntime-int8", budget: float | None = None, rank_subset: int = 64,
             verify: int = VERIFY, max_keep: int = MAX_KEEP, out: str | Path | None = None,
             log: Callable[[str], None] | None = None) -> tuple[TuneOutcome, Path]:
    """``zooinfer tune``: prepare and export the model of ``config`` (a RunConfig), run :func:`tune_evaluation`,
    and write the run folder (``out``, else ``<output_root>/<model>/<run-id>-tune``): ``metrics.json``
    (``fastest_passing``, ``precision_search``), ``report.md``, ``precision_curve.png`` and ``precision/``.
    Returns (outcome, folder)."""
    from .. import report
    from ..evaluation import Evaluation

    check_settings(variant, budget, rank_subset)
    ev = Evaluation(config)
    ev.prepare()
    ev.export()
    recipe = ev.recipe
    if out is not None:
        run_dir = report.RunDir(recipe.name, path=out, owned=False)
    else:
        run_dir = report.RunDir(recipe.name, config.output_root, run_id=f"{report.new_run_id(recipe.name)}-tune")
    outcome = tune_evaluation(ev, variant=variant, budget=budget, rank_subset=rank_subset, verify=verify,
                              max_keep=max_keep, folder=run_dir.file(zfiles.FOLDER), log=log)
    if outcome.search is not None and len(outcome.search.curve) > 1:
        import matplotlib.pyplot as plt

        plt.close(outcome.search.plot(run_dir.file("precision_curve.png"), title=f"{recipe.name}: {variant}"))
    meaningful, why = report.meaningful(ev.config, recipe)
    doc = {"model": recipe.name, "task": recipe.task, "accuracy_meaningful": meaningful,
           "not_meaningful_because": why or None, "fastest_passing": outcome.fastest,
           "precision_search": outcome.to_dict(),
           "ascend_commands": {**ev.ascend_commands(), **({"atc_mixed_precision": outcome.atc} if outcome.atc
                                                           else {})},
           "parameters": {k: v for k, v in ev.config.parameters().items() if k != "run_dir"},
           "environment": report.environment()}
    report.write_json(run_dir.file("metrics.json"), doc)
    with report.artefact(run_dir.file("report.md")) as f:
        f.write(f"# {recipe.name}: the fastest configuration that still passes\n\n{outcome.markdown()}\n")
    return outcome, run_dir.finalize()
