#!/usr/bin/env python3
"""Full-size stream: N (default 50,000) ImageNet-layout JPEGs through the real DPN131 recipe on the ``null``
backend, every sample's compact prediction streamed into a prediction store (zooinfer.store). Measures:

1. Flat memory. Two child processes stream the first ``--memory-short`` (5,000) and all ``--images`` (50,000)
   images through ``pipeline.run(..., store=PredictionStore.create(...))``; each samples its resident memory
   (/proc/self/statm) every 20 ms during the stream (as benchmarks/run.py does), the model built, its one forward
   run and its weights freed (and malloc_trim'd) before. Growth = (peak RSS during the long stream - peak RSS
   during the short stream) / peak RSS during the short stream; the goal is < 5%. The pair runs twice
   (``--hugepages both``): with numpy's transparent-huge-page advice on (numpy's default on Linux: every array of
   >= 4 MiB is madvise'd MADV_HUGEPAGE; here the fresh 4.6 MiB batch buffer of each batch of 8) and off
   (NUMPY_MADVISE_HUGEPAGE=0), with the huge pages (AnonHugePages) and glibc's malloc figures at the end of each
   stream, because on a kernel with THP in madvise mode the huge pages alone make RSS climb with the stream's
   length. Also: images/s (end to end, wall clock of pipeline.run), the store's size on disk (bytes per image),
   and the containers that legitimately grow with N (the top-k metric's ranks and keys lists, the store's key
   index).
2. Kill and resume. A child streams ``--kill-images`` (default all) images into a run folder; the parent polls the
   child's count of scored samples and, once ``--kill-at`` (half) of the images are scored (so the store holds
   about half: all but the chunk being filled, the kill falling anywhere between two chunk writes), sends
   SIGKILL. Reported:
   samples stored at the kill (PredictionStore.open(..., writable=False)), samples scored at the kill (the child
   counts every metric update into a shared memory-mapped file, so the count survives the SIGKILL exactly), samples
   lost = scored but not stored (bounded by the chunk size, ZOOINFER_CHUNK_SIZE / --chunk-size, default 256, or
   flush_s of work). A new child then resumes (``store=PredictionStore.open(run_folder)``): seconds from its process
   start until the first new (not stored) sample is scored, of which the startup (imports, model build and
   forward, dataset and store opening), and the total; ``n_stored`` (samples taken from the store); and PASS only
   if n_stored equals the samples stored at the kill, every sample is scored, and the metrics dict and the
   per-sample ranks in dataset order are identical to an uninterrupted run's (the long memory run when it covers
   the same images, else a separate uninterrupted child).

The images (``--data DIR``, default /tmp/zooinfer-stream-<N>) are generated once and reused while the folder holds
the right count: small distinct JPEGs (80x64 .. 120x100, a few random colours upsampled) in the layout
zooinfer.datasets.imagenet reads (val/ILSVRC2012_val_<n>.JPEG + val_label.txt), labels uniform in 0..9.

Backend outputs (``--fill``): ``content`` (default) is the null backend's zero (1000,) logits with the first 10
set from the pixels (the sums of 10 horizontal strips of the preprocessed view, in float64, per sample), so every
image gets its own top-5 over the 10 label classes and a prediction attached to the wrong sample changes the
ranks and metrics; ``zeros`` is the plain null backend (every logit ties; only the counts could differ).

usage: python benchmarks/stream.py [--images 50000] [--quick] [--data DIR] [--kill-images N] [--chunk-size N]
Prints a markdown table, writes benchmarks/results/stream-latest.{json,md} and replaces (or appends) the
"## Full-size stream (N images, null backend)" section of benchmarks/README.md (not with --no-readme, and not with
--quick unless --readme). --quick: 2,000 images, memory 500 vs 2,000.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SCRIPT = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent / "lib"))

from zooinfer import bench, pipeline, recipes, report  # noqa: E402
from zooinfer.store import INDEX, FOLDER, PredictionStore  # noqa: E402

HEADING_PREFIX = "## Full-size stream ("
MARKER = ".zooinfer-stream.json"
#: label classes (0..CLASSES-1) and, with fill "content", the logits set from the pixels
CLASSES = 10
#: the progress file a child writes into (float64 slots of a shared memory map: they survive a SIGKILL)
SLOTS = ("scored", "entry", "ready", "pipeline_start", "first_scored", "first_new", "end", "stored_before")
GEN_SEED = 20261203


# ------------------------------------------------------------------------------------------------ the images
def image_name(i: int) -> str:
    """The file name of image ``i`` (0-based): ILSVRC2012_val_<i+1, 8 digits>.JPEG."""
    return f"ILSVRC2012_val_{i + 1:08d}.JPEG"


def _write_images(val: str, start: int, stop: int) -> list[int]:
    """Write images ``start``..``stop``-1 into ``val``; returns their labels (a worker process's share)."""
    from PIL import Image

    labels = []
    for i in range(start, stop):
        rng = np.random.default_rng([GEN_SEED, i])
        w, h = int(rng.integers(80, 121)), int(rng.integers(64, 101))
        small = rng.integers(0, 256, (int(rng.integers(3, 9)), int(rng.integers(3, 9)), 3), dtype=np.uint8)
        Image.fromarray(small).resize((w, h), Image.BILINEAR).save(os.path.join(val, image_name(i)), format="JPEG",
                                                                    quality=90)
        labels.append(int(rng.integers(0, CLASSES)))
    return labels


def _count_images(val: Path) -> int:
    if not val.is_dir():
        return 0
    with os.scandir(val) as it:
        return sum(1 for e in it if e.is_file() and e.name.endswith(".JPEG"))


def _count_lines(path: Path) -> int:
    if not path.is_file():
        return 0
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def generate(root: str | os.PathLike, n: int, workers: int | None = None) -> dict:
    """The ImageNet-layout folder ``root`` with ``n`` images (val/ + val_label.txt): reused when it already holds
    exactly ``n`` labelled images, else generated (a folder this script generated for another count is
    regenerated; one it did not generate is refused rather than touched). Returns {root, images, generated,
    seconds}."""
    root = Path(root)
    val, labels_file, marker = root / "val", root / "val_label.txt", root / MARKER
    t0 = time.perf_counter()
    info = json.loads(marker.read_text()) if marker.is_file() else None
    if (info is None or info.get("complete")) and _count_lines(labels_file) == n and _count_images(val) == n \
            and (info is None or info.get("images") == n):
        return {"root": str(root), "images": n, "generated": False, "seconds": time.perf_counter() - t0}
    if info is None and (val.exists() or labels_file.exists()):
        raise SystemExit(f"{root} holds an ImageNet layout of {_count_images(val)} images / "
                         f"{_count_lines(labels_file)} labels that this script did not generate; expected {n}. "
                         "Give another --data folder (or --images to match it).")
    shutil.rmtree(val, ignore_errors=True)
    labels_file.unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    val.mkdir()
    marker.write_text(json.dumps({"images": n, "complete": False}))
    workers = workers or pipeline.available_cpus()
    step = max(1, min(2000, -(-n // (4 * workers))))
    spans = [(i, min(n, i + step)) for i in range(0, n, step)]
    if workers == 1 or n < 1000:
        parts = [_write_images(str(val), a, b) for a, b in spans]
    else:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_write_images, [str(val)] * len(spans), *zip(*spans)))
    labels = [lab for part in parts for lab in part]
    labels_file.write_text("".join(f"{image_name(i)} {lab}\n" for i, lab in enumerate(labels)))
    marker.write_text(json.dumps({"images": n, "complete": True, "seed": GEN_SEED, "classes": CLASSES}))
    return {"root": str(root), "images": n, "generated": True, "seconds": time.perf_counter() - t0}


# ------------------------------------------------------------------------------------------------ the session
def _marks(view: np.ndarray, classes: int) -> np.ndarray:
    """``classes`` logits of one (3, H, W) view: the float64 sums of ``classes`` horizontal strips (per sample,
    so the same view gives the same bits whatever batch it came in)."""
    rows = view.shape[1] // classes * classes
    strips = view[:, :rows].reshape(view.shape[0], classes, -1)
    return strips.sum(axis=(0, 2), dtype=np.float64).astype(np.float32)


class MarkedNull:
    """The null session's outputs, with the first ``classes`` logits of each row set from its pixels
    (:func:`_marks`; 0: the plain zeros) and an optional sleep per batch (``throttle_s``, a testing aid to kill a
    tiny stream in its middle)."""

    name = "null"

    def __init__(self, inner: Any, classes: int = CLASSES, throttle_s: float = 0.0):
        self.inner, self.classes, self.throttle_s = inner, classes, throttle_s

    @property
    def input_shape(self) -> tuple:
        return self.inner.input_shape

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        outs = self.inner.run(batch)
        if self.classes:
            for i in range(batch.shape[0]):
                outs[0][i, :self.classes] = _marks(batch[i], self.classes)
        if self.throttle_s:
            time.sleep(self.throttle_s)
        return outs


class StubDPN131:
    """A stand-in shape teacher: (N, 3, H, W) -> (N, 1000) zeros, DPN131's output signature (one ``class``
    output of 1000 logits), without building DPN131 (~2 s) or running its first forward (~5 s on 2 loaded cores)."""

    def __call__(self, x: Any) -> Any:
        import torch

        return torch.zeros((x.shape[0], 1000), dtype=torch.float32)


def _mallinfo() -> tuple[float, float] | None:
    """(MiB glibc malloc hands out now, MiB of freed memory it holds) over all arenas (mallinfo2, glibc >= 2.33);
    None elsewhere. numpy's arrays are malloc'd; Python's small objects live in pymalloc's own mmaps."""
    import ctypes

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                         "fsmblks", "uordblks", "fordblks", "keepcost")]
    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = Mallinfo2
    m = fn()
    return (m.uordblks + m.hblkhd) / 2**20, m.fordblks / 2**20


