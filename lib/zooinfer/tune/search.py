"""An accuracy-aware search for the layers to keep in higher precision (``zooinfer tune``).

A low-precision build (today ONNX Runtime's static INT8, :func:`zooinfer.int8.int8_onnx`) that misses its budget is
mended by keeping some of its quantised layers in fp32 (the quantizer's ``nodes_to_exclude``), one at a time, worst
first, re-measuring the metric and the speed after each, until the drop fits:

1. **Cheap ranking (tensor noise).** One pass of the INT8 build over the first :data:`NOISE_SAMPLES` images of the
   ranking subset, with every quantised layer's input exposed: per Conv / Gemm / MatMul, the quantisation noise its
   own input and weights carry (noise power over signal power, the inverse of the SQNR ONNX Runtime's
   ``qdq_loss_debug`` reports), summed. Local, so it says which layers are quantised badly, not how much the
   network downstream amplifies it.
2. **Verification with the metric (per sample).** The ``verify`` noisiest layers are each kept in fp32 alone and the
   build is run over the whole ranking subset; each sample is compared with the reference (the task's per-sample
   agreement: top-1 unchanged, detections matched, re-ID rank-1 unchanged) and the layer's effect is how many
   samples it brings back to agreement, then how much it lowers the summed disagreement score
   (:mod:`zooinfer.compare`). Verified layers that helped rank first, by that effect; then the unverified by
   noise; verified layers that did not help come last.
3. **Greedy keep.** Keep the first-ranked layer, rebuild (the calibration is the same every time), measure the
   agreement and the throughput; then the next, until the drop fits the budget or ``max_keep`` layers are kept.

Each build costs a quantisation and a pass over the ranking subset, so the cost is ``verify + kept`` builds after
the first; with 64 images, 8 verified and a few kept, DPN131 takes about 15-25 minutes on 2 cores.

The search always judges agreement with the fp32 model's own predictions on the ranking subset (drop = 1 - the
fraction of samples that agree); whether a configuration passes the guides' rule on the run's samples is for the
fastest-passing table (:mod:`zooinfer.tune.fastest`), against the published figure where the run is meaningful.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ZooinferError
from ..parameters import parse_variant

#: the variants the search can tune, and how it keeps a layer in higher precision there
TUNABLE = {"onnxruntime-int8": "ONNX Runtime static INT8 (QDQ): kept layers are the quantizer's nodes_to_exclude"}
#: the layers the search ranks and keeps: compute operators with quantised inputs (the int8 kernels that matter)
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: images of the ranking subset the cheap tensor-noise pass reads (the statistics settle long before 64)
NOISE_SAMPLES = 16
#: layers verified with the metric by default, and layers kept at most
VERIFY, MAX_KEEP = 8, 16


def check_variant(name: str) -> str:
    """``name`` when the search can tune it; an unknown name lists the known variants, a known one it cannot tune
    lists the tunable ones (a ZooinferError either way)."""
    parse_variant(name)  # an unknown name: the known ones
    if name not in TUNABLE:
        raise ZooinferError(f"variant {name!r} cannot be tuned: the search keeps layers of a low-precision build in "
                            f"fp32; tunable: {', '.join(TUNABLE)}")
    return name


def rank_subset_size(requested: int, available: int) -> tuple[int, str | None]:
    """The ranking subset's size and, when ``requested`` is more than the ``available`` samples, the note saying it
    was clipped."""
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        raise ZooinferError(f"--rank-subset must be an integer >= 1, got {requested!r}")
    if requested > available:
        return available, (f"ranking subset {requested} is larger than the {available} samples evaluated: clipped "
                           f"to {available}")
    return requested, None


# ------------------------------------------------------------------------------------------------ predictions
@dataclass
class Predictions:
    """One pass of one model over samples: each sample's compact prediction (``compact``, by key, in order), the
    recipe's metrics (against the dataset's labels), re-ID rank-1 gallery keys, end-to-end images/s."""

    keys: list[str]
    compact: dict[str, Any]
    metrics: dict
    rank1: dict = field(default_factory=dict)
    images_per_s: float = 0.0
    skipped: list = field(default_factory=list)

    def subset(self, keys: Sequence[str]) -> "Predictions":
        """These predictions restricted to ``keys`` (the metrics are left out: they were of all samples)."""
        keep = [k for k in keys if k in self.compact]
        return Predictions(keep, {k: self.compact[k] for k in keep}, {},
                           {k: v for k, v in self.rank1.items() if k in set(keep)}, self.images_per_s)


def compact(task: str, prediction: Any) -> Any:
    """The part of a prediction per-sample agreement reads: logits, the best detections (K, 6), the feature."""
    from ..compare import detections_array

    if task == "classification":
        p = prediction[0] if isinstance(prediction, (list, tuple)) else prediction
        return np.asarray(p, dtype=np.float32).ravel()
    if task in ("detection", "face_detection"):
        return detections_array(prediction, min_score=0.15)
    return np.asarray(prediction, dtype=np.float32).ravel()


class _Keep:
    """Accumulator wrapper: feeds the recipe's accumulator and keeps every sample's compact prediction."""

    def __init__(self, inner: Any, task: str):
        self.inner, self.task = inner, task
        self.store: dict[str, Any] = {}

    def update(self, sample: Any, prediction: Any) -> None:
        self.inner.update(sample, prediction)
        self.store[sample.key] = compact(self.task, prediction)

    def compute(self) -> dict:
        return self.inner.compute()


def predict(recipe: Any, data: Any, session: Any, *, bs: int = 1) -> Predictions:
    """``session`` over the samples ``data`` through the normal pipeline (the recipe's pre/postprocessing and
    metric); returns every sample's compact prediction."""
    from ..compare import rank1_gallery
    from ..pipeline import run as pipeline_run

    keep = _Keep(recipe.new_accumulator(data), recipe.task)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = pipeline_run(recipe, data, session, bs=bs, accumulator=keep, progress=False)
    metrics = {k: float(v) for k, v in res.metrics.items() if isinstance(v, (int, float, np.floating))}
    rank1 = rank1_gallery(keep.inner) if recipe.task == "reid" else {}
    return Predictions([s.key for s in data if s.key in keep.store], keep.store, metrics, rank1,
                       float(res.throughput), list(res.skipped))


