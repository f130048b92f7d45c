"""The chosen set in the forms ONNX Runtime, NNCF and Ascend ATC take."""
from __future__ import annotations

import json

import pytest

from zooinfer import recipes
from zooinfer.errors import ZooinferError
from zooinfer.tune import files


def test_the_files_are_in_the_documented_forms(tmp_path):
    nodes = ["/features/conv4_20/c1x1_a/conv/Conv", "classifier"]
    paths = files.write_precision_files(tmp_path / "precision", nodes, {nodes[0]: "Conv", nodes[1]: "Gemm"})
    assert {p.name for p in paths.values()} == {"nodes_to_exclude.json", "ignored_scope.json", "keep_dtype.cfg",
                                                 "modify_mixlist.json"}
    assert json.loads(paths["onnxruntime"].read_text()) == nodes  # quantize_static(nodes_to_exclude=...)
    assert json.loads(paths["nncf"].read_text()) == {"names": nodes}  # nncf.IgnoredScope(**doc)
    # ATC --keep_dtype: one operator name per line
    assert paths["atc_keep_dtype"].read_text().splitlines() == nodes
    assert paths["atc_keep_dtype"].read_text().endswith("\n")
    # ATC --modify_mixlist: black-list / white-list / gray-list objects of to-add / to-remove lists of op types
    mix = json.loads(paths["atc_mixlist"].read_text())
    assert set(mix) <= {"black-list", "white-list", "gray-list"}
    for lists in mix.values():
        assert set(lists) <= {"to-add", "to-remove"}
        assert all(isinstance(v, list) and all(isinstance(t, str) for t in v) for v in lists.values())
    assert mix["black-list"]["to-add"] == ["Conv2D", "MatMulV2"]  # Ascend IR op types


def test_an_empty_set_writes_empty_files(tmp_path):
    paths = files.write_precision_files(tmp_path, [], {})
    assert json.loads(paths["onnxruntime"].read_text()) == [] and paths["atc_keep_dtype"].read_text() == ""
    assert json.loads(paths["atc_mixlist"].read_text()) == {"black-list": {"to-add": []}}


def test_a_name_on_two_lines_is_refused(tmp_path):
    with pytest.raises(ZooinferError, match="one line"):
        files.write_precision_files(tmp_path, ["a\nb"], {})


def test_the_atc_line_uses_both_files(tmp_path):
    line = files.atc_command(recipes.get("dpn131"), "dpn131.onnx", 8, tmp_path / "precision")
    assert line.startswith("atc --framework=5 --model=dpn131.onnx")
    assert "--precision_mode=allow_mix_precision" in line
    assert f"--keep_dtype={tmp_path / 'precision' / 'keep_dtype.cfg'}" in line
    assert f"--modify_mixlist={tmp_path / 'precision' / 'modify_mixlist.json'}" in line
