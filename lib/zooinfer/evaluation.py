"""One evaluation run of one model: what every notebook calls, in this order.

    ev = Evaluation.from_parameters(dict(model="dpn131", bs=8))   # a frozen RunConfig underneath (ev.config)
    ev.banner()          # first lines of the report: what runs, and whether accuracy means anything
    ev.prepare()         # checkpoint (md5) -> torch model; dataset (clear errors on bad layouts) -> Prepared
    ev.export()          # ONNX + checker + parity torch vs ONNX Runtime + batch invariance -> ExportResult
    ev.evaluate()        # streamed pipeline -> metric, stage timings, skipped images -> RunResult
    ev.benchmark([1, 8]) # pure-inference sweep (same code as benchmarks/), end-to-end / pure ratio -> rows
    ev.finish()          # metrics.json + plots into outputs/<model>/<run-id>/ (renamed when complete) -> Path

Each step returns its result and the evaluation keeps the latest one of each (``ev.steps``, a :class:`StepResults`);
the report is built from the configuration, the recipe and those results (``report.metrics_document``). Sessions are
opened through the backend registry (``zooinfer.backends.registry``), which says what each backend needs.
"""
from __future__ import annotations

import os
import shutil
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from . import bench, export, pipeline, report
from .backends import registry
from .backends.base import sample_outputs
from .backends.registry import Artefacts, Backend, OutputLayout, SessionOptions
from .config import RunConfig, batch_sizes_value, seconds_value
from .errors import BackendError, DatasetError, OutputError, ZooinferError
from .nn.checkpoints import check_md5
from .recipes.base import Recipe


class _AsMapping(Mapping):
    """A step result that also reads as the dict notebooks show (``result["path"]``, ``report.show([result])``)."""

    def as_dict(self) -> dict:  # pragma: no cover - each step result defines it
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        return self.as_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_dict())

    def __len__(self) -> int:
        return len(self.as_dict())


@dataclass(frozen=True, eq=False)
class Prepared(_AsMapping):
    """What ``prepare()`` produced: the torch ``model``, the opened ``dataset``, the checkpoint (``weights``, None for
    synthetic weights) and its md5 next to the published one, the number of ``images`` the run evaluates and, when
    the selection was changed to fit the dataset (a subset at or above its size), the ``selection_note`` saying so."""

    model: Any
    dataset: Any
    weights: str | None
    weights_md5: str | None
    published_md5: str | None
    images: int
    selection_note: str | None = None

    @property
    def md5_matches(self) -> bool | None:
        """Whether the checkpoint's md5 is the published one (None: nothing to compare)."""
        if self.weights_md5 is None or self.published_md5 is None:
            return None
        return self.weights_md5.lower() == self.published_md5.lower()

    def as_dict(self) -> dict:
        return {"checkpoint": self.weights or "synthetic", "md5": self.weights_md5,
                "published_md5": self.published_md5, "md5_matches": self.md5_matches,
                "dataset": self.dataset.describe(), "images": self.images,
                "rejected_files": len(getattr(self.dataset, "rejected", [])),
                **({"selection": self.selection_note} if self.selection_note else {})}


@dataclass(frozen=True, eq=False)
class ExportResult(_AsMapping):
    """What ``export()`` produced: the ONNX file's ``path``, its ``description`` (``export.describe_onnx``: inputs,
    outputs, opset, ops, size_mb), the ``parity`` rows (PyTorch vs ONNX Runtime per output) and the
    ``batch_invariance`` (max abs difference, batch vs one at a time; None for a static batch or one sample)."""

    path: str
    description: dict
    parity: tuple[dict, ...]
    batch_invariance: float | None

    @property
    def parity_failure(self) -> str | None:
        """'parity failed: ...' when an output differs from PyTorch beyond ``export.PARITY_TOLERANCE`` (the file does
        not compute this model's outputs: the report says so first and gives no verdict), else None."""
        return export.parity_failure(list(self.parity), self.path)

    def as_dict(self) -> dict:
        return {**self.description, "path": self.path, "parity": list(self.parity),
                "parity_failure": self.parity_failure, "batch_invariance_max_abs": self.batch_invariance}


