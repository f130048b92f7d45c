"""COCO readers: file names read from the annotation file never lead outside the image folder."""
from __future__ import annotations

import json

import pytest

from zooinfer.datasets.coco import open_coco2014_minival, open_coco2017_val
from zooinfer.errors import DatasetError


def _instances(file_name) -> dict:
    return {"images": [{"id": 1, "file_name": "000000000001.jpg", "height": 4, "width": 4},
                       {"id": 2, "file_name": file_name, "height": 4, "width": 4}],
            "annotations": [{"id": 9, "image_id": i, "category_id": 1, "bbox": [0, 0, 2, 2], "iscrowd": 0, "area": 4}
                            for i in (1, 2)],
            "categories": [{"id": 1, "name": "person"}]}


@pytest.mark.parametrize("file_name", ["../evil.jpg", "/tmp/abs_evil.jpg", "..", 7])
def test_2_a_file_name_that_is_not_a_plain_name_is_refused(tmp_path, file_name):
    (tmp_path / "val2017").mkdir()
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(_instances(file_name)))
    with pytest.raises(DatasetError, match=r"instances_val2017.json: file_name of image id 2 .* is not a plain file "
                                           r"name"):
        open_coco2017_val(tmp_path)


def test_2_the_minival_reader_refuses_them_too(tmp_path):
    (tmp_path / "images" / "val2014").mkdir(parents=True)
    (tmp_path / "annotations").mkdir()
    data = _instances("../../evil.jpg")
    data["categories"] = [{"id": i, "name": f"c{i}"} for i in range(1, 81)]
    (tmp_path / "annotations" / "instances_minival2014.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="file_name of image id 2 '../../evil.jpg' is not a plain file name"):
        open_coco2014_minival(tmp_path)


def test_5_two_images_with_the_same_file_stem_are_refused(tmp_path):
    (tmp_path / "val2017").mkdir()
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(_instances("000000000001.png")))
    with pytest.raises(DatasetError, match=r"sample key '000000000001' .*000000000001\.jpg.*000000000001\.png"):
        open_coco2017_val(tmp_path)
