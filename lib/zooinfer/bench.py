"""Timing of pure inference per batch size (the figures every report and ``benchmarks/`` show: one code path).

Each batch size: warm-up runs, then timed runs until both ``min_time`` seconds and ``min_iters`` runs are reached
(capped at ``max_iters``). Latency percentiles are per batch; throughput = samples / summed latency. A coefficient of
variation above ``UNSTABLE_CV`` marks the row unstable (a shared or throttled machine).

The sweep times distinct real batches in turn (:func:`distinct_batches`: the given samples cycled, so a backend that
caches by input cannot look faster than it is) and then checks the timed outputs (:func:`check_timed_outputs`): the
outputs of the first pass over the distinct batches must equal a fresh untimed run of the same batches, and (where
the caller passes ``expected``) the evaluation's stored predictions of those samples; a mismatch marks the row
(``outputs_checked: false`` and ``outputs_note``) and warns.
"""
from __future__ import annotations

import time
import warnings
from typing import Any, Callable, Iterable

import numpy as np

#: coefficient of variation (std / mean of the per-batch latencies) above which a row is ``unstable``; also the
#: threshold ``zooinfer run --strict`` fails on
UNSTABLE_CV = 0.15
#: the timed outputs and the untimed rerun may differ by this much, relative to the largest |output| (as
#: ``export.PARITY_TOLERANCE``): nondeterministic kernels, never a stale or cached answer
OUTPUT_CHECK_TOLERANCE = 1e-3


