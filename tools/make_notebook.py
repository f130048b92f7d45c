#!/usr/bin/env python3
"""Write every model's notebook, notebooks/<model>.ipynb, from ONE template (this file) and the model's recipe.

The template is the list of cells below; what differs per model comes from its recipe
(``zooinfer.recipes.get(name)``): name, task, checkpoint file and published figures, and its ``NotebookSpec``
(title, guide, intro, parameter defaults and options, comments, results-section text). A change to the template is a
change to this file; run it, and every notebook follows. The output is deterministic (fixed cell ids, no outputs, no
execution counts), so ``--check`` (and tests/tools/test_make_notebook.py) can tell a stale notebook byte for byte.

usage: python tools/make_notebook.py [--check] [--out DIR] [MODEL ...]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any, Sequence

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
WIDTH = 117  # markdown and code lines are wrapped below this (the project's line length is 120)

# ---------------------------------------------------------------------------------------------------- template
#: The parameters cell: (name, default, comment). ``{checkpoint_file}`` is the recipe's; ``data_root``'s comment is
#: the NotebookSpec's; the model's options (``NotebookSpec.extra``) are inserted after ``limit``.
PARAMETERS: tuple[tuple[str, Any, str], ...] = (
    ("model", "{name}", "the recipe this notebook runs (zooinfer.recipes.get(model))"),
    ("weights", None, "the published checkpoint file as downloaded ({checkpoint_file}), None for synthetic weights"),
    ("data_root", None, "{data_root_help}"),
    ("backend", "onnxruntime", "{backends}"),
    ("bs", 8, "batch size of the evaluation run"),
    ("limit", None, "evaluate only the first N images (None: all)"),
    ("subset", None, "evaluate a random N images instead (figures with 95% intervals; None: all)"),
    ("seed", 0, "the seed that draws the subset"),
    ("resume", None, "an interrupted run's folder to continue (only the samples it did not store run)"),
    ("static_batch", False, "export the ONNX graph with a fixed batch of bs (as the OM files are)"),
    ("precision", "fp32", "fp32, or fp16 where the backend can run it (ort-tensorrt)"),
    ("batch_sizes", [1, 8], "pure-inference sweep"),
    ("bench_min_time", 1.0, "seconds per batch size in the sweep"),
    ("profile_ops", False, "add the ONNX Runtime per-operator profile (top operators by time)"),
    ("prep_threads", None, "preprocessing threads per process (None: a quarter of the CPUs; GPU/NPU: all but one)"),
    ("prep_processes", None, "preprocess in N worker processes instead of threads (None: threads)"),
    ("processes", 1, "Ray workers evaluating chunks of the dataset (more than 1 uses Ray; formerly workers)"),
    ("ray_address", None, "Ray cluster to join (auto, or host:port), None for a local Ray instance"),
    ("threads", None, "inference threads (None: physical cores)"),
    ("device_id", 0, "GPU / NPU index for ort-cuda, ort-tensorrt, torch-cuda and acl"),
    ("om_path", None, "for backend acl: the .om file atc produced"),
    ("results_dir", None, "for backend bins: the folder ais_bench or benchmark wrote"),
    ("output_root", None, "parent of outputs/<model>/<run-id>/ (None: outputs/ of this checkout)"),
    ("run_dir", None, "the run folder to write into (zooinfer run sets it); None: a new one under output_root"),
    ("progress", True, "progress bar while evaluating (a live widget in JupyterLab when ipywidgets is installed)"),
    ("compare", [], "variants beside the reference, e.g. [\"onnxruntime-fp16\", \"onnxruntime-int8\"]; [] skips"),
    ("calibration", 8, "INT8 calibration images (the first N of the dataset)"),
    ("tune", False, "also the precision search: the fastest passing configuration, layers kept in fp32"),
    ("budget", None, "the search's largest relative metric drop, a fraction (None: the guides' rule, 0.01)"),
    ("rank_subset", 64, "samples the search ranks layers on (the first N of the run's)"),
    ("scenarios", [], "MLPerf LoadGen scenarios, e.g. [\"SingleStream\", \"Offline\", \"Server\"]; [] skips"),
    ("latency_bound_ms", None, "the Server scenario's p99 bound in ms (None: 3x the SingleStream p90)"),
    ("audits", [], "MLPerf compliance audits after the scenarios, e.g. [\"TEST01\", \"TEST04\", \"TEST05\"]; [] skips"),
    ("repeats", 1, "evaluate the selection N times in all (fresh sessions): flips and metric spreads; 1 skips"),
)
#: the model options go after this parameter, the metric parameters (``Recipe.metric_options``) after the model options
OPTIONS_AFTER = "limit"

INTRO = """# {title}: checkpoint -> ONNX -> {steps} -> speed

