#!/usr/bin/env python3
"""Throughput of each runtime x precision relative to ONNX Runtime fp32, per model, in one interleaved run.

For every model (synthetic weights, embedded-sample inputs) each column of :data:`COLUMNS` is opened once (INT8
builds calibrated on ``--calibration`` embedded images) and timed on the same batch; each repetition times every
column in turn, and the ratio column / ``ort-fp32`` is taken within the repetition (median [min, max] over
repetitions), so drifts in machine load hit both sides alike. Batch sizes 1 and 8 (heavy models, the recipe's
``bench.heavy``: 1 only). The CPU's int8 / bf16 instruction-set flags are printed beside the table: INT8 speed on
x86 depends on VNNI / AMX (zooinfer.cpu, zooinfer.int8).

Columns are (key, how to open) entries: the first is the baseline; another runtime adds its own entries (e.g.
``COLUMNS.append(("ov-bf16", variant("openvino-bf16")))``). A column that cannot run here is reported as skipped
with the reason. For each INT8 column the table notes how many Conv / Gemm / MatMul ONNX Runtime runs as int8 and
how many stayed fp32.

usage: python benchmarks/precision.py [--models dpn131 ...] [--columns ort-fp32 ort-int8 ...] [--quick]
                                      [--repeats 3] [--min-time 1.0] [--bs 1 8] [--calibration 8] [--canvas 1000]
Writes benchmarks/results/precision-<timestamp>.json, precision-latest.json and precision-latest.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lib"))

from zooinfer import bench, cpu, recipes, report, variants  # noqa: E402


@dataclass
class Context:
    """What a column is opened from: the model's recipe, its exported fp32 graph, the embedded sample."""

    recipe: Any
    sources: variants.Sources
    dataset: Any
    calibration: int


#: how to open a column: the Context -> a zooinfer.variants.Variant, or a Skipped with the reason
Opener = Callable[[Context], Any]


def variant(name: str) -> Opener:
    """A column that opens zooinfer variant ``name`` (zooinfer.variants.open_variant)."""

    def open_(ctx: Context) -> Any:
        return variants.open_variant(name, ctx.recipe, sources=ctx.sources, dataset=ctx.dataset,
                                     calibration=ctx.calibration)

    return open_


#: (key, how to open), the baseline first
COLUMNS: list[tuple[str, Opener]] = [
    ("ort-fp32", variant("onnxruntime")),
    ("ort-int8", variant("onnxruntime-int8")),  # uint8 activations + int8 weights on x86 (zooinfer.int8)
    ("ort-int8-s8s8", variant("onnxruntime-int8-s8s8")),  # int8 activations: fp32 convolutions remain on x86
    # OpenVINO (pip install -e ".[openvino]"; skipped with the install line without it): f32 set explicitly, bf16
    # where the CPU has it, NNCF INT8 from the same calibration images (zooinfer.openvino_variants)
    ("ov-fp32", variant("openvino")),
    ("ov-bf16", variant("openvino-bf16")),
    ("ov-int8", variant("openvino-int8")),
]


def _stats(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "min": float(np.min(values)), "max": float(np.max(values))}


def samples_of(recipe, dataset, n: int = 4) -> np.ndarray:
    """Up to ``n`` real preprocessed inputs of the recipe's input shape (N, C, H, W)."""
    return np.stack(bench.real_views(recipe, dataset, n))


def bench_model(name: str, columns: list[tuple[str, Opener]], args: argparse.Namespace) -> dict:
    """Open every column for model ``name`` and time them interleaved at each batch size."""
    extra = {n for n, _, _ in (recipes.get(name).notebook.extra if recipes.get(name).notebook else ())}
    r = recipes.get(name, **({"canvas": args.canvas} if "canvas" in extra else {}))  # PyramidBox's letterbox canvas
    ds = r.open_dataset(None)
    ctx = Context(r, variants.Sources(r), ds, args.calibration)
    opened, skipped, info, open_s = {}, {}, {}, {}
    for key, opener in columns:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # kernel warnings are in the variant's info and shown below
            v = opener(ctx)
        open_s[key] = round(time.perf_counter() - t0, 1)
        if isinstance(v, variants.Skipped):
            skipped[key] = v.reason
            continue
        opened[key] = v.session
        info[key] = {k: v.info.get(k) for k in ("kernel_summary", "kernel_warning", "activations", "weights",
                                                "reduce_range", "calibration_keys", "how") if v.info.get(k) is not None}
    base = columns[0][0]
    if base not in opened:
        raise SystemExit(f"{name}: the baseline column {base!r} cannot run here: {skipped.get(base)}")
    batch_src = samples_of(r, ds)
    sizes = [b for b in args.bs if not r.bench.heavy or b == 1] or [1]
    rows = []
    for bs in sizes:
        batch = bench.make_batch(batch_src, bs)
        ips: dict[str, list[float]] = {k: [] for k in opened}
        for _ in range(args.repeats):
            for key, sess in opened.items():  # every column on the same batch, in turn, within one repetition
                t = bench.time_batches(sess.run, batch, warmup=1, min_time=args.min_time, min_iters=2)
                ips[key].append(bench.summarize(t, bs)["throughput"])
        row = {"bs": bs, "ips": {k: _stats(v) for k, v in ips.items()},
               "vs_base": {k: _stats([a / b for a, b in zip(v, ips[base])]) for k, v in ips.items() if k != base}}
        rows.append(row)
        print(f"{name} bs{bs}: {base} {row['ips'][base]['median']:.2f} img/s; "
              + ", ".join(f"{k} x{s['median']:.2f}" for k, s in row["vs_base"].items()), flush=True)
    return {"model": name, "base": base, "speed": rows, "skipped": skipped, "info": info, "open_s": open_s}


