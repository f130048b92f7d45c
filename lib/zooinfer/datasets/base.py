"""What every dataset reader returns: an ordered list of samples over a root folder."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

from ..errors import DatasetError
from ..paths import why_not_plain


@dataclass(frozen=True)
class Sample:
    """One image: ``key`` is its unique id (file stem / image id; also the ``.bin`` stem), ``target`` its ground
    truth or a reference to it (dataset-specific), ``info`` small extras (split, camera, ...)."""

    key: str
    path: str
    target: Any = None
    info: dict = field(default_factory=dict)


@dataclass
class ImageDataset:
    """An ordered, indexable set of samples read from ``root`` (``embedded`` when it is the built-in sample)."""

    name: str
    root: Path
    samples: list[Sample]
    embedded: bool = False
    #: dataset-wide ground truth or files the metric needs (annotation path, .mat folder, ...)
    extra: dict = field(default_factory=dict)
    #: files the reader skipped (path, reason), e.g. names not following the layout's pattern
    rejected: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_keys(self.samples, self.root)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]

    @property
    def missing(self) -> list[Sample]:
        """Samples the ground truth names but whose image file is not on disk (``info["missing"]`` says why); the
        pipeline skips, counts and names them with the unreadable images."""
        return [s for s in self.samples if s.info.get("missing")]

    def subset(self, limit: int | None) -> "ImageDataset":
        """The first ``limit`` samples (all when ``limit`` is None or not smaller); ``limit`` must be >= 1."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise DatasetError(f"limit must be None (all samples) or an integer >= 1, got {limit!r}")
        if limit is None or limit >= len(self.samples):
            return self
        return replace(self, samples=self.samples[: int(limit)])

    def sample(self, n: int, seed: int = 0) -> "ImageDataset":
        """A random subset of ``n`` samples drawn without replacement by ``numpy.random.default_rng(seed)``, kept in
        dataset order (the same ``n`` and ``seed`` give the same samples on every machine); all when ``n`` is not
        smaller than the dataset."""
        import numpy as np

        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise DatasetError(f"subset must be an integer >= 1, got {n!r}")
        if n >= len(self.samples):
            return self
        picked = np.sort(np.random.default_rng(seed).choice(len(self.samples), size=n, replace=False))
        return replace(self, samples=[self.samples[i] for i in picked])

    def shard(self, index: int, count: int) -> "ImageDataset":
        """Deterministic contiguous shard ``index`` of ``count`` (dataset order is kept inside a shard)."""
        n = len(self.samples)
        lo, hi = n * index // count, n * (index + 1) // count
        return replace(self, samples=self.samples[lo:hi])

    def repeated(self, n: int) -> "ImageDataset":
        """A stream of ``n`` samples for timing: each sample repeated in place (s0 s0 s1 s1 ..., the dataset's order
        kept), the k-th repeat of a key keyed ``<key>~<k>`` (k >= 1): keys stay unique, so nothing downstream (the
        store, .bin names) mistakes a repeat for the same sample counted twice; paths and ground truth unchanged."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise DatasetError(f"a repeated stream needs n >= 1 samples, got {n!r}")
        k = len(self.samples)
        if k == 0:
            raise DatasetError(f"{self.root}: no samples to repeat")
        samples = [s if j == 0 else replace(s, key=f"{s.key}~{j}")
                   for i, s in enumerate(self.samples) for j in range(n // k + (i < n % k))]
        return replace(self, samples=samples)

    def ground_truth_files(self) -> list[Path]:
        """The files this dataset's ground truth is read from (label list, annotation file, .mat files; none where
        the names carry it, as Market-1501's): the prediction store keeps their sha256, so a resume or a rescore
        after one changed is refused, naming it. Readers list them in ``extra["ground_truth_files"]``."""
        return [Path(p) for p in self.extra.get("ground_truth_files", ())]

    def describe(self) -> str:
        kind = "embedded sample" if self.embedded else "dataset"
        return f"{self.name} {kind} at {self.root}: {len(self.samples)} images"


def check_keys(samples: list[Sample], root: Path | str) -> None:
    """Every sample key is a plain name (it becomes a file name: ``<out>/<key>.bin``) and unique (two samples with
    one key would share that file and be counted twice); a DatasetError names the offending path(s) otherwise."""
    first_path: dict[str, str] = {}
    for s in samples:
        why = why_not_plain(s.key)
        if why is not None:
            raise DatasetError(f"{root}: sample key {s.key!r} of {s.path} is not a plain file name ({why}); keys "
                               "become the .bin file names and must be one path component")
        if s.key in first_path:
            raise DatasetError(f"{root}: sample key {s.key!r} is used more than once: {first_path[s.key]} and "
                               f"{s.path} (the same image twice, e.g. both flat and in a class folder or through a "
                               "symbolic link, or two images with the same name up to the first '.'); keep one")
        first_path[s.key] = s.path


def require_dir(path: Path, what: str, layout: str) -> Path:
    """Return ``path`` if it is a folder, else raise a DatasetError naming it and the expected layout."""
    if not path.is_dir():
        raise DatasetError(f"{what} not found: {path}\nExpected layout:\n{layout}")
    return path


def require_file(path: Path, what: str, layout: str) -> Path:
    """Return ``path`` if it is a file, else raise a DatasetError naming it and the expected layout."""
    if not path.is_file():
        raise DatasetError(f"{what} not found: {path}\nExpected layout:\n{layout}")
    return path
