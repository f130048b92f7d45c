"""Ascend OM models through ais_bench's Python ``InferSession`` (which wraps aclruntime).

Imported only when asked for: aclruntime/ais_bench exist only on Ascend machines (not on PyPI).
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import BackendError
from .base import check_batch

INSTALL_HINT = ("backend 'acl' needs the Ascend CANN toolkit and ais_bench's aclruntime + ais_bench wheels "
                "(https://gitee.com/ascend/tools/tree/master/ais-bench_workload/tool/ais_bench), built for your CANN "
                "version and installed in this environment, on a machine with an Ascend NPU.")


class AclSession:
    """``run(batch)`` on an ``.om`` file on NPU ``device_id``. OM models have a static batch size."""

    def __init__(self, om_path: str | os.PathLike, device_id: int = 0):
        try:
            from ais_bench.infer.interface import InferSession  # noqa: PLC0415 - optional, Ascend only
        except ImportError:
            raise BackendError(INSTALL_HINT) from None
        if not os.path.isfile(om_path):
            raise BackendError(f"OM file not found: {om_path} (convert the ONNX file with the printed atc command)")
        self.sess = InferSession(device_id, str(om_path))
        self.name = "acl"
        self.device = f"npu:{device_id}"
        shape = self.sess.get_inputs()[0].shape
        self.input_shape = tuple(int(d) if int(d) > 0 else None for d in shape)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        check_batch(self, batch)
        return list(self.sess.infer([np.ascontiguousarray(batch, dtype=np.float32)]))
