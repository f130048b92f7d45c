"""The Ascend tools' file interop: .bin/.info writers stay inside --out and never leave a truncated file."""
from __future__ import annotations

import errno
import io

import numpy as np
import pytest

from zooinfer.backends import bins
from zooinfer.backends.bins import OutputReader, write_info, write_input
from zooinfer.errors import DatasetError, ZooinferError


def test_2_write_input_refuses_a_target_outside_its_root(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for target in (out / ".." / "evil.bin", tmp_path / "evil.bin"):
        with pytest.raises(ZooinferError, match="outside"):
            write_input(np.zeros(3, np.float32), target, root=out)
    (out / "link").symlink_to(tmp_path)  # a folder inside --out that leads outside it
    with pytest.raises(ZooinferError, match="outside"):
        write_input(np.zeros(3, np.float32), out / "link" / "evil.bin", root=out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    write_input(np.ones(3, np.float32), out / "ok.bin", root=out)
    assert np.fromfile(out / "ok.bin", np.float32).tolist() == [1, 1, 1]


def test_2_write_info_refuses_listing_a_file_outside_its_root(tmp_path):
    with pytest.raises(ZooinferError, match="outside"):
        write_info([(str(tmp_path / "evil.bin"), 4, 3)], tmp_path / "x.info", root=tmp_path / "out")
    assert not (tmp_path / "x.info").exists()


@pytest.mark.parametrize("key", ["../evil", "/abs/evil", "a/b"])
def test_2_result_files_are_only_read_for_plain_keys(tmp_path, key):
    (tmp_path / "evil_0.bin").write_bytes(b"\0" * 8)
    res = tmp_path / "res"
    res.mkdir()
    with pytest.raises(DatasetError, match="not a plain file name"):
        OutputReader(res, [(2,)]).read(key)


class _FullDisk(io.BufferedWriter):
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    room = 100

    def write(self, data):
        data = memoryview(data).cast("B")
        if self.tell() + len(data) > self.room:
            super().write(data[: self.room - self.tell()])
            self.flush()
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


def _full_disk_open(path, mode="r", *args, **kwargs):
    assert "b" in mode
    return _FullDisk(io.FileIO(path, mode.replace("b", "")))


@pytest.mark.parametrize("writer", ["input", "info"])
def test_14_a_full_disk_is_a_clear_error_and_leaves_no_truncated_file(tmp_path, monkeypatch, writer):
    monkeypatch.setattr(bins, "open", _full_disk_open, raising=False)
    target = tmp_path / ("x.bin" if writer == "input" else "x.info")
    with pytest.raises(ZooinferError) as e:
        if writer == "input":
            write_input(np.zeros(1000, np.float32), target)
        else:
            write_info([(str(tmp_path / f"{i:030d}.bin"), 224, 224) for i in range(20)], target)
    assert str(target) in str(e.value) and "No space left on device" in str(e.value)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary copy


def test_14_an_existing_file_is_kept_whole_when_its_rewrite_fails(tmp_path, monkeypatch):
    target = tmp_path / "x.bin"
    write_input(np.arange(3, dtype=np.float32), target)
    monkeypatch.setattr(bins, "open", _full_disk_open, raising=False)
    with pytest.raises(ZooinferError, match="No space left on device"):
        write_input(np.zeros(1000, np.float32), target)
    assert np.fromfile(target, np.float32).tolist() == [0, 1, 2] and list(tmp_path.iterdir()) == [target]
