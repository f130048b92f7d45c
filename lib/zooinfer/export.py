"""ONNX export as the guides do it (names, opset, dynamic batch), checked, compared with PyTorch, and cached.

Exported files are cached under ``<cache>/onnx/`` keyed by the checkpoint's md5 (or "synthetic"), the export
settings and the network's source, so a notebook re-run does not export again; files are written to a temporary name
and renamed when complete. ``<cache>`` is ``$ZOOINFER_CACHE`` (default ``~/.cache/zooinfer``); a cache that cannot
be written is a clear error naming the folder and that variable.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import ZooinferError
from .parameters import onnx_batch  # noqa: F401 - its home is below config; the name stays here too
from .recipes.base import Recipe

#: ATC's soc names for the Ascend chips the guides use
SOC_VERSIONS = ("Ascend310", "Ascend310P3", "Ascend910B")


def cache_dir() -> Path:
    from .datasets.samples import cache_root

    return cache_root() / "onnx"


def _settings_key(recipe: Recipe, model: torch.nn.Module, weights_md5: str | None, batch: int | None) -> str:
    src = inspect.getsource(sys.modules[type(model).__module__])
    blob = json.dumps({
        "model": recipe.name, "weights": weights_md5 or "synthetic", "batch": batch, "opset": recipe.opset,
        "inputs": recipe.input_names, "outputs": recipe.output_names, "shape": recipe.input_shape,
        "axes": recipe.dynamic_axes, "torch": torch.__version__,
        "src": hashlib.md5(src.encode()).hexdigest(),
    }, sort_keys=True)
    return hashlib.md5(blob.encode()).hexdigest()[:12]


def _check_writable(tmp: Path, path: Path, cached: bool) -> None:
    """Create ``path``'s folder and the temporary file ``tmp`` the export writes (removed again), or raise a
    ZooinferError naming the folder (and, for the cache, the variable that moves it) with the system's reason."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb"):
            pass
        tmp.unlink()
    except OSError as e:
        reason = e.strerror or str(e)
        if cached:
            raise ZooinferError(f"cannot write the exported ONNX file into the cache folder {path.parent}: {reason}; "
                                "set ZOOINFER_CACHE to a writable folder (exported files are cached in "
                                "$ZOOINFER_CACHE/onnx, default ~/.cache/zooinfer/onnx) or pass onnx_path= (an ONNX "
                                "file exported elsewhere)") from None
        raise ZooinferError(f"cannot write the exported ONNX file {path}: {reason}") from None


def dynamic_axes(recipe: Recipe) -> dict[str, dict[int, str]]:
    """The ``dynamic_axes`` torch.onnx.export gets: the recipe's own, or the batch axis of every input and output."""
    if recipe.dynamic_axes is not None:
        return recipe.dynamic_axes
    return {n: {0: recipe.batch_dim_param} for n in [*recipe.input_names, *recipe.output_names]}


