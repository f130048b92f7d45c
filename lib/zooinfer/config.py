"""One run is one frozen configuration: :class:`RunConfig`, built once from the notebook's parameters.

Every notebook parameter is a field here (plus the model's own options, e.g. PyramidBox's ``canvas``, which select a
variant of its recipe). The notebook builds it with :meth:`RunConfig.from_parameters`; the evaluation, the pipeline,
the scale-out tasks, the benchmark and the report read it and never change it (``dataclasses.replace`` gives a
changed copy).
"""
from __future__ import annotations

import difflib
import math
import numbers
import os
import tempfile
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from .errors import BackendError, CheckpointError, DatasetError, ZooinferError

PRECISIONS = ("fp32", "fp16")
#: parameters that name a file, folder or address: "", "none" and "None" (what a command line gives) mean None
OPTIONAL_TEXT = ("weights", "data_root", "ray_address", "onnx_path", "om_path", "results_dir", "output_root",
                 "run_dir", "resume")
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


#: the spellings of a flag a command line or YAML file may give (papermill hands ``-p x false`` over as a string)
FLAG_WORDS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False}


def _flag(name: str, value: Any) -> bool:
    """``value`` as a bool (True/False, or 'true'/'false'/'yes'/'no' from a command line), else a ZooinferError."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in FLAG_WORDS:
        return FLAG_WORDS[value.strip().lower()]
    raise ZooinferError(f"parameter {name!r} must be true or false, got {value!r}")


def batch_sizes_value(value: Any) -> tuple[int, ...]:
    """``batch_sizes`` as a tuple of ints >= 1: a list/tuple, one int, or their text form as papermill hands it over
    (``-p batch_sizes "[1, 8]"`` arrives as the string "[1, 8]"; "1,8" and "8" are accepted too)."""
    expected = ("parameter 'batch_sizes' must be a list of integers >= 1, e.g. [1, 8] (on a command line: "
                f"-p batch_sizes \"[1, 8]\"), got {value!r}")
    sizes = value
    if isinstance(sizes, str):
        import yaml

        text = sizes.strip()
        try:
            sizes = yaml.safe_load(text if text.startswith("[") or "," not in text else f"[{text}]")
        except yaml.YAMLError:
            raise ZooinferError(expected) from None
    if isinstance(sizes, (numbers.Integral, float)) and not isinstance(sizes, bool):
        sizes = [sizes]
    if not isinstance(sizes, (list, tuple)) or not sizes:
        raise ZooinferError(expected)
    try:
        return tuple(_integer("batch_sizes", b, 1) for b in sizes)
    except ZooinferError:
        raise ZooinferError(expected) from None


def names_value(name: str, value: Any) -> tuple[str, ...]:
    """A list of names (variants, scenarios) as a tuple of strings: a list/tuple, one name, or their text form as
    papermill hands it over ("[onnxruntime-int8, torch]", "onnxruntime-int8,torch"); None / "" -> ()."""
    value = _none_if_empty(value)
    if value is None:
        return ()
    if isinstance(value, str):
        import yaml

        text = value.strip()
        try:
            value = yaml.safe_load(text) if text.startswith("[") else [p.strip() for p in text.split(",") if p.strip()]
        except yaml.YAMLError:
            raise ZooinferError(f"parameter {name!r} must be a list of names, e.g. [a, b] (on a command line: "
                                f"-p {name} \"[a, b]\"), got {value!r}") from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ZooinferError(f"parameter {name!r} must be a list of names, got {value!r}")
    return tuple(value)


def seconds_value(name: str, value: Any) -> float:
    """``value`` as a finite number of seconds >= 0 (numbers or their text form), else a ZooinferError."""
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise ZooinferError(f"parameter {name!r} must be a number of seconds >= 0, got {value!r}")
    return number


def close_matches(name: str, valid: Any) -> str:
    """' (did you mean 'a' or 'b'?)' for the valid names close to ``name``, else ''."""
    near = difflib.get_close_matches(str(name), sorted(valid), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(n) for n in near)}?)" if near else ""


def check_output_folder(path: str | os.PathLike, what: str) -> Path:
    """Raise a ZooinferError unless ``path`` is a folder this process can create files in, or can be created (its
    nearest existing parent is a writable folder). ``what`` names the parameter or option (e.g. "output_root").
    Writes (and removes) one probe file: permission bits alone do not say it for root or read-only mounts."""
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise ZooinferError(f"{what}: {target} is a file, expected a folder (or a path where one can be created)")
    existing = target
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise ZooinferError(f"{what}: cannot create {target}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".zooinfer-write-check-"):
            pass
    except OSError as e:
        raise ZooinferError(f"{what}: cannot write into {existing}" + ("" if existing == target else
                            f" (to create {target})") + f": {e.strerror or e}; choose a writable folder") from None
    return target


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
    #: evaluate a random subset of N samples drawn with ``seed`` (None: all); its figures carry 95% intervals
    subset: int | None = None
    seed: int = 0
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
    #: preprocessing threads per process (None: a quarter of the CPUs for a CPU backend, all but one for a GPU/NPU)
    prep_threads: int | None = None
    #: preprocess in this many worker processes instead of threads (None: threads; for where threads stop scaling)
    prep_processes: int | None = None
    #: Ray workers (actors) evaluating chunks of the dataset (more than 1 uses Ray)
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
    #: the folder of an interrupted run to continue (only its missing samples run; refused if the checkpoint,
    #: dataset, recipe or backend settings differ); None: a new run
    resume: str | None = None
    #: show a progress bar while evaluating (``zooinfer run`` turns it off: papermill shows its own)
    progress: bool = True
    #: predictions kept for the plots (the first N samples)
    keep: int = 4
    #: "Backends and precision": variants run beside the reference on the same samples (e.g. ("onnxruntime-fp16",
    #: "onnxruntime-int8"), or "bins:<folder>"); () skips the section
    compare: tuple[str, ...] = ()
    #: INT8 calibration images (the first N of the dataset; named in the report)
    calibration: int = 8
    #: "Under load": MLPerf LoadGen scenarios (SingleStream, Offline, Server); () skips the section
    scenarios: tuple[str, ...] = ()
    #: the Server scenario's p99 latency bound in ms (None: 3x the SingleStream p90)
    latency_bound_ms: float | None = None
    #: model options selecting a variant of its recipe, as sorted (name, value) pairs (e.g. (("canvas", 256),))
    model_options: tuple[tuple[str, Any], ...] = ()
    #: metric parameters (the recipe's ``metric_options``, e.g. WIDER FACE's ``iou_thresh``, COCO's ``evaluator``)
    #: as sorted (name, value) pairs; a rescore changes only these
    metric_options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        from .backends import registry

        backend = registry.get(self.backend)  # an unknown name lists the valid ones
        if isinstance(self.bs, bool) or not isinstance(self.bs, int) or self.bs < 1:
            raise ZooinferError(f"parameter 'bs' must be an integer >= 1, got {self.bs!r}")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise ZooinferError(f"parameter 'limit' must be None or an integer >= 1, got {self.limit!r}")
        if self.subset is not None and (isinstance(self.subset, bool) or not isinstance(self.subset, int)
                                        or self.subset < 1):
            raise ZooinferError(f"parameter 'subset' must be None or an integer >= 1, got {self.subset!r}")
        if self.subset is not None and self.limit is not None:
            raise ZooinferError(f"parameters 'limit' ({self.limit}: the first N) and 'subset' ({self.subset}: a random "
                                "N) both select samples; give one")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ZooinferError(f"parameter 'seed' must be an integer >= 0, got {self.seed!r}")
        if self.prep_processes is not None and (isinstance(self.prep_processes, bool) or
                                                not isinstance(self.prep_processes, int) or self.prep_processes < 1):
            raise ZooinferError(f"parameter 'prep_processes' must be None or an integer >= 1, "
                                f"got {self.prep_processes!r}")
        if not isinstance(self.processes, int) or self.processes < 1:
            raise ZooinferError(f"parameter 'processes' must be an integer >= 1, got {self.processes!r}")
        if self.precision not in PRECISIONS:
            raise ZooinferError(f"parameter 'precision' must be one of {', '.join(PRECISIONS)}, "
                                f"got {self.precision!r}")
        if not isinstance(self.batch_sizes, tuple) or not self.batch_sizes or \
                any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in self.batch_sizes):
            raise ZooinferError(f"parameter 'batch_sizes' must be a non-empty tuple of integers >= 1, "
                                f"got {self.batch_sizes!r}")
        if self.compare or self.scenarios:  # names checked now, not after the evaluation
            from .loadgen import scenario_name
            from .variants import parse_name

            for name in self.compare:
                parse_name(name)
            for name in self.scenarios:
                scenario_name(name)
        if backend.reads_stored_results and self.distributed:
            raise ZooinferError(f"backend={self.backend!r} reads results an external tool already computed: there "
                                "is nothing to spread over processes; run it with processes=1 and no ray_address")

    # ------------------------------------------------------------------------------------------------ building
    @classmethod
    def from_parameters(cls, params: Mapping[str, Any], *, check: bool = True) -> "RunConfig":
        """The configuration of a notebook's parameters (``model`` required).

        Keys that are not fields are the model's options (its ``NotebookSpec.extra``, e.g. PyramidBox's ``canvas``);
        ``workers`` is the old name of ``processes`` (accepted with a FutureWarning); anything else is refused with
        the valid names and the close matches. Command-line spellings are normalised: "" / "none" -> None for paths
        and ``limit``, integral strings -> ints, "true"/"false" -> bools, the text of a list ("[1, 8]", as papermill
        hands ``-p batch_sizes "[1, 8]"`` over) -> a tuple. ``check``: also :meth:`check_inputs` (paths, backend,
        output folder) -- before anything slow runs.
        """
        from . import recipes

        if "model" not in params:
            raise ZooinferError("parameters need 'model' (one of " + ", ".join(recipes.NAMES) + ")")
        model = params["model"]
        recipe = recipes.get(model)  # an unknown model lists the known ones
        names = {f.name for f in fields(cls)} - {"model_options", "metric_options"}
        option_names = [n for n, _, _ in (recipe.notebook.extra if recipe.notebook else ())]
        metric_names = [n for n, _, _ in recipe.metric_options]
        values: dict[str, Any] = {}
        options: dict[str, Any] = {}
        metric: dict[str, Any] = {}
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
            elif key in metric_names:
                metric[key] = value
            else:
                valid = names | set(option_names) | set(metric_names)
                raise ZooinferError(f"unknown parameter {key!r} for {model}{close_matches(key, valid)}; valid: "
                                    f"{', '.join(sorted(valid))}")
        config = cls(**_normalise(values), model_options=tuple(sorted(options.items())),
                     metric_options=tuple(sorted(recipe.metric_values(metric).items())))
        if check:
            config.check_inputs()
        return config

    def check_inputs(self) -> None:
        """Check what the run will read and write before anything slow runs (``from_parameters`` calls it): the
        checkpoint, dataset and artefact paths exist, the backend's runtime is installed and its artefacts given, an
        ONNX file with a static batch takes ``bs``, and the output folder can be written. Raises a ZooinferError
        naming the parameter and what was expected."""
        from .backends import registry

        r = self.recipe()
        published = f"the published file is {r.checkpoint_file}" + (f", md5 {r.checkpoint_md5}" if
                                                                     r.checkpoint_md5 else "")
        if self.weights is not None and not os.path.isfile(self.weights):
            raise CheckpointError(f"parameter 'weights': checkpoint file not found: {self.weights} ({published})")
        if self.weights is not None and os.path.getsize(self.weights) == 0:
            raise CheckpointError(f"parameter 'weights': {self.weights} is empty (0 bytes); expected the PyTorch "
                                  f"checkpoint as downloaded ({published}). Was the download interrupted?")
        if self.data_root is not None and not os.path.isdir(self.data_root):
            raise DatasetError(f"parameter 'data_root': dataset folder not found: {self.data_root} (a folder in "
                               f"the dataset's official layout; see README.md, Dataset layouts)")
        backend = registry.get(self.backend)
        # only where the session opens on this machine: a Ray cluster's nodes may have what the driver lacks
        why = backend.unavailable() if self.ray_address is None else None
        if why:
            raise BackendError(f"parameter 'backend': {self.backend!r} cannot open on this machine: {why}")
        if "om_path" in backend.needs:
            if self.om_path is None:
                raise backend.missing_error("om_path")
            if not os.path.isfile(self.om_path):
                raise BackendError(f"parameter 'om_path': OM file not found: {self.om_path} (convert the ONNX file "
                                   "with the atc command the report prints)")
        if backend.reads_stored_results:
            _check_results_dir(self.backend, self.results_dir)
        if self.onnx_path is not None:
            if not os.path.isfile(self.onnx_path):
                raise BackendError(f"parameter 'onnx_path': ONNX file not found: {self.onnx_path}")
            from .export import onnx_batch

            fixed = onnx_batch(self.onnx_path)
            if fixed is not None and fixed != self.bs and "onnx_path" in backend.needs:
                raise BackendError(f"parameter 'bs': {self.onnx_path} has a static batch size of {fixed}, got "
                                   f"bs={self.bs}; run with bs={fixed}, or export it again with a dynamic batch "
                                   "axis (static_batch=false) or for this bs")
        if self.resume is not None:
            check_resumable(self.resume)
        if self.run_dir is not None or self.resume is not None:
            check_output_folder(self.run_dir or self.resume, "parameter 'run_dir'" if self.run_dir else
                                "parameter 'resume'")
        else:
            from .report import default_output_root

            root = self.output_root if self.output_root is not None else default_output_root()
            check_output_folder(root, "parameter 'output_root'" if self.output_root is not None
                                else f"the default output folder (set output_root= to write elsewhere)")

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

    @property
    def folder(self) -> str | None:
        """The run folder this run writes into when it is given: ``run_dir``, else the folder it resumes."""
        return self.run_dir or self.resume

    def recipe(self):
        """The model's recipe, or its variant for ``model_options``, evaluated with ``metric_options``."""
        from . import recipes

        return recipes.get(self.model, **dict(self.model_options)).with_metric_options(**dict(self.metric_options))

    def select(self, dataset: Any) -> Any:
        """The samples this run evaluates: the first ``limit``, a seeded random ``subset`` (in dataset order), or
        all of ``dataset``."""
        if self.subset is not None:
            return dataset.sample(self.subset, self.seed)
        return dataset.subset(self.limit)

    def parameters(self) -> dict[str, Any]:
        """The parameters as the notebook gave them, normalised (for metrics.json)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("model_options",
                                                                                       "metric_options")}
        out.update(dict(self.model_options))
        out.update(dict(self.metric_options))
        return out


def _normalise(values: dict[str, Any]) -> dict[str, Any]:
    """Command-line and YAML spellings of parameter values -> the field types (see ``from_parameters``)."""
    out = dict(values)
    for key in (*OPTIONAL_TEXT, "limit", "subset", "threads", "prep_threads", "prep_processes"):
        if key in out:
            out[key] = _none_if_empty(out[key])
    for key in OPTIONAL_TEXT:
        if out.get(key) is not None:
            out[key] = str(out[key])
    for key, minimum in (("bs", 1), ("limit", 1), ("subset", 1), ("seed", 0), ("threads", 1), ("prep_threads", 1),
                         ("prep_processes", 1), ("device_id", 0), ("keep", 0)):
        if out.get(key) is not None:
            out[key] = _integer(key, out[key], minimum)
    if "processes" in out:  # None (a YAML "null") means the default: one process
        out["processes"] = 1 if _none_if_empty(out["processes"]) is None else _integer("processes",
                                                                                       out["processes"], 1)
    if "batch_sizes" in out:
        out["batch_sizes"] = batch_sizes_value(out["batch_sizes"])
    for key in ("compare", "scenarios"):
        if key in out:
            out[key] = names_value(key, out[key])
    if out.get("calibration") is not None:
        out["calibration"] = _integer("calibration", out["calibration"], 1)
    if "latency_bound_ms" in out:
        bound = _none_if_empty(out["latency_bound_ms"])
        out["latency_bound_ms"] = None if bound is None else seconds_value("latency_bound_ms", bound)
    if "bench_min_time" in out:
        out["bench_min_time"] = seconds_value("bench_min_time", out["bench_min_time"])
    for key in ("static_batch", "profile_ops", "progress"):
        if key in out:
            out[key] = _flag(key, out[key])
    for key in ("backend", "precision"):
        if key in out and not isinstance(out[key], str):
            raise ZooinferError(f"parameter {key!r} must be a name (text), got {out[key]!r}")
    return out


def check_resumable(folder: str) -> None:
    """``folder`` is the folder of an interrupted run that stored its predictions, else a ZooinferError."""
    from .store import FINGERPRINT, FOLDER

    path = Path(folder)
    if not path.is_dir():
        raise ZooinferError(f"parameter 'resume': run folder not found: {path} (the partial folder of an interrupted "
                            "run, outputs/<model>/.<run-id>.partial; zooinfer list shows them)")
    if not (path / FOLDER / FINGERPRINT).is_file():
        raise ZooinferError(f"parameter 'resume': {path} holds no stored predictions ({FOLDER}/{FINGERPRINT}); "
                            "expected the folder of a run made by this version of zooinfer")
    if (path / "metrics.json").is_file() and not path.name.endswith(".partial"):
        raise ZooinferError(f"parameter 'resume': {path} is a complete run; recompute its metrics with zooinfer "
                            f"rescore {path} (-p name value for metric parameters) instead")


#: result-file suffixes the bins backend reads (ais_bench BIN / TXT, the old benchmark tool's TXT)
RESULT_SUFFIXES = (".bin", ".txt")


def _check_results_dir(backend: str, results_dir: str | None) -> None:
    """A backend that scores stored results needs ``results_dir``: an existing folder holding result files."""
    from .backends import registry

    if results_dir is None:
        raise registry.get(backend).missing_error("results_dir")
    folder = Path(results_dir)
    if not folder.is_dir():
        raise BackendError(f"parameter 'results_dir': result folder not found: {folder} (the folder ais_bench/"
                           "benchmark wrote, e.g. ./result/subdir)")
    if not any(p.suffix in RESULT_SUFFIXES for sub in (folder, *sorted(folder.glob("view*")))
               if sub.is_dir() for p in sub.iterdir()):
        raise BackendError(f"parameter 'results_dir': {folder} holds no result files (<key>_<k>.bin or .txt, as "
                           "ais_bench/benchmark write them)")
