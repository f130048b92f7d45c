"""Optional report sections a notebook adds after its evaluation: "Backends and precision" (issue: variants of one
model side by side, then layer by layer) and "Under load" (MLPerf LoadGen scenarios).

Each function runs its step on the evaluation's recipe, samples and artefacts, shows its tables and plots, and
returns ``(document, figures)``; ``Evaluation.add_section(name, document)`` puts the document into metrics.json.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .errors import ZooinferError


def backends_and_precision(ev: Any, variants: Sequence[str], *, reference: str = "onnxruntime",
                           calibration: int = 8, limit: int | None = None, localise: bool = True,
                           show: bool = True) -> tuple[dict, list]:
    """Run ``variants`` (e.g. ``["torch", "onnxruntime-fp16", "onnxruntime-int8"]``, or ``"bins:<folder>"``) over
    the run's samples beside ``reference``; per variant: metric and delta, throughput, per-sample agreement, the
    samples that disagree most, NaN/Inf by (variant, output, sample); then, for each variant's worst sample, the
    first ONNX nodes whose error exceeds the tolerance. ``calibration``: INT8 calibration images (named in the
    document; taken from the dataset's images outside the run's selection where it has more). ``ev`` must have run ``prepare()`` and ``export()``.

    A variant that cannot run (a missing runtime, a missing or malformed ``bins:`` folder) is a skipped row with the
    reason; a comparison that cannot run at all (the reference cannot) never loses the finished evaluation: the
    document says ``failed`` with the reason and the report shows it."""
    from . import compare as zc, localise as zl, report
    from .viz import compare as vc

    cfg = ev.config
    samples = ev.dataset if limit is not None else cfg.select(ev.dataset)  # the run's own samples (limit / subset)
    try:
        cmp = zc.compare(ev.recipe, samples, list(variants), reference=reference, bs=cfg.bs,
                         limit=limit, onnx_path=ev.onnx_path, model=ev.model, calibration=calibration,
                         calibration_pool=ev.dataset, threads=cfg.threads, om_path=cfg.om_path,
                         device_id=cfg.device_id)
    except ZooinferError as e:
        if show:
            report.show(f"Backends and precision did not run: {e}")
        return {"failed": str(e), "variants_requested": list(variants), "reference": reference}, []
    figures: list = []
    locs: dict[str, Any] = {}
    if show:
        report.show(cmp.markdown())
        report.show(cmp.worst(n=10), "Samples that disagree most")
        figures += [vc.plot_accuracy_vs_throughput(cmp), vc.plot_disagreement(cmp)]
    ref_per_class = cmp.results[0].per_class if cmp.results else None
    for r in cmp.results[1:]:
        if show:
            figures.append(vc.show_worst(cmp, r.name, 4))
            changes = zc.per_class_deltas(ref_per_class, r.per_class)[:10]
            if changes:
                report.show([{k: (round(100 * v, 2) if isinstance(v, float) else v) for k, v in row.items()}
                             for row in changes], f"{r.name}: per-{ref_per_class['by']} changes vs {cmp.reference} "
                                                  "(percent), largest first")
        if localise:
            loc = zl.localise_worst(cmp, r.name, ev.recipe, om_path=cfg.om_path)
            locs[r.name] = loc
            if show:
                report.show(loc.markdown())
                if isinstance(loc, zl.Localisation):
                    figures.append(vc.plot_error_by_depth(loc))
    doc = {**cmp.to_dict(), "localisation": {k: v.to_dict() for k, v in locs.items()}}
    return doc, figures


def under_load(ev: Any, scenarios: Sequence[str], *, latency_bound_ms: float | None = None,
               quick: bool = True, accuracy: bool = True, log_dir: str | Path | None = None,
               show: bool = True, audits: Sequence[str] = ()) -> tuple[dict, list]:
    """MLPerf LoadGen ``scenarios`` (SingleStream, Offline, Server) on the run's session and samples: LoadGen's
    VALID/INVALID and reason, its settings, latency percentiles (ms) and throughput (samples/s); the Server search
    for the highest QPS whose p99 meets ``latency_bound_ms`` (None: 3x the SingleStream p90); with ``accuracy``, the
    accuracy-mode metric checked equal to the normal run's. ``quick``: short LoadGen durations (the embedded run).
    ``log_dir``: LoadGen's log folders (default: ``<run folder>/loadgen/<scenario>/``; the document's paths are
    relative to the run folder). ``audits``: MLPerf's compliance audits (TEST01, TEST04, TEST05; ``loadgen.audit``)
    after the scenarios, PASS / FAIL each. ``ev`` must have run ``evaluate()``.

    A section LoadGen cannot run (its settings refused, the session failing) never loses the finished evaluation:
    the document says ``failed`` with the reason (a scenario that fails alone is in its ``failures``), the report
    shows it, and the run goes on."""
    from . import loadgen, report

    run_folder = ev.run_folder().path
    log_dir = Path(log_dir) if log_dir is not None else run_folder / "loadgen"
    names = [loadgen.scenario_name(s) for s in scenarios]
    try:
        bound = {} if latency_bound_ms is None else {"latency_bound_ms": float(latency_bound_ms)}
        settings = loadgen.LoadSettings.quick(**bound) if quick else loadgen.LoadSettings(**bound)
        run = loadgen.run_scenarios(ev.recipe, ev.config.select(ev.dataset), ev.session_for(), bs=ev.config.bs,
                                    settings=settings, scenarios=names, log_dir=log_dir, accuracy=accuracy,
                                    reference_metrics=ev.result.metrics if ev.result else None, audits=audits)
    except Exception as e:  # noqa: BLE001 - the section is reported as failed; the finished evaluation is kept
        why = str(e) if isinstance(e, ZooinferError) else f"{type(e).__name__}: {e}"
        if show:
            report.show(f"Under load (MLPerf LoadGen) did not run: {why}")
        return {"failed": why, "scenarios_requested": names, "latency_bound_ms": latency_bound_ms}, []
    figures: list = []
    if show:
        report.show(loadgen.scenario_table(run), "Under load (MLPerf LoadGen)")
        for name, why in run.failures.items():
            report.show(f"LoadGen {name} did not complete: {why}")
        if run.server:
            report.show(loadgen.probe_table(run.server), "Server search")
            report.show(run.server.statement)
            offline = run.results.get("Offline")
            figures.append(loadgen.plot_server_search(
                run.server, title=f"{ev.recipe.name}: latency vs QPS",
                offline_samples_per_s=offline.figures.get("samples_per_s") if offline else None))
        if run.accuracy is not None:
            report.show(f"LoadGen accuracy mode: {'equal to' if run.accuracy_matches() else 'DIFFERENT from'} "
                        "the normal run's metric on the same samples.")
        if run.audits:
            from .loadgen.audit import audit_rows

            report.show(audit_rows(run.audits), "MLPerf compliance audits: " + ", ".join(
                f"{k} {v['result']}" for k, v in run.audits.items()))
    return run.document(relative_to=run_folder), figures


def precision_search(ev: Any, *, variant: str = "onnxruntime-int8", show: bool = True) -> tuple[dict, list]:
    """The fastest configuration that still passes (``zooinfer.tune``, asked for with the ``tune`` parameter): the
    precision search for ``variant`` on the run's samples (budget ``budget``, ranking subset ``rank_subset``: the
    run's parameters), the fastest-passing table, the chosen set in ``<run folder>/precision/`` and the atc line
    (the Ascend section shows it). Puts ``fastest_passing`` and ``precision_search`` into metrics.json
    (``ev.add_section``) and returns (the search's document, figures). ``ev`` must have run ``prepare()``; it is
    exported here when it has not been.

    A search that cannot run (e.g. no quantisable layer) never loses the finished evaluation: the document says
    ``failed`` with the reason and the report shows it."""
    from . import report
    from .tune import files, run

    cfg = ev.config
    if ev.steps.exported is None:
        ev.export()
    try:
        outcome = run.tune_evaluation(ev, variant=variant, budget=cfg.budget, rank_subset=cfg.rank_subset,
                                      folder=ev.run_folder().path / files.FOLDER)
    except ZooinferError as e:
        if show:
            report.show(f"The precision search did not run: {e}")
        doc = {"failed": str(e), "variant": variant}
        ev.add_section("precision_search", doc)
        return doc, []
    doc = outcome.to_dict()
    ev.add_section("fastest_passing", outcome.fastest)
    ev.add_section("precision_search", doc)
    figures: list = []
    if show:
        report.show(outcome.markdown())
        if outcome.search is not None and len(outcome.search.curve) > 1:
            figures.append(outcome.search.plot(title=f"{ev.recipe.name}: {variant}"))
    return doc, figures
