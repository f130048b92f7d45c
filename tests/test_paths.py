"""Names read from files and the files zooinfer writes: plain names only, nothing written outside its folder."""
from __future__ import annotations

import pytest

from zooinfer.errors import DatasetError, ZooinferError
from zooinfer.paths import inside, plain_name


@pytest.mark.parametrize("name", ["0_Parade_marchingband_1_20", "ILSVRC2012_val_00000001.JPEG", "a..b", ".hidden",
                                  "0--Parade", "name with spaces"])
def test_plain_names_pass_unchanged(name):
    assert plain_name(name, "image name", "/d/gt.mat") == name


@pytest.mark.parametrize("name, why", [("../evil", "path separator"), ("/abs", "an absolute path"),
                                       ("a\\b", "path separator"), ("..", "names a folder"), (".", "names a folder"),
                                       ("", "empty"), ("a\x00b", "control character"), ("a\nb", "control character"),
                                       (7, "int, not text")])
def test_other_names_are_refused_naming_the_source(name, why):
    with pytest.raises(DatasetError) as e:
        plain_name(name, "image name", "/d/gt.mat")
    assert str(e.value).startswith(f"/d/gt.mat: image name {name!r} is not a plain file name") and why in str(e.value)


def test_inside_refuses_targets_that_resolve_outside_the_root(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    assert inside(root, "a/b.bin") == root / "a" / "b.bin"
    assert inside(root, root / "x.bin") == root / "x.bin"
    (root / "up").symlink_to(tmp_path)
    for target in ("../x.bin", tmp_path / "x.bin", "/etc/x", "up/x.bin", ".", root):
        with pytest.raises(ZooinferError, match="outside"):
            inside(root, target)
