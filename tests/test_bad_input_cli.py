"""Bad input through the real command line (issue 18): each case runs ``zooinfer`` in a subprocess and checks its exit
status and its last lines -- a clear error is one message naming the parameter, path or key, never a traceback.

Cases that need a finished run (md5 mismatch, skipped share, ``-p output_root``) run the real CLI in a subprocess
with papermill's ``execute_notebook`` replaced by a stand-in that writes what a notebook writes (a full run takes
minutes); the Ctrl-C and in-notebook error cases start a real kernel (about 10 s each).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ZOOINFER = [sys.executable, "-m", "zooinfer.cli"]


def zooinfer(*argv: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120):
    """Run the CLI; returns (exit status, stdout + stderr lines)."""
    proc = subprocess.run([*ZOOINFER, *argv], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, **(env or {})})
    return proc.returncode, (proc.stdout + proc.stderr).splitlines()


def assert_clear(status: int, lines: list[str], *fragments: str, code: int = 2) -> None:
    text = "\n".join(lines)
    assert status == code, text
    assert "Traceback" not in text, text
    tail = "\n".join(lines[-10:])
    for fragment in fragments:
        assert fragment in tail, tail


# -------------------------------------------------------------------------------- a stand-in for papermill
FAKE = """
import json, os, sys
from pathlib import Path

import nbformat
import papermill


def execute_notebook(source, output, parameters, **kwargs):
    nbformat.write(nbformat.v4.new_notebook(), output)
    run_dir = Path(parameters["run_dir"])
    (run_dir / "metrics.json").write_text(os.environ.get("FAKE_METRICS", "{}"))
    (run_dir / "parameters.json").write_text(json.dumps(parameters))


papermill.execute_notebook = execute_notebook
if os.environ.get("FAKE_FSIZE"):  # a full disk: no file grows past FAKE_FSIZE bytes (EFBIG, not SIGXFSZ)
    import resource, signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(os.environ["FAKE_FSIZE"]), resource.RLIM_INFINITY))
from zooinfer.cli import main

