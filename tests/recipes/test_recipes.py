"""The registry (zooinfer.recipes): model names follow one rule, and a sixth model is one new folder -- every loop
over "all models" (benchmarks, notebook generator, tests) reads the registry, and only the docs' model tables list
the models by hand."""
from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

from zooinfer import recipes
from zooinfer.errors import ZooinferError

ROOT = Path(__file__).resolve().parents[2]
#: the example of an unknown model used across the tests: it breaks the name rule, so it can never become a model
UNKNOWN = "no-such-model"


def _script(relative: str):
    """A script of this checkout (benchmarks/..., tools/...) imported as a module."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------------ the name rule
def test_every_model_name_follows_the_rule_and_the_unknown_example_never_can():
    assert recipes.NAMES and all(recipes.NAME_RULE.fullmatch(n) for n in recipes.NAMES)
    assert not recipes.NAME_RULE.fullmatch(UNKNOWN)
    with pytest.raises(ZooinferError, match=f"unknown model '{UNKNOWN}'; known: {', '.join(recipes.NAMES)}"):
        recipes.get(UNKNOWN)


def _model_folder(root: Path, name: str) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "__init__.py").write_text('"""A model."""\n')
    (root / name / "recipe.py").write_text("RECIPE = None\n")


def test_discovery_finds_recipe_folders_and_refuses_a_name_that_breaks_the_rule(tmp_path):
    _model_folder(tmp_path, "zeta")
    _model_folder(tmp_path, "alpha_2")
    (tmp_path / "helpers").mkdir()  # a package without recipe.py is not a model
    (tmp_path / "helpers" / "__init__.py").write_text("")
    assert recipes._discover(tmp_path) == ("alpha_2", "zeta")
    _model_folder(tmp_path, UNKNOWN)
    with pytest.raises(ZooinferError, match=re.escape(str(tmp_path / UNKNOWN)) + ".*rename the folder"):
        recipes._discover(tmp_path)


# ------------------------------------------------------------------------------------------------ a sixth model
def test_a_sixth_model_reaches_every_loop_over_all_models_without_edits(sixth_model, tmp_path, capsys):
    assert recipes.get("sixth") is sixth_model and "sixth" in recipes.available()
    from zooinfer import cli
    from zooinfer.models import build_model

    assert build_model("sixth") is not None
    assert cli.main(["list", "--output-root", str(tmp_path / "outputs")]) == 0
    assert any(line.startswith("sixth ") for line in capsys.readouterr().out.splitlines())
    accelerator = _script("benchmarks/accelerator_check.py")
    args = accelerator.parse_args([])
    assert args.models == list(recipes.NAMES) and "sixth" in args.models
    assert accelerator.parse_args(["--models", "sixth"]).models == ["sixth"]
    assert accelerator.batch_sizes_for("sixth", args) == [1, 8, 32]
    notebooks = _script("tools/make_notebook.py")
    assert notebooks.main(["--out", str(tmp_path), "sixth"]) == 0
    assert "A sixth model on a tiny sample" in (tmp_path / "sixth.ipynb").read_text()
    # the benchmarks' default model lists are the registry's
    for script in ("benchmarks/pipeline_ceiling.py", "benchmarks/run.py", "benchmarks/variants.py"):
        source = (ROOT / script).read_text()
        assert "recipes.available()" in source or "recipes.NAMES" in source, script


def _all_model_lists(path: Path, names: set[str]) -> list[int]:
    """Lines of ``path`` holding a hand-kept list of every model: a list/tuple/set/dict literal whose strings include
    every name, or one string naming every model (an expected "known: ..." message)."""
    hits = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.List, ast.Tuple, ast.Set, ast.Dict)):
            strings = {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
            if names <= strings:
                hits.append(node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if names <= set(re.findall(r"\w+", node.value)):
                hits.append(node.lineno)
    return hits


def test_no_code_or_test_keeps_its_own_list_of_every_model():
    names = set(recipes.NAMES)
    files = [p for folder in ("lib", "tests", "benchmarks", "tools") for p in sorted((ROOT / folder).rglob("*.py"))]
    found = {str(p.relative_to(ROOT)): lines for p in files if (lines := _all_model_lists(p, names))}
    assert not found, f"hand-kept lists of every model (loop over zooinfer.recipes.NAMES instead): {found}"


# ------------------------------------------------------------------------------------------------ the docs' tables
#: the docs' model tables (the one place a new model is listed by hand): file -> how a row names its model
DOCS_TABLES = {"README.md": re.compile(r"^\|[^|]*\| `notebooks/(\w+)\.ipynb` \|", re.M),
               "docs/models/README.md": re.compile(r"^\|[^|]*\| \[(\w+)\.md\]\(\w+\.md\) \|", re.M)}


def test_the_docs_model_tables_list_every_model_once():
    for doc, row in DOCS_TABLES.items():
        listed = row.findall((ROOT / doc).read_text())
        assert sorted(listed) == sorted(recipes.NAMES), f"{doc}: the model table lists {listed}"
