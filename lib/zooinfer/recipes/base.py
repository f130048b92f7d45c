"""The per-model recipe: every fact that ties network, export, dataset, pre/post-processing and metric together.

A recipe is data plus a few functions; the pipeline, export, benchmark and report read it and hold no model facts.
All accuracy figures are fractions (0.7943, not 79.43) in the units the metric returns.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np


@dataclass(frozen=True)
class PerfRow:
    """One published throughput table row: ``fps`` per batch size on ``hardware`` (``source`` says which README)."""

    hardware: str
    source: str
    fps: dict[int, float]


@dataclass(frozen=True)
class Acceptance:
    """The rule a reproduction passes by, as the guides state it: the result may fall at most ``tolerance`` below
    the reference, relative (``0.01``: "within 1% of the open-source figure"). ``combine="each"`` judges every
    headline metric; ``"mean"`` judges their mean (PyramidBox's guide compares the mean of the three APs). ``source``
    says where the rule comes from."""

    tolerance: float = 0.01
    combine: str = "each"
    source: str = "the Ascend guides' acceptance rule: accuracy within 1% of the open-source figure"


@dataclass(frozen=True)
class Published:
    """Published figures. ``accuracy`` is the reference the report compares against; ``other`` lists revisions;
    ``acceptance`` the rule a reproduction passes by (verdict: zooinfer.verdict)."""

    accuracy: dict[str, float]
    source: str
    other: tuple[tuple[str, dict[str, float]], ...] = ()
    performance: tuple[PerfRow, ...] = ()
    acceptance: Acceptance = field(default_factory=Acceptance)


def dataset_opener(reader: Callable[..., Any], sample_root: Callable[[], Any],
                   **sample_kwargs: Any) -> Callable[[str | None], Any]:
    """A recipe's ``open_dataset``: ``reader(data_root)``, or for ``None`` the embedded sample (built on first use by
    ``sample_root()``) read by the same reader and flagged ``embedded``."""

    def open_dataset(data_root: str | None) -> Any:
        if data_root is None:
            ds = reader(sample_root(), **sample_kwargs)
            ds.embedded = True
            return ds
        return reader(data_root)

    return open_dataset


@dataclass(frozen=True)
class BenchPlan:
    """How ``benchmarks/run.py`` measures a model: swept batch sizes, samples in the end-to-end stream, and the
    (short, long) memory streams, normal and ``--quick`` (heavy models get smaller numbers).

    ``heavy``: seconds per image on a CPU (M2Det, PyramidBox): the other benchmarks' streams and the tests' runs on
    real recipes use fewer images. ``max_batch``: the largest batch (rows: views) any sweep may use, also on a GPU
    (None: no cap; PyramidBox's two 1000x1000 views per image: 8)."""

    batch_sizes: tuple[int, ...] = (1, 8, 32)
    stream: int = 64
    memory: tuple[int, int] = (2000, 20000)
    memory_quick: tuple[int, int] = (200, 2000)
    heavy: bool = False
    max_batch: int | None = None


@dataclass(frozen=True)
class NotebookSpec:
    """What the generated notebook (``tools/make_notebook.py``, one template for every model) says about one model
    and defaults to. Facts the recipe already holds (name, checkpoint file, published figures) are not repeated.

    Intro: ``# {title}: checkpoint -> ONNX -> {steps} -> speed``, then "Replaces the Ascend ModelZoo guide
    `{guide}` ({guide_steps})" (``guide`` None: no guide covers the model, and the intro says so), the papermill
    command lines (``data_example`` is the example ``data_root``), the published reference, "Every fact ({facts},
    published figures) comes from ...", then ``intro`` (markdown).

    Parameters: ``defaults`` override the template's defaults (e.g. a smaller ``bs`` / ``limit`` for a heavy
    model's embedded run); ``extra`` adds model options as (name, default, comment), inserted after ``limit`` and
    passed to :meth:`Recipe.variant`; ``data_root_help`` is the comment of ``data_root``, ``comments`` overrides
    other parameters' comments as (name, comment).

    Sections: ``caveat(recipe)`` is markdown the set-up cell shows for a recipe variant (None: nothing);
    ``results_help`` introduces the results section; ``more_results(ev, result)`` gives (title, rows) tables the
    results section shows after the task's own (``viz.show_results``)."""

    title: str
    guide: str | None = None
    steps: str = "accuracy"
    guide_steps: str = "pth2onnx, preprocess to `.bin`, benchmark, accuracy script"
    facts: str = "preprocessing constants, ONNX names"
    intro: str = ""
    data_root_help: str = "dataset root, None for the embedded sample"
    data_example: str = "/data/dataset"
    results_help: str = ""
    defaults: tuple[tuple[str, Any], ...] = ()
    extra: tuple[tuple[str, Any, str], ...] = ()
    comments: tuple[tuple[str, str], ...] = ()
    caveat: Callable[["Recipe"], str | None] | None = None
    more_results: Callable[[Any, Any], list[tuple[str, list[dict]]]] | None = None


class Accumulator(Protocol):
    """Streams predictions into a metric's compact state."""

    def update(self, sample: Any, prediction: Any) -> None: ...

    def compute(self) -> dict[str, float]: ...


@dataclass
class Recipe:
    """Everything the generic code needs to know about one model (the contracts: docs/architecture.md)."""

    name: str
    task: str  # "classification" | "detection" | "face_detection" | "reid"
    input_shape: tuple[int, int, int]  # (C, H, W)
    input_names: list[str]
    output_names: list[str]
    opset: int
    checkpoint_file: str
    checkpoint_md5: str | None
    published: Published
    #: image path -> (views: a tuple of float32 CHW arrays, one per network input the guide writes -- one for most
    #: models, the image and its mirror for PyramidBox; meta: the small dict postprocessing needs)
    preprocess: Callable[[str], tuple[tuple[np.ndarray, ...], dict]]
    #: (this sample's outputs in ONNX order, batch axis removed; meta) -> prediction.
    #: For multi-view samples ``outputs`` is a list with one such output list per view.
    postprocess: Callable[[list[np.ndarray], dict], Any]
    #: data_root (None = the embedded sample) -> dataset object (see zooinfer.datasets.base.ImageDataset)
    open_dataset: Callable[[str | None], Any]
    #: dataset -> metric accumulator (``update(sample, prediction)``, ``compute() -> dict``)
    new_accumulator: Callable[[Any], Accumulator]
    #: metric keys shown against the published figures, in order
    headline: tuple[str, ...]
    dynamic_batch: bool = True
    #: ONNX dim_param of the batch axis (the guides use the string "-1")
    batch_dim_param: str = "-1"
    #: full ``dynamic_axes`` for torch.onnx.export when more than the batch axis is dynamic (None: batch only)
    dynamic_axes: dict[str, dict[int, str]] | None = None
    #: extra facts for the report: where and why we differ from the guide, files the guide needs that we do not
    notes: tuple[str, ...] = ()
    #: ATC options beyond input shape (e.g. {"out_nodes": "..."}) and the guide's soc version
    atc: dict[str, str] = field(default_factory=dict)
    #: prediction -> the smaller form scale-out workers send back to the driver (None: the prediction itself).
    #: ``new_accumulator(...).update`` must accept it and compute exactly what it computes from the prediction.
    compact: Callable[[Any], Any] | None = None
    #: weights (checkpoint path as downloaded, or None for synthetic weights) -> the network (``models.build_model``)
    build: Callable[[str | None], Any] | None = None
    #: keys of ``sample.info`` (what the dataset reader knows: ids, annotation sizes, category order) that the
    #: pipeline copies into the meta postprocessing receives, over preprocessing's own values
    sample_meta: tuple[str, ...] = ()
    #: benchmark settings (benchmarks/run.py)
    bench: BenchPlan = field(default_factory=BenchPlan)
    #: the generated notebook's title, intro and defaults (tools/make_notebook.py)
    notebook: NotebookSpec | None = None
    #: why this variant's accuracy cannot be compared with the published figures (None: it can)
    incomparable_because: str | None = None
    #: options -> a variant of this recipe (e.g. PyramidBox at another canvas); None: the model has no variants
    make_variant: Callable[..., "Recipe"] | None = None
    #: metric parameters ``new_accumulator(dataset, **options)`` takes, as (name, default, comment): notebook
    #: parameters a rescore may change without running the model again (e.g. WIDER FACE's IoU threshold)
    metric_options: tuple[tuple[str, Any, str], ...] = ()
    #: the values numeric metric options may take, as (name, ``parameters.NumberRange``) (e.g. an IoU threshold:
    #: in (0, 1]); an option not named here may be any finite number
    metric_ranges: tuple[tuple[str, Any], ...] = ()

    @property
    def input_name(self) -> str:
        return self.input_names[0]

    def meta_for(self, sample: Any, meta: dict) -> dict:
        """Postprocessing's meta for ``sample``: preprocessing's ``meta``, the sample's ``key``, then the
        ``sample_meta`` keys of ``sample.info`` over them (a new dict)."""
        out = dict(meta or {})
        out.setdefault("key", sample.key)
        info = getattr(sample, "info", None) or {}
        out.update({k: info[k] for k in self.sample_meta if k in info})
        return out

    def metric_values(self, given: dict[str, Any]) -> dict[str, Any]:
        """``given`` metric options with text from a command line converted to the default's type ("0.4" -> 0.4);
        a number option takes a finite number in its ``metric_ranges`` range (never a bool: YAML reads "yes" as
        one); unknown names are refused."""
        from ..errors import ZooinferError
        from ..parameters import NumberRange, number_value

        defaults = {n: d for n, d, _ in self.metric_options}
        ranges = dict(self.metric_ranges)
        out = {}
        for name, value in given.items():
            if name not in defaults:
                raise ZooinferError(f"model {self.name!r} has no metric parameter {name!r}"
                                    + (f" (it has: {', '.join(defaults)})" if defaults else ""))
            default = defaults[name]
            if isinstance(default, float):
                value = number_value(name, value, ranges.get(name, NumberRange()), what="metric parameter")
            elif isinstance(default, str) and not isinstance(value, str):
                raise ZooinferError(f"metric parameter {name!r} must be a name (text), got {value!r}")
            out[name] = value
        return out

    def with_metric_options(self, **options: Any) -> "Recipe":
        """This recipe with its accumulator built with ``options`` (the defaults where not given); no options:
        itself."""
        if not options:
            return self
        from dataclasses import replace

        values = self.metric_values(options)
        base = self.new_accumulator
        return replace(self, new_accumulator=lambda dataset: base(dataset, **values))

    def variant(self, **options: Any) -> "Recipe":
        """This recipe with model options applied (``NotebookSpec.extra`` names them); no options: itself."""
        if not options:
            return self
        if self.make_variant is None:
            from ..errors import ZooinferError

            raise ZooinferError(f"model {self.name!r} takes no options, got {', '.join(sorted(options))}")
        return self.make_variant(**options)
