"""The primitive layers: their signatures, weights, output shapes, FLOPs and what autograd keeps.

Each primitive is one declaration (a Primitive in the module of its kind: linear, convolution, normalisation,
attention, elementwise, tensor, sequence, graph, detection, generative, multimodal); this package collects them
into PRIMITIVES, the one place that says what a primitive is. Backends map each primitive name to code
(backends/pytorch/lowering.py, backends/onnx/lowering.py); tests check that every table names the same
primitives.

Shapes are tuples of dims; a dim is an int or a symbol name ("B", "T") or a small expression over
symbols ("T+1"). FLOPs follow torch.utils.flop_counter: 2 per multiply-add, counted for matmuls,
convolutions and attention (`mm`); everything else (norms, activations, softmax, adds) is estimated
in a separate total (`other`), documented per primitive.
"""

from __future__ import annotations

from . import (
           attention,
           convolution,
           detection,
           elementwise,
           generative,
           graph,
           linear,
           multimodal,
           normalisation,
           sequence,
           tensor,
)
from .core import Dim, Param, Primitive, Shape, ShapeError, dim_add, dim_mul, dim_sum, fmt_shape, numel, subst_dim
from .sequence import moe_capacity, moe_rows

__all__ = ["OPERATOR_PRIMITIVES", "PRIMITIVES", "Dim", "Param", "Primitive", "Shape", "ShapeError", "dim_add", "dim_mul",
           "dim_sum", "fmt_shape", "moe_capacity", "moe_rows", "numel", "subst_dim"]

KINDS = {m.__name__.rsplit(".", 1)[1]: m.PRIMS for m in (linear, convolution, normalisation, attention, elementwise,
                                                        tensor, sequence, graph, detection, generative, multimodal)}
PRIMITIVES: dict[str, Primitive] = {p.name: p for prims in KINDS.values() for p in prims}
OPERATOR_PRIMITIVES = {"+": "add", "-": "sub", "*": "mul"}