def _smaps_mib() -> dict[str, float]:
    """Rss, Anonymous and AnonHugePages (transparent huge pages) of this process, MiB (/proc/self/smaps_rollup)."""
    out = {}
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in ("Rss", "Anonymous", "AnonHugePages"):
                    out[name] = int(rest.split()[0]) / 1024
    except OSError:
        pass
    return out


def make_session(fill: str = "content", throttle_s: float = 0.0, shape_model: str = "dpn131") -> MarkedNull:
    """The registry's ``null`` session over DPN131 (synthetic weights; ``shape_model="stub"``: :class:`StubDPN131`):
    one real forward teaches it the (1000,) logits, then the weights are dropped and the freed memory handed back
    (they are not streaming state)."""
    from zooinfer.backends import Artefacts, get
    from zooinfer.models import build_model

    model = build_model("dpn131", None) if shape_model == "dpn131" else StubDPN131()
    inner = get("null").open(Artefacts(model=model))
    inner.run(np.zeros((1, *recipes.get("dpn131").input_shape), np.float32))
    inner.model = None  # DPN131 has one view shape (3, 224, 224): no other forward will be asked for
    del model
    gc.collect()
    bench.release_freed_memory()
    return MarkedNull(inner, CLASSES if fill == "content" else 0, throttle_s)


