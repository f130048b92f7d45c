#!/usr/bin/env python3
"""Write notebooks/dpn131.ipynb, the reference notebook the other models mirror (run once; the .ipynb is committed).

usage: python tools/make_notebook.py
"""
from pathlib import Path

import nbformat as nbf

INTRO = """# DPN-131 on ImageNet-1k val: checkpoint -> ONNX -> accuracy -> speed

Replaces the Ascend ModelZoo guide `ACL_PyTorch/contrib/cv/classfication/DPN131` (pth2onnx, preprocess to `.bin`,
benchmark, accuracy script). Run headlessly:

```
papermill notebooks/dpn131.ipynb out.ipynb -p bs 8                                   # embedded sample, synthetic weights
papermill notebooks/dpn131.ipynb out.ipynb -f params/dpn131.yaml \\
    -p weights /data/dpn131-7af84be88.pth -p data_root /data/imagenet              # the real figures
```
Every fact (preprocessing constants, ONNX names, published figures) comes from `zooinfer.recipes.dpn131`."""

PARAMS = """model = "dpn131"
weights = None          # the published checkpoint file as downloaded (dpn131-7af84be88.pth), None for synthetic weights
data_root = None        # ImageNet root holding val/ and val_label.txt, None for the embedded sample
backend = "onnxruntime" # onnxruntime | ort-cuda | ort-tensorrt | torch | torch-cuda | acl | bins
bs = 8                  # batch size of the evaluation run
limit = None            # evaluate only the first N images (None: all)
static_batch = False    # export the ONNX graph with a fixed batch of bs (as the OM files are)
batch_sizes = [1, 8]    # pure-inference sweep
bench_min_time = 1.0    # seconds per batch size in the sweep
profile_ops = False     # add the ONNX Runtime per-operator profile (top operators by time)
prep_threads = None     # preprocessing threads per process (None: a quarter of the CPUs)
workers = 1             # processes evaluating shards of the dataset (more than 1 uses Ray)
ray_address = None      # Ray cluster to join (auto, or host:port), None for a local Ray instance
threads = None          # inference threads (None: physical cores)
om_path = None          # for backend acl: the .om file atc produced
results_dir = None      # for backend bins: the folder ais_bench or benchmark wrote
output_root = None      # parent of outputs/<model>/<run-id>/ (None: outputs/ of this checkout)"""

SETUP = """import matplotlib.pyplot as plt
from zooinfer import report
from zooinfer.evaluation import Evaluation

ev = Evaluation(model, weights=weights, data_root=data_root, backend=backend, bs=bs, limit=limit,
                static_batch=static_batch, prep_threads=prep_threads, threads=threads, om_path=om_path,
                workers=workers, ray_address=ray_address,
                results_dir=results_dir, output_root=output_root,
                params=dict(model=model, weights=weights, data_root=data_root, backend=backend, bs=bs, limit=limit,
                            static_batch=static_batch, batch_sizes=batch_sizes, workers=workers))
ev.banner();"""

PREPARE = """info = ev.prepare()
report.show([info], "Checkpoint and dataset")"""

EXPORT = """onnx_info = ev.export()
report.show([{k: onnx_info[k] for k in ("path", "opset", "inputs", "outputs", "size_mb")}], "ONNX file")
report.show(ev.parity_rows, "Parity: PyTorch eager vs ONNX Runtime on real preprocessed samples")
print("batch invariance (max abs, batch vs one at a time):", ev.batch_invariance)"""

EVALUATE = """result = ev.evaluate()
report.show(ev.accuracy(), "Accuracy vs published")
report.show(result.stage_table(), "Stage timings (summed per stage; stages overlap in wall time)")
if result.skipped:
    report.show([{"key": k, "path": p, "reason": r} for k, p, r in result.skipped], "Skipped images")"""

VISUAL = """from zooinfer.viz.classification import show_top5
show_top5(result.kept);"""

BENCH = """rows = ev.benchmark(batch_sizes, min_time=bench_min_time)
report.show(rows, "Pure inference per batch size", ["backend", "bs", "throughput", "latency_ms_p50",
                                                     "latency_ms_p90", "latency_ms_p99", "cv", "unstable"])
print(f"best batch size for {backend} on this machine: {ev.best_batch()} (of {sorted(set(r['bs'] for r in rows))})")
report.show([{"ratio": k, "value": round(v, 3)} for k, v in ev.ratios().items()], "Ratios")
if profile_ops:
    report.show(ev.profile(), f"ONNX Runtime per-operator profile, bs {bs} (top operators by time)")
report.show([{"hardware": p.hardware, "source": p.source, **{f"bs{b}": f for b, f in p.fps.items()}}
             for p in ev.recipe.published.performance], "Published throughput (images/s)")
report.plot_throughput(rows, title=f"{model}: this machine vs published", published=ev.recipe.published.performance);"""

ASCEND = """report.show("\\n".join(f"- {k}: `{v}`" for k, v in ev.ascend_commands().items()), "Ascend NPU path")"""

FINISH = """run_dir = ev.finish()
print("report written to", run_dir)"""


def main() -> None:
    nb = nbf.v4.new_notebook()
    cells = [nbf.v4.new_markdown_cell(INTRO), nbf.v4.new_code_cell(PARAMS)]
    cells[1].metadata["tags"] = ["parameters"]
    for md, code in (("## Set-up", SETUP), ("## Checkpoint and dataset", PREPARE), ("## ONNX export", EXPORT),
                     ("## Accuracy", EVALUATE), ("## Predictions", VISUAL), ("## Speed", BENCH),
                     ("## Ascend", ASCEND), ("## Report", FINISH)):
        cells += [nbf.v4.new_markdown_cell(md), nbf.v4.new_code_cell(code)]
    nb.cells = cells
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    out = Path(__file__).resolve().parents[1] / "notebooks" / "dpn131.ipynb"
    nbf.write(nb, out)
    print("wrote", out)


if __name__ == "__main__":
    main()
