"""LoadGen's two callbacks objects over a dataset and a session: the query sample library (:class:`SampleStore`:
preprocessed samples held in memory) and the system under test (:class:`BatchingSUT`: greedy dynamic batching of
up to ``bs`` rows, postprocessing before a response is reported complete)."""
from __future__ import annotations

import os
import threading
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from ..backends.base import sample_outputs, static_batch
from ..errors import BackendError, ZooinferError


@dataclass
class _Loaded:
    views: tuple[np.ndarray, ...] | None
    meta: dict | None
    error: str | None


class SampleStore:
    """LoadGen's query sample library over a dataset: ``load``/``unload`` are LoadGen's callbacks (lists of dataset
    indices); loaded samples are preprocessed views held in memory. Unloaded samples stay cached (up to
    ``cache_limit``) so the many short runs of a Server search do not preprocess the same samples again."""

    def __init__(self, recipe, dataset, workers: int | None = None, cache_limit: int = 0):
        self.recipe, self.dataset = recipe, dataset
        self.workers = workers or max(1, min(8, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                                 else (os.cpu_count() or 1))))
        self.cache_limit = cache_limit
        self._loaded: dict[int, _Loaded] = {}
        self._cache: OrderedDict[int, _Loaded] = OrderedDict()
        self._lock = threading.Lock()
        self.preprocessed = 0  # preprocess calls made (cache misses)

    def __len__(self) -> int:
        return len(self.dataset)

    def _prepare(self, index: int) -> _Loaded:
        sample = self.dataset[index]
        try:
            views, meta = self.recipe.preprocess(sample.path)
        except Exception as e:  # noqa: BLE001 - an unreadable image is answered empty and skipped, as in the pipeline
            return _Loaded(None, None, f"{type(e).__name__}: {e}")
        views = tuple(np.ascontiguousarray(v, dtype=np.float32) for v in views)
        return _Loaded(views, self.recipe.meta_for(sample, meta), None)

    def load(self, indices: Iterable[int]) -> None:
        indices = [int(i) for i in indices]
        with self._lock:
            missing = [i for i in indices if i not in self._cache and i not in self._loaded]
        if missing:
            if len(missing) == 1 or self.workers == 1:
                prepared = [self._prepare(i) for i in missing]
            else:
                with ThreadPoolExecutor(min(self.workers, len(missing)), thread_name_prefix="zooinfer-qsl") as pool:
                    prepared = list(pool.map(self._prepare, missing))
            self.preprocessed += len(missing)
            fresh = dict(zip(missing, prepared))
        else:
            fresh = {}
        with self._lock:
            for i in indices:
                item = fresh.get(i) or self._loaded.get(i) or self._cache.pop(i, None)
                self._loaded[i] = item

    def unload(self, indices: Iterable[int]) -> None:
        with self._lock:
            for i in indices:
                item = self._loaded.pop(int(i), None)
                if item is not None and self.cache_limit > 0:
                    self._cache[int(i)] = item
                    self._cache.move_to_end(int(i))
            while len(self._cache) > self.cache_limit:
                self._cache.popitem(last=False)

    def get(self, index: int) -> _Loaded:
        try:
            return self._loaded[index]
        except KeyError:
            raise ZooinferError(f"LoadGen issued sample {index}, which it has not loaded") from None

    def clear(self) -> None:
        with self._lock:
            self._loaded.clear()
            self._cache.clear()


