"""Timing of pure inference per batch size (the figures every report and ``benchmarks/`` show: one code path).

Each batch size: warm-up runs, then timed runs until both ``min_time`` seconds and ``min_iters`` runs are reached
(capped at ``max_iters``). Latency percentiles are per batch; throughput = samples / summed latency. A coefficient of
variation above ``UNSTABLE_CV`` marks the row unstable (a shared or throttled machine).
"""
from __future__ import annotations

import time
import warnings
from typing import Any, Callable, Iterable

import numpy as np

UNSTABLE_CV = 0.15


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


def make_batch(samples: np.ndarray, bs: int) -> np.ndarray:
    """A (bs, C, H, W) batch made of real preprocessed ``samples`` (N, C, H, W), repeated as needed."""
    reps = -(-bs // samples.shape[0])
    return np.ascontiguousarray(np.concatenate([samples] * reps)[:bs], dtype=np.float32)


def inference_sweep(session, samples: np.ndarray, batch_sizes: Iterable[int], **timing) -> list[dict]:
    """Pure-inference throughput and latency of ``session`` at each batch size (static models: their own only).

    ``samples``: real preprocessed inputs (N, C, H, W) to build the batches from.
    """
    fixed = session.input_shape[0] if session.input_shape else None
    sizes = [fixed] if fixed is not None else list(batch_sizes)
    rows = []
    for bs in sizes:
        row = summarize(time_batches(session.run, make_batch(samples, bs), **timing), bs)
        row["backend"] = session.name
        if row["unstable"]:
            warnings.warn(f"{session.name} bs={bs}: timings vary (cv {row['cv']:.0%}); the machine may be busy",
                          stacklevel=2)
        rows.append(row)
    return rows


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
