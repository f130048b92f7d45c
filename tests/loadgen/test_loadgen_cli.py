"""zooinfer.loadgen.cli (``python -m zooinfer.loadgen``): model options come from each recipe (``--model-option NAME
VALUE``), so no model is named in the LoadGen code."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from zooinfer import loadgen, recipes
from zooinfer.errors import ZooinferError


def test_no_model_is_named_in_the_loadgen_package():
    package = Path(loadgen.__file__).parent
    for path in sorted(package.glob("*.py")):
        text = path.read_text()
        for name in recipes.NAMES:
            assert name not in text.lower(), f"{path.name} names the model {name!r}: model facts belong in recipes"


def _option_model() -> tuple[str, str, object]:
    """A registered model that declares an option, that option and its default (skip when none does)."""
    for name in recipes.NAMES:
        notebook = recipes.get(name).notebook
        if notebook is not None and notebook.extra:
            option, default, _ = notebook.extra[0]
            return name, option, default
    pytest.skip("no registered model declares an option")


def test_model_options_are_read_from_the_recipe():
    name, option, default = _option_model()
    recipe = recipes.get(name)
    value = loadgen.cli.model_options(recipe, [(option, str(default))])
    assert value == {option: default} and type(value[option]) is type(default)
    assert loadgen.cli.model_options(recipe, []) == {}
    with pytest.raises(ZooinferError, match=rf"model {name!r} has no option 'no_such_option'; its options: {option}"):
        loadgen.cli.model_options(recipe, [("no_such_option", "1")])
    plain = next((n for n in recipes.NAMES if not (recipes.get(n).notebook and recipes.get(n).notebook.extra)), None)
    if plain is not None:
        with pytest.raises(ZooinferError, match=rf"model {plain!r} has no option {option!r}; it takes none"):
            loadgen.cli.model_options(recipes.get(plain), [(option, "1")])


def test_main_hands_each_model_its_options(monkeypatch, tmp_path):
    name, option, default = _option_model()
    seen = {}

    def fake_measure(model, **kwargs):
        seen[model] = kwargs["recipe_options"]
        return {"row": {"model": model}, "server_statement": f"{model}: measured"}

    monkeypatch.setattr(loadgen.cli, "measure_model", fake_measure)
    monkeypatch.setattr(loadgen.cli, "_loadgen", lambda: None)
    assert loadgen.main([name, "--model-option", option, str(default), "--out", str(tmp_path)]) == 0
    assert seen == {name: {option: default}}
    assert json.loads(next(tmp_path.glob("loadgen-*.json")).read_text())[name]["row"] == {"model": name}
    with pytest.raises(SystemExit):  # an option no listed model takes: refused before any measurement
        loadgen.main([name, "--model-option", "no_such_option", "1", "--out", str(tmp_path)])
