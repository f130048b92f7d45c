"""One run is one frozen configuration: :class:`RunConfig`, built once from the notebook's parameters.

Every notebook parameter is a field here (plus the model's own options, e.g. PyramidBox's ``canvas``, which select a
variant of its recipe). The notebook builds it with :meth:`RunConfig.from_parameters`; the evaluation, the pipeline,
the scale-out tasks, the benchmark and the report read it and never change it (``dataclasses.replace`` gives a
changed copy).

Values are parsed with the plain parsers of :mod:`zooinfer.parameters` (below this module): config imports none of
the features whose parameters it checks (loadgen, variants, report, store, export, bench), not even in a function.
The names it re-exports from there (``batch_sizes_value``, ``seconds_value``, ``check_output_folder`` ...) keep
working from here.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from .errors import BackendError, CheckpointError, DatasetError, ZooinferError
from .parameters import (FLAG_WORDS, RESULT_SUFFIXES, STORE_FINGERPRINT, STORE_FOLDER, ResumeRefused,  # noqa: F401
                         batch_sizes_value, budget_value, check_environment, check_output_folder, check_result_folder,
                         close_matches, default_output_root, flag, integer, milliseconds_value, names_value,
                         none_if_empty, onnx_batch, parse_variant, plain_value, read_stored_fingerprint,
                         resume_differences, scenario_name, seconds_value)
from .parameters import AUDITS, audit_name  # noqa: F401

PRECISIONS = ("fp32", "fp16")
#: parameters that name a file, folder or address: "", "none" and "None" (what a command line gives) mean None
OPTIONAL_TEXT = ("weights", "data_root", "ray_address", "onnx_path", "om_path", "results_dir", "output_root",
                 "run_dir", "resume")
#: the old names of renamed parameters -> their new names (still accepted, with a warning)
RENAMED = {"workers": "processes"}


#: integer fields: (name, minimum, whether None is allowed); a bool is never an integer (YAML reads "yes" as one)
INTEGER_FIELDS = (("bs", 1, False), ("limit", 1, True), ("subset", 1, True), ("seed", 0, False),
                  ("threads", 1, True), ("prep_threads", 1, True), ("prep_processes", 1, True),
                  ("processes", 1, False), ("device_id", 0, True), ("keep", 0, True), ("calibration", 1, True),
                  ("rank_subset", 1, False), ("repeats", 1, False))
#: the parts of a stored fingerprint a resume is compared on before anything runs (the dataset's own digest and the
#: selected keys need the dataset opened: the evaluation compares them), and their names in the refusal
RESUME_PARTS = {"model": "model", "recipe": "recipe (model options)", "checkpoint": "checkpoint",
                "dataset": "dataset", "selection": "selected samples", "backend": "backend settings"}


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
    #: "Backends and precision": also the precision search and the fastest passing configuration (zooinfer.tune)
    tune: bool = False
    #: the search's budget: the largest relative metric drop that passes, a fraction (None: the recipe's rule, 1%)
    budget: float | None = None
    #: the samples the search ranks layers on (the first N of the run's; clipped to them, and said)
    rank_subset: int = 64
    #: "Under load": MLPerf LoadGen scenarios (SingleStream, Offline, Server); () skips the section
    scenarios: tuple[str, ...] = ()
    #: the Server scenario's p99 latency bound in ms (None: 3x the SingleStream p90)
    latency_bound_ms: float | None = None
    #: "Under load": MLPerf's compliance audits (TEST01, TEST04, TEST05) run through LoadGen's audit.config after
    #: the scenarios; needs ``scenarios``; () skips them
    audits: tuple[str, ...] = ()
    #: "Repeatability": the selection evaluated this many times in all (the run's own evaluation first, the others
    #: in fresh sessions): per-sample flips and each metric's spread; 1 skips the section
    repeats: int = 1
    #: model options selecting a variant of its recipe, as sorted (name, value) pairs (e.g. (("canvas", 256),))
    model_options: tuple[tuple[str, Any], ...] = ()
    #: metric parameters (the recipe's ``metric_options``, e.g. WIDER FACE's ``iou_thresh``, COCO's ``evaluator``)
    #: as sorted (name, value) pairs; a rescore changes only these
    metric_options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        from .backends import registry

        backend = registry.get(self.backend)  # an unknown name lists the valid ones
        for name, minimum, optional in INTEGER_FIELDS:
            value = getattr(self, name)
            if (value is None and not optional) or (value is not None and (
                    isinstance(value, bool) or not isinstance(value, int) or value < minimum)):
                raise ZooinferError(f"parameter {name!r} must be {'None or ' if optional else ''}an integer >= "
                                    f"{minimum}, got {value!r}")
        if self.subset is not None and self.limit is not None:
            raise ZooinferError(f"parameters 'limit' ({self.limit}: the first N) and 'subset' ({self.subset}: a random "
                                "N) both select samples; give one")
        seconds_value("bench_min_time", self.bench_min_time)
        if self.budget is not None:
            budget_value("budget", self.budget)
        if self.latency_bound_ms is not None:
            milliseconds_value("latency_bound_ms", self.latency_bound_ms)
        if self.precision not in PRECISIONS:
            raise ZooinferError(f"parameter 'precision' must be one of {', '.join(PRECISIONS)}, "
                                f"got {self.precision!r}")
        if not isinstance(self.batch_sizes, tuple) or not self.batch_sizes or \
                any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in self.batch_sizes):
            raise ZooinferError(f"parameter 'batch_sizes' must be a non-empty tuple of integers >= 1, "
                                f"got {self.batch_sizes!r}")
        for name in self.compare:  # names checked now, not after the evaluation
            parse_variant(name)
        for name in self.scenarios:
            scenario_name(name)
        for name in self.audits:
            audit_name(name)
        if self.audits and not self.scenarios:
            raise ZooinferError(f"parameter 'audits' ({', '.join(self.audits)}) needs parameter 'scenarios': the "
                                "audits rerun the LoadGen scenarios (e.g. -p scenarios '[SingleStream, Offline]')")
        if backend.reads_stored_results and self.distributed:
            raise ZooinferError(f"backend={self.backend!r} reads results an external tool already computed: there "
                                "is nothing to spread over processes; run it with processes=1 and no ray_address")

    # ------------------------------------------------------------------------------------------------ building
    @classmethod
    def from_parameters(cls, params: Mapping[str, Any], *, check: bool = True) -> "RunConfig":
        """The configuration of a notebook's parameters (``model`` required).

        Keys that are not fields are the model's options (its ``NotebookSpec.extra``, e.g. PyramidBox's ``canvas``);
        ``workers`` is the old name of ``processes`` (accepted with a FutureWarning); anything else is refused with
        the valid names and the close matches; a value that is not plain data (text, numbers, true/false, None,
        lists/tuples and text-keyed dicts of them, paths) is refused (``parameters.plain_value``: bytes from a YAML
        ``!!binary``, sets, dates). Command-line spellings are normalised: "" / "none" -> None for paths
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
            plain_value(key, value, python=True)  # every parameter, whether or not this run uses it
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
        ONNX file with a static batch takes ``bs``, a ``bins:`` folder to compare holds result files, a resumed run
        was made with the same settings (:meth:`check_resume`), the ``ZOOINFER_*`` environment variables parse
        (``parameters.ENVIRONMENT``), and the output folder can be written. Raises a ZooinferError naming the
        parameter (or variable) and what was expected."""
        from .backends import registry

        check_environment()
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
            fixed = onnx_batch(self.onnx_path)
            if fixed is not None and fixed != self.bs and "onnx_path" in backend.needs:
                raise BackendError(f"parameter 'bs': {self.onnx_path} has a static batch size of {fixed}, got "
                                   f"bs={self.bs}; run with bs={fixed}, or export it again with a dynamic batch "
                                   "axis (static_batch=false) or for this bs")
        for name in self.compare:  # a missing folder is a variant the section skips; a malformed one is refused now
            kind, folder = parse_variant(name)
            if kind == "bins" and os.path.lexists(folder):
                check_result_folder(folder, f"parameter 'compare' ({name})")
        if self.resume is not None:
            check_resumable(self.resume)
            self.check_resume()
        if self.run_dir is not None or self.resume is not None:
            check_output_folder(self.run_dir or self.resume, "parameter 'run_dir'" if self.run_dir else
                                "parameter 'resume'")
        else:
            root = self.output_root if self.output_root is not None else default_output_root()
            check_output_folder(root, "parameter 'output_root'" if self.output_root is not None
                                else f"the default output folder (set output_root= to write elsewhere)")

    def check_resume(self) -> None:
        """Raise :class:`~zooinfer.parameters.ResumeRefused` naming every difference between the run ``resume``
        continues and this one, in what is known before anything runs: the model, its options, the checkpoint (its
        md5), ``data_root``, the selection (limit, subset, seed) and the backend settings. What needs the dataset
        opened (its digest, the selected keys) is compared when the evaluation opens the store."""
        stored = read_stored_fingerprint(self.resume)
        md5 = "synthetic weights"
        if self.weights is not None:
            from .nn.checkpoints import file_md5

            md5 = file_md5(self.weights)
        images = (stored.get("dataset") or {}).get("images") if isinstance(stored.get("dataset"), dict) else None
        # a limit/subset at or above the dataset's size was stored as the full run it is (``fitted``)
        fitted = self.fitted(images)[0] if isinstance(images, int) and not isinstance(images, bool) else self
        current = {"model": self.model, "recipe": {"options": dict(self.model_options)},
                   "checkpoint": {"md5": md5}, "dataset": {"data_root": _absolute(self.data_root)},
                   "selection": {"limit": fitted.limit, "subset": fitted.subset,
                                 "seed": fitted.seed if fitted.subset else None},
                   "backend": {"backend": self.backend, "precision": self.precision, "bs": self.bs,
                               "static_batch": self.static_batch, "onnx_path": self.onnx_path,
                               "om_path": self.om_path, "results_dir": self.results_dir}}
        stored_root = (stored.get("parameters") or {}).get("data_root")
        stored = {**stored, "dataset": {"data_root": _absolute(stored_root)}}  # as the run was given it
        diff = resume_differences(stored, current, RESUME_PARTS)
        if diff:
            raise ResumeRefused(f"parameter 'resume': cannot resume {self.resume}: this run differs from the stored "
                                "one in " + "; ".join(diff) + ". Resume with the same settings, or start a new run")

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

    def fitted(self, n_samples: int) -> tuple["RunConfig", str | None]:
        """This configuration for a dataset of ``n_samples``, and a note when it changed: a ``subset`` or ``limit``
        at or above the dataset's size selects every sample, so the run is a full run (the selection cleared:
        reported, judged and stored as one); otherwise ``(self, None)``."""
        import dataclasses

        for name in ("subset", "limit"):
            size = getattr(self, name)
            if size is not None and size >= n_samples:
                return dataclasses.replace(self, **{name: None}), (
                    f"{name} {size} >= the dataset's {n_samples} samples: the whole dataset is evaluated (a full "
                    "run)")
        return self, None

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
            out[key] = none_if_empty(out[key])
    for key in OPTIONAL_TEXT:
        if out.get(key) is not None:
            out[key] = str(out[key])
    for key, minimum in (("bs", 1), ("limit", 1), ("subset", 1), ("seed", 0), ("threads", 1), ("prep_threads", 1),
                         ("prep_processes", 1), ("device_id", 0), ("keep", 0)):
        if out.get(key) is not None:
            out[key] = integer(key, out[key], minimum)
    if "processes" in out:  # None (a YAML "null") means the default: one process
        out["processes"] = 1 if none_if_empty(out["processes"]) is None else integer("processes",
                                                                                     out["processes"], 1)
    if "batch_sizes" in out:
        out["batch_sizes"] = batch_sizes_value(out["batch_sizes"])
    for key in ("compare", "scenarios", "audits"):
        if key in out:
            out[key] = names_value(key, out[key])
    if "audits" in out:
        out["audits"] = tuple(dict.fromkeys(audit_name(n) for n in out["audits"]))
    if "repeats" in out:
        out["repeats"] = integer("repeats", out["repeats"], 1)
    if out.get("calibration") is not None:
        out["calibration"] = integer("calibration", out["calibration"], 1)
    if "rank_subset" in out:
        out["rank_subset"] = integer("rank_subset", out["rank_subset"], 1)
    if "budget" in out:
        budget = none_if_empty(out["budget"])
        out["budget"] = None if budget is None else budget_value("budget", budget)
    if "latency_bound_ms" in out:
        bound = none_if_empty(out["latency_bound_ms"])
        out["latency_bound_ms"] = None if bound is None else milliseconds_value("latency_bound_ms", bound)
    if "bench_min_time" in out:
        out["bench_min_time"] = seconds_value("bench_min_time", out["bench_min_time"])
    for key in ("static_batch", "profile_ops", "progress", "tune"):
        if key in out:
            out[key] = flag(key, out[key])
    for key in ("backend", "precision"):
        if key in out and not isinstance(out[key], str):
            raise ZooinferError(f"parameter {key!r} must be a name (text), got {out[key]!r}")
    return out


def check_resumable(folder: str) -> None:
    """``folder`` is the folder of an interrupted run that stored its predictions, else a ZooinferError."""
    path = Path(folder)
    if not path.is_dir():
        raise ZooinferError(f"parameter 'resume': run folder not found: {path} (the partial folder of an interrupted "
                            "run, outputs/<model>/.<run-id>.partial; zooinfer list shows them)")
    if not (path / STORE_FOLDER / STORE_FINGERPRINT).is_file():
        raise ZooinferError(f"parameter 'resume': {path} holds no stored predictions ({STORE_FOLDER}/"
                            f"{STORE_FINGERPRINT}); "
                            "expected the folder of a run made by this version of zooinfer")
    if (path / "metrics.json").is_file() and not path.name.endswith(".partial"):
        raise ZooinferError(f"parameter 'resume': {path} is a complete run; recompute its metrics with zooinfer "
                            f"rescore {path} (-p name value for metric parameters) instead")


def _absolute(path: str | None) -> str | None:
    """``path`` made absolute (as ``zooinfer run`` gives paths), None as None."""
    return None if path is None else str(Path(path).expanduser().absolute())


def _check_results_dir(backend: str, results_dir: str | None) -> None:
    """A backend that scores stored results needs ``results_dir``: an existing folder holding result files."""
    from .backends import registry

    if results_dir is None:
        raise registry.get(backend).missing_error("results_dir")
    check_result_folder(results_dir, "parameter 'results_dir'", error=BackendError)
