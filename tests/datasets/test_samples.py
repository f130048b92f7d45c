"""Embedded samples: built once into the cache folder; a cache that cannot be written is a clear error."""
from __future__ import annotations

import pytest

from zooinfer.datasets import samples
from zooinfer.errors import DatasetError


def test_14_an_unwritable_cache_names_the_folder_and_zooinfer_cache(tmp_path, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setenv("ZOOINFER_CACHE", str(afile))
    with pytest.raises(DatasetError) as e:
        samples.ensure("demo", lambda root: (root / "x").write_text("1"))
    text = str(e.value)
    assert str(afile / "samples") in text and "ZOOINFER_CACHE" in text and "embedded demo sample" in text


def test_a_failed_build_leaves_no_folder_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOOINFER_CACHE", str(tmp_path))

    def full_disk(root):
        raise OSError(28, "No space left on device")

    with pytest.raises(DatasetError, match="No space left on device"):
        samples.ensure("demo", full_disk)
    assert list((tmp_path / "samples").iterdir()) == []
    assert (samples.ensure("demo", lambda root: (root / "x").write_text("1")) / "x").read_text() == "1"
