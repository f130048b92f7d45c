"""Layer-level localisation: where in the graph a variant starts to differ from the reference, for one input.

    loc = localise_worst(cmp, "onnxruntime-int8", recipe)     # the variant's worst sample from zooinfer.compare
    report.show(loc.table())           # the first nodes whose error exceeds the tolerance
    viz.compare.plot_error_by_depth(loc)

Both ONNX graphs are run on the same input with **every intermediate tensor marked as a graph output** and the
tensors are compared by name where they exist in both graphs (the float16 and INT8 graphs keep the original tensor
names; the Cast / QuantizeLinear / DequantizeLinear tensors they add have no counterpart and are counted apart).

Engine: Polygraphy (``OnnxrtRunner`` on a model whose outputs are all marked by ``ModifyOutputs(MARK_ALL)``, and its
``SimpleCompareFunc`` for the per-tensor verdict and max abs / max relative error). If Polygraphy is not installed,
the same is done directly with ONNX Runtime: every node output appended to the graph outputs (``engine="onnxruntime"``
forces it). Marking every tensor as an output keeps ONNX Runtime from fusing across them, so an INT8 QDQ graph runs
as float32 operators between Quantize/Dequantize pairs ("fake quantisation", the arithmetic the QDQ graph defines)
rather than through the fused integer kernels: its final outputs can differ from the normal run in the last
quantisation steps; the table's last row shows the final output's error as measured here.

A tensor **exceeds** the tolerance when its max abs error is larger than ``tolerance`` x max |reference| (an error
relative to the tensor's range: stable where the element-wise relative error is meaningless near zero), or when it
is not finite in the variant only. Depth = the longest path (in nodes) from a graph input to the node producing the
tensor in the reference graph; "first" = the exceeding tensors of smallest depth (then graph order).

For results computed on an NPU (``bins:`` / ``acl`` variants) there is no graph to run here:
:func:`msit_compare_command` prints the ``msit debug compare`` command that does the same comparison on the device
(ONNX vs OM, tensor by tensor, for one input file).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import ZooinferError

#: the default tolerance (max abs error / max |reference|) by variant precision
DEFAULT_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.1, "om": 1e-2}
#: the CANN path msit compare is usually given
CANN_PATH = "/usr/local/Ascend/ascend-toolkit/latest"


@dataclass
class TensorError:
    """One tensor present in both graphs: where it is produced (reference graph) and how much it differs."""

    tensor: str
    node: str
    op_type: str
    depth: int
    order: int
    shape: tuple
    max_abs: float
    max_rel: float
    rel_to_range: float
    cosine: float | None
    exceeds: bool
    nonfinite: bool = False
    #: the variant's tensor compared with it (``<tensor>_DequantizeLinear_Output`` in a QDQ graph)
    variant_tensor: str | None = None

    def row(self) -> dict:
        return {"node": self.node, "op_type": self.op_type, "tensor": self.tensor, "depth": self.depth,
                "shape": "x".join(map(str, self.shape)), "max_abs": self.max_abs, "max_rel": self.max_rel,
                "rel_to_range": self.rel_to_range, "cosine": self.cosine, "exceeds": self.exceeds}


@dataclass
class Localisation:
    """The per-tensor comparison of one input through the reference and the variant graph (reference order)."""

    reference: str
    variant: str
    tolerance: float
    engine: str
    rows: list[TensorError]
    only_in_reference: list[str] = field(default_factory=list)
    only_in_variant: list[str] = field(default_factory=list)
    sample: str | None = None
    variant_name: str | None = None
    first_n: int = 5
    #: the reference graph's output names (the table ends with their errors)
    outputs: tuple = ()

    @property
    def exceeding(self) -> list[TensorError]:
        return [r for r in self.rows if r.exceeds]

    @property
    def first(self) -> list[TensorError]:
        """The first ``first_n`` exceeding tensors, smallest depth first (then graph order)."""
        return sorted(self.exceeding, key=lambda r: (r.depth, r.order))[:self.first_n]

    @property
    def first_node(self) -> str | None:
        f = self.first
        return f[0].node if f else None

    def table(self, n: int | None = None) -> list[dict]:
        """The first ``n`` (default ``first_n``) exceeding tensors as rows: node, op type, tensor, depth, shape,
        max abs error, max relative error (element-wise, vs |reference|), error relative to the tensor's range,
        cosine similarity; then the graph's final outputs (marked ``output``)."""
        first = sorted(self.exceeding, key=lambda r: (r.depth, r.order))[:n or self.first_n]
        rows = [{"": "first", **r.row()} for r in first]
        finals = [r for r in self.rows if r.tensor in self.outputs]
        rows += [{"": "output", **r.row()} for r in finals if r not in first]
        return rows

    def by_depth(self) -> tuple[np.ndarray, np.ndarray]:
        """(depth, largest rel_to_range error at that depth) over the compared tensors, for the plot."""
        if not self.rows:
            return np.zeros(0), np.zeros(0)
        depths = np.array([r.depth for r in self.rows])
        errs = np.array([r.rel_to_range if np.isfinite(r.rel_to_range) else np.inf for r in self.rows])
        uniq = np.unique(depths)
        return uniq, np.array([errs[depths == d].max() for d in uniq])

    def summary(self) -> str:
        head = f"{self.variant_name or self.variant} vs {self.reference}" + (f" on sample {self.sample!r}"
                                                                                 if self.sample else "")
        if not self.exceeding:
            return (f"{head}: no tensor exceeds the tolerance {self.tolerance:g} ({len(self.rows)} tensors compared, "
                    f"{self.engine})")
        f = self.first[0]
        return (f"{head}: the error first exceeds {self.tolerance:g} at node {f.node!r} ({f.op_type}, depth "
                f"{f.depth}): {f.rel_to_range:.3g} of the tensor's range, cosine {_fmt(f.cosine)}; "
                f"{len(self.exceeding)} of {len(self.rows)} compared tensors exceed ({self.engine})")

    def markdown(self) -> str:
        from .report import markdown_table

        return f"{self.summary()}\n\n{markdown_table(self.table())}"

    def to_dict(self) -> dict:
        return {"reference": self.reference, "variant": self.variant, "variant_name": self.variant_name,
                "sample": self.sample, "tolerance": self.tolerance, "engine": self.engine,
                "first_node": self.first_node, "first": [r.row() for r in self.first],
                "compared": len(self.rows), "exceeding": len(self.exceeding),
                "only_in_reference": len(self.only_in_reference), "only_in_variant": len(self.only_in_variant),
                "by_depth": [[int(d), float(e) if np.isfinite(e) else None] for d, e in zip(*self.by_depth())],
                "summary": self.summary()}


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.6f}"