{replaces}

```
{commands}
```
{facts}"""

RUN_IT = "Run it here (edit the parameters cell, then run all cells) or headlessly:"
REPLACES = "Replaces the Ascend ModelZoo guide `{guide}` ({guide_steps}). " + RUN_IT
#: the intro's first paragraph for a model whose NotebookSpec names no guide
NO_GUIDE = "No Ascend ModelZoo guide covers this model: the recipe is the whole reference. " + RUN_IT

FACTS = ("Published reference: {published}. Source: {source}. Every fact ({facts}, published figures) comes from "
         "the recipe, `zooinfer.models.{name}.recipe`; the accuracy section compares with every published revision.")

SETUP = """from zooinfer import report, viz
from zooinfer.evaluation import Evaluation

report.warnings_as_notes()  # a warning reads as one 'Note: ...' line in the report (no source path)
ev = Evaluation.from_parameters(dict(
{arguments}))
ev.banner()
viz.show_caveats(ev);"""

PREPARE = """info = ev.prepare()
report.show([info], "Checkpoint and dataset")"""

EXPORT = """onnx_info = ev.export()
report.show([{k: onnx_info[k] for k in ("path", "opset", "inputs", "outputs", "size_mb")}], "ONNX file")
report.show(onnx_info["parity"], "Parity: PyTorch eager vs ONNX Runtime on real preprocessed samples")
print("batch invariance (max abs, batch vs one at a time):", onnx_info["batch_invariance_max_abs"])"""

EVALUATE = """result = ev.evaluate()
report.show(ev.accuracy(), "Accuracy vs published")
ev.verdict()
report.show(result.stage_table(), "Stage timings (summed per stage; stages overlap in wall time)")
if result.skipped:
    report.show([{"key": k, "path": p, "reason": r} for k, p, r in result.skipped], "Skipped images")"""

#: the results section's heading per recipe task (its text is the NotebookSpec's ``results_help``)
RESULTS_TITLES = {"classification": "Predictions", "detection": "Detections", "face_detection": "Faces",
                  "reid": "Re-identification"}

RESULTS = """viz.show_results(ev, result);"""

BENCH = """rows = ev.benchmark()  # ev.config.batch_sizes, ev.config.bench_min_time
report.show(rows, "Pure inference per batch size", ["backend", "bs", "throughput", "latency_ms_p50",
                                                     "latency_ms_p90", "latency_ms_p99", "cv", "unstable",
                                                     "distinct_batches", "outputs_checked"])
print(f"best batch size for {ev.config.backend} on this machine: {ev.best_batch()} (of {sorted(set(r['bs'] for r in rows))})")
report.show([{"ratio": k, "value": round(v, 3)} for k, v in ev.ratios().items()], "Ratios")
if ev.config.profile_ops:
    report.show(ev.profile(), f"ONNX Runtime per-operator profile, bs {ev.config.bs} (top operators by time)")
report.show([{"hardware": p.hardware, "source": p.source, **{f"bs{b}": f for b, f in p.fps.items()}}
             for p in ev.recipe.published.performance], "Published throughput (images/s)")
report.plot_throughput(rows, title=f"{model}: this machine vs published", published=ev.recipe.published.performance);"""

PRECISION = """if ev.config.compare:  # the variants run on the same samples as the evaluation
    ev.backends_and_precision();
else:
    print("skipped: no variants given (e.g. -p compare '[onnxruntime-fp16, onnxruntime-int8]')")
if ev.config.tune:  # the fastest configuration that still passes; the layers to keep in fp32 for each toolchain
    from zooinfer import sections
    sections.precision_search(ev);"""

REPEAT = """if ev.config.repeats > 1:  # the run's own evaluation is the first; the others run in fresh sessions
    from zooinfer import repeat
    repeat.repeatability(ev);