# ------------------------------------------------------------------------------------------------ SUT: batching
class BatchingSUT:
    """LoadGen's system under test over a session: queues issued samples (one row per view) and runs them in batches
    of up to ``bs`` rows of one shape on one worker thread; a second thread postprocesses and reports completion.

    Written by hand because LoadGen leaves batching to the SUT (its Python demos answer from a thread per query).
    ``record``: accuracy mode, keep every postprocessed prediction by dataset index."""

    def __init__(self, lg, recipe, store: SampleStore, session, bs: int, *, postprocess: bool = True):
        fixed = static_batch(session)
        if fixed is not None and bs != fixed:
            raise BackendError(f"{getattr(session, 'name', 'session')}: the model has a static batch size of {fixed}; "
                               f"run LoadGen with bs={fixed} (got bs={bs})")
        if bs < 1:
            raise ZooinferError(f"bs must be >= 1 (got {bs})")
        self.lg, self.recipe, self.store, self.session = lg, recipe, store, session
        self.bs, self.pad_to, self.postprocess = int(bs), fixed, postprocess
        self.record = False
        #: performance mode with a response payload (the TEST01 audit): prediction -> the bytes each response
        #: carries, so LoadGen's accuracy log holds what was answered (None: empty responses)
        self.encode: Any = None
        self.predictions: dict[int, Any] = {}
        self.skipped: dict[int, str] = {}
        self.batches: list[int] = []  # rows per batch run (for tests and the batching statistics)
        self.error: BaseException | None = None
        self._rows: deque = deque()  # (query id, sample index, view index, view)
        self._pending: dict[int, list] = {}  # query id -> [index, outputs per view, remaining]
        self._cv = threading.Condition()
        self._stop = False
        self._post = ThreadPoolExecutor(1, thread_name_prefix="zooinfer-sut-post")
        self._worker = threading.Thread(target=self._loop, name="zooinfer-sut", daemon=True)
        self._worker.start()

    # LoadGen callbacks ---------------------------------------------------------------------------------
    def issue_queries(self, query_samples) -> None:
        immediate = []
        with self._cv:
            for qs in query_samples:
                item = self.store.get(qs.index)
                if item.error is not None or self.error is not None:
                    immediate.append((qs.id, qs.index))
                    if item.error is not None:
                        self.skipped[qs.index] = item.error
                    continue
                self._pending[qs.id] = [qs.index, [None] * len(item.views), len(item.views)]
                for v, view in enumerate(item.views):
                    self._rows.append((qs.id, qs.index, v, view))
            self._cv.notify()
        if immediate:
            self._complete([(qid, idx, None) for qid, idx in immediate])

    def flush_queries(self) -> None:
        """Nothing is held back (the worker runs whatever is queued), so there is nothing to flush."""

    # worker ----------------------------------------------------------------------------------------------
    def _take(self) -> list:
        rows = [self._rows.popleft()]
        shape = rows[0][3].shape
        while self._rows and len(rows) < self.bs and self._rows[0][3].shape == shape:
            rows.append(self._rows.popleft())
        return rows

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._rows and not self._stop:
                    self._cv.wait()
                if self._stop and not self._rows:
                    return
                rows = self._take()
            self._run(rows)

    def _run(self, rows: list) -> None:
        n = len(rows)
        size = self.pad_to or n
        try:
            if self.error is not None:
                raise self.error
            batch = np.empty((size, *rows[0][3].shape), dtype=np.float32)
            for r, row in enumerate(rows):
                batch[r] = row[3]
            if size > n:
                batch[n:] = 0.0
            outs = self.session.run(batch)
            self.batches.append(n)
        except BaseException as e:  # noqa: BLE001 - LoadGen waits for every response: answer, then re-raise later
            if self.error is None:
                self.error = e
            outs = None
        done = []
        with self._cv:
            for r, (qid, index, view, _) in enumerate(rows):
                entry = self._pending.get(qid)
                if entry is None:
                    continue
                entry[1][view] = None if outs is None else sample_outputs(outs, size, r)
                entry[2] -= 1
                if entry[2] == 0:
                    del self._pending[qid]
                    done.append((qid, index, None if outs is None else entry[1]))
        if done:
            if self.postprocess or self.record or self.encode is not None:
                self._post.submit(self._finish, done)
            else:
                self._complete(done)

    def _finish(self, done: list) -> None:
        answered = []
        for qid, index, per_view in done:
            payload = None
            if per_view is not None and self.error is None:
                try:
                    item = self.store.get(index)
                    pred = self.recipe.postprocess(per_view[0] if len(per_view) == 1 else per_view, item.meta)
                    if self.record or self.encode is not None:
                        compact = getattr(self.recipe, "compact", None)
                        pred = compact(pred) if compact else pred
                    if self.record:
                        self.predictions[index] = pred
                    elif self.encode is not None:
                        payload = self.encode(pred)
                except BaseException as e:  # noqa: BLE001 - answered anyway, raised after the run
                    if self.error is None:
                        self.error = e
            answered.append((qid, index, payload))
        self._complete(answered)

    def _complete(self, done: list) -> None:
        lg = self.lg
        if self.record:
            # accuracy mode: each response carries its dataset index (8 bytes), so LoadGen's accuracy log records
            # which sample each response answered (checked after the run: every sample exactly once)
            payload = np.array([index for _, index, _ in done], dtype=np.int64)
            responses = [lg.QuerySampleResponse(qid, int(payload.ctypes.data) + 8 * k, 8)
                         for k, (qid, _, _) in enumerate(done)]
            lg.QuerySamplesComplete(responses)
            del payload
        elif any(isinstance(data, bytes) for _, _, data in done):
            # each response carries its bytes (LoadGen copies the ones it logs before QuerySamplesComplete returns)
            buffers = [np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) and data else None
                       for _, _, data in done]
            lg.QuerySamplesComplete([lg.QuerySampleResponse(qid, 0, 0) if buf is None else
                                     lg.QuerySampleResponse(qid, int(buf.ctypes.data), buf.nbytes)
                                     for (qid, _, _), buf in zip(done, buffers)])
            del buffers
        else:
            lg.QuerySamplesComplete([lg.QuerySampleResponse(qid, 0, 0) for qid, _, _ in done])

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._worker.join(timeout=30)
        self._post.shutdown(wait=True)

    def reset(self, record: bool = False) -> None:
        """Before a new LoadGen run: clear the per-run state."""
        self.record = record
        self.predictions, self.skipped, self.batches = {}, {}, []