# ------------------------------------------------------------------------------------------------ graph facts
def graph_index(model: Any) -> dict[str, tuple[str, str, int, int]]:
    """tensor name -> (producing node name, op type, depth, order) for every node output of ``model`` (an ONNX
    ModelProto or path). Depth: longest path in nodes from a graph input (Constant nodes are depth 0 and not
    counted); order: the node's position in the (topologically sorted) graph."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    depth_of: dict[str, int] = {}
    out = {}
    for order, node in enumerate(model.graph.node):
        if node.op_type == "Constant":
            for o in node.output:
                depth_of[o] = 0
            continue
        d = 1 + max((depth_of.get(i, 0) for i in node.input if i), default=0)
        for o in node.output:
            if o:
                depth_of[o] = d
                out[o] = (node.name or f"{node.op_type}_{order}", node.op_type, d, order)
    return out


def consumers(model: Any, tensor: str) -> list[tuple[str, str]]:
    """(node name, op type) of every node that reads ``tensor`` (e.g. an initializer)."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    return [(n.name or f"{n.op_type}_{k}", n.op_type) for k, n in enumerate(model.graph.node) if tensor in n.input]


def perturb_initializer(onnx_path: str | os.PathLike, out_path: str | os.PathLike, name: str | None = None, *,
                        scale: float = 0.5, seed: int = 0) -> dict:
    """Write a damaged copy of ``onnx_path``: the float initializer ``name`` (default: the largest one consumed by a
    node in the middle of the graph) gets Gaussian noise of ``scale`` x its standard deviation added. Returns
    ``{"path", "initializer", "consumers": [(node, op type)], "scale"}`` -- what localisation should find."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(onnx_path))
    inits = {i.name: i for i in m.graph.initializer}
    if name is None:
        nodes = [n for n in m.graph.node if n.op_type != "Constant"]
        middle = nodes[len(nodes) // 3: max(len(nodes) // 3 + 1, 2 * len(nodes) // 3)] or nodes
        cands = [(int(np.prod(inits[i].dims)), i) for n in middle for i in n.input
                 if i in inits and inits[i].data_type == onnx.TensorProto.FLOAT and len(inits[i].dims) >= 2]
        if not cands:
            raise ZooinferError(f"{onnx_path}: no float weight tensor to perturb")
        name = max(cands)[1]
    if name not in inits:
        raise ZooinferError(f"{onnx_path}: no initializer {name!r}")
    a = numpy_helper.to_array(inits[name]).astype(np.float32)
    rng = np.random.default_rng(seed)
    damaged = a + np.float32(scale * (float(a.std()) or 1.0)) * rng.standard_normal(a.shape).astype(np.float32)
    inits[name].CopyFrom(numpy_helper.from_array(damaged, name))
    onnx.save(m, str(out_path))
    return {"path": Path(out_path), "initializer": name, "consumers": consumers(m, name), "scale": scale}


# ------------------------------------------------------------------------------------------------ running
def polygraphy_available() -> bool:
    try:
        import polygraphy  # noqa: F401
        from polygraphy.backend.onnxrt import OnnxrtRunner  # noqa: F401
        from polygraphy.comparator.compare import SimpleCompareFunc  # noqa: F401 - a class from 0.50 on
    except ImportError:
        return False
    return True


def _feed_dict(onnx_path: Path, feed: Any) -> dict[str, np.ndarray]:
    if isinstance(feed, Mapping):
        return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feed.items()}
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    names = [i.name for i in m.graph.input if i.name not in inits]
    if len(names) != 1:
        raise ZooinferError(f"{onnx_path}: {len(names)} graph inputs; pass feed as a dict")
    x = np.asarray(feed, dtype=np.float32)
    return {names[0]: np.ascontiguousarray(x if x.ndim == 4 else x[None])}


def _run_polygraphy(path: Path, feed: dict, names: Sequence[str] | None) -> dict[str, np.ndarray]:
    from polygraphy import constants
    from polygraphy.backend.onnx import BytesFromOnnx, ModifyOutputs, OnnxFromPath
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.CRITICAL
    model = ModifyOutputs(OnnxFromPath(str(path)), outputs=list(names) if names is not None else constants.MARK_ALL)
    with OnnxrtRunner(SessionFromOnnx(BytesFromOnnx(model), providers=["cpu"])) as runner:
        return dict(runner.infer(feed))


def _run_onnxruntime(path: Path, feed: dict, names: Sequence[str] | None) -> dict[str, np.ndarray]:
    """Fallback when Polygraphy is missing: every wanted node output appended to the graph outputs (type left
    empty: ONNX Runtime infers it), one session, one run."""
    import onnx
    import onnxruntime as ort

    m = onnx.load(str(path))
    have = {o.name for o in m.graph.output}
    wanted = list(names) if names is not None else [o for n in m.graph.node if n.op_type != "Constant"
                                                     for o in n.output if o]
    for o in wanted:
        if o not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(o))
            have.add(o)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    outs = [o.name for o in sess.get_outputs()]
    return dict(zip(outs, sess.run(outs, feed)))


def run_all_tensors(onnx_path: str | os.PathLike, feed: Any, *, engine: str = "auto",
                    names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Every intermediate tensor (or only ``names``) of ``onnx_path`` for one input ``feed`` (an NCHW / CHW array or
    a dict of inputs), by tensor name. ``engine``: "polygraphy", "onnxruntime" or "auto" (Polygraphy if installed)."""
    path = Path(onnx_path)
    fd = _feed_dict(path, feed)
    eng = _engine(engine)
    return (_run_polygraphy if eng == "polygraphy" else _run_onnxruntime)(path, fd, names)


