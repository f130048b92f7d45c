"""Multiply-add count of an ONNX graph (Conv, ConvTranspose, Gemm, MatMul), from ONNX shape inference.

FLOPs = 2 x multiply-adds. Element-wise ops, pooling and normalisation are ignored (a few percent for these CNNs).
"""
from __future__ import annotations

import os

import numpy as np


def _shape_map(model) -> dict[str, list[int]]:
    shapes = {}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        dims = [d.dim_value if d.dim_value > 0 else None for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def count_flops(onnx_path: str | os.PathLike, input_shape: tuple[int, ...]) -> float:
    """FLOPs of one forward pass with the input fixed to ``input_shape`` (N, C, H, W)."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(onnx_path))
    inp = model.graph.input[0]
    for d, v in zip(inp.type.tensor_type.shape.dim, input_shape):
        d.ClearField("dim_param")
        d.dim_value = int(v)
    for out in model.graph.output:  # let inference recompute the dynamic output shapes
        for d in out.type.tensor_type.shape.dim:
            if d.dim_param:
                d.ClearField("dim_param")
    model = shape_inference.infer_shapes(model)
    shapes = _shape_map(model)
    total = 0.0
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            w = shapes.get(node.input[1])
            out = shapes.get(node.output[0])
            if not w or not out or None in out:
                continue
            if node.op_type == "Conv":  # weight (Cout, Cin/g, kh, kw); out (N, Cout, H, W)
                total += float(np.prod(out)) * float(np.prod(w[1:]))
            else:  # weight (Cin, Cout/g, kh, kw); each input pixel scatters Cout/g*kh*kw MACs
                x = shapes.get(node.input[0])
                if x and None not in x:
                    total += float(np.prod(x)) * float(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a and out and None not in a and None not in out:
                total += float(np.prod(out)) * a[-1]
    return 2.0 * total
