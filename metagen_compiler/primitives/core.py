"""What a primitive is (Primitive, its parameters) and the shape arithmetic every kind of primitive uses:
symbolic dims, their substitution and printing, the common shape, FLOPs and argument checks."""


from __future__ import annotations

import ast as pyast
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Dim", "Param", "Primitive", "Shape", "ShapeError", "dim_add", "dim_mul", "dim_sum", "fmt_shape", "numel", "subst_dim"]

Dim = int | str
Shape = tuple[Dim, ...]


class ShapeError(Exception):
    pass


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # int | float | bool | str | int_or_tuple
    default: Any = ...  # ... = required


@dataclass(frozen=True)
class Primitive:
    name: str
    params: tuple[Param, ...]
    doc: str
    n_inputs: int = 1
    weights: Callable[[Mapping[str, Any]], dict[str, tuple[int, ...]]] = lambda a: {}
    shape: Callable[[Mapping[str, Any], list[Shape]], list[Shape]] = lambda a, s: [s[0]]
    flops: Callable[[Mapping[str, Any], list[tuple[int, ...]], list[tuple[int, ...]]], tuple[int, int]] = (
        lambda a, i, o: (0, 0))
    n_outputs: Callable[[Mapping[str, Any]], int] = lambda a: 1
    check: Callable[[Mapping[str, Any]], str | None] = lambda a: None
    buffers: Callable[[Mapping[str, Any]], dict[str, tuple[int, ...]]] = lambda a: {}
    saves: str = "input"  # what autograd keeps for backward: input | first (input) | output | both | none
    # bytes autograd keeps beyond the graph's tensors (PyTorch's CPU kernels, fp32): norm statistics, pool
    # indices, masks, workspaces; from (args, input shapes, output shapes)
    saved: Callable[[Mapping[str, Any], list[tuple[int, ...]], list[tuple[int, ...]]], int] = lambda a, i, o: 0
    aliases: Callable[[Mapping[str, Any]], bool] = lambda a: False  # the output is a view of the first input
    # how many independent matrix products the matmul FLOPs split into, at first-input shape x
    matmul_calls: Callable[[Mapping[str, Any], tuple[int, ...]], int] = lambda a, x: 1
    # a node that runs step by step: (the profile's per-step cost, steps, matmul FLOPs of one step's recurrent
    # product, state elements each step pays `scan_element` for); None for a node that runs at once
    recurrence: Callable[[Mapping[str, Any], tuple[int, ...]], tuple[str, int, int, int] | None] = lambda a, x: None
    # mm: counted in flops_forward; norm; attention; module: a submodule even without weights (it keeps
    # state); aux_loss: the module adds a term to the model's loss (the VAE's KL divergence)
    tags: frozenset[str] = field(default_factory=frozenset)

    @property
    def has_weights(self) -> bool:
        return bool(self.weights({p.name: (p.default if p.default is not ... else 1) for p in self.params}))


def subst_dim(d: Dim, env: Mapping[str, int]) -> int:
    if isinstance(d, int):
        return d
    return _dim_eval(_dim_expr(d), env, d)


@functools.cache
def _dim_expr(d: str) -> Any:
    """The parsed expression of a symbolic dim (`B`, `T+1`, `B*T`): parsed once per distinct text."""
    return pyast.parse(d, mode="eval").body


def _dim_eval(n: Any, env: Mapping[str, int], d: str) -> int:
    if isinstance(n, pyast.Constant) and isinstance(n.value, int):
        return n.value
    if isinstance(n, pyast.Name):
        return env[n.id]
    if isinstance(n, pyast.BinOp):
        a, b = _dim_eval(n.left, env, d), _dim_eval(n.right, env, d)
        if isinstance(n.op, pyast.Add):
            return a + b
        if isinstance(n.op, pyast.Sub):
            return a - b
        if isinstance(n.op, pyast.Mult):
            return a * b
        if isinstance(n.op, pyast.FloorDiv):
            return a // b
    raise ValueError(d)


def dim_add(d: Dim, k: int) -> Dim:
    if isinstance(d, int):
        return d + k
    if k == 0:
        return d
    return f"{d}+{k}" if k > 0 else f"{d}-{-k}"


def dim_sum(a: Dim, b: Dim) -> Dim:
    """The size of two extents side by side (a concatenation): a number where both are, else `a+b`."""
    return a + b if isinstance(a, int) and isinstance(b, int) else f"{a}+{b}"


def dim_mul(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    if a == 1 or b == 1:  # B*1 is B
        return b if a == 1 else a

    def factor(d: Dim) -> str:  # a sum is one factor: 10*(T+Tp), not 10*T+Tp
        return f"({d})" if isinstance(d, str) and ("+" in d or "-" in d) else str(d)

    return f"{factor(a)}*{factor(b)}"


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _same(a: Dim, b: Dim) -> bool:
    return a == b or not isinstance(a, int) or not isinstance(b, int)


def _last(expected: int, what: str) -> Callable[[Mapping[str, Any], list[Shape]], None]:
    def chk(a: Mapping[str, Any], s: list[Shape]) -> None:
        if not s[0]:
            raise ShapeError("expects a tensor with a feature dimension, got a scalar")
        if not _same(s[0][-1], a[what]):
            raise ShapeError(f"expects last dimension {a[what]}, got {s[0][-1]} (shape {fmt_shape(s[0])})")

    return chk


def fmt_shape(s: Shape) -> str:
    return "(" + ", ".join(str(d) for d in s) + ")"


def _expect_rank(x: Shape, dims: str) -> Shape:
    """`x` when it has one dimension per name of `dims` ("B, C, H, W"); a ShapeError naming them otherwise."""
    if len(x) != dims.count(",") + 1:
        raise ShapeError(f"expects ({dims}), got {fmt_shape(x)}")
    return x


def _norm_dim(a: Mapping[str, Any], s: list[Shape]) -> int:
    return -1


def _elementwise(per: int) -> Callable[[Mapping[str, Any], list[tuple[int, ...]], list[tuple[int, ...]]], tuple[int, int]]:
    return lambda a, i, o: (0, per * numel(o[0]))


def _check_positive(*names: str) -> Callable[[Mapping[str, Any]], str | None]:
    def chk(a: Mapping[str, Any]) -> str | None:
        for n in names:
            v = a[n]
            vals = v if isinstance(v, tuple) else (v,)
            if any(not isinstance(x, int) or x <= 0 for x in vals):
                return f"{n} must be a positive integer, got {v}"
        return None

    return chk
