"""Run folders are renamed only when complete; metrics.json and the tables hold what the report shows."""
from __future__ import annotations

import json
import re

import pytest

from zooinfer import bench, export, recipes, report
from zooinfer.config import RunConfig
from zooinfer.report import RunDir


def test_run_dir_is_partial_until_finalized(tmp_path):
    rd = RunDir("dpn131", tmp_path, run_id="r1")
    report.write_json(rd.file("metrics.json"), {"a": 1})
    assert rd.path.name == ".r1.partial" and not (tmp_path / "dpn131" / "r1").exists()
    final = rd.finalize()
    assert final == tmp_path / "dpn131" / "r1" and json.loads((final / "metrics.json").read_text()) == {"a": 1}
    assert not (tmp_path / "dpn131" / ".r1.partial").exists()


def test_cli_owned_run_dir_is_not_renamed_by_the_notebook(tmp_path, monkeypatch):
    partial = tmp_path / "m" / ".r2.partial"
    monkeypatch.setenv("ZOOINFER_RUN_DIR", str(tmp_path / "elsewhere"))  # no environment variable is read
    rd = RunDir("m", path=partial)
    assert rd.path == partial and rd.finalize() == tmp_path / "m" / "r2" and partial.is_dir()
    assert not (tmp_path / "elsewhere").exists() and not hasattr(report, "RUN_DIR_ENV")


def test_banner_says_whether_accuracy_is_meaningful():
    r = recipes.get("dpn131")
    text = report.banner_text(RunConfig(model="dpn131", bs=8, limit=3), r)
    assert text.startswith("## dpn131: classification, input (3, 224, 224), backend `onnxruntime`, bs 8")
    assert "NOT meaningful" in text and "synthetic" in text and "embedded" in text and "limit=3" in text
    real = RunConfig(model="dpn131", weights="/data/dpn131-7af84be88.pth", data_root="/data/imagenet")
    assert report.meaningful(real) == (True, "")
    assert "Real checkpoint `/data/dpn131-7af84be88.pth` on `/data/imagenet`" in report.banner_text(real, r)