def _engine(engine: str) -> str:
    if engine == "auto":
        return "polygraphy" if polygraphy_available() else "onnxruntime"
    if engine not in ("polygraphy", "onnxruntime"):
        raise ZooinferError(f"unknown localisation engine {engine!r}; choose auto, polygraphy or onnxruntime")
    if engine == "polygraphy" and not polygraphy_available():
        raise ZooinferError('engine "polygraphy" needs Polygraphy: pip install -e ".[variants]" (or engine="auto")')
    return engine


# ------------------------------------------------------------------------------------------------ comparing
def _errors(ref: np.ndarray, var: np.ndarray) -> tuple[float, float, float | None, bool]:
    """(max abs, max abs / max |ref|, cosine, non-finite in the variant only) of two same-shape float32 tensors.
    One pass per statistic and no masking when both are finite (the usual case: hundreds of MB per graph)."""
    r = np.ascontiguousarray(ref, dtype=np.float32).ravel()
    v = np.ascontiguousarray(var, dtype=np.float32).ravel()
    if not r.size:
        return 0.0, 0.0, None, False
    fin_r, fin_v = bool(np.isfinite(r).all()), bool(np.isfinite(v).all())
    bad = False
    if not (fin_r and fin_v):
        mr, mv = np.isfinite(r), np.isfinite(v)
        bad = bool((mr & ~mv).any())
        both = mr & mv
        r, v = r[both], v[both]
        if not r.size:
            return (float("inf"), float("inf"), None, True) if bad else (0.0, 0.0, None, False)
    max_abs = float(np.abs(r - v).max())
    scale = float(np.abs(r).max())
    rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    r64, v64 = r.astype(np.float64), v.astype(np.float64)
    nr, nv = float(np.sqrt(r64 @ r64)), float(np.sqrt(v64 @ v64))
    cos = float(r64 @ v64 / (nr * nv)) if nr > 0 and nv > 0 else (1.0 if nr == nv else 0.0)
    return max_abs, (float("inf") if bad else rel), cos, bad


