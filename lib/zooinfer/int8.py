"""ONNX Runtime INT8 that runs as int8 kernels on this CPU: static QDQ quantisation with the types the CPU wants,
its calibration images (named, taken from outside the evaluated selection where the dataset has more), and what
ONNX Runtime's optimised graph really runs (how many convolutions / matrix products are int8, how many stayed fp32).

**Which types.** The installed onnxruntime's ``quantize_static`` docstring ("Choosing parameters for CPU
inference", ORT 1.32) says: x86 with VNNI -> ``activation_type=QUInt8``, ``weight_type=QInt8``,
``reduce_range=False``; x86 without VNNI -> the same with ``reduce_range=True`` (7-bit weights, against saturation
of the 16-bit intermediate sums); ARM -> ``QInt8`` for both. :func:`default_types` follows it, using
:func:`zooinfer.cpu.has_int8_dot` (VNNI or AMX) for the range.

**Why int8 activations are slow on x86.** ONNX Runtime fuses a DequantizeLinear -> Conv -> QuantizeLinear group
into one int8 kernel (QLinearConv) when its x86 kernels can take it; they multiply uint8 activations by int8
weights. With int8 activations the fusion still happens along a plain chain, but a convolution beside a tensor with
several consumers or beside an Add (DPN's dual paths, ResNet's residual adds) stays an fp32 ``Conv`` with the
quantise / dequantise work added around it (tests/test_int8.py counts it on a tiny residual block). The variant
``onnxruntime-int8-s8s8`` keeps that build for comparison (and for targets that want symmetric int8, e.g. ARM,
GPUs, NPUs); :func:`kernel_counts` shows what each build runs.

**Before quantising.** ``onnxruntime.quantization.shape_inference.quant_pre_process`` (shape inference and ONNX
Runtime's basic graph optimisation, e.g. folding BatchNormalization into Conv), as ORT's quantizer asks; its output
is cached next to the source. Graphs below opset 13 are converted to 13 first (per-channel DequantizeLinear needs
its ``axis``). ``nodes_to_exclude`` names nodes of that pre-processed graph (:func:`preprocessed_onnx`); Conv, Gemm
and MatMul keep their source names through it.

**Keeping nodes in fp32 at run time.** The quantizer leaves an excluded Conv / Gemm with fp32 weights between the
DequantizeLinear of its input and the QuantizeLinear of its output. ONNX Runtime's ``WeightBiasQuantization`` graph
transformer (ORT >= 1.21, on by default) then quantises such weights itself (symmetric per-tensor int8) and fuses the
node into an int8 kernel: the node is *not* kept in fp32 (measured here: tests/test_int8.py). A build with
``nodes_to_exclude`` therefore says in its info which transformers its sessions must not run
(``ort_disabled_optimizers``); :func:`zooinfer.variants.open_variant` and :func:`kernel_counts` honour it, and an
ONNX Runtime deployment of such a model must pass ``disabled_optimizers=["WeightBiasQuantization"]`` to its
``InferenceSession``.
"""
from __future__ import annotations

import collections
import contextlib
import logging
import os
import platform
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Sequence

import numpy as np

from . import cpu
from .errors import ZooinferError
from .paths import working_folder

#: the INT8 variants (zooinfer.variants names) -> the int8_onnx settings they fix (None: the CPU's default)
VARIANT_SETTINGS = {"onnxruntime-int8": {}, "onnxruntime-int8-s8s8": {"activation_type": "int8"}}

#: ONNX Runtime op types (any domain, as its optimised CPU graph writes them) that run a convolution / a matrix
#: product in int8, and those that run one in fp32 (``com.microsoft.nchwc`` Conv is the blocked-layout fp32 Conv)
INT8_KERNELS = {"conv": ("QLinearConv", "ConvInteger", "QLinearConvTranspose"),
                "matmul": ("QGemm", "QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul",
                           "QAttention")}
FP32_KERNELS = {"conv": ("Conv", "FusedConv", "NhwcFusedConv", "ConvTranspose"),
                "matmul": ("Gemm", "FusedGemm", "MatMul", "FusedMatMul", "TransposeMatMul", "Attention")}
#: source op types that become those kernels (to count the nodes a build excluded on purpose)
SOURCE_OPS = {"conv": ("Conv", "ConvTranspose"), "matmul": ("Gemm", "MatMul")}
#: ONNX Runtime graph transformers a session must not run for nodes excluded from quantisation to stay fp32
KEEP_FP32_DISABLED_OPTIMIZERS = ("WeightBiasQuantization",)

INT8_METHODS = ("minmax", "entropy", "percentile")
TYPES = ("int8", "uint8")

