"""Stored predictions: every run streams each sample's compact prediction into its run folder as it goes.

Layout of ``<run folder>/predictions/``::

    fingerprint.json        what the predictions depend on (checkpoint md5, dataset and selection, recipe,
                            backend settings) and the run's parameters: what a resume is checked against
    chunk-000001.npz        one chunk: up to ``chunk_size`` samples (numpy's .npz, read with allow_pickle=False)
    ...
    index.jsonl             one line per written chunk: its file, its sample keys, how many were skipped

A chunk is written to a temporary name and renamed (atomic), then its index line is appended: a chunk file exists
only complete, so a kill loses at most the samples not yet in a chunk (at most ``chunk_size`` samples or
``flush_s`` seconds of work). A chunk whose index line the kill prevented is found by its file and indexed again
on open; a torn last index line is ignored.

What is stored per sample is the recipe's compact prediction (``recipe.compact``, e.g. the top-5 classes of the
logits, COCO rows, WIDER boxes, re-ID features), which the metric accepts and computes exactly what it computes
from the full prediction; a skipped (unreadable) sample is stored with its path and reason. Predictions are numpy
arrays, or dataclasses of arrays and integers of the types in :data:`DATACLASSES` (nothing is pickled).

A store reads only its own files: chunk names are those it writes (:data:`CHUNK_PATTERN`, inside ``predictions/``,
regular files, never a symbolic link), and a chunk must hold exactly the samples its index line lists. Anything
else is damage (:class:`StoreError`, naming the file and line): a read-only open (rescore, ``zooinfer list``) refuses
it; a resume moves each unreadable chunk aside (``chunk-000003.npz.damaged``), drops its index line, recomputes its
samples and says so.

Locks. ``predictions/.lock`` is held by the process writing the store (an evaluation, from opening the store to
releasing it); ``<run folder>/.run.lock`` (:class:`RunLock`) is held for the whole run by the process that owns the
run folder: ``zooinfer run`` from before the notebook starts until the folder is renamed complete (a new run and a
resume alike), or an evaluation that owns its folder (a notebook run by hand) from its first prediction to
``finish()``. Each lock file holds its holder's pid. :func:`holder` tests both without taking them: ``zooinfer
list`` / ``clean`` and a resume ask it, so a running run is never shown as resumable, removed, or resumed twice.
The kernel ever holds only the store's lock, so ``zooinfer run`` holding the run lock does not stop its notebook.

Why numpy's .npz rather than Parquet/HDF5/zarr: it is already a dependency, it stores ragged per-sample arrays as a
flat buffer + shapes without a schema, and ``allow_pickle=False`` reads it without executing anything.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import os
import re
import time
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from .errors import ZooinferError
#: the store's folder in a run folder and its fingerprint file are names as data in zooinfer.parameters (config
#: reads them without importing the store); ResumeRefused is defined there too: config refuses a resume up front
from .parameters import STORE_FINGERPRINT as FINGERPRINT, STORE_FOLDER as FOLDER  # noqa: F401
from .parameters import ResumeRefused, environment_value  # noqa: F401

INDEX = "index.jsonl"
#: the only chunk file names a store writes and reads (``chunk-000001.npz``, in its own ``predictions/`` folder)
CHUNK_PATTERN = re.compile(r"chunk-(\d{6,})\.npz")
#: suffix a resume gives a chunk it could not read (kept for inspection, never read again)
DAMAGED = ".damaged"
#: lock files: the store's writer (in ``predictions/``) and the run's owner (in the run folder); each holds a pid
WRITER_LOCK, RUN_LOCK = ".lock", ".run.lock"
UNREADABLE = "cannot be read as a chunk ("
#: the arrays every chunk holds (``fields`` and the packed columns too when it holds predictions)
CHUNK_ARRAYS = ("kind", "keys", "skipped.keys", "skipped.paths", "skipped.reasons")
#: samples per chunk, and the seconds after which a partly filled chunk is written anyway (the environment
#: variables ZOOINFER_CHUNK_SIZE / ZOOINFER_FLUSH_S override them: e.g. smaller chunks for a run that must lose less)
CHUNK_SIZE = 256
FLUSH_S = 30.0
CHUNK_ENV, FLUSH_ENV = "ZOOINFER_CHUNK_SIZE", "ZOOINFER_FLUSH_S"
#: dataclass predictions a store may hold: type name -> "module:qualname" (imported when read; nothing pickled)
DATACLASSES = {"TopKScores": "zooinfer.metrics.classification:TopKScores"}
#: fingerprint keys a resume must match, and what each one is called in the refusal
CHECKED = {"model": "model", "recipe": "recipe (model options)", "checkpoint": "checkpoint",
           "dataset": "dataset", "ground_truth": "ground-truth files", "selection": "selected samples",
           "backend": "backend settings"}


class StoreError(ZooinferError):
    """A damaged store: a file of ``predictions/`` (and its line) that is not what the store wrote."""


class FolderInUse(ZooinferError):
    """A run folder whose lock a live process holds (its run, or a resume of it, is running)."""


@dataclasses.dataclass(frozen=True)
class Skip:
    """A stored skipped sample: its image path and why it was skipped."""

    path: str
    reason: str


# ------------------------------------------------------------------------------------------------ encoding
def _is_array(x: Any) -> bool:
    return isinstance(x, (np.ndarray, np.generic, int, float)) and not isinstance(x, bool)


def _type_name(pred: Any) -> str:
    if _is_array(pred):
        return "ndarray"
    if isinstance(pred, (list, tuple)) and all(_is_array(v) for v in pred):
        return f"list{len(pred)}"
    if isinstance(pred, dict) and all(isinstance(k, str) and _is_array(v) for k, v in pred.items()):
        return "dict:" + ",".join(pred)
    if dataclasses.is_dataclass(pred) and type(pred).__name__ in DATACLASSES:
        return type(pred).__name__
    raise ZooinferError(f"stored predictions: cannot store a {type(pred).__name__} prediction (an array, a list or "
                        f"dict of arrays, or one of the dataclasses {', '.join(DATACLASSES)}); give the recipe a "
                        "compact= that returns one")


def _fields(pred: Any, kind: str) -> dict[str, np.ndarray]:
    if kind == "ndarray":
        return {"value": np.asarray(pred)}
    if kind.startswith("list"):
        return {str(i): np.asarray(v) for i, v in enumerate(pred)}
    if kind.startswith("dict:"):
        return {k: np.asarray(v) for k, v in pred.items()}
    return {f.name: np.asarray(getattr(pred, f.name)) for f in dataclasses.fields(pred)}


def _pack(values: list[np.ndarray], name: str, out: dict[str, np.ndarray]) -> None:
    """Ragged arrays -> ``name.data`` (flat), ``name.ndim`` (n,), ``name.dims`` (sum of ndims): exact, no pickle."""
    dtype = np.result_type(*values) if values else np.float32
    out[f"{name}.data"] = np.concatenate([v.astype(dtype, copy=False).ravel() for v in values]) if values else \
        np.zeros(0, dtype)
    out[f"{name}.ndim"] = np.array([v.ndim for v in values], dtype=np.uint8)
    out[f"{name}.dims"] = np.array([d for v in values for d in v.shape], dtype=np.int32)


def _unpack(npz: Any, name: str) -> list[np.ndarray]:
    data, dims = npz[f"{name}.data"], npz[f"{name}.dims"].tolist()
    out, at, d = [], 0, 0
    for n in npz[f"{name}.ndim"].tolist():  # Python ints: numpy's uint8 would wrap the running offset
        shape = tuple(dims[d:d + n])
        size = math.prod(shape)
        out.append(data[at:at + size].reshape(shape))
        at, d = at + size, d + n
    return out


def _dataclass_type(name: str) -> type:
    module, _, qualname = DATACLASSES[name].partition(":")
    return getattr(importlib.import_module(module), qualname)


def encode_chunk(records: list[tuple[str, Any]]) -> dict[str, np.ndarray]:
    """(key, prediction or :class:`Skip`) records -> the arrays of one .npz chunk."""
    preds = [(k, p) for k, p in records if not isinstance(p, Skip)]
    skips = [(k, p) for k, p in records if isinstance(p, Skip)]
    kinds = {_type_name(p) for _, p in preds}
    if len(kinds) > 1:
        raise ZooinferError(f"stored predictions: one run gave predictions of several types ({sorted(kinds)})")
    kind = kinds.pop() if kinds else "none"
    out: dict[str, np.ndarray] = {"kind": np.array(kind), "keys": _utf8([k for k, _ in preds]),
                                  "skipped.keys": _utf8([k for k, _ in skips]),
                                  "skipped.paths": np.array([s.path for _, s in skips], dtype=str),
                                  "skipped.reasons": np.array([s.reason for _, s in skips], dtype=str)}
    if preds:
        per_field = [_fields(p, kind) for _, p in preds]
        for name in per_field[0]:
            _pack([f[name] for f in per_field], f"field.{name}", out)
        out["fields"] = np.array(list(per_field[0]), dtype=str)
    return out


def _utf8(keys: list[str]) -> np.ndarray:
    """Sample keys as UTF-8 bytes (numpy's "S" arrays: 1 byte per ASCII character, not the 4 of "U")."""
    return np.array([k.encode() for k in keys], dtype="S") if keys else np.zeros(0, dtype="S1")


def _text(k: Any) -> str:
    return k.decode() if isinstance(k, bytes) else str(k)


def decode_chunk(npz: Any) -> dict[str, Any]:
    """The arrays of one chunk -> {key: prediction or :class:`Skip`}."""
    kind = str(npz["kind"])
    out: dict[str, Any] = {}
    keys = [_text(k) for k in npz["keys"]]
    if keys:
        names = [str(n) for n in npz["fields"]]
        columns = {n: _unpack(npz, f"field.{n}") for n in names}
        if kind == "ndarray":
            out.update(zip(keys, columns["value"]))
        elif kind.startswith("list"):
            out.update((k, [columns[n][i] for n in names]) for i, k in enumerate(keys))
        elif kind.startswith("dict:"):
            out.update((k, {n: columns[n][i] for n in names}) for i, k in enumerate(keys))
        else:
            cls = _dataclass_type(kind)
            kinds = {f.name: f.type for f in dataclasses.fields(cls)}
            for i, k in enumerate(keys):
                values = {n: columns[n][i] for n in names}
                out[k] = cls(**{n: (int(v) if v.ndim == 0 and kinds.get(n) in (int, "int") else v)
                                for n, v in values.items()})
    for k, p, r in zip(npz["skipped.keys"], npz["skipped.paths"], npz["skipped.reasons"]):
        out[_text(k)] = Skip(str(p), str(r))
    return out


# ------------------------------------------------------------------------------------------------ fingerprint
def keys_digest(keys: Iterable[str]) -> str:
    """sha1 of the sample keys in order (the selection a run evaluates)."""
    h = hashlib.sha1()
    for k in keys:
        h.update(k.encode())
        h.update(b"\0")
    return h.hexdigest()


def ground_truth_digest(files: Iterable[str | os.PathLike]) -> dict[str, str]:
    """{path: sha256 hex} of the files a dataset's ground truth is read from (streamed; "missing" for a file that
    is not there): what a resume and a rescore compare, so a changed annotation file is named, not used."""
    out = {}
    for path in files:
        try:
            with open(path, "rb") as f:
                out[str(path)] = hashlib.file_digest(f, "sha256").hexdigest()
        except FileNotFoundError:
            out[str(path)] = "missing"
    return out


def differences(stored: dict, current: dict) -> list[str]:
    """What differs between two fingerprints, one phrase per checked part (empty: the same run). A store made before
    ground-truth digests (no ``ground_truth``) is not compared on them."""
    out = []
    for key, what in CHECKED.items():
        a, b = stored.get(key), current.get(key)
        if key == "ground_truth" and a is not None and a != b:
            a, b = a if isinstance(a, dict) else {}, b if isinstance(b, dict) else {}
            out.append(f"{what} (changed: {', '.join(sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)))})")
        elif key == "ground_truth":
            continue
        elif a != b:
            if isinstance(a, dict) and isinstance(b, dict):
                parts = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
                out.append(f"{what} ({'; '.join(parts)})")
            else:
                out.append(f"{what} ({a!r} -> {b!r})")
    return out


def refuse_differences(run_folder: str | os.PathLike, stored: dict, current: dict) -> None:
    """Raise :class:`ResumeRefused` naming every difference between the ``stored`` fingerprint of ``run_folder`` and
    the ``current`` run's."""
    diff = differences(stored, current)
    if diff:
        raise ResumeRefused(f"cannot resume {run_folder}: this run differs from the stored one in " + "; ".join(diff)
                            + ". Resume with the same settings, or start a new run")


def read_fingerprint(run_folder: str | os.PathLike) -> dict:
    """The fingerprint of the store in ``run_folder`` (or its ``predictions`` folder); :class:`StoreError` naming
    the file when it is torn, edited into something else than a JSON object, or unreadable."""
    folder = Path(run_folder)
    path = (folder if folder.name == FOLDER else folder / FOLDER) / FINGERPRINT
    advice = "the store cannot say which run made its predictions; start a new run"
    if path.is_symlink() or not path.is_file():
        raise StoreError(f"{path}: not a regular file ({'a symbolic link' if path.is_symlink() else 'missing'}); "
                         + advice)
    from .report import read_json_object

    try:
        return read_json_object(path)
    except ValueError as e:
        raise StoreError(f"{path}: {e}; {advice}") from None


# ------------------------------------------------------------------------------------------------ locks
def _take(path: Path, doing: str) -> Any | None:
    """The open lock file ``path``, exclusively locked (non-blocking) and holding "<pid> <doing>"; None when another
    open file holds the lock (another process, or another lock of this one)."""
    import fcntl

    f = open(path, "a+")  # noqa: SIM115 - held until released
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    f.truncate(0)
    f.write(f"{os.getpid()} {doing}\n")
    f.flush()
    return f


def _held(path: Path) -> tuple[int, str] | None:
    """(pid, what it is doing) of the process holding the lock file ``path`` (pid 0: not written), or None when
    no one holds it. Takes nothing and creates nothing."""
    import fcntl

    try:
        f = open(path)  # noqa: SIM115
    except OSError:
        return None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            pid, _, doing = f.read().strip().partition(" ")
            return (int(pid) if pid.isdigit() else 0), doing or "run"
        fcntl.flock(f, fcntl.LOCK_UN)
        return None


def holder_info(run_folder: str | os.PathLike) -> tuple[int, str] | None:
    """(pid, "run" / "resumed" / "written") of the live process holding ``run_folder``'s run lock or its store's
    writer lock, or None when neither is held (the run is not running)."""
    folder = Path(run_folder)
    return _held(folder / RUN_LOCK) or _held(folder / FOLDER / WRITER_LOCK)


def holder(run_folder: str | os.PathLike) -> int | None:
    """The pid of the live process holding ``run_folder`` (:func:`holder_info`; 0 when unknown), else None."""
    info = holder_info(run_folder)
    return None if info is None else info[0]


def _in_use(folder: Path, pid: int, doing: str) -> "FolderInUse":
    return FolderInUse(f"{folder} is being {doing} by another process (pid {pid or 'unknown'}); wait for it to end "
                       "(or stop that process) and try again")


def refuse_if_held(run_folder: str | os.PathLike) -> None:
    """:class:`FolderInUse` naming the holder's pid when a live process holds ``run_folder`` (:func:`holder_info`)."""
    info = holder_info(run_folder)
    if info is not None:
        raise _in_use(Path(run_folder), *info)


class RunLock:
    """The lock of one run folder (``<folder>/.run.lock``), held for the whole run by the process that owns the
    folder (see the module's notes); released by :meth:`release` or when the process ends, however it ends."""

    def __init__(self, folder: Path, file: Any):
        self.folder, self._file = folder, file

    @classmethod
    def take(cls, run_folder: str | os.PathLike, *, doing: str = "run") -> "RunLock":
        """Take the lock of ``run_folder`` for a run that is ``doing`` ("run", "resumed", "removed"); refused at
        once (:class:`FolderInUse`, naming the holder's pid) while another process holds it or writes its store."""
        folder = Path(run_folder)
        try:
            f = _take(folder / RUN_LOCK, doing)
        except OSError as e:
            raise ZooinferError(f"{folder}: cannot take the run's lock {folder / RUN_LOCK} ({e.strerror or e})") \
                from None
        writer = _held(folder / FOLDER / WRITER_LOCK) if f is not None else None
        if f is None or writer is not None:
            if f is not None:
                f.close()
            raise _in_use(folder, *(writer or _held(folder / RUN_LOCK) or (0, "run")))
        return cls(folder, f)

    def moved(self, new_folder: str | os.PathLike) -> None:
        """The folder was renamed (the lock goes with it)."""
        self.folder = Path(new_folder)

    def release(self, *, remove: bool = False) -> None:
        """Let others have the folder; ``remove``: delete the lock file first (a complete run's folder keeps none)."""
        if self._file is None:
            return
        if remove:
            (self.folder / RUN_LOCK).unlink(missing_ok=True)
        self._file.close()
        self._file = None


# ------------------------------------------------------------------------------------------------ the store
class PredictionStore:
    """The predictions folder of one run: write chunks (:meth:`add`, :meth:`skip`, :meth:`write_chunk`), read
    what is done (:attr:`done`, :meth:`get`, :meth:`in_order`)."""

    def __init__(self, folder: str | os.PathLike, *, chunk_size: int | None = None, flush_s: float | None = None):
        """``chunk_size`` samples per chunk, a chunk at least every ``flush_s`` seconds (None: the environment's
        ZOOINFER_CHUNK_SIZE / ZOOINFER_FLUSH_S, else :data:`CHUNK_SIZE` / :data:`FLUSH_S`)."""
        self.folder = Path(folder)
        self.chunk_size = chunk_size or _env_number(CHUNK_ENV, CHUNK_SIZE, int)
        self.flush_s = flush_s if flush_s is not None else _env_number(FLUSH_ENV, FLUSH_S, float)
        #: key -> chunk file name, for every stored sample (predicted or skipped)
        self.done: dict[str, str] = {}
        #: chunk file name -> the sample keys its index line lists (what reading it must give)
        self._listed: dict[str, list[str]] = {}
        #: chunk file name -> how many of its samples are skips (its index line's "skipped")
        self._skipped: dict[str, int] = {}
        self._buffer: list[tuple[str, Any]] = []
        self._last_flush = time.monotonic()
        self._cache: OrderedDict[str, dict] = OrderedDict()
        self._next = 1
        self._fingerprint: dict | None = None
        #: chunks written by this process
        self.chunks_written = 0
        #: what a resume found damaged and left to be recomputed (one phrase each; also warned)
        self.dropped: list[str] = []
        self.writable = True
        self._lock_file = None

    # ---------------------------------------------------------------------------------------- opening
    @classmethod
    def create(cls, run_folder: str | os.PathLike, fingerprint: dict, **kwargs: Any) -> "PredictionStore":
        """A new, empty store in ``run_folder/predictions`` (an existing one is refused: resume it instead)."""
        folder = Path(run_folder) / FOLDER
        if (folder / FINGERPRINT).exists():
            raise ZooinferError(f"{folder} already holds stored predictions; resume that run (resume={run_folder}) "
                                "or write into a new run folder")
        folder.mkdir(parents=True, exist_ok=True)
        store = cls(folder, **kwargs)
        store._lock()
        from .report import write_json

        write_json(folder / FINGERPRINT, fingerprint)
        store._fingerprint = dict(fingerprint)
        return store

    @classmethod
    def open(cls, run_folder: str | os.PathLike, *, writable: bool = True, expect: dict | None = None,
             **kwargs: Any) -> "PredictionStore":
        """The store of an earlier run (``run_folder`` or its ``predictions`` folder), with what it holds indexed.
        ``writable``: to go on writing (a resume): refused while another process writes it; ``expect`` (the
        resuming run's fingerprint) is compared first (:class:`ResumeRefused`); then what a kill left (an unindexed
        chunk, temporary files) is repaired on disk and damage is dropped (warned; those samples are recomputed).
        Else read only: nothing on disk changes, and damage is a :class:`StoreError` naming the file (and line)."""
        run_folder = Path(run_folder)
        folder = run_folder if run_folder.name == FOLDER else run_folder / FOLDER
        if not (folder / FINGERPRINT).exists() and not (folder / FINGERPRINT).is_symlink():
            raise ZooinferError(f"{run_folder} holds no stored predictions (no {FOLDER}/{FINGERPRINT}); expected the "
                                "folder of a run made by this version of zooinfer (outputs/<model>/<run-id> or its "
                                ".<run-id>.partial folder)")
        store = cls(folder, **kwargs)
        store.writable = writable
        store._fingerprint = read_fingerprint(folder)
        if writable:
            store._lock()
        try:
            if expect is not None:
                store.check(expect)
            store._read_index()
        except BaseException:
            store.release()
            raise
        return store

    def _lock(self) -> None:
        """Hold an exclusive lock on ``.lock`` until :meth:`release` (or the process ends, killed included): two
        writers never share one store."""
        try:
            import fcntl  # noqa: F401 - POSIX only
        except ImportError:  # pragma: no cover - not POSIX: no lock
            return
        if self._lock_file is not None:
            return
        self._lock_file = _take(self.folder / WRITER_LOCK, "written")
        if self._lock_file is None:
            pid, _ = _held(self.folder / WRITER_LOCK) or (0, "")
            raise FolderInUse(f"{self.folder.parent}: another process is writing this run now (pid {pid or 'unknown'}"
                              "); wait for it to end (or stop it) before resuming it")

    def acquire(self) -> None:
        """Take the writer's lock again after :meth:`release` (a second evaluation into the same store)."""
        if self.writable:
            self._lock()

    def release(self) -> None:
        """Write what is buffered and let another writer (a resume) have the store."""
        self.flush()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    @property
    def fingerprint(self) -> dict:
        """What the stored predictions depend on, and the run's parameters (``fingerprint.json``, read at open)."""
        if self._fingerprint is None:
            self._fingerprint = read_fingerprint(self.folder)
        return self._fingerprint

    def model(self) -> str:
        """The model the stored run evaluated (:class:`StoreError` when the fingerprint does not say)."""
        model = self.fingerprint.get("model")
        if not isinstance(model, str) or not model:
            raise StoreError(f"{self.folder / FINGERPRINT}: names no model ('model' is {model!r}); the store cannot "
                             "say which run made its predictions; start a new run")
        return model

    def check(self, current: dict) -> None:
        """Raise :class:`ResumeRefused` naming every difference between the stored fingerprint and ``current``."""
        refuse_differences(self.folder.parent, self.fingerprint, current)

    # ---------------------------------------------------------------------------------------- index
    def _index_entries(self) -> tuple[list[tuple[str, list[str] | None, str]], list[tuple[str | None, str, str]]]:
        """The index's well-formed lines as (chunk, keys, "index.jsonl:N") (their skipped counts into
        ``self._skipped``), then every chunk file the index does not
        list as (chunk, None, "found by its file"); and the malformed lines as (None, where, why). A torn last line
        (a kill while it was written) is not damage: its chunk is found by its file."""
        index = self.folder / INDEX
        entries: list[tuple[str, list[str] | None, str]] = []
        problems: list[tuple[str | None, str, str]] = []
        text = ""
        if index.is_symlink() or (index.exists() and not index.is_file()):
            problems.append((None, str(index), "not a regular file"))
        elif index.is_file():
            try:
                text = index.read_text()
            except (OSError, UnicodeDecodeError) as e:
                problems.append((None, str(index), f"cannot be read ({e})"))
        lines = text.splitlines()
        listed: set[str] = set()
        for number, line in enumerate(lines, 1):
            where = f"{index}:{number}"
            try:
                entry = json.loads(line)
            except ValueError:
                if number == len(lines) and not text.endswith("\n"):
                    continue
                problems.append((None, where, "not a JSON line"))
                continue
            why = _entry_problem(entry)
            if why is None and entry["chunk"] in listed:
                why = f"{entry['chunk']} is listed twice"
            if why is not None:
                problems.append((None, where, why))
                continue
            listed.add(entry["chunk"])
            self._skipped[entry["chunk"]] = int(entry.get("skipped", 0))
            entries.append((entry["chunk"], entry["keys"], where))
        for name in sorted(os.listdir(self.folder)):
            if CHUNK_PATTERN.fullmatch(name) and name not in listed:  # written, but the kill came before its line
                entries.append((name, None, "found by its file"))
        return entries, problems

    def _read_index(self) -> None:
        entries, problems = self._index_entries()
        damaged: list[tuple[str, int | None, str]] = []  # (chunk, samples its line lists, why)
        recovered: list[tuple[str, list[str]]] = []
        for name, keys, where in entries:
            try:
                if keys is None or self.writable:  # a resume reads every chunk now: what it cannot read runs again
                    got = self._read_chunk(name, keys)
                    if keys is None:
                        keys = list(got)
                        self._skipped[name] = sum(isinstance(p, Skip) for p in got.values())
                else:
                    _check_chunk_file(self.folder / name)
                again = [k for k in keys if k in self.done]
                if again:
                    raise StoreError(f"{where}: lists {len(again)} sample(s) already stored in {self.done[again[0]]} "
                                     f"(first: {again[0]})")
            except StoreError as e:
                damaged.append((name, None if where == "found by its file" else len(keys), str(e)))
                continue
            self._listed[name] = keys
            for k in keys:
                self.done[k] = name
            if where == "found by its file":
                recovered.append((name, keys))
        if not self.writable:
            found = [f"{where}: {why}" for _, where, why in problems] + [why for _, _, why in damaged]
            if found:
                more = f" (and {len(found) - 1} more damaged entries)" if len(found) > 1 else ""
                raise StoreError(f"{found[0]}{more}. The stored predictions are damaged: resuming a partial run "
                                 "recomputes what cannot be read; a complete run must be run again")
        else:
            self._repair(problems, damaged, recovered)
        numbers = [int(m.group(1)) for m in map(re.compile(r"chunk-(\d+)\.npz").match, os.listdir(self.folder)) if m]
        self._next = max(numbers, default=0) + 1

    def _repair(self, problems: list, damaged: list, recovered: list) -> None:
        """A resume's repairs: damaged chunks moved aside (``*.damaged``), the index rewritten with the readable
        chunks only (and the unindexed ones a kill left), half-written temporary files removed; each drop warned."""
        for name, n, why in damaged:
            path = self.folder / name
            kept = os.path.lexists(path)
            if kept:
                os.replace(path, path.with_name(name + DAMAGED))
            what = f"{n} samples of {name}" if n is not None else f"the samples of {name}"
            reason = why.removeprefix(f"{path}: ")
            reason = reason[len(UNREADABLE):-1] if reason.startswith(UNREADABLE) else reason
            self.dropped.append(f"{what} unreadable ({reason}): recomputed ("
                                + (f"the file is kept as {path}{DAMAGED})" if kept else f"in {self.folder})"))
        for _, where, why in problems:
            self.dropped.append(f"{where}: {why}: the line is dropped (a readable chunk it named is found by its "
                                "file; samples no readable chunk holds are recomputed)")
        if self.dropped:
            tmp = self.folder / f".{INDEX}.tmp{os.getpid()}"
            with open(tmp, "w") as f:
                for name, keys in self._listed.items():
                    f.write(_index_text(name, keys, self._skipped.get(name, 0)))
            os.replace(tmp, self.folder / INDEX)
            for message in self.dropped:
                warnings.warn(f"stored predictions: {message}", stacklevel=4)
        else:
            for name, keys in recovered:
                with open(self.folder / INDEX, "a") as f:
                    f.write(_index_text(name, keys, self._skipped.get(name, 0)))
        for tmp in self.folder.glob(".chunk-*.tmp*"):  # half-written chunk files of a killed run
            tmp.unlink(missing_ok=True)

    # ---------------------------------------------------------------------------------------- writing
    def add(self, key: str, prediction: Any) -> None:
        """Buffer one sample's compact prediction; writes a chunk when full or ``flush_s`` after the last one."""
        self._buffer.append((key, prediction))
        self._maybe_flush()

    def skip(self, key: str, path: str, reason: str) -> None:
        """Buffer one skipped sample (its image path and the reason)."""
        self._buffer.append((key, Skip(str(path), str(reason))))
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if len(self._buffer) >= self.chunk_size or time.monotonic() - self._last_flush >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        """Write the buffered samples as one chunk (nothing when the buffer is empty)."""
        if self._buffer:
            records, self._buffer = self._buffer, []
            self.write_chunk(records)
        self._last_flush = time.monotonic()

    def write_chunk(self, records: list[tuple[str, Any]]) -> str:
        """Write ``records`` ((key, compact prediction or :class:`Skip`)) as the next chunk, atomically, and index
        it; returns its file name. Keys already stored are refused (a sample is never counted twice)."""
        if not self.writable:
            raise ZooinferError(f"{self.folder}: opened read-only (PredictionStore.open(writable=False))")
        again = [k for k, _ in records if k in self.done]
        if again:
            raise ZooinferError(f"stored predictions: {len(again)} sample(s) are already stored (first: {again[0]})")
        name = f"chunk-{self._next:06d}.npz"
        self._next += 1
        arrays = encode_chunk(records)
        tmp = self.folder / f".{name}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, self.folder / name)
        keys = [k for k, _ in records]
        self._index_line(name, keys, sum(isinstance(p, Skip) for _, p in records))
        self._listed[name] = keys
        for k in keys:
            self.done[k] = name
        self.chunks_written += 1
        return name

    def _index_line(self, name: str, keys: list[str], skipped: int) -> None:
        self._skipped[name] = skipped
        with open(self.folder / INDEX, "a") as f:
            f.write(_index_text(name, keys, skipped))

    def close(self) -> None:
        """Write what is buffered and release the writer's lock (:meth:`release`)."""
        self.release()

    # ---------------------------------------------------------------------------------------- reading
    def _read_chunk(self, name: str, listed: list[str] | None) -> dict[str, Any]:
        """Chunk ``name`` decoded (and cached); :class:`StoreError` naming it when it is not a regular file of this
        store, cannot be read as a chunk, or holds other samples than ``listed`` (its index line's keys)."""
        path = self.folder / name
        _check_chunk_file(path)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))  # never through a link swapped in
            with os.fdopen(fd, "rb") as f:
                npz = np.load(f, allow_pickle=False)
                if not isinstance(npz, np.lib.npyio.NpzFile):
                    raise ValueError("a .npy array, not a chunk archive")
                with npz:
                    missing = [a for a in CHUNK_ARRAYS if a not in npz.files]
                    if missing:
                        raise ValueError(f"not a chunk of this store: no {', '.join(missing)} "
                                         f"(it holds {', '.join(npz.files[:5]) or 'nothing'})")
                    records = decode_chunk(npz)
        except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError, EOFError,
                zipfile.BadZipFile) as e:
            raise StoreError(f"{path}: {UNREADABLE}{type(e).__name__}: {e})") from None
        if listed is not None and set(records) != set(listed):
            extra = [k for k in records if k not in set(listed)]
            lacking = [k for k in listed if k not in records]
            raise StoreError(f"{path}: " + (f"holds samples its index line does not list ({len(extra)}, first: "
                                            f"{extra[0]})" if extra else
                                            f"lacks samples its index line lists ({len(lacking)}, first: "
                                            f"{lacking[0]})"))
        self._cache[name] = records
        self._cache.move_to_end(name)
        while len(self._cache) > 2:  # chunks are read in dataset order: two decoded chunks at a time
            self._cache.popitem(last=False)
        return records

    def _load(self, name: str) -> dict[str, Any]:
        if name not in self._cache:
            return self._read_chunk(name, self._listed.get(name))
        self._cache.move_to_end(name)
        return self._cache[name]

    def __contains__(self, key: str) -> bool:
        return key in self.done

    def __len__(self) -> int:
        return len(self.done)

    def get(self, key: str) -> Any:
        """The stored compact prediction (or :class:`Skip`) of ``key``."""
        return self._load(self.done[key])[key]

    def in_order(self, samples: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        """(sample, stored prediction or :class:`Skip`, or None when not stored) for ``samples`` in their order."""
        for s in samples:
            yield s, (self.get(s.key) if s.key in self.done else None)


def _index_text(name: str, keys: list[str], skipped: int) -> str:
    """One index line (with its newline)."""
    return json.dumps({"chunk": name, "n": len(keys), "skipped": skipped, "keys": keys}) + "\n"


def _entry_problem(entry: Any) -> str | None:
    """Why an index line's JSON is not a chunk entry of this store (None: it is one)."""
    if not isinstance(entry, dict):
        return f"expected an object with 'chunk' and 'keys', got a {type(entry).__name__}"
    chunk, keys = entry.get("chunk"), entry.get("keys")
    if not isinstance(chunk, str):
        return f"no chunk file name ('chunk' is {chunk!r})"
    if not CHUNK_PATTERN.fullmatch(chunk):
        return f"'chunk' {chunk!r} is not a chunk name of this store (chunk-NNNNNN.npz in its own folder)"
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        return f"'keys' of {chunk} is not a list of sample keys"
    if entry.get("n", len(keys)) != len(keys) or not isinstance(entry.get("skipped", 0), int):
        return f"'n' or 'skipped' of {chunk} does not fit its {len(keys)} keys"
    return None


def _check_chunk_file(path: Path) -> None:
    """:class:`StoreError` unless ``path`` is a regular file (a symbolic link or a folder is never read)."""
    if path.is_symlink():
        raise StoreError(f"{path}: a symbolic link where a chunk belongs (a store reads only its own files)")
    if not path.exists():
        raise StoreError(f"{path}: missing (its index line lists it)")
    if not path.is_file():
        raise StoreError(f"{path}: not a regular file (a folder?) where a chunk belongs")


def _env_number(name: str, default: Any, kind: type) -> Any:
    """The ``kind`` value of environment variable ``name`` (parsed as ``check_inputs`` checks it), or ``default``."""
    return kind(environment_value(name, default))
