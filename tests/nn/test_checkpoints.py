"""Checkpoint containers, safe unpickling, strict key checks and md5 warnings."""
from __future__ import annotations

import pickle
import sys
import types
from collections import OrderedDict

import pytest
import torch

from zooinfer.errors import CheckpointError
from zooinfer.nn.checkpoints import check_md5, file_md5, load_weights, read_checkpoint

from conftest import TinyNet


def _same(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k].float() if a[k].is_floating_point() else a[k], b[k]), k


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("container", ["plain", "state_dict", "model", "module_prefix", "half"])
def test_containers(tmp_path, tiny_model, legacy, container):
    sd = tiny_model.state_dict()
    obj = {
        "plain": sd,
        "state_dict": {"state_dict": sd, "epoch": 3, "optimizer": {"lr": 0.1}},
        "model": {"model": sd},
        "module_prefix": OrderedDict((f"module.{k}", v) for k, v in sd.items()),
        "half": OrderedDict((k, v.half() if v.is_floating_point() else v) for k, v in sd.items()),
    }[container]
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    got = read_checkpoint(path)
    assert all(v.dtype == torch.float32 for k, v in got.items() if not k.endswith("num_batches_tracked"))
    if container == "half":
        for k, v in sd.items():
            if v.is_floating_point():
                assert torch.allclose(got[k], v, atol=1e-2, rtol=1e-2)
    else:
        _same(got, sd)
    fresh = TinyNet()
    torch.nn.init.zeros_(fresh.fc.weight)
    load_weights(fresh, got)
    assert torch.equal(fresh.fc.weight, tiny_model.fc.weight.half().float() if container == "half"
                       else tiny_model.fc.weight)


def test_missing_num_batches_tracked_is_accepted(tmp_path, tiny_model):
    sd = OrderedDict((k, v) for k, v in tiny_model.state_dict().items() if not k.endswith("num_batches_tracked"))
    fresh = TinyNet()
    load_weights(fresh, sd)
    assert torch.equal(fresh.conv.weight, tiny_model.conv.weight)


def test_wrong_keys_are_named(tiny_model):
    sd = tiny_model.state_dict()
    sd = OrderedDict([("backbone.conv.weight", sd.pop("conv.weight")), *sd.items()])
    sd["fc.weight"] = torch.zeros(5, 4)
    with pytest.raises(CheckpointError) as e:
        load_weights(TinyNet(), sd, what="checkpoint x.pth")
    msg = str(e.value)
    assert "missing keys: conv.weight" in msg
    assert "unexpected keys: backbone.conv.weight" in msg
    assert "fc.weight (5, 4) vs (4, 4)" in msg


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        read_checkpoint(tmp_path / "nope" / "dpn131.pth")


def test_garbage_file_is_a_clear_error(tmp_path):
    p = tmp_path / "bad.pth"
    p.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(p)


def test_md5_mismatch_warns(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc")
    assert file_md5(p) == "900150983cd24fb0d6963f7d28e17f72"
    with pytest.warns(UserWarning, match="differs from the published"):
        check_md5(p, "0" * 32)
    assert check_md5(p, "900150983cd24fb0d6963f7d28e17f72") == "900150983cd24fb0d6963f7d28e17f72"


def _save_whole_module(tmp_path, legacy: bool):
    """Pickle a whole module whose class lives in a fake package, then make that package disappear."""
    mod = types.ModuleType("fakepkg.nets")
    pkg = types.ModuleType("fakepkg")

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = TinyNet()
            self.extra = torch.nn.Sequential(torch.nn.Conv2d(4, 2, 1), torch.nn.ReLU())

    Wrapper.__module__ = "fakepkg.nets"
    Wrapper.__qualname__ = "Wrapper"
    mod.Wrapper = Wrapper
    TinyNet.__module__, saved_module = "fakepkg.nets", TinyNet.__module__
    mod.TinyNet = TinyNet
    sys.modules["fakepkg"], sys.modules["fakepkg.nets"] = pkg, mod
    try:
        net = Wrapper().eval()
        path = tmp_path / ("legacy.pt" if legacy else "zip.pt")
        torch.save(net, path, _use_new_zipfile_serialization=not legacy)
        expected = net.state_dict()
    finally:
        TinyNet.__module__ = saved_module
        del sys.modules["fakepkg"], sys.modules["fakepkg.nets"]
    return path, expected


@pytest.mark.parametrize("legacy", [False, True])
def test_whole_pickled_module_without_its_classes(tmp_path, legacy):
    path, expected = _save_whole_module(tmp_path, legacy)
    got = read_checkpoint(path, module_classes=["fakepkg.nets.Wrapper", "fakepkg.nets.TinyNet"])
    _same(got, expected)


def test_whole_pickled_module_class_not_on_allow_list_is_refused(tmp_path):
    path, _ = _save_whole_module(tmp_path, legacy=False)
    with pytest.raises(CheckpointError, match="fakepkg.nets.Wrapper"):
        read_checkpoint(path, module_classes=["fakepkg.nets.TinyNet"])


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("legacy", [False, True])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, legacy):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": _Evil(str(marker))}, path,
               _use_new_zipfile_serialization=not legacy, pickle_module=pickle)
    with pytest.raises(CheckpointError, match=r"refusing to load global '(builtins|__builtin__)\.exec'"):
        read_checkpoint(path)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------- issue 18
def test_1_an_empty_file_is_a_clear_error_naming_it(tmp_path):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty.pth: the file is empty \(0 bytes\); expected a PyTorch"):
        read_checkpoint(empty)


def test_1_a_truncated_file_is_a_clear_error_even_when_torch_says_nothing(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x80")  # a pickle protocol byte and nothing else
    with pytest.raises(CheckpointError, match="bad.pth: not a readable PyTorch checkpoint"):
        read_checkpoint(bad)


def test_2_a_whole_module_pickle_holding_a_str_where_a_tensor_belongs(tmp_path):
    """Only allow-listed classes (torch.nn.Conv2d), but a str in its _parameters: refused naming the entry."""
    conv = torch.nn.Conv2d(3, 4, 3)
    conv._parameters["weight"] = "not a tensor"  # bypasses Module.__setattr__'s type check, as a crafted file can
    path = tmp_path / "module.pt"
    torch.save(conv, path)
    with pytest.raises(CheckpointError, match=r"module.pt: entry 'weight' holds a str \('not a tensor'\), "
                                              "expected a tensor"):
        read_checkpoint(path)