#: what a CPU without int8 dot-product instructions means for speed (shown beside its INT8 timings)
NO_VNNI_NOTE = ("this CPU has no int8 dot-product instructions (VNNI / AMX): ONNX Runtime's int8 kernels multiply in "
                "16-bit steps (AVX2 vpmaddubsw), so INT8 gains little or nothing over fp32 here, and the weights are "
                "quantised to 7 bits (reduce_range, as onnxruntime's quantize_static advises) to avoid saturation, "
                "which costs a little accuracy. It still runs; the accuracy figures hold for a VNNI CPU only "
                "approximately.")


def is_x86() -> bool:
    """Whether this machine is x86-64 (where ONNX Runtime's int8 kernels want uint8 activations)."""
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


def default_types() -> dict:
    """The types ``quantize_static``'s docstring advises for this CPU: ``{"activation_type", "weight_type",
    "reduce_range"}`` (uint8 / int8 / not VNNI on x86; int8 / int8 / False elsewhere)."""
    if is_x86():
        return {"activation_type": "uint8", "weight_type": "int8", "reduce_range": not cpu.has_int8_dot()}
    return {"activation_type": "int8", "weight_type": "int8", "reduce_range": False}


def speed_note() -> str | None:
    """A note for beside INT8 timings on an x86 CPU without VNNI / AMX (None where it has them, or not x86)."""
    return NO_VNNI_NOTE if is_x86() and cpu.known() and not cpu.has_int8_dot() else None


# ------------------------------------------------------------------------------------------------ calibration
@dataclass(frozen=True)
class Calibration:
    """The images an INT8 model was calibrated on (``keys`` name them in the report), what was clipped, and where
    they come from relative to the evaluated selection (``source``: "outside the evaluated selection",
    "evaluated images", "given keys", or None when the caller did not say what it evaluates)."""

    keys: tuple[str, ...]
    requested: int
    note: str | None = None
    source: str | None = None


def calibration_samples(dataset: Any, count: int | None = 8, keys: Sequence[str] | None = None,
                        evaluated: Collection[str] | None = None) -> tuple[list[Any], Calibration]:
    """The calibration images: ``keys`` when given (unknown keys raise), else ``count`` images spread evenly
    (first and last included; deterministic) over the dataset's images **outside** ``evaluated`` (the keys the run
    evaluates) where there are any, else over the evaluated ones (the note says "calibrated on evaluated images").
    A count larger than the images to choose from is clipped to them and the note says so."""
    samples = list(dataset)
    if not samples:
        raise ZooinferError("INT8 calibration needs at least one dataset image; the dataset is empty")
    if keys is not None:
        by_key = {s.key: s for s in samples}
        missing = [k for k in keys if k not in by_key]
        if missing:
            raise ZooinferError(f"calibration keys not in the dataset: {', '.join(map(str, missing[:5]))}"
                                + (" ..." if len(missing) > 5 else ""))
        chosen = [by_key[k] for k in dict.fromkeys(keys)]
        shared = [s.key for s in chosen if evaluated is not None and s.key in set(evaluated)]
        note = f"{len(shared)} of the given calibration images are evaluated too" if shared else None
        return chosen, Calibration(tuple(s.key for s in chosen), len(chosen), note, "given keys")
    n = int(count or 0)
    if n < 1:
        raise ZooinferError(f"INT8 calibration needs a count of at least 1 image, got {count!r}")
    notes, source, pool = [], None, samples
    if evaluated is not None:
        inside = set(evaluated)
        outside = [s for s in samples if s.key not in inside]
        if outside:
            pool, source = outside, "outside the evaluated selection"
            notes.append(f"calibrated on images outside the {len(samples) - len(outside)} evaluated ones")
        else:
            source = "evaluated images"
            notes.append("calibrated on evaluated images: the run evaluates the whole dataset")
    if n > len(pool):
        what = "the images outside the evaluated selection" if source == "outside the evaluated selection" \
            else "the dataset"
        clip = f"calibration count {n} is larger than {what} ({len(pool)} images): clipped to {len(pool)}"
        warnings.warn(clip, stacklevel=3)
        notes.append(clip)
        n = len(pool)
    idx = sorted(set(np.linspace(0, len(pool) - 1, n).round().astype(int).tolist()))
    chosen = [pool[i] for i in idx]
    return chosen, Calibration(tuple(s.key for s in chosen), int(count), "; ".join(notes) or None, source)