sys.exit(main(sys.argv[1:]))
"""


def fake_run(tmp_path: Path, *argv: str, metrics: dict | None = None, env: dict | None = None):
    script = tmp_path / "fake_zooinfer.py"
    script.write_text(textwrap.dedent(FAKE))
    proc = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "FAKE_METRICS": json.dumps(metrics or {}), **(env or {})})
    return proc.returncode, (proc.stdout + proc.stderr).splitlines()


# -------------------------------------------------------------------------------- 1. 0-byte checkpoint
def test_1_empty_checkpoint_is_refused_naming_the_file(tmp_path):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    status, lines = zooinfer("run", "dpn131", "--output-root", str(tmp_path / "out"), "-p", "weights", "empty.pth",
                             cwd=tmp_path)  # a relative path is the caller's
    assert_clear(status, lines, f"{empty} is empty (0 bytes); expected the PyTorch checkpoint")
    assert not (tmp_path / "out").exists()
    status, lines = zooinfer("export", "dpn131", "--weights", str(empty), "--out", str(tmp_path / "x.onnx"))
    assert_clear(status, lines, f"{empty}: the file is empty (0 bytes); expected a PyTorch checkpoint")


# -------------------------------------------------------------------------------- 3. bs
@pytest.mark.parametrize("value", ["0", "-1", "eight"])
def test_3_bad_bs_is_refused_before_anything_runs(tmp_path, value):
    status, lines = zooinfer("run", "dpn131", "--output-root", str(tmp_path), "-p", "bs", value)
    shown = repr(value) if value == "eight" else value
    assert_clear(status, lines, f"error: parameter 'bs' must be an integer >= 1, got {shown}")
    assert not any(tmp_path.iterdir())  # no partial folder: nothing started


# -------------------------------------------------------------------------------- 4. list parameters as text
def test_4_bad_batch_sizes_text_names_the_expected_form(tmp_path):
    status, lines = zooinfer("run", "dpn131", "--output-root", str(tmp_path), "-p", "batch_sizes", "[one]")
    assert_clear(status, lines, "parameter 'batch_sizes' must be a list of integers >= 1, e.g. [1, 8]")


# -------------------------------------------------------------------------------- 5. parameter files
def test_5_missing_and_malformed_parameter_files_name_the_file_and_line(tmp_path):
    status, lines = zooinfer("run", "dpn131", "-f", "missing.yaml", cwd=tmp_path)
    assert_clear(status, lines, "error: parameter file not found: missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("bs: 8\nbatch_sizes: [1, 8\nlimit: 2\n")
    status, lines = zooinfer("run", "dpn131", "-f", str(bad))
    assert_clear(status, lines, f"error: {bad}:3:", "not valid YAML")
    assert len(lines) == 1


# -------------------------------------------------------------------------------- 6. output folders
def test_6_output_folders_that_cannot_be_written_are_refused_at_once(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    status, lines = zooinfer("run", "dpn131", "--output-root", str(afile / "out"))
    assert_clear(status, lines, f"error: --output-root: cannot create {afile / 'out'}: {afile} is a file")
    status, lines = zooinfer("run", "dpn131", "-p", "output_root", str(afile))
    assert_clear(status, lines, f"parameter 'output_root': {afile} is a file, expected a folder")
    status, lines = zooinfer("run", "dpn131", "-p", "output_root", "/proc/zooinfer-test")
    assert_clear(status, lines, "parameter 'output_root': cannot write into /proc")
    status, lines = zooinfer("bins", "dpn131", "--out", str(afile / "prep_bin"))
    assert_clear(status, lines, f"error: --out: cannot create {afile / 'prep_bin'}: {afile} is a file")


# -------------------------------------------------------------------------------- 7. Ctrl-C
def _run_until_cells_run(tmp_path) -> subprocess.Popen:
    """``zooinfer run dpn131 -p limit 2`` in its own process group, returned once its kernel is running cells."""
    proc = subprocess.Popen([*ZOOINFER, "run", "dpn131", "-q", "--output-root", str(tmp_path), "-p", "limit", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 90
    while time.time() < deadline and not list(tmp_path.glob("dpn131/.*.partial/*.ipynb")):
        time.sleep(0.5)
    time.sleep(3)  # the kernel is running cells
    return proc


def test_7_ctrl_c_says_where_the_partial_run_is_in_one_line(tmp_path):
    proc = _run_until_cells_run(tmp_path)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    out, _ = proc.communicate(timeout=90)
    lines = [line for line in out.splitlines() if line.strip()]
    partial = next(tmp_path.glob("dpn131/.*.partial"))
    assert proc.returncode == 130 and "Traceback" not in out, out
    assert lines[-1].startswith(f"interrupted; the partial run is in {partial}"), out
    assert len(lines) <= 2, out  # at most the kernel-start line before it


# -------------------------------------------------------------------------------- 8. backends fail first
def test_8_backend_errors_come_before_the_checkpoint_and_export(tmp_path):
    status, lines = zooinfer("run", "dpn131", "--output-root", str(tmp_path), "-p", "backend", "onnxrutime")
    assert_clear(status, lines, "unknown backend 'onnxrutime' (did you mean 'onnxruntime'?); choose one of")
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        status, lines = zooinfer("run", "dpn131", "--output-root", str(tmp_path), "-p", "backend", "ort-cuda")
        assert_clear(status, lines, "parameter 'backend': 'ort-cuda' cannot open on this machine: it needs "
                                    "CUDAExecutionProvider")
    assert not any(tmp_path.iterdir())


# -------------------------------------------------------------------------------- 9 / 11. skipped share
def test_9_11_a_run_that_skipped_many_images_says_so_and_exits_3(tmp_path):
    metrics = {"skipped": {"count": 1, "of": 3, "too_many": True,
                           "summary": "1 of 3 images skipped (33.3%), not evaluated; first: /d/val/x.JPEG: not found"}}
    status, lines = fake_run(tmp_path, "run", "dpn131", "--output-root", str(tmp_path / "o"), metrics=metrics)
    assert status == 3 and "1 of 3 images skipped (33.3%)" in lines[-1], lines
    status, lines = zooinfer("run", "--help")
    assert "3    the run is complete but skipped more than 5% of its images" in "\n".join(lines)


def test_11_bins_with_a_results_folder_holding_no_result_files_is_refused(tmp_path):
    (tmp_path / "result").mkdir()
    status, lines = zooinfer("run", "dpn131", "--output-root", str(tmp_path / "o"), "-p", "backend", "bins",
                             "-p", "results_dir", str(tmp_path / "result"))
    assert_clear(status, lines, f"parameter 'results_dir': {tmp_path / 'result'} holds no result files")


# -------------------------------------------------------------------------------- 10. limit
def test_10_non_positive_limits_are_refused(tmp_path):
    status, lines = zooinfer("run", "dpn131", "--output-root", str(tmp_path), "-p", "limit", "0")
    assert_clear(status, lines, "error: parameter 'limit' must be an integer >= 1, got 0")


# -------------------------------------------------------------------------------- 12. unknown parameters
def test_12_unknown_parameters_are_refused_with_close_matches(tmp_path):
    status, lines = zooinfer("run", "dpn131", "--output-root", str(tmp_path), "-p", "batchsize", "2")
    assert_clear(status, lines, "error: unknown parameter 'batchsize' for dpn131.ipynb (did you mean "
                                "'batch_sizes'?); valid: ")
    assert not any(tmp_path.iterdir())


# -------------------------------------------------------------------------------- 13. -p output_root
def test_13_output_root_as_a_parameter_is_honoured(tmp_path):
    status, lines = fake_run(tmp_path, "run", "dpn131", "-q", "-p", "output_root", str(tmp_path / "mine"))
    assert status == 0, lines
    runs = list((tmp_path / "mine" / "dpn131").iterdir())
    assert len(runs) == 1 and lines[0] == f"report: {runs[0]}"
    status, lines = fake_run(tmp_path, "run", "dpn131", "-p", "output_root", str(tmp_path / "a"), "--output-root",
                             str(tmp_path / "b"))
    assert_clear(status, lines, "disagree; give one")


# -------------------------------------------------------------------------------- 14. md5 mismatch
def test_14_md5_mismatch_is_said_on_the_terminal(tmp_path):
    metrics = {"md5_matches": False, "checkpoint": {"file": "/w/dpn131.pth", "md5": "abc", "published_md5": "71e7",
                                                    "published_file": "dpn131-7af84be88.pth"}}
    status, lines = fake_run(tmp_path, "run", "dpn131", "--output-root", str(tmp_path / "o"), metrics=metrics)
    assert status == 0 and lines[-1].startswith("warning: /w/dpn131.pth: md5 abc differs from the published 71e7"), \
        lines


# -------------------------------------------------------------------------------- 15. bins without results_dir
def test_15_bins_without_results_dir_names_the_parameter(tmp_path):
    status, lines = zooinfer("run", "dpn131", "--output-root", str(tmp_path), "-p", "backend", "bins")
    assert_clear(status, lines, "error: backend 'bins' needs results_dir= (the folder ais_bench/benchmark wrote)")
    assert "outputs_dir" not in "\n".join(lines)


# -------------------------------------------------------------------------------- 16. unknown model
def test_16_unknown_model_lists_the_known_ones_and_creates_nothing(tmp_path):
    from zooinfer import recipes

    status, lines = zooinfer("run", "no-such-model", "--output-root", str(tmp_path))
    assert_clear(status, lines, f"error: unknown model 'no-such-model'; known: {', '.join(recipes.NAMES)}")
    assert not any(tmp_path.iterdir())


# -------------------------------------------------------------------------------- 17. partial folders
def test_17_list_shows_partial_folders_and_clean_removes_them(tmp_path):
    partial = tmp_path / "dpn131" / ".20260101-000000-dpn131-999999999.partial"
    partial.mkdir(parents=True)
    status, lines = zooinfer("list", "--output-root", str(tmp_path))
    assert status == 0 and f"  {partial}" in lines and "zooinfer clean --yes" in "\n".join(lines)
    status, lines = zooinfer("clean", "--output-root", str(tmp_path))
    assert status == 0 and partial.exists() and lines[-1].endswith("run zooinfer clean --yes to remove them")
    status, lines = zooinfer("clean", "--output-root", str(tmp_path), "--yes")
    assert status == 0 and lines == [f"removed {partial}"] and not partial.exists()


# -------------------------------------------------------------------------------- 18. a clear error in the notebook
def test_18_a_clear_error_inside_the_notebook_is_shown_without_its_traceback(tmp_path):
    (tmp_path / "imagenet").mkdir()  # exists (the configuration accepts it) but has no val/ folder
    status, lines = zooinfer("run", "dpn131", "-q", "--output-root", str(tmp_path / "o"), "-p", "data_root",
                             str(tmp_path / "imagenet"), timeout=180)
    assert_clear(status, lines, f"error: ImageNet validation image folder not found: {tmp_path / 'imagenet' / 'val'}",
                 "stopped in cell 'prepare' (In [", "the executed notebook (full traceback): ")
    executed = Path(lines[-2].split(": ", 1)[1])
    assert executed.is_file() and "DatasetError" in executed.read_text()  # the full traceback stays there


# -------------------------------------------------------------------------------- issue 22, 2. names become paths
def test_22_2_bins_refuses_names_from_a_crafted_mat_and_writes_nothing_outside_out(tmp_path):
    from PIL import Image

    from zooinfer.metrics.widerface import write_ground_truth

    root = tmp_path / "wider"
    for event in ("0--Parade", "1--Handshaking"):
        (root / "WIDER_val" / "images" / event).mkdir(parents=True)
    Image.new("RGB", (64, 48)).save(root / "WIDER_val" / "images" / "0--Parade" / "0_Parade_a_1.jpg")
    Image.new("RGB", (64, 48)).save(root / "WIDER_val" / "evil.jpg")  # images/1--Handshaking/../../evil.jpg
    write_ground_truth(root / "eval_tools" / "ground_truth", {"0--Parade": {"0_Parade_a_1": [[1, 2, 10, 10]]},
                                                            "1--Handshaking": {"../../evil": [[1, 2, 3, 4]]}})
    status, lines = zooinfer("bins", "pyramidbox", "--data-root", str(root), "--out", str(tmp_path / "out" / "prep"))
    assert_clear(status, lines, "wider_face_val.mat: image name '../../evil' is not a plain file name")
    assert not list(tmp_path.rglob("*.bin")) and not list(tmp_path.rglob("*.info"))


# -------------------------------------------------------------------------------- issue 22, 14. a full disk
def test_22_14_bins_on_a_full_disk_stops_naming_the_file_and_leaves_no_truncated_bin(tmp_path):
    """A file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) makes the first 602,112-byte .bin fail as a full disk does."""
    import resource

    from zooinfer.datasets.imagenet import imagenet_sample_root

    imagenet_sample_root()  # built before the limit

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    out = tmp_path / "prep_bin"
    proc = subprocess.run([*ZOOINFER, "bins", "dpn131", "--out", str(out), "--limit", "2"], capture_output=True,
                          text=True, timeout=120, preexec_fn=limit_file_size)
    lines = (proc.stdout + proc.stderr).splitlines()
    assert_clear(proc.returncode, lines, f"cannot write {out / 'ILSVRC2012_val_00000001.bin'}", "File too large")
    assert list(out.iterdir()) == [] and not (tmp_path / "prep_bin.info").exists()


# -------------------------------------------------------------------------------- issue 22, 8. a full disk
def test_i22_8_a_run_whose_report_does_not_fit_on_the_disk_stays_partial_and_exits_2(tmp_path):
    """The executed notebook and metrics.json fit in 64 kB; the rendered HTML (its CSS alone is larger) does not."""
    status, lines = fake_run(tmp_path, "run", "dpn131", "-q", "--output-root", str(tmp_path / "o"),
                             env={"FAKE_FSIZE": str(64_000)})
    (partial,) = (tmp_path / "o" / "dpn131").iterdir()
    assert_clear(status, lines, f"error: could not write {partial / 'dpn131.html'}: [Errno 27] File too large",
                 f"the run folder stays {partial} (incomplete)")
    names = {p.name for p in partial.iterdir()}
    assert partial.name.endswith(".partial") and {"dpn131.ipynb", "metrics.json"} <= names
    assert not [n for n in names if n.endswith(".html") or ".tmp" in n], names  # no truncated HTML, no temp file
    assert not any(line.startswith("report:") for line in lines)


# -------------------------------------------------------------------------------- issue 22, 16. SIGTERM
def _children(pid: int) -> set[int]:
    """The process ids below ``pid`` (its kernel among them)."""
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = {int(c) for c in (task / "children").read_text().split()}
            except OSError:
                continue
            todo += kids - found
            found |= kids
    return found


def _alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def test_i22_16_sigterm_says_where_the_partial_run_is_and_shuts_the_kernel_down(tmp_path):
    proc = _run_until_cells_run(tmp_path)
    kernel = _children(proc.pid)
    assert kernel, "no kernel started"
    proc.send_signal(signal.SIGTERM)  # what a job scheduler or `kill` sends: to zooinfer alone
    out, _ = proc.communicate(timeout=90)
    lines = [line for line in out.splitlines() if line.strip()]
    partial = next(tmp_path.glob("dpn131/.*.partial"))
    assert proc.returncode == 143 and "Traceback" not in out, out
    assert lines[-1] == (f"terminated (SIGTERM); the partial run is in {partial}: zooinfer run dpn131 --resume "
                         f"{partial} continues it (zooinfer clean --yes removes it)"), out
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(pid) for pid in kernel):
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in kernel), "the kernel outlived zooinfer"


# -------------------------------------------------------------------------------- issue 22, 1. values run as code
def _binary_payload(marker: Path) -> str:
    """A YAML !!binary value whose bytes papermill would write into the notebook as ``"b'" + str(...) + "'"``: code
    that creates ``marker``."""
    import base64

    code = f'" + str(__import__("os").system("touch {marker}")) + "'
    return "!!binary " + base64.b64encode(code.encode()).decode()


@pytest.mark.parametrize("via", ["file", "-p results_dir", "-p ray_address"])
def test_22_1_a_binary_parameter_value_is_refused_before_papermill(tmp_path, via):
    marker = tmp_path / "pwned"
    if via == "file":
        params = tmp_path / "params.yaml"
        params.write_text(f"bs: 1\nom_path: {_binary_payload(marker)}\n")
        argv, name = ["-f", str(params)], "om_path"
    else:
        name = via.split()[1]
        argv = ["-p", name, _binary_payload(marker)]
    status, lines = fake_run(tmp_path, "run", "dpn131", "--output-root", str(tmp_path / "out"), *argv)
    assert_clear(status, lines, f"parameter '{name}': its value is binary data", "not plain data")
    assert len([line for line in lines if line.startswith("error:")]) == 1
    assert not marker.exists() and not (tmp_path / "out").exists()  # no notebook started, nothing created


def test_22_6_a_bool_is_not_an_iou_threshold(tmp_path):
    status, lines = fake_run(tmp_path, "run", "pyramidbox", "--output-root", str(tmp_path / "out"),
                             "-p", "iou_thresh", "yes")
    assert_clear(status, lines, "metric parameter 'iou_thresh' must be a number in (0, 1], got True")
    assert not (tmp_path / "out").exists()


def test_22_15_a_zero_latency_bound_is_refused_up_front_in_ms(tmp_path):
    status, lines = fake_run(tmp_path, "run", "dpn131", "--output-root", str(tmp_path / "out"),
                             "-p", "scenarios", "[Server]", "-p", "latency_bound_ms", "0")
    assert_clear(status, lines, "parameter 'latency_bound_ms' must be a number of ms > 0, got 0")
    assert not (tmp_path / "out").exists()


def test_22_15_a_bad_environment_variable_is_refused_up_front(tmp_path):
    status, lines = fake_run(tmp_path, "run", "dpn131", "--output-root", str(tmp_path / "out"),
                             env={"ZOOINFER_FLUSH_S": "soon"})
    assert_clear(status, lines, "environment variable ZOOINFER_FLUSH_S='soon': expected a number > 0")
    assert not (tmp_path / "out").exists()


# -------------------------------------------------------------------------------- issue 22, 11. parity failure
def test_i22_11_a_parity_failure_is_said_on_the_terminal(tmp_path):
    failure = "parity failed: output class differs by up to 3 (60% of its largest value) ..."
    status, lines = fake_run(tmp_path, "run", "dpn131", "--output-root", str(tmp_path / "o"),
                             metrics={"onnx": {"parity_failure": failure}})
    assert status == 0 and lines[-1] == f"warning: {failure}; no verdict is given", lines