def export_onnx(recipe: Recipe, model: torch.nn.Module, *, weights_md5: str | None = None, batch: int | None = None,
                out_path: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Export ``model`` to ONNX with the recipe's names and opset; ``batch=None`` gives a dynamic batch axis.

    Returns the path of the checked ONNX file (cached unless ``force``).
    """
    import onnx

    key = _settings_key(recipe, model, weights_md5, batch)
    tag = f"bs{batch}" if batch else "dynamic"
    path = Path(out_path) if out_path else cache_dir() / f"{recipe.name}-{tag}-{key}.onnx"
    if path.is_file() and not force:
        return path
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _check_writable(tmp, path, cached=out_path is None)
    dummy = torch.from_numpy(np.random.default_rng(0).standard_normal((batch or 1, *recipe.input_shape),
                                                                     dtype=np.float32))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model.eval(), (dummy,), str(tmp), input_names=list(recipe.input_names),
                              output_names=list(recipe.output_names), opset_version=recipe.opset,
                              dynamic_axes=None if batch else dynamic_axes(recipe), do_constant_folding=True,
                              dynamo=False)
        onnx.checker.check_model(str(tmp))
        os.replace(tmp, path)
    except OSError as e:  # e.g. the disk filled up while writing
        raise ZooinferError(f"cannot write the exported ONNX file {path}: {e.strerror or e}"
                            + ("; set ZOOINFER_CACHE to a folder with room" if out_path is None else "")) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def describe_onnx(path: str | os.PathLike) -> dict:
    """Inputs/outputs (name, shape with dim_params), opset and operator counts of an ONNX file."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)

    def dims(v):
        return [d.dim_param if d.dim_param else d.dim_value for d in v.type.tensor_type.shape.dim]

    ops: dict[str, int] = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return {
        "inputs": {i.name: dims(i) for i in m.graph.input},
        "outputs": {o.name: dims(o) for o in m.graph.output},
        "opset": max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")),
        "ops": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
        "size_mb": round(os.path.getsize(path) / 2**20, 1),
    }


#: ONNX Runtime vs PyTorch (fp32, CPU) parity of an exported file: an output fails when its max abs error exceeds
#: this fraction of its largest |value| (``peak_rel``). Float32 reorderings stay near 1e-6; an ONNX file of other
#: weights or another network is off by the order of the values themselves.
PARITY_TOLERANCE = 1e-3


def _errors(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    scale = np.abs(b.astype(np.float64))
    peak = float(scale.max(initial=0.0))
    floor = max(1e-3 * peak, 1e-12)
    max_abs = float(diff.max(initial=0.0))
    return max_abs, float((diff / np.maximum(scale, floor)).max(initial=0.0)), max_abs / max(peak, 1e-12)


def parity(reference: list[np.ndarray], candidate: list[np.ndarray], names: list[str]) -> list[dict]:
    """Per output: max abs error, max relative error (relative to |reference|, floored at 1e-3 of its max), the
    max abs error relative to the largest |reference| (``peak_rel``, what :data:`PARITY_TOLERANCE` bounds) and,
    for (N, C) outputs, the fraction of rows whose argmax agrees."""
    rows = []
    for name, r, c in zip(names, reference, candidate):
        if r.shape != c.shape:
            raise ZooinferError(f"parity: output {name} has shape {c.shape}, reference {r.shape}")
        max_abs, max_rel, peak_rel = _errors(c, r)
        row = {"output": name, "shape": list(r.shape), "max_abs": max_abs, "max_rel": max_rel, "peak_rel": peak_rel}
        if r.ndim == 2:
            row["argmax_agree"] = float(np.mean(r.argmax(1) == c.argmax(1)))
        rows.append(row)
    return rows


def parity_failure(rows: list[dict], onnx_path: str | os.PathLike,
                   tolerance: float = PARITY_TOLERANCE) -> str | None:
    """'parity failed: ...' naming the outputs whose ``peak_rel`` exceeds ``tolerance`` (rows of :func:`parity`),
    or None when every output agrees."""
    bad = [r for r in rows if r.get("peak_rel") is not None and not r["peak_rel"] <= tolerance]
    if not bad:
        return None
    worst = ", ".join(f"output {r['output']} differs by up to {r['max_abs']:.3g} ({100 * r['peak_rel']:.3g}% of its "
                      f"largest value)" for r in bad)
    return (f"parity failed: {worst}, beyond the tolerance of {100 * tolerance:g}%, between PyTorch and ONNX "
            f"Runtime on the same inputs: the ONNX file {onnx_path} does not compute this model's outputs")


def fit_problem(recipe: Recipe, path: str | os.PathLike) -> str | None:
    """Why the ONNX file at ``path`` cannot be ``recipe``'s model (its input and output names in order, its input's
    channel and size where fixed), or None when it fits."""
    import onnx

    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file: say so
        return f"no readable ONNX graph ({type(e).__name__}: {e})"
    initializers = {i.name for i in m.graph.initializer}
    inputs = [i for i in m.graph.input if i.name not in initializers]
    in_names, out_names = [i.name for i in inputs], [o.name for o in m.graph.output]
    if in_names != list(recipe.input_names) or out_names != list(recipe.output_names):
        return (f"inputs {in_names} and outputs {out_names}; {recipe.name} expects inputs {list(recipe.input_names)} "
                f"and outputs {list(recipe.output_names)}")
    dims = [d.dim_param or (d.dim_value if d.dim_value > 0 else "?") for d in inputs[0].type.tensor_type.shape.dim]
    fixed = [(got, want) for got, want in zip(dims[1:], recipe.input_shape) if isinstance(got, int)]
    if len(dims) != 1 + len(recipe.input_shape) or any(got != want for got, want in fixed):
        return (f"input {in_names[0]!r} of shape {dims}; {recipe.name} expects (N, "
                f"{', '.join(map(str, recipe.input_shape))})")
    return None


def batch_invariance(run, batch: np.ndarray) -> float:
    """Max abs difference between running ``batch`` at once and each sample alone (same session)."""
    from .backends.base import sample_outputs

    together = run(batch)
    n = batch.shape[0]
    worst = 0.0
    for i in range(n):
        alone = sample_outputs(run(batch[i:i + 1]), 1, 0)
        for t, a in zip(sample_outputs(together, n, i), alone):
            worst = max(worst, float(np.abs(t.astype(np.float64) - a).max(initial=0.0)))
    return worst


def atc_command(recipe: Recipe, onnx_path: str | os.PathLike, bs: int, soc_version: str = "Ascend310P3",
                output: str | None = None, precision_mode: str | None = None) -> str:
    """The ATC command line converting the ONNX file to a static-batch OM, as the guides give it."""
    c, h, w = recipe.input_shape
    parts = ["atc", "--framework=5", f"--model={onnx_path}", f"--output={output or f'{recipe.name}_bs{bs}'}",
             "--input_format=NCHW", f'--input_shape="{recipe.input_name}:{bs},{c},{h},{w}"', "--log=error",
             f"--soc_version={soc_version}"]
    if recipe.atc.get("out_nodes"):
        parts.append(f'--out_nodes="{recipe.atc["out_nodes"]}"')
    if precision_mode or recipe.atc.get("precision_mode"):
        parts.append(f"--precision_mode={precision_mode or recipe.atc['precision_mode']}")
    for k, v in recipe.atc.items():
        if k not in ("out_nodes", "precision_mode", "soc_version"):
            parts.append(f"--{k}={v}")
    return " ".join(parts)


def ais_bench_command(om_path: str, input_dir: str, output_dir: str, bs: int, outfmt: str = "BIN") -> str:
    """The ais_bench inference command over a folder of ``.bin`` inputs (results in ``<output_dir>/subdir``)."""
    return (f"python3 -m ais_bench --model {om_path} --input {input_dir} --output {output_dir} "
            f"--output_dirname subdir --outfmt {outfmt} --batchsize {bs}")


def ascend_commands(recipe: Recipe, onnx_path: str | os.PathLike | None, bs: int,
                    soc_version: str | None = None) -> dict[str, str]:
    """The command lines of the Ascend path for ``recipe`` at batch size ``bs``: write the ``.bin`` inputs, convert
    the ONNX file (``onnx_path``; None: ``<model>.onnx``) with atc, run ais_bench, score its results (``bins``)."""
    soc = soc_version or recipe.atc.get("soc_version", "Ascend310P3")
    onnx_file = onnx_path or f"{recipe.name}.onnx"
    om = f"{recipe.name}_bs{bs}"
    return {
        "write_inputs": f"zooinfer bins {recipe.name} --data-root <data_root> --out ./prep_bin",
        "atc": atc_command(recipe, onnx_file, bs, soc_version=soc, output=om),
        "ais_bench": ais_bench_command(f"{om}.om", "./prep_bin", "./result", bs),
        "evaluate": f"papermill notebooks/{recipe.name}.ipynb out.ipynb -p backend bins "
                    f"-p results_dir ./result/subdir -p data_root <data_root>",
    }