else:
    print("skipped: one evaluation (e.g. -p repeats 3 tells non-determinism apart from a regression)")"""

LOAD = """if ev.config.scenarios:  # LoadGen's durations are short on the embedded sample
    ev.under_load();
else:
    print("skipped: no LoadGen scenarios given (e.g. -p scenarios '[SingleStream, Offline, Server]')")"""

ASCEND = """report.show("\\n".join(f"- {k}: `{v}`" for k, v in ev.ascend_commands().items()), "Ascend NPU path")"""

FINISH = """folder = ev.finish()
print("report written to", folder)"""

#: (cell id, heading, code) after the intro and the parameters cell; the heading's cell gets the id + "-md".
#: The results heading and code are filled per task.
SECTIONS = (
    ("setup", "## Set-up", SETUP),
    ("prepare", "## Checkpoint and dataset", PREPARE),
    ("export", "## ONNX export", EXPORT),
    ("accuracy", "## Accuracy", EVALUATE),
    ("results", None, RESULTS),
    ("repeat", "## Repeatability", REPEAT),
    ("speed", "## Speed", BENCH),
    ("precision", "## Backends and precision", PRECISION),
    ("load", "## Under load", LOAD),
    ("ascend", "## Ascend", ASCEND),
    ("report", "## Report", FINISH),
)

NOTEBOOK_METADATA = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                     "language_info": {"name": "python"}}


# ---------------------------------------------------------------------------------------------------- filling in
def literal(value: Any) -> str:
    """``value`` as Python source in a parameters cell: strings double-quoted, lists as lists."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    raise TypeError(f"parameter default {value!r} is not a None/bool/number/string/list literal")


_BLOCK_START = re.compile(r"^(#|>|[-+*] |\d+[.)] |```|=+$|-+$)")


def wrap(text: str, width: int = WIDTH) -> str:
    """One markdown paragraph wrapped below ``width`` characters, never breaking where the next line would start a
    heading, quote, list item or fence (it is joined to the line before instead)."""
    lines: list[str] = []
    for line in textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False):
        if lines and _BLOCK_START.match(line):
            lines[-1] += " " + line
        else:
            lines.append(line)
    return "\n".join(lines)


def parameters(recipe: Any) -> list[tuple[str, Any, str]]:
    """The (name, default, comment) rows of ``recipe``'s parameters cell, in order."""
    spec = recipe.notebook
    defaults = dict(spec.defaults)
    comments = dict(spec.comments)
    known = {n for n, _, _ in PARAMETERS}
    unknown = (set(defaults) | set(comments)) - known
    if unknown:
        raise ValueError(f"{recipe.name}: NotebookSpec names parameters the template does not have: {sorted(unknown)}")
    from zooinfer.backends import BACKENDS

    facts = {"name": recipe.name, "checkpoint_file": recipe.checkpoint_file, "data_root_help": spec.data_root_help,
             "backends": " | ".join(BACKENDS)}
    rows = []
    for name, default, comment in PARAMETERS:
        value = defaults[name] if name in defaults else (default.format(**facts) if isinstance(default, str)
                                                         else default)
        rows.append((name, value, comments[name] if name in comments else comment.format(**facts)))
        if name == OPTIONS_AFTER:
            rows += [(n, v, c) for n, v, c in spec.extra]
            rows += [(n, v, c) for n, v, c in recipe.metric_options]
    return rows


def parameters_source(rows: Sequence[tuple[str, Any, str]]) -> str:
    """The parameters cell: ``name = default`` with its comment in a column."""
    return "\n".join(f"{f'{n} = {literal(v)}':<23} # {c}" for n, v, c in rows)


def setup_source(names: Sequence[str]) -> str:
    """The set-up cell: the evaluation built from every parameter, the banner and the recipe's caveat."""
    arguments = textwrap.fill(" ".join(f"{n}={n}," for n in names), WIDTH - 1, initial_indent="    ",
                              subsequent_indent="    ", break_long_words=False, break_on_hyphens=False)
    return SETUP.format(arguments=arguments.rstrip(","))


