"""benchmarks/stream.py at a tiny size: a real SIGKILL in the middle of a stream into the prediction store, the
resume scoring only the missing samples and giving the uninterrupted metrics; the verdict failing on a wrong
resume; the image folder generated once and reused; the report and the README section."""
from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "stream.py"
N, CHUNK = 300, 32
#: the children: the real DPN131 recipe on the null backend, shapes from the stub (no 5 s DPN131 forward per
#: child), 10 ms per batch of 8 so a 300-image stream lasts ~0.4 s and is killed in its middle, not after it
OPTS = {"bs": 8, "prep_threads": 2, "fill": "content", "chunk_size": CHUNK, "throttle_s": 0.01, "shape_model": "stub"}


@pytest.fixture(scope="module")
def stream():
    spec = importlib.util.spec_from_file_location("stream_benchmark", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # importable by name: generate() hands its writer to worker processes
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def killed(stream, tmp_path_factory):
    """(data folder, work folder, uninterrupted reference, kill/resume figures) of one tiny run."""
    data = tmp_path_factory.mktemp("stream-data")
    work = tmp_path_factory.mktemp("stream-work")
    stream.generate(data, N, workers=2)
    # the reference runs in this process (the same child function): one process start fewer
    reference = stream.child(stream._spec(OPTS, str(data), N, work / "reference", work / "ranks-reference.npy"))
    kr = stream.kill_and_resume(str(data), N, work, OPTS, kill_at=0.5, timeout_s=120)
    return data, work, reference, kr


def test_a_real_sigkill_mid_stream_then_resume_scores_only_the_missing_samples(stream, killed):
    data, work, reference, kr = killed
    kill, res = kr["kill"], kr["resume"]
    assert kill["returncode"] == -9  # SIGKILL, not a clean end
    # killed in the middle: some but not all samples stored, at most one chunk's worth scored but lost
    assert 0 < kill["stored_at_kill"] < N
    assert kill["stored_at_kill"] % CHUNK == 0  # only whole chunks survive (the last one was being filled)
    assert N // 2 - CHUNK <= kill["stored_at_kill"] <= N // 2 + CHUNK
    assert 0 <= kill["lost"] < CHUNK and kill["scored_at_kill"] >= N // 2
    # the resume took exactly what was stored from the store and computed only the rest
    assert res["n_stored"] == kill["stored_at_kill"]
    assert res["n_done"] == N and res["skipped"] == 0
    assert res["process_start_to_first_new_s"] is not None
    assert res["process_start_to_pipeline_s"] < res["process_start_to_first_new_s"] < res["process_start_to_end_s"]
    # metrics and every sample's rank identical to the uninterrupted run (the content-marked logits make them
    # depend on which prediction belongs to which image)
    assert reference["n_done"] == N and 0 < reference["metrics"]["top1"] < reference["metrics"]["top5"] < 1
    assert res["metrics"] == reference["metrics"]
    assert np.array_equal(np.load(res["ranks"]), np.load(reference["ranks"]))
    assert stream.verdict(reference, kr) == []
    # the store the resume completed holds every sample once
    from zooinfer.store import PredictionStore

    assert len(PredictionStore.open(work / "killed", writable=False)) == N


def test_the_verdict_fails_a_resume_that_recomputed_or_scored_differently(stream, killed, tmp_path):
    _, _, reference, kr = killed
    recomputed = copy.deepcopy(kr)
    recomputed["resume"]["n_stored"] = 0
    assert any("took 0 samples from the store" in p for p in stream.verdict(reference, recomputed))
    other = copy.deepcopy(kr)
    other["resume"]["metrics"] = {**kr["resume"]["metrics"], "top1": kr["resume"]["metrics"]["top1"] + 1 / N}
    assert any("metrics differ" in p for p in stream.verdict(reference, other))
    ranks = np.load(kr["resume"]["ranks"]).copy()
    ranks[0] = (ranks[0] + 1) % 6  # one sample's rank (0..5) changed, the metrics dict left alone
    np.save(tmp_path / "other-ranks.npy", ranks)
    moved = copy.deepcopy(kr)
    moved["resume"]["ranks"] = str(tmp_path / "other-ranks.npy")
    assert any("ranks differ" in p for p in stream.verdict(reference, moved))
    nothing = copy.deepcopy(kr)
    nothing["kill"]["stored_at_kill"] = N
    assert any("expected some, not all" in p for p in stream.verdict(reference, nothing))


def test_the_images_are_generated_once_reused_and_a_foreign_folder_is_refused(stream, killed, tmp_path):
    data = killed[0]
    again = stream.generate(data, N)
    assert not again["generated"]
    names = sorted(p.name for p in (data / "val").iterdir())
    assert len(names) == N and names[0] == "ILSVRC2012_val_00000001.JPEG"
    from zooinfer.datasets.imagenet import open_imagenet

    ds = open_imagenet(data)
    assert len(ds) == N and {s.target for s in ds} <= set(range(stream.CLASSES))
    small = tmp_path / "small"
    assert stream.generate(small, 20, workers=1)["generated"]
    assert stream.generate(small, 30, workers=1)["generated"]  # its own folder, another count: regenerated
    assert len(open_imagenet(small)) == 30
    foreign = tmp_path / "foreign"
    (foreign / "val").mkdir(parents=True)
    (foreign / "val_label.txt").write_text("x.JPEG 1\n")
    with pytest.raises(SystemExit, match="did not generate"):
        stream.generate(foreign, 20)


def test_the_report_and_readme_section(stream, killed, tmp_path):
    _, _, reference, kr = killed
    args = vars(stream.parse_args(["--images", str(N), "--memory-short", "100", "--chunk-size", str(CHUNK)]))
    doc = {"when": "2026-12-02T00:00:00", "commit": "abc", "args": args, "reference_metrics": reference["metrics"],
           "kill_resume": kr, "problems": stream.verdict(reference, kr), "load_end": "1.00, 1.00, 1.00",
           "memory": [{"numpy_hugepages": mode, "rep": 1, "short": reference, "long": reference, "growth_mib": 0.0,
                       "growth": 0.0, "stream_mib_short": 1.0, "stream_mib_long": 1.0,
                       "per_sample_state_growth_mib": 0.0} for mode in ("on", "off")]}
    text = stream.section(doc, "python benchmarks/stream.py --images 300")
    assert text.startswith("## Full-size stream (300 images, null backend)\n")
    assert "| samples stored at the kill |" in text and "| PASS |" in text
    assert "| on | 1 | 300 / 300 |" in text and "| off | 1 | 300 / 300 |" in text and "**0.00%**" in text
    assert "growth median **0.00%**" in text and "met in every repetition" in text
    json.dumps(doc)  # what stream-latest.json holds
    readme = tmp_path / "README.md"
    readme.write_text("# B\n\n## Other\n\nkeep\n\n## Full-size stream (9 images, null backend)\n\nOLD-FIGURES\n\n"
                      "## Last\n\nz\n")
    stream.bench.replace_section(readme, stream.HEADING_PREFIX, text)
    out = readme.read_text()
    assert "OLD-FIGURES" not in out and out.count("## Full-size stream (") == 1
    assert out.index("## Other") < out.index("## Full-size stream (300") < out.index("## Last") and "keep" in out


def test_help_explains_the_options(stream, capsys):
    with pytest.raises(SystemExit):
        stream.parse_args(["--help"])
    text = capsys.readouterr().out
    for option in ("--images", "--quick", "--data", "--kill-images", "--kill-at", "--chunk-size", "--no-readme",
                   "SIGKILL", "Growth", "--fill", "--shape-model"):
        assert option in text
