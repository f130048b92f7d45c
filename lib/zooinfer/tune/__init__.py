"""The fastest configuration that still passes: an accuracy-aware search for the layers to keep in higher precision,
the chosen set written the way each toolchain takes it, and the fastest-passing table.

    from zooinfer.tune import tune_run
    outcome = tune_run(config, variant="onnxruntime-int8", budget=0.01, rank_subset=64)   # what `zooinfer tune` does

- :mod:`~zooinfer.tune.search`: per-sample predictions, the reference they are judged against, the two-stage ranking
  (cheap tensor noise, then the per-sample metric of the top candidates) and the greedy keep-one-more loop;
- :mod:`~zooinfer.tune.files`: ``<run folder>/precision/`` (ONNX Runtime, NNCF, Ascend ATC forms) and the atc line;
- :mod:`~zooinfer.tune.fastest`: runtime x precision x batch size rows, the fastest passing one marked;
- :mod:`~zooinfer.tune.run`: the whole command (``zooinfer tune``) and the notebook section.

docs/precision.md says which route was chosen (ONNX Runtime's ``nodes_to_exclude``) and why.
"""
from __future__ import annotations

from .run import TuneOutcome, tune_evaluation, tune_run  # noqa: F401