@dataclass(frozen=True)
class StepResults:
    """The latest result of each step: what the report is built from."""

    prepared: Prepared | None = None
    exported: ExportResult | None = None
    #: the evaluation (``evaluate()``)
    run: pipeline.RunResult | None = None
    #: the evaluation session's name, device, providers and threads (None when it ran as Ray tasks)
    session_info: dict | None = None
    #: pure-inference sweep rows (``benchmark()``)
    benchmark: tuple[dict, ...] = ()
    #: ONNX Runtime per-operator rows (``profile()``)
    profile: tuple[dict, ...] = ()
    #: optional report sections as (metrics.json key, document): "backends_and_precision", "under_load"
    sections: tuple[tuple[str, dict], ...] = ()


#: bootstrap resamples behind a subset's intervals (mAP, AP, CMC); top-k rates use Wilson intervals
BOOTSTRAP_RESAMPLES = 200


def _intervals(accumulator: Any, level: float = 0.95) -> dict | None:
    """The accumulator's 95% intervals ({metric: (lo, hi)}), or None where its metric has none."""
    method = getattr(accumulator, "intervals", None)
    if not callable(method):
        return None
    return {k: (None if v is None else (float(v[0]), float(v[1])))
            for k, v in method(level=level, resamples=BOOTSTRAP_RESAMPLES, seed=0).items()}


def _session_info(session: Any) -> dict:
    return {"name": getattr(session, "name", None), "device": getattr(session, "device", None),
            "providers": getattr(session, "providers", None), "threads": getattr(session, "threads", None)}


def run_fingerprint(config: RunConfig, recipe: Recipe, dataset: Any, data: Any, weights_md5: str | None) -> dict:
    """What a run's predictions depend on (``store.CHECKED``: a resume must match every part: model, recipe,
    checkpoint md5, dataset, the sha256 of its ground-truth files, the selected samples, backend settings) and its
    parameters; ``dataset`` is the opened dataset, ``data`` the selected samples."""
    from . import store

    cfg = config
    truth = getattr(dataset, "ground_truth_files", None)
    return {
        "model": recipe.name,
        "recipe": {"options": dict(cfg.model_options), "input_shape": list(recipe.input_shape), "task": recipe.task},
        "checkpoint": {"md5": weights_md5 if cfg.weights else "synthetic weights"},
        "dataset": {"name": dataset.name, "root": str(Path(dataset.root).absolute()), "images": len(dataset)},
        "ground_truth": store.ground_truth_digest(truth() if callable(truth) else ()),
        "selection": {"limit": cfg.limit, "subset": cfg.subset, "seed": cfg.seed if cfg.subset else None,
                      "samples": len(data), "keys_sha1": store.keys_digest(s.key for s in data)},
        "backend": {"backend": cfg.backend, "precision": cfg.precision, "bs": cfg.bs,
                    "static_batch": cfg.static_batch, "onnx_path": cfg.onnx_path, "om_path": cfg.om_path,
                    "results_dir": cfg.results_dir},
        "parameters": {k: v for k, v in cfg.parameters().items() if k not in ("run_dir", "resume")},
    }


def check_resume_dataset(config: RunConfig) -> None:
    """The checks of a resume of ``config.resume`` that need the dataset opened (``RunConfig.check_resume`` made the
    others: model, options, checkpoint, backend settings), before anything runs or is written; no network is built:
    the dataset, the sha256 of its ground-truth files, the selected samples. :class:`~zooinfer.store.ResumeRefused`
    names each difference (each changed ground-truth file)."""
    from .store import read_fingerprint, refuse_differences

    stored = read_fingerprint(config.resume)
    recipe = config.recipe()
    dataset = recipe.open_dataset(config.data_root)
    current = run_fingerprint(config, recipe, dataset, config.select(dataset), None)
    parts = ("dataset", "ground_truth", "selection")
    refuse_differences(config.resume, {k: stored.get(k) for k in parts}, {k: current[k] for k in parts})


