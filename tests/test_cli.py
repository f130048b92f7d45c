"""The command line: help, list, parameter parsing, .bin writing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from zooinfer import cli


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0 and "zooinfer run dpn131" in capsys.readouterr().out


def test_list(capsys):
    assert cli.main(["list"]) == 0
    assert "dpn131" in capsys.readouterr().out


def test_parameter_values_follow_papermill():
    assert cli._parse_value("8") == 8 and cli._parse_value("null") is None
    assert cli._parse_value("[1, 8]") == [1, 8] and cli._parse_value("/data/x.pth") == "/data/x.pth"


def test_unknown_model_is_a_clear_error(capsys):
    assert cli.main(["bins", "resnet50", "--out", "x"]) == 2
    assert "unknown model 'resnet50'" in capsys.readouterr().err


def test_bins_writes_inputs_and_info(tmp_path, capsys):
    out = tmp_path / "prep_bin"
    assert cli.main(["bins", "dpn131", "--out", str(out), "--limit", "2"]) == 0
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["ILSVRC2012_val_00000001.bin", "ILSVRC2012_val_00000002.bin"]
    assert files[0].stat().st_size == 602_112
    from zooinfer import recipes

    r = recipes.get("dpn131")
    ds = r.open_dataset(None)
    np.testing.assert_array_equal(np.fromfile(files[0], np.float32).reshape(3, 224, 224), r.preprocess(ds[0].path)[0][0])
    assert (tmp_path / "prep_bin.info").read_text().splitlines()[0].endswith("ILSVRC2012_val_00000001.bin 224 224")


def _run_args(*argv):
    return cli.build_parser().parse_args(["run", "dpn131", *argv])


def test_run_turns_the_pipeline_progress_bar_off_unless_asked(tmp_path):
    assert cli.run_parameters(_run_args("-p", "bs", "8"))["progress"] is False
    assert cli.run_parameters(_run_args("-p", "progress", "true"))["progress"] is True
    (tmp_path / "p.yaml").write_text("bs: 4\nprogress: true\n")
    assert cli.run_parameters(_run_args("-f", str(tmp_path / "p.yaml"), "-p", "bs", "2")) == {"bs": 2,
                                                                                              "progress": True}


def test_run_dir_is_the_commands_own(capsys):
    assert cli.main(["run", "dpn131", "-p", "run_dir", "/tmp/x"]) == 2
    assert "parameter 'run_dir' is set by zooinfer run" in capsys.readouterr().err


def test_run_passes_its_folder_and_writes_the_report_without_code(tmp_path, monkeypatch, capsys):
    """papermill is replaced by a stand-in that records the parameters and writes an executed notebook."""
    import nbformat
    import papermill

    seen = {}

    def execute_notebook(source, output, parameters, **kwargs):
        seen.update(parameters=dict(parameters), output=output, source=source)
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell("ev = Evaluation.from_parameters(...)\nev.banner()", execution_count=1)
        cell.outputs = [nbformat.v4.new_output("display_data", {"text/markdown": "BANNER: not meaningful"})]
        nb.cells = [cell, nbformat.v4.new_code_cell("print('done')", execution_count=2)]
        nbformat.write(nb, output)
        (Path(parameters["run_dir"]) / "metrics.json").write_text("{}")  # what the notebook's finish() writes

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    assert cli.main(["run", "dpn131", "-p", "bs", "2", "--output-root", str(tmp_path), "-q"]) == 0
    run_dir = Path(seen["parameters"]["run_dir"])
    assert run_dir.parent == tmp_path / "dpn131" and run_dir.name.endswith(".partial") and not run_dir.exists()
    assert seen["parameters"]["progress"] is False and seen["parameters"]["bs"] == 2
    assert "ZOOINFER_RUN_DIR" not in __import__("os").environ
    final = run_dir.with_name(run_dir.name.lstrip(".").removesuffix(".partial"))
    assert sorted(p.name for p in final.iterdir()) == ["dpn131-report.html", "dpn131.html", "dpn131.ipynb",
                                                       "metrics.json"]
    full, short = (final / "dpn131.html").read_text(), (final / "dpn131-report.html").read_text()
    assert "from_parameters" in full and "from_parameters" not in short and "BANNER: not meaningful" in short
    assert f"report: {final}" in capsys.readouterr().out


def test_list_says_how_much_of_an_interrupted_run_is_stored_and_how_to_resume_it(tmp_path, capsys):
    import numpy as np

    from zooinfer.store import PredictionStore

    partial = tmp_path / "pcb" / ".20261202-000000-pcb-999999999.partial"
    store = PredictionStore.create(partial, {"model": "pcb", "selection": {"samples": 17}})
    store.add("a", np.zeros(3))
    store.close()
    assert cli.main(["list", "--output-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"(1 of 17 samples stored: zooinfer run pcb --resume {partial} continues it)" in out
