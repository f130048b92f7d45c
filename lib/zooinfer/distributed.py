"""Scale-out: one evaluation spread over many processes or machines with Ray, same figures as one process.

:func:`evaluate_distributed` takes the run's :class:`zooinfer.config.RunConfig`, the recipe, the dataset, the
driver's artefacts (the ONNX file) and the run's :class:`zooinfer.store.PredictionStore`, and returns a
``RunResult``.

- **Chunks.** The selected samples (after ``limit``) that the store does not hold yet are cut, in dataset order,
  into small chunks of ``chunk_size`` samples (:func:`default_chunk_size`: about 8 chunks per worker, at least
  ``4 * bs`` and at most 256 samples, unless given). Samples already in the store (an interrupted run being resumed)
  are never handed out.
- **Workers are Ray actors** (``config.processes`` of them, fewer when there are fewer chunks or the cluster's CPUs
  do not fit them all; each asks Ray for what :func:`_task_resources` gives: a share of the CPUs, and a GPU/NPU for
  a device backend). A worker opens its backend session once (through the backend registry, threads = its CPUs,
  on its own cores when ``ZOOINFER_PIN_CORES=1``) and keeps it for every chunk it gets; a chunk runs the normal
  :func:`zooinfer.pipeline.run` and sends back compact ``(key, prediction)`` pairs (``recipe.compact``), its
  skipped samples, its stage timings and (first chunks only) the first ``keep`` full predictions; never images.
- **Dispatch.** The driver hands chunks out as workers free up (at most :data:`DEPTH` calls in flight per worker,
  one at the tail), so a slow node does fewer chunks and never holds the run by more than a chunk or two.
- **Store.** The driver writes every completed chunk into the store as one ``write_chunk`` (in completion order):
  an interrupted or failed run keeps every completed chunk and a resume hands out only the rest. Without a store
  the run uses a temporary one.
- **Metrics.** After the last chunk, :func:`zooinfer.pipeline.rescore` feeds every sample's stored prediction, in
  dataset order, into one fresh ``recipe.new_accumulator``: the metrics are those of a single-process run.
- **Faults.** A chunk whose call raises, or whose worker process dies (the worker is then replaced by a new actor),
  is repeated on another live worker: only that chunk, once per failure. A chunk fails at most ``MAX_RETRIES + 1``
  times; then the run ends with a ``ZooinferError`` naming the chunk's samples and every attempt's reason
  (``Evaluation.finish``, the only step that writes a report, is then never reached). Calls queued behind a chunk
  that killed its worker never started: they are handed out again without counting as a failure. Attempts per
  chunk are in ``RunResult.chunks`` and each worker's failures in its ``RunResult.shards`` row. A worker that dies
  before it runs (it cannot start, or cannot unpickle what it is sent) is started again up to ``MAX_RETRIES``
  times; then its slot is given up while other workers run, and the run ends when none is left.
- **Test hook (fault injection)**: the driver's environment variables :data:`FAIL_ENV` (``ZOOINFER_FAIL_CHUNK``:
  chunk numbers, counting from 0, comma-separated), :data:`FAIL_MODE_ENV` (``ZOOINFER_FAIL_CHUNK_MODE``: ``raise``,
  the default, raises in the worker; ``exit`` kills the worker process with ``os._exit(1)``) and
  :data:`FAIL_ONCE_ENV` (``ZOOINFER_FAIL_CHUNK_ONCE``: a folder; each listed chunk then fails only on its first
  attempt, recorded by a marker file there, so "once" holds across worker restarts; unset: every attempt fails).
  They are read by the driver when the run starts and sent to the workers. For tests only.

Ray is optional (``pip install "zooinfer[ray]"``) and imported only here. Cluster set-up: docs/scale-out.md.
"""
from __future__ import annotations

import math
import os
import socket
import tempfile
import time
import warnings
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import pipeline, report
from .backends import registry
from .backends.registry import Artefacts, Backend, SessionOptions
from .config import RunConfig
from .datasets.base import ImageDataset
from .errors import ZooinferError
from .store import PredictionStore, Skip

#: repeats of a failed chunk (a chunk runs at most MAX_RETRIES + 1 times)
MAX_RETRIES = 2
#: chunk calls in flight per worker: one running and one queued behind it, so no worker waits for the driver
DEPTH = 2
#: the default chunk size's bounds and its target of chunks per worker (see :func:`default_chunk_size`)
CHUNKS_PER_WORKER, MAX_CHUNK, MIN_CHUNK_BATCHES = 8, 256, 4
#: a backend's resource -> the Ray resource one worker asks for (Ray sets CUDA_VISIBLE_DEVICES /
#: ASCEND_RT_VISIBLE_DEVICES, so the worker's device is 0); CPU backends ask for CPUs only
RAY_RESOURCES = {"gpu": "GPU", "npu": "NPU"}
#: environment variable: 1 pins each CPU worker to its own block of its node's cores (default: the OS places them;
#: on a shared machine pinning was slower, see docs/scale-out.md)
PIN_ENV = "ZOOINFER_PIN_CORES"
#: test hook (fault injection), read on the driver: see the module's docstring
FAIL_ENV, FAIL_MODE_ENV, FAIL_ONCE_ENV = "ZOOINFER_FAIL_CHUNK", "ZOOINFER_FAIL_CHUNK_MODE", "ZOOINFER_FAIL_CHUNK_ONCE"
#: seconds without any worker ready after which the driver says what it waits for
READY_WARN_S = 120.0
INSTALL_HINT = 'pip install "zooinfer[ray]" (in a checkout: pip install -e ".[ray]")'
#: seconds a TCP connect to ``ray_address`` may take before the run stops with a clear error (not Ray's retries)
RAY_CONNECT_TIMEOUT_S = 3.0