class CalibrationReader:
    """``onnxruntime.quantization.CalibrationDataReader``: every view of every calibration image, one at a time,
    through the recipe's own preprocessing (unreadable images are skipped and listed in ``failed``)."""

    def __init__(self, recipe: Any, samples: list[Any]):
        self.recipe, self.samples = recipe, samples
        self.failed: list[tuple[str, str]] = []
        self._it = self._gen()

    def _gen(self):
        for s in self.samples:
            try:
                views, _ = self.recipe.preprocess(s.path)
            except Exception as e:  # noqa: BLE001 - same rule as the pipeline: count, name, go on
                self.failed.append((s.key, f"{type(e).__name__}: {e}"))
                continue
            for v in views:
                yield {self.recipe.input_name: np.ascontiguousarray(v[None], dtype=np.float32)}

    def get_next(self):
        return next(self._it, None)

    def rewind(self):
        self._it = self._gen()


# ------------------------------------------------------------------------------------------------ building
def preprocessed_onnx(onnx_path: str | os.PathLike) -> tuple[Path, dict]:
    """``onnx_path`` made ready for ONNX Runtime's quantizer, cached next to it (``<stem>.qpre-<key>.onnx``):
    converted to opset 13 where below, then ``quant_pre_process`` (shape inference + basic graph optimisation).
    Returns (path, info). The node names a precision search excludes are this graph's."""
    from .variants import _cache_path, _need, _read_sidecar, _save, file_md5

    shape_inference = _need("onnxruntime.quantization.shape_inference", "the INT8 variants")
    import onnx
    import onnxruntime

    src = Path(onnx_path)
    settings = {"ort": onnxruntime.__version__, "quant_pre_process": True, "min_opset": 13}
    out = _cache_path(src, "qpre", settings)
    if out.is_file():
        return out, _read_sidecar(out)
    info: dict = {"source": str(src), "source_md5": file_md5(src), **settings}
    model = onnx.load(str(src))
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:
        model = onnx.version_converter.convert_version(model, 13)
        info["converted_opset"] = f"{opset} -> 13"
    with tempfile.TemporaryDirectory(dir=src.parent, prefix=f".{src.stem}.qpre-") as tmp:
        done = Path(tmp) / "pre.onnx"
        # ONNX Runtime's symbolic shape inference saves large graphs (sym_shape_infer_temp.onnx + external data) in
        # the working folder: a killed build left them (530 MB) in the checkout
        with working_folder(tmp):
            try:
                shape_inference.quant_pre_process(model, str(done))
            except Exception as e:  # noqa: BLE001 - symbolic shape inference fails on some graphs; ONNX's is enough
                info["symbolic_shape_inference"] = f"skipped: {type(e).__name__}: {str(e)[:200]}"
                shape_inference.quant_pre_process(model, str(done), skip_symbolic_shape=True)
        del model
        return _save(onnx.load(str(done)), out, info), info


