"""One run is one frozen configuration: :class:`RunConfig`, built once from the notebook's parameters.

Every notebook parameter is a field here (plus the model's own options, e.g. PyramidBox's ``canvas``, which select a
variant of its recipe). The notebook builds it with :meth:`RunConfig.from_parameters`; the evaluation, the pipeline,
the scale-out tasks, the benchmark and the report read it and never change it.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from .errors import ZooinferError


def _none_if_empty(v: Any) -> Any:
    return None if v in ("", "none", "None") else v


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides what one run does. Units: seconds, counts; ``bs`` counts network inputs (views)."""

    model: str
    #: the published checkpoint file as downloaded; None: deterministic synthetic weights
    weights: str | None = None
    #: dataset root in its official layout; None: the embedded sample
    data_root: str | None = None
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
    progress: bool = True
    #: predictions kept for the plots (the first N samples)
    keep: int = 4
    #: model options selecting a variant of its recipe, as sorted (name, value) pairs (e.g. (("canvas", 256),))
    model_options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_parameters(cls, params: Mapping[str, Any]) -> "RunConfig":
        """The configuration of a notebook's parameters (``model`` required). Keys that are not fields are the
        model's options (its ``NotebookSpec.extra``); anything else is refused with the valid names."""
        from . import recipes

        if "model" not in params:
            raise ZooinferError("parameters need 'model' (one of " + ", ".join(recipes.NAMES) + ")")
        model = params["model"]
        recipe = recipes.get(model)
        names = {f.name for f in fields(cls)} - {"model_options"}
        option_names = [n for n, _, _ in (recipe.notebook.extra if recipe.notebook else ())]
        values: dict[str, Any] = {}
        options: dict[str, Any] = {}
        for key, value in params.items():
            if key in names:
                values[key] = value
            elif key in option_names:
                options[key] = value
            elif key == "workers":  # the name this parameter had before
                values["processes"] = value
            else:
                raise ZooinferError(f"unknown parameter {key!r} for {model}; valid: "
                                    f"{', '.join(sorted(names | set(option_names)))}")
        for key in ("weights", "data_root", "ray_address", "onnx_path", "om_path", "results_dir", "output_root",
                    "run_dir", "limit"):
            if key in values:
                values[key] = _none_if_empty(values[key])
        if values.get("limit") is not None:
            values["limit"] = int(values["limit"])
        if "bs" in values:
            values["bs"] = int(values["bs"])
        values["processes"] = int(values.get("processes") or 1)
        if "batch_sizes" in values:
            values["batch_sizes"] = tuple(int(b) for b in values["batch_sizes"])
        return cls(**values, model_options=tuple(sorted(options.items())))

    def recipe(self):
        """The model's recipe, or its variant for ``model_options``."""
        from . import recipes

        return recipes.get(self.model, **dict(self.model_options))

    def parameters(self) -> dict[str, Any]:
        """The parameters as the notebook gave them (for metrics.json)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model_options"}
        out.update(dict(self.model_options))
        return out
