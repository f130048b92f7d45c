#!/usr/bin/env python3
"""CPU speed of each precision variant relative to fp32, for every model, in one run (plus agreement).

For every model (synthetic weights, embedded-sample inputs), ONNX Runtime on this CPU:
  fp32 (the exported graph), fp16 (``onnxruntime-fp16``: the float16 graph simulated with explicit roundings, what
  zooinfer.compare uses for accuracy), fp16-file (``onnxruntime-fp16-file``: the converted float16 file as ONNX
  Runtime CPU runs it), int8 (``onnxruntime-int8``: static QDQ per-channel quantisation calibrated on the embedded
  images). Pure inference, paired and interleaved: each repetition times fp32 and then every variant on the same
  batch, and the ratio variant/fp32 is taken within the repetition (median [min, max] over repetitions), so drifts
  in machine load hit both sides alike. With ``--agreement`` (default) it also runs ``zooinfer.compare`` over the
  embedded sample and prints each variant's per-sample agreement with fp32.

usage: python benchmarks/variants.py [--models dpn131 ...] [--quick] [--repeats 3] [--bs 1 8] [--calibration 8]
                                     [--min-time 1.0] [--no-agreement] [--canvas 256]
Writes benchmarks/results/variants-<timestamp>.json and variants-latest.json, prints markdown tables.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lib"))

from zooinfer import bench, compare, recipes, report, variants  # noqa: E402
from zooinfer.backends import open_session  # noqa: E402
from zooinfer.export import export_onnx  # noqa: E402
from zooinfer.models import build_model  # noqa: E402

VARIANTS = ("fp16", "fp16-file", "int8")
NAMES = {"fp16": "onnxruntime-fp16", "fp16-file": "onnxruntime-fp16-file", "int8": "onnxruntime-int8"}


def _stats(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "min": float(np.min(values)), "max": float(np.max(values))}


def samples_of(recipe, dataset, n: int = 4) -> np.ndarray:
    """Up to ``n`` real preprocessed inputs of the recipe's input shape (N, C, H, W)."""
    return np.stack(bench.real_views(recipe, dataset, n))


def bench_model(name: str, args) -> dict:
    extra = {n for n, _, _ in (recipes.get(name).notebook.extra if recipes.get(name).notebook else ())}
    options = {"canvas": args.canvas} if "canvas" in extra else {}  # a letterbox-canvas option (PyramidBox's)
    r = recipes.get(name, **options)
    ds = r.open_dataset(None)
    t0 = time.perf_counter()
    model = build_model(name)
    onnx_path = export_onnx(r, model)
    made = {"fp16": variants.fp16_simulation_onnx(onnx_path), "fp16-file": variants.fp16_onnx(onnx_path)}
    made["int8"], int8_info = variants.int8_onnx(r, onnx_path, ds, calibration=args.calibration)
    prep_s = time.perf_counter() - t0
    sessions = {"fp32": open_session("onnxruntime", onnx_path=onnx_path)}
    sessions.update({k: open_session("onnxruntime", onnx_path=p) for k, p in made.items()})
    samples = samples_of(r, ds)
    sizes = [b for b in args.bs if not r.bench.heavy or b == 1] or [1]  # heavy: seconds per image, bs 1 only
    rows = []
    for bs in sizes:
        batch = bench.make_batch(samples, bs)
        ips = {k: [] for k in sessions}
        for _ in range(args.repeats):
            for k, s in sessions.items():  # fp32 first, then each variant: interleaved within a repetition
                t = bench.time_batches(s.run, batch, warmup=1, min_time=args.min_time, min_iters=2)
                ips[k].append(bench.summarize(t, bs)["throughput"])
        row = {"bs": bs, "fp32_ips": _stats(ips["fp32"])}
        for k in VARIANTS:
            row[f"{k}_ips"] = _stats(ips[k])
            row[f"{k}_vs_fp32"] = _stats([a / b for a, b in zip(ips[k], ips["fp32"])])
        rows.append(row)
        print(f"{name} bs{bs}: " + ", ".join(f"{k} x{row[f'{k}_vs_fp32']['median']:.2f}" for k in VARIANTS),
              flush=True)
    del sessions
    out = {"model": name, "options": options, "onnx": str(onnx_path), "prepare_s": prep_s, "speed": rows,
           "files_mb": {k: round(Path(p).stat().st_size / 2**20, 1) for k, p in {"fp32": onnx_path, **made}.items()},
           "calibration_keys": int8_info["calibration_keys"], "calibration_note": int8_info.get("calibration_note")}
    if args.agreement:
        limit = args.limit if args.limit else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cmp = compare.compare(r, ds, [NAMES[k] for k in VARIANTS], limit=limit, calibration=args.calibration,
                                  onnx_path=onnx_path, model=model)
        out["agreement"] = {res.name: {**res.summary, **{f"delta_{k}": v for k, v in res.delta.items()
                                                           if k in r.headline}}
                            for res in cmp.results if res.name != cmp.reference}
        out["n_compared"] = len(cmp.samples)
    return out


