"""OpenVINO's variants of one model, for ``zooinfer.compare`` and the precision search.

============================  ==========================================================================================
``openvino``                  OpenVINO on the CPU reading the exported ONNX file, f32 inference precision (set
                              explicitly: its CPU plugin would otherwise compute in bf16 on a bf16-capable CPU)
``openvino-bf16``             the same file with bf16 inference precision (``INFERENCE_PRECISION_HINT=bf16``): real
                              bf16 kernels where the CPU has AVX-512 BF16 or AMX; a CPU without them gives a
                              :class:`~zooinfer.variants.Skipped` variant saying so (OpenVINO would quietly run f32)
``openvino-int8``             NNCF post-training quantisation (``nncf.quantize``, MinMax statistics + fast bias
                              correction, target device CPU) of the ONNX graph ONNX Runtime's quantizer starts from
                              (:func:`zooinfer.int8.preprocessed_onnx`), calibrated on the same images as the
                              ``onnxruntime-int8`` variant (:func:`zooinfer.int8.calibration_samples`), run by OpenVINO
                              with f32 for the layers NNCF leaves unquantised
============================  ==========================================================================================

**Why NNCF on the ONNX graph, not on OpenVINO's model.** OpenVINO's ONNX reader renames nodes (a Conv with a bias
becomes ``<name>/WithoutBiases`` + Add, grouped convolutions another op type), so an ignored scope written in
OpenVINO's names fits no other tool. Quantised as ONNX, the ignored scope (``ignored_scope``, or ``nodes_to_exclude``
in ``int8_options``) names the same nodes as ONNX Runtime's ``nodes_to_exclude``: one set chosen by the precision
search serves both. OpenVINO reads the Quantize/DequantizeLinear pairs as FakeQuantize and runs the same int8
kernels as for a model NNCF quantised in its own form. The quantised file is cached next to the source with a
``.json`` sidecar (settings, calibration images), like the ONNX Runtime INT8 file.

``openvino`` and ``nncf`` are imported only when such a variant opens; missing, the error gives the install line.
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any, Collection, Sequence

from . import cpu
from .backends.openvino import INSTALL_HINT, OpenVinoSession, import_openvino
from .errors import ZooinferError

#: variant name -> (precision it computes in, the session's inference precision hint for the unquantised layers)
VARIANTS = {"openvino": ("fp32", "fp32"), "openvino-bf16": ("bf16", "bf16"), "openvino-int8": ("int8", "fp32")}

#: how each variant computes, for the report
HOW = {"openvino": "OpenVINO CPU plugin, f32 inference precision (explicit)",
       "openvino-bf16": "OpenVINO CPU plugin, bf16 inference precision (native AVX-512 BF16 / AMX kernels)",
       "openvino-int8": "NNCF post-training quantisation (QDQ ONNX, per-channel weights), OpenVINO CPU plugin; "
                        "unquantised layers in f32"}


def int8_speed_note() -> str | None:
    """A note for beside OpenVINO INT8 timings on an x86 CPU without VNNI / AMX (None where it has them, or unknown)."""
    from .int8 import is_x86

    if not (is_x86() and cpu.known()) or cpu.has_int8_dot():
        return None
    return ("this CPU has no int8 dot-product instructions (VNNI / AMX): OpenVINO's int8 convolutions multiply in "
            "16-bit steps (AVX2 / AVX-512 without VNNI), so openvino-int8 gains much less over f32 here; it still runs "
            "and its accuracy holds")


def bf16_unavailable() -> str | None:
    """Why this CPU cannot run bf16 natively (no AVX-512 BF16 / AMX), or None where it can."""
    if cpu.has_bf16():
        return None
    return ("this CPU has no bf16 instructions (avx512_bf16 / amx_bf16), so OpenVINO would run the bf16 variant in "
            f"f32 (no speed-up, no bf16 rounding to measure); {cpu.isa_note()}")


def import_nncf() -> Any:
    """The ``nncf`` module, or a ZooinferError with the install line."""
    try:
        import nncf
    except ImportError as e:
        raise ZooinferError(f"the openvino-int8 variant needs the Python package 'nncf' ({e}): "
                            f"{INSTALL_HINT}") from None
    return nncf


class _Views:
    """NNCF's calibration data: every view of every calibration image as ``{input name: (1, C, H, W) array}``, read
    afresh on each pass (NNCF reads it once per algorithm; the images are not all held in memory)."""

    def __init__(self, reader: Any):
        self.reader = reader

    def __iter__(self):
        self.reader.rewind()
        return iter(self.reader.get_next, None)


def nncf_int8_onnx(recipe: Any, onnx_path: str | os.PathLike, dataset: Any, *, calibration: int | None = 8,
                   keys: Sequence[str] | None = None, evaluated: Collection[str] | None = None,
                   ignored_scope: Sequence[str] = ()) -> tuple[Path, dict]:
    """NNCF post-training INT8 quantisation of ``onnx_path`` (after :func:`zooinfer.int8.preprocessed_onnx`: opset 13,
    BatchNorm folded), calibrated on ``calibration`` images of ``dataset`` (or ``keys``; outside ``evaluated`` where
    the dataset has more: the ``onnxruntime-int8`` variant's choice). ``ignored_scope``: node names of the
    pre-processed graph kept in f32 (an unknown name is an error naming it). Cached next to ``onnx_path``
    (``<stem>.nncf-int8-<key>.onnx`` + ``.json``). Returns (path, info: settings, calibration images, cache hit)."""
    from . import int8
    from .variants import _cache_path, _read_sidecar, _save, file_md5

    nncf = import_nncf()
    import onnx

    src = Path(onnx_path)
    samples, cal = int8.calibration_samples(dataset, calibration, keys, evaluated)
    pre, pre_info = int8.preprocessed_onnx(src)
    settings = {"nncf": nncf.__version__, "preprocessed": file_md5(pre), "target_device": "CPU",
                "preset": "performance (NNCF's default: symmetric weights per channel and activations)", "fast_bias_correction": True,
                "calibration_keys": list(cal.keys), "ignored_scope": sorted(ignored_scope)}
    out = _cache_path(src, "nncf-int8", settings)
    info = {"source": str(src), "preprocessed_onnx": str(pre), **settings, "calibration_count": len(cal.keys),
            "calibration_requested": cal.requested, "calibration_note": cal.note, "calibration_from": cal.source,
            "cpu": cpu.isa_note()}
    if pre_info.get("converted_opset"):
        info["converted_opset"] = pre_info["converted_opset"]
    if out.is_file():
        return out, {**_read_sidecar(out), **info, "cached": True}
    _check_scope(pre, ignored_scope)
    reader = int8.CalibrationReader(recipe, samples)
    views = sum(1 for _ in _Views(reader))  # one pass before NNCF: counts the views, finds unreadable images early
    if reader.failed:
        info["calibration_failed"] = list(reader.failed)
        if len(reader.failed) == len(samples):
            raise ZooinferError(f"openvino-int8 calibration: every calibration image failed to preprocess: "
                                f"{reader.failed[0]}")
        info["calibration_keys_used"] = [k for k in cal.keys if k not in dict(reader.failed)]
    scope = nncf.IgnoredScope(names=list(ignored_scope)) if ignored_scope else None
    level = logging.getLogger("nncf").level
    nncf.set_log_level(logging.ERROR)  # its per-layer INFO lines would flood a notebook
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantised = nncf.quantize(onnx.load(str(pre)), nncf.Dataset(_Views(reader)), subset_size=views,
                                      target_device=nncf.TargetDevice.CPU, ignored_scope=scope)
    except nncf.ValidationError as e:  # e.g. an ignored-scope name that is not in the graph
        raise ZooinferError(f"openvino-int8: NNCF refused the ignored scope (names of {pre.name}'s nodes): "
                            f"{str(e).strip()[:500]}") from None
    finally:
        nncf.set_log_level(level or logging.INFO)
    _save(quantised, out, info)
    return out, {**info, "cached": False}


def _check_scope(pre: Path, ignored_scope: Sequence[str]) -> None:
    """Raise a ZooinferError naming the ``ignored_scope`` names that are no node of the pre-processed graph ``pre``
    (before NNCF's minutes of statistics)."""
    if not ignored_scope:
        return
    import onnx

    names = {n.name for n in onnx.load(str(pre), load_external_data=False).graph.node}
    missing = [n for n in ignored_scope if n not in names]
    if missing:
        raise ZooinferError(f"openvino-int8: ignored_scope names no node of {pre} (the pre-processed graph whose "
                            f"names ONNX Runtime's nodes_to_exclude uses too): {', '.join(missing[:5])}"
                            + (" ..." if len(missing) > 5 else ""))


def open_openvino_variant(name: str, recipe: Any, onnx_path: str | os.PathLike, *, dataset: Any = None,
                          calibration: int | None = 8, calibration_keys: Sequence[str] | None = None,
                          evaluated: Collection[str] | None = None, ignored_scope: Sequence[str] = (),
                          threads: int | None = None) -> Any:
    """Open OpenVINO variant ``name`` (one of :data:`VARIANTS`) of ``recipe`` over the fp32 ``onnx_path``: a
    :class:`~zooinfer.variants.Variant`, or :class:`~zooinfer.variants.Skipped` when OpenVINO is not installed or
    (bf16) the CPU lacks bf16. ``openvino-int8`` needs ``dataset`` (calibration, as ``onnxruntime-int8``)."""
    from .errors import BackendError
    from .variants import Skipped, Variant

    precision, hint = VARIANTS[name]
    try:
        import_openvino()
    except BackendError as e:
        return Skipped(name, str(e))
    if name == "openvino-bf16" and (why := bf16_unavailable()):
        return Skipped(name, why)
    path, info = Path(onnx_path), {"onnx": str(onnx_path)}
    if name == "openvino-int8":
        if dataset is None:
            raise ZooinferError("variant 'openvino-int8' needs dataset= (the calibration images)")
        path, info = nncf_int8_onnx(recipe, onnx_path, dataset, calibration=calibration, keys=calibration_keys,
                                    evaluated=evaluated, ignored_scope=ignored_scope)
    sess = OpenVinoSession(path, precision=hint, threads=threads, name=name)
    info = {**info, "how": HOW[name], "openvino": import_openvino().__version__,
            "inference_precision": sess.inference_precision}
    if precision != "fp32":
        info["cpu"] = cpu.isa_note()
    if precision == "int8":
        from .backends.openvino import kernel_counts, kernel_summary

        info["kernels"] = kernel_counts(sess)
        info["kernel_summary"] = kernel_summary(info["kernels"])
        info.update(activations="int8 (NNCF, u8/i8 as OpenVINO picks)", weights="int8 per channel",
                    speed_note=int8_speed_note())
    return Variant(name, "openvino", precision, sess, path, info)
