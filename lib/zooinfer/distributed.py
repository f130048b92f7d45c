"""Scale-out: one evaluation spread over many processes or machines with Ray, same figures as one process.

:func:`evaluate_distributed` takes the run's :class:`zooinfer.config.RunConfig`, the recipe, the dataset and the
driver's artefacts (the ONNX file) and returns a ``RunResult``. The dataset (after ``limit``) is cut into
``config.processes`` deterministic contiguous shards (``ImageDataset.shard``). Each shard is one Ray task that runs
the normal :func:`zooinfer.pipeline.run` (same recipe, same backend settings, its own backend session opened through
the backend registry with threads = the task's CPUs, on its own cores when ``ZOOINFER_PIN_CORES=1``) and sends back
compact ``(sample index, prediction)`` pairs (``recipe.compact``: e.g. top-5 classes instead of logits), its stage
timings and skipped images, never images. The driver feeds the pairs in dataset order into one fresh
``recipe.new_accumulator`` and computes the metric once, so the metrics equal a single-process run's.

Faults: a task that raises or whose process dies is run again by Ray (``max_retries``); only the attempt that
finishes returns its pairs, so a shard is never lost or counted twice. Attempts are recorded by a small actor and
listed per shard in ``RunResult.shards``. A shard that fails every attempt ends the run with a ``ZooinferError``
naming its samples; ``Evaluation.finish`` (the only step that writes a report) is then never reached.

Ray is optional (``pip install "zooinfer[ray]"``) and imported only here. Cluster set-up: docs/scale-out.md.
"""
from __future__ import annotations

import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import pipeline, report
from .backends import registry
from .backends.registry import Artefacts, Backend, SessionOptions
from .config import RunConfig
from .datasets.base import ImageDataset
from .errors import ZooinferError

#: Ray task retries per shard (a shard runs at most MAX_RETRIES + 1 times)
MAX_RETRIES = 2
#: a backend's resource -> the Ray resource one task asks for (Ray sets CUDA_VISIBLE_DEVICES /
#: ASCEND_RT_VISIBLE_DEVICES, so the task's device is 0); CPU backends ask for CPUs only
RAY_RESOURCES = {"gpu": "GPU", "npu": "NPU"}
#: environment variable: 1 pins each CPU task to its own block of its node's cores (default: the OS places them;
#: on a shared machine pinning was slower, see docs/scale-out.md)
PIN_ENV = "ZOOINFER_PIN_CORES"
INSTALL_HINT = 'pip install "zooinfer[ray]" (in a checkout: pip install -e ".[ray]")'


