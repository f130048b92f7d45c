"""``python -m zooinfer.loadgen``: the batch sweep and the three LoadGen scenarios per model on this machine
(synthetic weights, embedded samples): the "Under load" table of benchmarks/README.md."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ZooinferError
from .harness import _views_per_sample
from .settings import SCENARIOS, LoadSettings, _loadgen
from .suite import run_scenarios


def _real_views(recipe, dataset, n: int) -> np.ndarray:
    from ..bench import real_views

    views = real_views(recipe, dataset, n)
    if not views:
        raise ZooinferError(f"{recipe.name}: no sample of the dataset could be preprocessed")
    return np.stack(views)


def measure_model(name: str, *, backend: str = "onnxruntime", data_root: str | None = None, bs: int | None = None,
                  batch_sizes: Sequence[int] | None = None, budget_s: float = 120.0, sweep_min_time: float = 2.0,
                  latency_bound_ms: float | None = None, log_dir: str | os.PathLike | None = None,
                  recipe_options: dict | None = None, threads: int | None = None, progress: bool = True) -> dict:
    """Batch sweep (``zooinfer.bench``) then SingleStream, Offline and the Server search for one model on
    ``backend`` with synthetic weights: the row of the benchmarks/README.md "Under load" table and its details.
    ``bs``: images per LoadGen batch (rows = images x views; None: the sweep's best batch size). Settings:
    :meth:`LoadSettings.for_latency` for ``budget_s``."""
    from .. import bench, export, recipes
    from ..backends import open_session
    from ..models import build_model

    t0 = time.perf_counter()
    recipe = recipes.get(name, **(recipe_options or {}))
    model = build_model(name)
    if backend in ("torch", "torch-cuda"):
        session = open_session(backend, model=model, threads=threads)
    else:
        session = open_session(backend, onnx_path=export.export_onnx(recipe, model), threads=threads)
    dataset = recipe.open_dataset(data_root)
    samples = _real_views(recipe, dataset, 4)
    sizes = list(batch_sizes or recipe.bench.batch_sizes)
    sweep = bench.inference_sweep(session, samples, sizes, min_time=sweep_min_time, min_iters=3, warmup=1)
    views = _views_per_sample(recipe, dataset)
    run_bs = int(bs * views) if bs else int(bench.best_batch(sweep) or 1)
    bs1 = next((r for r in sweep if r["bs"] == 1), sweep[0])
    sample_latency_ms = bs1["latency_ms_p50"] * views / bs1["bs"]
    settings = LoadSettings.for_latency(sample_latency_ms, budget_s, latency_bound_ms=latency_bound_ms)
    run = run_scenarios(recipe, dataset, session, bs=run_bs, settings=settings, log_dir=log_dir, progress=progress)
    ss, off, srv = (run.results.get(k) for k in SCENARIOS)
    best = max(sweep, key=lambda r: r["throughput"])
    row = {"model": name, "backend": backend, "images": len(dataset),
           "sweep_bs1_img_s": bs1["throughput"] / views, "sweep_bs1_p90_ms": bs1["latency_ms_p90"] * views,
           "sweep_best_img_s": best["throughput"] / views, "sweep_best_bs": best["bs"], "loadgen_bs": run_bs,
           "ss_p90_ms": ss.figures.get("latency_ms_p90") if ss else None, "ss_result": ss.validity if ss else None,
           "offline_img_s": off.figures.get("samples_per_s") if off else None,
           "offline_result": off.validity if off else None,
           "server_bound_ms": run.server.latency_bound_ms if run.server else None,
           "server_qps": run.server.qps if run.server else None,
           "server_p99_ms": srv.figures.get("latency_ms_p99") if srv and run.server and run.server.qps else None,
           "server_probes": len(run.server.probes) if run.server else None,
           "min_query_count": settings.min_query_count, "min_duration_ms": settings.min_duration_ms,
           "wall_s": time.perf_counter() - t0}
    return {"row": row, "sweep": sweep, "under_load": run.document(),
            "server_statement": run.server.statement if run.server else None}


def option_names(model: str) -> list[str]:
    """The options model ``model`` declares (its recipe's ``NotebookSpec.extra``)."""
    from .. import recipes

    notebook = recipes.get(model).notebook
    return [name for name, _, _ in (notebook.extra if notebook else ())]


def model_options(recipe, given: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """``given`` (NAME, VALUE text) pairs as the keyword options of ``recipes.get(recipe.name, **options)``, each
    VALUE read as its declared default's type (bool, int, float, else text); a name the recipe does not declare is a
    ZooinferError listing the ones it does."""
    declared = {name: default for name, default, _ in (recipe.notebook.extra if recipe.notebook else ())}
    out: dict[str, Any] = {}
    for name, text in given:
        if name not in declared:
            takes = f"its options: {', '.join(declared)}" if declared else "it takes none"
            raise ZooinferError(f"model {recipe.name!r} has no option {name!r}; {takes}")
        out[name] = _typed(name, text, declared[name])
    return out


def _typed(name: str, text: str, default: Any) -> Any:
    """``text`` as a value of ``default``'s type (bool, int, float; anything else: the text)."""
    from ..parameters import flag, integer, number_value

    if isinstance(default, bool):
        return flag(name, text)
    if isinstance(default, int):
        return integer(name, text, 0)
    if isinstance(default, float):
        return number_value(name, text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zooinfer.loadgen [models] [--backend onnxruntime] [--budget-s 120] [--out DIR]``: the batch sweep
    and the three LoadGen scenarios per model on this machine (synthetic weights, embedded samples); prints the
    markdown table of benchmarks/README.md and writes ``<out>/loadgen-<timestamp>.json``."""
    import argparse
    import datetime as dt

    from .. import recipes
    from ..report import markdown_table, write_json

    ap = argparse.ArgumentParser(prog="python -m zooinfer.loadgen", description=main.__doc__)
    ap.add_argument("models", nargs="*", default=list(recipes.NAMES), help=f"default: {' '.join(recipes.NAMES)}")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--bs", type=int, default=None,
                    help="images per LoadGen batch (a model with several views per image runs that many rows each; "
                         "default: the sweep's best batch size)")
    ap.add_argument("--budget-s", type=float, default=120.0, help="LoadGen time per model (s), roughly")
    ap.add_argument("--latency-bound-ms", type=float, default=None,
                    help="Server p99 bound (ms; default 3x the SingleStream p90)")
    ap.add_argument("--model-option", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a model option its recipe declares (its notebook's extra parameters), e.g. a letterbox "
                         "size; given to every listed model that takes it; repeatable")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)
    for m in args.models:
        if m not in recipes.NAMES:
            ap.error(f"unknown model {m!r}; known: {', '.join(recipes.NAMES)}")
    try:
        options = {m: model_options(recipes.get(m), [o for o in args.model_option if o[0] in option_names(m)])
                   for m in args.models}
    except ZooinferError as e:
        ap.error(str(e))
    unused = {o for o, _ in args.model_option} - {o for m in args.models for o in option_names(m)}
    if unused:
        ap.error("; ".join(f"no listed model takes the option {o!r} (options: "
                           + ", ".join(f"{m}: {', '.join(option_names(m)) or 'none'}" for m in args.models) + ")"
                           for o in sorted(unused)))
    _loadgen()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    results = {}
    for m in args.models:
        results[m] = measure_model(m, backend=args.backend, bs=args.bs, budget_s=args.budget_s,
                                   latency_bound_ms=args.latency_bound_ms, recipe_options=options[m] or None,
                                   threads=args.threads, log_dir=out / f"loadgen-{stamp}" / m)
        print(results[m]["server_statement"])
        write_json(out / f"loadgen-{stamp}.json", results)
    print(markdown_table([r["row"] for r in results.values()]))
    return 0
