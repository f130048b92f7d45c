"""Load published checkpoint files unchanged, safely, into our own networks.

Supported containers (whatever the file holds, the result is an ordered ``{name: float32 tensor}`` dict):

* a plain state dict (``OrderedDict`` of tensors), legacy (pre-1.6) or zip serialisation, any storage location;
* a dict with the state dict under a key (``state_dict``, ``model``, ``net``, ...), possibly with other entries;
* ``module.`` prefixes left by ``nn.DataParallel``;
* half tensors (cast to float32);
* a whole pickled ``nn.Module`` whose classes are not installed (``torch.save(model)``).

Nothing in a checkpoint is ever executed. Tensor-only files go through ``torch.load(weights_only=True)``. Whole
pickled modules go through :class:`RestrictedUnpickler`, which resolves an explicit allow-list of class paths to inert
stub classes (no constructor runs; ``__setstate__`` only stores the received dict), resolves the few functions torch
needs to rebuild tensors, and refuses every other global with :class:`CheckpointError`.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError

#: keys under which trainers commonly nest the state dict, tried in this order
CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "module", "weights", "params")

#: ``torch.nn`` module classes a whole pickled network of the five models is made of (turned into stubs)
TORCH_MODULE_CLASSES = tuple(
    f"torch.nn.modules.{path}"
    for path in (
        "conv.Conv2d", "conv.ConvTranspose2d", "batchnorm.BatchNorm2d", "batchnorm.BatchNorm1d",
        "activation.ReLU", "activation.Softmax", "pooling.MaxPool2d", "pooling.AvgPool2d",
        "pooling.AdaptiveAvgPool2d", "container.Sequential", "container.ModuleList", "linear.Linear",
        "dropout.Dropout", "upsampling.Upsample", "upsampling.UpsamplingNearest2d",
    )
) + ("torch.nn.parallel.data_parallel.DataParallel",)


def _legacy_parameter(data: Any, requires_grad: bool = True) -> torch.nn.Parameter:
    """torch 0.4.x pickled a Parameter as ``Parameter(tensor, requires_grad)``; rebuild it only from a tensor."""
    if not isinstance(data, torch.Tensor):
        raise CheckpointError(f"refusing torch.nn.parameter.Parameter built from a {type(data).__name__}")
    return torch.nn.Parameter(data, bool(requires_grad))


#: functions and classes that tensor reconstruction needs; resolved to the real objects
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch.nn.parameter", "Parameter"): _legacy_parameter,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
    ("torch", "device"): torch.device,
    ("torch", "Size"): torch.Size,
}
#: torch 0.4-1.x pickled a ``_backend`` attribute on every module; it is irrelevant for weights
_NOOP_GLOBALS = {("torch.nn.backends.thnn", "_get_thnn_function_backend")}


class ModuleStub:
    """Inert stand-in for a pickled ``nn.Module`` class: holds the unpickled ``__dict__`` and nothing else."""

    _zooinfer_class_path = "?"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = state[0] or {}
        if isinstance(state, dict):
            self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"<stub of {self._zooinfer_class_path}>"


def _noop(*_args: Any, **_kwargs: Any) -> None:
    return None


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that maps allow-listed class paths to stubs and refuses every other global."""

    allowed: frozenset[str] = frozenset()
    _stubs: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[key]
        if key in _NOOP_GLOBALS:
            return _noop
        if module == "torch" and name.endswith("Storage"):
            return getattr(torch, name)
        path = f"{module}.{name}"
        if path in self.allowed:
            stub = self._stubs.get(path)
            if stub is None:
                stub = type(name, (ModuleStub,), {"_zooinfer_class_path": path})
                self._stubs[path] = stub
            return stub
        raise CheckpointError(
            f"refusing to load global '{path}' from the checkpoint: it is not on the allow-list of classes this "
            "model's checkpoint may reference, and loading it could execute code. If the file really is the "
            "published checkpoint, report the class path so it can be reviewed and added."
        )


def _restricted_pickle_module(allowed: Iterable[str]) -> Any:
    """A ``pickle_module`` for ``torch.load`` whose Unpickler only accepts ``allowed`` class paths."""
    unpickler = type("AllowListUnpickler", (RestrictedUnpickler,), {"allowed": frozenset(allowed), "_stubs": {}})

    class _Module:
        Unpickler = unpickler
        __name__ = "zooinfer_restricted_pickle"

        @staticmethod
        def load(f: Any, **kw: Any) -> Any:
            return unpickler(f, **kw).load()

    return _Module


