"""ImageNet layout reader and the DPN131 guide's preprocessing (check values from docs/models/dpn131.md 5.1)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from zooinfer import recipes
from zooinfer.datasets.imagenet import imagenet_sample_root, open_imagenet
from zooinfer.models.dpn131.recipe import input_array as preprocess_imagenet
from zooinfer.transforms import center_crop, resize_short_side
from zooinfer.datasets.samples import skimage_path
from zooinfer.errors import DatasetError

# (file, first three values of channel 0 row 0, mean of all values) -- spec section 5.1
CHECK = [
    ("chelsea.png", [0.7687944, 0.80216944, 0.7020443], -0.1064128),
    ("coffee.png", [0.5685441, 0.5518566, 0.4350439], -0.3408049),
    ("astronaut.png", [-1.6675845, -1.6175219, -1.6175219], 0.0386115),
    ("camera.png", [1.3194827] * 3, 0.1437917),
    ("logo.png", [2.187234] * 3, 0.8382920),
    ("rocket.jpg", [-1.650897] * 3, -0.6844883),
]


@pytest.mark.parametrize("fname,first,mean", CHECK)
def test_preprocessing_check_values(fname, first, mean):
    x = preprocess_imagenet(str(skimage_path(fname)))
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 0, :3], first, rtol=0, atol=2e-7)
    assert abs(float(x.astype(np.float64).mean()) - mean) < 2e-7


def test_resize_and_crop_rules():
    assert resize_short_side(Image.new("RGB", (300, 400)), 256).size == (256, 341)  # int() truncation
    assert resize_short_side(Image.new("RGB", (500, 375)), 256).size == (341, 256)
    same = Image.new("RGB", (256, 300))
    assert resize_short_side(same, 256) is same  # already 256: returned unchanged
    img = Image.fromarray(np.arange(251 * 300 * 3, dtype=np.uint32).reshape(251, 300, 3).astype(np.uint8))
    # (251-224)/2 = 13.5 -> round half to even = 14; (300-224)/2 = 38
    np.testing.assert_array_equal(np.asarray(center_crop(img, 224)), np.asarray(img)[14:238, 38:262])


def _write_layout(root, nested: bool):
    val = root / "val"
    lines = []
    for i in range(3):
        folder = val / f"n0000000{i}" if nested else val
        folder.mkdir(parents=True, exist_ok=True)
        name = f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        Image.new("RGB", (260, 300), (i * 40, 10, 10)).save(folder / name)
        lines.append(f"{name} {i * 7}")
    (root / "val_label.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("nested", [False, True])
def test_both_guide_layouts(tmp_path, nested):
    _write_layout(tmp_path, nested)
    ds = open_imagenet(tmp_path)
    assert [s.key for s in ds] == [f"ILSVRC2012_val_{i:08d}" for i in (1, 2, 3)]
    assert [s.target for s in ds] == [0, 7, 14]


def test_missing_folder_names_path_and_layout(tmp_path):
    with pytest.raises(DatasetError) as e:
        open_imagenet(tmp_path / "imagenet")
    assert str(tmp_path / "imagenet" / "val") in str(e.value) and "val_label.txt" in str(e.value)


def test_missing_label_file(tmp_path):
    (tmp_path / "val").mkdir()
    with pytest.raises(DatasetError, match="ImageNet label file not found"):
        open_imagenet(tmp_path)


def test_malformed_label_line_and_unlabeled_image(tmp_path):
    _write_layout(tmp_path, nested=False)
    (tmp_path / "val_label.txt").write_text("ILSVRC2012_val_00000001.JPEG\n")
    with pytest.raises(DatasetError, match=r"val_label.txt:1: expected"):
        open_imagenet(tmp_path)
    (tmp_path / "val_label.txt").write_text("ILSVRC2012_val_00000001.JPEG 3\n")
    with pytest.raises(DatasetError, match="2 images .* have no line"):
        open_imagenet(tmp_path)


def test_embedded_sample_is_in_the_real_layout():
    root = imagenet_sample_root()
    ds = recipes.get("dpn131").open_dataset(None)
    assert ds.embedded and len(ds) == 10 and ds.root == root
    names = {p.name for p in (root / "val").iterdir()}
    assert "ILSVRC2012_val_00000001.JPEG" in names and "ILSVRC2012_val_00000006.png" in names  # RGBA kept as PNG
    modes = set()
    for s in ds:
        with Image.open(s.path) as im:
            modes.add(im.mode)
            w, h = im.size
        if s.key.endswith("09"):
            assert min(w, h) == 256  # the "already 256" branch
    assert {"L", "RGB", "RGBA"} <= modes
    assert all(0 <= s.target < 1000 for s in ds)


# ---------------------------------------------------------------------------------------------------- issue 18
def test_9_images_named_in_the_label_file_but_missing_on_disk_are_kept_as_missing(tmp_path):
    import shutil

    root = tmp_path / "imagenet"
    shutil.copytree(imagenet_sample_root(), root)
    with open(root / "val_label.txt", "a") as f:
        f.write("ILSVRC2012_val_00050000.JPEG 7\n")
    ds = open_imagenet(root)
    assert len(ds) == len(open_imagenet(imagenet_sample_root())) + 1  # the user's count, not one fewer
    [missing] = ds.missing
    assert missing.key == "ILSVRC2012_val_00050000" and missing.path == str(root / "val" / "ILSVRC2012_val_00050000.JPEG")
    assert "not found: named in" in missing.info["missing"] and "val_label.txt" in missing.info["missing"]


def test_10_a_subset_of_zero_or_fewer_samples_is_refused():
    ds = open_imagenet(imagenet_sample_root())
    for bad in (0, -1):
        with pytest.raises(DatasetError, match=f"limit must be None .* or an integer >= 1, got {bad}"):
            ds.subset(bad)
    assert len(ds.subset(2)) == 2 and ds.subset(None) is ds


# ---------------------------------------------------------------------------------------------------- issue 22
@pytest.mark.parametrize("name", ["../evil.JPEG", "/tmp/abs_evil.JPEG", "sub/ILSVRC2012_val_00000009.JPEG"])
def test_2_file_names_in_val_label_txt_that_are_not_plain_names_are_refused(tmp_path, name):
    _write_layout(tmp_path, nested=False)
    with open(tmp_path / "val_label.txt", "a") as f:
        f.write(f"{name} 5\n")
    with pytest.raises(DatasetError, match=r"val_label.txt: file name on line 4 .* is not a plain file name"):
        open_imagenet(tmp_path)


def test_5_an_image_both_flat_and_in_a_class_folder_is_refused_naming_both_paths(tmp_path):
    _write_layout(tmp_path, nested=False)
    (tmp_path / "val" / "n01440764").mkdir()
    (tmp_path / "val" / "n01440764" / "ILSVRC2012_val_00000002.JPEG").write_bytes(
        (tmp_path / "val" / "ILSVRC2012_val_00000002.JPEG").read_bytes())
    with pytest.raises(DatasetError) as e:
        open_imagenet(tmp_path)
    text = str(e.value)
    assert "sample key 'ILSVRC2012_val_00000002'" in text and "more than once" in text
    assert str(tmp_path / "val" / "ILSVRC2012_val_00000002.JPEG") in text
    assert str(tmp_path / "val" / "n01440764" / "ILSVRC2012_val_00000002.JPEG") in text


@pytest.mark.parametrize("target", ["n00000000", "."])
def test_5_a_symlinked_class_folder_is_refused_not_evaluated_twice(tmp_path, target):
    """val/again -> val/n00000000 (its images twice) or val/again -> val (a loop back to the flat level)."""
    _write_layout(tmp_path, nested=target != ".")
    (tmp_path / "val" / "again").symlink_to(target)
    with pytest.raises(DatasetError, match=r"more than once.*again"):
        open_imagenet(tmp_path)


def test_5_a_symlink_loop_is_unreadable_not_missing(tmp_path):
    import errno

    _write_layout(tmp_path, nested=False)
    (tmp_path / "val" / "ILSVRC2012_val_00000004.JPEG").symlink_to("ILSVRC2012_val_00000004.JPEG")
    with open(tmp_path / "val_label.txt", "a") as f:
        f.write("ILSVRC2012_val_00000004.JPEG 5\n")
    ds = open_imagenet(tmp_path)
    assert len(ds) == 4 and ds.missing == []  # listed like any image: reading it says why it cannot be read
    loop = next(s for s in ds if s.key == "ILSVRC2012_val_00000004")
    with pytest.raises(OSError) as e:
        open(loop.path, "rb")
    assert e.value.errno == errno.ELOOP
