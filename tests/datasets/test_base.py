"""The dataset's selections: the first N (limit), a seeded random N (subset), shards."""
from __future__ import annotations

import pytest

from zooinfer.datasets.base import ImageDataset, Sample
from zooinfer.errors import DatasetError


def _dataset(n: int = 1000) -> ImageDataset:
    return ImageDataset("d", "/d", [Sample(f"k{i:04d}", f"/d/k{i:04d}.jpg", i) for i in range(n)])


def test_a_subset_is_reproducible_from_its_seed_and_kept_in_dataset_order():
    ds = _dataset()
    a, b, c = ds.sample(50, seed=7), ds.sample(50, seed=7), ds.sample(50, seed=8)
    keys = [s.key for s in a]
    assert keys == [s.key for s in b] and keys != [s.key for s in c]
    assert keys == sorted(keys) and len(set(keys)) == 50


def test_a_subset_is_spread_over_the_dataset_not_its_beginning():
    keys = [s.target for s in _dataset().sample(100, seed=0)]
    assert max(keys) > 500 and min(keys) < 500


def test_a_subset_as_large_as_the_dataset_is_all_of_it():
    ds = _dataset(10)
    assert ds.sample(10) is ds and ds.sample(99) is ds


@pytest.mark.parametrize("n", [0, -1, 2.5, True, "3"])
def test_a_bad_subset_size_is_refused(n):
    with pytest.raises(DatasetError, match="subset must be an integer >= 1"):
        _dataset(10).sample(n)


# ---------------------------------------------------------------------------------------------------- issue 22
def test_5_duplicate_keys_are_refused_naming_both_paths():
    samples = [Sample("a", "/d/a.jpg"), Sample("b", "/d/b.jpg"), Sample("a", "/d/sub/a.png")]
    with pytest.raises(DatasetError, match=r"sample key 'a' .*more than once.*/d/a\.jpg.*/d/sub/a\.png"):
        ImageDataset("d", "/d", samples)


@pytest.mark.parametrize("key", ["../a", "/abs/a", "", "a/b", ".."])
def test_2_a_key_that_is_not_a_plain_name_is_refused(key):
    """Sample keys become .bin stems (``<out>/<key>.bin``): one path component each."""
    with pytest.raises(DatasetError, match=r"sample key .* is not a plain file name"):
        ImageDataset("d", "/d", [Sample(key, "/d/x.jpg")])


def test_a_repeated_stream_keeps_order_and_paths_with_unique_keys(tmp_path):
    """Timing streams repeat samples in place; the repeats get their own keys (a duplicate key is refused)."""
    from zooinfer.datasets.base import ImageDataset, Sample

    ds = ImageDataset("x", tmp_path, [Sample("a", "/p/a.jpg", 1), Sample("b", "/p/b.jpg", 2)])
    s = ds.repeated(5)
    assert [x.key for x in s] == ["a", "a~1", "a~2", "b", "b~1"]
    assert [x.path for x in s] == ["/p/a.jpg"] * 3 + ["/p/b.jpg"] * 2 and [x.target for x in s] == [1, 1, 1, 2, 2]
    with pytest.raises(DatasetError, match="n >= 1"):
        ds.repeated(0)
