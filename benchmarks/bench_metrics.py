#!/usr/bin/env python3
"""Speed of the WIDER FACE, Market-1501 and COCO metrics on full-size synthetic inputs.

WIDER FACE val: 61 events, 3,226 images, ~39,700 faces (skewed: most images have a few faces, some hundreds),
~400,000 detections (hits jittered around faces, duplicates, false positives, at most 750 per image as PyramidBox
writes them). Timed: ``evaluate`` from the in-memory dict (ground truth loaded from .mat files each time, as a user
call does), from a preloaded ground truth, and from a submission folder (3,226 files read and parsed).
Market-1501: a 3,368 x 15,913 float32 distance matrix (751 identities, distractors, same-camera positives); timed:
``reid.evaluate`` and, side by side, the full-argsort ranking it replaced (``_block_stats_argsort`` over the same
blocks; the two must give the same bits, checked); optionally ``pairwise_distance`` on features of ``--feature-dim``
values (the guide's 12,288 needs ~1 GB of features: off by default).
COCO val: 5,000 images, ~36,000 objects, 100 detections per image (500,000; ``synthetic_coco``); timed:
``CocoAccumulator.compute()`` (what a run does at its end: loadRes + evaluate + accumulate + summarize) with
pycocotools and with faster-coco-eval (when installed), their ratio, and how their 12 statistics compare (bit-equal
count, largest difference; see metrics/coco.py for the one rounding in which they differ). pycocotools takes
1-2 minutes per run: ``--coco-repeats`` (default 1) applies to it, ``--repeats`` to faster-coco-eval.

usage: python benchmarks/bench_metrics.py [--repeats 3] [--coco-repeats 1] [--feature-dim 0] [--skip-files]
                                          [--skip-wider] [--skip-coco] [--coco-images 5000]
Writes benchmarks/results/metrics_<timestamp>.json and metrics_latest.json, prints a markdown table (median, min, max
seconds over the repeats) and the ratios. Nothing here is timed in the unit tests.
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
N_COCO_IMAGES, COCO_DETS_PER_IMAGE = 5000, 100


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


def synthetic_coco(seed: int = 0, n_images: int = N_COCO_IMAGES, dets_per_image: int = COCO_DETS_PER_IMAGE):
    """(COCO ground-truth dict, (N, 7) float64 detection rows ``[image_id, x, y, w, h, score, category_id]``) of
    COCO-val size: ``n_images`` images with COCO-like ids (sparse, shuffled), the 80 category ids, ~7 objects per
    image (1% of images without any) of every area range (small / medium / large by the ``area`` field, which is
    a segment area below ``w * h`` as in the real files; 1% crowd), and exactly ``dets_per_image`` detections per
    image: jittered hits (some with the wrong class), near-duplicates and false positives, float32 scores with a
    share of exact ties (scores rounded to 2 decimals), boxes of exactly 32 x 32 and 96 x 96 (the area-range
    borders) and a few zero-width boxes. Deterministic for a seed; nothing is written to disk."""
    from zooinfer.metrics.coco import COCO80_TO_91

    rng = np.random.default_rng(seed)
    cats = np.asarray(COCO80_TO_91)
    cat_p = rng.dirichlet(np.full(len(cats), 0.6))  # skewed class frequencies (person-heavy, as COCO)
    img_ids = np.sort(rng.choice(np.arange(1, 600_000), n_images, replace=False))
    widths = rng.choice([640, 480, 500, 427, 612], n_images)
    heights = rng.choice([480, 640, 375, 333, 612], n_images)
    images = [{"id": int(i), "width": int(w), "height": int(h), "file_name": f"{int(i):012d}.jpg"}
              for i, w, h in zip(img_ids, widths, heights)]
    anns, rows = [], []
    ann_id = 1
    for k in range(n_images):
        W, H = float(widths[k]), float(heights[k])
        n_gt = 0 if rng.random() < 0.01 else int(rng.poisson(7.3))
        side = np.exp(rng.uniform(np.log(4), np.log(min(W, H) * 0.95), n_gt))  # log-uniform: all area ranges
        aspect = np.exp(rng.normal(0, 0.4, n_gt))
        w = np.minimum(np.round(side * aspect, 2), W - 1)
        h = np.minimum(np.round(side / aspect, 2), H - 1)
        x = np.round(rng.uniform(0, W - w), 2)
        y = np.round(rng.uniform(0, H - h), 2)
        border = rng.random(n_gt) < 0.03  # exactly at the 32^2 / 96^2 borders
        edge = rng.choice([32.0, 96.0], n_gt)
        w, h = np.where(border, edge, w), np.where(border, edge, h)
        x, y = np.minimum(x, W - w), np.minimum(y, H - h)
        area = np.where(border, w * h, np.round(w * h * rng.uniform(0.4, 0.9, n_gt), 3))
        c = rng.choice(cats, n_gt, p=cat_p)
        crowd = rng.random(n_gt) < 0.01
        for j in range(n_gt):
            anns.append({"id": ann_id, "image_id": int(img_ids[k]), "category_id": int(c[j]),
                         "bbox": [float(x[j]), float(y[j]), float(w[j]), float(h[j])], "area": float(area[j]),
                         "iscrowd": int(crowd[j])})
            ann_id += 1
        # hits: 1-4 jittered copies of each object (relative jitter: a spread of IoUs around the thresholds)
        reps = rng.integers(1, 5, n_gt)
        src = np.repeat(np.arange(n_gt), reps)
        scale = rng.uniform(0.02, 0.25, len(src))[:, None]
        boxes = np.column_stack([x, y, w, h])[src] + rng.normal(0, 1, (len(src), 4)) * scale * \
            np.column_stack([w, h, w, h])[src]
        hit_cat = np.where(rng.random(len(src)) < 0.1, rng.choice(cats, len(src)), c[src])
        hit_score = np.clip(rng.normal(0.6, 0.2, len(src)), 0.01, 1.0)
        n_fp = max(0, dets_per_image - len(src))
        fp_side = np.exp(rng.uniform(np.log(3), np.log(min(W, H) * 0.9), n_fp))
        fps = np.column_stack([rng.uniform(0, W * 0.9, n_fp), rng.uniform(0, H * 0.9, n_fp), fp_side,
                               fp_side * np.exp(rng.normal(0, 0.4, n_fp))])
        boxes = np.vstack([boxes, fps])
        score = np.concatenate([hit_score, rng.beta(1.2, 6.0, n_fp)])
        cat = np.concatenate([hit_cat, rng.choice(cats, n_fp, p=cat_p)])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], 0.5)
        boxes = np.round(boxes, 2)
        special = rng.random(len(boxes))
        boxes[special < 0.01, 2:] = 32.0  # exactly on the small/medium border
        boxes[(special >= 0.01) & (special < 0.02), 2:] = 96.0  # medium/large
        boxes[(special >= 0.02) & (special < 0.025), 2] = 0.0  # degenerate
        score = score.astype(np.float32).astype(np.float64)  # float32 scores, as a model writes them
        tie = rng.random(len(score)) < 0.2
        score[tie] = np.round(score[tie], 2)  # exact ties (the order among them is the results' order)
        keep = np.argsort(-score, kind="stable")[:dets_per_image]
        keep = keep[rng.permutation(len(keep))]
        rows.append(np.column_stack([np.full(len(keep), img_ids[k], np.float64), boxes[keep], score[keep],
                                     cat[keep]]))
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": int(c), "name": f"class{int(c)}", "supercategory": "x"} for c in cats]}
    return gt, np.concatenate(rows)


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
    ap.add_argument("--skip-wider", action="store_true", help="do not time WIDER FACE")
    ap.add_argument("--skip-coco", action="store_true", help="do not time COCO")
    ap.add_argument("--coco-repeats", type=int, default=1, help="repeats of the (slow) pycocotools run")
    ap.add_argument("--coco-images", type=int, default=N_COCO_IMAGES)
    args = ap.parse_args()
    rows, ratios = [], []
    load_before = os.getloadavg()
    if not args.skip_wider:
        _bench_wider(args, rows)
    _bench_reid(args, rows, ratios)
    if not args.skip_coco:
        _bench_coco(args, rows, ratios)
    print("\n| metric | size | median s | min s | max s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['metric']} | {r['size']} | {r['median_s']:.2f} | {r['min_s']:.2f} | {r['max_s']:.2f} |")
    if ratios:
        print("\n| comparison | size | ratio of medians (slower / faster) | results |\n|---|---|---|---|")
        for r in ratios:
            print(f"| {r['comparison']} | {r['size']} | {r['ratio']:.1f}x | {r['results']} |")
    out = {"timestamp": dt.datetime.now().isoformat(timespec="seconds"), "machine": platform.platform(),
           "cpu_count": os.cpu_count(), "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
           "numpy": np.__version__, "repeats": args.repeats, "coco_repeats": args.coco_repeats, "rows": rows,
           "ratios": ratios}
    res_dir = HERE / "results"
    res_dir.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for name in (f"metrics_{stamp}.json", "metrics_latest.json"):
        (res_dir / name).write_text(json.dumps(out, indent=1))
    print(f"\nwrote {res_dir / f'metrics_{stamp}.json'}")
    return 0


def _bench_wider(args, rows: list) -> None:
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


def _reid_argsort_stats(distmat, q_pids, g_pids, q_camids, g_camids):
    """The ranking as it was before the sorted-values path: ``_block_stats_argsort`` over the same blocks."""
    d, (qp, gp, qc, gc) = reid._check(distmat, q_pids, g_pids, q_camids, g_camids)
    first, ap = np.empty(d.shape[0], np.int64), np.empty(d.shape[0])
    for lo, hi in reid._blocks(*d.shape):
        first[lo:hi], ap[lo:hi] = reid._block_stats_argsort(d[lo:hi], qp[lo:hi], qc[lo:hi], gp, gc)
    return first, ap


def _bench_reid(args, rows: list, ratios: list) -> None:
    t0 = time.perf_counter()
    market = synthetic_market()
    print(f"synthetic Market-1501: {market[0].shape[0]} x {market[0].shape[1]} "
          f"(made in {time.perf_counter() - t0:.1f} s)", flush=True)
    size = f"{N_QUERY} x {N_GALLERY}"
    # interleaved (new, argsort, new, argsort, ...): a shared machine's load hits both alike
    new_t, old_t, res, fast, slow = [], [], None, None, None
    for _ in range(args.repeats):
        t1 = time.perf_counter()
        res = reid.evaluate(*market)
        new_t.append(time.perf_counter() - t1)
        fast = reid._stats(*market)[:2]
        t1 = time.perf_counter()
        slow = _reid_argsort_stats(*market)
        old_t.append(time.perf_counter() - t1)
    same = np.array_equal(fast[0], slow[0]) and np.array_equal(np.nan_to_num(fast[1], nan=-7).view(np.int64),
                                                                np.nan_to_num(slow[1], nan=-7).view(np.int64))
    assert same, "re-ID: the sorted-values ranking and the argsort ranking differ"
    new, old = _summary(new_t), _summary(old_t)
    rows.append({"metric": "reid.evaluate(distmat)", "size": size, **new,
                 "result": {k: res[k] for k in ("top1", "top5", "top10", "mAP", "n_valid_queries")}})
    rows.append({"metric": "reid ranking before (full argsort per row)", "size": size, **old})
    ratios.append({"comparison": "re-ID: argsort ranking / reid.evaluate", "size": size,
                   "ratio": old["median_s"] / new["median_s"],
                   "results": "bit-identical CMC positions and APs" if same else "DIFFER"})
    del market
    if args.feature_dim:
        rng = np.random.default_rng(1)
        q = rng.standard_normal((N_QUERY, args.feature_dim), dtype=np.float32)
        g = rng.standard_normal((N_GALLERY, args.feature_dim), dtype=np.float32)
        timing, _ = _time(lambda: reid.pairwise_distance(q, g), args.repeats)
        rows.append({"metric": f"reid.pairwise_distance({args.feature_dim}-d)", "size": size, **timing})


def _summary(times: list[float]) -> dict:
    return {"median_s": float(np.median(times)), "min_s": float(np.min(times)), "max_s": float(np.max(times)),
            "runs": len(times)}


def _bench_coco(args, rows: list, ratios: list) -> None:
    import warnings

    from zooinfer.metrics import coco

    t0 = time.perf_counter()
    gt, dets = synthetic_coco(n_images=args.coco_images)
    size = f"{len(gt['images'])} images, {len(dets)} dets"
    print(f"synthetic COCO val: {size}, {len(gt['annotations'])} objects (made in {time.perf_counter() - t0:.1f} s)",
          flush=True)
    evaluators = ["pycocotools"]
    try:
        coco.resolve_evaluator("faster-coco-eval")
        evaluators.append("faster-coco-eval")
    except Exception as e:  # noqa: BLE001
        print(f"faster-coco-eval not timed: {e}")
    results, medians = {}, {}
    for name in evaluators:
        acc = coco.CocoAccumulator(gt, evaluator=name)
        acc._rows.append(dets)  # as if streamed: one block of rows (update() per image only slices them)
        acc.predicted.update(im["id"] for im in gt["images"])
        times = []
        for _ in range(args.coco_repeats if name == "pycocotools" else args.repeats):
            t1 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                results[name] = acc.compute()
            times.append(time.perf_counter() - t1)
            print(f"  {name}: {times[-1]:.1f} s", flush=True)
        timing = _summary(times)
        medians[name] = timing["median_s"]
        rows.append({"metric": f"CocoAccumulator.compute() ({name} {coco.evaluator_version(name)})", "size": size,
                     **timing, "result": {k: results[name][k] for k in coco.STAT_NAMES}})
    if len(results) == 2:
        a, b = results["pycocotools"], results["faster-coco-eval"]
        equal = [k for k in coco.STAT_NAMES if a[k] == b[k]]
        worst = max(abs(a[k] - b[k]) for k in coco.STAT_NAMES)
        ratios.append({"comparison": "COCO: pycocotools / faster-coco-eval", "size": size,
                       "ratio": medians["pycocotools"] / medians["faster-coco-eval"],
                       "results": f"{len(equal)}/12 statistics bit-equal, largest difference {worst:.1e}",
                       "bit_equal": equal, "max_abs_diff": worst})

if __name__ == "__main__":
    sys.exit(main())
