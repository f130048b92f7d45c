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
