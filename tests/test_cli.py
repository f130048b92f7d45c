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
    from zooinfer import recipes

    assert cli.main(["bins", "no-such-model", "--out", "x"]) == 2
    assert f"unknown model 'no-such-model'; known: {', '.join(recipes.NAMES)}" in capsys.readouterr().err


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


def test_a_relative_bins_compare_folder_is_the_callers_not_the_checkouts(tmp_path, monkeypatch):
    """The notebook runs in the checkout: a relative ``bins:`` folder is made absolute where zooinfer run started."""
    monkeypatch.chdir(tmp_path)
    got = cli.run_parameters(_run_args("-p", "compare", "[onnxruntime-int8, bins:result/sub]"))["compare"]
    assert got == ["onnxruntime-int8", f"bins:{tmp_path / 'result' / 'sub'}"]
    (tmp_path / "p.yaml").write_text("compare: [bins:/abs/folder]\n")
    assert cli.run_parameters(_run_args("-f", str(tmp_path / "p.yaml")))["compare"] == ["bins:/abs/folder"]


def test_run_dir_is_the_commands_own(capsys):
    assert cli.main(["run", "dpn131", "-p", "run_dir", "/tmp/x"]) == 2
    assert "parameter 'run_dir' is set by zooinfer run" in capsys.readouterr().err


def test_run_passes_its_folder_and_writes_the_report_without_code(tmp_path, monkeypatch, capsys):
    """papermill is replaced by a stand-in that records the parameters and writes an executed notebook."""
    import nbformat
    import papermill

    seen = {}

    def execute_notebook(source, output, parameters, **kwargs):
        from zooinfer.store import holder

        run_dir = Path(parameters["run_dir"])
        seen.update(parameters=dict(parameters), output=output, source=source, held=holder(run_dir),
                    folders=sorted(p.name for p in run_dir.parent.iterdir()))
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
    # the folder is locked from before it is first seen as partial (zooinfer clean never takes a starting run)
    assert seen["held"] is not None and seen["folders"] == [run_dir.name]
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


# ---------------------------------------------------------------------------------------------------- issue 22
#: run in a child process: a SIGTERM sent to the pytest process itself could end or upset the whole test session
SIGTERM_CHILD = """
import os, signal, sys, time
from zooinfer import cli

def unhandled(signum, frame):
    print("SIGTERM reached the handler main() should have replaced", file=sys.stderr)
    sys.exit(99)

def terminated(args):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)  # the handler interrupts this
    return 0

command = sys.argv[1:]
setattr(cli, "cmd_" + command[0], terminated)
signal.signal(signal.SIGTERM, unhandled)  # not the default: the test would not see main's message
status = cli.main(command)
assert signal.getsignal(signal.SIGTERM) is unhandled, "main's own handler is gone again"
sys.exit(status)
"""


@pytest.mark.parametrize("command", [["rescore", "outputs/x/r"], ["bins", "dpn131", "--out", "x"]])
def test_i22_16_sigterm_is_said_like_ctrl_c_and_exits_143(command):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", SIGTERM_CHILD, *command], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == cli.EXIT_TERMINATED == 143, proc.stderr
    assert proc.stderr.strip().splitlines() == ["terminated (SIGTERM)"]
    assert "143  terminated (SIGTERM" in cli.RUN_EXIT_HELP


def test_i22_8_a_run_whose_report_cannot_be_written_stays_partial_and_exits_2(tmp_path, monkeypatch, capsys):
    import errno
    import os

    import nbformat
    import papermill

    from zooinfer import report

    def execute_notebook(source, output, parameters, **kwargs):
        nbformat.write(nbformat.v4.new_notebook(), output)
        (Path(parameters["run_dir"]) / "metrics.json").write_text("{}")

    def render_html(notebook, html, *, code=True):
        raise report.OutputError(f"could not write {html}: [Errno {errno.ENOSPC}] {os.strerror(errno.ENOSPC)}")

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    monkeypatch.setattr(report, "render_html", render_html)
    assert cli.main(["run", "dpn131", "--output-root", str(tmp_path), "-q"]) == 2
    (partial,) = (tmp_path / "dpn131").iterdir()
    assert partial.name.startswith(".") and partial.name.endswith(".partial")
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"error: could not write {partial / 'dpn131.html'}: [Errno 28] No space left on device", err
    assert err[1] == f"  the run folder stays {partial} (incomplete); once that is mended, zooinfer run dpn131 " \
                     f"--resume {partial} finishes it (its stored predictions are not computed again)", err


