"""Activations, dropout and element-wise arithmetic."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .core import Param, Primitive, Shape, ShapeError, _check_positive, _elementwise, _same, fmt_shape


def _binary_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    """Equal shapes, or broadcasting over dims of size 1 (a per-channel (B, C, 1, 1) added to (B, C, H, W))."""
    x, y = s
    if len(x) != len(y) or any(not _same(p, q) and 1 not in (p, q) for p, q in zip(x, y)):
        raise ShapeError(f"operands have shapes {fmt_shape(x)} and {fmt_shape(y)}")
    return [tuple(q if p == 1 else p if q == 1 or isinstance(p, int) else q for p, q in zip(x, y))]


def _identity_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x, n = s[0], a["size"]
    if len(x) != 3 or not _same(x[1], n) or not _same(x[2], n):
        raise ShapeError(f"expects (B, {n}, {n}), got {fmt_shape(x)}")
    return [x]


_P = Param

PRIMS: list[Primitive] = [
    Primitive("gelu", (_P("approximate", "str", "none"),), "GELU activation.", flops=_elementwise(8)),
    Primitive("quick_gelu", (), "x * sigmoid(1.702 x), CLIP's GELU approximation.", flops=_elementwise(4),
        saved=lambda a, i, o: 4 * math.prod(o[0]),  # sigmoid(1.702 x), kept beside x
    ),
    Primitive("relu", (), "ReLU activation.", flops=_elementwise(1), saves="output"),
    Primitive("relu6", (), "ReLU6 activation: min(max(0, x), 6) (MobileNet).", flops=_elementwise(2)),
    Primitive("silu", (), "SiLU (swish) activation.", flops=_elementwise(4)),
    Primitive("elu", (_P("alpha", "float", 1.0),), "ELU activation: x, or alpha (exp(x) - 1) below 0 (GAT).",
              flops=_elementwise(4)),
    Primitive("tanh", (), "tanh activation.", flops=_elementwise(4), saves="output"),
    Primitive("sigmoid", (), "Logistic sigmoid.", flops=_elementwise(4), saves="output"),
    Primitive("softmax", (_P("dim", "int", -1),), "Softmax.", flops=_elementwise(5), saves="output"),
    Primitive("dropout", (_P("p", "float", 0.0),), "Dropout (identity at inference).", saves="none",
        saved=lambda a, i, o: 4 * math.prod(o[0]) if a.get("p") else 0,  # the scaled fp32 mask
        aliases=lambda a: not a.get("p"),  # with p = 0 it returns its input
    ),
    Primitive("add_identity", (_P("size", "int"),), "Adds the size x size identity matrix to (B, size, size).",
              shape=_identity_shape, flops=_elementwise(1), check=_check_positive("size"), saves="none"),
    # tensor arithmetic written with operators: a + b, a * b, a - b
    Primitive("add", (), "Elementwise sum (residual connections).", n_inputs=2, shape=_binary_shape,
              flops=_elementwise(1), saves="none"),
    Primitive("sub", (), "Elementwise difference.", n_inputs=2, shape=_binary_shape, flops=_elementwise(1), saves="none"),
    Primitive("mul", (), "Elementwise product (gating).", n_inputs=2, shape=_binary_shape, flops=_elementwise(1),
              saves="input"),  # both operands, not the product
]