class Evaluation:
    """One run: its frozen :class:`RunConfig` (``config``), the model's ``recipe``, the latest result of each step
    (``steps``) and the open evaluation ``session``."""

    def __init__(self, config: RunConfig, *, recipe: Recipe | None = None, steps: StepResults | None = None):
        """``recipe``: default ``config.recipe()`` (the registered recipe or its variant for the model options);
        tests pass unregistered ones. ``steps``: results of an earlier run to report on (default: none yet)."""
        if not isinstance(config, RunConfig):
            raise ZooinferError(f"Evaluation takes a RunConfig, got {type(config).__name__}; build one with "
                                "Evaluation.from_parameters(dict(model=..., ...)) or Evaluation.for_model(name, ...)")
        self.config = config
        self.recipe = recipe if recipe is not None else config.recipe()
        self.steps = steps if steps is not None else StepResults()
        #: the backend session the evaluation runs on (opened by ``evaluate``, reused by ``benchmark``)
        self.session = None
        #: the run folder (made by ``evaluate`` for the stored predictions, or by ``finish``)
        self.run_dir: report.RunDir | None = None
        self._store = None
        #: the banner's display id in a notebook (``banner()``), so that ``export()`` can add a parity failure to it
        self._banner_id: str | None = None

    @classmethod
    def from_parameters(cls, params: Mapping[str, Any]) -> "Evaluation":
        """The evaluation a notebook's parameters describe (see :meth:`RunConfig.from_parameters`)."""
        return cls(RunConfig.from_parameters(params))

    @classmethod
    def for_model(cls, model: str, **fields: Any) -> "Evaluation":
        """``from_parameters(dict(model=model, **fields))``: e.g. ``Evaluation.for_model("dpn131", bs=8)``."""
        return cls.from_parameters({"model": model, **fields})

    # ------------------------------------------------------------------------------------------------ status
    @property
    def model(self):
        """The torch model ``prepare()`` built (None before)."""
        return self.steps.prepared.model if self.steps.prepared is not None else None

    @property
    def dataset(self):
        """The dataset ``prepare()`` opened (None before)."""
        return self.steps.prepared.dataset if self.steps.prepared is not None else None

    @property
    def result(self) -> pipeline.RunResult | None:
        """The latest ``evaluate()`` result (None before, or when it failed)."""
        return self.steps.run

    @property
    def bench_rows(self) -> list[dict]:
        """The latest ``benchmark()`` rows."""
        return list(self.steps.benchmark)

    @property
    def onnx_path(self) -> str | None:
        """The ONNX file the run uses: the exported one, else the configuration's ``onnx_path``."""
        return self.steps.exported.path if self.steps.exported is not None else self.config.onnx_path

    def meaningful(self) -> tuple[bool, str]:
        """Whether the accuracy can be compared with the published figures, and why not."""
        return report.meaningful(self.config, self.recipe)

    def banner(self) -> str:
        """The report's first lines: what this run is and whether its accuracy means anything (shown and returned).
        A parity failure ``export()`` finds later is added to them where they were shown (in a notebook)."""
        exported = self.steps.exported
        text = report.banner_text(self.config, self.recipe, exported.parity_failure if exported else None)
        self._banner_id = self._banner_id or f"zooinfer-banner-{uuid.uuid4().hex}"
        report.show(text, display_id=self._banner_id)
        return text

    def _prepared(self, step: str) -> Prepared:
        """The prepared model and dataset, or an error saying to call ``prepare()`` before ``step()``."""
        if self.steps.prepared is None:
            raise ZooinferError(f"call prepare() first (before {step}())")
        return self.steps.prepared

    # ------------------------------------------------------------------------------------------------ steps
    def prepare(self) -> Prepared:
        """Check the checkpoint (md5 warning on mismatch), build the torch model, open the dataset."""
        r, weights = self.recipe, self.config.weights
        md5 = None
        if weights is not None:
            if not os.path.isfile(weights):
                raise ZooinferError(f"checkpoint file not found: {weights} (the published file is "
                                    f"{r.checkpoint_file}" + (f", md5 {r.checkpoint_md5})" if r.checkpoint_md5 else ")"))
            md5 = check_md5(weights, r.checkpoint_md5)
        from .distributed import build_network

        dataset = r.open_dataset(self.config.data_root)  # first: a layout error needs no network built
        self.config, selection_note = self.config.fitted(len(dataset))
        if selection_note:  # a subset covering the whole dataset: a full run, judged as one
            warnings.warn(selection_note, stacklevel=2)
        model = build_network(r, weights)
        prepared = Prepared(model=model, dataset=dataset, weights=weights, weights_md5=md5,
                            published_md5=r.checkpoint_md5, images=len(self.config.select(dataset)),
                            selection_note=selection_note)
        self.steps = replace(self.steps, prepared=prepared)
        return prepared

    def parity_inputs(self, n: int = 4) -> np.ndarray:
        """Up to ``n`` real preprocessed views from the dataset (N, C, H, W), for parity and benchmarks."""
        views = bench.real_views(self.recipe, self._prepared("parity_inputs").dataset, n)
        if not views:
            rng = np.random.default_rng(0)
            return rng.standard_normal((n, *self.recipe.input_shape), dtype=np.float32)
        return np.stack(views[:n])

    def export(self, parity_samples: int = 2) -> ExportResult:
        """Export (or reuse the cached, or the configuration's) ONNX file, describe it, and compare it with PyTorch
        on real samples."""
        prepared = self._prepared("export")
        r = self.recipe
        batch = self.config.bs if self.config.static_batch else None
        path = self.config.onnx_path
        if path is None:
            path = str(export.export_onnx(r, prepared.model, weights_md5=prepared.weights_md5, batch=batch))
        else:
            self._check_fits(path, export.fit_problem(r, path))
        description = export.describe_onnx(path)
        x = self.parity_inputs(parity_samples if batch is None else batch)
        if batch is not None:
            x = bench.make_batch(x, batch)
        torch_sess = registry.get("torch").open(Artefacts(model=prepared.model))
        ort_sess = registry.get("onnxruntime").open(Artefacts(onnx_path=path),
                                                    SessionOptions(threads=self.config.threads))
        reference, outputs = torch_sess.run(x), ort_sess.run(x)
        if self.config.onnx_path is not None:
            self._check_fits(path, next((f"output {n!r} of shape {list(o.shape)} for a batch of {len(x)}; {r.name} "
                                         f"gives {list(t.shape)}" for n, t, o in zip(r.output_names, reference, outputs)
                                         if t.shape != o.shape), None))
        parity = export.parity(reference, outputs, r.output_names)
        invariance = export.batch_invariance(ort_sess.run, x) if batch is None and x.shape[0] > 1 else None
        exported = ExportResult(path=path, description=description, parity=tuple(parity),
                                batch_invariance=invariance)
        self.steps = replace(self.steps, exported=exported)
        if exported.parity_failure:
            warnings.warn(exported.parity_failure, stacklevel=2)
            if self._banner_id:  # the report's first lines say it too
                report.show(report.banner_text(self.config, r, exported.parity_failure), display_id=self._banner_id,
                            update=True)
        return exported

    def _check_fits(self, path: str, problem: str | None) -> None:
        """A BackendError naming the ``onnx_path`` parameter when its file does not fit the recipe (``problem``)."""
        if problem:
            raise BackendError(f"parameter 'onnx_path': {path} has {problem}: it is not an ONNX file of "
                               f"{self.recipe.name} (zooinfer export {self.recipe.name} writes one)")

    def _onnx_file(self) -> str:
        """The run's ONNX file: ``export()`` first when it has not run (it exports one, or checks the configuration's
        ``onnx_path`` against the model: names, shapes, parity)."""
        return (self.steps.exported if self.steps.exported is not None else self.export()).path

    def _output_layout(self) -> OutputLayout:
        """One sample's output shapes and views, from the torch model on the dataset's first sample (what a reader
        of result files cuts the files into)."""
        prepared = self._prepared("evaluate")
        first = next((s for s in prepared.dataset if not s.info.get("missing")), None)
        if first is None:
            raise DatasetError(f"no image of {prepared.dataset.describe()} is on disk")
        views, _ = self.recipe.preprocess(first.path)
        outs = registry.get("torch").open(Artefacts(model=prepared.model)).run(views[0][None])
        return OutputLayout(tuple(o.shape for o in sample_outputs(outs, 1, 0)), views=len(views))

    def artefacts(self, backend: Backend) -> Artefacts:
        """What ``backend`` declares it needs, made or found for this run (exports the ONNX file if needed)."""
        providers = {"onnx_path": self._onnx_file, "model": lambda: self._prepared("evaluate").model,
                     "om_path": lambda: self.config.om_path, "results_dir": lambda: self.config.results_dir,
                     "output_layout": self._output_layout}
        values = {}
        for need in backend.needs:  # in the declared order: parameters the user gives are checked first
            value = providers[need]()
            if value is None:
                raise backend.missing_error(need)
            values[need] = value
        return Artefacts(**values)

    def session_for(self, backend: str | None = None):
        """A new session of ``backend`` (default: the run's) with the run's settings; for a backend that reads
        stored results (``bins``), a reader with ``read(key)``."""
        spec = registry.get(backend or self.config.backend)
        self._prepared("session_for")
        return spec.open(self.artefacts(spec), SessionOptions.from_config(self.config))

    def run_folder(self) -> report.RunDir:
        """The run's folder, made on first use (still under its partial name until ``finish()``): ``run_dir`` (a
        caller's, e.g. ``zooinfer run``'s), the folder ``resume`` continues, or a new one under ``output_root``."""
        if self.run_dir is None:
            cfg = self.config
            # a caller's run_dir is renamed by the caller; a resumed partial folder is this run's to rename
            owned = False if cfg.run_dir else (True if cfg.resume else None)
            self.run_dir = report.RunDir(self.recipe.name, cfg.output_root, path=cfg.folder, owned=owned)
        return self.run_dir

    def fingerprint(self, data: Any) -> dict:
        """What this run's predictions depend on (``store.CHECKED``: a resume must match every part) and its
        parameters, for the prediction store of the samples ``data`` (:func:`run_fingerprint`)."""
        prepared = self._prepared("fingerprint")
        return run_fingerprint(self.config, self.recipe, prepared.dataset, data, prepared.weights_md5)

    def prediction_store(self, data: Any):
        """The run's prediction store (``run_folder()/predictions``): the interrupted run's when resuming (refused
        with what differs when this run is not the same, before anything in it changes; unreadable chunks are
        recomputed, and said), else a new one; the same one on later calls. A resume of a folder another process
        holds (its run lock, ``store.holder``) is refused at once, unless that is this run's caller (``zooinfer
        run`` passes ``run_dir`` and holds the folder's run lock itself)."""
        from .store import PredictionStore, refuse_if_held

        if self._store is None:
            fingerprint = self.fingerprint(data)
            if self.config.resume is not None:
                if self.config.run_dir is None:
                    refuse_if_held(self.config.resume)
                store = PredictionStore.open(self.config.resume, expect=fingerprint)
                if store.dropped:
                    report.show("**Damaged stored predictions, recomputed:** " + "; ".join(store.dropped))
            else:
                store = PredictionStore.create(self.run_folder().path, fingerprint)
            self._store = store
        return self._store

    def evaluate(self) -> pipeline.RunResult:
        """Stream the selected samples through preprocess -> backend -> postprocess -> metric (Ray tasks when
        ``processes > 1`` or ``ray_address``), storing every sample's prediction in the run folder as it goes; a
        resumed run takes the samples its interrupted run stored from there. A subset's figures get their 95%
        intervals (``result.intervals``)."""
        prepared = self._prepared("evaluate")
        cfg = self.config
        data = cfg.select(prepared.dataset)
        if cfg.distributed:
            from .distributed import import_ray

            import_ray()  # before exporting or writing anything: a missing Ray is said at once
        store = self.prediction_store(data)
        store.acquire()
        try:
            if cfg.distributed:
                from .distributed import evaluate_distributed

                onnx = self._onnx_file() if "onnx_path" in registry.get(cfg.backend).needs else None
                result = evaluate_distributed(replace(cfg, limit=None), self.recipe, data, onnx_path=onnx,
                                              store=store)
                info = None
            else:
                if self.session is None:
                    self.session = self.session_for()
                result = pipeline.run(self.recipe, data, self.session, bs=cfg.bs, prep_threads=cfg.prep_threads,
                                      prep_processes=cfg.prep_processes, progress=cfg.progress, keep=cfg.keep,
                                      store=store)
                info = _session_info(self.session)
        except BaseException:
            if len(store):
                report.show(f"The run stopped; the predictions of {len(store)} of {len(data)} samples are stored in "
                            f"`{store.folder}`. `resume=\"{store.folder.parent}\"` continues it (only the missing "
                            "samples run).")
            raise
        finally:
            store.release()
        if not result.kept and self.steps.run is not None:  # evaluated again from the store: keep the plots' samples
            result.kept = self.steps.run.kept
        result.stored = {"folder": str(store.folder), "samples": len(store), "chunks_written": store.chunks_written,
                         "from_interrupted_run": result.n_stored, "resumed_from": cfg.resume}
        if result.n_stored:
            report.show(f"Resumed `{cfg.resume}`: {result.n_stored} samples scored from its stored predictions, "
                        f"{result.n_samples - result.n_stored} run now.")
        if cfg.subset is not None and result.n_done:
            result.intervals = _intervals(result.accumulator)
        if result.n_done:
            from .metrics.per_class import of_accumulator

            result.per_class = of_accumulator(result.accumulator)
        self.steps = replace(self.steps, run=result, session_info=info)
        return self._check_skipped(result)

    def _check_skipped(self, result: pipeline.RunResult) -> pipeline.RunResult:
        """A run that evaluated nothing is an error; skipped images are said (warning + a bold line in the report,
        ``report.SKIP_THRESHOLD`` and more: the accuracy does not describe the dataset)."""
        if result.n_samples and result.n_done == 0:
            key, path, reason = result.skipped[0] if result.skipped else ("", "", "")
            raise ZooinferError(f"nothing was evaluated: all {result.n_samples} images were skipped (first: {path}: "
                                f"{reason})" + (f"; check results_dir={self.config.results_dir}" if
                                                registry.get(self.config.backend).reads_stored_results else ""))
        line = report.skipped_summary(result.skipped, result.n_samples)
        if line:
            warnings.warn(line, stacklevel=3)
            report.show(f"**{line}** (the full list: `metrics.json` `skipped`)")
        return result

    def verdict(self, show: bool = True) -> dict:
        """PASS / FAIL against the published reference by the recipe's acceptance rule, or no verdict and why
        (synthetic weights, the embedded sample, a limit, another canvas, too many skipped images, an ONNX file that
        failed parity with the model)."""
        from . import verdict

        if self.steps.run is None:
            raise ZooinferError("call evaluate() first")
        doc = report.verdict_document(self.config, self.recipe, self.steps.run, self.steps.exported)
        if show:
            report.show(verdict.summary_line(doc))
        return doc

    def add_section(self, name: str, document: dict) -> None:
        """Put an optional section's ``document`` into metrics.json under ``name`` (replacing an earlier one)."""
        kept = tuple((k, v) for k, v in self.steps.sections if k != name)
        self.steps = replace(self.steps, sections=kept + ((name, document),))

    def backends_and_precision(self, variants: Sequence[str] | None = None, **kwargs: Any) -> list:
        """The "Backends and precision" section (``zooinfer.sections.backends_and_precision``) for ``variants``
        (default: the ``compare`` parameter); its document goes into metrics.json. Returns the figures."""
        from . import sections

        self._prepared("backends_and_precision")
        names = list(self.config.compare if variants is None else variants)
        if not names:
            return []
        if self.steps.exported is None:
            self.export()
        doc, figures = sections.backends_and_precision(self, names, calibration=self.config.calibration, **kwargs)
        self.add_section("backends_and_precision", doc)
        return figures

    def under_load(self, scenarios: Sequence[str] | None = None, **kwargs: Any) -> list:
        """The "Under load" section (``zooinfer.sections.under_load``: MLPerf LoadGen) for ``scenarios`` (default:
        the ``scenarios`` parameter); its document goes into metrics.json, LoadGen's logs into the run folder."""
        from . import sections

        names = list(self.config.scenarios if scenarios is None else scenarios)
        if not names:
            return []
        if self.steps.run is None:
            raise ZooinferError("call evaluate() before under_load(): accuracy mode is checked against it")
        kwargs.setdefault("audits", self.config.audits)
        doc, figures = sections.under_load(self, names, latency_bound_ms=self.config.latency_bound_ms,
                                           quick=self.config.embedded, **kwargs)
        self.add_section("under_load", doc)
        return figures

    def accuracy(self) -> list[dict]:
        """Headline metrics next to the published figures (percent), with their 95% intervals for a subset."""
        if self.steps.run is None:
            raise ZooinferError("call evaluate() first")
        return report.accuracy_rows(self.steps.run.metrics, self.recipe.published, self.recipe.headline,
                                    self.steps.run.intervals)

    def benchmark(self, batch_sizes: Sequence[int] | None = None, backends: Sequence[str] | None = None,
                  min_time: float | None = None, min_iters: int = 3, warmup: int = 1) -> list[dict]:
        """Pure-inference sweep per backend (default: this run's backend, plus PyTorch eager for the ratio) over
        ``batch_sizes`` (default: the configuration's), ``min_time`` seconds each (default: ``bench_min_time``).
        Backends that read stored results (``bins``) compute nothing and are left out."""
        self._prepared("benchmark")
        # the notebook passes its raw parameters: papermill hands "-p batch_sizes [1]" over as text
        sizes = batch_sizes_value(batch_sizes) if batch_sizes is not None else self.config.batch_sizes
        seconds = self.config.bench_min_time if min_time is None else seconds_value("min_time", min_time)
        wanted = list(backends) if backends is not None else list(dict.fromkeys([self.config.backend, "torch"]))
        # distinct real batches from the run's own samples; the run's backend's timed outputs are checked against
        # the predictions the evaluation stored (bench.sweep_samples)
        stored = self._store.get if self._store is not None and self.steps.run is not None else None
        samples, expected = bench.sweep_samples(self.recipe, self.config.select(self._prepared("benchmark").dataset),
                                                max(4, 2 * max(sizes)), stored)
        if not len(samples):
            samples = self.parity_inputs(4)
        rows: list[dict] = []
        for name in wanted:
            if registry.get(name).reads_stored_results:
                continue
            reuse = name == self.config.backend and self.session is not None
            sess = self.session if reuse else self.session_for(name)
            rows += bench.inference_sweep(sess, samples, sizes, min_time=seconds, min_iters=min_iters,
                                          warmup=warmup, expected=expected if name == self.config.backend else None)
        self.steps = replace(self.steps, benchmark=tuple(rows))
        return rows

    def best_batch(self) -> int | None:
        """The swept batch size with the highest pure-inference throughput on this run's backend (``benchmark()``)."""
        return bench.best_batch([r for r in self.steps.benchmark if r["backend"] == self.config.backend])

    def profile(self, top: int = 10, runs: int = 3) -> list[dict]:
        """ONNX Runtime per-operator profile of ``runs`` batches of ``bs`` real samples: the ``top`` operator types
        by time (ms per run, share of the profiled time). Same function as ``benchmarks/run.py --profile``."""
        self._prepared("profile")
        onnx = self._onnx_file()
        batch = bench.make_batch(self.parity_inputs(4), self.config.bs)
        rows = bench.profile_top_ops(onnx, batch, runs=runs, top=top, threads=self.config.threads)
        self.steps = replace(self.steps, profile=tuple(rows))
        return rows

    def ratios(self) -> dict[str, float | None]:
        """ONNX Runtime / PyTorch eager throughput per batch size, and end-to-end / pure inference at this bs."""
        return bench.ratios(list(self.steps.benchmark), self.config.backend, self.config.bs, self.steps.run)

    def ascend_commands(self, soc_version: str | None = None) -> dict[str, str]:
        """The atc and ais_bench command lines for this model at this batch size (Ascend users); after a precision
        search (``tune``), also the atc line keeping its chosen layers in their original precision."""
        commands = export.ascend_commands(self.recipe, self.onnx_path, self.config.bs, soc_version)
        tuned = (dict(self.steps.sections).get("precision_search") or {}).get("ascend_atc")
        return {**commands, "atc_mixed_precision": tuned} if tuned else commands

    # ------------------------------------------------------------------------------------------------ report
    def metrics_document(self) -> dict:
        """Everything metrics.json holds (``report.metrics_document``)."""
        return report.metrics_document(self.config, self.recipe, self.steps)

    def finish(self) -> Path:
        """Write metrics.json, the plots and the metric's own files (``accumulator.write_artifacts(folder)`` where
        the accumulator has it, e.g. a WIDER FACE submission) into the run folder and mark it complete; returns its
        final path. A file that cannot be written (a full disk, no permission) is an OutputError naming it and the
        OS error, and the folder keeps its partial name: nothing incomplete looks finished."""
        self.run_folder()
        try:
            self._write_run_files()
        except (OSError, OutputError) as e:
            what = e if isinstance(e, OutputError) else report.write_failed(e.filename or self.run_dir.path, e)
            raise OutputError(f"{what}; the run folder stays {self.run_dir.path} (incomplete)") from None
        return self.run_dir.finalize()

    def _write_run_files(self) -> None:
        """metrics.json, the plots, LoadGen's logs and the metric's own files, into the (partial) run folder."""
        report.write_json(self.run_dir.file("metrics.json"), self.metrics_document())
        if self.steps.benchmark:
            import matplotlib.pyplot as plt

            fig = report.plot_throughput(list(self.steps.benchmark), self.run_dir.file("throughput_latency.png"),
                                         title=f"{self.recipe.name} on this machine",
                                         published=self.recipe.published.performance)
            plt.close(fig)
        for name, doc in self.steps.sections:
            logs = doc.get("log_dir") if isinstance(doc, dict) else None
            # the section writes LoadGen's logs into the run folder (a relative log_dir); a caller's own folder
            # elsewhere (an absolute one) is copied in
            if name == "under_load" and logs and Path(logs).is_absolute() and Path(logs).is_dir():
                shutil.copytree(logs, self.run_dir.file("loadgen"), dirs_exist_ok=True)
        accumulator = self.steps.run.accumulator if self.steps.run is not None else None
        write_artifacts = getattr(accumulator, "write_artifacts", None)
        if callable(write_artifacts):
            write_artifacts(self.run_dir.path)