def int8_onnx(recipe: Any, onnx_path: str | os.PathLike, dataset: Any, *, calibration: int | None = 8,
              keys: Sequence[str] | None = None, evaluated: Collection[str] | None = None, per_channel: bool = True,
              method: str = "minmax", activation_type: str | None = None, weight_type: str = "int8",
              reduce_range: bool | None = None, nodes_to_exclude: Sequence[str] = ()) -> tuple[Path, dict]:
    """ONNX Runtime static quantization of ``onnx_path`` (QDQ format, per-channel weights by default), calibrated on
    ``calibration`` images of ``dataset`` (or the given ``keys``; chosen outside ``evaluated``, the keys the run
    evaluates, where the dataset has more) through ``recipe.preprocess``; cached next to the source, keyed by its
    md5, the calibration keys and the settings. ``activation_type`` / ``reduce_range`` None: this CPU's default
    (:func:`default_types`: uint8 activations on x86, 7-bit weights without VNNI). ``nodes_to_exclude``: node
    names of the pre-processed graph (:func:`preprocessed_onnx`) kept in fp32 (what a precision search chooses).

    Returns (path, info): info names the calibration images (``calibration_keys``, ``calibration_note``,
    ``calibration_from``), the settings, and what ONNX Runtime's optimised graph runs (``kernels``, see
    :func:`kernel_counts`; ``kernel_warning`` when fp32 convolutions remain)."""
    from .variants import _cache_path, _need, _read_sidecar, _write_sidecar

    quant = _need("onnxruntime.quantization", "the INT8 variants")
    import onnxruntime

    if method not in INT8_METHODS:
        raise ZooinferError(f"unknown calibration method {method!r}; choose one of {', '.join(INT8_METHODS)}")
    defaults = default_types()
    activation_type = defaults["activation_type"] if activation_type is None else activation_type
    reduce_range = (defaults["reduce_range"] if activation_type == "uint8" else False) if reduce_range is None \
        else bool(reduce_range)
    if activation_type not in TYPES or weight_type not in TYPES:
        raise ZooinferError(f"INT8 activation/weight types must be one of {', '.join(TYPES)}, got "
                            f"{activation_type!r} / {weight_type!r}")
    src = Path(onnx_path)
    samples, cal = calibration_samples(dataset, calibration, keys, evaluated)
    settings = {"ort": onnxruntime.__version__, "format": "QDQ", "per_channel": bool(per_channel), "method": method,
                "activations": activation_type, "weights": weight_type, "reduce_range": reduce_range,
                "quant_pre_process": True, "calibration_keys": list(cal.keys),
                "nodes_to_exclude": sorted(nodes_to_exclude)}
    out = _cache_path(src, "int8", settings)
    info = {"source": str(src), **settings, "calibration_count": len(cal.keys),
            "calibration_requested": cal.requested, "calibration_note": cal.note, "calibration_from": cal.source,
            "cpu": cpu.isa_note(), "speed_note": speed_note(),
            "ort_disabled_optimizers": list(KEEP_FP32_DISABLED_OPTIMIZERS if nodes_to_exclude else ())}
    if out.is_file():
        cached = _read_sidecar(out)
        if "kernels" not in cached:  # a build from before the counts were kept
            cached.update(_kernel_info(out, preprocessed_onnx(src)[0], nodes_to_exclude,
                                       info["ort_disabled_optimizers"]))
            _write_sidecar(out, {**cached, **info})
        elif cached.get("kernel_warning"):
            warnings.warn(cached["kernel_warning"], stacklevel=2)
        return out, {**cached, **info, "cached": True}
    work, pre_info = preprocessed_onnx(src)
    if pre_info.get("converted_opset"):
        info["converted_opset"] = pre_info["converted_opset"]
    reader = CalibrationReader(recipe, samples)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.onnx")
    methods = {"minmax": quant.CalibrationMethod.MinMax, "entropy": quant.CalibrationMethod.Entropy,
               "percentile": quant.CalibrationMethod.Percentile}
    types = {"int8": quant.QuantType.QInt8, "uint8": quant.QuantType.QUInt8}
    try:
        with warnings.catch_warnings(), _quiet_root_logger():
            warnings.simplefilter("ignore")
            quant.quantize_static(str(work), str(tmp), reader, quant_format=quant.QuantFormat.QDQ,
                                  per_channel=per_channel, reduce_range=reduce_range,
                                  activation_type=types[activation_type], weight_type=types[weight_type],
                                  calibrate_method=methods[method], nodes_to_exclude=list(nodes_to_exclude),
                                  **_calibration_cache(quant, work, method, cal.keys))
        if len(reader.failed) < len(samples):
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    if reader.failed:
        info["calibration_failed"] = reader.failed
        if len(reader.failed) == len(samples):
            raise ZooinferError(f"INT8 calibration: every calibration image failed to preprocess: {reader.failed[0]}")
        info["calibration_keys_used"] = [k for k in cal.keys if k not in dict(reader.failed)]
    info.update(_kernel_info(out, work, nodes_to_exclude, info["ort_disabled_optimizers"]))
    _write_sidecar(out, info)
    return out, {**info, "cached": False}


@contextlib.contextmanager
def _quiet_root_logger(level: int = logging.ERROR):
    """The root logger at ``level`` for the block: ONNX Runtime's quantizer logs one root-logger warning per 1-D
    weight it cannot quantise per channel ("Axis 1 is out-of-range for weight '...bn.weight' with rank 1": it
    quantises those per tensor), 48 lines for DPN131 on the terminal and in the notebook."""
    root = logging.getLogger()
    before = root.level
    root.setLevel(max(level, before))
    try:
        yield
    finally:
        root.setLevel(before)


def _calibration_cache(quant: Any, graph: Path, method: str, keys: Sequence[str]) -> dict:
    """``calibration_cache_path=`` for ``quantize_static`` where this onnxruntime has it: the calibration ranges of
    one graph, method and image set (``<stem>.int8cal-<key>.json`` beside it), computed once and reused by every
    build that differs only in its types or ``nodes_to_exclude`` (a precision search makes dozens: each then skips
    the calibration passes, about half of a build's time); {} where it has not."""
    import inspect

    from .variants import _cache_path

    if "calibration_cache_path" not in inspect.signature(quant.quantize_static).parameters:
        return {}
    key = {"method": method, "calibration_keys": list(keys)}
    return {"calibration_cache_path": str(_cache_path(graph, "int8cal", key).with_suffix(".json"))}


