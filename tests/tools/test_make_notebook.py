"""tools/make_notebook.py: every committed notebook is exactly what the template and its recipe generate, and the
generated cells say what the recipe says (parameters, defaults, intro facts, one results call)."""
from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import nbformat
import pytest

from zooinfer import recipes
from zooinfer.config import RunConfig

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "make_notebook.py"

#: the parameters cell's names in order, before the model's options are inserted after ``limit``
COMMON = ["model", "weights", "data_root", "backend", "bs", "limit", "subset", "seed", "resume", "static_batch",
          "precision", "batch_sizes", "bench_min_time", "profile_ops", "prep_threads", "prep_processes", "processes", "ray_address", "threads", "device_id",
          "om_path", "results_dir", "output_root", "run_dir", "progress", "compare", "calibration", "tune", "budget",
          "rank_subset", "scenarios",
          "latency_bound_ms", "audits", "repeats"]


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("make_notebook", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated(tool, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("notebooks")
    assert tool.main(["--out", str(out)]) == 0
    return out


def _cell(nb, cell_id: str):
    return next(c for c in nb.cells if c.id == cell_id)


def _assignments(source: str) -> dict:
    """name -> value of the parameters cell (every statement must be ``name = literal``)."""
    out = {}
    for node in ast.parse(source).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, ast.dump(node)
        out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


def test_committed_notebooks_are_the_generated_ones(generated):
    stale = [n for n in recipes.NAMES
             if (generated / f"{n}.ipynb").read_bytes() != (ROOT / "notebooks" / f"{n}.ipynb").read_bytes()]
    assert not stale, f"notebooks not regenerated after a template/recipe change: {stale} " \
                      "(run python tools/make_notebook.py)"
    assert sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")) == sorted(recipes.NAMES)


def test_check_lists_changed_and_missing_notebooks(tool, tmp_path, capsys):
    assert tool.main(["--out", str(tmp_path)]) == 0
    assert tool.main(["--check", "--out", str(tmp_path)]) == 0
    nb = tmp_path / "pcb.ipynb"
    nb.write_text(nb.read_text().replace("## Speed", "## Speed!"))
    (tmp_path / "m2det.ipynb").unlink()
    capsys.readouterr()
    assert tool.main(["--check", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "pcb.ipynb (differs)" in out and "m2det.ipynb (missing)" in out and "dpn131" not in out
    assert nb.read_text().count("## Speed!") == 1  # --check writes nothing


def test_help_and_bad_model():
    run = subprocess.run([sys.executable, str(TOOL), "--help"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0 and "--check" in run.stdout and "--out" in run.stdout
    run = subprocess.run([sys.executable, str(TOOL), "--check", "no-such-model"], capture_output=True, text=True,
                         cwd=ROOT)
    assert run.returncode == 2 and f"unknown model(s) no-such-model; known: {', '.join(recipes.NAMES)}" in run.stderr


def test_a_model_without_an_ascend_guide_gets_a_notebook_that_says_so(tool, sixth_model, tmp_path):
    assert sixth_model.notebook.guide is None
    assert tool.main(["--out", str(tmp_path)]) == 0  # every model, the sixth included
    assert sorted(p.stem for p in tmp_path.glob("*.ipynb")) == sorted(recipes.NAMES)
    nb = nbformat.read(tmp_path / "sixth.ipynb", as_version=4)
    nbformat.validate(nb)
    intro = " ".join(nb.cells[0].source.split())
    assert intro.startswith("# A sixth model on a tiny sample: checkpoint -> ONNX -> accuracy -> speed")
    assert "No Ascend ModelZoo guide covers this model" in intro and "Replaces" not in intro
    assert "papermill notebooks/sixth.ipynb out.ipynb" in intro
    assert _assignments(nb.cells[1].source)["model"] == "sixth"


def test_output_is_deterministic_and_clean(tool, generated):
    for name in recipes.NAMES:
        assert tool.render(name) == tool.render(name)
        nb = nbformat.read(generated / f"{name}.ipynb", as_version=4)
        nbformat.validate(nb)
        ids = [c.id for c in nb.cells]
        assert len(set(ids)) == len(ids) and ids[:2] == ["intro", "parameters"]
        for c in nb.cells:
            if c.cell_type == "code":
                assert c.outputs == [] and c.execution_count is None
        assert nb.metadata == {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                               "language_info": {"name": "python"}}


def test_every_notebook_has_the_same_sections(generated):
    first = None
    for name in recipes.NAMES:
        nb = nbformat.read(generated / f"{name}.ipynb", as_version=4)
        shape = [(c.id, c.cell_type) for c in nb.cells]
        first = first or shape
        assert shape == first
        headings = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown"][1:]
        assert headings[:4] == ["## Set-up", "## Checkpoint and dataset", "## ONNX export", "## Accuracy"]
        assert headings[5:] == ["## Repeatability", "## Speed", "## Backends and precision", "## Under load",
                                "## Ascend", "## Report"]


def test_parameters_cell(generated):
    config_fields = {f.name for f in fields(RunConfig)}
    for name in recipes.NAMES:
        recipe = recipes.get(name)
        spec = recipe.notebook
        nb = nbformat.read(generated / f"{name}.ipynb", as_version=4)
        cell = nb.cells[1]
        assert cell.metadata["tags"] == ["parameters"]
        values = _assignments(cell.source)
        options = [n for n, _, _ in spec.extra]
        metric = [n for n, _, _ in recipe.metric_options]
        at = COMMON.index("limit") + 1
        assert list(values) == COMMON[:at] + options + metric + COMMON[at:]
        assert set(values) - set(options) - set(metric) <= config_fields
        assert values["model"] == name
        for key, value in spec.defaults + tuple((n, v) for n, v, _ in spec.extra + recipe.metric_options):
            assert values[key] == value, (name, key)
        for line in cell.source.splitlines():
            assert " # " in line and line.split(" # ", 1)[1].strip(), line
        assert recipe.checkpoint_file in cell.source and spec.data_root_help in cell.source
        cfg = RunConfig.from_parameters(values)  # every name is a parameter the run accepts
        assert cfg.model == name and cfg.bs == values["bs"] and dict(cfg.model_options) == \
            {n: values[n] for n in options} and dict(cfg.metric_options) == {n: values[n] for n in metric}
    m2det = _assignments(nbformat.read(generated / "m2det.ipynb", as_version=4).cells[1].source)
    assert (m2det["bs"], m2det["limit"], m2det["batch_sizes"]) == (2, 4, [1])
    pyramidbox = _assignments(nbformat.read(generated / "pyramidbox.ipynb", as_version=4).cells[1].source)
    assert (pyramidbox["bs"], pyramidbox["batch_sizes"], pyramidbox["canvas"]) == (1, [1], 256)


def test_papermill_sees_every_parameter_with_its_help(generated):
    import papermill

    for name in ("dpn131", "pyramidbox"):
        info = papermill.inspect_notebook(str(generated / f"{name}.ipynb"))
        values = _assignments(nbformat.read(generated / f"{name}.ipynb", as_version=4).cells[1].source)
        assert list(info) == list(values)
        assert all(p["help"] for p in info.values())


def test_setup_builds_the_evaluation_from_every_parameter(generated):
    for name in recipes.NAMES:
        nb = nbformat.read(generated / f"{name}.ipynb", as_version=4)
        names = list(_assignments(nb.cells[1].source))
        calls = [n for n in ast.walk(ast.parse(_cell(nb, "setup").source))
                 if isinstance(n, ast.Call) and getattr(n.func, "attr", None) == "from_parameters"]
        assert len(calls) == 1
        (arg,) = calls[0].args
        assert isinstance(arg, ast.Call) and arg.func.id == "dict"
        assert [k.arg for k in arg.keywords] == names
        assert all(isinstance(k.value, ast.Name) and k.value.id == k.arg for k in arg.keywords)


def test_results_section_is_one_library_call(tool, generated):
    for name in recipes.NAMES:
        recipe = recipes.get(name)
        nb = nbformat.read(generated / f"{name}.ipynb", as_version=4)
        assert _cell(nb, "results").source == "viz.show_results(ev, result);"
        heading = _cell(nb, "results-md").source
        title = f"## {tool.RESULTS_TITLES[recipe.task]}"
        assert heading.splitlines()[0] == title
        assert " ".join(heading.split()) == " ".join(f"{title} {recipe.notebook.results_help}".split())


def test_intro_facts_come_from_the_recipe(generated):
    for name in recipes.NAMES:
        recipe = recipes.get(name)
        spec = recipe.notebook
        intro = nbformat.read(generated / f"{name}.ipynb", as_version=4).cells[0].source
        flat = " ".join(intro.split())
        assert intro.startswith(f"# {spec.title}: checkpoint -> ONNX -> {spec.steps} -> speed\n")
        assert f"`{spec.guide}`" in flat and f"/data/{recipe.checkpoint_file}" in flat
        assert f"-f params/{name}.yaml" in flat and f"notebooks/{name}.ipynb" in flat
        assert " ".join(recipe.published.source.split()) in flat
        for key, value in recipe.published.accuracy.items():
            assert f"{key} {100 * value:.4g}%" in flat
        assert " ".join(spec.intro.split()) in flat


def test_markdown_wrapping_never_starts_a_block(tool):
    text = "word " * 20 + "- not a list item " + "word " * 20 + "# not a heading " + "1. not a list " + "x " * 30
    wrapped = tool.wrap(text, width=40)
    assert " ".join(wrapped.split()) == " ".join(text.split())
    for line in wrapped.splitlines():
        assert not tool._BLOCK_START.match(line), line


def test_a_template_change_reaches_every_notebook(tool, monkeypatch):
    before = {n: tool.render(n) for n in recipes.NAMES}
    monkeypatch.setattr(tool, "SECTIONS", tuple((i, h.replace("## Speed", "## Throughput") if h else h, c)
                                                for i, h, c in tool.SECTIONS))
    after = {n: tool.render(n) for n in recipes.NAMES}
    for n in recipes.NAMES:
        assert after[n] != before[n] and after[n] == before[n].replace("## Speed", "## Throughput")


def test_i22_19_the_setup_shows_warnings_as_notes_before_anything_runs(generated):
    for name in recipes.NAMES:
        source = _cell(nbformat.read(generated / f"{name}.ipynb", as_version=4), "setup").source
        assert "report.warnings_as_notes()" in source
        assert source.index("report.warnings_as_notes()") < source.index("Evaluation.from_parameters")
