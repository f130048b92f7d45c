#!/usr/bin/env python3
"""Speed of the WIDER FACE and Market-1501 metrics on full-size synthetic inputs.

WIDER FACE val: 61 events, 3,226 images, ~39,700 faces (skewed: most images have a few faces, some hundreds),
~400,000 detections (hits jittered around faces, duplicates, false positives, at most 750 per image as PyramidBox
writes them). Timed: ``evaluate`` from the in-memory dict (ground truth loaded from .mat files each time, as a user
call does), from a preloaded ground truth, and from a submission folder (3,226 files read and parsed).
Market-1501: a 3,368 x 15,913 float32 distance matrix (751 identities, distractors, same-camera positives); timed:
``reid.evaluate``; optionally ``pairwise_distance`` on features of ``--feature-dim`` values (the guide's 12,288 needs
~1 GB of features: off by default).

usage: python benchmarks/bench_metrics.py [--repeats 3] [--feature-dim 0] [--skip-files]
Writes benchmarks/results/metrics_<timestamp>.json and metrics_latest.json, prints a markdown table (median, min, max
seconds over the repeats). Nothing here is timed in the unit tests.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lib"))

from zooinfer.metrics import reid, widerface  # noqa: E402

N_EVENTS, N_IMAGES, N_QUERY, N_GALLERY = 61, 3226, 3368, 15913


def synthetic_wider(seed: int = 0, n_images: int = N_IMAGES, n_events: int = N_EVENTS):
    """(entries for write_ground_truth, {(event, image): (K, 5) x y w h score}) of WIDER-val size."""
    rng = np.random.default_rng(seed)
    events = [f"{i}--Event_{i}" for i in range(n_events)]
    ev_of = np.sort(rng.integers(0, n_events, n_images))
    entries: dict = {ev: {} for ev in events}
    preds = {}
    for i in range(n_images):
        ev = events[ev_of[i]]
        name = f"{ev_of[i]}_Event_{ev_of[i]}_img_{i}"
        n = int(min(1000, np.ceil(rng.lognormal(1.85, 1.1)))) if rng.random() > 0.003 else 0
        size = np.exp(rng.uniform(np.log(5), np.log(300), n))
        w, h = np.round(size * rng.uniform(0.75, 1.0, n)), np.round(size * rng.uniform(1.0, 1.3, n))
        x, y = np.round(rng.uniform(0, 1024 - w)), np.round(rng.uniform(0, 768 - h))
        boxes = np.column_stack([x, y, w, h])
        valid = rng.random(n) > 0.05
        entries[ev][name] = {"boxes": boxes, "hard": np.flatnonzero(valid),
                             "medium": np.flatnonzero(valid & (size >= 10)),
                             "easy": np.flatnonzero(valid & (size >= 30))}
        # ~10 detections per face (guide's flip + voting leaves several near-duplicates), plus false positives
        reps = rng.poisson(np.where(size >= 10, 9.0, 3.0))
        src = np.repeat(np.arange(n), reps)
        jit = rng.normal(0, 0.1, (len(src), 4)) * np.column_stack([w[src], h[src], w[src], h[src]])
        hits = boxes[src] + jit
        score_hits = np.clip(rng.normal(np.where(size[src] >= 20, 0.7, 0.3), 0.2), 0.05, 1.0)
        n_fp = int(rng.poisson(30))
        fp_size = np.exp(rng.uniform(np.log(5), np.log(200), n_fp))
        fps = np.column_stack([rng.uniform(0, 1000, n_fp), rng.uniform(0, 750, n_fp), fp_size, fp_size * 1.2])
        dets = np.column_stack([np.vstack([hits, fps]), np.concatenate([score_hits, rng.uniform(0.05, 0.6, n_fp)])])
        dets = dets[np.argsort(-dets[:, 4], kind="stable")][:750]
        preds[(ev, name)] = dets[rng.permutation(len(dets))]
    return {ev: v for ev, v in entries.items() if v}, preds


def synthetic_market(seed: int = 0, n_query: int = N_QUERY, n_gallery: int = N_GALLERY):
    """(distmat float32 (m, n), q_pids, g_pids, q_cams, g_cams) of Market-1501 size."""
    rng = np.random.default_rng(seed)
    n_ids, n_distractors = 751, 2793
    q_pids = rng.integers(1, n_ids + 1, n_query)
    g_pids = np.concatenate([rng.integers(1, n_ids + 1, n_gallery - n_distractors), np.zeros(n_distractors, int)])
    q_cams, g_cams = rng.integers(0, 6, n_query), rng.integers(0, 6, n_gallery)
    dist = rng.normal(8.0, 1.2, (n_query, n_gallery)).astype(np.float32)
    same = q_pids[:, None] == g_pids[None, :]
    dist[same] = rng.normal(4.3, 1.2, int(same.sum())).astype(np.float32)  # positives overlap the negatives' tail
    return dist, q_pids, g_pids, q_cams, g_cams


def _time(fn, repeats: int) -> tuple[dict, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": float(np.median(times)), "min_s": float(np.min(times)), "max_s": float(np.max(times)),
            "runs": len(times)}, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--feature-dim", type=int, default=0, help="also time pairwise_distance with this feature size")
    ap.add_argument("--skip-files", action="store_true", help="do not time the submission-folder path")
    args = ap.parse_args()
    rows = []
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    entries, preds = synthetic_wider()
    n_faces = sum(len(v["boxes"]) for e in entries.values() for v in e.values())
    n_dets = sum(len(v) for v in preds.values())
    print(f"synthetic WIDER val: {len(preds)} images, {n_faces} faces, {n_dets} detections "
          f"(made in {time.perf_counter() - t0:.1f} s)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        gt_dir = Path(tmp) / "gt"
        widerface.write_ground_truth(gt_dir, entries)
        gt = widerface.load_ground_truth(gt_dir)
        size = f"{len(preds)} images, {n_dets} dets"
        timing, res = _time(lambda: widerface.evaluate(preds, gt_dir), args.repeats)
        rows.append({"metric": "widerface.evaluate(dict, gt_dir)", "size": size, **timing,
                     "result": {k: res[k] for k in widerface.SETTINGS}})
        timing, res2 = _time(lambda: widerface.evaluate(preds, gt), args.repeats)
        rows.append({"metric": "widerface.evaluate(dict, loaded gt)", "size": size, **timing})
        assert all(res[k] == res2[k] for k in widerface.SETTINGS)
        if not args.skip_files:
            folder = Path(tmp) / "pred"
            t1 = time.perf_counter()
            for (ev, name), d in preds.items():
                widerface.write_submission(folder, ev, name, d)
            write_s = time.perf_counter() - t1
            timing, res3 = _time(lambda: widerface.evaluate(folder, gt_dir), args.repeats)
            rows.append({"metric": "widerface.evaluate(folder, gt_dir)", "size": size, **timing,
                         "write_submission_s": write_s})
            assert all(res[k] == res3[k] for k in widerface.SETTINGS), (res, res3)
    del preds, entries
    t0 = time.perf_counter()
    market = synthetic_market()
    print(f"synthetic Market-1501: {market[0].shape[0]} x {market[0].shape[1]} "
          f"(made in {time.perf_counter() - t0:.1f} s)", flush=True)
    timing, res = _time(lambda: reid.evaluate(*market), args.repeats)
    rows.append({"metric": "reid.evaluate(distmat)", "size": f"{N_QUERY} x {N_GALLERY}", **timing,
                 "result": {k: res[k] for k in ("top1", "top5", "top10", "mAP", "n_valid_queries")}})
    del market
    if args.feature_dim:
        rng = np.random.default_rng(1)
        q = rng.standard_normal((N_QUERY, args.feature_dim), dtype=np.float32)
        g = rng.standard_normal((N_GALLERY, args.feature_dim), dtype=np.float32)
        timing, _ = _time(lambda: reid.pairwise_distance(q, g), args.repeats)
        rows.append({"metric": f"reid.pairwise_distance({args.feature_dim}-d)", "size": f"{N_QUERY} x {N_GALLERY}",
                     **timing})
    print("\n| metric | size | median s | min s | max s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['metric']} | {r['size']} | {r['median_s']:.2f} | {r['min_s']:.2f} | {r['max_s']:.2f} |")
    out = {"timestamp": dt.datetime.now().isoformat(timespec="seconds"), "machine": platform.platform(),
           "cpu_count": os.cpu_count(), "load_avg_before": load_before, "numpy": np.__version__,
           "repeats": args.repeats, "rows": rows}
    res_dir = HERE / "results"
    res_dir.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for name in (f"metrics_{stamp}.json", "metrics_latest.json"):
        (res_dir / name).write_text(json.dumps(out, indent=1))
    print(f"\nwrote {res_dir / f'metrics_{stamp}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