def per_sample(task: str, ref: Predictions, var: Predictions) -> list[dict]:
    """One row per sample both hold: ``agreement`` (1: agrees with the reference, 0: not; detections: the matched
    fraction) and ``disagreement`` (compare's score: higher is worse, a changed top-1 outweighs any logit error)."""
    from .. import compare as zc

    rows = []
    for key in ref.keys:
        if key not in var.compact:
            continue
        r, v = ref.compact[key], var.compact[key]
        if task == "classification":
            row = zc.classification_agreement(r, v)
            agreement = 0.0 if row["top1_changed"] else 1.0
        elif task in ("detection", "face_detection"):
            row = zc.match_detections(r, v)
            agreement = float(row["agreement"])
        else:
            row = zc.reid_agreement(r, v)
            changed = key in ref.rank1 and var.rank1.get(key) != ref.rank1[key]
            row["disagreement"] += float(changed)
            agreement = 0.0 if changed else max(0.0, 1.0 - row["disagreement"])
        rows.append({"sample": key, "agreement": agreement, "disagreement": float(row["disagreement"])})
    return rows


def agreement(rows: list[dict]) -> float:
    """The fraction of samples that agree with the reference (mean per-sample agreement; 1.0 for no rows)."""
    return float(np.mean([r["agreement"] for r in rows])) if rows else 1.0


def images_per_s(session: Any, views: np.ndarray, bs: int = 1, min_time: float = 0.5) -> float:
    """Pure-inference throughput of ``session`` at batch size ``bs`` on real preprocessed ``views`` (N, C, H, W)."""
    from .. import bench

    times = bench.time_batches(session.run, bench.make_batch(views, bs), warmup=1, min_time=min_time, min_iters=3)
    return bench.summarize(times, bs)["throughput"]