def _compare_polygraphy(ref: dict, var: dict, names: list[str], tolerance: float) -> dict[str, tuple[bool, float]]:
    """Polygraphy's verdict per tensor (max abs error <= tolerance x max |reference|) and its max relative error."""
    from polygraphy.comparator.compare import SimpleCompareFunc
    from polygraphy.comparator.struct import IterationResult
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.CRITICAL
    atol = {}
    for n in names:
        a = np.abs(ref[n])
        fin = a[np.isfinite(a)]
        atol[n] = tolerance * float(fin.max()) if fin.size else 0.0
    func = SimpleCompareFunc(atol=atol, rtol=0.0, check_error_stat="max", infinities_compare_equal=True)
    res = func(IterationResult({n: var[n] for n in names}, runner_name="variant"),
               IterationResult({n: ref[n] for n in names}, runner_name="reference"))
    return {n: (bool(r), float(r.max_reldiff)) for n, r in res.items()}


def _variant_tensor(t: str, var_index: Mapping[str, Any]) -> str | None:
    """The variant tensor holding what the reference's ``t`` holds: in a QDQ graph the dequantised copy
    ``<t>_DequantizeLinear_Output`` (what the consumers read; ONNX Runtime's quantizer also drops a Relu after a
    Conv and gives the Conv output the Relu's name, so ``t`` itself can be the un-clipped value), else ``t``."""
    dq = f"{t}_DequantizeLinear_Output"
    if dq in var_index:
        return dq
    return t if t in var_index else None


