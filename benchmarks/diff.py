#!/usr/bin/env python3
"""Speed of ``zooinfer diff`` at full COCO size: two SSD-ResNet34 run folders of 5,000 images x 100 detections.

Builds a COCO 2017-layout data root (``annotations/instances_val2017.json`` from ``bench_metrics.synthetic_coco``:
5,000 images, ~36,000 objects, 80 categories; an empty ``val2017/``: a diff reads no image) and two run folders
whose stored predictions (``predictions/``, written by ``store.PredictionStore`` as a run writes them) hold 100
detections per image: run A the synthetic detections, run B the same with every score jittered (sd 0.02) on a
third of the images and 3% of the detections dropped (every image then goes through the matching). Then times
``zooinfer.diff.diff_runs(A, B, max_drop=0.5)``: both runs' 12 COCO statistics with 200 paired bootstrap resamples,
per-category AP, the changed images, speed and manifest differences. The goal (issue 24): under 60 s on 2 cores.

usage: python benchmarks/diff.py [--images 5000] [--dets 100] [--quick] [--sequential]
``--quick``: 500 images (seconds); ``--sequential``: both runs scored in this process (no second process).
Writes benchmarks/results/diff_<timestamp>.json and diff_latest.json and prints the timings and the machine's CPU
flags. Nothing here is timed in the unit tests.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lib"))
sys.path.insert(0, str(HERE))

from bench_metrics import synthetic_coco  # noqa: E402

MODEL = "ssd_resnet34"


def data_root(folder: Path, gt: dict) -> Path:
    """A COCO 2017 val layout with the synthetic annotation file (every object gets the fields the reader needs)."""
    (folder / "val2017").mkdir(parents=True)
    (folder / "annotations").mkdir()
    for a in gt["annotations"]:
        a.setdefault("segmentation", [])
    (folder / "annotations" / "instances_val2017.json").write_text(json.dumps(gt))
    return folder


def make_run(folder: Path, root: Path, predictions: dict, throughput: float) -> Path:
    """A finished run folder of ``MODEL`` over ``root``: its stored ``predictions`` ({key: (K, 7) rows}) and a
    metrics.json with the fields a diff reads."""
    from zooinfer import report
    from zooinfer.config import RunConfig
    from zooinfer.evaluation import run_fingerprint
    from zooinfer.store import PredictionStore

    config = RunConfig.from_parameters({"model": MODEL, "data_root": str(root), "progress": False})
    recipe = config.recipe()
    dataset = recipe.open_dataset(str(root))
    data = config.select(dataset)
    store = PredictionStore.create(folder, run_fingerprint(config, recipe, dataset, data, None))
    for s in data:
        store.add(s.key, predictions[s.key])
    store.close()
    report.write_json(folder / "metrics.json", {
        "model": MODEL, "parameters": config.parameters(), "skipped": {"count": 0, "images": []},
        "throughput": [{"backend": "onnxruntime", "bs": bs, "throughput": throughput * f, "unstable": False}
                       for bs, f in ((1, 1.0), (8, 1.3))],
        "end_to_end": {"images_per_s": throughput * 0.8, "wall_s": 1.0, "bs": 1},
        "stage_timings": [{"stage": "infer", "ms_per_item": 1000 / throughput}],
        "environment": report.environment(), "checkpoint": {"md5": None}})
    return folder


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--dets", type=int, default=100)
    p.add_argument("--quick", action="store_true", help="500 images")
    p.add_argument("--sequential", action="store_true", help="score both runs in this process")
    args = p.parse_args()
    n_images = 500 if args.quick else args.images

    from zooinfer.cpu import isa_note
    from zooinfer.diff import diff_runs
    from zooinfer.pipeline import available_cpus

    t0 = time.perf_counter()
    gt, rows = synthetic_coco(n_images=n_images, dets_per_image=args.dets)
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory(prefix="zooinfer-diff-bench-") as tmp:
        tmp = Path(tmp)
        root = data_root(tmp / "coco", gt)
        names = {int(im["id"]): Path(im["file_name"]).stem for im in gt["images"]}
        split = np.split(rows, np.flatnonzero(np.diff(rows[:, 0])) + 1)
        preds_a = {names[int(r[0, 0])]: r for r in split}
        preds_b = {}
        for key, r in preds_a.items():
            r = r.copy()
            if rng.random() < 1 / 3:
                r[:, 5] = np.clip(r[:, 5] + rng.normal(0, 0.02, len(r)), 0.001, 1.0)
            preds_b[key] = r[rng.random(len(r)) >= 0.03]
        a = make_run(tmp / MODEL / "run-a", root, preds_a, 20.0)
        b = make_run(tmp / MODEL / "run-b", root, preds_b, 19.0)
        built = time.perf_counter() - t0
        t1 = time.perf_counter()
        d = diff_runs(a, b, max_drop=0.5, max_slowdown=0.1, parallel=False if args.sequential else None)
        seconds = time.perf_counter() - t1
    n_dets = int(sum(len(r) for r in preds_a.values()))
    doc = {"when": dt.datetime.now().isoformat(timespec="seconds"), "cpus": available_cpus(), "cpu": isa_note(),
           "load_average_1min": round(os.getloadavg()[0], 2),
           "images": d.samples, "detections_a": n_dets, "diff_s": round(seconds, 2), "parts_s": d.seconds,
           "parallel": not args.sequential, "build_s": round(built, 2), "changed_images": len(d.changed),
           "AP_change_pts": round(100 * d.metrics[0]["delta"], 3),
           "AP_interval_pts": [round(100 * v, 3) for v in d.metrics[0]["interval"]], "verdict": d.verdict["line"],
           "goal_s": 60}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for name in (f"diff_{stamp}.json", "diff_latest.json"):
        (out / name).write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
