"""Runs that survive: a SIGKILLed run resumed gives the uninterrupted metrics; a different run is refused; the CLI
continues an interrupted run folder."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zooinfer import pipeline
from zooinfer.backends import Artefacts, get
from zooinfer.datasets.base import ImageDataset, Sample
from zooinfer.evaluation import Evaluation
from zooinfer.metrics.classification import TopKAccumulator, compact_logits
from zooinfer.store import PredictionStore, ResumeRefused

TESTS = Path(__file__).resolve().parent
N_IMAGES = 48


def _images(folder: Path, n: int = N_IMAGES) -> ImageDataset:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    samples = []
    for i in range(n):
        path = folder / f"img{i:03d}.jpg"
        if not path.exists():
            Image.fromarray(rng.integers(0, 255, (10 + i % 5, 12, 3), dtype=np.uint8)).save(path)
        samples.append(Sample(path.stem, str(path), i % 4))
    return ImageDataset("resume", folder, samples)


def topk_recipe():
    """The tiny recipe with top-k metrics and compact top-k predictions (what DPN131 stores)."""
    from conftest import make_recipe

    return dataclasses.replace(make_recipe(), postprocess=lambda outputs, meta: outputs[0],
                               new_accumulator=lambda ds: TopKAccumulator(), compact=compact_logits)


#: the child: the whole pipeline over the images, slowed down so the parent can kill it in the middle
CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_resume import _images, topk_recipe, _session
    from zooinfer import pipeline
    from zooinfer.store import PredictionStore
    from pathlib import Path

    class Slow:
        def __init__(self, inner):
            self.inner, self.name, self.input_shape = inner, inner.name, inner.input_shape
        def run(self, batch):
            time.sleep(0.15)
            return self.inner.run(batch)

    data = _images(Path({images!r}))
    store = PredictionStore.create({run!r}, {{"model": "tiny"}})
    pipeline.run(topk_recipe(), data, Slow(_session({onnx!r})), bs=2, store=store, progress=False, prep_threads=1)
    print("FINISHED")
""")


def _session(onnx: str):
    return get("onnxruntime").open(Artefacts(onnx_path=onnx))


def test_sigkill_in_the_middle_then_resume_gives_the_uninterrupted_metrics(tmp_path, tiny_onnx):
    data = _images(tmp_path / "images")
    run = tmp_path / "run"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(TESTS), images=str(tmp_path / "images"), run=str(run),
                                   onnx=str(tiny_onnx)))
    env = {**os.environ, "ZOOINFER_CHUNK_SIZE": "4"}
    child = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    index = run / "predictions" / "index.jsonl"
    deadline = time.monotonic() + 120
    stored = 0
    while time.monotonic() < deadline and child.poll() is None:
        if index.is_file():
            stored = sum(json.loads(line)["n"] for line in index.read_text().splitlines() if line.endswith("}"))
            if stored >= N_IMAGES // 2:
                break
        time.sleep(0.02)
    assert child.poll() is None, f"the child ended before the kill: {child.communicate()}"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    store = PredictionStore.open(run)
    at_kill = len(store)
    assert N_IMAGES // 2 <= at_kill < N_IMAGES, "the kill must leave a partly stored run"
    assert not list(store.folder.glob(".chunk-*")), "no half-written chunk is left behind"

    recipe = topk_recipe()
    resumed = pipeline.run(recipe, data, _session(str(tiny_onnx)), bs=2, store=store, progress=False)
    assert resumed.n_stored == at_kill  # only the missing samples ran
    assert len(PredictionStore.open(run, writable=False)) == N_IMAGES
    whole = pipeline.run(recipe, data, _session(str(tiny_onnx)), bs=2, progress=False)
    assert resumed.metrics == whole.metrics
    assert resumed.accumulator.keys == whole.accumulator.keys  # and in dataset order
    np.testing.assert_array_equal(resumed.accumulator.ranks, whole.accumulator.ranks)
    # the rescore from the completed store alone agrees as well
    assert pipeline.rescore(recipe, data, PredictionStore.open(run, writable=False)).metrics == whole.metrics


