"""One evaluation run of one model: what every notebook calls, in this order.

    ev = Evaluation("dpn131", weights=None, data_root=None, backend="onnxruntime", bs=8)
    ev.banner()          # first lines of the report: what runs, and whether accuracy means anything
    ev.prepare()         # checkpoint (md5) -> torch model; dataset (clear errors on bad layouts)
    ev.export()          # ONNX + checker + parity torch vs ONNX Runtime + batch invariance
    ev.evaluate()        # streamed pipeline -> metric, stage timings, skipped images
    ev.benchmark([1, 8]) # pure-inference sweep (same code as benchmarks/), end-to-end / pure ratio
    ev.finish()          # metrics.json + plots into outputs/<model>/<run-id>/ (renamed when complete)
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import bench, export, pipeline, recipes, report
from .backends import open_session
from .backends.base import sample_outputs
from .backends.bins import OutputReader
from .errors import ZooinferError
from .models import build_model
from .nn.checkpoints import check_md5


def _none_if_empty(v: Any) -> Any:
    return None if v in ("", "none", "None") else v


class Evaluation:
    """Holds the run's parameters, the built model/ONNX file/session, and the results each step produced."""

    def __init__(self, model: str, *, weights: str | None = None, data_root: str | None = None,
                 backend: str = "onnxruntime", bs: int = 1, limit: int | None = None, prep_threads: int | None = None,
                 threads: int | None = None, workers: int = 1, ray_address: str | None = None,
                 static_batch: bool = False, fp16: bool = False,
                 onnx_path: str | None = None, om_path: str | None = None, results_dir: str | None = None,
                 output_root: str | None = None, device_id: int = 0, progress: bool = True, keep: int = 4,
                 params: dict | None = None, recipe: "recipes.Recipe | None" = None):
        #: the model's registered recipe, or a variant of it (e.g. PyramidBox at another canvas size)
        self.recipe = recipe if recipe is not None else recipes.get(model)
        self.weights = _none_if_empty(weights)
        self.data_root = _none_if_empty(data_root)
        self.backend, self.bs, self.limit = backend, int(bs), (int(limit) if _none_if_empty(limit) else None)
        self.prep_threads, self.threads, self.static_batch, self.fp16 = prep_threads, threads, bool(static_batch), fp16
        self.workers, self.ray_address = int(workers or 1), _none_if_empty(ray_address)
        self.onnx_path = _none_if_empty(onnx_path)
        self.om_path, self.results_dir = _none_if_empty(om_path), _none_if_empty(results_dir)
        self.device_id, self.progress, self.keep = device_id, progress, keep
        self.params = dict(params or {})
        self.output_root = output_root
        self.model = None
        self.dataset = None
        self.weights_md5: str | None = None
        self.session = None
        self.result: pipeline.RunResult | None = None
        self.export_info: dict = {}
        self.parity_rows: list[dict] = []
        self.batch_invariance: float | None = None
        self.bench_rows: list[dict] = []
        self.profile_rows: list[dict] = []
        self.run_dir: report.RunDir | None = None

    @classmethod
    def from_parameters(cls, params: dict) -> "Evaluation":
        """The evaluation a notebook's parameters describe (see :class:`zooinfer.config.RunConfig`)."""
        from .config import RunConfig

        cfg = RunConfig.from_parameters(params)
        ev = cls(cfg.model, weights=cfg.weights, data_root=cfg.data_root, backend=cfg.backend, bs=cfg.bs,
                 limit=cfg.limit, prep_threads=cfg.prep_threads, threads=cfg.threads, workers=cfg.processes,
                 ray_address=cfg.ray_address, static_batch=cfg.static_batch, fp16=cfg.precision == "fp16",
                 onnx_path=cfg.onnx_path, om_path=cfg.om_path, results_dir=cfg.results_dir,
                 output_root=cfg.output_root, device_id=cfg.device_id, progress=cfg.progress, keep=cfg.keep,
                 params=cfg.parameters(), recipe=cfg.recipe())
        ev.config = cfg
        return ev

    # ------------------------------------------------------------------------------------------------ status
    @property
    def synthetic(self) -> bool:
        return self.weights is None

    @property
    def embedded(self) -> bool:
        return self.data_root is None

    def meaningful(self) -> tuple[bool, str]:
        """Whether the accuracy can be compared with the published figures, and why not."""
        why = []
        if self.synthetic:
            why.append("the weights are deterministic synthetic weights (no checkpoint given: weights=...)")
        if self.embedded:
            why.append("the data is the tiny embedded sample (no data_root given)")
        if self.limit is not None:
            why.append(f"only the first {self.limit} images are evaluated (limit={self.limit})")
        return (not why, "; ".join(why))

    def banner(self) -> str:
        """The report's first lines: what this run is and whether its accuracy means anything."""
        ok, why = self.meaningful()
        r = self.recipe
        lines = [f"## {r.name}: {r.task}, input {r.input_shape}, backend `{self.backend}`, bs {self.bs}"]
        if not ok:
            lines.append(f"**Accuracy is NOT meaningful in this run:** {why}. The numbers below only show that the "
                         "chain runs end to end. Pass `weights=` (the published checkpoint file) and `data_root=` "
                         "(the real dataset) for the real figures.")
        else:
            lines.append(f"Real checkpoint `{self.weights}` on `{self.data_root}`: accuracy is compared with the "
                         f"published figures ({r.published.source}).")
        text = "\n\n".join(lines)
        report.show(text)
        return text

    # ------------------------------------------------------------------------------------------------ steps
    def prepare(self) -> dict:
        """Check the checkpoint (md5 warning on mismatch), build the torch model, open the dataset."""
        r = self.recipe
        if self.weights is not None:
            if not os.path.isfile(self.weights):
                raise ZooinferError(f"checkpoint file not found: {self.weights} (the published file is "
                                    f"{r.checkpoint_file}" + (f", md5 {r.checkpoint_md5})" if r.checkpoint_md5 else ")"))
            self.weights_md5 = check_md5(self.weights, r.checkpoint_md5)
        self.model = build_model(r.name, self.weights)
        self.dataset = r.open_dataset(self.data_root)
        info = {"checkpoint": self.weights or "synthetic", "md5": self.weights_md5,
                "published_md5": r.checkpoint_md5,
                "md5_matches": None if self.weights_md5 is None or r.checkpoint_md5 is None
                else self.weights_md5 == r.checkpoint_md5,
                "dataset": self.dataset.describe(), "images": len(self.dataset.subset(self.limit)),
                "rejected_files": len(getattr(self.dataset, "rejected", []))}
        return info

    def _needs(self, what: str) -> None:
        step = {"model": "prepare", "dataset": "prepare", "result": "evaluate"}[what]
        if getattr(self, what) is None:
            raise ZooinferError(f"call {step}() first")

    def parity_inputs(self, n: int = 4) -> np.ndarray:
        """Up to ``n`` real preprocessed views from the dataset (N, C, H, W), for parity and benchmarks."""
        self._needs("dataset")
        views = []
        for sample in self.dataset:
            try:
                arrays, _ = self.recipe.preprocess(sample.path)
            except Exception:  # noqa: BLE001 - unreadable images are the pipeline's business
                continue
            for v in arrays:
                if v.shape == tuple(self.recipe.input_shape):
                    views.append(v)
            if len(views) >= n:
                break
        if not views:
            rng = np.random.default_rng(0)
            return rng.standard_normal((n, *self.recipe.input_shape), dtype=np.float32)
        return np.stack(views[:n])

    def export(self, parity_samples: int = 2) -> dict:
        """Export (or reuse the cached) ONNX file, describe it, and compare it with PyTorch on real samples."""
        self._needs("model")
        r = self.recipe
        batch = self.bs if self.static_batch else None
        if self.onnx_path is None:
            self.onnx_path = str(export.export_onnx(r, self.model, weights_md5=self.weights_md5, batch=batch))
        self.export_info = export.describe_onnx(self.onnx_path)
        x = self.parity_inputs(parity_samples if batch is None else batch)
        if batch is not None:
            x = bench.make_batch(x, batch)
        torch_sess = open_session("torch", model=self.model)
        ort_sess = open_session("onnxruntime", onnx_path=self.onnx_path, threads=self.threads)
        self.parity_rows = export.parity(torch_sess.run(x), ort_sess.run(x), r.output_names)
        if batch is None and x.shape[0] > 1:
            self.batch_invariance = export.batch_invariance(ort_sess.run, x)
        self.export_info.update({"path": self.onnx_path, "parity": self.parity_rows,
                                 "batch_invariance_max_abs": self.batch_invariance})
        return self.export_info

    def open_session(self):
        """The backend session the evaluation runs on (or the result-file reader for ``backend='bins'``)."""
        self._needs("model")
        if self.backend == "bins":
            if self.results_dir is None:
                raise ZooinferError("backend='bins' needs results_dir= (the folder ais_bench/benchmark wrote)")
            first = next(iter(self.dataset))
            views, _ = self.recipe.preprocess(first.path)
            shapes = [o.shape for o in sample_outputs(open_session("torch", model=self.model).run(views[0][None]), 1, 0)]
            self.session = OutputReader(self.results_dir, shapes, views=len(views))
        else:
            self.session = self._inference_session(self.backend)
        return self.session

    def _inference_session(self, backend: str):
        """A new session of ``backend`` with this run's settings (exports the ONNX file first if needed)."""
        if backend in ("torch", "torch-cuda"):
            return open_session(backend, model=self.model, threads=self.threads, device_id=self.device_id)
        if backend == "acl":
            return open_session("acl", om_path=self.om_path, device_id=self.device_id)
        if self.onnx_path is None:
            self.export()
        return open_session(backend, onnx_path=self.onnx_path, threads=self.threads, fp16=self.fp16,
                            device_id=self.device_id)

    def evaluate(self) -> pipeline.RunResult:
        """Stream the dataset through preprocess -> backend -> postprocess -> metric."""
        self._needs("dataset")
        if self.workers > 1 or self.ray_address:
            from .distributed import evaluate_distributed  # Ray is optional: imported only when asked for

            self.result = evaluate_distributed(self)
            return self.result
        if self.session is None:
            self.open_session()
        self.result = pipeline.run(self.recipe, self.dataset, self.session, bs=self.bs, workers=self.prep_threads,
                                   limit=self.limit, progress=self.progress, keep=self.keep)
        if self.result.skipped:
            warnings.warn(f"{len(self.result.skipped)} images skipped (unreadable); first: "
                          f"{self.result.skipped[0][1]}: {self.result.skipped[0][2]}", stacklevel=2)
        return self.result

    def accuracy(self) -> list[dict]:
        """Headline metrics next to the published figures (percent)."""
        self._needs("result")
        return report.accuracy_rows(self.result.metrics, self.recipe.published, self.recipe.headline)

    def benchmark(self, batch_sizes: Sequence[int] = (1, 8), backends: Sequence[str] | None = None,
                  min_time: float = 1.0, min_iters: int = 3, warmup: int = 1) -> list[dict]:
        """Pure-inference sweep per backend (default: this run's backend, plus PyTorch eager for the ratio)."""
        self._needs("model")
        wanted = list(backends) if backends is not None else list(dict.fromkeys([self.backend, "torch"]))
        samples = self.parity_inputs(4)
        rows = []
        for b in wanted:
            if b == "bins":
                continue
            sess = self.session if b == self.backend and self.session is not None else self._inference_session(b)
            rows += bench.inference_sweep(sess, samples, batch_sizes, min_time=min_time, min_iters=min_iters,
                                          warmup=warmup)
        self.bench_rows = rows
        return rows

    def best_batch(self) -> int | None:
        """The swept batch size with the highest pure-inference throughput on this run's backend (``benchmark()``)."""
        return bench.best_batch([r for r in self.bench_rows if r["backend"] == self.backend])

    def profile(self, top: int = 10, runs: int = 3) -> list[dict]:
        """ONNX Runtime per-operator profile of ``runs`` batches of ``bs`` real samples: the ``top`` operator types
        by time (ms per run, share of the profiled time). Same function as ``benchmarks/run.py --profile``."""
        self._needs("model")
        if self.onnx_path is None:
            self.export()
        batch = bench.make_batch(self.parity_inputs(4), self.bs)
        self.profile_rows = bench.profile_top_ops(self.onnx_path, batch, runs=runs, top=top, threads=self.threads)
        return self.profile_rows

    def ratios(self) -> dict[str, float | None]:
        """ONNX Runtime / PyTorch eager throughput per batch size, and end-to-end / pure inference at this bs."""
        by = {(r["backend"], r["bs"]): r["throughput"] for r in self.bench_rows}
        out: dict[str, float | None] = {}
        for (b, bs), tp in by.items():
            if b != "torch" and ("torch", bs) in by:
                out[f"{b}_vs_torch_bs{bs}"] = tp / by[("torch", bs)]
        pure = by.get((self.backend, self.bs))
        if self.result is not None and pure:
            out[f"end_to_end_vs_pure_bs{self.bs}"] = self.result.throughput / pure
        if self.result is not None and self.result.timer.items["infer"]:
            out["inference_share_of_wall"] = self.result.inference_share
        return out

    def ascend_commands(self, soc_version: str | None = None) -> dict[str, str]:
        """The atc and ais_bench command lines for this model at this batch size (Ascend users)."""
        soc = soc_version or self.recipe.atc.get("soc_version", "Ascend310P3")
        onnx_file = self.onnx_path or f"{self.recipe.name}.onnx"
        om = f"{self.recipe.name}_bs{self.bs}"
        return {
            "write_inputs": f"zooinfer bins {self.recipe.name} --data-root <data_root> --out ./prep_bin",
            "atc": export.atc_command(self.recipe, onnx_file, self.bs, soc_version=soc, output=om),
            "ais_bench": export.ais_bench_command(f"{om}.om", "./prep_bin", "./result", self.bs),
            "evaluate": f"papermill notebooks/{self.recipe.name}.ipynb out.ipynb -p backend bins "
                        f"-p results_dir ./result/subdir -p data_root <data_root>",
        }

    # ------------------------------------------------------------------------------------------------ report
    def metrics_document(self) -> dict:
        """Everything metrics.json holds."""
        ok, why = self.meaningful()
        r = self.recipe
        res = self.result
        doc = {
            "model": r.name, "task": r.task,
            "accuracy_meaningful": ok, "not_meaningful_because": why or None,
            "accuracy": res.metrics if res else None,
            "published": {"reference": r.published.accuracy, "source": r.published.source,
                          "other": [{"source": s, **v} for s, v in r.published.other]},
            "accuracy_vs_published": self.accuracy() if res else None,
            "throughput": self.bench_rows,
            "best_batch_size": self.best_batch(),
            "ratios": self.ratios(),
            "onnxruntime_profile": self.profile_rows or None,
            "stage_timings": res.stage_table() if res else None,
            "end_to_end": {"images_per_s": res.throughput, "wall_s": res.wall_s, "bs": res.batch_size} if res else None,
            "workers": res.workers if res else None,
            "skipped": {"count": len(res.skipped), "images": [{"key": k, "path": p, "reason": why_}
                                                               for k, p, why_ in res.skipped]} if res else None,
            "onnx": self.export_info,
            "checkpoint": {"file": self.weights or "synthetic", "md5": self.weights_md5,
                           "published_file": r.checkpoint_file, "published_md5": r.checkpoint_md5},
            "dataset": {"root": str(self.dataset.root) if self.dataset else None, "embedded": self.embedded,
                        "images": res.n_samples if res else None, "evaluated": res.n_done if res else None,
                        "limit": self.limit,
                        "rejected_files": [{"path": p, "reason": w} for p, w in getattr(self.dataset, "rejected", [])]},
            "backend": {"name": self.backend, "device": getattr(self.session, "device", None),
                        "providers": getattr(self.session, "providers", None),
                        "threads": getattr(self.session, "threads", None)},
            "ascend_commands": self.ascend_commands(),
            "notes": list(r.notes),
            "parameters": self.params,
            "environment": report.environment(),
        }
        return doc

    def finish(self) -> Path:
        """Write metrics.json and the plots into the run folder and mark it complete; returns its path."""
        self.run_dir = report.RunDir(self.recipe.name, self.output_root)
        report.write_json(self.run_dir.file("metrics.json"), self.metrics_document())
        if self.bench_rows:
            import matplotlib.pyplot as plt

            fig = report.plot_throughput(self.bench_rows, self.run_dir.file("throughput_latency.png"),
                                         title=f"{self.recipe.name} on this machine",
                                         published=self.recipe.published.performance)
            plt.close(fig)
        return self.run_dir.finalize()
