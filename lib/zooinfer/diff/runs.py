"""The two runs a diff compares: each folder read and checked (read-only), the pair checked comparable, the samples
both hold, and what differs in their parameters, environments and speed figures (from each run's metrics.json)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ZooinferError
from ..store import FOLDER, PredictionStore


class DiffInputError(ZooinferError):
    """Input ``zooinfer diff`` refuses (exit 2): not a run folder, a partial run, one without stored predictions,
    two runs of different models, datasets or selections, thresholds that are not numbers."""


#: where a rescore writes its report inside a run folder (``rescore.RESCORED``; a diff may be given such a folder)
RESCORED = "rescored"


@dataclass
class RunSide:
    """One run of a diff: the folder as given (``given``), the run folder holding ``predictions/`` (``folder``: its
    parent's parent for a rescored report), the run's metrics.json (``metrics``), the rescored one (``rescored``),
    its store (read-only), configuration and fingerprint, and the metric parameters a rescore changed
    (``overrides``)."""

    label: str
    given: Path
    folder: Path
    metrics: dict
    store: PredictionStore
    config: Any
    fingerprint: dict
    overrides: dict = field(default_factory=dict)
    rescored: dict | None = None

    @property
    def model(self) -> str:
        return self.store.model()

    @property
    def accuracy(self) -> dict:
        """The figures the run (or its rescore) reported."""
        doc = self.rescored if self.rescored is not None else self.metrics
        return doc.get("accuracy") or {}

    @property
    def skipped_keys(self) -> set[str]:
        """The samples the run skipped (unreadable images), from its metrics.json."""
        images = (self.metrics.get("skipped") or {}).get("images") or []
        return {str(i.get("key")) for i in images if isinstance(i, dict)}


def _read_json(path: Path, what: str) -> dict:
    from ..report import read_json_object

    try:
        return read_json_object(path)
    except ValueError as e:
        raise DiffInputError(f"{what} {path}: {e}") from None


def open_run(path: str | Path, label: str) -> RunSide:
    """The run in ``path`` (a finished run folder ``outputs/<model>/<run-id>``, or a rescored report in it,
    ``<run>/rescored/<id>``), read-only; :class:`DiffInputError` naming ``label`` (RUN_A / RUN_B) and the folder when
    it is not a run, a partial run, or a run without stored predictions."""
    from ..rescore import stored_config

    given = Path(path)
    where = f"{label} {given}"
    if not given.exists():
        raise DiffInputError(f"{where}: no such folder (expected a finished run folder, outputs/<model>/<run-id>)")
    if not given.is_dir():
        raise DiffInputError(f"{where}: not a folder (expected a finished run folder, outputs/<model>/<run-id>)")
    if given.name.endswith(".partial"):
        raise DiffInputError(f"{where}: a partial run (an interrupted or running run's folder); finish it with "
                             f"zooinfer run MODEL --resume {given}, then diff the finished folder")
    folder, rescored = given, None
    if given.parent.name == RESCORED and not (given / FOLDER).exists() and (given / "metrics.json").is_file():
        folder, rescored = given.parent.parent, _read_json(given / "metrics.json", f"{label} rescored report")
    has_metrics, has_store = (folder / "metrics.json").is_file(), (folder / FOLDER).is_dir()
    if not has_store and not has_metrics:
        raise DiffInputError(f"{where}: not a run folder (no metrics.json, no {FOLDER}/); expected a finished run "
                             "folder, outputs/<model>/<run-id>")
    if not has_store:
        raise DiffInputError(f"{where}: a run without stored predictions (no {FOLDER}/: made before runs stored "
                             "them, or removed); diff reads the stored predictions: run the model again")
    if not has_metrics:
        raise DiffInputError(f"{where}: a partial run ({FOLDER}/ but no metrics.json: it stopped before it "
                             "finished); resume it (zooinfer run MODEL --resume FOLDER), then diff it")
    metrics = _read_json(folder / "metrics.json", f"{label} metrics.json")
    store = PredictionStore.open(folder, writable=False)
    overrides = dict((rescored or {}).get("overrides") or {})
    config, fingerprint = stored_config(store, overrides)
    selection = fingerprint.get("selection") or {}
    expected = selection.get("samples")
    if isinstance(expected, int) and len(store) < expected:
        raise DiffInputError(f"{where}: a partial run ({len(store)} of {expected} samples stored); resume it "
                             "(zooinfer run MODEL --resume FOLDER), then diff it")
    return RunSide(label, given, folder, metrics, store, config, fingerprint, overrides, rescored)


def _selection_text(sel: dict) -> str:
    n = sel.get("samples")
    if sel.get("subset") is not None:
        return f"a random subset of {sel.get('subset')} samples (seed {sel.get('seed')})"
    if sel.get("limit") is not None:
        return f"the first {n} samples (limit {sel.get('limit')})"
    return f"all {n} samples"


def check_comparable(a: RunSide, b: RunSide) -> None:
    """:class:`DiffInputError` naming the difference when ``a`` and ``b`` are runs of different models, datasets
    (name, size, ground-truth contents) or selections (the selected samples' keys)."""
    if a.model != b.model:
        raise DiffInputError(f"different models: RUN_A is {a.model}, RUN_B is {b.model}; diff compares two runs of "
                             "one model")
    da, db = a.fingerprint.get("dataset") or {}, b.fingerprint.get("dataset") or {}
    if (da.get("name"), da.get("images")) != (db.get("name"), db.get("images")):
        raise DiffInputError(f"different datasets: RUN_A evaluated {da.get('name')} ({da.get('images')} images at "
                             f"{da.get('root')}), RUN_B {db.get('name')} ({db.get('images')} images at "
                             f"{db.get('root')}); diff compares two runs on one dataset")
    ga, gb = a.fingerprint.get("ground_truth"), b.fingerprint.get("ground_truth")
    if isinstance(ga, dict) and isinstance(gb, dict) and sorted(ga.values()) != sorted(gb.values()):
        raise DiffInputError(f"different ground truth: RUN_A was scored against {', '.join(sorted(ga))}, RUN_B "
                             f"against {', '.join(sorted(gb))}, with other contents (sha256); diff compares two runs "
                             "on one dataset")
    sa, sb = a.fingerprint.get("selection") or {}, b.fingerprint.get("selection") or {}
    if sa.get("keys_sha1") != sb.get("keys_sha1"):
        raise DiffInputError(f"different selections: RUN_A evaluated {_selection_text(sa)}, RUN_B "
                             f"{_selection_text(sb)}; diff compares runs over the same samples (the same limit, or "
                             "subset and seed)")


def common_samples(a: RunSide, b: RunSide) -> tuple[Any, list, dict]:
    """The dataset (opened at RUN_A's ``data_root``, the annotations only), the samples both runs predicted (in
    dataset order; those either skipped are left out) and what was left out ({"skipped_a": [...], ...})."""
    from ..rescore import check_ground_truth
    from ..store import keys_digest

    recipe = a.config.recipe()
    dataset = recipe.open_dataset(a.config.data_root)
    data = a.config.select(dataset)
    if (a.fingerprint.get("selection") or {}).get("keys_sha1") not in (None, keys_digest(s.key for s in data)):
        raise DiffInputError(f"the dataset at {a.config.data_root or 'the embedded sample'} no longer lists the "
                             f"samples RUN_A evaluated: its annotations changed; diff against the dataset the runs had")
    check_ground_truth(a.folder, a.fingerprint, dataset)
    if b.config.data_root == a.config.data_root:
        check_ground_truth(b.folder, b.fingerprint, dataset)
    skip_a, skip_b = a.skipped_keys, b.skipped_keys
    missing = [s.key for s in data if s.key not in a.store or s.key not in b.store]
    if missing:
        raise DiffInputError(f"{len(missing)} selected samples are not stored in both runs (first: {missing[0]}): "
                             "a partial run; resume it, then diff it")
    common = [s for s in data if s.key not in skip_a and s.key not in skip_b]
    if not common:
        raise DiffInputError("no sample was predicted by both runs (every one was skipped by one of them)")
    left_out = {"skipped_a": sorted(skip_a - skip_b), "skipped_b": sorted(skip_b - skip_a),
                "skipped_both": sorted(skip_a & skip_b)}
    return replace(data, samples=common), common, left_out


# ------------------------------------------------------------------------------------------------ manifests
def _flat(doc: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict as {"a.b": value} (lists kept whole)."""
    if not isinstance(doc, dict):
        return {prefix: doc}
    out: dict[str, Any] = {}
    for k, v in doc.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(_flat(v, key) if isinstance(v, dict) else {key: v})
    return out


#: the parts of each run's metrics.json whose differences a diff lists, and what each is called
MANIFEST_PARTS = (("parameters", "parameter"), ("checkpoint", "checkpoint"), ("backend", "backend session"),
                  ("environment", "environment"))
#: fields that differ between any two runs and say nothing about them
NOT_COMPARED = {"parameters.run_dir", "parameters.output_root", "parameters.resume", "checkpoint.file",
                "parameters.progress"}


def manifest_differences(a: RunSide, b: RunSide) -> list[dict]:
    """One row per field that differs between the two runs' parameters (with a rescore's metric parameters),
    checkpoint (md5), backend session (providers, threads) and environment manifest (packages, CPU and its
    instruction-set flags, execution providers, git revision): {"part", "field", "a", "b"}."""
    rows = []
    for part, what in MANIFEST_PARTS:
        fa, fb = _flat(a.metrics.get(part) or {}), _flat(b.metrics.get(part) or {})
        if part == "parameters":
            fa.update(a.overrides)
            fb.update(b.overrides)
        for key in sorted(set(fa) | set(fb)):
            full = f"{part}.{key}"
            if full in NOT_COMPARED or fa.get(key) == fb.get(key):
                continue
            rows.append({"part": what, "field": key, "a": fa.get(key, "(not recorded)"),
                         "b": fb.get(key, "(not recorded)")})
    return rows


def speed_ratios(a: RunSide, b: RunSide) -> dict:
    """Throughput ratios RUN_B / RUN_A per (backend, batch size) both swept (``throughput`` rows of metrics.json;
    > 1: B is faster), the end-to-end images/s ratio, and per pipeline stage the time ratio (ms per item, B / A;
    > 1: B is slower). ``own``: the rows of each run's own backend, the ones ``--max-slowdown`` judges."""
    ta, tb = a.metrics.get("throughput") or [], b.metrics.get("throughput") or []
    own_a = (a.metrics.get("parameters") or {}).get("backend")
    own_b = (b.metrics.get("parameters") or {}).get("backend")
    index_b = {(r.get("backend"), r.get("bs")): r for r in tb if isinstance(r, dict)}
    rows = []
    for r in ta:
        if not isinstance(r, dict):
            continue
        key = (r.get("backend"), r.get("bs"))
        other = index_b.get(key)
        own = r.get("backend") == own_a
        if other is None and own and own_b != own_a:  # another backend in B: its own rows are the pair
            other = index_b.get((own_b, r.get("bs")))
        if other is None:
            continue
        ra, rb = r.get("throughput"), other.get("throughput")
        rows.append({"backend": r.get("backend") if other.get("backend") == r.get("backend") else
                     f"{r.get('backend')} -> {other.get('backend')}", "bs": r.get("bs"), "own": own,
                     "a_per_s": ra, "b_per_s": rb,
                     "ratio": (rb / ra) if isinstance(ra, (int, float)) and isinstance(rb, (int, float)) and ra > 0
                     else None,
                     "unstable": bool(r.get("unstable") or other.get("unstable"))})
    ea, eb = (a.metrics.get("end_to_end") or {}), (b.metrics.get("end_to_end") or {})
    e2e = None
    if isinstance(ea.get("images_per_s"), (int, float)) and isinstance(eb.get("images_per_s"), (int, float)) \
            and ea["images_per_s"] > 0:
        e2e = {"a_per_s": ea["images_per_s"], "b_per_s": eb["images_per_s"],
               "ratio": eb["images_per_s"] / ea["images_per_s"]}
    sa = {r.get("stage"): r for r in a.metrics.get("stage_timings") or [] if isinstance(r, dict)}
    stages = []
    for r in b.metrics.get("stage_timings") or []:
        if not isinstance(r, dict) or r.get("stage") not in sa:
            continue
        ma, mb = sa[r["stage"]].get("ms_per_item"), r.get("ms_per_item")
        if isinstance(ma, (int, float)) and isinstance(mb, (int, float)) and ma > 0:
            stages.append({"stage": r["stage"], "a_ms": ma, "b_ms": mb, "time_ratio": mb / ma})
    return {"throughput": rows, "end_to_end": e2e, "stages": stages}
