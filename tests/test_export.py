"""ONNX export's cache folder: a cache that cannot be written is a clear error naming the folder and ZOOINFER_CACHE."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import TinyNet, tiny_recipe
from zooinfer import export
from zooinfer.errors import ZooinferError


def test_14_an_unwritable_cache_folder_names_it_and_the_variable_that_moves_it(tmp_path, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setenv("ZOOINFER_CACHE", str(afile / "cache"))  # under a file: no folder can be made there
    with pytest.raises(ZooinferError) as e:
        export.export_onnx(tiny_recipe(), TinyNet().eval())
    text = str(e.value)
    assert str(afile / "cache" / "onnx") in text and "ZOOINFER_CACHE" in text and "Traceback" not in text


def test_14_a_read_only_cache_folder_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOOINFER_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "onnx").mkdir(parents=True)
    real_open = open

    def read_only(path, mode="r", *args, **kwargs):  # what a read-only mount says, even to root
        if "w" in mode and Path(path).parent == tmp_path / "cache" / "onnx":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", read_only)
    with pytest.raises(ZooinferError, match=r"cannot write the exported ONNX file into .*cache/onnx: Permission "
                                            r"denied.*ZOOINFER_CACHE"):
        export.export_onnx(tiny_recipe(), TinyNet().eval())
    assert list((tmp_path / "cache" / "onnx").iterdir()) == []


def test_14_an_unwritable_out_path_names_it(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ZooinferError, match=f"cannot write the exported ONNX file {afile / 'x.onnx'}"):
        export.export_onnx(tiny_recipe(), TinyNet().eval(), out_path=afile / "x.onnx")