class _Interrupting:
    """A session that stops the run (as Ctrl-C would) after ``after`` batches."""

    def __init__(self, inner, after: int):
        self.inner, self.after, self.name, self.calls = inner, after, inner.name, 0

    def run(self, batch):
        self.calls += 1
        if self.calls > self.after:
            raise KeyboardInterrupt
        return self.inner.run(batch)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def interrupted_pcb(tmp_path_factory):
    """A PCB run (embedded sample, synthetic weights) interrupted after 3 batches of 2: its partial folder."""
    root = tmp_path_factory.mktemp("outputs")
    os.environ["ZOOINFER_CHUNK_SIZE"] = "2"
    try:
        ev = Evaluation.for_model("pcb", bs=2, output_root=str(root), progress=False)
        ev.prepare()
        ev.session = _Interrupting(ev.session_for(), after=3)
        with pytest.raises(KeyboardInterrupt):
            ev.evaluate()
    finally:
        del os.environ["ZOOINFER_CHUNK_SIZE"]
    folder = ev.run_folder().path
    assert folder.name.endswith(".partial") and not (folder / "metrics.json").exists()
    return root, folder, len(PredictionStore.open(folder))


def test_an_interrupted_evaluation_leaves_its_predictions_and_resumes(interrupted_pcb, tmp_path):
    root, folder, stored = interrupted_pcb
    assert 0 < stored < 17
    copy = tmp_path / folder.name
    subprocess.run(["cp", "-r", str(folder), str(copy)], check=True)
    ev = Evaluation.for_model("pcb", bs=2, resume=str(copy), progress=False)
    ev.prepare()
    result = ev.evaluate()
    assert result.n_stored == stored and result.stored["from_interrupted_run"] == stored
    final = ev.finish()
    assert final == tmp_path / folder.name.lstrip(".").removesuffix(".partial") and not copy.exists()
    whole = Evaluation.for_model("pcb", bs=2, output_root=str(tmp_path / "whole"), progress=False)
    whole.prepare()
    assert result.metrics == whole.evaluate().metrics
    doc = json.loads((final / "metrics.json").read_text())
    assert doc["predictions"]["resumed_from"] == str(copy)


def test_resume_with_another_checkpoint_or_batch_size_is_refused(interrupted_pcb, tmp_path):
    _, folder, _ = interrupted_pcb
    from zooinfer.models import build_model

    weights = tmp_path / "PCB_3_7.pt"
    torch.save(build_model("pcb", None).state_dict(), weights)
    # refused up front, before prepare/export (issue 22, item 15): the configuration's check compares what it knows
    with pytest.raises(ResumeRefused, match=r"differs from the stored one in checkpoint \(md5: 'synthetic weights' "
                                            r"-> '[0-9a-f]{32}'\)"):
        Evaluation.for_model("pcb", bs=2, resume=str(folder), weights=str(weights), progress=False)
    with pytest.raises(ResumeRefused, match=r"backend settings \(bs: 2 -> 4\)"):
        Evaluation.for_model("pcb", bs=4, resume=str(folder), progress=False)
    # and the evaluation compares the whole fingerprint again when it opens the store
    from zooinfer.config import RunConfig

    ev = Evaluation(RunConfig.from_parameters({"model": "pcb", "bs": 4, "resume": str(folder), "progress": False},
                                              check=False))
    ev.prepare()
    with pytest.raises(ResumeRefused, match=r"backend settings \(bs: 2 -> 4\)"):
        ev.evaluate()


def test_resume_of_a_folder_without_predictions_is_a_clear_error(tmp_path):
    from zooinfer.errors import ZooinferError

    with pytest.raises(ZooinferError, match="parameter 'resume': run folder not found"):
        Evaluation.for_model("pcb", resume=str(tmp_path / "nope"))
    with pytest.raises(ZooinferError, match="parameter 'resume': .* holds no stored predictions"):
        Evaluation.for_model("pcb", resume=str(tmp_path))


