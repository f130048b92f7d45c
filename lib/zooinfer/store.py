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
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from .errors import ZooinferError

FOLDER = "predictions"
FINGERPRINT = "fingerprint.json"
INDEX = "index.jsonl"
#: samples per chunk, and the seconds after which a partly filled chunk is written anyway (the environment
#: variables ZOOINFER_CHUNK_SIZE / ZOOINFER_FLUSH_S override them: e.g. smaller chunks for a run that must lose less)
CHUNK_SIZE = 256
FLUSH_S = 30.0
CHUNK_ENV, FLUSH_ENV = "ZOOINFER_CHUNK_SIZE", "ZOOINFER_FLUSH_S"
#: dataclass predictions a store may hold: type name -> "module:qualname" (imported when read; nothing pickled)
DATACLASSES = {"TopKScores": "zooinfer.metrics.classification:TopKScores"}
#: fingerprint keys a resume must match, and what each one is called in the refusal
CHECKED = {"model": "model", "recipe": "recipe (model options)", "checkpoint": "checkpoint",
           "dataset": "dataset", "selection": "selected samples", "backend": "backend settings"}


class ResumeRefused(ZooinferError):
    """A resume whose run differs from the stored one (checkpoint, dataset, recipe or backend settings)."""


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


def differences(stored: dict, current: dict) -> list[str]:
    """What differs between two fingerprints, one phrase per checked part (empty: the same run)."""
    out = []
    for key, what in CHECKED.items():
        a, b = stored.get(key), current.get(key)
        if a != b:
            if isinstance(a, dict) and isinstance(b, dict):
                parts = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
                out.append(f"{what} ({'; '.join(parts)})")
            else:
                out.append(f"{what} ({a!r} -> {b!r})")
    return out


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
        self._buffer: list[tuple[str, Any]] = []
        self._last_flush = time.monotonic()
        self._cache: OrderedDict[str, dict] = OrderedDict()
        self._next = 1
        #: chunks written by this process
        self.chunks_written = 0
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
        return store

    @classmethod
    def open(cls, run_folder: str | os.PathLike, *, writable: bool = True, **kwargs: Any) -> "PredictionStore":
        """The store of an earlier run (``run_folder`` or its ``predictions`` folder), with what it holds indexed.
        ``writable``: to go on writing (a resume): refused while another process writes it, and what a kill left
        (an unindexed chunk, temporary files) is repaired on disk; else read only, nothing on disk changes."""
        run_folder = Path(run_folder)
        folder = run_folder if run_folder.name == FOLDER else run_folder / FOLDER
        if not (folder / FINGERPRINT).is_file():
            raise ZooinferError(f"{run_folder} holds no stored predictions (no {FOLDER}/{FINGERPRINT}); expected the "
                                "folder of a run made by this version of zooinfer (outputs/<model>/<run-id> or its "
                                ".<run-id>.partial folder)")
        store = cls(folder, **kwargs)
        store.writable = writable
        if writable:
            store._lock()
        store._read_index()
        return store

    def _lock(self) -> None:
        """Hold an exclusive lock on ``.lock`` until :meth:`release` (or the process ends, killed included): two
        writers never share one store."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            return
        if self._lock_file is not None:
            return
        self._lock_file = open(self.folder / ".lock", "a+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            self._lock_file = None
            raise ZooinferError(f"{self.folder.parent}: another process is writing this run now; wait for it to "
                                "end (or stop it) before resuming it") from None

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
        return json.loads((self.folder / FINGERPRINT).read_text())

    def check(self, current: dict) -> None:
        """Raise :class:`ResumeRefused` naming every difference between the stored fingerprint and ``current``."""
        diff = differences(self.fingerprint, current)
        if diff:
            raise ResumeRefused(f"cannot resume {self.folder.parent}: this run differs from the stored one in "
                                + "; ".join(diff) + ". Resume with the same settings, or start a new run")

    def _read_index(self) -> None:
        indexed: set[str] = set()
        index = self.folder / INDEX
        if index.is_file():
            for line in index.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:  # a line the kill tore: its chunk is found below by its file
                    continue
                if (self.folder / entry["chunk"]).is_file():
                    indexed.add(entry["chunk"])
                    for k in entry["keys"]:
                        self.done[k] = entry["chunk"]
        for path in sorted(self.folder.glob("chunk-*.npz")):
            if path.name not in indexed:  # written, but the kill came before its index line
                keys = list(self._load(path.name))
                if self.writable:
                    self._index_line(path.name, keys, 0)
                for k in keys:
                    self.done[k] = path.name
        if self.writable:
            for tmp in self.folder.glob(".chunk-*.tmp*"):  # half-written chunk files of a killed run
                tmp.unlink(missing_ok=True)
        numbers = [int(p.stem.split("-")[1]) for p in self.folder.glob("chunk-*.npz")]
        self._next = max(numbers, default=0) + 1

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
        self._index_line(name, [k for k, _ in records], sum(isinstance(p, Skip) for _, p in records))
        for k, _ in records:
            self.done[k] = name
        self.chunks_written += 1
        return name

    def _index_line(self, name: str, keys: list[str], skipped: int) -> None:
        with open(self.folder / INDEX, "a") as f:
            f.write(json.dumps({"chunk": name, "n": len(keys), "skipped": skipped, "keys": keys}) + "\n")

    def close(self) -> None:
        """Write what is buffered and release the writer's lock (:meth:`release`)."""
        self.release()

    # ---------------------------------------------------------------------------------------- reading
    def _load(self, name: str) -> dict[str, Any]:
        if name not in self._cache:
            with np.load(self.folder / name, allow_pickle=False) as npz:
                self._cache[name] = decode_chunk(npz)
            while len(self._cache) > 2:  # chunks are read in dataset order: two decoded chunks at a time
                self._cache.popitem(last=False)
        else:
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


def _env_number(name: str, default: Any, kind: type) -> Any:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or value <= 0:
        raise ZooinferError(f"environment variable {name}={text!r}: expected a number > 0")
    return value