def import_ray():
    """The ``ray`` module, or a ZooinferError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ZooinferError(f"processes > 1 or ray_address needs Ray, which is not installed: {INSTALL_HINT}; "
                            "or run with processes=1 (one local process, no Ray)") from None
    return ray


def describe_keys(keys: list[str], first: int = 3) -> str:
    """``"3 samples: a, b, c"`` or ``"1000 samples: a, b, c, ... (+997 more)"``."""
    shown = ", ".join(keys[:first])
    more = f", ... (+{len(keys) - first} more)" if len(keys) > first else ""
    return f"{len(keys)} samples: {shown}{more}"


def default_chunk_size(n: int, workers: int, bs: int) -> int:
    """Samples per chunk for ``n`` samples to hand out over ``workers``:
    ``max(4 * bs, min(256, ceil(n / (8 * workers))))``.

    About 8 chunks per worker keeps an uneven cluster busy (a slow worker does fewer chunks; the tail is at most a
    chunk or two) and makes a repeated chunk cost ~1/8 of a worker's share; at most 256 samples (the store's chunk
    size: a repeat costs a few minutes at most, progress shows every chunk); at least 4 batches, so that each call's
    fixed costs (a pipeline start, its last partial batch, a round trip) stay small. ImageNet's 50,000 images over
    16 workers: 256 (196 chunks); WIDER FACE val (3,226) over 4 workers at bs=1: 101 (32 chunks)."""
    per = math.ceil(max(n, 1) / (CHUNKS_PER_WORKER * max(workers, 1)))
    return max(MIN_CHUNK_BATCHES * max(bs, 1), min(MAX_CHUNK, per))


# ---------------------------------------------------------------------------------------------------- worker side
@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, sent once to each worker (no model, no session, no images)."""

    config: RunConfig  # the run's configuration (backend, bs, threads, weights, om_path, keep...)
    recipe: Any  # the Recipe object itself (model facts travel with it; tests may use an unregistered one)
    data: ImageDataset  # the run's selected samples; a chunk is a list of positions in it
    cpus: int  # CPUs Ray reserved for the worker
    onnx_path: str | None = None  # the driver's ONNX file (backends that need one)
    pin: bool = False  # pin the worker to its own cores (see PIN_ENV)
    #: (file name, ObjectRef of the ONNX bytes) for nodes that cannot see ``onnx_path``; empty: not shipped
    onnx_blob: tuple = ()
    #: the fault-injection test hook: {"chunks": [...], "mode": "raise" | "exit", "once": folder or None}
    fail: dict = field(default_factory=dict)

    @property
    def backend(self) -> Backend:
        return registry.get(self.config.backend)


class Ledger:
    """A tiny Ray actor: the attempts each chunk started (and where), the workers' progress, and which cores of a
    node each pinned worker holds."""

    def __init__(self) -> None:
        self.attempts: dict[int, list[str]] = {}
        self.claimed: dict[str, set[int]] = {}
        self.done: dict[int, int] = {}

    def started(self, chunk: int, where: str) -> int:
        """Record that an attempt of ``chunk`` started on ``where``; returns its number (1, 2, ...)."""
        self.attempts.setdefault(chunk, []).append(where)
        self.done[chunk] = 0
        return len(self.attempts[chunk])

    def started_count(self, chunk: int) -> int:
        return len(self.attempts.get(chunk, ()))

    def progress(self, chunk: int, n: int) -> None:
        self.done[chunk] = n

    def progress_total(self) -> int:
        return sum(self.done.values())

    def claim(self, node: str, slots: int) -> int | None:
        used = self.claimed.setdefault(node, set())
        free = next((s for s in range(slots) if s not in used), None)
        if free is not None:
            used.add(free)
        return free

    def release(self, node: str, slot: int) -> None:
        self.claimed.get(node, set()).discard(slot)

    def summary(self) -> dict[int, list[str]]:
        return self.attempts


class Collector:
    """A chunk's accumulator: keeps ``(key, compact prediction)`` pairs in the order they arrive, and calls
    ``report(count)`` at most every ``every`` seconds (progress for the driver's bar)."""

    def __init__(self, compact, report=None, every: float = 1.0) -> None:
        self.compact = compact
        self.pairs: list[tuple[str, Any]] = []
        self.report, self.every, self.last = report, every, time.monotonic()

    def update(self, sample, prediction) -> None:
        self.pairs.append((sample.key, prediction if self.compact is None else self.compact(prediction)))
        if self.report is not None and time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            self.report(len(self.pairs))

    def compute(self) -> dict[str, float]:
        return {}


class InjectedFault(RuntimeError):
    """The failure the fault-injection test hook raises (:data:`FAIL_ENV`)."""