def test_cli_resume_continues_the_interrupted_run_with_its_parameters(interrupted_pcb, tmp_path):
    _, folder, stored = interrupted_pcb
    copy = tmp_path / folder.name
    subprocess.run(["cp", "-r", str(folder), str(copy)], check=True)
    proc = subprocess.run([sys.executable, "-m", "zooinfer.cli", "run", "pcb", "--resume", str(copy), "-q",
                           "-p", "compare", "[]", "-p", "scenarios", "[]", "-p", "batch_sizes", "[2]",
                           "-p", "bench_min_time", "0.05"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = tmp_path / folder.name.lstrip(".").removesuffix(".partial")
    doc = json.loads((final / "metrics.json").read_text())
    assert doc["parameters"]["bs"] == 2  # the interrupted run's parameters, not the notebook's defaults
    assert doc["predictions"]["from_interrupted_run"] == stored
    assert (final / "pcb-report.html").is_file() and not copy.exists()


# ------------------------------------------------------------------------------------------------ issue 22 items
def _copy(folder: Path, tmp_path: Path) -> Path:
    copy = tmp_path / folder.name
    subprocess.run(["cp", "-r", str(folder), str(copy)], check=True)
    (copy / "pcb.ipynb").write_text("the interrupted run's executed notebook")
    return copy


def test_13_a_resume_recomputes_an_unreadable_chunk_and_says_so(interrupted_pcb, tmp_path):
    _, folder, stored = interrupted_pcb
    copy = _copy(folder, tmp_path)
    chunk = copy / "predictions" / "chunk-000002.npz"
    chunk.write_bytes(chunk.read_bytes()[:50])  # torn
    ev = Evaluation.for_model("pcb", bs=2, resume=str(copy), progress=False)
    ev.prepare()
    with pytest.warns(UserWarning, match=r"2 samples of chunk-000002.npz unreadable \(BadZipFile.*\): recomputed"):
        result = ev.evaluate()
    assert result.n_stored == stored - 2
    whole = Evaluation.for_model("pcb", bs=2, output_root=str(tmp_path / "whole"), progress=False)
    whole.prepare()
    assert result.metrics == whole.evaluate().metrics


def _cli(*argv: str) -> tuple[int, str]:
    import contextlib
    import io

    from zooinfer import cli

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = cli.main(list(argv))
    return status, err.getvalue()


@pytest.mark.parametrize("holder", ["resume", "writer"])
def test_4_17_a_resume_of_a_folder_in_use_is_refused_at_once_and_writes_nothing(interrupted_pcb, tmp_path, holder):
    from zooinfer.store import RunLock

    _, folder, _ = interrupted_pcb
    copy = _copy(folder, tmp_path)
    lock = RunLock.take(copy, doing="resumed") if holder == "resume" else PredictionStore.open(copy)
    before = sorted((p.relative_to(copy), p.stat().st_mtime_ns) for p in copy.rglob("*") if p.name != ".run.lock")
    try:
        started = time.monotonic()
        status, err = _cli("run", "pcb", "--resume", str(copy), "-q")
        assert time.monotonic() - started < 30, "refused at once, before the notebook runs"
    finally:
        lock.release()
    what = "resumed" if holder == "resume" else "written"
    assert status == 2 and f"{copy} is being {what} by another process (pid {os.getpid()})" in err, err
    assert "clean" not in err
    assert sorted((p.relative_to(copy), p.stat().st_mtime_ns) for p in copy.rglob("*")
                  if p.name != ".run.lock") == before
    assert (copy / "pcb.ipynb").read_text() == "the interrupted run's executed notebook"


def test_17_a_refused_resume_leaves_the_interrupted_runs_notebook(interrupted_pcb, tmp_path):
    _, folder, _ = interrupted_pcb
    copy = _copy(folder, tmp_path)
    status, err = _cli("run", "pcb", "--resume", str(copy), "-q", "-p", "bs", "4")
    assert status == 2 and r"differs from the stored one in backend settings (bs: 2 -> 4)" in err, err
    assert "clean" not in err
    assert (copy / "pcb.ipynb").read_text() == "the interrupted run's executed notebook"


def test_7_a_resume_after_the_ground_truth_changed_is_refused_naming_the_file(tmp_path):
    import shutil

    from zooinfer import recipes
    from zooinfer.config import RunConfig
    from zooinfer.datasets.widerface import widerface_sample_root
    from zooinfer.evaluation import check_resume_dataset, run_fingerprint

    root = tmp_path / "wider"
    shutil.copytree(widerface_sample_root(), root)
    params = {"model": "pyramidbox", "data_root": str(root), "output_root": str(tmp_path / "out")}
    recipe = recipes.get("pyramidbox")
    data = recipe.open_dataset(str(root))
    partial = tmp_path / "out" / "pyramidbox" / ".20261202-000000-pyramidbox-1.partial"
    config = RunConfig.from_parameters(params)
    PredictionStore.create(partial, run_fingerprint(config, recipe, data, data, None)).close()
    check_resume_dataset(RunConfig.from_parameters({**params, "resume": str(partial)}))  # the same: accepted
    mats = root / "eval_tools" / "ground_truth"
    (mats / "wider_hard_val.mat").write_bytes((mats / "wider_easy_val.mat").read_bytes())
    status, err = _cli("run", "pyramidbox", "--resume", str(partial), "-q")
    assert status == 2 and f"ground-truth files (changed: {mats / 'wider_hard_val.mat'})" in err, err
    assert not (partial / "pyramidbox.ipynb").exists()