def import_ray():
    """The ``ray`` module, or a ZooinferError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ZooinferError(f"processes > 1 or ray_address needs Ray, which is not installed: {INSTALL_HINT}; "
                            "or run with processes=1 (one local process, no Ray)") from None
    return ray


def available_cpus() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def describe_keys(keys: list[str], first: int = 3) -> str:
    """``"3 samples: a, b, c"`` or ``"1000 samples: a, b, c, ... (+997 more)"``."""
    shown = ", ".join(keys[:first])
    more = f", ... (+{len(keys) - first} more)" if len(keys) > first else ""
    return f"{len(keys)} samples: {shown}{more}"


# ---------------------------------------------------------------------------------------------------- worker side
@dataclass(frozen=True)
class ShardSpec:
    """Everything one shard task needs (pickled to the worker; no model, no session, no images)."""

    config: RunConfig  # the run's configuration (backend, bs, threads, weights, om_path, keep...)
    recipe: Any  # the Recipe object itself (model facts travel with it; tests may use an unregistered one)
    index: int
    count: int
    first: int  # dataset index of the shard's first sample
    shard: ImageDataset
    cpus: int  # CPUs Ray reserved for the task
    onnx_path: str | None = None  # the driver's ONNX file (backends that need one)
    pin: bool = False  # pin the task to its own cores (see PIN_ENV)
    #: (file name, ObjectRef of the ONNX bytes) for nodes that cannot see ``onnx_path``; empty: not shipped
    onnx_blob: tuple = ()

    @property
    def backend(self) -> Backend:
        return registry.get(self.config.backend)


class Ledger:
    """A tiny Ray actor: attempts and failure reasons per shard, and which cores of a node each task pinned."""

    def __init__(self) -> None:
        self.attempts: dict[int, list[str]] = {}
        self.errors: dict[int, dict[int, str]] = {}
        self.claimed: dict[str, set[int]] = {}
        self.done: dict[int, int] = {}

    def started(self, shard: int, where: str) -> int:
        self.attempts.setdefault(shard, []).append(where)
        self.done[shard] = 0
        return len(self.attempts[shard])

    def progress(self, shard: int, n: int) -> None:
        self.done[shard] = n

    def progress_total(self) -> int:
        return sum(self.done.values())

    def failed(self, shard: int, attempt: int, reason: str) -> None:
        self.errors.setdefault(shard, {})[attempt] = reason

    def claim(self, node: str, slots: int) -> int | None:
        used = self.claimed.setdefault(node, set())
        free = next((s for s in range(slots) if s not in used), None)
        if free is not None:
            used.add(free)
        return free

    def release(self, node: str, slot: int) -> None:
        self.claimed.get(node, set()).discard(slot)

    def summary(self) -> tuple[dict[int, list[str]], dict[int, dict[int, str]]]:
        return self.attempts, self.errors


class Collector:
    """The workers' accumulator: keeps ``(dataset index, compact prediction)`` pairs in the order they arrive, and
    calls ``report(count)`` at most every ``every`` seconds (progress for the driver's bar)."""

    def __init__(self, shard: ImageDataset, first: int, compact, report=None, every: float = 1.0) -> None:
        self.index = {s.key: first + i for i, s in enumerate(shard)}
        self.compact = compact
        self.pairs: list[tuple[int, Any]] = []
        self.report, self.every, self.last = report, every, time.monotonic()

    def update(self, sample, prediction) -> None:
        self.pairs.append((self.index[sample.key], prediction if self.compact is None else self.compact(prediction)))
        if self.report is not None and time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            self.report(len(self.pairs))

    def compute(self) -> dict[str, float]:
        return {}


def _pin(ray, ledger, cpus: int):
    """Pin this thread (and the threads it starts: ORT's pool, preprocessing) to a free block of ``cpus`` cores of
    this node; the blocks are handed out by the ledger so tasks on one node never share cores. None: not pinned."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    slots = len(allowed) // cpus
    if slots < 2:  # the task has the whole node anyway
        return None
    node = ray.get_runtime_context().get_node_id()
    slot = ray.get(ledger.claim.remote(node, slots))
    if slot is None:
        return None
    cores = allowed[slot * cpus:(slot + 1) * cpus]
    os.sched_setaffinity(0, cores)
    return node, slot, allowed, cores


def _local_onnx(spec: ShardSpec, ray) -> str:
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


#: how a task provides each artefact a backend can need (the registry's declarations decide which are asked for)
_TASK_ARTEFACTS = {
    "onnx_path": lambda spec, ray: _local_onnx(spec, ray),
    "model": lambda spec, ray: build_network(spec.recipe, spec.config.weights),
    "om_path": lambda spec, ray: spec.config.om_path,
}
#: artefacts every node must see at the driver's path: need -> (what it is, its path in the configuration)
_SHARED_FILES = {"model": ("checkpoint", lambda c: c.weights), "om_path": ("OM file", lambda c: c.om_path)}


def _open_session(spec: ShardSpec, ray, threads: int):
    """The task's backend session, opened through the registry as the single process opens it, with the task's
    threads and device (0 = the task's GPU/NPU) and ONNX Runtime's optimised-graph cache read but never written
    (tasks start together and would race on the file)."""
    backend = spec.backend
    unsupported = [n for n in backend.needs if n not in _TASK_ARTEFACTS]
    if unsupported:
        raise ZooinferError(f"backend {backend.name!r} needs {', '.join(unsupported)}, which a Ray task cannot "
                            "provide; run it with processes=1")
    artefacts = Artefacts(**{need: _TASK_ARTEFACTS[need](spec, ray) for need in backend.needs})
    device = 0 if backend.resource in RAY_RESOURCES else spec.config.device_id
    options = SessionOptions.from_config(spec.config, threads=threads, device_id=device, optimized_cache="read")
    return backend.open(artefacts, options)


def _check_visible(spec: ShardSpec) -> None:
    """Files every node must see at the driver's paths (else the pipeline would skip every image as unreadable)."""
    need = [("data root", str(spec.shard.root))]
    for artefact in spec.backend.needs:
        if artefact in _SHARED_FILES:
            what, path = _SHARED_FILES[artefact][0], _SHARED_FILES[artefact][1](spec.config)
            if path:
                need.append((what, path))
    for what, path in need:
        if not Path(path).exists():
            raise ZooinferError(f"the {what} {path} is not visible on node {socket.gethostname()}: every node must "
                                "see it at the same path as the driver (shared storage; docs/scale-out.md)")


def run_shard(spec: ShardSpec, ledger) -> dict:
    """One Ray task: the pipeline over one shard. Returns compact predictions, timings, skips (never images)."""
    import ray

    where = f"{socket.gethostname()}:{os.getpid()}"
    attempt = ray.get(ledger.started.remote(spec.index, where))
    pinned = None
    try:
        _check_visible(spec)
        pinned = _pin(ray, ledger, spec.cpus) if spec.pin else None
        cfg = spec.config
        threads = cfg.threads or spec.cpus
        t0 = time.perf_counter()
        session = _open_session(spec, ray, threads)
        t1 = time.perf_counter()
        collector = Collector(spec.shard, spec.first, spec.recipe.compact,
                              report=lambda n: ledger.progress.remote(spec.index, n))
        res = pipeline.run(spec.recipe, spec.shard, session, bs=cfg.bs, accumulator=collector,
                           prep_threads=cfg.prep_threads or max(1, min(8, spec.cpus // 4)), progress=False,
                           keep=cfg.keep)
        return {"index": spec.index, "pairs": collector.pairs, "kept": res.kept, "skipped": res.skipped,
                "timer": res.timer, "n_done": res.n_done, "run_s": res.wall_s, "open_s": t1 - t0,
                "attempt": attempt, "where": where, "threads": getattr(session, "threads", threads),
                "device": getattr(session, "device", None), "cores": None if pinned is None else pinned[3]}
    except BaseException as e:
        ray.get(ledger.failed.remote(spec.index, attempt, f"{type(e).__name__}: {e}"))
        raise
    finally:
        if pinned is not None:
            os.sched_setaffinity(0, pinned[2])
            ray.get(ledger.release.remote(pinned[0], pinned[1]))


# ---------------------------------------------------------------------------------------------------- driver side
def _init_ray(ray, address: str | None) -> bool:
    """Connect to ``address`` or start a local instance over this machine's CPUs; reuse an initialised Ray.
    Returns whether this call started (and so should shut down) the connection."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=available_cpus(), **kwargs)
    return True


def cpus_per_task(node_cpus: list[int], n_tasks: int) -> int:
    """The most CPUs per task such that ``n_tasks`` tasks fit on the nodes at once (a task cannot span nodes):
    2 nodes x 16 CPUs, 3 tasks -> 8 (not 32 // 3 = 10, which fits only one task per node). At least 1."""
    c = max(1, sum(node_cpus) // max(n_tasks, 1))
    while c > 1 and sum(n // c for n in node_cpus) < n_tasks:
        c -= 1
    return c


def _task_resources(backend: Backend, total: dict, node_cpus: list[int], n_shards: int) -> dict:
    """Ray resources of one shard task: the cluster's CPUs shared out, plus one GPU/NPU (or a share of them) for a
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
    """(content-addressed file name, ObjectRef of the bytes): what a task needs to recreate ``path`` on its node."""
    import hashlib

    data = Path(path).read_bytes()
    p = Path(path)
    return f"{p.stem}-{hashlib.md5(data).hexdigest()[:12]}{p.suffix}", ray.put(data)


def _failure(spec: ShardSpec, error: Exception, attempts: list[str], errors: dict[int, str]) -> ZooinferError:
    keys = [s.key for s in spec.shard]
    tried = max(len(attempts), 1)
    reasons = "; ".join(f"attempt {a} on {w}: {errors.get(a, 'the worker process died')}"
                        for a, w in enumerate(attempts, 1))
    cause = getattr(error, "cause", None) or error
    first_line = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return ZooinferError(
        f"shard {spec.index + 1} of {spec.count} ({describe_keys(keys)}) failed {tried} time(s) "
        f"(max_retries={MAX_RETRIES}): {reasons or first_line}. No report was written. Fix the cause (or move "
        "those images out of the dataset) and run again.")


def evaluate_distributed(config: RunConfig, recipe, dataset: ImageDataset, *,
                         onnx_path: str | None = None) -> pipeline.RunResult:
    """Run the evaluation ``config`` describes as ``config.processes`` Ray tasks (on ``config.ray_address`` or a
    local instance) over ``dataset`` (after ``config.limit``) with ``recipe``, and merge.

    ``onnx_path``: the driver's ONNX file, for backends that need one (default: ``config.onnx_path``); torch
    backends build the network from ``config.weights`` in each task, ``acl`` opens ``config.om_path``. Returns a
    ``RunResult`` whose ``metrics`` equal the single-process run's; ``wall_s`` spans the tasks and the merge (not
    Ray's start-up); ``shards`` has one row per shard: where it ran, attempts, retries, images, seconds, images/s.
    """
    backend = registry.get(config.backend)
    if backend.reads_stored_results:
        raise ZooinferError(f"backend={config.backend!r} reads results an external tool already computed: there is "
                            "nothing to spread over processes; run it with processes=1")
    onnx_path = onnx_path or config.onnx_path
    if "onnx_path" in backend.needs and onnx_path is None:
        raise ZooinferError(f"backend {config.backend!r} needs an ONNX file on the driver: export it first "
                            "(Evaluation.export()) or pass onnx_path=")
    ray = import_ray()
    data = dataset.subset(config.limit)
    n_shards = max(1, config.processes)

    t_init = time.perf_counter()
    started = _init_ray(ray, config.ray_address)
    init_s = time.perf_counter() - t_init
    ledger = None
    try:
        node_cpus = [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
        task_res = _task_resources(backend, ray.cluster_resources(), node_cpus, n_shards)
        ledger = ray.remote(num_cpus=0)(Ledger).remote()
        blob: tuple = ()
        if "onnx_path" in backend.needs and config.ray_address:  # other nodes may not see the driver's ONNX cache
            blob = ship_file(ray, onnx_path)
        pin = os.environ.get(PIN_ENV, "0").lower() not in ("", "0", "false", "no")
        specs = []
        for i in range(n_shards):
            shard = data.shard(i, n_shards)
            if len(shard):
                specs.append(ShardSpec(config=config, recipe=recipe, index=i, count=n_shards,
                                       first=len(data) * i // n_shards, shard=shard, cpus=task_res["num_cpus"],
                                       onnx_path=onnx_path, pin=pin, onnx_blob=blob))
        task = ray.remote(run_shard).options(max_retries=MAX_RETRIES, retry_exceptions=True, **task_res)
        t_start = time.perf_counter()
        refs = {task.remote(spec, ledger): spec for spec in specs}
        bar = pipeline.progress_bar(len(data), f"{recipe.name} [{config.backend} x{n_shards}]", config.progress)
        outs: dict[int, dict] = {}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=None if bar is None else 1.0)
                if not done:
                    bar.n = min(len(data), ray.get(ledger.progress_total.remote()))
                    bar.refresh()
                    continue
                spec = refs[done[0]]
                try:
                    outs[spec.index] = ray.get(done[0])
                except ray.exceptions.RayError as e:
                    attempts, errors = ray.get(ledger.summary.remote())
                    raise _failure(spec, e, attempts.get(spec.index, []), errors.get(spec.index, {})) from None
                ledger.progress.remote(spec.index, len(spec.shard))  # skipped images count as done
        except BaseException:  # a failed shard, or the user interrupting the notebook: stop the other tasks
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            if bar is not None:
                bar.n = len(data) if not pending else bar.n
                bar.close()
        attempts, errors = ray.get(ledger.summary.remote())
        result = _merge(config, recipe, data, specs, outs, attempts, errors, t_start)
    finally:
        if ledger is not None:
            ray.kill(ledger)
        if started:
            ray.shutdown()
    rows = result.shards
    retries = sum(r["retries"] for r in rows)
    where = "local instance" if not config.ray_address else config.ray_address
    report.show(rows, f"Shards: {len(rows)} Ray tasks ({where}, start-up {init_s:.1f} s), {result.n_done} images in "
                f"{result.wall_s:.1f} s = {result.throughput:.2f} images/s in total; {retries} retried attempt(s)",
                ["shard", "samples", "where", "attempts", "retries", "retry_reasons", "cpus", "threads", "cores",
                 "open_s", "run_s", "images_per_s"])
    if result.skipped:
        warnings.warn(f"{len(result.skipped)} images skipped (unreadable); first: "
                      f"{result.skipped[0][1]}: {result.skipped[0][2]}", stacklevel=3)
    return result


def _merge(config: RunConfig, recipe, data: ImageDataset, specs: list[ShardSpec], outs: dict[int, dict],
           attempts: dict, errors: dict, t_start: float) -> pipeline.RunResult:
    """Feed every shard's pairs, in dataset order, into one fresh accumulator; sum timings; one row per shard."""
    pairs = sorted((p for o in outs.values() for p in o["pairs"]), key=lambda p: p[0])
    indices = [i for i, _ in pairs]
    if len(set(indices)) != len(indices):  # cannot happen with Ray's at-most-one result per task; checked anyway
        raise ZooinferError("scale-out merge: a sample came back twice")
    acc = recipe.new_accumulator(data)
    timer = pipeline.StageTimer()
    t0 = time.perf_counter()
    for i, pred in pairs:
        acc.update(data[i], pred)
    for spec in specs:
        timer.merge(outs[spec.index]["timer"])
    timer.seconds["metric"] += time.perf_counter() - t0  # the driver's metric updates (workers only collect)
    metrics = acc.compute() if pairs else {}
    rows = []
    for spec in specs:
        o = outs[spec.index]
        tried = attempts.get(spec.index, [o["where"]])
        rows.append({"shard": spec.index, "samples": len(spec.shard), "first": spec.shard[0].key,
                     "last": spec.shard[len(spec.shard) - 1].key, "where": o["where"], "device": o["device"],
                     "attempts": len(tried), "retries": len(tried) - 1,
                     "retry_reasons": "; ".join(f"{a}: {errors.get(spec.index, {}).get(a, 'worker process died')}"
                                                f" ({w})" for a, w in enumerate(tried[:-1], 1)) or None,
                     "cpus": spec.cpus, "threads": o["threads"],
                     "cores": ",".join(map(str, o["cores"])) if o["cores"] else None,
                     "n_done": o["n_done"], "open_s": round(o["open_s"], 3), "run_s": round(o["run_s"], 3),
                     "images_per_s": round(o["n_done"] / o["run_s"], 3) if o["run_s"] > 0 else None})
    kept = [k for spec in specs for k in outs[spec.index]["kept"]][:config.keep]
    skipped = [s for spec in specs for s in outs[spec.index]["skipped"]]
    wall = time.perf_counter() - t_start
    return pipeline.RunResult(metrics, len(data), len(pairs), skipped, timer, wall, config.bs, config.backend, kept,
                              acc, shards=rows)
