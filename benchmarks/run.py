#!/usr/bin/env python3
"""zooinfer benchmark suite: side-by-side ratios measured in one run on one machine.

For every model with a recipe (synthetic weights, embedded sample inputs):
  1. ONNX Runtime CPU vs PyTorch eager throughput per batch size (paired runs; median, min, max of the ratio);
  2. end-to-end (read + preprocess + infer + postprocess + metric over the embedded images repeated to a stream)
     vs pure inference on the same batches;
  3. peak RSS while streaming a long vs a 10x shorter stream through the whole pipeline (inference replayed, so
     the stream is long enough to show growth): flat means nothing accumulates per sample but the metric's compact
     state; the metric's final computation (pycocotools, ranking) is measured apart;
  4. achieved GFLOP/s (FLOPs counted from the ONNX graph) vs this machine's dense matmul rate;
  5. preprocessing images/s per thread; optionally the ONNX Runtime per-operator profile.
The same functions (zooinfer.bench) produce the figures in every notebook's report.

usage: python benchmarks/run.py [--models dpn131 ...] [--repeats 3] [--quick] [--profile]
Writes benchmarks/results/<timestamp>.json and benchmarks/results/latest.json, prints markdown tables.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lib"))

from zooinfer import bench, pipeline, recipes, report  # noqa: E402
from zooinfer.evaluation import Evaluation  # noqa: E402
from zooinfer.flops import count_flops  # noqa: E402

def _stats(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "min": float(np.min(values)), "max": float(np.max(values))}


def ort_vs_torch(ev: Evaluation, samples: np.ndarray, sizes, repeats: int, min_time: float) -> list[dict]:
    ort = ev.session_for("onnxruntime")
    eager = ev.session_for("torch")
    rows = []
    for bs in sizes:
        batch = bench.make_batch(samples, bs)
        o, t = [], []
        for _ in range(repeats):  # interleaved, so drifts in machine load hit both alike
            o.append(bench.summarize(bench.time_batches(ort.run, batch, warmup=1, min_time=min_time, min_iters=3), bs))
            t.append(bench.summarize(bench.time_batches(eager.run, batch, warmup=1, min_time=min_time, min_iters=3),
                                     bs))
        rows.append({"bs": bs, "ort_ips": _stats([r["throughput"] for r in o]),
                     "torch_ips": _stats([r["throughput"] for r in t]),
                     "ratio": _stats([a["throughput"] / b["throughput"] for a, b in zip(o, t)]),
                     "ort_latency_ms_p50": float(np.median([r["latency_ms_p50"] for r in o])),
                     "ort_latency_ms_p99": float(np.median([r["latency_ms_p99"] for r in o]))})
    return rows


def end_to_end_vs_pure(ev: Evaluation, samples: np.ndarray, n: int, bs: int, repeats: int) -> dict:
    ds = ev.dataset
    stream = long_stream(ds, n)
    sess = ev.session_for("onnxruntime")
    sess.run(bench.make_batch(samples, bs))  # warm-up outside both timings (first-run allocations)
    views = len(ev.recipe.preprocess(ds[0].path)[0])  # PyramidBox: image + mirrored copy
    e2e, pure, share = [], [], []
    for _ in range(repeats):
        res = pipeline.run(ev.recipe, stream, sess, bs=bs, progress=False)
        e2e.append(res.throughput * views)  # inference rows per second, comparable with pure inference
        share.append(res.inference_share)
        pure.append(bench.summarize(bench.time_batches(sess.run, bench.make_batch(samples, bs), warmup=1,
                                                       min_time=0, min_iters=max(2, n // bs)), bs)["throughput"])
    return {"bs": bs, "stream": n, "views_per_image": views, "end_to_end_ips": _stats(e2e), "pure_ips": _stats(pure),
            "ratio": _stats([a / b for a, b in zip(e2e, pure)]), "inference_share": _stats(share),
            "stages": res.stage_table()}


def long_stream(ds, n: int):
    """``ds`` stretched to ``n`` samples, each sample repeated in place (s0 s0 s1 s1 ...), so the dataset's own order
    of groups is kept: Market-1501's queries all come before its gallery, as in the real layout (interleaving whole
    copies would hold every gallery feature back until the last query arrived)."""
    return ds.repeated(n)


def _memory_child(model: str, n: int, bs: int) -> None:
    """Runs in a subprocess: the pipeline over ``n`` samples with inference replayed; prints the peak resident
    memory sampled every 20 ms *during the stream* (MiB), so model building does not mask growth."""
    import threading

    ev = Evaluation.for_model(model, bs=bs, progress=False)
    ds = ev.prepare().dataset
    recipe = ev.recipe
    replay = bench.ReplaySession(ev.session_for("torch"), ev.parity_inputs(min(bs, 4)))
    del ev  # the network's weights are not part of the streaming state being measured
    import gc

    gc.collect()
    bench.release_freed_memory()  # hand the freed weights back to the OS, so the stream cannot hide in them
    stream = long_stream(ds, n)
    base = bench.rss_mib()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            peak[0] = max(peak[0], bench.rss_mib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    acc = recipe.new_accumulator(stream)
    compute = acc.compute
    at_compute: dict = {}

    def compute_marked():
        # the stream's own peak ends here; the metric's final computation (pycocotools' per-image evaluation, the
        # query x gallery distance matrix) is measured separately: it scales with the dataset by construction
        at_compute.update(peak_rss_mib=max(peak[0], bench.rss_mib()), metric_state_mib=_state_mib(acc))
        return compute()

    acc.compute = compute_marked
    t0 = time.perf_counter()
    res = pipeline.run(recipe, stream, replay, bs=bs, accumulator=acc, progress=False)
    stop.set()
    sampler.join()
    print(json.dumps({"n": n, "done": res.n_done, "rss_before_mib": base, "peak_rss_mib": at_compute["peak_rss_mib"],
                      "peak_rss_with_metric_mib": max(peak[0], bench.rss_mib()),
                      "metric_state_mib": at_compute["metric_state_mib"], "seconds": time.perf_counter() - t0}))


def _state_mib(obj, seen=None) -> float:
    """Approximate size of the numpy arrays and Python containers a metric accumulator holds (MiB)."""
    seen = seen if seen is not None else set()
    if id(obj) in seen:
        return 0.0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return obj.nbytes / 2**20
    size = sys.getsizeof(obj) / 2**20
    if isinstance(obj, dict):
        return size + sum(_state_mib(k, seen) + _state_mib(v, seen) for k, v in obj.items())
    if isinstance(obj, (list, tuple, set)):
        return size + sum(_state_mib(v, seen) for v in obj)
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        return size + _state_mib(vars(obj), seen)
    return size


def memory_growth(model: str, short: int, long: int, bs: int) -> dict:
    out = {}
    for n in (short, long):
        proc = subprocess.run([sys.executable, __file__, "--memory-child", model, str(n), str(bs)],
                              capture_output=True, text=True, check=True)
        out[n] = json.loads(proc.stdout.strip().splitlines()[-1])
    # what the stream itself adds on top of the process it runs in (model building is not part of it)
    d_short = out[short]["peak_rss_mib"] - out[short]["rss_before_mib"]
    d_long = out[long]["peak_rss_mib"] - out[long]["rss_before_mib"]
    # growth beyond what the metric legitimately keeps per sample (its compact state: ranks, detections, features)
    state = out[long]["metric_state_mib"] - out[short]["metric_state_mib"]
    return {"short": out[short], "long": out[long], "stream_mib_short": d_short, "stream_mib_long": d_long,
            "growth": (d_long - d_short) / out[short]["peak_rss_mib"],
            "growth_beyond_metric_state": (d_long - d_short - state) / out[short]["peak_rss_mib"],
            # the metric's final computation over the whole stream (pycocotools, the distance matrix's ranking)
            "metric_compute_mib_long": out[long]["peak_rss_with_metric_mib"] - out[long]["peak_rss_mib"]}


def preprocess_rate(ev: Evaluation, n: int = 20) -> float:
    paths = [s.path for s in ev.dataset][:n]
    t0 = time.perf_counter()
    for p in paths:
        ev.recipe.preprocess(p)
    return len(paths) / (time.perf_counter() - t0)


def bench_model(name: str, args) -> dict:
    print(f"\n== {name}", flush=True)
    ev = Evaluation.for_model(name, progress=False)
    ev.prepare()
    exported = ev.export()
    samples = ev.parity_inputs(4)
    plan = ev.recipe.bench
    sizes = plan.batch_sizes[: 2 if args.quick else None]
    result: dict = {"model": name, "parity": list(exported.parity)}
    result["ort_vs_torch"] = ort_vs_torch(ev, samples, sizes, args.repeats, args.min_time)
    e2e_bs = 8 if 8 in sizes else sizes[-1]
    n_stream = plan.stream // (4 if args.quick else 1)
    # at least 3 batches: with one or two, filling and draining the pipeline (nothing to overlap) dominate
    result["end_to_end"] = end_to_end_vs_pure(ev, samples, max(n_stream, 3 * e2e_bs), e2e_bs, args.repeats)
    flops = count_flops(exported.path, (1, *ev.recipe.input_shape))
    best = max(result["ort_vs_torch"], key=lambda r: r["ort_ips"]["median"])
    result["flops_per_image"] = flops
    result["achieved_gflops"] = flops * best["ort_ips"]["median"] / 1e9
    result["achieved_at_bs"] = best["bs"]
    result["preprocess_ips_per_thread"] = preprocess_rate(ev)
    if not args.no_memory:
        short, long = plan.memory_quick if args.quick else plan.memory
        result["memory"] = memory_growth(name, short, long, e2e_bs)
    if args.profile:
        result["profile"] = bench.profile_top_ops(exported.path, bench.make_batch(samples, e2e_bs))
    return result


def tables(results: list[dict], peak: float) -> str:
    lines = [f"matmul peak (torch float32 GEMM, this machine): **{peak:.0f} GFLOP/s**", ""]
    rows = []
    for r in results:
        for x in r["ort_vs_torch"]:
            rows.append({"model": r["model"], "bs": x["bs"], "ORT img/s": round(x["ort_ips"]["median"], 2),
                         "torch img/s": round(x["torch_ips"]["median"], 2),
                         "ORT/torch (median [min, max])": f"{x['ratio']['median']:.2f} [{x['ratio']['min']:.2f}, "
                                                          f"{x['ratio']['max']:.2f}]"})
    lines += ["**1. ONNX Runtime CPU vs PyTorch eager**", "", report.markdown_table(rows), ""]
    rows = [{"model": r["model"], "bs": r["end_to_end"]["bs"], "stream": r["end_to_end"]["stream"],
             "end-to-end img/s": round(r["end_to_end"]["end_to_end_ips"]["median"], 2),
             "pure img/s": round(r["end_to_end"]["pure_ips"]["median"], 2),
             "e2e/pure (median [min, max])": f"{r['end_to_end']['ratio']['median']:.3f} "
                                             f"[{r['end_to_end']['ratio']['min']:.3f}, "
                                             f"{r['end_to_end']['ratio']['max']:.3f}]",
             "inference share of wall": f"{r['end_to_end']['inference_share']['median']:.3f}"} for r in results]
    lines += ["**2. End-to-end vs pure inference**", "", report.markdown_table(rows), ""]
    rows = [{"model": r["model"], "short stream": r["memory"]["short"]["n"],
             "MiB added": round(r["memory"]["stream_mib_short"], 1), "long stream": r["memory"]["long"]["n"],
             "MiB added ": round(r["memory"]["stream_mib_long"], 1),
             "metric state MiB (long)": round(r["memory"]["long"]["metric_state_mib"], 1),
             "peak MiB (short)": round(r["memory"]["short"]["peak_rss_mib"], 1),
             "growth vs peak": f"{100 * r['memory']['growth']:.1f}%",
             "growth beyond metric state": f"{100 * r['memory']['growth_beyond_metric_state']:.1f}%",
             "final metric computation MiB (long)": round(r["memory"]["metric_compute_mib_long"], 1)}
            for r in results if "memory" in r]
    if rows:
        lines += ["**3. Peak RSS while streaming, long vs short stream (inference replayed; the final metric "
                  "computation measured apart)**", "", report.markdown_table(rows), ""]
    rows = [{"model": r["model"], "GFLOP/img": round(r["flops_per_image"] / 1e9, 2), "best bs": r["achieved_at_bs"],
             "achieved GFLOP/s": round(r["achieved_gflops"], 1), "of matmul peak": f"{100 * r['achieved_gflops'] / peak:.0f}%",
             "preprocess img/s/thread": round(r["preprocess_ips_per_thread"], 1)} for r in results]
    lines += ["**4-5. Compute efficiency and preprocessing**", "", report.markdown_table(rows), ""]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", help="models to run (default: every model with a recipe)")
    p.add_argument("--repeats", type=int, default=3, help="paired repetitions per measurement (median, min, max)")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds per timed batch size per repetition")
    p.add_argument("--quick", action="store_true", help="fewer batch sizes, shorter streams")
    p.add_argument("--no-memory", action="store_true", help="skip the memory-growth streams")
    p.add_argument("--profile", action="store_true", help="add the ONNX Runtime per-operator profile")
    p.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        model, n, bs = args.memory_child
        _memory_child(model, int(n), int(bs))
        return 0
    models = args.models or recipes.available()
    peak = bench.matmul_peak_gflops()
    results = [bench_model(m, args) for m in models]
    doc = {"when": dt.datetime.now().isoformat(timespec="seconds"), "matmul_peak_gflops": peak,
           "environment": report.environment(), "args": vars(args), "results": results}
    text = tables(results, peak)
    bench.save_results(HERE / "results", "", doc, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