KEYS = {"classification": ("top1_changed", "mean_top5_overlap", "max_rel_logit_err"),
        "detection": ("mean_agreement", "images_fully_matched", "ref_dets", "matched", "new"),
        "face_detection": ("mean_agreement", "images_fully_matched", "ref_dets", "matched", "new"),
        "reid": ("min_cosine", "mean_cosine", "rank1_changed")}


def tables(results: list[dict]) -> str:
    speed = []
    for r in results:
        for row in r["speed"]:
            cells = {"model": r["model"], "bs": row["bs"], "fp32 img/s": round(row["fp32_ips"]["median"], 2)}
            for k in VARIANTS:
                s = row[f"{k}_vs_fp32"]
                cells[f"{k}/fp32"] = f"{s['median']:.2f} [{s['min']:.2f}, {s['max']:.2f}]"
            speed.append(cells)
    parts = ["**CPU speed relative to fp32 (pure inference, ONNX Runtime, median [min, max] of paired repeats)**",
             report.markdown_table(speed)]
    agree = []
    for r in results:
        task = recipes.get(r["model"]).task
        for name, s in (r.get("agreement") or {}).items():
            agree.append({"model": r["model"], "variant": name, "samples": s.get("n"),
                          **{k: (round(s[k], 4) if isinstance(s.get(k), float) else s.get(k)) for k in KEYS[task]},
                          "non-finite": s.get("nonfinite_samples")})
    if agree:
        parts += ["**Per-sample agreement with fp32 on the embedded sample (synthetic weights)**",
                  report.markdown_table(agree)]
    return "\n\n".join(parts)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", help="models to run (default: all of the registry's)")
    p.add_argument("--repeats", type=int, default=3, help="paired repetitions per batch size (median, min, max)")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds per variant per repetition")
    p.add_argument("--bs", type=int, nargs="*", default=[1, 8], help="batch sizes (heavy models, the recipe's bench.heavy: 1 only)")
    p.add_argument("--calibration", type=int, default=8, help="INT8 calibration images (clipped to the sample)")
    p.add_argument("--canvas", type=int, default=None, help="letterbox canvas of a model with a canvas option (PyramidBox; default 1000, --quick 256)")
    p.add_argument("--limit", type=int, default=None, help="samples in the agreement run (default: all embedded)")
    p.add_argument("--no-agreement", dest="agreement", action="store_false", help="speed only")
    p.add_argument("--quick", action="store_true", help="bs 1 only, 2 repeats, 0.5 s, PyramidBox at 256")
    args = p.parse_args()
    if args.quick:
        args.bs, args.repeats, args.min_time = [1], min(args.repeats, 2), min(args.min_time, 0.5)
    args.canvas = args.canvas or (256 if args.quick else 1000)
    models = args.models or list(recipes.NAMES)
    results = [bench_model(m, args) for m in models]
    doc = {"time": dt.datetime.now().isoformat(timespec="seconds"), "environment": report.environment(),
           "args": vars(args), "results": results}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    report.write_json(out / f"variants-{stamp}.json", doc)
    report.write_json(out / "variants-latest.json", doc)
    text = tables(results)
    (out / "variants-latest.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