def tables(results: list[dict], keys: list[str]) -> str:
    """The markdown table (ratios vs the baseline, median [min, max]), per-column notes and the CPU flags."""
    cells = []
    for res in results:
        base = res["base"]
        for row in res["speed"]:
            c = {"model": res["model"], "bs": row["bs"], f"{base} img/s": round(row["ips"][base]["median"], 2)}
            for k in keys[1:]:
                s = row["vs_base"].get(k)
                c[f"{k}/{base}"] = f"{s['median']:.2f} [{s['min']:.2f}, {s['max']:.2f}]" if s else "skipped"
            cells.append(c)
    notes = []
    for res in results:
        for k, i in res["info"].items():
            if i.get("kernel_summary"):
                notes.append(f"- {res['model']} `{k}` ({i.get('activations')} activations, {i.get('weights')} "
                             f"weights, reduce_range {i.get('reduce_range')}): {i['kernel_summary']}")
        for k, why in res["skipped"].items():
            notes.append(f"- {res['model']} `{k}` skipped: {why}")
    return "\n\n".join([f"**Throughput relative to {keys[0]} (pure inference, synthetic weights, median [min, max] "
                        "of interleaved repeats)**", report.markdown_table(cells),
                        *(["\n".join(notes)] if notes else []), cpu.isa_note()])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", help="models to run (default: all of the registry's)")
    p.add_argument("--columns", nargs="*", help=f"columns to run, the baseline first (default: all: "
                                                f"{', '.join(k for k, _ in COLUMNS)})")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repetitions per batch size (median, min, max)")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds per column per repetition")
    p.add_argument("--bs", type=int, nargs="*", default=[1, 8],
                   help="batch sizes (heavy models, the recipe's bench.heavy: 1 only)")
    p.add_argument("--calibration", type=int, default=8, help="INT8 calibration images (clipped to the sample)")
    p.add_argument("--canvas", type=int, default=None,
                   help="letterbox canvas of a model with a canvas option (PyramidBox; default 1000, --quick 256)")
    p.add_argument("--quick", action="store_true", help="2 repeats of 0.5 s (batch sizes kept), PyramidBox at 256")
    args = p.parse_args()
    if args.quick:
        args.repeats, args.min_time = min(args.repeats, 2), min(args.min_time, 0.5)
    args.canvas = args.canvas or (256 if args.quick else 1000)
    known = dict(COLUMNS)
    keys = args.columns or list(known)
    unknown = [k for k in keys if k not in known]
    if unknown:
        p.error(f"unknown column(s) {', '.join(unknown)}; known: {', '.join(known)}")
    models = args.models or list(recipes.NAMES)
    bad = [m for m in models if m not in recipes.NAMES]
    if bad:
        p.error(f"unknown model(s) {', '.join(bad)}; known: {', '.join(recipes.NAMES)}")
    print(cpu.isa_note(), flush=True)
    columns = [(k, known[k]) for k in keys]
    results = [bench_model(m, columns, args) for m in models]
    doc = {"time": dt.datetime.now().isoformat(timespec="seconds"), "environment": report.environment(),
           "cpu": {"name": cpu.cpu_name(), "flags": list(cpu.isa_flags()), "note": cpu.isa_note()},
           "args": vars(args), "columns": keys, "results": results}
    text = tables(results, keys)
    bench.save_results(HERE / "results", "precision-", doc, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
