"""Backend x precision variants of one model: the sessions ``zooinfer.compare`` runs side by side.

A variant is named by a string (``open_variant("onnxruntime-int8", recipe, ...)``):

============================  ==========================================================================================
``onnxruntime``               ONNX Runtime CPU, fp32: the default reference
``torch`` / ``torch-cuda``    PyTorch eager (CPU / CUDA), fp32
``ort-cuda`` / ``ort-tensorrt``  ONNX Runtime CUDA / TensorRT execution providers, fp32
``tensorrt-fp16``             ONNX Runtime's TensorRT provider with ``trt_fp16_enable`` (a real fp16 engine)
``onnxruntime-fp16``          the graph converted to float16 by onnxconverter-common, simulated exactly on the CPU
                              (see :func:`fp16_simulation_onnx`): the closest this machine gets to an NPU fp16 run
``onnxruntime-fp16-file``     the same float16 file run as-is by ONNX Runtime CPU (see below why this is weaker)
``ort-cuda-fp16``             the float16 file on the CUDA provider (real fp16 kernels)
``onnxruntime-int8``          ``onnxruntime.quantization`` static quantization (QDQ, per-channel int8 weights, MinMax
                              calibration on N dataset images through the real preprocessing, outside the evaluated
                              ones where the dataset has more) with the types this CPU runs fast: on x86 uint8
                              activations (reduce_range where the CPU lacks VNNI / AMX), elsewhere int8; the info
                              counts the Conv / Gemm / MatMul ONNX Runtime runs as int8 and those left fp32
                              (see :mod:`zooinfer.int8`)
``onnxruntime-int8-s8s8``     the same with int8 activations (on x86 convolutions beside shared tensors and Adds
                              stay fp32: slow; the form symmetric-int8 targets take)
``openvino``                  OpenVINO CPU, f32 (explicit: not its bf16 default on bf16 CPUs)
``openvino-bf16``             OpenVINO CPU, bf16 inference precision (skipped where the CPU has no bf16)
``openvino-int8``             NNCF post-training INT8 (same calibration images and node names as
                              ``onnxruntime-int8``; ``int8_options["nodes_to_exclude"]`` is its ignored scope) on
                              OpenVINO CPU (see :mod:`zooinfer.openvino_variants`)
``acl``                       the OM file on an Ascend NPU (``om_path=``; needs aclruntime / ais_bench)
``bins:<folder>``             results computed elsewhere (an ais_bench output folder) read back as one more variant
============================  ==========================================================================================

Converted files are cached next to the exported ONNX file, keyed by the source file's md5 and the settings
(``<stem>.fp16-<key>.onnx``, ``<stem>.fp16sim-<key>.onnx``, ``<stem>.int8-<key>.onnx`` plus a ``.json`` sidecar
saying what was done, e.g. which images calibrated the INT8 model).

An unknown name raises a :class:`~zooinfer.errors.ZooinferError` listing the known ones; a variant whose runtime is
missing here (CUDA / TensorRT providers, aclruntime, a result folder) comes back as :class:`Skipped` with the reason.
The conversion libraries are imported only when a variant needs them; a missing one raises a ZooinferError saying
what to install (``pip install -e ".[variants]"``).
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Iterable, Sequence

import numpy as np

from .errors import BackendError, ZooinferError
# the INT8 build (types for this CPU, calibration outside the evaluated selection, what ONNX Runtime runs) lives in
# zooinfer.int8; its names stay importable from here
from .int8 import INT8_METHODS, Calibration, calibration_samples, int8_onnx  # noqa: F401
from .int8 import VARIANT_SETTINGS as INT8_VARIANTS
from .int8 import CalibrationReader as _CalibrationReader  # noqa: F401
from .parameters import VARIANTS, check_result_folder
from .parameters import parse_variant as parse_name
from .recipes.base import Recipe

#: variant names (``bins:<folder>`` takes the folder after the colon); the parser's list (zooinfer.parameters)
KNOWN = VARIANTS

#: what each variant computes in, for tables and the localisation tolerance
PRECISION = {"onnxruntime": "fp32", "torch": "fp32", "torch-cuda": "fp32", "ort-cuda": "fp32", "ort-tensorrt": "fp32",
             "tensorrt-fp16": "fp16", "onnxruntime-fp16": "fp16", "onnxruntime-fp16-file": "fp16",
             "ort-cuda-fp16": "fp16", "onnxruntime-int8": "int8", "onnxruntime-int8-s8s8": "int8", "openvino": "fp32",
             "openvino-bf16": "bf16", "openvino-int8": "int8", "acl": "om", "bins": "om"}

INSTALL_HINT = 'pip install -e ".[variants]"  (onnxconverter-common, polygraphy; onnxruntime ships the quantizer)'

#: fp16 limits handed to onnxconverter-common: the IEEE half range, so weights are rounded as a plain cast would
#: (the converter's defaults clamp weights to [1e-7, 1e4], which no NPU/TensorRT conversion does)
FP16_MAX = 65504.0
FP16_MIN_POSITIVE = 2.0 ** -24


@dataclass
class Variant:
    """One opened variant: ``session`` has ``run(batch)`` (or ``read(key)`` for result files).

    ``onnx_path`` is the graph the session runs (what :mod:`zooinfer.localise` compares), None for PyTorch, OM and
    result files. ``info`` says how it was made (cache file, calibration images, how exact a simulation is)."""

    name: str
    backend: str
    precision: str
    session: Any
    onnx_path: Path | None = None
    info: dict = field(default_factory=dict)

    @property
    def device(self) -> str:
        return str(getattr(self.session, "device", "?"))


@dataclass(frozen=True)
class Skipped:
    """A variant that could not run on this machine, and why (shown in the report instead of a crash)."""

    name: str
    reason: str


def known_variants() -> tuple[str, ...]:
    return KNOWN


def check_bins_folder(path: str | os.PathLike) -> None:
    """Raise a ZooinferError naming the ``bins:<path>`` variant unless ``path`` is a folder holding result files
    (``<key>_<k>.bin`` / ``.txt`` as ais_bench writes them, at its top or in ``view<v>/`` folders). Reads names only;
    whether every sample has its files is known once the dataset is open (:func:`zooinfer.compare.compare` names the
    samples a folder lacks)."""
    check_result_folder(path, f"variant 'bins:{path}'")


# ------------------------------------------------------------------------------------------------ cache helpers
_MD5: dict[tuple[str, int, int], str] = {}


def file_md5(path: str | os.PathLike) -> str:
    """md5 of a file's bytes (memoised per path, size and mtime: the exported files are hundreds of MB)."""
    p = Path(path)
    st = p.stat()
    memo = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _MD5:
        h = hashlib.md5()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                h.update(chunk)
        _MD5[memo] = h.hexdigest()
    return _MD5[memo]


