#!/usr/bin/env python3
"""The pipeline's ceiling: end-to-end images/s through the ``null`` backend (outputs of the model's shapes, no
compute) with N preprocessing workers, against N x the single-thread preprocessing rate (the efficiency ratio;
issue 16 asks for >= 0.9 for N up to the cores available).

Per model (synthetic weights, the embedded sample repeated in place to a stream of about ``--seconds`` of
single-thread preprocessing work) and per repetition: the single-thread rate (read + preprocess, one thread, no
pipeline), then the whole pipeline (read + preprocess in N workers -> batches of ``--bs`` -> null inference ->
postprocess + metric on the one ordered scoring thread) for N = 1..``--max-workers``, with threads and (unless
``--no-processes``) with the opt-in worker processes (``pipeline.run(prep_processes=N)``). Medians over
``--repeats``; the efficiency is the median of the per-repetition ratios (each against that repetition's own
single-thread rate, so slow drifts of a shared machine's load cancel).

usage: python benchmarks/pipeline_ceiling.py [--models dpn131 ...] [--quick] [--max-workers N] [--repeats 3]
Prints a markdown table, writes benchmarks/results/pipeline-ceiling-latest.{json,md} and replaces (or appends)
the "Pipeline ceiling" section of benchmarks/README.md (not with --no-readme).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lib"))

from zooinfer import bench, pipeline, recipes, report  # noqa: E402
from zooinfer.backends import Artefacts, get  # noqa: E402
from zooinfer.evaluation import Evaluation  # noqa: E402

HEADING = "## Pipeline ceiling (null backend)"
COLUMNS = ["model", "workers", "N", "stream", "images/s", "single-thread img/s", "efficiency",
           "efficiency [min, max]", "postprocess ms/img"]


def long_stream(ds: Any, n: int) -> Any:
    """``ds`` stretched to ``n`` samples, each sample repeated in place (s0 s0 s1 s1 ...: the dataset's order of
    groups kept, as benchmarks/run.py does)."""
    return ds.repeated(n)


def single_thread_rate(recipe: Any, stream: Any) -> float:
    """Images/s of read + preprocess alone, one thread, over ``stream`` (what each pipeline worker does)."""
    t0 = time.perf_counter()
    for s in stream:
        with open(s.path, "rb") as f:
            f.read()
        recipe.preprocess(s.path)
    return len(stream) / (time.perf_counter() - t0)


def pipeline_rate(recipe: Any, stream: Any, session: Any, n: int, bs: int, processes: bool) -> tuple[float, float]:
    """(end-to-end images/s, postprocess ms per image) of the whole pipeline with ``n`` workers."""
    kw = {"prep_processes": n} if processes else {"prep_threads": n}
    res = pipeline.run(recipe, stream, session, bs=bs, progress=False, **kw)
    post = res.timer.seconds["postprocess"] / max(res.timer.items["postprocess"], 1)
    return res.throughput, 1e3 * post


def bench_model(name: str, args: argparse.Namespace) -> list[dict]:
    """The table rows of one model: one per (worker kind, N)."""
    ev = Evaluation.for_model(name, progress=False)
    prepared = ev.prepare()
    recipe, ds = ev.recipe, prepared.dataset
    session = get("null").open(Artefacts(model=prepared.model))
    views, _ = recipe.preprocess(ds[0].path)
    session.run(views[0][None])  # the one real forward that teaches the null session the output shapes
    rate0 = single_thread_rate(recipe, ds)  # a first estimate, to size the stream
    n_stream = int(min(args.max_stream, max(4 * args.bs, 2 * len(ds), rate0 * args.seconds)))
    stream = long_stream(ds, n_stream)
    kinds = ["threads"] + ([] if args.no_processes else ["processes"])
    runs: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    for _ in range(args.repeats):  # interleaved: each repetition's ratios against its own single-thread rate
        single = single_thread_rate(recipe, stream)
        for kind in kinds:
            for n in range(1, args.max_workers + 1):
                ips, post = pipeline_rate(recipe, stream, session, n, args.bs, kind == "processes")
                runs.setdefault((kind, n), []).append((ips, single, post))
    rows = []
    for (kind, n), vals in runs.items():
        ips, single, post = (np.array(v) for v in zip(*vals))
        eff = ips / (n * single)
        rows.append({"model": name, "workers": kind, "N": n, "stream": n_stream,
                     "images/s": round(float(np.median(ips)), 2),
                     "single-thread img/s": round(float(np.median(single)), 2),
                     "efficiency": round(float(np.median(eff)), 3),
                     "efficiency [min, max]": f"[{eff.min():.3f}, {eff.max():.3f}]",
                     "postprocess ms/img": round(float(np.median(post)), 3)})
    print(f"{name}: done ({n_stream} images per run)", file=sys.stderr, flush=True)
    return rows


def conditions(args: argparse.Namespace) -> str:
    """One line saying where and how the table was measured."""
    env = report.environment()
    cpu = env.get("cpu") or env.get("processor") or "?"
    return (f"{dt.date.today().isoformat()}, {pipeline.available_cpus()} CPUs available ({cpu}), load average "
            f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} at the end; bs {args.bs}, {args.repeats} repetitions, "
            f"streams of ~{args.seconds:g} s of single-thread preprocessing (at most {args.max_stream} images)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", help="models to run (default: every model with a recipe)")
    p.add_argument("--quick", action="store_true", help="one repetition, streams of ~3 s (default ~12 s, 3 reps)")
    p.add_argument("--max-workers", type=int, default=pipeline.available_cpus(),
                   help="largest N (default: the CPUs available to this process)")
    p.add_argument("--repeats", type=int, help="repetitions (default 3; 1 with --quick)")
    p.add_argument("--seconds", type=float, help="single-thread preprocessing seconds per stream (12; 3 --quick)")
    p.add_argument("--max-stream", type=int, default=2000, help="at most this many images per stream")
    p.add_argument("--bs", type=int, default=8, help="batch size (views) through the null backend")
    p.add_argument("--no-processes", action="store_true", help="threads only (skip prep_processes)")
    p.add_argument("--no-readme", action="store_true", help="do not write the section into benchmarks/README.md")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.seconds = args.seconds or (3.0 if args.quick else 12.0)
    rows = [r for m in (args.models or recipes.available()) for r in bench_model(m, args)]
    table = report.markdown_table(rows, COLUMNS)
    cmd = "python benchmarks/pipeline_ceiling.py " + " ".join(argv if argv is not None else sys.argv[1:])
    section = (f"{HEADING}\n\n`{cmd.strip()}`: {conditions(args)}.\n\nEnd-to-end images/s through the `null` "
               "backend with N preprocessing workers (threads, or `prep_processes` worker processes); "
               "efficiency = images/s / (N x single-thread read + preprocess rate), median of the repetitions "
               "[min, max]. The issue's goal is >= 0.9.\n\n" + table + "\n")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    report.write_json(out / "pipeline-ceiling-latest.json",
                      {"when": dt.datetime.now().isoformat(timespec="seconds"), "args": vars(args),
                       "environment": report.environment(), "rows": rows})
    (out / "pipeline-ceiling-latest.md").write_text(section)
    if not args.no_readme:
        bench.replace_section(HERE / "README.md", HEADING, section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