def test_report_html_has_the_outputs_but_no_code(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("ev_banner_call_in_code()", execution_count=1)
    code.outputs = [nbformat.v4.new_output("display_data", {"text/markdown": "ACCURACY_IS_NOT_MEANINGFUL"})]
    nb.cells = [code, nbformat.v4.new_markdown_cell("## Accuracy")]
    nbformat.write(nb, tmp_path / "m.ipynb")
    full = report.render_html(tmp_path / "m.ipynb", tmp_path / "m.html").read_text()
    short = report.render_html(tmp_path / "m.ipynb", tmp_path / "m-report.html", code=False).read_text()
    assert "ev_banner_call_in_code" in full and "ev_banner_call_in_code" not in short
    assert "ACCURACY_IS_NOT_MEANINGFUL" in short and short.index("ACCURACY_IS_NOT_MEANINGFUL") < short.index(
        'id="Accuracy"')
    prompt = re.compile(r"In\s\[1\]:")  # the input prompt (a no-break space in nbconvert's HTML)
    assert prompt.search(full) and not prompt.search(short)


def test_ratios_from_sweep_rows():
    rows = [{"backend": "onnxruntime", "bs": 1, "throughput": 6.0}, {"backend": "torch", "bs": 1, "throughput": 2.0},
            {"backend": "onnxruntime", "bs": 8, "throughput": 9.0}]
    assert bench.ratios(rows, "onnxruntime", 8) == {"onnxruntime_vs_torch_bs1": 3.0}


def test_accuracy_rows_and_markdown():
    r = recipes.get("dpn131")
    rows = report.accuracy_rows({"top1": 0.5, "top5": 0.9}, r.published, r.headline)
    assert rows[0]["ours_%"] == 50.0 and rows[0]["published_%"] == 79.432 and rows[0]["delta_pts"] == -29.43
    table = report.markdown_table(rows, ["metric", "ours_%", "published_%"])
    assert table.splitlines()[2] == "| top1 | 50 | 79.43 |"


def test_environment_manifest_has_versions():
    env = report.environment()
    assert {"torch", "onnxruntime", "numpy"} <= set(env["packages"]) and "CPUExecutionProvider" in \
        env["onnxruntime_providers"]


def test_bench_summary_and_best_batch():
    import numpy as np

    row = bench.summarize(np.array([0.1, 0.1, 0.1, 0.1]), bs=8)
    assert row["throughput"] == pytest.approx(80.0) and row["latency_ms_p50"] == pytest.approx(100.0)
    assert not row["unstable"]
    assert bench.summarize(np.array([0.1, 0.3, 0.1, 0.3]), bs=1)["unstable"]
    assert bench.best_batch([{"bs": 1, "throughput": 3.0}, {"bs": 8, "throughput": 5.0}]) == 8
    assert bench.make_batch(np.zeros((3, 1, 2, 2), np.float32), 7).shape == (7, 1, 2, 2)


def test_atc_and_ais_bench_commands():
    r = recipes.get("dpn131")
    assert export.atc_command(r, "dpn131.onnx", 8, output="dpn131_bs8") == (
        'atc --framework=5 --model=dpn131.onnx --output=dpn131_bs8 --input_format=NCHW '
        '--input_shape="image:8,3,224,224" --log=error --soc_version=Ascend310P3')
    assert "--batchsize 8" in export.ais_bench_command("m.om", "in", "out", 8)


# ---------------------------------------------------------------------------------------------------- issue 18
def _steps(skipped: int, total: int = 20, md5: str | None = None):
    from types import SimpleNamespace

    from zooinfer.evaluation import StepResults
    from zooinfer.pipeline import RunResult, StageTimer

    run = RunResult({"top1": 0.5, "top5": 0.9}, total, total - skipped,
                    [(f"k{i}", f"/d/val/k{i}.JPEG", "not found: named in val_label.txt") for i in range(skipped)],
                    StageTimer(), 1.0, 1, "onnxruntime")
    prepared = SimpleNamespace(dataset=None, weights_md5=md5, md5_matches=None if md5 is None else
                               md5 == "71e7844aa8646dc75494976c7c86241a")
    return StepResults(prepared=prepared, run=run)


def test_9_skipped_images_are_in_the_first_lines_of_metrics_json():
    r = recipes.get("dpn131")
    doc = report.metrics_document(RunConfig(model="dpn131"), r, _steps(1), environment_info={})
    assert list(doc)[:6] == ["model", "task", "accuracy_meaningful", "not_meaningful_because", "verdict", "skipped"]
    assert doc["skipped"]["count"] == 1 and doc["skipped"]["of"] == 20 and not doc["skipped"]["too_many"]
    assert doc["skipped"]["images"][0] == {"key": "k0", "path": "/d/val/k0.JPEG",
                                           "reason": "not found: named in val_label.txt"}
    assert doc["skipped"]["summary"].startswith("1 of 20 images skipped (5.0%), not evaluated; first: /d/val/k0")


def test_11_a_large_skipped_share_makes_the_accuracy_not_meaningful():
    r = recipes.get("dpn131")
    doc = report.metrics_document(RunConfig(model="dpn131"), r, _steps(2), environment_info={})
    assert doc["skipped"]["too_many"] and doc["skipped"]["threshold"] == report.SKIP_THRESHOLD == 0.05
    assert doc["accuracy_meaningful"] is False and "2 of 20 images skipped (10.0%)" in doc["not_meaningful_because"]


def test_14_md5_matches_is_recorded():
    r = recipes.get("dpn131")
    doc = report.metrics_document(RunConfig(model="dpn131"), r, _steps(0, md5="0" * 32), environment_info={})
    assert doc["md5_matches"] is False and doc["checkpoint"]["md5_matches"] is False and doc["skipped"]["count"] == 0
    doc = report.metrics_document(RunConfig(model="dpn131"), r, _steps(0), environment_info={})
    assert doc["md5_matches"] is None  # synthetic weights: nothing to compare


# ---------------------------------------------------------------------------------------------------- issue 22
class _DiskFull:
    """``open`` for report.py on a full disk: a file opened for writing takes ``room`` bytes, then ENOSPC."""

    def __init__(self, room: int = 1000, only: str = ""):
        self.room, self.only, self.opened = room, only, []

    def __call__(self, file, mode="r", *args, **kwargs):
        import builtins

        handle = builtins.open(file, mode, *args, **kwargs)
        if "w" not in mode or self.only not in str(file):
            return handle
        self.opened.append(str(file))
        room = self

        class Full:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                handle.close()

            def close(self):
                handle.close()

            def write(self, data):
                import errno
                import os

                if len(data) > room.room:
                    handle.write(data[:room.room])
                    handle.flush()
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
                room.room -= len(data)
                return handle.write(data)

            def __getattr__(self, name):
                return getattr(handle, name)

        return Full()


def _tiny_notebook(path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("## Accuracy")]
    nbformat.write(nb, path)
    return path


def test_i22_8_render_html_on_a_full_disk_names_the_file_and_leaves_no_truncated_html(tmp_path, monkeypatch):
    from zooinfer.errors import OutputError

    nb = _tiny_notebook(tmp_path / "m.ipynb")
    full = _DiskFull()
    monkeypatch.setattr(report, "open", full, raising=False)
    with pytest.raises(OutputError, match=rf"could not write {re.escape(str(tmp_path / 'm-report.html'))}: "
                                          r"\[Errno 28\] No space left on device"):
        report.render_html(nb, tmp_path / "m-report.html", code=False)
    assert full.opened and sorted(p.name for p in tmp_path.iterdir()) == ["m.ipynb"]  # no truncated or temp file


def test_i22_8_write_json_on_a_full_disk_keeps_the_file_it_would_replace(tmp_path, monkeypatch):
    from zooinfer.errors import OutputError

    report.write_json(tmp_path / "metrics.json", {"old": 1})
    monkeypatch.setattr(report, "open", _DiskFull(room=5), raising=False)
    with pytest.raises(OutputError, match=r"could not write .*metrics.json: \[Errno 28\] No space left on device"):
        report.write_json(tmp_path / "metrics.json", {"new": "x" * 100})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"old": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_i22_19_warnings_read_as_notes_without_source_paths(monkeypatch, capsys):
    import warnings

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # restored after the test
    report.warnings_as_notes()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("onnxruntime bs=1: timings vary (cv 20%); the machine may be busy", stacklevel=1)
        warnings.warn("the old name", DeprecationWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert err.splitlines() == ["note: onnxruntime bs=1: timings vary (cv 20%); the machine may be busy",
                                "note (DeprecationWarning): the old name"], err
    assert ".py:" not in err and "UserWarning" not in err


def test_i22_11_a_parity_failure_is_in_the_first_lines_and_withholds_the_verdict():
    from dataclasses import replace

    from zooinfer.evaluation import ExportResult

    r = recipes.get("dpn131")
    real = RunConfig(model="dpn131", weights="/data/dpn131-7af84be88.pth", data_root="/data/imagenet")
    failed = ExportResult(path="/x/other.onnx", description={}, batch_invariance=None,
                          parity=({"output": "class", "shape": [2, 1000], "max_abs": 3.0, "max_rel": 9.0,
                                   "peak_rel": 0.6},))
    assert "parity failed" in failed.parity_failure and "/x/other.onnx" in failed.parity_failure
    text = report.banner_text(real, r, parity_failure=failed.parity_failure)
    second = text.split("\n\n")[1]
    assert second.startswith("**Parity failed:**") and "does not compute this model's outputs" in second
    assert "No verdict is given" in text and "the verdict (PASS/FAIL" not in text
    steps = replace(_steps(0), exported=failed)
    doc = report.metrics_document(real, r, steps, environment_info={})
    assert doc["accuracy_meaningful"] is False and doc["not_meaningful_because"].startswith("parity failed")
    assert doc["verdict"]["verdict"] is None and "parity failed" in doc["verdict"]["why_none"]
    assert doc["onnx"]["parity_failure"] == failed.parity_failure
    good = replace(failed, parity=({"output": "class", "shape": [2, 1000], "max_abs": 1e-5, "max_rel": 1e-3,
                                    "peak_rel": 1e-6},))
    assert good.parity_failure is None
    assert report.metrics_document(real, r, replace(_steps(0), exported=good),
                                   environment_info={})["verdict"]["verdict"] == "FAIL"  # top1 50%: judged


def test_i22_11_19_in_a_real_kernel_notes_read_plainly_and_the_banner_is_updated_in_place(tmp_path):
    """papermill runs a two-cell notebook: a warning becomes a 'Note:' line (no source path) in the hand-on report,
    and an update of the banner's display (what export() does on a parity failure) replaces the first output."""
    import nbformat
    import papermill

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('from zooinfer import report\nreport.warnings_as_notes()\n'
                                          'report.show("BANNER-BEFORE", display_id="banner")'),
                nbformat.v4.new_code_cell('import warnings\nwarnings.warn("onnxruntime bs=1: timings vary")\n'
                                          'report.show("BANNER-AFTER", display_id="banner", update=True)')]
    nbformat.write(nb, tmp_path / "in.ipynb")
    papermill.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"), progress_bar=False,
                               kernel_name="python3")
    html = report.render_html(tmp_path / "out.ipynb", tmp_path / "out.html", code=False).read_text()
    assert "BANNER-AFTER" in html and "BANNER-BEFORE" not in html
    assert "<strong>Note:</strong> onnxruntime bs=1: timings vary" in html
    assert "UserWarning" not in html and ".py:" not in html