def _cache_path(src: Path, kind: str, settings: dict) -> Path:
    blob = json.dumps({"src": file_md5(src), **settings}, sort_keys=True, default=str)
    return src.with_name(f"{src.stem}.{kind}-{hashlib.md5(blob.encode()).hexdigest()[:12]}.onnx")


def _save(model: Any, path: Path, info: dict) -> Path:
    """Write ``model`` (and its ``.json`` sidecar) under a temporary name, then rename: no half-written cache."""
    import onnx

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        onnx.save(model, str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _write_sidecar(path, info)
    return path


def _write_sidecar(path: Path, info: dict) -> None:
    side = path.with_suffix(".json")
    tmp = side.with_name(f".{side.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info, indent=1, default=str))
    os.replace(tmp, side)


def _read_sidecar(path: Path) -> dict:
    try:
        return json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return {}


def _need(module: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ZooinferError(f"{what} needs the Python package {module.split('.')[0]!r}: {INSTALL_HINT}") from None


# ------------------------------------------------------------------------------------------------ fp16
def fp16_onnx(onnx_path: str | os.PathLike, *, op_block_list: Sequence[str] | None = None) -> Path:
    """The graph converted to float16 by onnxconverter-common (``keep_io_types=True``: float32 inputs and outputs,
    with Cast nodes inside), cached next to ``onnx_path``. ``op_block_list``: op types kept in float32 (default:
    the converter's list, e.g. Resize, TopK, Range, Min/Max, NonMaxSuppression). This is the file a GPU run
    (``ort-cuda-fp16``) takes."""
    src = Path(onnx_path)
    float16 = _need("onnxconverter_common.float16", "the fp16 variants")
    import onnx
    import onnxconverter_common

    blocked = sorted(op_block_list) if op_block_list is not None else sorted(float16.DEFAULT_OP_BLOCK_LIST)
    settings = {"converter": onnxconverter_common.__version__, "keep_io_types": True, "op_block_list": blocked,
                "max_finite": FP16_MAX, "min_positive": FP16_MIN_POSITIVE}
    out = _cache_path(src, "fp16", settings)
    if out.is_file():
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the converter warns about every value it rounds
        m16 = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True, op_block_list=blocked,
                                               max_finite_val=FP16_MAX, min_positive_val=FP16_MIN_POSITIVE)
    return _save(m16, out, {"source": str(src), "source_md5": file_md5(src), **settings})


def fp16_simulation_onnx(onnx_path: str | os.PathLike, *, op_block_list: Sequence[str] | None = None) -> Path:
    """An float32 graph that computes exactly what the float16 file (:func:`fp16_onnx`) specifies, made so that
    ONNX Runtime on the CPU cannot skip the roundings. Cached next to ``onnx_path``.

    **Why not run the float16 file directly on the CPU.** ONNX Runtime's CPU provider has float16 kernels for few
    operators (data movement: Concat, Slice, Reshape, Transpose...; not Conv, Gemm, BatchNormalization, Add, Relu
    on x86). For the others its ``InsertCastTransformer`` casts to float32, and it merges consecutive such operators
    into one float32 island, removing the casts between them (measured here: Conv -> Relu -> ReduceMean -> Gemm
    ran in float32 with no rounding in between, and with full optimisation even the input cast was dropped). The
    float16 file then runs with float16 weights but mostly float32 activations: a weak simulation
    (``onnxruntime-fp16-file`` runs it that way, for comparison).

    **What this graph does instead.** Every tensor that is float16 in the converted file -- weights, constants and
    the output of every operator the converter put in float16 -- is rounded to float16 (an explicit
    ``Cast(float16) -> Cast(float32)`` pair after its producer, which ONNX Runtime keeps) and stored as float32;
    each operator computes in float32 on its rounded inputs, and its result is rounded again. Operators in the
    converter's block list (Resize, TopK, ...) get float32 inputs and keep float32 outputs, as in the file.

    **How exact, against a real float16 run.** Storage matches a float16 run tensor by tensor (round to nearest
    even, overflow to inf above 65504, subnormals kept). Inside one operator the arithmetic is float32, then rounded
    once: that is what Ascend's Cube unit (float16 inputs, float32 accumulation, float16 output) and TensorRT's
    fp16 convolutions / GEMMs with float32 accumulation do, but not what an NPU vector unit does for elementwise
    chains, reductions, Softmax or exp/log computed in float16 (there a real run has more error than this).
    What differs from Ascend ATC's mixed precision: ATC (``--precision_mode force_fp16`` / ``allow_fp32_to_fp16``,
    the inference default) fuses operators (Conv + BN + ReLU, UB fusion) and rounds only at fused boundaries, so it
    rounds less often than this graph; ``allow_mix_precision`` keeps its block-listed operators (e.g. Softmax,
    reductions) in float32 where this keeps only the converter's list; its own kernels' accumulation order and
    transcendental approximations are not reproduced; and input/output dtypes follow the OM's settings, here
    float32 (keep_io_types). So this is an estimate of the float16 storage error, not a replay of the device.
    """
    src = Path(onnx_path)
    f16_path = fp16_onnx(src, op_block_list=op_block_list)
    settings = {"of": file_md5(f16_path), "transform": 2}
    out = _cache_path(src, "fp16sim", settings)
    if out.is_file():
        return out
    import onnx

    model, counts = _round_trip_graph(onnx.load(str(f16_path)))
    info = {"source": str(src), "fp16_file": str(f16_path), **settings, **counts,
            "how": "float16 storage per tensor (explicit Cast pairs), float32 arithmetic inside each operator"}
    return _save(model, out, info)


def _round_trip_graph(m16: Any) -> tuple[Any, dict]:
    """The float16 model -> float32 model with a float16 rounding after every float16 tensor's producer."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if any(a.type == onnx.AttributeProto.GRAPH or a.type == onnx.AttributeProto.GRAPHS
           for n in m16.graph.node for a in n.attribute):
        raise ZooinferError("fp16 simulation: graphs with sub-graphs (If/Loop/Scan) are not supported")
    try:
        typed = onnx.shape_inference.infer_shapes(m16)
    except Exception:  # noqa: BLE001 - fall back on the converter's value_info
        typed = m16
    g = typed.graph
    dtype = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    F16, F32 = TensorProto.FLOAT16, TensorProto.FLOAT
    out = onnx.ModelProto()
    out.CopyFrom(m16)
    graph = out.graph
    del graph.value_info[:]
    for i, init in enumerate(graph.initializer):
        if init.data_type == F16:
            graph.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32),
                                                                  init.name))
    nodes = []
    rounded = unknown = 0

    def round_after(name: str, tag: str) -> list:
        h = f"{name}__fp16sim_{tag}"
        return [helper.make_node("Cast", [f"{h}_f32"], [f"{h}_f16"], to=F16, name=f"{h}_to_f16"),
                helper.make_node("Cast", [f"{h}_f16"], [name], to=F32, name=f"{h}_to_f32")]

    for node in graph.node:
        n = onnx.NodeProto()
        n.CopyFrom(node)
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == F16:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float32), a.t.name))
            elif a.name in ("dtype", "to") and a.type == onnx.AttributeProto.INT and a.i == F16 and n.op_type != "Cast":
                a.i = F32
        if n.op_type == "Constant":
            nodes.append(n)
            continue
        if n.op_type == "Cast" and any(a.name == "to" and a.i == F16 for a in n.attribute):
            # float32 -> float16 cast: keep the rounding, store the result as float32
            target = n.output[0]
            n.output[0] = f"{target}__fp16sim_cast_f16"
            nodes.append(n)
            nodes.append(helper.make_node("Cast", [n.output[0]], [target], to=F32, name=f"{target}__fp16sim_cast_f32"))
            rounded += 1
            continue
        extra = []
        for k, o in enumerate(n.output):
            t = dtype.get(o)
            if not o:
                continue
            if t is None or t == 0:
                unknown += 1
            elif t == F16:
                n.output[k] = f"{o}__fp16sim_r_f32"
                extra += round_after(o, "r")
                rounded += 1
        nodes.append(n)
        nodes.extend(extra)
    del graph.node[:]
    graph.node.extend(nodes)
    return out, {"rounded_tensors": rounded, "tensors_of_unknown_type_not_rounded": unknown}


# ------------------------------------------------------------------------------------------------ opening
class Sources:
    """What variants are built from, resolved once and only when a variant needs it: the torch model (built with
    ``zooinfer.models.build_model`` when not given) and the fp32 ONNX file (exported with
    ``zooinfer.export.export_onnx`` when not given)."""

    def __init__(self, recipe: Recipe, *, onnx_path: str | os.PathLike | None = None, model: Any = None,
                 weights: str | None = None, weights_md5: str | None = None):
        self.recipe, self.weights, self.weights_md5 = recipe, weights, weights_md5
        self._onnx = Path(onnx_path) if onnx_path is not None else None
        self._model = model

    @property
    def model(self) -> Any:
        if self._model is None:
            from .models import build_model

            self._model = build_model(self.recipe.name, self.weights)
        return self._model

    @property
    def onnx_path(self) -> Path:
        if self._onnx is None:
            from .export import export_onnx

            self._onnx = Path(export_onnx(self.recipe, self.model, weights_md5=self.weights_md5))
        return self._onnx


def output_shapes(recipe: Recipe, onnx_path: str | os.PathLike, sample: Any) -> tuple[list[tuple[int, ...]], int]:
    """Per-sample output shapes (batch axis removed, ONNX order) and the view count of ``sample``, from one fp32
    ONNX Runtime run: what a result-file reader needs to reshape ``.bin`` files."""
    from .backends import open_session
    from .backends.base import sample_outputs

    views, _ = recipe.preprocess(sample.path)
    outs = open_session("onnxruntime", onnx_path=onnx_path).run(np.ascontiguousarray(views[0][None]))
    return [tuple(o.shape) for o in sample_outputs(outs, 1, 0)], len(views)


def open_variant(name: str, recipe: Recipe, *, sources: Sources | None = None, onnx_path: str | os.PathLike | None = None,
                 model: Any = None, dataset: Any = None, calibration: int | None = 8,
                 calibration_keys: Sequence[str] | None = None, int8_options: dict | None = None,
                 threads: int | None = None, device_id: int = 0, om_path: str | os.PathLike | None = None,
                 evaluated: Collection[str] | None = None) -> Variant | Skipped:
    """Open variant ``name`` of ``recipe`` (see the module docstring for the names).

    ``onnx_path`` / ``model`` (or a shared ``sources``) are what it is built from; ``dataset`` is needed by
    the INT8 variants (calibration: ``calibration`` images spread over its images outside ``evaluated``, the keys
    the run evaluates, where it has more, or ``calibration_keys``; more images than there are to choose from are
    clipped, with a note) and by ``bins:<folder>`` (its first sample sizes the outputs).
    A missing runtime (CUDA / TensorRT provider, aclruntime, OM file, result folder) gives ``Skipped(name, reason)``;
    an unknown name or a missing conversion library raises ZooinferError."""
    kind, arg = parse_name(name)
    src = sources or Sources(recipe, onnx_path=onnx_path, model=model)
    from .backends import open_session

    try:
        if kind in ("torch", "torch-cuda"):
            sess = open_session(kind, model=src.model, threads=threads, device_id=device_id,
                                input_shape=(None, *recipe.input_shape))
            return Variant(name, kind, "fp32", sess, None, {"runs": "PyTorch eager"})
        if kind in ("onnxruntime", "ort-cuda", "ort-tensorrt"):
            sess = open_session(kind, onnx_path=src.onnx_path, threads=threads, device_id=device_id)
            return Variant(name, kind, "fp32", sess, src.onnx_path, {"onnx": str(src.onnx_path)})
        if kind == "tensorrt-fp16":
            sess = open_session("ort-tensorrt", onnx_path=src.onnx_path, fp16=True, device_id=device_id)
            return Variant(name, "ort-tensorrt", "fp16", sess, src.onnx_path,
                           {"onnx": str(src.onnx_path), "how": "TensorRT engine built with fp16 enabled (real fp16)"})
        if kind == "onnxruntime-fp16":
            path = fp16_simulation_onnx(src.onnx_path)
            sess = open_session("onnxruntime", onnx_path=path, threads=threads)
            return Variant(name, "onnxruntime", "fp16", sess, path,
                           {**_read_sidecar(path), "how": "float16 storage per tensor, float32 arithmetic inside "
                            "each operator (see zooinfer.variants.fp16_simulation_onnx for how exact)"})
        if kind == "onnxruntime-fp16-file":
            path = fp16_onnx(src.onnx_path)
            sess = open_session("onnxruntime", onnx_path=path, threads=threads)
            return Variant(name, "onnxruntime", "fp16", sess, path,
                           {**_read_sidecar(path), "how": "the float16 file as ONNX Runtime CPU runs it: float16 "
                            "weights, operators without a CPU float16 kernel merged into float32 islands"})
        if kind == "ort-cuda-fp16":
            path = fp16_onnx(src.onnx_path)
            sess = open_session("ort-cuda", onnx_path=path, device_id=device_id)
            return Variant(name, "ort-cuda", "fp16", sess, path, {**_read_sidecar(path), "how": "CUDA fp16 kernels"})
        if kind in INT8_VARIANTS:
            if dataset is None:
                raise ZooinferError(f"variant {kind!r} needs dataset= (the calibration images)")
            path, info = int8_onnx(recipe, src.onnx_path, dataset, calibration=calibration, keys=calibration_keys,
                                   evaluated=evaluated, **{**(int8_options or {}), **INT8_VARIANTS[kind]})
            sess = open_session("onnxruntime", onnx_path=path, threads=threads,
                                disabled_optimizers=tuple(info.get("ort_disabled_optimizers", ())))
            return Variant(name, "onnxruntime", "int8", sess, path, info)
        if kind.startswith("openvino"):  # openvino, openvino-bf16, openvino-int8: zooinfer.openvino_variants
            from .openvino_variants import open_openvino_variant

            return open_openvino_variant(kind, recipe, src.onnx_path, dataset=dataset, calibration=calibration,
                                         calibration_keys=calibration_keys, evaluated=evaluated, threads=threads,
                                         ignored_scope=(int8_options or {}).get("nodes_to_exclude", ()))
        if kind == "acl":
            if om_path is None:
                return Skipped(name, "variant 'acl' needs om_path= (the .om file atc produced)")
            sess = open_session("acl", om_path=om_path, device_id=device_id)
            return Variant(name, "acl", "om", sess, None, {"om": str(om_path)})
        if kind == "bins":
            from .backends.bins import OutputReader

            folder = Path(arg)
            try:
                check_bins_folder(folder)
            except ZooinferError as e:  # missing or malformed: this variant is skipped, with the reason
                return Skipped(name, str(e))
            if dataset is None or not len(dataset):
                raise ZooinferError("variant 'bins:<folder>' needs dataset= (its first image sizes the outputs)")
            shapes, views = output_shapes(recipe, src.onnx_path, dataset[0])
            return Variant(name, "bins", "om", OutputReader(folder, shapes, views=views), None,
                           {"folder": str(folder), "output_shapes": [list(s) for s in shapes]})
    except BackendError as e:
        return Skipped(name, str(e))
    except ImportError as e:  # an optional runtime that is not installed here
        return Skipped(name, f"{type(e).__name__}: {e}")
    raise AssertionError(kind)  # pragma: no cover - parse_name admits only the kinds above


def open_variants(names: Iterable[str], recipe: Recipe, **kwargs: Any) -> tuple[list[Variant], list[Skipped]]:
    """Open several variants sharing one :class:`Sources` (model and ONNX file built once). Unknown names raise
    before anything is built."""
    names = list(names)
    for n in names:
        if isinstance(n, str):
            parse_name(n)
    if "sources" not in kwargs:
        kwargs["sources"] = Sources(recipe, onnx_path=kwargs.pop("onnx_path", None), model=kwargs.pop("model", None))
    opened, skipped = [], []
    for n in names:
        v = n if isinstance(n, Variant) else open_variant(n, recipe, **kwargs)
        (opened if isinstance(v, Variant) else skipped).append(v)
    return opened, skipped
