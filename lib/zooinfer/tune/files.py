"""The layers a precision search keeps in higher precision, written the way each toolchain takes them, into
``<run folder>/precision/``:

==========================  ============================================================================================
``nodes_to_exclude.json``   a JSON list of node names: ONNX Runtime's ``quantize_static(..., nodes_to_exclude=...)``
``ignored_scope.json``      ``{"names": [...]}``: NNCF's ``nncf.IgnoredScope(**json.load(f))`` for
                            ``nncf.quantize(..., ignored_scope=...)``
``keep_dtype.cfg``          one node name per line: Ascend ATC's ``--keep_dtype`` (these operators keep the original
                            model's precision; the others follow ``--precision_mode``)
``modify_mixlist.json``     ``{"black-list": {"to-add": [op types]}}``: Ascend ATC's ``--modify_mixlist`` with
                            ``--precision_mode=allow_mix_precision`` (these Ascend IR op types are not reduced)
==========================  ============================================================================================

The ATC forms follow CANN's ATC parameter reference (``--keep_dtype``: "lists operator names or operator types. Each
operator must be in a separate line"; ``--modify_mixlist``: a JSON file with ``black-list`` / ``white-list`` /
``gray-list`` objects, each with ``to-add`` / ``to-remove`` lists of Ascend IR op types). The mixlist moves whole op
types (every Conv2D, not one), so it keeps far more in fp32 than the search chose; ``keep_dtype`` is the per-node form.
Both are written; the report's atc line uses both.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import ZooinferError

#: the folder inside a run folder
FOLDER = "precision"
#: file name per toolchain
FILES = {"onnxruntime": "nodes_to_exclude.json", "nncf": "ignored_scope.json", "atc_keep_dtype": "keep_dtype.cfg",
         "atc_mixlist": "modify_mixlist.json"}
#: ONNX op type -> the Ascend IR op type ATC's ONNX parser makes of it (what a mixed-precision list names)
ASCEND_OP_TYPES = {"Conv": "Conv2D", "ConvTranspose": "Conv2DTranspose", "Gemm": "MatMulV2",
                   "MatMul": "BatchMatMulV2"}


def _check_names(nodes: Sequence[str]) -> list[str]:
    names = list(dict.fromkeys(nodes))
    bad = [n for n in names if not isinstance(n, str) or not n or "\n" in n or "\r" in n]
    if bad:
        raise ZooinferError(f"node names for the precision files must be non-empty text on one line, got {bad[0]!r}")
    return names


def mixlist(op_types: Sequence[str]) -> dict:
    """The ``--modify_mixlist`` document moving the Ascend IR types of the ONNX ``op_types`` to the block list."""
    ascend = sorted({ASCEND_OP_TYPES.get(t, t) for t in op_types})
    return {"black-list": {"to-add": ascend}}


def write_precision_files(folder: str | os.PathLike, nodes: Sequence[str], op_types: Mapping[str, str]
                          ) -> dict[str, Path]:
    """Write the four files for the chosen ``nodes`` (kept in higher precision) into ``folder`` (made if missing);
    ``op_types``: node name -> ONNX op type (for the mixlist). Returns {toolchain: path}."""
    from ..report import artefact

    names = _check_names(nodes)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    docs: dict[str, Any] = {
        "onnxruntime": json.dumps(names, indent=1) + "\n",
        "nncf": json.dumps({"names": names}, indent=1) + "\n",
        "atc_keep_dtype": "".join(f"{n}\n" for n in names),
        "atc_mixlist": json.dumps(mixlist([op_types[n] for n in names if n in op_types]), indent=1) + "\n",
    }
    paths = {}
    for key, text in docs.items():
        paths[key] = out / FILES[key]
        with artefact(paths[key]) as f:  # a full disk: an OutputError naming the file
            f.write(text)
    return paths


def atc_command(recipe: Any, onnx_path: str | os.PathLike | None, bs: int, folder: str | os.PathLike,
                soc_version: str | None = None) -> str:
    """The atc line converting the ONNX file with the chosen nodes kept in their original precision
    (``--keep_dtype``) and their op types on the mixed-precision block list (``--modify_mixlist``)."""
    from ..export import atc_command as base

    soc = soc_version or recipe.atc.get("soc_version", "Ascend310P3")
    line = base(recipe, onnx_path or f"{recipe.name}.onnx", bs, soc_version=soc,
                output=f"{recipe.name}_bs{bs}_mixed", precision_mode="allow_mix_precision")
    folder = Path(folder)
    return (f"{line} --keep_dtype={folder / FILES['atc_keep_dtype']} "
            f"--modify_mixlist={folder / FILES['atc_mixlist']}")