# ------------------------------------------------------------------------------------------------ issue 22 item 4
def _stored_partial(root, name=".20261202-000000-pcb-999999999.partial"):
    """A partial PCB run folder with one stored sample (the pid in its name is no live process)."""
    from zooinfer.store import PredictionStore

    partial = root / "pcb" / name
    store = PredictionStore.create(partial, {"model": "pcb", "selection": {"samples": 17}})
    store.add("a", np.zeros(3))
    store.close()
    return partial


def test_4_list_and_clean_keep_a_folder_whose_run_holds_its_lock(tmp_path, capsys):
    """The lock, not the pid in the folder name, says a run is running (a resume keeps the old name)."""
    from zooinfer.store import RunLock

    partial = _stored_partial(tmp_path)
    lock = RunLock.take(partial, doing="resumed")
    try:
        assert cli.main(["list", "--output-root", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        assert f"  {partial}  (running" in out and "--resume" not in out
        assert cli.main(["clean", "--output-root", str(tmp_path), "--yes"]) == 0
        assert f"kept {partial} (its run is still running)" in capsys.readouterr().out and partial.is_dir()
    finally:
        lock.release()
    assert cli.main(["clean", "--output-root", str(tmp_path), "--yes"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"removed {partial}"] and not partial.exists()


# ------------------------------------------------------------------------------------------------ issue 22 item 14
def test_14_clean_skips_a_symlinked_partial_folder_and_goes_on(tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep me")
    root = tmp_path / "outputs"
    (root / "dpn131").mkdir(parents=True)
    link = root / "dpn131" / ".20260101-000000-dpn131-1.partial"
    link.symlink_to(elsewhere, target_is_directory=True)
    real = _stored_partial(root)
    assert cli.main(["clean", "--output-root", str(root), "--yes"]) == 0
    out = capsys.readouterr().out
    assert f"kept {link} (a symbolic link" in out and f"removed {real}" in out
    assert (elsewhere / "precious.txt").read_text() == "keep me" and not real.exists()


def test_13_list_names_a_damaged_store(tmp_path, capsys):
    partial = _stored_partial(tmp_path)
    (partial / "predictions" / "fingerprint.json").write_text('{"model": "pc')
    assert cli.main(["list", "--output-root", str(tmp_path)]) == 0
    assert f"  {partial}  (damaged: {partial / 'predictions' / 'fingerprint.json'}: not valid JSON" in \
        capsys.readouterr().out


def test_i22_8_a_notebook_stopped_by_a_full_disk_says_how_to_finish_the_run(tmp_path, monkeypatch, capsys):
    import nbformat
    import papermill

    def execute_notebook(source, output, parameters, **kwargs):
        nbformat.write(nbformat.v4.new_notebook(), output)
        raise papermill.PapermillExecutionError(
            cell_index=0, exec_count=1, source="ev.finish()", ename="OutputError",
            evalue="could not write x/metrics.json: [Errno 28] No space left on device", traceback=[])

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    assert cli.main(["run", "dpn131", "--output-root", str(tmp_path), "-q"]) == 2
    (partial,) = (tmp_path / "dpn131").iterdir()
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: could not write x/metrics.json: [Errno 28] No space left on device", err
    assert err[-1] == f"  the partial run folder: {partial}; once that is mended, zooinfer run dpn131 --resume " \
                      f"{partial} finishes it (its stored predictions are not computed again)", err