# ------------------------------------------------------------------------------------------------ the child
class Watched:
    """The top-k accumulator, counting every update into the progress map (``scored``; the first update and the
    first of a sample not in ``stored`` timed) and calling ``before_compute`` before the final computation."""

    def __init__(self, inner: Any, progress: np.ndarray | None, stored: frozenset, before_compute: Any = None):
        self.inner, self.progress, self.stored, self.before_compute = inner, progress, stored, before_compute
        self.n = 0
        self.first_new: float | None = None

    def update(self, sample: Any, prediction: Any) -> None:
        self.inner.update(sample, prediction)
        self.n += 1
        if self.first_new is None and sample.key not in self.stored:
            self.first_new = time.time()
            if self.progress is not None:
                self.progress[SLOTS.index("first_new")] = self.first_new
        if self.progress is not None:
            if self.n == 1:
                self.progress[SLOTS.index("first_scored")] = time.time()
            self.progress[0] = self.n

    def compute(self) -> dict:
        if self.before_compute is not None:
            self.before_compute()
        return self.inner.compute()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def child(spec: dict) -> dict:
    """One stream in this process (run as ``stream.py --child JSON``): ``spec`` = {data, n, run_folder, resume,
    bs, prep_threads, fill, chunk_size, throttle_s, progress (a file of len(SLOTS) float64, or None), ranks (an
    .npy path for the per-sample ranks)}. Returns the figures (RSS, rate, store, metrics)."""
    from zooinfer.datasets.imagenet import open_imagenet
    from zooinfer.metrics.classification import TopKAccumulator

    entry = time.time()
    progress = np.memmap(spec["progress"], np.float64, "r+", shape=(len(SLOTS),)) if spec.get("progress") else None
    if progress is not None:
        progress[SLOTS.index("entry")] = entry
    recipe = recipes.get("dpn131")
    session = make_session(spec["fill"], spec.get("throttle_s", 0.0), spec.get("shape_model", "dpn131"))
    ds = open_imagenet(spec["data"]).subset(spec["n"])
    t0 = time.time()
    if spec["resume"]:
        store = PredictionStore.open(spec["run_folder"], chunk_size=spec.get("chunk_size"))
    else:
        store = PredictionStore.create(spec["run_folder"], {"benchmark": "stream", "model": "dpn131",
                                                            "images": spec["n"], "fill": spec["fill"]},
                                       chunk_size=spec.get("chunk_size"))
    open_s = time.time() - t0
    stored = frozenset(store.done)
    gc.collect()
    bench.release_freed_memory()
    base = bench.rss_mib()
    heap_before = _mallinfo()
    peak = [base]
    #: every 0.5 s: [seconds, samples scored, RSS MiB, malloc in use MiB, malloc's held free MiB]
    trace: list[list[float]] = []
    stop = threading.Event()

    def sample_rss() -> None:
        t_start, ticks = time.perf_counter(), 0
        while not stop.wait(0.02):
            rss = bench.rss_mib()
            peak[0] = max(peak[0], rss)
            ticks += 1
            if ticks % 25 == 0:
                heap = _mallinfo() or (float("nan"), float("nan"))
                trace.append([round(time.perf_counter() - t_start, 2), acc.n, round(rss, 2), round(heap[0], 2),
                              round(heap[1], 2)])

    marked: dict = {}

    def before_compute() -> None:  # the stream's own peak ends here; the final top-k computation is apart
        marked["peak_rss_mib"] = max(peak[0], bench.rss_mib())
        marked["malloc_end"] = _mallinfo()
        marked["smaps_end"] = _smaps_mib()
        # the containers only: the key strings are the dataset's own (they existed before the stream), the
        # ranks 0..5 Python's cached small ints
        marked["metric_state_mib"] = (sys.getsizeof(acc.inner._ranks) + sys.getsizeof(acc.inner.keys)) / 2**20

    acc = Watched(TopKAccumulator(), progress, stored, before_compute)
    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()

    if progress is not None:
        progress[SLOTS.index("stored_before")] = len(stored)
        progress[SLOTS.index("ready")] = t0
        progress[SLOTS.index("pipeline_start")] = time.time()
    t_run = time.time()
    res = pipeline.run(recipe, ds, session, bs=spec["bs"], prep_threads=spec["prep_threads"], store=store,
                       accumulator=acc, progress=False)
    store.close()
    end = time.time()
    if progress is not None:
        progress[SLOTS.index("end")] = end
    stop.set()
    sampler.join()
    np.save(spec["ranks"], acc.inner.ranks)
    index_mib = sys.getsizeof(store.done) / 2**20  # key -> chunk name: the dataset's keys, one name per chunk
    folder = Path(spec["run_folder"]) / FOLDER
    chunks = len(list(folder.glob("chunk-*.npz")))
    return {"n": spec["n"], "n_done": res.n_done, "n_stored": res.n_stored, "skipped": len(res.skipped),
            "metrics": res.metrics, "ranks": spec["ranks"],
            "rss_before_mib": base, "peak_rss_mib": marked.get("peak_rss_mib", peak[0]),
            "peak_rss_with_metric_mib": max(peak[0], bench.rss_mib()),
            "metric_state_mib": marked.get("metric_state_mib", 0.0), "store_index_mib": index_mib,
            "seconds": res.wall_s, "images_per_s": res.throughput,
            "computed_per_s": (res.n_done - res.n_stored) / res.wall_s if res.wall_s > 0 else None,
            "entry_to_pipeline_s": t_run - entry, "store_open_s": open_s, "pipeline_end_s": end - entry,
            "first_new": acc.first_new, "chunk_size": store.chunk_size, "chunks": chunks,
            "store_bytes": _folder_bytes(folder), "prep_threads": spec["prep_threads"], "bs": spec["bs"],
            "malloc_before": heap_before, "malloc_end_of_stream": marked.get("malloc_end"),
            "smaps_end_of_stream": marked.get("smaps_end"), "numpy_hugepages": spec.get("numpy_hugepages", True),
            "rss_trace": trace}


