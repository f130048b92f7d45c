"""WIDER FACE val reader: names read from the ground-truth .mat files never lead outside the dataset or a run folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zooinfer import recipes
from zooinfer.datasets.widerface import open_widerface_val
from zooinfer.errors import DatasetError
from zooinfer.metrics import widerface as wf


def _crafted_root(tmp_path: Path, event: str, image: str) -> Path:
    """A WIDER FACE val layout whose ground truth (written with scipy.io.savemat, as the embedded sample's) names
    ``event``/``image`` beside one ordinary image."""
    root = tmp_path / "wider"
    folder = root / "WIDER_val" / "images" / "0--Parade"
    folder.mkdir(parents=True)
    Image.new("RGB", (32, 24)).save(folder / "0_Parade_a_1.jpg")
    entries = {"0--Parade": {"0_Parade_a_1": [[1, 2, 10, 10]]}}
    entries.setdefault(event, {})[image] = [[3, 4, 10, 10]]
    wf.write_ground_truth(root / "eval_tools" / "ground_truth", entries)
    return root


@pytest.mark.parametrize("event, image", [("../evil", "0_evil_1"), ("0--Parade", "../../evil"),
                                          ("/abs", "0_abs_1"), ("0--Parade", "/tmp/abs_evil"),
                                          ("..", "x"), ("0--Parade", "a\nb")])
def test_2_names_in_the_mat_that_are_not_plain_names_are_refused(tmp_path, event, image):
    root = _crafted_root(tmp_path, event, image)
    with pytest.raises(DatasetError, match=r"wider_face_val\.mat: (event|image) name .* is not a plain file name"):
        open_widerface_val(root)
    # what `zooinfer run pyramidbox -p data_root ...` opens first: refused before anything is written
    with pytest.raises(DatasetError, match="not a plain file name"):
        recipes.get("pyramidbox").open_dataset(str(root))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wider"]


def test_5_the_same_image_name_in_two_events_is_refused_naming_both_paths(tmp_path):
    """Sample keys are image names (the .bin stems): two events holding the same name would share one .bin."""
    root = _crafted_root(tmp_path, "1--Handshaking", "0_Parade_a_1")
    with pytest.raises(DatasetError, match=r"sample key '0_Parade_a_1' .*0--Parade/0_Parade_a_1\.jpg.*"
                                           r"1--Handshaking/0_Parade_a_1\.jpg"):
        open_widerface_val(root)


def test_an_ordinary_crafted_layout_still_opens(tmp_path):
    root = _crafted_root(tmp_path, "1--Handshaking", "1_Handshaking_b_2")
    ds = open_widerface_val(root)
    assert [s.key for s in ds] == ["0_Parade_a_1", "1_Handshaking_b_2"]
    assert np.array_equal(ds.extra["ground_truth"].boxes["hard"][0], [[1, 2, 10, 10]])