# ------------------------------------------------------------------------------------------------ builders
class OrtInt8Builder:
    """Builds ONNX Runtime INT8 models of one source graph with some layers kept fp32, all calibrated on the same
    images (``calibration_keys``), through :func:`zooinfer.int8.int8_onnx` (cached next to the source)."""

    variant = "onnxruntime-int8"

    def __init__(self, recipe: Any, onnx_path: str | Path, dataset: Any, calibration_keys: Sequence[str], *,
                 threads: int | None = None, options: dict | None = None):
        self.recipe, self.onnx_path, self.dataset = recipe, Path(onnx_path), dataset
        self.keys, self.threads, self.options = list(calibration_keys), threads, dict(options or {})
        self.info: dict = {}
        self.built: set[Path] = set()

    @property
    def graph(self) -> Path:
        """The graph whose node names ``nodes_to_exclude`` takes (the quantizer's pre-processed source)."""
        from ..int8 import preprocessed_onnx

        return preprocessed_onnx(self.onnx_path)[0]

    def build(self, keep: Sequence[str]) -> Path:
        """The INT8 model with the layers ``keep`` in fp32."""
        from ..int8 import int8_onnx

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fp32 convolutions kept on purpose are what this asks for
            path, info = int8_onnx(self.recipe, self.onnx_path, self.dataset, keys=self.keys,
                                   nodes_to_exclude=sorted(keep), **self.options)
        if not keep:
            self.info = info
        self.built.add(Path(path))
        return path

    def discard(self, keep: Sequence[Path] = ()) -> int:
        """Remove this search's builds other than ``keep`` from the cache (the file, its sidecar and ONNX Runtime's
        optimised copy: about 160 MB for each DPN131 build); returns how many builds were removed."""
        kept = {Path(p) for p in keep}
        gone = 0
        for path in self.built - kept:
            for f in path.parent.glob(f"{path.stem}.*"):
                f.unlink(missing_ok=True)
            gone += 1
        self.built &= kept
        return gone

    def session(self, path: Path) -> Any:
        """A session of the build at ``path``, with the graph transformers its layers kept in fp32 need disabled
        (ONNX Runtime's ``WeightBiasQuantization`` would quantise them again: ``int8.KEEP_FP32_DISABLED_OPTIMIZERS``,
        recorded in the build's sidecar)."""
        from ..backends import open_session
        from ..variants import _read_sidecar

        disabled = tuple(_read_sidecar(Path(path)).get("ort_disabled_optimizers", ()))
        return open_session("onnxruntime", onnx_path=path, threads=self.threads, disabled_optimizers=disabled)


# ------------------------------------------------------------------------------------------------ ranking
@dataclass
class Layer:
    """One quantised layer: its node name and op type, the quantisation noise of its input and weights (noise
    power / signal power), and, when verified, what keeping it alone in fp32 did on the ranking subset."""

    name: str
    op: str
    noise_input: float = 0.0
    noise_weight: float = 0.0
    verified: bool = False
    samples_fixed: int | None = None
    disagreement_drop: float | None = None
    agreement: float | None = None

    @property
    def noise(self) -> float:
        return self.noise_input + self.noise_weight

    def to_dict(self) -> dict:
        return {"node": self.name, "op": self.op, "noise": self.noise, "noise_input": self.noise_input,
                "noise_weight": self.noise_weight, "verified": self.verified, "samples_fixed": self.samples_fixed,
                "disagreement_drop": self.disagreement_drop, "agreement_when_kept_alone": self.agreement}


def _producers(graph: Any) -> dict[str, Any]:
    return {o: n for n in graph.node for o in n.output}


def quantized_layers(qdq_path: str | Path) -> list[tuple[str, str, str | None, str, str | None]]:
    """The compute layers of a QDQ model whose activation input is dequantised: (node name, op type, the float
    tensor before its QuantizeLinear, the dequantised tensor the layer reads, the dequantised weight's name)."""
    import onnx

    g = onnx.load(str(qdq_path), load_external_data=False).graph
    prod = _producers(g)
    out = []
    for n in g.node:
        if n.op_type not in COMPUTE_OPS or not n.input:
            continue
        dq = prod.get(n.input[0])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = prod.get(dq.input[0])
        x = q.input[0] if q is not None and q.op_type == "QuantizeLinear" else None
        wdq = prod.get(n.input[1]) if len(n.input) > 1 else None
        out.append((n.name, n.op_type, x, n.input[0], n.input[1] if wdq is not None and
                    wdq.op_type == "DequantizeLinear" else None))
    return out


def _dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int) -> np.ndarray:
    """DequantizeLinear of an initializer (per-tensor or per-channel along ``axis``)."""
    q = q.astype(np.float64)
    zero = np.zeros_like(scale) if zero is None else zero.astype(np.float64)
    if scale.ndim == 0 or scale.size == 1:
        return (q - zero.reshape(())) * float(scale.reshape(()))
    shape = [1] * q.ndim
    shape[axis] = -1
    return (q - zero.reshape(shape)) * scale.reshape(shape)


def _nsr(noise: float, signal: float) -> float:
    return float(noise / signal) if signal > 0 else (0.0 if noise == 0 else float("inf"))


