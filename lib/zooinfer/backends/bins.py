"""Interop with the Ascend offline tools (``benchmark``, ``ais_bench``): ``.bin`` inputs out, result folders back in.

Inputs: one raw float32 C-order array per sample, ``<key>.bin`` (multi-view models: one sub-folder per view,
``view0/``, ``view1/``, as the PyramidBox guide writes two folders), plus the benchmark tool's ``.info`` list
(``<index> <path> <width> <height>`` per line).

Outputs: ais_bench writes ``<key>_<k>.bin`` (or ``.txt`` with ``--outfmt TXT``) for output ``k`` counted from 0; the
old ``benchmark`` tool writes ``<key>_<k>.txt`` counted from 1. :class:`OutputReader` accepts both.

Every file is written through a temporary name renamed into place (a full disk leaves no truncated file and stops
with an error naming the file) and, given its ``root`` (``zooinfer bins --out``), never outside it.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import BackendError, ZooinferError
from ..paths import inside, plain_name


def write_atomically(path: str | os.PathLike, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` through a temporary file renamed into place: a failed write (a full disk, a file
    size limit) leaves neither a truncated file nor the temporary one, and an existing file stays whole; the
    failure is a ZooinferError naming ``path`` and the system's reason."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise ZooinferError(f"cannot write {path}: {e.strerror or e}"
                            + (" (the disk is full)" if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) else "")
                            + "; no partial file was left") from None


def write_input(array: np.ndarray, path: str | os.PathLike, root: str | os.PathLike | None = None) -> None:
    """Write one sample as raw float32, C order, no header (what the guides' preprocess scripts write), atomically
    (:func:`write_atomically`). ``root``: the folder ``path`` must stay inside (``zooinfer bins --out``)."""
    if root is not None:
        inside(root, path, "the input file")
    write_atomically(path, memoryview(np.ascontiguousarray(array, dtype=np.float32)).cast("B"))


def write_info(entries: Iterable[tuple[str, int, int]], info_path: str | os.PathLike,
               root: str | os.PathLike | None = None) -> None:
    """The benchmark tool's ``.info`` file: ``<index> <bin path> <width> <height>`` per sample, written atomically.
    ``root``: the folder every listed ``.bin`` must be inside (checked before anything is written)."""
    lines = []
    for i, (path, w, h) in enumerate(entries):
        if root is not None:
            inside(root, path, "a .bin file listed in the .info file")
        lines.append(f"{i} {path} {w} {h}\n")
    write_atomically(info_path, "".join(lines).encode())


class OutputReader:
    """Reads a tool's result folder back: ``read(key) -> list of arrays`` shaped like one sample's outputs.

    ``output_shapes`` are the per-sample (batch axis removed) shapes in ONNX output order; binary files may hold
    float32 or float16 (converted to float32). Multi-view models (``views > 1``) read ``<folder>/view<v>/`` (the
    layout ``zooinfer bins`` writes their inputs in) and return one output list per view.
    """

    def __init__(self, folder: str | os.PathLike, output_shapes: list[tuple[int, ...]], views: int = 1):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise BackendError(f"result folder not found: {self.folder} (point it at the folder ais_bench/benchmark "
                               "wrote, e.g. ./output/subdir or ./result/dumpOutput_device0)")
        self.shapes = [tuple(s) for s in output_shapes]
        self.views = views
        if views > 1:
            missing = [str(self.folder / f"view{v}") for v in range(views) if not (self.folder / f"view{v}").is_dir()]
            if missing:
                raise BackendError(f"this model runs {views} views per image: expected result folders "
                                   f"{', '.join(missing)}")
        self.name = "bins"
        self.device = f"files in {self.folder}"
        self._base: int | None = None

    def _find(self, folder: Path, key: str, k: int) -> Path:
        bases = [self._base] if self._base is not None else [0, 1]
        for base in bases:
            for ext in (".bin", ".txt"):
                p = folder / f"{key}_{k + base}{ext}"
                if p.is_file():
                    self._base = base
                    return p
        raise FileNotFoundError(f"no result file {key}_{k + (self._base or 0)}.bin/.txt in {folder}")

    def missing(self, key: str) -> str | None:
        """Why sample ``key`` lacks a readable result file here (None: every output's file exists in every view
        folder, and each ``.bin`` has the byte size of an output in float32 or float16); reads names and sizes only."""
        folders = [self.folder / f"view{v}" for v in range(self.views)] if self.views > 1 else [self.folder]
        sizes = {b * int(np.prod(s)) for s in self.shapes for b in (4, 2)}
        try:
            for folder in folders:
                for k in range(len(self.shapes)):
                    p = self._find(folder, key, k)
                    if p.suffix == ".bin" and p.stat().st_size not in sizes:
                        return (f"{p}: {p.stat().st_size} bytes, expected the float32 or float16 size of an output "
                                f"of shape {' or '.join(map(str, self.shapes))}")
        except OSError as e:
            return str(e)
        return None

    def read(self, key: str) -> list:
        """One sample's outputs in ONNX order (a list of such lists, one per view, for multi-view models). ``key``
        must be a plain name (its files are ``<folder>/<key>_<k>.bin``)."""
        plain_name(key, "sample key", self.folder)
        if self.views > 1:
            return [self._read(self.folder / f"view{v}", key) for v in range(self.views)]
        return self._read(self.folder, key)

    def _read(self, folder: Path, key: str) -> list[np.ndarray]:
        files = [self._find(folder, key, k) for k in range(len(self.shapes))]
        order = self._match_by_size(files)
        return [self._load(files[i], shape) for i, shape in zip(order, self.shapes)]

    def _match_by_size(self, files: list[Path]) -> list[int]:
        """File index for each output: positional, unless the tool wrote the outputs in another order (e.g. ATC's
        ``--out_nodes`` reorders them) and the binary sizes identify each output unambiguously."""
        sizes = [int(np.prod(s)) for s in self.shapes]
        if len(set(sizes)) != len(sizes) or any(f.suffix != ".bin" for f in files):
            return list(range(len(files)))
        elements = []
        for f in files:
            b = f.stat().st_size
            fits = {n for n in sizes if b in (4 * n, 2 * n)}  # float32 or float16 storage
            if len(fits) != 1:
                return list(range(len(files)))
            elements.append(fits.pop())
        if sorted(elements) != sorted(sizes):
            return list(range(len(files)))
        return [elements.index(n) for n in sizes]

    def _load(self, p: Path, shape: tuple[int, ...]) -> np.ndarray:
        n = int(np.prod(shape))
        if p.suffix == ".txt":
            a = np.loadtxt(p, dtype=np.float32, ndmin=1).ravel()
        else:
            size = p.stat().st_size
            dtype = np.float32 if size == 4 * n else np.float16 if size == 2 * n else None
            if dtype is None:
                raise BackendError(f"{p}: {size} bytes, expected {4 * n} (float32) or {2 * n} (float16) "
                                   f"for an output of shape {shape}")
            a = np.fromfile(p, dtype=dtype).astype(np.float32)
        if a.size != n:
            raise BackendError(f"{p}: {a.size} values, expected {n} for an output of shape {shape}")
        return a.reshape(shape)
