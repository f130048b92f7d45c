"""Names read from files that become parts of paths, and the files zooinfer writes: both stay where they belong.

A dataset or annotation file names images, events and folders (WIDER FACE's ``.mat`` event and image names, COCO's
``file_name``, ImageNet's ``val_label.txt``); those names become parts of the paths zooinfer reads and writes
(``<out>/<key>.bin``, ``<run>/submission/<event>/<image>.txt``). :func:`plain_name` accepts only a plain name (one
path component) and :func:`inside` refuses any target outside the folder it is written into, so a crafted file can
neither make zooinfer read nor write outside the dataset, the run folder or ``--out``.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from .errors import DatasetError, ZooinferError

#: path separators (of any OS): a plain name holds none
SEPARATORS = ("/", "\\")


def why_not_plain(name: object) -> str | None:
    """Why ``name`` is not a plain file or folder name (None when it is one): it must be a non-empty string of one
    path component, not ``.`` or ``..``, without separators, NUL or other control characters."""
    if not isinstance(name, str):
        return f"it is a {type(name).__name__}, not text"
    if not name:
        return "it is empty"
    if name in (".", ".."):
        return "it names a folder, not a file"
    if any(sep in name for sep in SEPARATORS):
        return "it holds a path separator: it would lead into another folder" + \
               (" (an absolute path)" if name.startswith(("/", "\\")) else "")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "it holds a control character (e.g. a line break or NUL)"
    return None


def plain_name(name: object, what: str, source: str | os.PathLike) -> str:
    """``name`` when it is a plain file or folder name (see :func:`why_not_plain`), else a DatasetError naming
    ``what`` it is (e.g. "image name") and the ``source`` file it was read from."""
    why = why_not_plain(name)
    if why is not None:
        raise DatasetError(f"{source}: {what} {name!r} is not a plain file name ({why}); names read from a dataset "
                           "become parts of the paths zooinfer reads and writes and must be one path component "
                           "(no '/', '\\', '.' or '..')")
    return name  # type: ignore[return-value]


def inside(root: str | os.PathLike, path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` (relative paths are taken under ``root``) when, symbolic links resolved, it lies inside ``root``;
    else a ZooinferError naming both. Returns the path as given (joined to ``root`` when relative)."""
    target = Path(root) / path
    real_root, real_target = Path(os.path.realpath(root)), Path(os.path.realpath(target))
    if real_target == real_root or real_root not in real_target.parents:
        raise ZooinferError(f"refusing to write {what} {target}: it resolves to {real_target}, outside {real_root} "
                            "(every file zooinfer writes stays inside its run folder or --out)")
    return target


def make_folder(folder: str | os.PathLike, what: str = "the folder") -> Path:
    """``folder`` (and its parents) created if needed; a ZooinferError naming ``what`` it is, the folder and the
    system's reason if it cannot be."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ZooinferError(f"cannot create {what} {folder}: {e.strerror or e}") from None
    return folder


@contextlib.contextmanager
def working_folder(folder: str | os.PathLike) -> Iterator[None]:
    """The process's working folder is ``folder`` for the block, the previous one put back after, also after an error
    (``contextlib.chdir`` from Python 3.11 on). For tools that read or write in the working folder: LoadGen reads
    ``audit.config`` there; ONNX Runtime's symbolic shape inference saves large graphs there."""
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)