def weight_noise(qdq_path: str | Path, source_path: str | Path) -> dict[str, float]:
    """Per quantised layer: noise power / signal power of its dequantised weights against the fp32 ones of the
    source graph (layers whose weight is not found there: 0)."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(qdq_path)).graph
    src = {i.name: i for i in onnx.load(str(source_path)).graph.initializer}
    inits = {i.name: i for i in g.initializer}
    prod = _producers(g)
    out = {}
    for name, _op, _x, _a, w in quantized_layers(qdq_path):
        dq = prod.get(w) if w else None
        # ONNX Runtime names the int8 weight <name>_quantized and its dequantised copy <name>_DequantizeLinear_Output
        original = dq.input[0].removesuffix("_quantized") if dq is not None else None
        if dq is None or original not in src or dq.input[0] not in inits:
            out[name] = 0.0
            continue
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        arr = lambda t: numpy_helper.to_array(inits[t]) if t in inits else None  # noqa: E731
        zero = arr(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
        deq = _dequantize(arr(dq.input[0]), arr(dq.input[1]).astype(np.float64), zero, axis)
        ref = numpy_helper.to_array(src[original]).astype(np.float64)
        out[name] = _nsr(float(((deq - ref) ** 2).sum()), float((ref ** 2).sum())) if deq.shape == ref.shape else 0.0
    return out


def input_noise(qdq_path: str | Path, recipe: Any, data: Any, *, threads: int | None = None) -> dict[str, float]:
    """Per quantised layer: noise power / signal power of its dequantised activation input against the float
    tensor before the QuantizeLinear, summed over the samples ``data`` (one image at a time)."""
    import tempfile

    import onnx
    import onnxruntime as ort

    layers = quantized_layers(qdq_path)
    model = onnx.load(str(qdq_path))
    inputs = {i.name for i in model.graph.input}
    have = {o.name for o in model.graph.output}
    wanted = sorted({t for _n, _o, x, a, _w in layers for t in (x, a) if t and t not in inputs and t not in have})
    model.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in wanted)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory(prefix="zooinfer-noise-") as tmp:
        path = Path(tmp) / "exposed.onnx"
        onnx.save(model, str(path))
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    noise = {n: 0.0 for n, *_ in layers}
    signal = {n: 0.0 for n, *_ in layers}
    feed_name = sess.get_inputs()[0].name
    for sample in data:
        try:
            views, _ = recipe.preprocess(sample.path)
        except Exception:  # noqa: BLE001 - an unreadable image is the pipeline's business
            continue
        for v in views:
            x = np.ascontiguousarray(v[None], dtype=np.float32)
            got = dict(zip(names, sess.run(None, {feed_name: x})))
            got[feed_name] = x
            for name, _op, xin, a, _w in layers:
                if xin not in got or a not in got:
                    continue
                f, d = got[xin].astype(np.float64), got[a].astype(np.float64)
                noise[name] += float(((d - f) ** 2).sum())
                signal[name] += float((f ** 2).sum())
    return {n: _nsr(noise[n], signal[n]) for n in noise}


# ------------------------------------------------------------------------------------------------ the search
@dataclass
class CurvePoint:
    """One build on the way: ``kept`` layers in fp32 (``nodes``; ``added`` the last one), its agreement with the
    reference on the ranking subset, the drop (1 - agreement), whether that fits the budget, its throughput."""

    kept: int
    nodes: tuple[str, ...]
    added: str | None
    agreement: float
    drop: float
    passes: bool
    images_per_s: float
    metrics: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"kept": self.kept, "added": self.added, "nodes": list(self.nodes), "agreement": self.agreement,
                "drop": self.drop, "passes": self.passes, "images_per_s": self.images_per_s,
                "metrics": self.metrics}


@dataclass
class SearchResult:
    """What :func:`search` found: the ranked layers, the curve (layers kept vs drop vs images/s), the chosen set
    (``chosen``: the layers to keep in fp32; ``passed``: whether the drop then fits the budget)."""

    variant: str
    budget: float
    reference: str
    rank_keys: list[str]
    layers: list[Layer]
    curve: list[CurvePoint]
    chosen: tuple[str, ...]
    passed: bool
    bs: int
    notes: list[str] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        from ..cpu import isa_note

        return {"variant": self.variant, "budget": self.budget, "reference": self.reference,
                "rank_subset": {"size": len(self.rank_keys), "keys": self.rank_keys[:20]}, "bs": self.bs,
                "chosen": list(self.chosen), "passed": self.passed, "curve": [p.to_dict() for p in self.curve],
                "ranking": [x.to_dict() for x in self.layers[:50]], "layers_ranked": len(self.layers),
                "notes": self.notes, "seconds": self.seconds, "cpu": isa_note()}

    def curve_rows(self) -> list[dict]:
        return [{"kept": p.kept, "added": p.added or "(full INT8)", "agreement": round(p.agreement, 4),
                 "drop %": round(100 * p.drop, 2), "fits": "yes" if p.passes else "no",
                 "img/s": round(p.images_per_s, 2)} for p in self.curve]

    def markdown(self) -> str:
        from ..cpu import isa_note
        from ..report import markdown_table

        verdict = (f"**{len(self.chosen)} layer(s) kept in fp32 bring the drop within the budget**"
                   if self.passed and self.chosen else "**The full INT8 build already fits the budget**"
                   if self.passed else f"**No set of up to {len(self.chosen)} layer(s) brought the drop within the "
                                       "budget**")
        parts = [f"{verdict} ({100 * self.budget:g}% of the reference: {self.reference}; ranking subset "
                 f"{len(self.rank_keys)} samples; throughput at bs {self.bs}; {isa_note()}).",
                 markdown_table(self.curve_rows())]
        if self.chosen:
            parts.append("Chosen set (kept in fp32): " + ", ".join(f"`{n}`" for n in self.chosen))
        verified = [x for x in self.layers if x.verified]
        if verified:
            parts.append("Verified candidates (each kept alone in fp32):\n\n" + markdown_table(
                [{"node": x.name, "op": x.op, "noise": f"{x.noise:.3g}", "samples fixed": x.samples_fixed,
                  "disagreement drop": round(x.disagreement_drop or 0.0, 4)} for x in verified]))
        parts += [f"Note: {n}" for n in self.notes]
        return "\n\n".join(parts)

    def plot(self, path: str | Path | None = None, title: str = "") -> Any:
        """Layers kept vs drop (left axis, with the budget) and images/s (right axis)."""
        import matplotlib

        matplotlib.use("Agg") if path is not None else None
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        k = [p.kept for p in self.curve]
        ax.plot(k, [100 * p.drop for p in self.curve], "o-", color="tab:red", label="drop vs reference (%)")
        ax.axhline(100 * self.budget, color="tab:red", ls="--", lw=0.8, label=f"budget {100 * self.budget:g}%")
        ax.set_xlabel("layers kept in fp32")
        ax.set_ylabel("metric drop (%)")
        ax2 = ax.twinx()
        ax2.plot(k, [p.images_per_s for p in self.curve], "s-", color="tab:blue", label="images/s")
        ax2.set_ylabel(f"images/s (bs {self.bs})")
        ax.set_title(title or f"{self.variant}: layers kept vs drop vs speed")
        handles = ax.get_legend_handles_labels()
        extra = ax2.get_legend_handles_labels()
        ax.legend(handles[0] + extra[0], handles[1] + extra[1], loc="center right", fontsize=8)
        fig.tight_layout()
        if path is not None:
            from ..report import save_figure

            save_figure(fig, path)
        return fig


def search(recipe: Any, data: Any, builder: Any, reference: Predictions, *, budget: float, bs: int = 1,
           verify: int = VERIFY, max_keep: int = MAX_KEEP, min_time: float = 0.5, reference_name: str = "",
           log: Callable[[str], None] | None = None) -> SearchResult:
    """Rank the quantised layers of ``builder``'s build on the samples ``data`` (the ranking subset) and keep the
    worst in fp32 one at a time until the drop from ``reference`` (per-sample agreement) is at most ``budget``.

    ``builder``: ``build(keep) -> path``, ``session(path)``, ``graph`` (the source the weights are read from) and
    ``variant`` (e.g. :class:`OrtInt8Builder`). ``verify``: layers verified with the metric after the cheap
    ranking; ``max_keep``: layers kept at most; ``bs`` / ``min_time``: the throughput measurement."""
    from .. import bench

    say = log or (lambda _m: None)
    t0 = time.perf_counter()
    task = recipe.task
    keys = [s.key for s in data]
    views = np.stack(bench.real_views(recipe, data, max(bs, 4)))
    cache: dict[frozenset, tuple[Predictions, Any]] = {}

    def measure(keep: Sequence[str], with_speed: bool) -> tuple[Predictions, list[dict], float]:
        k = frozenset(keep)
        if k not in cache:
            path = builder.build(tuple(keep))
            sess = builder.session(path)
            cache[k] = (predict(recipe, data, sess, bs=bs), sess if with_speed else None)
        pred, sess = cache[k]
        speed = 0.0
        if with_speed:
            sess = sess or builder.session(builder.build(tuple(keep)))
            speed = images_per_s(sess, views, bs, min_time)
        cache[k] = (pred, None)  # let the session go
        return pred, per_sample(task, reference, pred), speed

    def point(keep: tuple[str, ...], added: str | None) -> CurvePoint:
        pred, rows, speed = measure(keep, True)
        a = agreement(rows)
        p = CurvePoint(len(keep), keep, added, a, 1.0 - a, 1.0 - a <= budget + 1e-12, speed, pred.metrics)
        say(f"kept {len(keep):3d} layer(s) ({added or 'full build'}): agreement {a:.4f}, drop {100 * p.drop:.2f}%, "
            f"{speed:.2f} img/s")
        return p

    notes: list[str] = []
    base = point((), None)
    curve = [base]
    seconds = {"baseline": time.perf_counter() - t0}
    if base.passes:
        return SearchResult(builder.variant, budget, reference_name, keys, [], curve, (), True, bs, notes, seconds)
    base_path = builder.build(())
    found = quantized_layers(base_path)
    if not found:
        notes.append("the build has no quantised Conv / Gemm / MatMul layer to keep in fp32")
        return SearchResult(builder.variant, budget, reference_name, keys, [], curve, (), False, bs, notes, seconds)
    t1 = time.perf_counter()
    n_noise = min(NOISE_SAMPLES, len(data))
    w_noise = weight_noise(base_path, builder.graph)
    i_noise = input_noise(base_path, recipe, data.subset(n_noise), threads=getattr(builder, "threads", None))
    layers = [Layer(n, op, i_noise.get(n, 0.0), w_noise.get(n, 0.0)) for n, op, *_ in found]
    layers.sort(key=lambda x: -x.noise)
    seconds["noise_ranking"] = time.perf_counter() - t1
    say(f"ranked {len(layers)} quantised layers by tensor noise on {n_noise} images "
        f"({seconds['noise_ranking']:.0f} s); verifying the {min(verify, len(layers))} noisiest with the metric")
    t2 = time.perf_counter()
    base_pred, base_rows, _ = measure((), False)
    base_bad = {r["sample"] for r in base_rows if r["agreement"] < 1.0}
    base_dis = sum(r["disagreement"] for r in base_rows)
    for layer in layers[:max(0, verify)]:
        _, rows, _ = measure((layer.name,), False)
        layer.verified = True
        layer.agreement = agreement(rows)
        layer.samples_fixed = sum(r["sample"] in base_bad and r["agreement"] >= 1.0 for r in rows)
        layer.disagreement_drop = base_dis - sum(r["disagreement"] for r in rows)
        say(f"  {layer.name}: agreement {layer.agreement:.4f} kept alone ({layer.samples_fixed} samples fixed)")
    seconds["verification"] = time.perf_counter() - t2
    verified = sorted((x for x in layers if x.verified),
                      key=lambda x: (-(x.agreement or 0.0), -(x.disagreement_drop or 0.0), -x.noise))
    helped = [x for x in verified if (x.samples_fixed or 0) > 0 or (x.disagreement_drop or 0.0) > 0]
    # verified layers that did not help (kept alone, the samples disagreed as much or more) go last
    ranked = helped + [x for x in layers if not x.verified] + [x for x in verified if x not in helped]
    t3 = time.perf_counter()
    kept: list[str] = []
    for layer in ranked[:max(1, max_keep)]:
        kept.append(layer.name)
        p = point(tuple(kept), layer.name)
        curve.append(p)
        if p.passes:
            break
    seconds["greedy"] = time.perf_counter() - t3
    seconds["total"] = time.perf_counter() - t0
    passed = curve[-1].passes
    if not passed:
        notes.append(f"after keeping {len(kept)} of {len(ranked)} quantised layers in fp32 the drop is still "
                     f"{100 * curve[-1].drop:.2f}% (budget {100 * budget:g}%): raise max_keep, or the budget, or "
                     "look at layers the search does not rank (Add, Concat, pooling)")
    return SearchResult(builder.variant, budget, reference_name, keys, ranked, curve, tuple(kept), passed, bs,
                        notes, seconds)
