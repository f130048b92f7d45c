"""Run folders, the banner, metrics.json, environment manifest, tables, plots and the rendered HTML.

A run writes into ``outputs/<model>/.<run-id>.partial/`` and is renamed to ``outputs/<model>/<run-id>/`` only when
complete, so nothing half-written looks finished. When the CLI drives papermill it owns that rename (it adds the
executed notebook and its HTML first): it passes the partial folder as the notebook's ``run_dir`` parameter.
:func:`metrics_document` builds what metrics.json holds from the run's configuration, recipe and step results.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
import warnings
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np

from .errors import OutputError
from .parameters import default_output_root  # noqa: F401 - its home is below config; the name stays here too

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .config import RunConfig
    from .recipes.base import Recipe

PACKAGES = ("zooinfer", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "numpy", "opencv-python-headless",
            "opencv-python", "pillow", "pycocotools", "scipy", "papermill", "ray", "openvino", "nncf", "aclruntime",
            "ais_bench")


#: a run that skipped more than this share of its images says so in its first lines (metrics.json
#: ``skipped.too_many``, the accuracy section) and ``zooinfer run`` exits with :data:`EXIT_TOO_MANY_SKIPPED`
SKIP_THRESHOLD = 0.05
EXIT_TOO_MANY_SKIPPED = 3


def skipped_summary(skipped: list, total: int) -> str | None:
    """One line on the images a run skipped (unreadable, or named by the ground truth and missing on disk), or
    None when none was."""
    if not skipped:
        return None
    share = len(skipped) / total if total else 1.0
    key, path, reason = skipped[0]
    line = (f"{len(skipped)} of {total} images skipped ({100 * share:.1f}%), not evaluated; first: {path}: {reason}")
    if share > SKIP_THRESHOLD:
        line += f". More than {100 * SKIP_THRESHOLD:.0f}% of the images: the accuracy does not describe the dataset"
    return line


_RUN_IDS: set[str] = set()


def new_run_id(model: str) -> str:
    """``<yyyymmdd-hhmmss>-<model>-<pid>``; a second run of this process in the same second gets ``-2``, ``-3``...
    before the pid (which run made a folder; whether it still runs is its lock's to say: ``store.RunLock``)."""
    stamp = f"{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{model}"
    run_id, n = f"{stamp}-{os.getpid()}", 1
    while run_id in _RUN_IDS:
        n += 1
        run_id = f"{stamp}-{n}-{os.getpid()}"
    _RUN_IDS.add(run_id)
    return run_id


class RunDir:
    """A run's output folder, written in place under a partial name and renamed by :meth:`finalize`.

    ``path``: a partial folder the caller owns (``zooinfer run`` passes its own as the ``run_dir`` parameter, and
    renames it itself after adding the executed notebook and the HTML); else ``<root>/<model>/.<run-id>.partial``.
    """

    def __init__(self, model: str, root: str | os.PathLike | None = None, run_id: str | None = None, *,
                 path: str | os.PathLike | None = None, owned: bool | None = None):
        """``owned``: whether :meth:`finalize` renames a given ``path`` (default: only a folder made here; a run that
        resumes an interrupted run's partial folder by itself owns it)."""
        self.owned = path is None if owned is None else owned
        if path is not None:
            self.path = Path(path)
            self.final = self.path.with_name(self.path.name.lstrip(".").removesuffix(".partial"))
        else:
            self.run_id = run_id or new_run_id(model)
            self.final = Path(root or default_output_root()) / model / self.run_id
            self.path = self.final.with_name(f".{self.run_id}.partial")
        self.path.mkdir(parents=True, exist_ok=True)

    def file(self, name: str) -> Path:
        return self.path / name

    def finalize(self) -> Path:
        """Rename the partial folder to its final name (unless the caller owns it); returns the final path. A
        folder that cannot be renamed stays partial (an OutputError names both)."""
        if not self.owned:
            return self.final
        try:
            if self.final.exists():
                shutil.rmtree(self.final)
            self.path.rename(self.final)
        except OSError as e:
            raise OutputError(f"could not rename {self.path} to {self.final}: {os_reason(e)}; the run folder stays "
                              f"{self.path} (incomplete)") from None
        self.path = self.final
        return self.final


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    from .cpu import cpu_name

    return cpu_name()


def _cpu_flags() -> tuple[str, ...]:
    from .cpu import isa_flags

    return isa_flags()


def _git_revision() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain"], capture_output=True, text=True,
                               timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _gpus() -> list[str]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return [line.strip() for line in out.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        return []


def environment() -> dict[str, Any]:
    """Versions, hardware and execution providers of this machine (for metrics.json)."""
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
    except ImportError:
        providers = []
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "python": sys.version.split()[0], "platform": platform.platform(), "cpu": _cpu_name(), "cpus": cpus,
        "cpu_flags": list(_cpu_flags()),
        "gpus": _gpus(), "onnxruntime_providers": providers, "git_revision": _git_revision(),
        "packages": {p: v for p in PACKAGES if (v := _version(p))},
    }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def os_reason(error: OSError) -> str:
    """'[Errno 28] No space left on device': an OSError without the file name it repeats."""
    return f"[Errno {error.errno}] {error.strerror}" if error.errno else str(error)


def write_failed(path: str | os.PathLike, error: OSError) -> OutputError:
    """The clear error for an output file that could not be written: the file and the OS error."""
    return OutputError(f"could not write {path}: {os_reason(error)}")


@contextmanager
def artefact(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """A file of the run's output written whole or not at all: yields a file open on a temporary name beside
    ``path`` (same suffix), renamed onto ``path`` when the block ends. On an OSError (a full disk, no permission)
    the temporary file is removed, a file already at ``path`` is kept, and an OutputError names ``path`` and the
    OS error."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        os.replace(tmp, path)
    except OSError as e:
        raise write_failed(path, e) from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as indented JSON (numpy values converted), atomically (:func:`artefact`)."""
    text = json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n"
    with artefact(path) as f:
        f.write(text)


def write_report_folder(final: str | os.PathLike, doc: dict, markdown: str, what: str, advice: str = "") -> Path:
    """``metrics.json`` (``doc``) and ``report.md`` (``markdown``) into the folder ``final``, written under a
    temporary name and renamed (a folder of the same name is replaced): a refused write (a read-only or full disk) is
    an OutputError naming the folder, ``what`` was being written and ``advice``, and leaves nothing half-written."""
    final = Path(final)
    partial = final.with_name(f".{final.name}.partial")
    try:
        partial.mkdir(parents=True, exist_ok=True)
        write_json(partial / "metrics.json", doc)
        with artefact(partial / "report.md") as f:
            f.write(markdown)
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
    except (OSError, OutputError) as e:
        shutil.rmtree(partial, ignore_errors=True)
        why = (e.strerror or str(e)) if isinstance(e, OSError) else str(e)
        raise OutputError(f"cannot write {what} into {final.parent} ({why}); the run itself is unchanged. Make the "
                          "folder writable or free space" + (f", {advice}" if advice else "")) from None
    return final


def read_json_object(path: str | os.PathLike) -> dict:
    """The JSON object in ``path``; a ValueError saying why not (unreadable, not JSON: a torn or edited file, or not
    an object), for the caller to name the file in its own words."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot be read ({e})") from None
    except ValueError as e:
        raise ValueError(f"not valid JSON ({e}; a torn or edited file)") from None
    if not isinstance(doc, dict):
        raise ValueError(f"expected a JSON object, got a {type(doc).__name__}")
    return doc


def accuracy_rows(metrics: dict[str, float], published: Any, headline: Iterable[str],
                  intervals: dict | None = None) -> list[dict]:
    """Ours vs the published reference (and other published revisions), in percent, with the delta; with
    ``intervals`` ({metric: (lo, hi)} fractions, a subset's 95% intervals) also ``ci95_%`` and whether the
    reference lies inside it."""
    rows = []
    for k in headline:
        ours = metrics.get(k)
        ref = published.accuracy.get(k)
        row = {"metric": k, "ours_%": None if ours is None else round(100 * ours, 2),
               "published_%": None if ref is None else round(100 * ref, 3),
               "delta_pts": None if ours is None or ref is None else round(100 * (ours - ref), 2)}
        if intervals is not None:
            ci = intervals.get(k)
            row["ci95_%"] = None if ci is None or ci[0] is None else f"[{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]"
            row["published_in_ci"] = None if ci is None or ci[0] is None or ref is None else \
                bool(ci[0] <= ref <= ci[1])
        for label, vals in published.other:
            if k in vals:
                row[label] = round(100 * vals[k], 2)
        rows.append(row)
    return rows


def meaningful(config: "RunConfig", recipe: "Recipe | None" = None) -> tuple[bool, str]:
    """Whether the run's accuracy can be compared with the published figures, and why not (the reasons joined).
    ``recipe``: also the variant's own reason (e.g. PyramidBox letterboxed into another canvas than the guide's)."""
    why = []
    if config.synthetic:
        why.append("the weights are deterministic synthetic weights (no checkpoint given: weights=...)")
    if config.embedded:
        why.append("the data is the tiny embedded sample (no data_root given)")
    if config.limit is not None:
        why.append(f"only the first {config.limit} images are evaluated (limit={config.limit})")
    if config.subset is not None:
        why.append(f"a random subset of {config.subset} images is evaluated (subset={config.subset}, "
                   f"seed={config.seed}): the figures are estimates, each with its 95% interval")
    if recipe is not None and recipe.incomparable_because:
        why.append(recipe.incomparable_because)
    return (not why, "; ".join(why))


def banner_text(config: "RunConfig", recipe: "Recipe", parity_failure: str | None = None) -> str:
    """The report's first lines (markdown): what this run is and whether its accuracy means anything;
    ``parity_failure`` (``ExportResult.parity_failure``, known once the ONNX file is checked) comes first."""
    ok, why = meaningful(config, recipe)
    lines = [f"## {recipe.name}: {recipe.task}, input {recipe.input_shape}, backend `{config.backend}`, "
             f"bs {config.bs}"]
    if parity_failure:
        detail = parity_failure.removeprefix("parity failed: ")
        lines.append(f"**Parity failed:** {detail}. The figures below are not this model's." +
                     (" No verdict is given." if ok else ""))
    if not ok:
        lines.append(f"**Accuracy is NOT meaningful in this run:** {why}. The numbers below only show that the "
                     "chain runs end to end. Pass `weights=` (the published checkpoint file) and `data_root=` "
                     "(the real dataset) for the real figures. No verdict is given.")
    elif not parity_failure:
        rule = recipe.published.acceptance
        lines.append(f"Real checkpoint `{config.weights}` on `{config.data_root}`: accuracy is compared with the "
                     f"published figures ({recipe.published.source}); the verdict (PASS/FAIL, after the evaluation "
                     f"and at the top of metrics.json) follows {rule.source}.")
    return "\n\n".join(lines)


def judged(config: "RunConfig", recipe: "Recipe", res: Any, exported: Any = None) -> tuple[bool, str]:
    """``meaningful`` for a finished run: also not meaningful when more than ``SKIP_THRESHOLD`` of it was skipped,
    or when the ONNX file failed parity with the model (``exported``: the ``ExportResult``; that reason first)."""
    ok, why = meaningful(config, recipe)
    if res and res.n_samples and len(res.skipped) / res.n_samples > SKIP_THRESHOLD:
        ok, why = False, "; ".join(filter(None, [why, skipped_summary(res.skipped, res.n_samples)]))
    parity_failure = getattr(exported, "parity_failure", None)
    if parity_failure:
        ok, why = False, "; ".join(filter(None, [parity_failure, why]))
    return ok, why


def verdict_document(config: "RunConfig", recipe: "Recipe", res: Any, exported: Any = None) -> dict:
    """The verdict of a finished run (``zooinfer.verdict.judge``), or none and why (``judged``)."""
    from . import verdict

    ok, why = judged(config, recipe, res, exported)
    return verdict.judge(res.metrics, recipe.published, recipe.headline, reasons=[] if ok else [why])


def metrics_document(config: "RunConfig", recipe: "Recipe", steps: Any,
                     environment_info: dict | None = None) -> dict:
    """Everything metrics.json holds, from the run's ``config``, its ``recipe`` and ``steps`` (the latest result of
    each step: ``prepared``, ``exported``, ``run``, ``session_info``, ``benchmark``, ``profile``; see
    ``zooinfer.evaluation.StepResults``). ``environment_info``: default :func:`environment` of this machine."""
    from . import bench, export

    ok, why = judged(config, recipe, steps.run, steps.exported)
    r = recipe
    res = steps.run
    prepared = steps.prepared
    skipped = None
    if res:
        share = len(res.skipped) / res.n_samples if res.n_samples else 0.0
        skipped = {"count": len(res.skipped), "of": res.n_samples, "share": round(share, 4),
                   "too_many": share > SKIP_THRESHOLD, "threshold": SKIP_THRESHOLD,
                   "summary": skipped_summary(res.skipped, res.n_samples),
                   "images": [{"key": k, "path": p, "reason": why_} for k, p, why_ in res.skipped]}
    md5_matches = prepared.md5_matches if prepared is not None else None
    dataset = prepared.dataset if prepared is not None else None
    bench_rows = list(steps.benchmark)
    session = steps.session_info or {}
    onnx_path = steps.exported.path if steps.exported is not None else config.onnx_path
    return {
        "model": r.name, "task": r.task,
        "accuracy_meaningful": ok, "not_meaningful_because": why or None,
        "verdict": verdict_document(config, r, res, steps.exported) if res else None,
        "skipped": skipped,
        "md5_matches": md5_matches,
        "accuracy": res.metrics if res else None,
        "published": {"reference": r.published.accuracy, "source": r.published.source,
                      "other": [{"source": s, **v} for s, v in r.published.other]},
        "accuracy_vs_published": accuracy_rows(res.metrics, r.published, r.headline,
                                               getattr(res, "intervals", None)) if res else None,
        "intervals_95": getattr(res, "intervals", None) if res else None,
        "per_class": getattr(res, "per_class", None) if res else None,
        "throughput": bench_rows,
        "best_batch_size": bench.best_batch([row for row in bench_rows if row["backend"] == config.backend]),
        "ratios": bench.ratios(bench_rows, config.backend, config.bs, res),
        "onnxruntime_profile": list(steps.profile) or None,
        "stage_timings": res.stage_table() if res else None,
        "end_to_end": {"images_per_s": res.throughput, "wall_s": res.wall_s, "bs": res.batch_size} if res else None,
        "shards": res.shards if res else None,
        "repeated_chunks": [c for c in res.chunks if c.get("attempts", 1) > 1] if res and res.chunks else None,
        "predictions": getattr(res, "stored", None) if res else None,
        "onnx": steps.exported.as_dict() if steps.exported is not None else {},
        "checkpoint": {"file": config.weights or "synthetic",
                       "md5": prepared.weights_md5 if prepared is not None else None,
                       "published_file": r.checkpoint_file, "published_md5": r.checkpoint_md5,
                       "md5_matches": md5_matches},
        "dataset": {"root": str(dataset.root) if dataset else None, "embedded": config.embedded,
                    "images": res.n_samples if res else None, "evaluated": res.n_done if res else None,
                    "selection": "subset" if config.subset else "limit" if config.limit else "full",
                    "selection_note": getattr(prepared, "selection_note", None),
                    "limit": config.limit, "subset": config.subset, "seed": config.seed if config.subset else None,
                    "subset_keys": [s.key for s in config.select(dataset)] if dataset and config.subset else None,
                    "rejected_files": [{"path": p, "reason": w} for p, w in getattr(dataset, "rejected", [])]},
        "backend": {"name": config.backend, "device": session.get("device"), "providers": session.get("providers"),
                    "threads": session.get("threads")},
        "ascend_commands": export.ascend_commands(r, onnx_path, config.bs),
        "notes": list(r.notes),
        "parameters": {k: v for k, v in config.parameters().items() if k != "run_dir"},
        **{name: doc for name, doc in getattr(steps, "sections", ())},
        "environment": environment() if environment_info is None else environment_info,
    }


def markdown_table(rows: list[dict], columns: list[str] | None = None, floatfmt: str = "{:.4g}") -> str:
    """A GitHub-markdown table of ``rows`` (dicts), shown in notebooks and written into README tables."""
    if not rows:
        return "_(no rows)_"
    cols = columns or list(dict.fromkeys(k for r in rows for k in r))

    def fmt(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return floatfmt.format(v)
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _in_notebook() -> bool:
    """Whether this runs in IPython (a notebook's kernel), where output is displayed rather than printed."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


def show(rows: list[dict] | str, title: str | None = None, columns: list[str] | None = None, *,
         display_id: str | None = None, update: bool = False) -> None:
    """Display a table (or markdown text) in a notebook; print it elsewhere. ``display_id``: a name for the
    output, so that ``update=True`` later replaces it where it was first shown (e.g. the banner, once the export
    knows more); outside a notebook an update prints nothing (the first text was printed)."""
    text = rows if isinstance(rows, str) else markdown_table(rows, columns)
    if title:
        text = f"**{title}**\n\n{text}"
    if _in_notebook():
        from IPython.display import Markdown, display, update_display

        if update and display_id is not None:
            update_display(Markdown(text), display_id=display_id)
        else:
            display(Markdown(text), display_id=display_id)
    elif not update:
        print(text)


def note_line(message: Any, category: type[Warning] = UserWarning, *, markdown: bool = False) -> str:
    """A warning in the report's words: 'note: ...' (with the kind of warning unless it is a plain UserWarning),
    without the source file and line Python's own format adds; ``markdown``: '**Note:** ...'."""
    head = "note" + ("" if category is UserWarning else f" ({category.__name__})")
    return f"**N{head[1:]}:** {message}" if markdown else f"{head}: {message}"


def _show_note(message: Any, category: type[Warning], filename: str, lineno: int, file: IO | None = None,
               line: str | None = None) -> None:
    """``warnings.showwarning`` of :func:`warnings_as_notes`."""
    if file is None and _in_notebook():
        show(note_line(message, category, markdown=True))
    else:
        print(note_line(message, category), file=sys.stderr if file is None else file)


def warnings_as_notes() -> None:
    """Show Python warnings as the report's notes (:func:`note_line`): in a notebook a '**Note:** ...' line among
    the cell's outputs, elsewhere 'note: ...' on stderr; never Python's 'path/to/file.py:467: UserWarning: ...' and
    its source line. The notebooks' set-up cell calls it (the command line has its own 'warning: ...' lines)."""
    warnings.showwarning = _show_note


def plot_throughput(rows: list[dict], path: str | os.PathLike | None = None, title: str = "", published=()):
    """Throughput (samples/s) vs batch size per backend, with published rows as dashed lines; saved as PNG."""
    import matplotlib

    if path is not None and "ipykernel" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for backend in dict.fromkeys(r["backend"] for r in rows):
        rs = sorted((r for r in rows if r["backend"] == backend), key=lambda r: r["bs"])
        ax1.plot([r["bs"] for r in rs], [r["throughput"] for r in rs], "o-", label=f"{backend} (this machine)")
        for q, style in (("p50", "o-"), ("p90", "s--"), ("p99", "^:")):
            ax2.plot([r["bs"] for r in rs], [r[f"latency_ms_{q}"] for r in rs], style, label=f"{backend} {q}")
    for row in published:
        bss = sorted(row.fps)
        ax1.plot(bss, [row.fps[b] for b in bss], "x--", alpha=0.6, label=f"published: {row.hardware}")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.grid(True, alpha=0.3)
    ax1.set_yscale("log")
    ax1.set_ylabel("throughput (images/s)")
    ax2.set_ylabel("latency per batch (ms)")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a matplotlib figure whole or not at all (:func:`artefact`), in the format its suffix names."""
    with artefact(path, "wb") as f:
        fig.savefig(f, format=Path(path).suffix.lstrip(".") or "png", dpi=dpi)
    return Path(path)


def render_html(notebook: str | os.PathLike, html: str | os.PathLike, *, code: bool = True) -> Path:
    """Render an executed notebook as HTML: the full notebook, or with ``code=False`` the report a reader hands on
    (``jupyter nbconvert --no-input``: no code cells and no prompts, only their outputs and the markdown)."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter() if code else HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                                                        exclude_output_prompt=True)
    body, _ = exporter.from_filename(str(notebook))
    with artefact(html) as f:  # never a truncated page under the final name (a full disk: an OutputError)
        f.write(body)
    return Path(html)