def _fault_hook() -> dict:
    """The fault-injection test hook's settings from the driver's environment ({} when not set)."""
    text = os.environ.get(FAIL_ENV, "").strip()
    if not text:
        return {}
    try:
        chunks = [int(c) for c in text.replace(" ", "").split(",") if c]
    except ValueError:
        raise ZooinferError(f"{FAIL_ENV}={text!r}: expected chunk numbers (from 0), comma-separated") from None
    mode = os.environ.get(FAIL_MODE_ENV, "raise").strip() or "raise"
    if mode not in ("raise", "exit"):
        raise ZooinferError(f"{FAIL_MODE_ENV}={mode!r}: expected raise or exit")
    return {"chunks": chunks, "mode": mode, "once": os.environ.get(FAIL_ONCE_ENV) or None}


def _inject_fault(fail: dict, chunk: int) -> None:
    """The test hook: fail this attempt of ``chunk`` if it is listed (only its first attempt with a ``once``
    folder, whose marker file is created atomically, so a restarted worker does not fail it again)."""
    if not fail or chunk not in fail["chunks"]:
        return
    if fail.get("once"):
        try:
            os.close(os.open(Path(fail["once"]) / f"chunk-{chunk}.failed", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    if fail["mode"] == "exit":
        # Ray sends a call's reply asynchronously: give the previous chunk's reply a moment to leave, so that only
        # this chunk is lost (a real death can also take the reply of the chunk just finished: that one is repeated)
        time.sleep(1.0)
        os._exit(1)
    raise InjectedFault(f"injected failure of chunk {chunk} ({FAIL_ENV})")


def _pin(ray, ledger, cpus: int):
    """Pin this thread (and the threads it starts: ORT's pool, preprocessing) to a free block of ``cpus`` cores of
    this node; the blocks are handed out by the ledger so workers on one node never share cores. None: not pinned."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    slots = len(allowed) // cpus
    if slots < 2:  # the worker has the whole node anyway
        return None
    node = ray.get_runtime_context().get_node_id()
    slot = ray.get(ledger.claim.remote(node, slots))
    if slot is None:
        return None
    cores = allowed[slot * cpus:(slot + 1) * cpus]
    os.sched_setaffinity(0, cores)
    return node, slot, allowed, cores


def _local_onnx(spec: WorkerSpec, ray) -> str:
    """The ONNX file on this node: the driver's path when visible here, else a copy fetched from the object store."""
    if Path(spec.onnx_path).is_file() or not spec.onnx_blob:
        return spec.onnx_path
    from .export import cache_dir

    name, ref = spec.onnx_blob
    local = cache_dir() / "shipped" / name
    if not local.is_file():
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{os.getpid()}.tmp")
        tmp.write_bytes(ray.get(ref))
        os.replace(tmp, local)
    return str(local)


def build_network(recipe, weights: str | None):
    """The recipe's network with ``weights`` (None: synthetic), in eval mode: what ``models.build_model`` builds for a
    registered model, also for an unregistered recipe that names its builder."""
    if recipe.build is None:
        from .models import build_model

        return build_model(recipe.name, weights)
    return recipe.build(None if weights is None else os.fspath(weights)).eval()


#: how a worker provides each artefact a backend can need (the registry's declarations decide which are asked for)
_TASK_ARTEFACTS = {
    "onnx_path": lambda spec, ray: _local_onnx(spec, ray),
    "model": lambda spec, ray: build_network(spec.recipe, spec.config.weights),
    "om_path": lambda spec, ray: spec.config.om_path,
}
#: artefacts every node must see at the driver's path: need -> (what it is, its path in the configuration)
_SHARED_FILES = {"model": ("checkpoint", lambda c: c.weights), "om_path": ("OM file", lambda c: c.om_path)}


def _open_session(spec: WorkerSpec, ray, threads: int):
    """The worker's backend session, opened through the registry as the single process opens it, with the worker's
    threads and device (0 = the worker's GPU/NPU) and ONNX Runtime's optimised-graph cache read but never written
    (workers start together and would race on the file)."""
    backend = spec.backend
    unsupported = [n for n in backend.needs if n not in _TASK_ARTEFACTS]
    if unsupported:
        raise ZooinferError(f"backend {backend.name!r} needs {', '.join(unsupported)}, which a Ray worker cannot "
                            "provide; run it with processes=1")
    artefacts = Artefacts(**{need: _TASK_ARTEFACTS[need](spec, ray) for need in backend.needs})
    device = 0 if backend.resource in RAY_RESOURCES else spec.config.device_id
    options = SessionOptions.from_config(spec.config, threads=threads, device_id=device, optimized_cache="read")
    return backend.open(artefacts, options)


def _check_visible(spec: WorkerSpec) -> None:
    """Files every node must see at the driver's paths (else the pipeline would skip every image as unreadable)."""
    need = [("data root", str(spec.data.root))]
    for artefact in spec.backend.needs:
        if artefact in _SHARED_FILES:
            what, path = _SHARED_FILES[artefact][0], _SHARED_FILES[artefact][1](spec.config)
            if path:
                need.append((what, path))
    for what, path in need:
        if not Path(path).exists():
            raise ZooinferError(f"the {what} {path} is not visible on node {socket.gethostname()}: every node must "
                                "see it at the same path as the driver (shared storage; docs/scale-out.md)")


class ChunkWorker:
    """One worker (a Ray actor): opens its backend session on its first chunk and keeps it for the next ones.
    After a chunk that raised, the session is dropped and opened again on the next chunk (it may be broken)."""

    def __init__(self, spec: WorkerSpec, ledger) -> None:
        self.spec, self.ledger = spec, ledger
        self.where = f"{socket.gethostname()}:{os.getpid()}"
        self.session = None
        self.pinned = None
        self.threads = spec.config.threads or spec.cpus

    def ready(self) -> dict:
        """Where this worker runs (the driver hands it chunks only once this answered)."""
        import ray

        return {"where": self.where, "node": ray.get_runtime_context().get_node_id()}

    def _open(self, ray) -> float:
        t0 = time.perf_counter()
        _check_visible(self.spec)
        if self.spec.pin and self.pinned is None:
            self.pinned = _pin(ray, self.ledger, self.spec.cpus)
        self.session = _open_session(self.spec, ray, self.threads)
        return time.perf_counter() - t0

    def run_chunk(self, chunk: int, positions: list[int], keep: int) -> dict:
        """The pipeline over the samples at ``positions`` of the run's data. Returns compact predictions, skipped
        samples, timings and the first ``keep`` full predictions (never images)."""
        import ray

        attempt = ray.get(self.ledger.started.remote(chunk, self.where))
        spec, cfg = self.spec, self.spec.config
        try:
            open_s = self._open(ray) if self.session is None else 0.0
            if self.pinned is not None:  # this call's thread (and those it starts) on the worker's cores
                os.sched_setaffinity(0, self.pinned[3])
            _inject_fault(spec.fail, chunk)
            data = replace(spec.data, samples=[spec.data.samples[i] for i in positions])
            collector = Collector(spec.recipe.compact, report=lambda n: self.ledger.progress.remote(chunk, n))
            prep = cfg.prep_threads or pipeline.default_prep_threads(spec.backend.resource, spec.cpus)
            res = pipeline.run(spec.recipe, data, self.session, bs=cfg.bs, accumulator=collector, prep_threads=prep,
                               prep_processes=cfg.prep_processes, progress=False, keep=keep)
        except BaseException:
            self.session = None
            raise
        return {"chunk": chunk, "attempt": attempt, "where": self.where, "preds": collector.pairs,
                "skipped": res.skipped, "kept": res.kept, "timer": res.timer, "n_done": res.n_done,
                "run_s": res.wall_s, "open_s": open_s, "threads": getattr(self.session, "threads", self.threads),
                "device": getattr(self.session, "device", None),
                "cores": None if self.pinned is None else self.pinned[3],
                "pin": None if self.pinned is None else self.pinned[:2]}


# ---------------------------------------------------------------------------------------------------- driver side
def _init_ray(ray, address: str | None) -> bool:
    """Connect to ``address`` (``host:port``, ``ray://host:port`` or ``auto``) once a plain TCP connect shows
    something answers there, or start a private local instance over this machine's CPUs; reuse an initialised Ray.
    Returns whether this call started (and so should shut down) the connection.

    Without an address Ray is started with ``address="local"``: a new instance, never the cluster ``RAY_ADDRESS``
    names or one another user started on this machine (which ``ray.init()`` would join)."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False}
    if address:
        _check_reachable(address, _resolved(address))
        ray.init(address=address, **kwargs)
    else:
        ray.init(address="local", num_cpus=pipeline.available_cpus(), **kwargs)
    return True


def _resolved(address: str) -> str:
    """The ``host:port`` Ray would connect to for ``address``: ``auto`` as Ray resolves it (``RAY_ADDRESS``, else the
    cluster last started on this machine), or a ZooinferError when there is none."""
    if address != "auto":
        return address
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:  # a Ray without this helper: ray.init resolves "auto" itself
        return address
    try:
        found = canonicalize_bootstrap_address("auto")
    except ConnectionError:
        found = None
    if not found:
        raise ZooinferError("ray_address 'auto': no running Ray cluster found on this machine (start one with "
                            "`ray start --head`, give its host:port, or leave ray_address empty for a private local "
                            "instance)")
    return found


def _check_reachable(address: str, target: str, timeout_s: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """A ZooinferError naming ``ray_address`` unless a TCP connection to ``target`` (``[ray://]host:port``) opens
    within ``timeout_s`` seconds (Ray itself retries an unreachable address for minutes, saying so only in its
    logs)."""
    if target == "auto":
        return
    host, sep, port = target.split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ZooinferError(f"ray_address {address!r}: expected host:port (the Ray head's GCS address, e.g. "
                            "192.168.1.10:6379), ray://host:port or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as e:
        raise ZooinferError(f"ray_address {address!r}: nothing answers at {host}:{port} "
                            f"({e.strerror or type(e).__name__} within {timeout_s:g} s); start the cluster there "
                            f"(`ray start --head --port {port}`), fix the address, or leave ray_address empty for a "
                            "private local instance") from None


def cpus_per_task(node_cpus: list[int], n_tasks: int) -> int:
    """The most CPUs per worker such that ``n_tasks`` workers fit on the nodes at once (a worker cannot span nodes):
    2 nodes x 16 CPUs, 3 workers -> 8 (not 32 // 3 = 10, which fits only one worker per node). At least 1."""
    c = max(1, sum(node_cpus) // max(n_tasks, 1))
    while c > 1 and sum(n // c for n in node_cpus) < n_tasks:
        c -= 1
    return c


def _task_resources(backend: Backend, total: dict, node_cpus: list[int], n_shards: int) -> dict:
    """Ray resources of one worker: the cluster's CPUs shared out, plus one GPU/NPU (or a share of them) for a
    backend whose resource is a GPU/NPU."""
    res: dict[str, Any] = {"num_cpus": cpus_per_task(node_cpus or [int(total.get("CPU", 1))], n_shards)}
    kind = RAY_RESOURCES.get(backend.resource)
    if kind is not None:
        have = float(total.get(kind, 0))
        if have <= 0:
            raise ZooinferError(f"backend {backend.name!r} needs a {kind} per process, but the Ray cluster has none "
                                f"(resources: {sorted(total)}); start the nodes where the devices are, or use a CPU "
                                "backend")
        share = 1.0 if have >= n_shards else have / n_shards
        if kind == "GPU":
            res["num_gpus"] = share
        else:
            res["resources"] = {kind: share}
    return res


def ship_file(ray, path: str) -> tuple[str, Any]:
    """(content-addressed file name, ObjectRef of the bytes): what a worker needs to recreate ``path`` on its node."""
    import hashlib

    data = Path(path).read_bytes()
    p = Path(path)
    return f"{p.stem}-{hashlib.md5(data).hexdigest()[:12]}{p.suffix}", ray.put(data)


@dataclass
class _Chunk:
    """One chunk of the run: positions (in the selected data) of consecutive samples not stored yet."""

    index: int
    positions: list[int]
    keep: int  # full predictions to keep (only the first chunks keep any)
    tries: list[tuple[str, str]] = field(default_factory=list)  # failed attempts: (worker, reason)
    ran_on: str | None = None  # the worker whose attempt finished
    avoid: str | None = None  # the worker its last attempt failed on (a repeat goes to another one)
    done: bool = False


@dataclass
class _Worker:
    """One actor the driver created, and what it did."""

    slot: int
    gen: int
    handle: Any
    info: dict | None = None  # ready()'s answer: None until the actor runs
    inflight: set = field(default_factory=set)  # chunk indices
    dead: str | None = None
    chunks: int = 0
    samples: int = 0
    n_done: int = 0
    retried: int = 0  # repeated chunks it completed
    failures: list[str] = field(default_factory=list)
    open_s: float = 0.0
    busy_s: float = 0.0
    threads: int | None = None
    device: Any = None
    cores: Any = None
    pin: Any = None

    @property
    def name(self) -> str:
        return f"w{self.slot}" if self.gen == 0 else f"w{self.slot}.{self.gen}"

    @property
    def where(self) -> str:
        return self.info["where"] if self.info else "?"


def _reason(ray, error: BaseException) -> str:
    """One line saying why a chunk call failed."""
    if isinstance(error, ray.exceptions.RayActorError):
        return "the worker process died"
    cause = getattr(error, "cause", None) or error
    text = str(cause).strip()
    return f"{type(cause).__name__}: {text.splitlines()[0]}" if text else type(cause).__name__


def _failure(chunk: _Chunk, n_chunks: int, keys: list[str]) -> ZooinferError:
    reasons = "; ".join(f"attempt {a} on {w}: {r}" for a, (w, r) in enumerate(chunk.tries, 1))
    return ZooinferError(
        f"chunk {chunk.index} of {n_chunks} (numbered from 0; {describe_keys(keys)}) failed {len(chunk.tries)} "
        f"time(s) (max_retries={MAX_RETRIES}): {reasons}. No report was written; the chunks that finished are "
        "stored. Fix the cause (or move those images out of the dataset) and run again (resume= continues).")


class _Dispatcher:
    """The driver's loop: workers (actors) in, chunks out, failures repeated, completed chunks into the store."""

    def __init__(self, ray, actor_cls, spec_ref, ledger, n_workers: int, chunks: list[_Chunk], data: ImageDataset,
                 store: PredictionStore, bar, n_stored: int) -> None:
        self.ray, self.actor_cls, self.spec_ref, self.ledger = ray, actor_cls, spec_ref, ledger
        self.chunks, self.data, self.store, self.bar, self.n_stored = chunks, data, store, bar, n_stored
        self.pending: deque[_Chunk] = deque(chunks)
        self.refs: dict[Any, tuple[str, _Worker, _Chunk | None]] = {}
        self.workers: list[_Worker] = []
        self.timer = pipeline.StageTimer()
        self.kept: list[tuple[int, Any]] = []
        self.replacements = 0
        self.start_failures: dict[int, int] = {}  # slot -> workers in a row that died before they ran
        self.max_replacements = (MAX_RETRIES + 1) * (n_workers + len(chunks))
        self.t_start: float | None = None
        self.t_created = time.perf_counter()
        self.ready_s: float | None = None  # seconds until the first worker ran
        self.done_samples = 0
        self.n_completed = 0
        for slot in range(n_workers):
            self._create(slot, 0)

    # -------------------------------------------------------------------------------- workers
    def _create(self, slot: int, gen: int) -> None:
        w = _Worker(slot, gen, self.actor_cls.remote(self.spec_ref, self.ledger))
        self.workers.append(w)
        self.refs[w.handle.ready.remote()] = ("ready", w, None)

    def _replace(self, w: _Worker, why: str) -> None:
        """``w`` died: kill what is left of it and start a new worker in its place."""
        if w.dead:
            return
        w.dead = why
        try:
            self.ray.kill(w.handle, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        if w.pin is not None:
            self.ledger.release.remote(*w.pin)
        self.replacements += 1
        if self.replacements > self.max_replacements:
            raise ZooinferError(f"the Ray workers died {self.replacements} times (last: {w.name} on {w.where}: "
                                f"{why}); see the Ray logs (ray logs / /tmp/ray/session_latest/logs)")
        self._create(w.slot, w.gen + 1)

    def live(self) -> list[_Worker]:
        return [w for w in self.workers if not w.dead and w.info is not None]

    # -------------------------------------------------------------------------------- dispatch
    def _pick(self, w: _Worker, others: bool) -> _Chunk | None:
        for i, c in enumerate(self.pending):
            if c.avoid != w.name or not others:
                del self.pending[i]
                return c
        return None

    def dispatch(self) -> None:
        live = self.live()
        others = len(live) > 1
        for w in sorted(live, key=lambda w: len(w.inflight)):
            while self.pending and len(w.inflight) < DEPTH:
                if w.inflight and len(self.pending) < len(live):  # the tail: only idle workers take chunks
                    break
                c = self._pick(w, others)
                if c is None:
                    break
                if self.t_start is None:
                    self.t_start = time.perf_counter()
                w.inflight.add(c.index)
                self.refs[w.handle.run_chunk.remote(c.index, c.positions, c.keep)] = ("chunk", w, c)

    def finished(self) -> bool:
        return self.n_completed == len(self.chunks)

    # -------------------------------------------------------------------------------- results
    def handle(self, ref) -> None:
        kind, w, c = self.refs.pop(ref)
        ray = self.ray
        try:
            out = ray.get(ref)
        except ray.exceptions.RayError as e:
            if kind == "ready":
                self._not_started(w, e)
            else:
                self._failed(w, c, e)
            return
        if kind == "ready":
            if not w.dead:
                w.info = out
                if self.ready_s is None:
                    self.ready_s = time.perf_counter() - self.t_created
                self.start_failures[w.slot] = 0
            return
        w.inflight.discard(c.index)
        self._completed(w, c, out)

    def _not_started(self, w: _Worker, error: BaseException) -> None:
        """``w`` died before it ran (its process could not start, the spec could not be unpickled there...): start
        another in its place, unless that slot failed to start MAX_RETRIES + 1 times in a row."""
        if w.dead:
            return
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        why = (lines[-1] if lines else type(error).__name__)[:300]
        streak = self.start_failures.get(w.slot, 0) + 1
        self.start_failures[w.slot] = streak
        if streak <= MAX_RETRIES:
            self._replace(w, f"did not start: {why}")
            return
        w.dead = f"did not start: {why}"
        if any(not o.dead for o in self.workers):  # the others go on; this slot is given up
            warnings.warn(f"a Ray worker could not start, {streak} times in a row (last: {why}); going on with "
                          "the other workers", stacklevel=4)
            return
        raise ZooinferError(f"a Ray worker could not start, {streak} times in a row (last: {why}); every node "
                            "needs the same Python, zooinfer and backend packages as the driver (docs/scale-out.md)")

    def _failed(self, w: _Worker, c: _Chunk, error: BaseException) -> None:
        ray = self.ray
        w.inflight.discard(c.index)
        died = isinstance(error, ray.exceptions.RayActorError)
        if died:
            self._replace(w, "died")
            # a call queued behind the one that killed the worker never started: hand it out again, not a failure
            if ray.get(self.ledger.started_count.remote(c.index)) <= len(c.tries):
                self.pending.appendleft(c)
                return
        reason = _reason(ray, error)
        c.tries.append((f"{w.name} ({w.where})", reason))
        w.failures.append(f"chunk {c.index}: {reason}")
        if len(c.tries) > MAX_RETRIES:
            raise _failure(c, len(self.chunks), [self.data[i].key for i in c.positions])
        c.avoid = w.name
        self.pending.appendleft(c)

    def _completed(self, w: _Worker, c: _Chunk, out: dict) -> None:
        keys = [self.data[i].key for i in c.positions]
        got: dict[str, Any] = dict(out["preds"])
        got.update((k, Skip(str(path), str(reason))) for k, path, reason in out["skipped"])
        missing = [k for k in keys if k not in got]
        if missing or len(got) != len(keys):
            raise ZooinferError(f"chunk {c.index} came back incomplete ({len(missing)} of its {len(keys)} samples "
                                f"missing, first: {missing[:1]}, or samples of another chunk)")
        self.store.write_chunk([(k, got[k]) for k in keys])
        c.done, c.ran_on = True, f"{w.name} ({w.where})"
        self.n_completed += 1
        self.timer.merge(out["timer"])
        pos = {k: i for k, i in zip(keys, c.positions)}
        self.kept.extend((pos[s.key], (s, p)) for s, p in out["kept"])
        w.chunks += 1
        w.samples += len(keys)
        w.n_done += out["n_done"]
        w.retried += bool(c.tries)
        w.open_s += out["open_s"]
        w.busy_s += out["run_s"]
        w.threads, w.device, w.cores, w.pin = out["threads"], out["device"], out["cores"], out["pin"]
        self.done_samples += len(keys)
        self.ledger.progress.remote(c.index, len(keys))  # skipped images count as done
        if self.bar is not None:
            self.bar.n = self.n_stored + self.done_samples
            self.bar.refresh()

    def run(self) -> None:
        t0 = time.monotonic()
        warned = False
        while not self.finished():
            self.dispatch()
            if not self.refs:  # cannot happen: a dead worker is always replaced; checked anyway
                raise ZooinferError("scale-out: chunks are left but no worker is running or starting")
            done, _ = self.ray.wait(list(self.refs), num_returns=1, timeout=1.0)
            if done:
                self.handle(done[0])
                continue
            if self.bar is not None:
                self.bar.n = min(len(self.data), self.n_stored + self.ray.get(self.ledger.progress_total.remote()))
                self.bar.refresh()
            if not warned and not self.live() and time.monotonic() - t0 > READY_WARN_S:
                warned = True
                warnings.warn(f"no Ray worker has started after {READY_WARN_S:.0f} s: the cluster may lack the "
                              "resources they ask for (ray status)", stacklevel=4)

    def stop(self) -> None:
        """Kill every worker (what is running or queued on them is dropped)."""
        for w in self.workers:
            try:
                self.ray.kill(w.handle, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass

    # -------------------------------------------------------------------------------- report
    def worker_rows(self, cpus: int) -> list[dict]:
        rows = []
        for w in self.workers:
            if w.info is None and not w.chunks and not w.failures:
                continue  # never started (the cluster had no room) or replaced before it did
            rows.append({"worker": w.name, "where": w.where, "device": w.device, "cpus": cpus, "threads": w.threads,
                         "cores": ",".join(map(str, w.cores)) if w.cores else None, "chunks": w.chunks,
                         "samples": w.samples, "n_done": w.n_done, "failed": len(w.failures), "retried": w.retried,
                         "retry_reasons": "; ".join(w.failures) or None, "open_s": round(w.open_s, 3),
                         "busy_s": round(w.busy_s, 3),
                         "images_per_s": round(w.n_done / w.busy_s, 3) if w.busy_s > 0 else None,
                         "state": f"replaced ({w.dead})" if w.dead else "ok"})
        return rows

    def chunk_rows(self) -> list[dict]:
        rows = []
        for c in self.chunks:
            rows.append({"chunk": c.index, "samples": len(c.positions), "first": self.data[c.positions[0]].key,
                         "last": self.data[c.positions[-1]].key, "attempts": len(c.tries) + 1,
                         "workers": ", ".join([w for w, _ in c.tries] + [c.ran_on or "?"]),
                         "reasons": "; ".join(r for _, r in c.tries) or None})
        return rows


def evaluate_distributed(config: RunConfig, recipe, dataset: ImageDataset, *, onnx_path: str | None = None,
                         store: PredictionStore | None = None, chunk_size: int | None = None) -> pipeline.RunResult:
    """Run the evaluation ``config`` describes on ``config.processes`` Ray workers (on ``config.ray_address`` or a
    local instance) over ``dataset`` (after ``config.limit``) with ``recipe``, chunk by chunk.

    ``onnx_path``: the driver's ONNX file, for backends that need one (default: ``config.onnx_path``); torch
    backends build the network from ``config.weights`` in each worker, ``acl`` opens ``config.om_path``.
    ``store``: the run's prediction store; every completed chunk is written into it, and the samples it already
    holds (an interrupted run) are not computed again (None: a temporary store for this run). ``chunk_size``:
    samples per chunk (None: :func:`default_chunk_size`).

    Returns a ``RunResult`` whose ``metrics`` equal the single-process run's (computed by
    :func:`pipeline.rescore` from the store); ``wall_s`` spans the first chunk handed out to the metrics (not Ray's
    or the workers' start-up); ``shards`` has one row per worker (where, device, chunks, samples, failures,
    repeated chunks, session-open and busy seconds, images/s); ``chunks`` one row per chunk (samples, attempts,
    workers, reasons); ``n_stored`` the samples taken from the store.
    """
    backend = registry.get(config.backend)
    if backend.reads_stored_results:
        raise ZooinferError(f"backend={config.backend!r} reads results an external tool already computed: there is "
                            "nothing to spread over processes; run it with processes=1")
    onnx_path = onnx_path or config.onnx_path
    if "onnx_path" in backend.needs and onnx_path is None:
        raise ZooinferError(f"backend {config.backend!r} needs an ONNX file on the driver: export it first "
                            "(Evaluation.export()) or pass onnx_path=")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ZooinferError(f"chunk_size must be None or an integer >= 1, got {chunk_size!r}")
    ray = import_ray()
    fail = _fault_hook()
    data = dataset.subset(config.limit)
    if store is None:
        with tempfile.TemporaryDirectory(prefix="zooinfer-dist-") as tmp:
            store = PredictionStore.create(tmp, {})
            try:
                return _evaluate(ray, config, recipe, data, backend, onnx_path, store, chunk_size, fail)
            finally:
                store.release()
    return _evaluate(ray, config, recipe, data, backend, onnx_path, store, chunk_size, fail)


def _evaluate(ray, config: RunConfig, recipe, data: ImageDataset, backend: Backend, onnx_path: str | None,
              store: PredictionStore, chunk_size: int | None, fail: dict) -> pipeline.RunResult:
    todo = [i for i, s in enumerate(data) if s.key not in store]
    n_stored = len(data) - len(todo)
    size = chunk_size or default_chunk_size(len(todo), config.processes, config.bs)
    chunks = [_Chunk(c, todo[lo:lo + size], config.keep if lo < config.keep else 0)
              for c, lo in enumerate(range(0, len(todo), size))]
    init_s, where, n_workers, cpus, disp = 0.0, "nothing to compute", 0, 0, None
    t_start = time.perf_counter()
    if chunks:
        t_init = time.perf_counter()
        started = _init_ray(ray, config.ray_address)
        init_s = time.perf_counter() - t_init
        where = "local instance" if not config.ray_address else config.ray_address
        ledger = None
        try:
            node_cpus = [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
            n_workers = min(max(1, config.processes), len(chunks))
            res = _task_resources(backend, ray.cluster_resources(), node_cpus, n_workers)
            cpus = res["num_cpus"]
            fits = sum(n // cpus for n in node_cpus) if node_cpus else n_workers
            if fits < n_workers:
                where += f"; {fits} of the {n_workers} workers fit its CPUs"
                n_workers = max(1, fits)
            ledger = ray.remote(num_cpus=0)(Ledger).remote()
            blob: tuple = ()
            if "onnx_path" in backend.needs and config.ray_address:  # other nodes may not see the driver's ONNX cache
                blob = ship_file(ray, onnx_path)
            pin = os.environ.get(PIN_ENV, "0").lower() not in ("", "0", "false", "no")
            spec = WorkerSpec(config=config, recipe=recipe, data=data, cpus=cpus, onnx_path=onnx_path, pin=pin,
                              onnx_blob=blob, fail=fail)
            actor_cls = ray.remote(ChunkWorker).options(max_restarts=0, max_concurrency=1, **res)
            bar = pipeline.progress_bar(len(data), f"{recipe.name} [{config.backend} x{n_workers}]", config.progress)
            if bar is not None:
                bar.n = n_stored
                bar.refresh()
            disp = _Dispatcher(ray, actor_cls, ray.put(spec), ledger, n_workers, chunks, data, store, bar, n_stored)
            try:
                disp.run()
            finally:  # also a failed chunk, or the user interrupting the notebook: stop every worker
                disp.stop()
                if bar is not None:
                    bar.close()
        finally:
            if ledger is not None:
                ray.kill(ledger)
            if started:
                ray.shutdown()
        t_start = disp.t_start or t_start
    scored = pipeline.rescore(recipe, data, store, backend=config.backend)
    timer = disp.timer if disp is not None else pipeline.StageTimer()
    timer.seconds["metric"] += scored.timer.seconds["metric"]  # the driver's metric updates (workers only collect)
    kept = [k for _, k in sorted(disp.kept, key=lambda p: p[0])][:config.keep] if disp is not None else []
    rows = disp.worker_rows(cpus) if disp is not None else []
    chunk_rows = disp.chunk_rows() if disp is not None else []
    result = pipeline.RunResult(scored.metrics, len(data), scored.n_done, scored.skipped, timer,
                                time.perf_counter() - t_start, config.bs, config.backend, kept, scored.accumulator,
                                shards=rows, n_stored=n_stored)
    result.chunks = chunk_rows  # one row per chunk
    repeats = sum(r["attempts"] - 1 for r in chunk_rows)
    if not chunks:
        report.show(f"All {len(data)} samples were already stored: nothing to hand out to Ray workers.")
    else:
        ready = f", first worker ready after {disp.ready_s:.1f} s" if disp.ready_s is not None else ""
        report.show(rows, f"Workers: {len(rows)} Ray actors ({where}, Ray start-up {init_s:.1f} s{ready}), "
                    f"{len(chunks)} chunks of up to {size} samples, {n_stored} samples already stored; "
                    f"{result.n_done} images in "
                    f"{result.wall_s:.1f} s = {result.throughput:.2f} images/s in total; {repeats} repeated chunk(s)",
                    ["worker", "where", "device", "cpus", "threads", "cores", "chunks", "samples", "failed",
                     "retried", "open_s", "busy_s", "images_per_s", "state"])
    again = [r for r in chunk_rows if r["attempts"] > 1]
    if again:
        report.show(again, "Repeated chunks", ["chunk", "samples", "first", "last", "attempts", "workers", "reasons"])
    if result.skipped:
        warnings.warn(f"{len(result.skipped)} images skipped (unreadable); first: "
                      f"{result.skipped[0][1]}: {result.skipped[0][2]}", stacklevel=3)
    return result