def localise(reference_onnx: str | os.PathLike, variant_onnx: str | os.PathLike, feed: Any, *,
             tolerance: float = 1e-3, first: int = 5, engine: str = "auto", sample: str | None = None,
             variant_name: str | None = None, max_tensors_per_pass: int | None = None) -> Localisation:
    """Compare every intermediate tensor of ``variant_onnx`` with ``reference_onnx`` for one input ``feed`` (NCHW
    or CHW float32 array, or a dict of inputs) and return the :class:`Localisation` (all compared tensors in
    reference order; ``first`` = the ``first`` exceeding ones by depth).

    ``tolerance``: max abs error / max |reference| allowed per tensor (see the module docstring; per-precision
    defaults in :data:`DEFAULT_TOLERANCE`). ``max_tensors_per_pass``: mark at most that many tensors per run (both
    graphs then run several times) to bound memory on big graphs; None marks all at once (DPN131 at 224x224: 540
    float tensors, 540 MB per graph).

    Every tensor is screened in numpy (max abs error, range-relative error, cosine: under a second for DPN131);
    with the Polygraphy engine, its comparator (``SimpleCompareFunc``, max-error check with the same per-tensor
    absolute tolerance) then gives the verdict and relative error of the rows the table reports (the first
    exceeding tensors and the graph outputs): run on every tensor its statistics (medians, quantiles in float64)
    take over a minute for DPN131."""
    ref_path, var_path = Path(reference_onnx), Path(variant_onnx)
    eng = _engine(engine)
    index = graph_index(ref_path)
    var_index = graph_index(var_path)
    pairs = [(t, _variant_tensor(t, var_index)) for t in index]
    common = [(t, vt) for t, vt in pairs if vt is not None]
    mapped = {vt for _, vt in common}
    only_ref = [t for t, vt in pairs if vt is None]
    only_var = [t for t in var_index if t not in mapped and t not in index]
    import onnx

    outputs = tuple(o.name for o in onnx.load(str(ref_path), load_external_data=False).graph.output)
    step = max_tensors_per_pass or len(common) or 1
    chunks = [common[i:i + step] for i in range(0, len(common), step)]
    fd = _feed_dict(ref_path, feed)
    rows: list[TensorError] = []
    kept: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for chunk in chunks:
        r_names = None if max_tensors_per_pass is None else [t for t, _ in chunk]
        v_names = None if max_tensors_per_pass is None else [vt for _, vt in chunk]
        r_out = run_all_tensors(ref_path, fd, engine=eng, names=r_names)
        v_out = run_all_tensors(var_path, fd, engine=eng, names=v_names)
        for t, vt in chunk:
            if t not in r_out or vt not in v_out:
                continue
            a, b = np.asarray(r_out[t]), np.asarray(v_out[vt])
            if not (np.issubdtype(a.dtype, np.floating) and np.issubdtype(b.dtype, np.floating)) or a.shape != b.shape:
                continue
            a, b = a.astype(np.float32, copy=False), b.astype(np.float32, copy=False)
            max_abs, rel_range, cos, bad = _errors(a, b)
            with np.errstate(divide="ignore", invalid="ignore"):
                rd = np.abs(b - a) / np.maximum(np.abs(a), np.float32(2e-16))
            max_rel = float(np.nanmax(rd)) if rd.size else 0.0
            node, op, depth, order = index[t]
            row = TensorError(t, node, op, depth, order, tuple(a.shape), max_abs, max_rel, rel_range, cos,
                              bool(bad or rel_range > tolerance), bad, vt)
            rows.append(row)
            if t in outputs or row.exceeds:
                kept[t] = (a, b)  # candidates for the comparator's check (only the reported ones are kept below)
        reported = {r.tensor for r in sorted((r for r in rows if r.exceeds), key=lambda r: (r.depth, r.order))[:first]}
        kept = {t: ab for t, ab in kept.items() if t in reported or t in outputs}
        del r_out, v_out
    checked = "numpy screen"
    if eng == "polygraphy" and kept:
        verdict = _compare_polygraphy({t: ab[0] for t, ab in kept.items()}, {t: ab[1] for t, ab in kept.items()},
                                      list(kept), tolerance)
        for r in rows:
            if r.tensor in verdict:
                passed, r.max_rel = verdict[r.tensor]
                r.exceeds = (not passed) or r.nonfinite
        checked = "Polygraphy comparator on the reported rows"
    rows.sort(key=lambda r: r.order)
    return Localisation(str(ref_path), str(var_path), float(tolerance), f"{_engine_label(eng)}; {checked}", rows,
                        only_ref, only_var, sample, variant_name, first, outputs)


def _engine_label(eng: str) -> str:
    if eng == "polygraphy":
        import polygraphy

        return f"Polygraphy {polygraphy.__version__} (ONNX Runtime runner, all tensors marked)"
    import onnxruntime

    return f"ONNX Runtime {onnxruntime.__version__} (all node outputs added as graph outputs)"