# ------------------------------------------------------------------------------------------------ what runs
def kernel_counts(onnx_path: str | os.PathLike, disabled_optimizers: Sequence[str] = ()) -> dict:
    """What ONNX Runtime's CPU provider runs for ``onnx_path`` after full graph optimisation without
    ``disabled_optimizers`` (the graph the CPU session caches, written here when not there yet):
    ``{"conv_int8", "conv_fp32", "matmul_int8", "matmul_fp32"}`` counts, ``fp32_conv_nodes`` (the first 20
    names), and ``ops`` (every op type with its count)."""
    import onnx
    import onnxruntime as ort

    from .backends.onnxruntime import optimized_cache_path

    path = Path(onnx_path)
    opt = optimized_cache_path(path, disabled_optimizers)
    if not (opt.is_file() and opt.stat().st_mtime >= path.stat().st_mtime):
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3  # it warns that an NCHWc graph is machine-specific: that is why it is cached per CPU
        tmp = opt.with_name(f".{opt.name}.{os.getpid()}.tmp.onnx")
        so.optimized_model_filepath = str(tmp)
        try:
            extra = {"disabled_optimizers": list(disabled_optimizers)} if disabled_optimizers else {}
            ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"], **extra)
            os.replace(tmp, opt)
        finally:
            if tmp.exists():
                tmp.unlink()
    nodes = onnx.load(str(opt), load_external_data=False).graph.node
    out: dict[str, Any] = {f"{k}_{p}": 0 for k in INT8_KERNELS for p in ("int8", "fp32")}
    fp32_convs = []
    for n in nodes:
        for kind in INT8_KERNELS:
            if n.op_type in INT8_KERNELS[kind]:
                out[f"{kind}_int8"] += 1
            elif n.op_type in FP32_KERNELS[kind]:
                out[f"{kind}_fp32"] += 1
                if kind == "conv":
                    fp32_convs.append(n.name)
    out["fp32_conv_nodes"] = fp32_convs[:20]
    out["ops"] = dict(sorted(collections.Counter(n.op_type for n in nodes).items()))
    return out


def excluded_counts(onnx_path: str | os.PathLike, nodes_to_exclude: Collection[str]) -> dict:
    """How many of ``nodes_to_exclude`` are convolutions / matrix products in ``onnx_path`` (kept fp32 on
    purpose): ``{"conv": n, "matmul": n}``."""
    import onnx

    if not nodes_to_exclude:
        return {k: 0 for k in SOURCE_OPS}
    wanted = set(nodes_to_exclude)
    ops = [n.op_type for n in onnx.load(str(onnx_path), load_external_data=False).graph.node if n.name in wanted]
    return {k: sum(op in types for op in ops) for k, types in SOURCE_OPS.items()}


def kernel_summary(k: dict) -> str:
    """One line: 'ONNX Runtime runs 130 Conv + 1 Gemm/MatMul as int8; 0 Conv + 0 Gemm/MatMul stayed fp32'."""
    return (f"ONNX Runtime runs {k['conv_int8']} Conv + {k['matmul_int8']} Gemm/MatMul as int8; "
            f"{k['conv_fp32']} Conv + {k['matmul_fp32']} Gemm/MatMul stayed fp32")


def kernel_warning(k: dict, excluded: dict | None = None) -> str | None:
    """A warning when fp32 convolutions remain beyond those excluded on purpose (None otherwise)."""
    extra = k["conv_fp32"] - (excluded or {}).get("conv", 0)
    if extra <= 0:
        return None
    names = ", ".join(k.get("fp32_conv_nodes", [])[:5])
    return (f"{k['conv_fp32']} convolutions stayed fp32 in ONNX Runtime's optimised graph"
            + (f" ({(excluded or {}).get('conv', 0)} excluded on purpose)" if (excluded or {}).get("conv") else "")
            + f", e.g. {names}: they run in fp32 with quantise/dequantise work around them, so this INT8 build is "
              "slower than it should be; on x86 use uint8 activations (the `onnxruntime-int8` variant)")


def _kernel_info(path: Path, graph: Path, nodes_to_exclude: Collection[str], disabled: Sequence[str]) -> dict:
    """The ``kernels`` entry of an INT8 build's info, its one-line summary and warning (also issued)."""
    k = kernel_counts(path, disabled)
    excluded = excluded_counts(graph, nodes_to_exclude)
    warning = kernel_warning(k, excluded)
    if warning:
        warnings.warn(warning, stacklevel=3)
    return {"kernels": {**k, "excluded": excluded}, "kernel_summary": kernel_summary(k), "kernel_warning": warning}
