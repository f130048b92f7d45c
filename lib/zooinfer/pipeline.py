"""The streaming evaluation shared by every model: two paths into one scoring stage.

- :func:`run_inference`: samples -> read + preprocess (threads, bounded prefetch) -> batches of ``bs`` views ->
  backend session -> per-sample outputs -> scoring;
- :func:`score_stored`: outputs an external tool already computed (``bins``: a reader with ``read(key)``) ->
  scoring, no inference;
- scoring (both): postprocess + metric update on one ordered background thread -> ``RunResult``.

:func:`run` is the entry point; it picks the path from the session it is given.

Memory stays flat: at most ``prefetch`` preprocessed samples and two postprocess batches are in flight, and only the
accumulator's compact state (plus the first ``keep`` predictions, for plots) outlives a sample. Unreadable images are
skipped, counted and named; the run goes on.
"""
from __future__ import annotations

import importlib.util
import os
import time
from collections import deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .backends.base import sample_outputs, static_batch
from .datasets.base import ImageDataset, Sample
from .recipes.base import Recipe
from .store import PredictionStore, Skip

STAGES = ("read", "preprocess", "infer", "postprocess", "metric")


@dataclass
class StageTimer:
    """Summed seconds and item counts per stage (summed over threads: stages overlap in wall time)."""

    seconds: dict[str, float] = field(default_factory=lambda: {s: 0.0 for s in STAGES})
    items: dict[str, int] = field(default_factory=lambda: {s: 0 for s in STAGES})

    def add(self, stage: str, seconds: float, n: int = 1) -> None:
        self.seconds[stage] += seconds
        self.items[stage] += n

    def merge(self, other: "StageTimer") -> None:
        for s in STAGES:
            self.seconds[s] += other.seconds[s]
            self.items[s] += other.items[s]


@dataclass
class RunResult:
    """What one pass over a dataset produced."""

    metrics: dict[str, float]
    n_samples: int
    n_done: int
    skipped: list[tuple[str, str, str]]  # (key, path, reason)
    timer: StageTimer
    wall_s: float
    batch_size: int
    backend: str
    kept: list[tuple[Sample, Any]] = field(default_factory=list)
    accumulator: Any = None
    #: scale-out runs (zooinfer.distributed): one row per Ray worker (node, chunks, retries, images/s)
    shards: list[dict] = field(default_factory=list)
    #: scale-out runs: one row per chunk of samples (first/last key, attempts, the workers and reasons)
    chunks: list[dict] = field(default_factory=list)
    #: samples taken from the prediction store (done by the interrupted run this one resumed), not recomputed
    n_stored: int = 0
    #: a subset's 95% intervals of the accuracy figures, {metric: (lo, hi)} fractions (None: not a subset)
    intervals: dict | None = None
    #: where the run's predictions are stored (folder, chunks, samples; None: not stored)
    stored: dict | None = None
    #: the metric's per-class breakdown (``metrics.per_class`` document; None: none)
    per_class: dict | None = None

    @property
    def workers(self) -> list[dict]:
        """The old name of :attr:`shards` (one row per Ray worker)."""
        return self.shards

    @property
    def throughput(self) -> float:
        """End-to-end samples per second (wall clock, everything included)."""
        return self.n_done / self.wall_s if self.wall_s > 0 else float("nan")

    @property
    def inference_share(self) -> float:
        """Fraction of the wall time spent inside inference calls (1.0: reading, preprocessing and postprocessing
        hid entirely behind inference; on a machine with few cores they still slow inference down by sharing them)."""
        return self.timer.seconds["infer"] / self.wall_s if self.wall_s > 0 else float("nan")

    def stage_table(self) -> list[dict]:
        """The old Ascend benchmark's per-stage lines: ms per sample and samples/s of each stage alone."""
        rows = []
        for s in STAGES:
            sec, n = self.timer.seconds[s], self.timer.items[s]
            rows.append({"stage": s, "items": n, "total_s": round(sec, 4),
                         "ms_per_item": round(1e3 * sec / n, 3) if n else None,
                         "items_per_s": round(n / sec, 2) if sec > 0 else None})
        rows.append({"stage": "end-to-end", "items": self.n_done, "total_s": round(self.wall_s, 4),
                     "ms_per_item": round(1e3 * self.wall_s / self.n_done, 3) if self.n_done else None,
                     "items_per_s": round(self.throughput, 2) if self.n_done else None})
        return rows


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def backend_resource(session: Any) -> str:
    """The resource (cpu, gpu, npu) the registry declares for ``session``'s backend; "cpu" for a session the
    registry does not know (test doubles, wrappers)."""
    from .backends import registry

    spec = registry.REGISTRY.get(getattr(session, "name", None))
    return spec.resource if spec is not None else "cpu"