# ------------------------------------------------------------------------------------------------ from a comparison
def msit_compare_command(onnx_path: str | os.PathLike, om_path: str | os.PathLike, input_bin: str | Sequence[str], *,
                         input_shape: str | None = None, out_dir: str = "./msit_compare",
                         cann_path: str = CANN_PATH) -> str:
    """The ``msit debug compare`` command that compares the ONNX graph (golden, on the CPU) with the OM on the
    device, tensor by tensor, for one input: ``-gm`` ONNX, ``-om`` OM, ``-i`` input .bin file(s) (comma-separated
    for several inputs), ``-c`` the CANN toolkit, ``-o`` output folder, ``-is`` the input shape for dynamic graphs;
    ``--locat True`` asks it to localise the first diverging node."""
    inputs = input_bin if isinstance(input_bin, str) else ",".join(map(str, input_bin))
    parts = ["msit debug compare", f"-gm {onnx_path}", f"-om {om_path}", f"-i {inputs}", f"-c {cann_path}",
             f"-o {out_dir}"]
    if input_shape:
        parts.append(f'-is "{input_shape}"')
    parts.append("--locat True")
    return " ".join(parts)


@dataclass
class DeviceLocalisation:
    """What to run on the NPU instead (``bins:`` / ``acl`` variants): the msit command line for the worst sample."""

    variant: str
    sample: str | None
    command: str
    note: str

    def summary(self) -> str:
        return f"{self.variant}: {self.note}\n\n    {self.command}"

    def markdown(self) -> str:
        return f"{self.variant} on sample {self.sample!r}: {self.note}\n\n```\n{self.command}\n```"

    def to_dict(self) -> dict:
        return asdict(self)


def localise_worst(comparison: Any, variant: str, recipe: Any, *, sample: str | None = None,
                   tolerance: float | None = None, view: int = 0, first: int = 5, engine: str = "auto",
                   om_path: str | None = None, bins_dir: str = "./prep_bin",
                   max_tensors_per_pass: int | None = None) -> Localisation | DeviceLocalisation:
    """Localise ``variant`` of a :class:`zooinfer.compare.Comparison` on its worst-disagreeing sample (or
    ``sample``), input view ``view``, against the comparison's reference graph. ``tolerance`` default: by the
    variant's precision (:data:`DEFAULT_TOLERANCE`). For NPU variants (no ONNX graph here) returns the
    ``msit debug compare`` command for that sample's ``.bin`` input (as ``zooinfer bins`` writes it under
    ``bins_dir``) instead."""
    res = comparison.result(variant)
    ref = comparison.result(comparison.reference)
    key = sample or comparison.worst_sample(variant)
    if key is None:
        raise ZooinferError(f"{variant}: no per-sample rows to pick the worst sample from")
    tol = tolerance if tolerance is not None else DEFAULT_TOLERANCE.get(res.precision, 1e-3)
    views = 1
    path = comparison.paths.get(key)
    if path is not None:
        views = len(recipe.preprocess(path)[0])
    if res.onnx_path is None:
        golden = ref.onnx_path or f"{recipe.name}.onnx"
        om = om_path or res.info.get("om") or f"{recipe.name}_bs1.om"
        sub = f"view{view}/" if views > 1 else ""
        c, h, w = recipe.input_shape
        cmd = msit_compare_command(golden, om, f"{bins_dir}/{sub}{key}.bin", input_shape=f"{recipe.input_name}:1,"
                                   f"{c},{h},{w}", out_dir=f"./msit_compare/{key}")
        return DeviceLocalisation(variant, key, cmd, "no ONNX graph runs this variant here; this command compares the "
                                  "ONNX graph with the OM tensor by tensor on the device for that sample")
    if ref.onnx_path is None:
        raise ZooinferError(f"the reference {comparison.reference!r} has no ONNX graph to compare with")
    if path is None:
        raise ZooinferError(f"sample {key!r} is not in the comparison")
    x = recipe.preprocess(path)[0][view]
    return localise(ref.onnx_path, res.onnx_path, x[None], tolerance=tol, first=first, engine=engine, sample=key,
                    variant_name=variant, max_tensors_per_pass=max_tensors_per_pass)
