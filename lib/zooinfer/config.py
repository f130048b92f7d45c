"""One run is one frozen configuration: :class:`RunConfig`, built once from the notebook's parameters.

Every notebook parameter is a field here (plus the model's own options, e.g. PyramidBox's ``canvas``, which select a
variant of its recipe). The notebook builds it with :meth:`RunConfig.from_parameters`; the evaluation, the pipeline,
the scale-out tasks, the benchmark and the report read it and never change it (``dataclasses.replace`` gives a
changed copy).
"""
from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass, fields
from typing import Any, Mapping

from .errors import ZooinferError

PRECISIONS = ("fp32", "fp16")
#: parameters that name a file, folder or address: "", "none" and "None" (what a command line gives) mean None
OPTIONAL_TEXT = ("weights", "data_root", "ray_address", "onnx_path", "om_path", "results_dir", "output_root",
                 "run_dir")
#: the old names of renamed parameters -> their new names (still accepted, with a warning)
RENAMED = {"workers": "processes"}


def _none_if_empty(v: Any) -> Any:
    return None if v in ("", "none", "None") else v


def _integer(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int of at least ``minimum`` (ints, integral floats, digit strings), else a ZooinferError."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        number = int(value)
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        number = int(value)
    else:
        number = None
    if number is None or number < minimum:
        raise ZooinferError(f"parameter {name!r} must be an integer >= {minimum}, got {value!r}")
    return number


def _flag(name: str, value: Any) -> bool:
    """``value`` as a bool (True/False, or 'true'/'false' from a command line), else a ZooinferError."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ZooinferError(f"parameter {name!r} must be true or false, got {value!r}")


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides what one run does. Units: seconds, counts; ``bs`` counts network inputs (views)."""

    model: str
    #: the published checkpoint file as downloaded; None: deterministic synthetic weights
    weights: str | None = None
    #: dataset root in its official layout; None: the embedded sample
    data_root: str | None = None
    #: one of zooinfer.backends.BACKENDS
    backend: str = "onnxruntime"
    bs: int = 1
    #: evaluate only the first N samples (None: all)
    limit: int | None = None
    #: export the ONNX graph with a fixed batch of ``bs`` (as OM files are)
    static_batch: bool = False
    #: "fp32", or "fp16" where the backend can run it (TensorRT)
    precision: str = "fp32"
    #: pure-inference sweep: batch sizes and seconds per batch size
    batch_sizes: tuple[int, ...] = (1, 8)
    bench_min_time: float = 1.0
    #: add the ONNX Runtime per-operator profile to the report
    profile_ops: bool = False
    #: inference threads (None: the backend's default, physical cores)
    threads: int | None = None
    #: preprocessing threads per process (None: a quarter of the CPUs)
    prep_threads: int | None = None
    #: processes evaluating shards of the dataset (more than 1 uses Ray)
    processes: int = 1
    #: Ray cluster to join ("auto" or host:port); None: a local Ray instance when processes > 1
    ray_address: str | None = None
    #: GPU / NPU index
    device_id: int = 0
    #: artefacts made elsewhere: an ONNX file to use instead of exporting, an .om file (acl), a results folder (bins)
    onnx_path: str | None = None
    om_path: str | None = None
    results_dir: str | None = None
    #: parent of outputs/<model>/<run-id>/ (None: outputs/ of this checkout)
    output_root: str | None = None
    #: the run folder a caller owns (``zooinfer run`` passes its partial folder); None: the run makes its own
    run_dir: str | None = None
    #: show a progress bar while evaluating (``zooinfer run`` turns it off: papermill shows its own)
    progress: bool = True
    #: predictions kept for the plots (the first N samples)
    keep: int = 4
    #: model options selecting a variant of its recipe, as sorted (name, value) pairs (e.g. (("canvas", 256),))
    model_options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        from .backends import registry

        backend = registry.get(self.backend)  # an unknown name lists the valid ones
        if isinstance(self.bs, bool) or not isinstance(self.bs, int) or self.bs < 1:
            raise ZooinferError(f"parameter 'bs' must be an integer >= 1, got {self.bs!r}")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise ZooinferError(f"parameter 'limit' must be None or an integer >= 1, got {self.limit!r}")
        if not isinstance(self.processes, int) or self.processes < 1:
            raise ZooinferError(f"parameter 'processes' must be an integer >= 1, got {self.processes!r}")
        if self.precision not in PRECISIONS:
            raise ZooinferError(f"parameter 'precision' must be one of {', '.join(PRECISIONS)}, "
                                f"got {self.precision!r}")
        if not isinstance(self.batch_sizes, tuple) or not self.batch_sizes or \
                any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in self.batch_sizes):
            raise ZooinferError(f"parameter 'batch_sizes' must be a non-empty tuple of integers >= 1, "
                                f"got {self.batch_sizes!r}")
        if backend.reads_stored_results and self.distributed:
            raise ZooinferError(f"backend={self.backend!r} reads results an external tool already computed: there "
                                "is nothing to spread over processes; run it with processes=1 and no ray_address")

    # ------------------------------------------------------------------------------------------------ building
    @classmethod
    def from_parameters(cls, params: Mapping[str, Any]) -> "RunConfig":
        """The configuration of a notebook's parameters (``model`` required).

        Keys that are not fields are the model's options (its ``NotebookSpec.extra``, e.g. PyramidBox's ``canvas``);
        ``workers`` is the old name of ``processes`` (accepted with a FutureWarning); anything else is refused with
        the valid names. Command-line spellings are normalised: "" / "none" -> None for paths and ``limit``, integral
        strings -> ints, lists -> tuples.
        """
        from . import recipes

        if "model" not in params:
            raise ZooinferError("parameters need 'model' (one of " + ", ".join(recipes.NAMES) + ")")
        model = params["model"]
        recipe = recipes.get(model)  # an unknown model lists the known ones
        names = {f.name for f in fields(cls)} - {"model_options"}
        option_names = [n for n, _, _ in (recipe.notebook.extra if recipe.notebook else ())]
        values: dict[str, Any] = {}
        options: dict[str, Any] = {}
        for key, value in params.items():
            if key in RENAMED:
                new = RENAMED[key]
                warnings.warn(f"parameter {key!r} is now called {new!r}; {key!r} will stop working",
                              FutureWarning, stacklevel=2)
                if new in params and params[new] != value:
                    raise ZooinferError(f"parameters {key!r} (the old name) and {new!r} disagree: "
                                        f"{value!r} vs {params[new]!r}; give only {new!r}")
                values.setdefault(new, value)
            elif key in names:
                values[key] = value
            elif key in option_names:
                options[key] = value
            else:
                raise ZooinferError(f"unknown parameter {key!r} for {model}; valid: "
                                    f"{', '.join(sorted(names | set(option_names)))}")
        return cls(**_normalise(values), model_options=tuple(sorted(options.items())))

    # ------------------------------------------------------------------------------------------------ reading
    @property
    def fp16(self) -> bool:
        """Whether the backend should run in half precision (``precision='fp16'``)."""
        return self.precision == "fp16"

    @property
    def distributed(self) -> bool:
        """Whether the evaluation runs as Ray tasks (``processes > 1`` or a ``ray_address``)."""
        return self.processes > 1 or self.ray_address is not None

    @property
    def synthetic(self) -> bool:
        """No checkpoint given: the network has deterministic synthetic weights."""
        return self.weights is None

    @property
    def embedded(self) -> bool:
        """No dataset given: the run reads the tiny embedded sample."""
        return self.data_root is None

    def recipe(self):
        """The model's recipe, or its variant for ``model_options``."""
        from . import recipes

        return recipes.get(self.model, **dict(self.model_options))

    def parameters(self) -> dict[str, Any]:
        """The parameters as the notebook gave them, normalised (for metrics.json)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model_options"}
        out.update(dict(self.model_options))
        return out


def _normalise(values: dict[str, Any]) -> dict[str, Any]:
    """Command-line and YAML spellings of parameter values -> the field types (see ``from_parameters``)."""
    out = dict(values)
    for key in (*OPTIONAL_TEXT, "limit", "threads", "prep_threads"):
        if key in out:
            out[key] = _none_if_empty(out[key])
    for key in OPTIONAL_TEXT:
        if out.get(key) is not None:
            out[key] = str(out[key])
    for key, minimum in (("bs", 1), ("limit", 1), ("threads", 1), ("prep_threads", 1), ("device_id", 0),
                         ("keep", 0)):
        if out.get(key) is not None:
            out[key] = _integer(key, out[key], minimum)
    if "processes" in out:  # None (a YAML "null") means the default: one process
        out["processes"] = 1 if _none_if_empty(out["processes"]) is None else _integer("processes",
                                                                                       out["processes"], 1)
    if "batch_sizes" in out:
        sizes = out["batch_sizes"]
        sizes = [sizes] if isinstance(sizes, (int, str)) else sizes
        try:
            out["batch_sizes"] = tuple(_integer("batch_sizes", b, 1) for b in sizes)
        except TypeError:
            raise ZooinferError(f"parameter 'batch_sizes' must be a list of integers >= 1, got {sizes!r}") from None
    if "bench_min_time" in out:
        try:
            out["bench_min_time"] = float(out["bench_min_time"])
        except (TypeError, ValueError):
            raise ZooinferError(f"parameter 'bench_min_time' must be a number of seconds, "
                                f"got {out['bench_min_time']!r}") from None
    for key in ("static_batch", "profile_ops", "progress"):
        if key in out:
            out[key] = _flag(key, out[key])
    return out
