"""The command line: help, list, parameter parsing, .bin writing."""
from __future__ import annotations

import numpy as np
import pytest

from zooinfer import cli


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0 and "zooinfer run dpn131" in capsys.readouterr().out


def test_list(capsys):
    assert cli.main(["list"]) == 0
    assert "dpn131" in capsys.readouterr().out


def test_parameter_values_follow_papermill():
    assert cli._parse_value("8") == 8 and cli._parse_value("null") is None
    assert cli._parse_value("[1, 8]") == [1, 8] and cli._parse_value("/data/x.pth") == "/data/x.pth"


def test_unknown_model_is_a_clear_error(capsys):
    assert cli.main(["bins", "resnet50", "--out", "x"]) == 2
    assert "unknown model 'resnet50'" in capsys.readouterr().err


def test_bins_writes_inputs_and_info(tmp_path, capsys):
    out = tmp_path / "prep_bin"
    assert cli.main(["bins", "dpn131", "--out", str(out), "--limit", "2"]) == 0
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["ILSVRC2012_val_00000001.bin", "ILSVRC2012_val_00000002.bin"]
    assert files[0].stat().st_size == 602_112
    from zooinfer import recipes

    r = recipes.get("dpn131")
    ds = r.open_dataset(None)
    np.testing.assert_array_equal(np.fromfile(files[0], np.float32).reshape(3, 224, 224), r.preprocess(ds[0].path)[0][0])
    assert (tmp_path / "prep_bin.info").read_text().splitlines()[0].endswith("ILSVRC2012_val_00000001.bin 224 224")