def intro_source(recipe: Any) -> str:
    """The first markdown cell: title, the guide it replaces (or that none does), how to run it, the published
    reference, the intro."""
    spec, pub = recipe.notebook, recipe.published
    nb = f"notebooks/{recipe.name}.ipynb"
    embedded = f"papermill {nb} out.ipynb"
    real = (f"papermill {nb} out.ipynb -f params/{recipe.name}.yaml \\",
            f"    -p weights /data/{recipe.checkpoint_file} -p data_root {spec.data_example}")
    column = max(84, len(embedded) + 2, len(real[1]) + 2)
    commands = "\n".join([f"{embedded:<{column}}# embedded sample, synthetic weights", real[0],
                          f"{real[1]:<{column}}# the real figures"])
    published = ", ".join(f"{k} {100 * v:.4g}%" for k, v in pub.accuracy.items())
    facts = wrap(FACTS.format(published=published, source=pub.source, facts=spec.facts, name=recipe.name))
    if spec.intro:
        facts += "\n\n" + wrap(spec.intro)
    replaces = NO_GUIDE if spec.guide is None else REPLACES.format(guide=spec.guide, guide_steps=spec.guide_steps)
    return INTRO.format(title=spec.title, steps=spec.steps, replaces=wrap(replaces), commands=commands, facts=facts)


def build(name: str) -> nbformat.NotebookNode:
    """The notebook of model ``name`` (not written)."""
    from zooinfer import recipes

    recipe = recipes.get(name)
    if recipe.notebook is None:
        raise ValueError(f"{name}: the recipe has no NotebookSpec (notebook=...)")
    if recipe.task not in RESULTS_TITLES:
        raise ValueError(f"{name}: no results section for task {recipe.task!r} (template: RESULTS_TITLES)")
    rows = parameters(recipe)
    params = nbformat.v4.new_code_cell(parameters_source(rows), id="parameters")
    params.metadata["tags"] = ["parameters"]
    cells = [nbformat.v4.new_markdown_cell(intro_source(recipe), id="intro"), params]
    for cell_id, heading, code in SECTIONS:
        if cell_id == "results":
            heading = f"## {RESULTS_TITLES[recipe.task]}"
            if recipe.notebook.results_help:
                heading += "\n" + wrap(recipe.notebook.results_help)
        if cell_id == "setup":
            code = setup_source([n for n, _, _ in rows])
        cells += [nbformat.v4.new_markdown_cell(heading, id=f"{cell_id}-md"),
                  nbformat.v4.new_code_cell(code, id=cell_id)]
    nb = nbformat.v4.new_notebook(cells=cells, metadata=json.loads(json.dumps(NOTEBOOK_METADATA)))
    nb.nbformat, nb.nbformat_minor = 4, 5
    return nb


def render(name: str) -> str:
    """The notebook file of model ``name`` as text (what is written, byte for byte)."""
    nb = build(name)
    nbformat.validate(nb)
    text = nbformat.writes(nb, version=4)
    return text if text.endswith("\n") else text + "\n"


# ---------------------------------------------------------------------------------------------------- command line
def main(argv: Sequence[str] | None = None) -> int:
    from zooinfer import recipes

    p = argparse.ArgumentParser(prog="make_notebook.py", description=__doc__.split("\n\n")[0],
                                epilog="Without --check the notebooks are (re)written.")
    p.add_argument("models", nargs="*", metavar="MODEL", help=f"models to write (default: all of {', '.join(recipes.NAMES)})")
    p.add_argument("--out", type=Path, default=NOTEBOOKS, help="folder of the notebooks (default: notebooks/)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 listing the notebooks in --out that differ from the template")
    args = p.parse_args(argv)
    names = args.models or list(recipes.NAMES)
    bad = [n for n in names if n not in recipes.NAMES]
    if bad:
        p.error(f"unknown model(s) {', '.join(bad)}; known: {', '.join(recipes.NAMES)}")
    stale = []
    for name in names:
        path = args.out / f"{name}.ipynb"
        text = render(name)
        if args.check:
            if not path.is_file():
                stale.append(f"{path} (missing)")
            elif path.read_bytes() != text.encode("utf-8"):
                stale.append(f"{path} (differs)")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
        print("wrote", path)
    if args.check:
        if stale:
            print("not generated from the template (run python tools/make_notebook.py):", *stale, sep="\n  ")
            return 1
        print(f"{len(names)} notebooks match the template")
    return 0


if __name__ == "__main__":
    sys.exit(main())