def default_prep_threads(resource: str = "cpu", cpus: int | None = None) -> int:
    """Preprocessing workers for a backend occupying ``resource`` on ``cpus`` CPUs (None: :func:`available_cpus`).

    cpu: a quarter of the CPUs (at least 1, at most 8), leaving the rest to inference; gpu / npu: inference does not
    use the cores, so all of them but one (the thread that batches and feeds the device), at least 1."""
    n = available_cpus() if cpus is None else cpus
    if resource in ("gpu", "npu"):
        return max(1, n - 1)
    return max(1, min(8, n // 4))


# ------------------------------------------------------------------ opt-in process-based preprocessing (prep_processes)
_WORKER_RECIPE: Recipe | None = None  # the recipe a preprocessing process works for (set by its initializer)


def _init_prep_process(recipe: Recipe) -> None:
    global _WORKER_RECIPE
    _WORKER_RECIPE = recipe


def _load_in_process(sample: Sample):
    """:func:`_load` in a preprocessing process, with the recipe its initializer received."""
    return _load(_WORKER_RECIPE, sample)


def _prep_pool(recipe: Recipe, threads: int, processes: int | None) -> tuple[Executor, Callable[[Sample], Future]]:
    """The preprocessing pool and ``submit(sample) -> Future`` of :func:`_load`'s tuple: ``threads`` threads, or
    with ``processes`` that many worker processes. Processes are forked where the OS can (the recipe is inherited,
    not pickled: a recipe holding closures works), else spawned (the recipe must pickle). Views come back pickled
    through a pipe: one extra copy of each view (PyramidBox: 2 x 12 MB per image)."""
    if not processes:
        pool: Executor = ThreadPoolExecutor(threads, thread_name_prefix="zooinfer-pre")
        return pool, lambda sample: pool.submit(_load, recipe, sample)
    import multiprocessing as mp

    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    procs = ProcessPoolExecutor(processes, mp_context=ctx, initializer=_init_prep_process, initargs=(recipe,))
    return procs, lambda sample: procs.submit(_load_in_process, sample)


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar over ``total`` images, or None when not ``enabled``: the notebook widget where ipywidgets is
    installed (tqdm.auto), else the plain text bar (tqdm.auto without ipywidgets only warns 'IProgress not found')."""
    if not enabled:
        return None
    try:
        widgets = importlib.util.find_spec("ipywidgets") is not None
    except (ImportError, ValueError):
        widgets = False
    if widgets:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="img", smoothing=0.1)


def reads_stored_results(session: Any) -> bool:
    """True for a reader of outputs computed elsewhere (``read(key)``, no ``run``), such as ``bins.OutputReader``."""
    return hasattr(session, "read") and not hasattr(session, "run")


def _load(recipe: Recipe, sample: Sample) -> tuple[Sample, Any, dict | None, str | None, float, float]:
    """Read the file (timed separately: pulls it into the page cache) then preprocess it. Never raises."""
    if sample.info.get("missing"):  # named by the ground truth, absent on disk: skipped with the dataset's reason
        return sample, None, None, str(sample.info["missing"]), 0.0, 0.0
    t0 = time.perf_counter()
    try:
        with open(sample.path, "rb") as f:
            f.read()
    except OSError as e:
        return sample, None, None, f"{type(e).__name__}: {e.strerror or e}", time.perf_counter() - t0, 0.0
    t1 = time.perf_counter()
    try:
        arrays, meta = recipe.preprocess(sample.path)
    except Exception as e:  # noqa: BLE001 - any failure on one image is counted, reported and skipped
        return sample, None, None, f"{type(e).__name__}: {e}", t1 - t0, time.perf_counter() - t1
    return sample, arrays, meta, None, t1 - t0, time.perf_counter() - t1


class _Batcher:
    """Collects views into a preallocated (bs, C, H, W) buffer; flushes when full or when the view shape changes."""

    def __init__(self, bs: int, pad_to: int | None):
        self.bs, self.pad_to = bs, pad_to
        self.buf: np.ndarray | None = None
        self.owners: list[tuple[int, int]] = []  # (sample slot, view index) per row

    def add(self, view: np.ndarray, owner: tuple[int, int]) -> bool:
        """Add a view; returns True when the batch is full."""
        if self.buf is None or self.buf.shape[1:] != view.shape:
            self.buf = np.empty((self.pad_to or self.bs, *view.shape), dtype=np.float32)
        self.buf[len(self.owners)] = view
        self.owners.append(owner)
        return len(self.owners) == self.bs

    def shape_changes(self, view: np.ndarray) -> bool:
        return bool(self.owners) and self.buf is not None and self.buf.shape[1:] != view.shape

    def take(self) -> tuple[np.ndarray, list[tuple[int, int]]]:
        n = len(self.owners)
        if self.pad_to:  # static-batch model: zero the padding rows, they are dropped after inference
            self.buf[n:] = 0.0
            batch = self.buf
        else:
            batch = self.buf[:n]
        owners, self.owners = self.owners, []
        self.buf = None  # a fresh buffer per batch: the previous one may still be read by postprocessing
        return batch, owners


class _Scoring:
    """The stage every path ends in: ``postprocess`` + metric update on one ordered background thread (at most
    ``window`` samples queued), the first ``keep`` predictions, skipped samples, stage timings, the progress bar;
    with a ``store``, each sample's compact prediction (or its skip) is written into it on the same thread, in
    dataset order, and samples already stored are scored from it (:meth:`submit_stored`)."""

    def __init__(self, recipe: Recipe, data: ImageDataset, accumulator, *, keep: int, window: int, progress: bool,
                 desc: str, store: PredictionStore | None = None):
        self.recipe, self.keep, self.window, self.store = recipe, keep, window, store
        self.compact = recipe.compact or (lambda prediction: prediction)
        #: samples scored from the store (done by an earlier, interrupted run)
        self.n_stored = 0
        self.accumulator = accumulator if accumulator is not None else recipe.new_accumulator(data)
        self.timer = StageTimer()
        self.skipped: list[tuple[str, str, str]] = []
        self.kept: list[tuple[Sample, Any]] = []
        self.n_done = 0
        self.bar = progress_bar(len(data), desc, progress)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="zooinfer-post")
        self._pending: deque[Future] = deque()
        self.t_start = time.perf_counter()

    def _finish(self, sample: Sample, outputs: Any, meta: dict) -> None:
        t0 = time.perf_counter()
        pred = self.recipe.postprocess(outputs, meta)
        t1 = time.perf_counter()
        self.accumulator.update(sample, pred)
        if self.store is not None:
            self.store.add(sample.key, self.compact(pred))
        self.timer.add("postprocess", t1 - t0)
        self.timer.add("metric", time.perf_counter() - t1)
        if len(self.kept) < self.keep:
            self.kept.append((sample, pred))

    def _finish_stored(self, sample: Sample, stored: Any) -> None:
        t0 = time.perf_counter()
        self.accumulator.update(sample, stored)
        self.timer.add("metric", time.perf_counter() - t0)

    def _tick(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def submit(self, sample: Sample, outputs: Any, meta: dict) -> None:
        """Queue one sample's outputs (one list per view for multi-view samples) for postprocessing and the metric."""
        self._queue(self._finish, sample, outputs, meta)

    def _queue(self, fn: Callable, *args: Any) -> None:
        self._pending.append(self._pool.submit(fn, *args))
        while len(self._pending) > self.window or (self._pending and self._pending[0].done()):
            self._pending.popleft().result()
            self._tick()

    def skip(self, sample: Sample, reason: str) -> None:
        """Count ``sample`` as skipped (unreadable) and go on (stored as skipped, in order)."""
        self.skipped.append((sample.key, sample.path, reason))
        if self.store is None:
            self._tick()
        else:
            self._queue(self.store.skip, sample.key, sample.path, reason)

    def submit_stored(self, sample: Sample, stored: Any) -> None:
        """Score a sample an earlier run stored (its compact prediction, or a :class:`Skip`), in order."""
        self.n_stored += 1
        if isinstance(stored, Skip):
            self.skipped.append((sample.key, stored.path, stored.reason))
            self._tick()
            return
        self.n_done += 1
        self._queue(self._finish_stored, sample, stored)

    def drain(self) -> None:
        """Wait for every queued sample (re-raises a postprocessing error)."""
        while self._pending:
            self._pending.popleft().result()
            self._tick()

    def close(self) -> None:
        """Stop the scoring thread and write the store's last chunk (also after an error or an interrupt: what was
        scored is valid and a resume need not redo it)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self.store is not None:
            self.store.flush()
        if self.bar is not None:
            self.bar.close()

    def result(self, n_samples: int, bs: int, backend: str) -> RunResult:
        wall = time.perf_counter() - self.t_start
        metrics = self.accumulator.compute() if self.n_done else {}
        return RunResult(metrics, n_samples, self.n_done, self.skipped, self.timer, wall, bs, backend, self.kept,
                         self.accumulator)


def _score(recipe: Recipe, data: ImageDataset, session: Any, feed, *, bs: int, accumulator, progress: bool,
           keep: int, store: PredictionStore | None = None) -> RunResult:
    """Run ``feed(scoring)`` (one of the paths) inside a scoring stage and return its RunResult."""
    name = getattr(session, "name", "?")
    scoring = _Scoring(recipe, data, accumulator, keep=keep, window=2 * max(bs, 1), progress=progress,
                       desc=f"{recipe.name} [{name}]", store=store)
    try:
        feed(scoring)
        scoring.drain()
    finally:
        scoring.close()
    result = scoring.result(len(data), bs, name)
    result.n_stored = scoring.n_stored
    return result


def run_inference(recipe: Recipe, dataset: ImageDataset, session, *, bs: int = 1, accumulator=None,
                  prep_threads: int | None = None, limit: int | None = None, progress: bool = True, keep: int = 0,
                  prefetch: int | None = None, prep_processes: int | None = None,
                  store: PredictionStore | None = None) -> RunResult:
    """Evaluate ``dataset`` (first ``limit`` samples) through the backend ``session`` (``run(batch)``).

    ``bs`` counts views (a two-view sample occupies two rows). With a static-batch session ``bs`` must equal its
    batch size; the last partial batch is zero-padded and the padding dropped. ``prep_threads`` read and preprocess
    (None: :func:`default_prep_threads` for the session's resource in the backend registry), at most ``prefetch``
    samples ahead (None: max(2 bs, 4 workers)). ``prep_processes`` (opt-in, e.g. where threads stop scaling on the
    GIL) preprocesses in that many worker processes instead of threads: same order, same results.

    ``store``: each sample's compact prediction is written into it; samples it already holds (an interrupted run
    being resumed) are not read or inferred but scored from it, in dataset order, so the metrics are those of an
    uninterrupted run.
    """
    from .errors import BackendError, ZooinferError

    if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
        raise ZooinferError(f"bs must be an integer >= 1, got {bs!r}")
    data = dataset.subset(limit)
    fixed = static_batch(session)
    if fixed is not None and bs != fixed:
        raise BackendError(f"{session.name}: the model has a static batch size of {fixed}; run with bs={fixed} "
                           f"(got bs={bs}) or export/convert the model again for bs={bs}")
    n_threads = prep_threads or default_prep_threads(backend_resource(session))
    window = prefetch or max(2 * bs, 4 * (prep_processes or n_threads))

    def feed(scoring: _Scoring) -> None:
        timer = scoring.timer
        slots: dict[int, list] = {}  # sample slot -> [sample, meta, n_views, outputs per view]
        batcher = _Batcher(bs, fixed)

        def infer_flush() -> None:
            batch, owners = batcher.take()
            t0 = time.perf_counter()
            outs = session.run(batch)
            timer.add("infer", time.perf_counter() - t0, len(owners))
            for row, (slot, view) in enumerate(owners):
                entry = slots[slot]
                entry[3][view] = sample_outputs(outs, batch.shape[0], row)
                if all(v is not None for v in entry[3]):
                    del slots[slot]
                    sample, meta, n_views, per_view = entry
                    scoring.submit(sample, per_view[0] if n_views == 1 else per_view, meta)

        stored = set(store.done) if store is not None else set()
        pre_pool, submit = _prep_pool(recipe, n_threads, prep_processes)

        def start(sample: Sample):  # a stored sample needs no reading: it waits in line as itself
            return sample if sample.key in stored else submit(sample)

        with pre_pool:
            it = iter(data)
            inflight: deque = deque()
            for _ in range(window):
                nxt = next(it, None)
                if nxt is None:
                    break
                inflight.append(start(nxt))
            slot_id = 0
            while inflight:
                head = inflight.popleft()
                nxt = next(it, None)
                if nxt is not None:
                    inflight.append(start(nxt))
                if isinstance(head, Sample):  # stored: every sample before it goes to scoring first
                    if batcher.owners:
                        infer_flush()
                    scoring.submit_stored(head, store.get(head.key))
                    continue
                sample, views, meta, err, t_read, t_pre = head.result()
                timer.add("read", t_read)
                if err is not None:
                    scoring.skip(sample, err)
                    continue
                timer.add("preprocess", t_pre)
                meta = recipe.meta_for(sample, meta)
                slots[slot_id] = [sample, meta, len(views), [None] * len(views)]
                for v, view in enumerate(views):
                    if batcher.shape_changes(view):
                        infer_flush()
                    if batcher.add(view, (slot_id, v)):
                        infer_flush()
                slot_id += 1
                scoring.n_done += 1
            if batcher.owners:
                infer_flush()

    return _score(recipe, data, session, feed, bs=bs, accumulator=accumulator, progress=progress, keep=keep,
                  store=store)


def score_stored(recipe: Recipe, dataset: ImageDataset, reader, *, bs: int = 1, accumulator=None,
                 limit: int | None = None, progress: bool = True, keep: int = 0,
                 store: PredictionStore | None = None) -> RunResult:
    """Score outputs computed elsewhere (e.g. on an Ascend NPU by ais_bench): ``reader.read(key)`` gives one
    sample's outputs (``bins.OutputReader``); no inference. Preprocessing runs only for its meta (decoded sizes...);
    a sample whose result files are missing or unreadable is skipped. ``bs`` only sizes the scoring queue."""
    data = dataset.subset(limit)

    stored = set(store.done) if store is not None else set()

    def feed(scoring: _Scoring) -> None:
        for sample in data:
            if sample.key in stored:
                scoring.submit_stored(sample, store.get(sample.key))
                continue
            if sample.info.get("missing"):
                scoring.skip(sample, str(sample.info["missing"]))
                continue
            t0 = time.perf_counter()
            try:
                outputs = reader.read(sample.key)
                # the meta postprocessing needs (decoded sizes...) and the dataset's own (ids, annotation sizes)
                meta = recipe.meta_for(sample, recipe.preprocess(sample.path)[1])
            except (OSError, ValueError) as e:
                scoring.skip(sample, f"{type(e).__name__}: {e}")
                continue
            scoring.timer.add("read", time.perf_counter() - t0)
            scoring.submit(sample, outputs, meta)
            scoring.n_done += 1

    return _score(recipe, data, reader, feed, bs=bs, accumulator=accumulator, progress=progress, keep=keep,
                  store=store)


def rescore(recipe: Recipe, dataset: ImageDataset, store: PredictionStore, *, accumulator=None,
            progress: bool = False, backend: str = "stored") -> RunResult:
    """The metrics of the predictions ``store`` holds for ``dataset``'s samples, fed in dataset order into
    ``accumulator`` (default: a fresh ``recipe.new_accumulator(dataset)``): no model, no images. Every sample must
    be stored (predicted or skipped); the error names the missing ones."""
    from .errors import ZooinferError

    missing = [s.key for s in dataset if s.key not in store]
    if missing:
        raise ZooinferError(f"{store.folder.parent}: {len(missing)} of {len(dataset)} samples have no stored "
                            f"prediction (first: {', '.join(missing[:3])}); resume that run to complete it "
                            "(resume=<run folder>)")

    def feed(scoring: _Scoring) -> None:
        for sample in dataset:
            scoring.submit_stored(sample, store.get(sample.key))

    session = type("Stored", (), {"name": backend})()
    return _score(recipe, dataset, session, feed, bs=1, accumulator=accumulator, progress=progress, keep=0)


def run(recipe: Recipe, dataset: ImageDataset, session, *, bs: int = 1, accumulator=None,
        prep_threads: int | None = None, limit: int | None = None, progress: bool = True, keep: int = 0,
        prefetch: int | None = None, prep_processes: int | None = None,
        store: PredictionStore | None = None) -> RunResult:
    """Evaluate ``dataset`` (first ``limit`` samples) and return metrics, timings, skips; with a ``store``, write
    every sample's compact prediction into it and take those it already holds from it (a resume).

    ``session`` is a backend session (``run(batch)``: :func:`run_inference`) or a reader of stored results
    (``read(key)``, e.g. ``bins.OutputReader``: :func:`score_stored`, preprocessing threads and prefetch unused).
    """
    if reads_stored_results(session):
        return score_stored(recipe, dataset, session, bs=bs, accumulator=accumulator, limit=limit,
                            progress=progress, keep=keep, store=store)
    return run_inference(recipe, dataset, session, bs=bs, accumulator=accumulator, prep_threads=prep_threads,
                         limit=limit, progress=progress, keep=keep, prefetch=prefetch, prep_processes=prep_processes,
                         store=store)
