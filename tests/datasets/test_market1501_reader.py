"""Market-1501 reader: file names whose key could not be a .bin file name are rejected, not evaluated."""
from __future__ import annotations

from PIL import Image

from zooinfer.datasets.market1501 import open_market1501


def test_2_a_name_that_cannot_be_a_bin_file_name_is_rejected(tmp_path):
    for folder, name in (("query", "0001_c1s1_000001_00.jpg"), ("bounding_box_test", "0001_c2s1_000002_01.jpg"),
                         ("bounding_box_test", "0001_c3s1_000003_01\\x.jpg"),
                         ("bounding_box_test", "0001_c4s1_000004_01\nx.jpg")):
        (tmp_path / folder).mkdir(exist_ok=True)
        Image.new("RGB", (8, 16)).save(tmp_path / folder / name, format="JPEG")
    ds = open_market1501(tmp_path)
    assert [s.key for s in ds] == ["0001_c1s1_000001_00", "0001_c2s1_000002_01"]
    reasons = {p.rsplit("/", 1)[-1]: why for p, why in ds.rejected}
    assert "path separator" in reasons["0001_c3s1_000003_01\\x.jpg"]
    assert "control character" in reasons["0001_c4s1_000004_01\nx.jpg"]
