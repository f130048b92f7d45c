"""Embedded mini datasets: built on first use, in the real on-disk layouts, from images installed packages ship.

No downloads: the pictures come from scikit-image's bundled ``skimage/data`` files. Each dataset module provides
``build_sample(root: Path)`` writing its layout; :func:`ensure` builds it once into the cache folder atomically (a
temporary folder renamed when complete, so an interrupted build never looks finished).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DatasetError

#: bump when a builder changes, so stale caches are rebuilt
SAMPLE_VERSION = "1"


def cache_root() -> Path:
    """``$ZOOINFER_CACHE`` or ``~/.cache/zooinfer``."""
    return Path(os.environ.get("ZOOINFER_CACHE", Path.home() / ".cache" / "zooinfer"))


def ensure(name: str, build: Callable[[Path], None]) -> Path:
    """Root of embedded sample ``name``, building it with ``build(tmp_root)`` if it is not there yet. A cache folder
    that cannot be written (read-only, full) is a DatasetError naming it and ``ZOOINFER_CACHE``."""
    final = cache_root() / "samples" / f"{name}-v{SAMPLE_VERSION}"
    if (final / ".complete").is_file():
        return final
    tmp = None
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final.parent))
        build(tmp)
        (tmp / ".complete").write_text("built by zooinfer.datasets.samples\n")
        try:
            tmp.rename(final)
        except OSError:  # another process finished first
            if not (final / ".complete").is_file():
                shutil.rmtree(final, ignore_errors=True)
                tmp.rename(final)
    except OSError as e:
        cache = Path(os.path.abspath(cache_root()))
        if e.filename is not None and cache not in Path(os.path.abspath(e.filename)).parents:
            raise  # not the cache's fault (e.g. a picture scikit-image does not ship)
        raise DatasetError(f"cannot build the embedded {name} sample in the cache folder {final.parent}: "
                           f"{e.strerror or e}; set ZOOINFER_CACHE to a writable folder (default ~/.cache/zooinfer) "
                           "or pass data_root= (the real dataset)") from None
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def skimage_path(filename: str) -> Path:
    """Path of a file in scikit-image's bundled data folder (e.g. ``chelsea.png``)."""
    import skimage

    p = Path(skimage.__file__).parent / "data" / filename
    if not p.is_file():
        raise FileNotFoundError(f"scikit-image does not ship {filename} in {p.parent}")
    return p


def skimage_image(filename: str) -> np.ndarray:
    """A bundled scikit-image picture as a uint8 array (HxW, HxWx3 or HxWx4, as stored)."""
    from PIL import Image

    with Image.open(skimage_path(filename)) as im:
        return np.asarray(im)