def file_md5(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex md5 of a file, read in 4 MiB chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_md5(path: str | os.PathLike, expected: str | None) -> str:
    """Return the file's md5; warn (not fail) when it differs from the published ``expected`` one."""
    got = file_md5(path)
    if expected and got != expected.lower():
        warnings.warn(
            f"{path}: md5 {got} differs from the published {expected}. The file may be a different release, "
            "a re-save or a partial download; results may not match the published figures.",
            stacklevel=2,
        )
    return got


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def flatten_module(obj: Any, prefix: str = "") -> "OrderedDict[str, torch.Tensor]":
    """State dict of an unpickled module tree (stubs), in registration order, like ``nn.Module.state_dict()``."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    d = getattr(obj, "__dict__", {})
    for group in ("_parameters", "_buffers"):
        for name, t in (d.get(group) or {}).items():
            if t is not None:
                out[prefix + name] = t.detach() if isinstance(t, torch.Tensor) else t
    for name, child in (d.get("_modules") or {}).items():
        if child is not None:
            out.update(flatten_module(child, prefix + name + "."))
    return out


def _looks_like_module(obj: Any) -> bool:
    return isinstance(obj, (ModuleStub, torch.nn.Module)) or "_modules" in getattr(obj, "__dict__", {})


def _extract_state_dict(obj: Any, path: Path) -> "OrderedDict[str, torch.Tensor]":
    if _looks_like_module(obj):
        sd = flatten_module(obj)
        modules = getattr(obj, "__dict__", {}).get("_modules") or {}
        if not sd and set(modules) == {"module"}:
            sd = flatten_module(modules["module"])
        return sd
    if _is_tensor_dict(obj):
        return OrderedDict(obj)
    if isinstance(obj, Mapping):
        for key in CONTAINER_KEYS:
            if key in obj and (_is_tensor_dict(obj[key]) or _looks_like_module(obj[key])):
                return _extract_state_dict(obj[key], path)
        # a dict of tensors mixed with a few non-tensor entries (e.g. "epoch") at the top level
        tensors = OrderedDict((k, v) for k, v in obj.items() if isinstance(v, torch.Tensor))
        if tensors:
            return tensors
        raise CheckpointError(
            f"{path}: the file holds a dict with keys {sorted(map(str, obj))[:10]} but no state dict under any of "
            f"{list(CONTAINER_KEYS)}"
        )
    raise CheckpointError(f"{path}: the file holds a {type(obj).__name__}, not a state dict or a pickled module")


def _strip_common_prefix(sd: "OrderedDict[str, torch.Tensor]", prefixes: Iterable[str]) -> "OrderedDict[str, torch.Tensor]":
    for p in prefixes:
        if sd and all(k.startswith(p) for k in sd):
            sd = OrderedDict((k[len(p):], v) for k, v in sd.items())
    return sd


def read_checkpoint(
    path: str | os.PathLike,
    *,
    module_classes: Iterable[str] = (),
    strip_prefixes: Iterable[str] = ("module.",),
    inspect: Callable[[Any], None] | None = None,
) -> "OrderedDict[str, torch.Tensor]":
    """Read a checkpoint file as downloaded and return its tensors as an ordered float32 state dict.

    ``module_classes`` is the allow-list of class paths (``"pkg.module.Class"``) a whole pickled module may reference;
    the generic ``torch.nn`` classes of :data:`TORCH_MODULE_CLASSES` are always allowed. Integer tensors
    (``num_batches_tracked``) keep their dtype; floating tensors are cast to float32. ``inspect``, if given, is called
    with the unpickled object (stubs for a whole pickled module) before its tensors are extracted, e.g. to check
    non-tensor attributes such as conv strides.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}" + ("" if path.parent.is_dir() else
                              f" (the folder {path.parent} does not exist either)"))
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes); expected a PyTorch checkpoint (a state dict or "
                              "a pickled module, as downloaded). Was the download interrupted?")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as weights_only_error:  # noqa: BLE001 - any refusal means "not tensors-only"
        allowed = set(TORCH_MODULE_CLASSES) | set(module_classes)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch warns that it cannot compare the pickled class sources
                obj = torch.load(path, map_location="cpu", weights_only=False,
                                 pickle_module=_restricted_pickle_module(allowed))
        except CheckpointError as e:
            raise CheckpointError(f"{path}: {e}") from None
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"{path}: not a readable PyTorch checkpoint ({type(weights_only_error).__name__}: "
                f"{_first_line(weights_only_error)}; restricted load: {type(e).__name__}: {_first_line(e)})"
            ) from None
    if inspect is not None:
        inspect(obj)
    sd = _strip_common_prefix(_extract_state_dict(obj, path), strip_prefixes)
    wrong = [(k, v) for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if wrong:
        k, v = wrong[0]
        raise CheckpointError(f"{path}: entry {k!r} holds a {type(v).__name__} ({_short(v)}), expected a tensor"
                              + (f" ({len(wrong)} such entries)" if len(wrong) > 1 else "")
                              + "; the file is damaged or not this model's checkpoint")
    return OrderedDict((k, v.float() if v.is_floating_point() else v) for k, v in sd.items())


def _first_line(e: BaseException, width: int = 200) -> str:
    """The first line of an exception's message (an empty message gives ''), cut to ``width`` characters."""
    lines = str(e).splitlines()
    return lines[0][:width] if lines else ""


def _short(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width] + "..."


def _preview(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else f" ({len(names)})")


def load_weights(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *, what: str = "checkpoint") -> None:
    """Strictly load ``state_dict`` into ``model``; raise :class:`CheckpointError` naming differing keys.

    Missing ``num_batches_tracked`` buffers are tolerated (checkpoints older than torch 0.4.1 have none; they are
    unused in eval mode).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        parts = [f"{what} does not fit {type(model).__name__} ({len(state_dict)} tensors in the file, "
                 f"{len(expected)} in the network)"]
        if missing:
            parts.append(f"missing keys: {_preview(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_preview(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches (file vs network): {_preview(mismatched, 3)}")
        parts.append("Is this the checkpoint of another model, or another variant of this one?")
        raise CheckpointError("\n  ".join(parts))
    with torch.no_grad():
        for k, v in expected.items():
            if k in state_dict:
                v.copy_(state_dict[k].to(v.dtype))