def _child_cmd(spec: dict) -> list[str]:
    return [sys.executable, str(SCRIPT), "--child", json.dumps(spec)]


def _child_env(spec: dict) -> dict:
    """The child's environment: numpy's transparent-huge-page advice on or off (read when numpy is imported)."""
    return {**os.environ, "NUMPY_MADVISE_HUGEPAGE": "1" if spec.get("numpy_hugepages", True) else "0"}


def run_child(spec: dict, timeout: float | None = None) -> dict:
    """Run :func:`child` in a new process; its figures (the last stdout line, JSON)."""
    proc = subprocess.run(_child_cmd(spec), capture_output=True, text=True, timeout=timeout, env=_child_env(spec))
    if proc.returncode != 0:
        raise RuntimeError(f"stream child failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ measurements
def _spec(opts: dict, data: str, n: int, run_folder: Path, ranks: Path, resume: bool = False,
          progress: Path | None = None) -> dict:
    return {"data": str(data), "n": n, "run_folder": str(run_folder), "resume": resume, "bs": opts["bs"],
            "prep_threads": opts["prep_threads"], "fill": opts["fill"], "chunk_size": opts.get("chunk_size"),
            "throttle_s": opts.get("throttle_s", 0.0), "shape_model": opts.get("shape_model", "dpn131"),
            "numpy_hugepages": opts.get("numpy_hugepages", True), "progress": str(progress) if progress else None,
            "ranks": str(ranks)}


def uninterrupted(data: str, n: int, work: Path, opts: dict, tag: str | None = None) -> dict:
    """One uninterrupted stream of the first ``n`` images into a new store, in a child process (memory sampled)."""
    tag = tag or f"run-{n}"
    shutil.rmtree(work / tag, ignore_errors=True)
    return run_child(_spec(opts, data, n, work / tag, work / f"ranks-{tag}.npy"))


def memory_growth(data: str, short: int, long: int, work: Path, opts: dict, rep: int = 1) -> dict:
    """The short and the long stream (each its own process) and the growth between their peaks."""
    mode = "on" if opts.get("numpy_hugepages", True) else "off"
    s = uninterrupted(data, short, work, opts, f"memory-{mode}-{short}-{rep}")
    lg = uninterrupted(data, long, work, opts, f"memory-{mode}-{long}-{rep}")
    d_short, d_long = s["peak_rss_mib"] - s["rss_before_mib"], lg["peak_rss_mib"] - lg["rss_before_mib"]
    legit = (lg["metric_state_mib"] + lg["store_index_mib"]) - (s["metric_state_mib"] + s["store_index_mib"])
    return {"numpy_hugepages": mode, "short": s, "long": lg, "growth_mib": lg["peak_rss_mib"] - s["peak_rss_mib"],
            "growth": (lg["peak_rss_mib"] - s["peak_rss_mib"]) / s["peak_rss_mib"],
            "stream_mib_short": d_short, "stream_mib_long": d_long,
            "stream_growth": (d_long - d_short) / s["peak_rss_mib"],
            "per_sample_state_growth_mib": legit}


class IndexWatcher:
    """Samples stored in a run folder, read incrementally from its index.jsonl (torn last line tolerated)."""

    def __init__(self, run_folder: Path):
        self.path = Path(run_folder) / FOLDER / INDEX
        self.offset, self.count, self.partial = 0, 0, b""

    def poll(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return self.count
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            try:
                self.count += int(json.loads(line)["n"])
            except (ValueError, KeyError):
                pass
        return self.count


def _new_progress(path: Path) -> np.ndarray:
    mm = np.memmap(path, np.float64, "w+", shape=(len(SLOTS),))
    mm[:] = 0.0
    mm.flush()
    return mm


def kill_and_resume(data: str, n: int, work: Path, opts: dict, *, kill_at: float = 0.5, poll_s: float = 0.01,
                    timeout_s: float = 3600.0) -> dict:
    """Stream ``n`` images into ``work/killed`` in a child, SIGKILL it once it has scored ``kill_at`` x ``n``
    samples (so the store holds about that many, less what the last unwritten chunk holds: the kill falls
    anywhere between two chunk writes, not right after one), then resume in a new child; the figures of both (see
    the module docstring)."""
    run_folder = work / "killed"
    shutil.rmtree(run_folder, ignore_errors=True)
    prog_path = work / "kill-progress.bin"
    prog = _new_progress(prog_path)
    target = max(1, int(round(kill_at * n)))
    watcher = IndexWatcher(run_folder)
    with open(work / "killed.stdout", "w") as out, open(work / "killed.stderr", "w") as err:
        start = time.time()
        proc = subprocess.Popen(_child_cmd(_spec(opts, data, n, run_folder, work / "ranks-killed.npy",
                                                 progress=prog_path)), stdout=out, stderr=err,
                                env=_child_env(opts))
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the stream ended (exit {proc.returncode}) before it scored {target} of {n} "
                                       f"images ({int(prog[0])}); see {work / 'killed.stderr'}")
                if prog[0] >= target:  # scored, not stored: the kill falls anywhere between two chunk writes
                    os.kill(proc.pid, signal.SIGKILL)
                    watcher.poll()
                    break
                if time.time() - start > timeout_s:
                    raise RuntimeError(f"no kill after {timeout_s:.0f} s ({watcher.poll()} stored)")
                time.sleep(poll_s)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    killed_at = time.time()
    scored = int(prog[0])
    after = PredictionStore.open(run_folder, writable=False)
    stored = len(after)
    chunk_size = after.chunk_size if opts.get("chunk_size") is None else opts["chunk_size"]
    kill = {"returncode": proc.returncode, "target": target, "stored_seen_at_kill": watcher.count,
            "stored_at_kill": stored, "scored_at_kill": scored, "lost": scored - stored,
            "lost_bound": chunk_size, "chunk_size": chunk_size,
            "stream_s_before_kill": killed_at - prog[SLOTS.index("pipeline_start")]
            if prog[SLOTS.index("pipeline_start")] else None,
            "seconds_start_to_kill": killed_at - start,
            "images_per_s_before_kill": scored / (killed_at - prog[SLOTS.index("pipeline_start")])
            if prog[SLOTS.index("pipeline_start")] else None}
    del after
    prog2_path = work / "resume-progress.bin"
    prog2 = _new_progress(prog2_path)
    start2 = time.time()
    res = run_child(_spec(opts, data, n, run_folder, work / "ranks-resumed.npy", resume=True,
                          progress=prog2_path), timeout=timeout_s)
    end2 = time.time()
    p = {name: float(prog2[i]) for i, name in enumerate(SLOTS)}
    resume = {**res, "process_start_to_first_new_s": p["first_new"] - start2 if p["first_new"] else None,
              "process_start_to_pipeline_s": p["pipeline_start"] - start2,
              "pipeline_to_first_new_s": p["first_new"] - p["pipeline_start"] if p["first_new"] else None,
              "process_start_to_end_s": end2 - start2, "pipeline_s": res["seconds"]}
    return {"n": n, "kill": kill, "resume": resume}


def verdict(reference: dict, kr: dict) -> list[str]:
    """What is wrong with the resumed run against the uninterrupted ``reference`` (empty: PASS)."""
    kill, res, n = kr["kill"], kr["resume"], kr["n"]
    problems = []
    if not 0 < kill["stored_at_kill"] < n:
        problems.append(f"the kill left {kill['stored_at_kill']} of {n} samples stored (expected some, not all)")
    if res["n_stored"] != kill["stored_at_kill"]:
        problems.append(f"the resume took {res['n_stored']} samples from the store, {kill['stored_at_kill']} "
                        "were stored at the kill")
    if res["n_done"] + res["skipped"] != n or reference["n_done"] != res["n_done"]:
        problems.append(f"the resume scored {res['n_done']} (+{res['skipped']} skipped) of {n}; the uninterrupted "
                        f"run {reference['n_done']}")
    if res["metrics"] != reference["metrics"]:
        diff = {k: (reference["metrics"].get(k), res["metrics"].get(k))
                for k in set(reference["metrics"]) | set(res["metrics"])
                if reference["metrics"].get(k) != res["metrics"].get(k)}
        problems.append(f"metrics differ (uninterrupted, resumed): {diff}")
    a, b = np.load(reference["ranks"]), np.load(res["ranks"])
    if a.shape != b.shape or not np.array_equal(a, b):
        problems.append(f"per-sample ranks differ ({a.shape} vs {b.shape}, "
                        f"{int((a != b).sum()) if a.shape == b.shape else 'n/a'} different)")
    return problems


# ------------------------------------------------------------------------------------------------ report
def _f(x: float | None, nd: int = 1) -> str:
    return "n/a" if x is None else f"{x:,.{nd}f}"


def _pair(values: list[Any], nd: int = 1) -> str:
    return " / ".join(_f(v, nd) for v in values)


def memory_table(memory: list[dict]) -> str:
    """One row per memory pair (short and long stream): numpy's huge-page advice, repetition, images/s, RSS, huge
    pages, malloc, growth."""
    rows = []
    for m in memory:
        s, lg = m["short"], m["long"]
        smaps = [r.get("smaps_end_of_stream") or {} for r in (s, lg)]
        heap = [r.get("malloc_end_of_stream") or (None, None) for r in (s, lg)]
        rows.append({
            "numpy huge pages": m["numpy_hugepages"], "rep": m.get("rep", 1),
            "images short / long": f"{s['n']:,} / {lg['n']:,}",
            "images/s": _pair([s["images_per_s"], lg["images_per_s"]], 0),
            "RSS before MiB": _pair([s["rss_before_mib"], lg["rss_before_mib"]]),
            "peak RSS MiB": _pair([s["peak_rss_mib"], lg["peak_rss_mib"]]),
            "huge pages MiB (end)": _pair([x.get("AnonHugePages") for x in smaps], 0),
            "malloc in use MiB (end)": _pair([h[0] for h in heap]),
            "malloc held free MiB (end)": _pair([h[1] for h in heap]),
            "growth": f"**{100 * m['growth']:.2f}%** ({m['growth_mib']:+.1f} MiB)"})
    return report.markdown_table(rows)


def memory_summary(memory: list[dict]) -> dict[str, dict]:
    """Per huge-page mode: the growth's median, min and max over the repetitions, and whether the goal is met."""
    out: dict[str, dict] = {}
    for mode in dict.fromkeys(m["numpy_hugepages"] for m in memory):
        g = [m["growth"] for m in memory if m["numpy_hugepages"] == mode]
        mib = [m["growth_mib"] for m in memory if m["numpy_hugepages"] == mode]
        out[mode] = {"repeats": len(g), "median": float(np.median(g)), "min": min(g), "max": max(g),
                     "median_mib": float(np.median(mib)), "met_median": float(np.median(g)) < 0.05,
                     "met_all": max(g) < 0.05}
    return out


def memory_lines(memory: list[dict]) -> str:
    """One line per huge-page mode: the growth over the repetitions, and where the malloc'd memory went."""
    lines = []
    for mode, r in memory_summary(memory).items():
        ms = [m for m in memory if m["numpy_hugepages"] == mode]
        in_use = float(np.median([m["long"]["malloc_end_of_stream"][0] - m["short"]["malloc_end_of_stream"][0]
                                  for m in ms if m["long"].get("malloc_end_of_stream")
                                  and m["short"].get("malloc_end_of_stream")] or [np.nan]))
        state = float(np.median([m["per_sample_state_growth_mib"] for m in ms]))
        verdict = ("met in every repetition" if r["met_all"] else "met by the median, not in every repetition"
                   if r["met_median"] else "**not met**")
        lines.append(f"- numpy huge pages `{mode}`: growth median **{100 * r['median']:.2f}%** "
                     f"({r['median_mib']:+.1f} MiB) [{100 * r['min']:.2f}%, {100 * r['max']:.2f}%] over "
                     f"{r['repeats']} repetition(s): the < 5% goal {verdict}. Memory malloc hands out grew by "
                     f"{_f(in_use)} MiB (median), the per-sample containers by design {_f(state)} MiB.")
    return "\n".join(lines)


def table(doc: dict) -> str:
    """The figure | value markdown table of one run (memory: :func:`memory_table`)."""
    memory, kr = doc.get("memory") or [], doc.get("kill_resume")
    rows: list[dict] = []
    if memory:
        m = memory[0]
        s, lg = m["short"], m["long"]
        rows += [
            {"figure": f"per-sample containers by design, {s['n']:,} -> {lg['n']:,} (top-k ranks + keys lists, "
                       "store key index), MiB", "value": _f(m["per_sample_state_growth_mib"])},
            {"figure": f"store on disk, {lg['n']:,} images ({lg['chunks']} chunks of {lg['chunk_size']}, "
                       "index.jsonl included)",
             "value": f"{lg['store_bytes'] / 2**20:.2f} MiB = {lg['store_bytes'] / lg['n']:.1f} bytes/image"},
        ]
    if kr:
        k, r = kr["kill"], kr["resume"]
        rows += [
            {"figure": "kill/resume stream: images, chunk size", "value": f"{kr['n']:,}, {k['chunk_size']}"},
            {"figure": "SIGKILL after (s of streaming; images/s until then)",
             "value": f"{_f(k['stream_s_before_kill'], 2)} ({_f(k['images_per_s_before_kill'])})"},
            {"figure": "samples stored at the kill", "value": f"{k['stored_at_kill']:,}"},
            {"figure": "samples scored at the kill", "value": f"{k['scored_at_kill']:,}"},
            {"figure": f"samples lost (scored, not stored; bound: a chunk, {k['lost_bound']})",
             "value": f"{k['lost']:,}"},
            {"figure": "resume: process start -> first new sample scored (s)",
             "value": _f(r["process_start_to_first_new_s"], 2)},
            {"figure": "&nbsp;&nbsp;of which startup: imports, model + forward, dataset, store open (s)",
             "value": f"{_f(r['process_start_to_pipeline_s'], 2)} (store open {_f(r['store_open_s'], 3)})"},
            {"figure": "&nbsp;&nbsp;of which scoring the stored samples until the first new one (s)",
             "value": _f(r["pipeline_to_first_new_s"], 2)},
            {"figure": "resume: total, process start -> end (s); its pipeline alone",
             "value": f"{_f(r['process_start_to_end_s'], 2)}; {_f(r['pipeline_s'], 2)}"},
            {"figure": "resume: n_stored (taken from the store) / computed",
             "value": f"{r['n_stored']:,} / {r['n_done'] - r['n_stored']:,}"},
            {"figure": "metrics and per-sample ranks identical to the uninterrupted run",
             "value": "PASS" if not doc["problems"] else "FAIL: " + "; ".join(doc["problems"])},
        ]
    return report.markdown_table(rows, ["figure", "value"])


def _commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(HERE), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + (" + uncommitted changes" if dirty else "") if out.returncode == 0 else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def _thp() -> str:
    """The kernel's transparent-huge-page mode (the bracketed word of /sys/kernel/mm/transparent_hugepage/enabled)."""
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "?"
    return text[text.find("[") + 1:text.find("]")] if "[" in text else text.strip()


def section(doc: dict, cmd: str) -> str:
    """The README section of one run."""
    env = report.environment()
    cpu = env.get("cpu") or env.get("processor") or "?"
    a = doc["args"]
    heading = f"{HEADING_PREFIX}{a['images']:,} images, null backend)"
    metrics = doc["reference_metrics"]
    parts = [f"{heading}\n\n`{cmd.strip()}`: {doc['when'][:10]}, commit {doc['commit']}, "
             f"{pipeline.available_cpus()} CPUs available ({cpu}), load average {doc['load_end']} at the end, "
             f"transparent huge pages `{doc.get('thp', '?')}`; bs {a['bs']}, {a['prep_threads']} preprocessing "
             f"threads, backend outputs `{a['fill']}`, shapes taught by `{a['shape_model']}`; generated "
             "ImageNet-layout JPEGs 80x64..120x100 (DPN131's preprocessing resizes them to 256 and crops 224); "
             f"whole run {doc.get('seconds', 0):.0f} s.\n\n"
             "Every stream runs the real DPN131 recipe through `pipeline.run(..., store=...)` in its own process; "
             "RSS sampled every 20 ms during the stream (the model's weights freed before); growth = (peak RSS of "
             "the long stream - peak RSS of the short) / peak RSS of the short (the goal: < 5%). **numpy huge "
             "pages** `on` is numpy's default on Linux: it advises the kernel to back every array of >= 4 MiB with "
             "transparent huge pages (madvise) - here the batch buffers (bs 8 x 3x224x224 float32 = 4.6 MiB, a "
             "fresh one per batch); `off` is `NUMPY_MADVISE_HUGEPAGE=0`. *huge pages MiB* is AnonHugePages, "
             "*malloc* glibc's mallinfo2 over all arenas, both at the end of the stream."]
    if doc.get("memory"):
        parts.append(memory_table(doc["memory"]))
        parts.append(memory_lines(doc["memory"]))
    parts.append("The kill is a real SIGKILL once the child has scored half the images (so it falls anywhere "
                 "between two chunk writes); \"lost\" = samples the killed child had scored (its metric updates, "
                 "counted in a shared memory map) but not yet written in a chunk. The resume opens the store and "
                 "runs the same stream: PASS = n_stored equals the samples stored at the kill and the metrics dict "
                 "and every sample's rank equal the uninterrupted run's (top-1 "
                 f"{metrics.get('top1')}, top-5 {metrics.get('top5')} over {metrics.get('n_images')} images).")
    parts.append(table(doc))
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, help="images in the stream (default 50,000; 2,000 with --quick)")
    p.add_argument("--quick", action="store_true", help="a small version: 2,000 images, memory 500 vs 2,000; "
                   "the README is not touched unless --readme")
    p.add_argument("--memory-short", type=int, help="images of the short memory stream (default 5,000, or "
                   "--images / 10 when that is smaller; 500 with --quick); the long one is --images")
    p.add_argument("--kill-images", type=int, help="images of the stream that is killed and resumed (default: "
                   "--images, so the long memory run is the uninterrupted reference; else an extra uninterrupted "
                   "run of that many images is the reference)")
    p.add_argument("--kill-at", type=float, default=0.5, help="SIGKILL once the child has scored this fraction of "
                   "the kill stream (default 0.5); the store then holds that many less the chunk being filled")
    p.add_argument("--data", help="the image folder (default /tmp/zooinfer-stream-<images>): generated once, reused "
                   "while it holds exactly --images labelled images")
    p.add_argument("--work", help="where the run folders (stores), ranks and progress files go (default a new temp "
                   "folder, removed at the end unless --keep)")
    p.add_argument("--keep", action="store_true", help="keep the --work folder")
    p.add_argument("--chunk-size", type=int, help="samples per stored chunk (default: ZOOINFER_CHUNK_SIZE, else "
                   "256); the most a kill can lose")
    p.add_argument("--bs", type=int, default=8, help="batch size through the null backend (default 8)")
    p.add_argument("--prep-threads", type=int, default=pipeline.available_cpus(),
                   help="read + preprocess threads (default: the CPUs available, %(default)s: the null backend "
                   "computes nothing)")
    p.add_argument("--fill", choices=("content", "zeros"), default="content",
                   help="backend outputs: content = null zeros with 10 logits from the pixels (default), zeros = "
                   "the plain null backend")
    p.add_argument("--throttle-s", type=float, default=0.0, help="sleep per batch in the backend (a testing aid to "
                   "kill tiny streams in their middle; default 0)")
    p.add_argument("--shape-model", choices=("dpn131", "stub"), default="dpn131",
                   help="what teaches the null backend its output shapes: dpn131 = DPN131 built with synthetic "
                   "weights, one forward, weights freed (default); stub = a module returning (N, 1000) zeros, "
                   "DPN131's output signature, without building it (faster children, for tests)")
    p.add_argument("--hugepages", choices=("both", "on", "off"), default="both",
                   help="numpy's transparent-huge-page advice in the memory streams (NUMPY_MADVISE_HUGEPAGE): both "
                   "= the pair once with it on (numpy's default) and once off (default); the kill/resume runs with "
                   "it on unless 'off'")
    p.add_argument("--repeats", type=int, help="memory pairs per huge-page mode, interleaved (default 3; 1 with "
                   "--quick): the growth is reported per pair and as median [min, max]")
    p.add_argument("--skip-memory", action="store_true", help="only the kill/resume (its reference then is an "
                   "extra uninterrupted run)")
    p.add_argument("--results", help="folder of stream-latest.{json,md} (default benchmarks/results)")
    p.add_argument("--no-readme", action="store_true", help="do not write the section into benchmarks/README.md")
    p.add_argument("--readme", action="store_true", help="write the README section even with --quick")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.images = args.images or (2000 if args.quick else 50000)
    args.memory_short = args.memory_short or (500 if args.quick else min(5000, max(1, args.images // 10)))
    args.kill_images = args.kill_images or args.images
    args.repeats = args.repeats or (1 if args.quick else 3)
    if not 0 < args.kill_at < 1:
        p.error("--kill-at must be between 0 and 1")
    if args.kill_images > args.images or args.memory_short >= args.images:
        p.error("--kill-images must be <= --images and --memory-short < --images")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child)), default=float))
        return 0
    data = Path(args.data or Path(tempfile.gettempdir()) / f"zooinfer-stream-{args.images}")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="zooinfer-stream-work-"))
    work.mkdir(parents=True, exist_ok=True)
    opts = {"bs": args.bs, "prep_threads": args.prep_threads, "fill": args.fill, "chunk_size": args.chunk_size,
            "throttle_s": args.throttle_s, "shape_model": args.shape_model, "numpy_hugepages": args.hugepages != "off"}
    t_all = time.perf_counter()
    doc: dict[str, Any] = {"when": dt.datetime.now().isoformat(timespec="seconds"), "commit": _commit(),
                           "args": {k: v for k, v in vars(args).items() if k != "child"}}
    try:
        gen = generate(data, args.images)
        doc["data"] = gen
        print(f"images: {gen['images']:,} in {data} ({'generated' if gen['generated'] else 'reused'}, "
              f"{gen['seconds']:.1f} s)", file=sys.stderr, flush=True)
        reference = None
        if not args.skip_memory:
            modes = {"both": (True, False), "on": (True,), "off": (False,)}[args.hugepages]
            doc["memory"] = []
            for rep in range(1, args.repeats + 1):  # interleaved: a drift of the machine's load hits both modes
                for on in modes:
                    m = {**memory_growth(str(data), args.memory_short, args.images, work,
                                         {**opts, "numpy_hugepages": on}, rep), "rep": rep}
                    doc["memory"].append(m)
                    print(f"memory (numpy huge pages {m['numpy_hugepages']}, repetition {rep}): {m['growth']:.2%} "
                          "growth", file=sys.stderr, flush=True)
            doc["memory_summary"] = memory_summary(doc["memory"])
            if args.kill_images == args.images:
                reference = doc["memory"][0]["long"]
        if reference is None:
            reference = uninterrupted(str(data), args.kill_images, work, opts, "reference")
        doc["reference_metrics"] = reference["metrics"]
        doc["kill_resume"] = kill_and_resume(str(data), args.kill_images, work, opts, kill_at=args.kill_at)
        doc["problems"] = verdict(reference, doc["kill_resume"])
        print(f"kill/resume: {'PASS' if not doc['problems'] else 'FAIL'}", file=sys.stderr, flush=True)
    finally:
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
    doc["load_end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    doc["seconds"] = time.perf_counter() - t_all
    doc["thp"] = _thp()
    doc["environment"] = report.environment()
    cmd = "python benchmarks/stream.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = section(doc, cmd)
    out = Path(args.results) if args.results else HERE / "results"
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(out / "stream-latest.json", doc)
    (out / "stream-latest.md").write_text(text)
    if not args.no_readme and (not args.quick or args.readme):
        bench.replace_section(HERE / "README.md", HEADING_PREFIX, text)
    print(text)
    return 0 if not doc["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