def time_batches(run: Callable[[np.ndarray], object], batch: np.ndarray, *, warmup: int = 2, min_time: float = 1.0,
                 min_iters: int = 5, max_iters: int = 1000) -> np.ndarray:
    """Seconds per call of ``run(batch)`` after ``warmup`` calls."""
    for _ in range(warmup):
        run(batch)
    times: list[float] = []
    t_end = time.perf_counter() + min_time
    while len(times) < max_iters and (len(times) < min_iters or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        run(batch)
        times.append(time.perf_counter() - t0)
    return np.array(times)


def summarize(times: np.ndarray, bs: int) -> dict:
    """Latency percentiles (ms per batch), throughput (samples/s), stability of one batch size's timings."""
    cv = float(times.std() / times.mean()) if times.size > 1 and times.mean() > 0 else 0.0
    return {
        "bs": bs, "iters": int(times.size),
        "throughput": float(bs * times.size / times.sum()),
        "latency_ms_mean": float(1e3 * times.mean()),
        "latency_ms_p50": float(1e3 * np.percentile(times, 50)),
        "latency_ms_p90": float(1e3 * np.percentile(times, 90)),
        "latency_ms_p99": float(1e3 * np.percentile(times, 99)),
        "cv": cv, "unstable": cv > UNSTABLE_CV,
    }


def real_views(recipe: Any, dataset: Any, n: int) -> list[np.ndarray]:
    """Up to ``n`` real preprocessed views (float32 CHW of ``recipe.input_shape``) from ``dataset``'s first samples,
    for parity checks and benchmarks; unreadable samples are passed over (they are the pipeline's business)."""
    views: list[np.ndarray] = []
    for sample in dataset:
        try:
            arrays, _ = recipe.preprocess(sample.path)
        except Exception:  # noqa: BLE001 - any unreadable image is skipped here
            continue
        views += [v for v in arrays if tuple(v.shape) == tuple(recipe.input_shape)]
        if len(views) >= n:
            break
    return views[:n]


#: the sweep's samples are held in memory up to this many MiB (PyramidBox's views are 12 MB each)
SWEEP_SAMPLES_MB = 256.0


def sweep_samples(recipe: Any, data: Any, n: int, stored: Callable[[str], Any] | None = None,
                  limit_mb: float = SWEEP_SAMPLES_MB) -> tuple[np.ndarray, Callable | None]:
    """The sweep's inputs from the run's own samples ``data`` (in order, unreadable ones passed over): up to ``n``
    preprocessed views (N, C, H, W) of ``recipe.input_shape``, at most ``limit_mb`` MiB; and, with ``stored(key)``
    (the evaluation's stored compact prediction of a sample), ``expected(row, outputs)`` for
    :func:`check_timed_outputs`: the timed outputs of a one-view sample, postprocessed, must be the prediction the
    evaluation stored (``repeat.prediction_change``); samples of several views are not compared (None)."""
    from .store import Skip

    shape = tuple(recipe.input_shape)
    per_view = 4 * int(np.prod(shape))
    n = max(1, min(n, int(limit_mb * 2 ** 20 // max(per_view, 1))))
    views: list[np.ndarray] = []
    owners: list[tuple[Any, dict, int] | None] = []
    for sample in data:
        try:
            arrays, meta = recipe.preprocess(sample.path)
        except Exception:  # noqa: BLE001 - unreadable images are the pipeline's business
            continue
        arrays = [v for v in arrays if tuple(v.shape) == shape]
        for v in arrays:
            views.append(np.asarray(v, dtype=np.float32))
            owners.append((sample, recipe.meta_for(sample, meta), len(arrays)) if len(arrays) == 1 else None)
        if len(views) >= n:
            break
    views, owners = views[:n], owners[:n]
    if not views:
        return np.zeros((0, *shape), np.float32), None
    if stored is None:
        return np.stack(views), None
    from .repeat import prediction_change

    compact = getattr(recipe, "compact", None) or (lambda p: p)

    def expected(row: int, outputs: list[np.ndarray]) -> str | None:
        owner = owners[row]
        if owner is None:
            return None
        sample, meta, _ = owner
        try:
            want = stored(sample.key)
        except KeyError:
            return None
        if isinstance(want, Skip):
            return None
        why = prediction_change(recipe.task, want, compact(recipe.postprocess(outputs, meta)))
        return None if why is None else f"{sample.key}: the timed outputs give another prediction than the " \
                                        f"evaluation stored ({why})"

    return np.stack(views), expected


def make_batch(samples: np.ndarray, bs: int) -> np.ndarray:
    """A (bs, C, H, W) batch made of real preprocessed ``samples`` (N, C, H, W), repeated as needed."""
    reps = -(-bs // samples.shape[0])
    return np.ascontiguousarray(np.concatenate([samples] * reps)[:bs], dtype=np.float32)


def distinct_batches(samples: np.ndarray, bs: int) -> list[np.ndarray]:
    """(bs, C, H, W) batches cycling through ``samples`` (N, C, H, W): batch k holds samples ``k*bs .. k*bs+bs-1``
    (mod N), ceil(N / bs) of them, so every sample is in one and, where N > bs, no two batches are the same."""
    n = samples.shape[0]
    count = max(1, -(-n // bs))
    return [np.ascontiguousarray(samples[[(k * bs + i) % n for i in range(bs)]], dtype=np.float32)
            for k in range(count)]


def time_distinct(run: Callable[[np.ndarray], list], batches: list[np.ndarray], *, warmup: int = 2,
                  min_time: float = 1.0, min_iters: int = 5, max_iters: int = 1000) -> tuple[np.ndarray, list]:
    """Seconds per call of ``run`` on ``batches`` in turn (call i runs ``batches[i % len(batches)]``) after
    ``warmup`` calls, until ``min_time`` seconds and ``min_iters`` calls (at most ``max_iters``); and the outputs of
    the first timed pass (one list of arrays per batch; fewer when fewer calls were timed), copied outside the
    timed interval."""
    for i in range(warmup):
        run(batches[i % len(batches)])
    times: list[float] = []
    first_pass: list = []
    t_end = time.perf_counter() + min_time
    while len(times) < max_iters and (len(times) < min_iters or time.perf_counter() < t_end):
        batch = batches[len(times) % len(batches)]
        t0 = time.perf_counter()
        outs = run(batch)
        times.append(time.perf_counter() - t0)
        if len(first_pass) < len(batches):
            first_pass.append([np.array(o, copy=True) for o in outs])
    return np.array(times), first_pass


def _peak_rel(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| relative to the largest |b| (0 for two empty arrays; inf for different shapes)."""
    if a.shape != b.shape:
        return float("inf")
    if not a.size:
        return 0.0
    a, b = a.astype(np.float64), b.astype(np.float64)
    peak = float(np.abs(b).max())
    diff = float(np.abs(a - b).max())
    return diff / peak if peak > 0 else diff


def check_timed_outputs(run: Callable[[np.ndarray], list], batches: list[np.ndarray], timed: list,
                        expected: Callable[[int, list[np.ndarray]], str | None] | None = None,
                        tolerance: float = OUTPUT_CHECK_TOLERANCE) -> tuple[bool, str]:
    """Whether the ``timed`` outputs (:func:`time_distinct`'s first pass over ``batches``) are right: each equals a
    fresh untimed ``run`` of its batch within ``tolerance`` (relative to the largest |output|), and ``expected(row,
    outputs of that row)`` (row = the row's index in the concatenated batches, i.e. the sample index the batches
    cycle through) returns None for every row (else a reason: the evaluation predicted otherwise). Returns
    (checked, note)."""
    from .backends.base import sample_outputs

    problems: list[str] = []
    for k, (batch, outs) in enumerate(zip(batches, timed)):
        fresh = run(batch)
        worst = max((_peak_rel(o, f) for o, f in zip(outs, fresh)), default=0.0)
        if len(outs) != len(fresh) or not worst <= tolerance:
            problems.append(f"batch {k}: the timed outputs differ from an untimed rerun by {worst:.3g} (relative "
                            "to the largest output)")
        if expected is not None:
            rows = batch.shape[0]
            for r in range(rows):
                why = expected(k * rows + r, sample_outputs(outs, rows, r))
                if why:
                    problems.append(why)
    checked = len(timed)
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        return False, "; ".join(problems[:3]) + more
    return True, (f"{checked} of {len(batches)} distinct batches checked: equal to an untimed rerun"
                  + (" and to the evaluation's predictions" if expected is not None else ""))


def inference_sweep(session, samples: np.ndarray, batch_sizes: Iterable[int], *,
                    expected: Callable[[int, list[np.ndarray]], str | None] | None = None,
                    check_outputs: bool = True, **timing) -> list[dict]:
    """Pure-inference throughput and latency of ``session`` at each batch size (static models: their own only).

    ``samples``: real preprocessed inputs (N, C, H, W); each batch size times the distinct batches
    :func:`distinct_batches` makes of them, in turn. ``check_outputs``: afterwards :func:`check_timed_outputs`
    (``expected``: the evaluation's predictions per sample index, see there); the row says ``outputs_checked``,
    ``outputs_note`` and ``distinct_batches``, and a mismatch warns.
    """
    fixed = session.input_shape[0] if session.input_shape else None
    sizes = [fixed] if fixed is not None else list(batch_sizes)
    rows = []
    for bs in sizes:
        batches = distinct_batches(samples, bs)
        times, timed = time_distinct(session.run, batches, **timing)
        row = summarize(times, bs)
        row["backend"] = session.name
        row["distinct_batches"] = len(batches)
        if row["unstable"]:
            warnings.warn(f"{session.name} bs={bs}: timings vary (cv {row['cv']:.0%}); the machine may be busy",
                          stacklevel=2)
        if check_outputs:
            # the expected predictions are per sample: rows past the samples (a batch larger than them) repeat
            by_sample = None if expected is None else (lambda i, outs: expected(i % samples.shape[0], outs))
            row["outputs_checked"], row["outputs_note"] = check_timed_outputs(session.run, batches, timed, by_sample)
            if not row["outputs_checked"]:
                warnings.warn(f"{session.name} bs={bs}: the timed outputs are not the model's: "
                              f"{row['outputs_note']}", stacklevel=2)
        rows.append(row)
    return rows


def speed_problems(rows: list[dict]) -> list[str]:
    """What ``zooinfer run --strict`` fails on in the sweep's rows (metrics.json ``throughput``): a figure whose
    timings vary (cv above :data:`UNSTABLE_CV`) or whose timed outputs were not the model's."""
    out = []
    for r in rows or []:
        if not isinstance(r, dict):
            continue
        where = f"{r.get('backend')} bs {r.get('bs')}"
        if isinstance(r.get("cv"), (int, float)) and r["cv"] > UNSTABLE_CV:
            out.append(f"throughput {where}: unstable (cv {r['cv']:.0%} > {UNSTABLE_CV:.0%})")
        if r.get("outputs_checked") is False:
            out.append(f"throughput {where}: timed outputs not the model's ({r.get('outputs_note')})")
    return out


def best_batch(rows: list[dict]) -> int | None:
    """Batch size with the highest throughput."""
    return max(rows, key=lambda r: r["throughput"])["bs"] if rows else None


class ReplaySession:
    """A session that returns precomputed outputs instantly: measures everything around inference (memory,
    preprocessing, postprocessing) without paying for the network. Row i gets the outputs of ``samples[i % n]``."""

    def __init__(self, inner, samples: np.ndarray):
        from .backends.base import sample_outputs

        self.name, self.device, self.input_shape = f"replay({inner.name})", inner.device, inner.input_shape
        outs = inner.run(samples)
        self._n = samples.shape[0]
        self._per_sample = [sample_outputs(outs, self._n, i) for i in range(self._n)]
        #: outputs whose leading axis holds several rows per sample (e.g. M2Det's (N * 32760, 81)) are concatenated
        self._blocks = [o.shape[0] != self._n for o in outs]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        rows = [self._per_sample[i % self._n] for i in range(batch.shape[0])]
        return [np.concatenate([r[j] for r in rows]) if block else np.stack([r[j] for r in rows])
                for j, block in enumerate(self._blocks)]


def matmul_peak_gflops(n: int = 2048, threads: int | None = None, min_time: float = 1.0) -> float:
    """This machine's dense float32 GEMM rate (GFLOP/s) through torch (MKL/OpenBLAS), the roofline reference."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    times = time_batches(lambda _x: torch.mm(a, b), np.zeros(1), warmup=2, min_time=min_time, min_iters=5)
    return 2.0 * n ** 3 / float(np.median(times)) / 1e9


def profile_top_ops(onnx_path: str, batch: np.ndarray, runs: int = 3, top: int = 10,
                    threads: int | None = None) -> list[dict]:
    """ONNX Runtime per-node profile of ``runs`` runs, summed by operator type: the top ``top`` by time."""
    import json
    import os

    from .backends.registry import Artefacts, SessionOptions, get

    sess = get("onnxruntime").open(Artefacts(onnx_path=onnx_path),
                                   SessionOptions(threads=threads, profile=True, optimized_cache="off"))
    for _ in range(runs):
        sess.run(batch)
    trace = sess.end_profiling()
    try:
        events = json.load(open(trace))
    finally:
        os.unlink(trace)
    by_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            by_op[op] = by_op.get(op, 0.0) + e.get("dur", 0) / 1e3
    total = sum(by_op.values()) or 1.0
    rows = [{"op": k, "ms_per_run": v / runs, "share": v / total} for k, v in by_op.items()]
    return sorted(rows, key=lambda r: -r["ms_per_run"])[:top]


def ratios(rows: list[dict], backend: str, bs: int, result=None) -> dict[str, float | None]:
    """From sweep ``rows``: each backend's throughput over PyTorch eager's per batch size
    (``<backend>_vs_torch_bs<n>``); with the evaluation's ``result`` (a ``pipeline.RunResult`` at batch size ``bs``
    on ``backend``): end-to-end over pure inference at ``bs`` and the inference share of the wall time."""
    by = {(r["backend"], r["bs"]): r["throughput"] for r in rows}
    out: dict[str, float | None] = {}
    for (b, n), tp in by.items():
        if b != "torch" and ("torch", n) in by:
            out[f"{b}_vs_torch_bs{n}"] = tp / by[("torch", n)]
    pure = by.get((backend, bs))
    if result is not None and pure:
        out[f"end_to_end_vs_pure_bs{bs}"] = result.throughput / pure
    if result is not None and result.timer.items["infer"]:
        out["inference_share_of_wall"] = result.inference_share
    return out


# ------------------------------------------------------------------------------------------------ benchmark helpers
def rss_mib() -> float:
    """This process's resident memory in MiB (Linux ``/proc/self/statm``)."""
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def release_freed_memory() -> None:
    """Hand memory glibc keeps after ``free`` back to the OS (``malloc_trim(0)``), so a later RSS reading shows what
    is in use; nothing where the C library is not glibc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def replace_section(path: Any, heading: str, section: str) -> None:
    """Replace the markdown section of ``path`` whose heading line starts with ``heading`` (up to the next ``## ``
    heading) with ``section``, or append ``section`` when there is none (the benchmarks' README tables)."""
    from pathlib import Path

    path = Path(path)
    text = path.read_text() if path.exists() else ""
    if text.startswith(heading):
        start = 0
    else:
        found = text.find("\n" + heading)
        start = found + 1 if found >= 0 else -1
    if start < 0:
        path.write_text(text.rstrip("\n") + "\n\n" + section)
        return
    nxt = text.find("\n## ", start + len(heading))
    rest = text[nxt + 1:] if nxt >= 0 else ""
    path.write_text(text[:start] + section + ("\n" + rest if rest else ""))


def save_results(folder: Any, prefix: str, doc: dict, text: str) -> None:
    """A benchmark's results in ``folder`` (created): ``doc`` as ``<prefix><timestamp>.json`` and
    ``<prefix>latest.json``, its markdown ``text`` as ``<prefix>latest.md``."""
    import datetime as dt
    from pathlib import Path

    from .report import write_json

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    write_json(out / f"{prefix}{stamp}.json", doc)
    write_json(out / f"{prefix}latest.json", doc)
    (out / f"{prefix}latest.md").write_text(text + "\n")
