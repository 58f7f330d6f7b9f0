"""Shape operations: split, join, reorder, select and reduce."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .core import Dim, Param, Primitive, Shape, ShapeError, _check_positive, _same, dim_mul, dim_sum, fmt_shape, numel


def _at(x: Shape | list[Dim], i: int) -> int:
    """Dim index i of x, a negative one counted from the end (not range-checked)."""
    return i if i >= 0 else len(x) + i


def _dim_arg(a: Mapping[str, Any], x: Shape, action: str) -> int:
    """The `dim` argument as an index of x's dims; a ShapeError `cannot <action> <dim> of <x>` where x has none."""
    dim = _at(x, a["dim"])
    if not 0 <= dim < len(x):
        raise ShapeError(f"cannot {action} {a['dim']} of {fmt_shape(x)}")
    return dim


def _sizes(a: Mapping[str, Any]) -> tuple[Any, ...]:
    return a["sizes"] if isinstance(a["sizes"], tuple) else (a["sizes"],)


def _split_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    n = a["parts"]
    dim = _dim_arg(a, x, "split dimension")
    if isinstance(x[dim], int):
        if x[dim] % n:
            raise ShapeError(f"cannot split {x[dim]} into {n} equal parts")
        part: Dim = x[dim] // n
    else:
        part = f"{x[dim]}//{n}"
    return [x[:dim] + (part,) + x[dim + 1:] for _ in range(n)]


def _flatten_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    st, en = _at(x, a["start"]), _at(x, a["end"])
    if not 0 <= st <= en < len(x):
        raise ShapeError(f"cannot flatten dims {a['start']}..{a['end']} of {fmt_shape(x)}")
    merged: Dim = 1
    for d in x[st:en + 1]:
        merged = dim_mul(merged, d) if merged != 1 else d
    return [x[:st] + (merged,) + x[en + 1:]]


def _transpose_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = list(s[0])
    d0, d1 = _at(x, a["dim0"]), _at(x, a["dim1"])
    if not (0 <= d0 < len(x) and 0 <= d1 < len(x)):
        raise ShapeError(f"cannot transpose dims {a['dim0']}, {a['dim1']} of {fmt_shape(s[0])}")
    x[d0], x[d1] = x[d1], x[d0]
    return [tuple(x)]


def _select_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    dim = _dim_arg(a, x, "select along dim")
    return [x[:dim] + x[dim + 1:]]


def _mean_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    return _select_shape(a, s)


def _drop_prefix_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    n = int(a["count"])
    if len(x) < 2:
        raise ShapeError(f"expects (B, T, ...), got {fmt_shape(x)}")
    t = x[1]
    if isinstance(t, int):
        if t <= n:
            raise ShapeError(f"cannot drop {n} of {t} positions")
        rest: Dim = t - n
    elif t.startswith(f"{n}+"):  # the length a concat after an n-position prefix made
        rest = t[len(f"{n}+"):]
    else:
        rest = f"{t}-{n}"
    return [(x[0], rest, *x[2:])]


def _permute_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x, dims = s[0], a["dims"]
    if sorted(dims) != list(range(len(x))):
        raise ShapeError(f"permutation {fmt_shape(dims)} does not order the {len(x)} dims of {fmt_shape(x)}")
    return [tuple(x[i] for i in dims)]


def _check_dims(a: Mapping[str, Any]) -> str | None:
    d = a["dims"]
    if not isinstance(d, tuple) or any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in d):
        return f"dims must be a tuple of dim indices such as (0, 2, 3, 1), got {d}"
    return None


def _unflatten_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    sizes = _sizes(a)
    dim = _dim_arg(a, x, "unflatten dim")
    if -1 in sizes:  # one size inferred: the dim over the product of the others
        known = math.prod(v for v in sizes if v != -1)
        d = x[dim]
        if isinstance(d, int):
            if d % known:
                raise ShapeError(f"cannot unflatten {d} into {fmt_shape(sizes)}: {known} does not divide it")
            rest: Dim = d // known
        elif d.endswith(f"*{known}"):  # (B*s) -> (B, s): the symbol a flatten made
            rest = d[: -len(f"*{known}")]
        else:
            rest = f"({d})//{known}"
        sizes = tuple(rest if v == -1 else v for v in sizes)
    elif isinstance(x[dim], int) and x[dim] != math.prod(sizes):
        raise ShapeError(f"cannot unflatten {x[dim]} into {fmt_shape(sizes)} ({math.prod(sizes)} elements)")
    return [x[:dim] + tuple(sizes) + x[dim + 1:]]


def _check_sizes(a: Mapping[str, Any]) -> str | None:
    if not isinstance(a["sizes"], tuple):
        return f"sizes must be a tuple such as (4, 4), got {a['sizes']}"
    if list(a["sizes"]).count(-1) > 1:
        return f"at most one size may be -1 (inferred), got {a['sizes']}"
    return _check_positive("sizes")({**a, "sizes": tuple(v for v in a["sizes"] if v != -1)})


def _split_sizes_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    sizes = _sizes(a)
    dim = _dim_arg(a, x, "split dimension")
    if isinstance(x[dim], int) and x[dim] != sum(sizes):
        raise ShapeError(f"sizes {'+'.join(str(n) for n in sizes)} = {sum(sizes)} do not add up to {x[dim]}")
    return [x[:dim] + (n,) + x[dim + 1:] for n in sizes]


def _concat_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x, y = s
    dim = _at(x, a["dim"])
    if len(x) != len(y) or not 0 <= dim < len(x) or any(
            not _same(p, q) for i, (p, q) in enumerate(zip(x, y)) if i != dim):
        raise ShapeError(f"cannot concatenate {fmt_shape(x)} and {fmt_shape(y)} along dimension {a['dim']}")
    both = dim_sum(x[dim], y[dim])
    return [tuple(both if i == dim else (p if isinstance(p, int) else q) for i, (p, q) in enumerate(zip(x, y)))]


def _tile_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if not x:
        raise ShapeError("tile needs a tensor with at least one dim")
    d = int(a["dim"]) % len(x)
    return [x[:d] + (dim_mul(x[d], int(a["times"])),) + x[d + 1:]]


_P = Param

PRIMS: list[Primitive] = [
    Primitive(
        "concat", (_P("dim", "int", 1),),
        "Concatenates two tensors along a dim (the channels of (B, C, H, W) by default: a U-Net's skip joined to its "
        "upsampling path, CSP blocks, PAN necks; dim 1 of tokens: an image prefix before text).",
        n_inputs=2, shape=_concat_shape, saves="none",
    ),
    Primitive(
        "split", (_P("parts", "int"), _P("dim", "int", -1)),
        "Splits a tensor into equal parts.", n_outputs=lambda a: a["parts"], shape=_split_shape,
        check=_check_positive("parts"), saves="none",
        aliases=lambda a: True,  # a view of its input: no storage of its own
    ),
    Primitive("identity", (), "Returns its input.", saves="none",
        aliases=lambda a: True,  # a view of its input: no storage of its own
    ),
    Primitive("flatten", (_P("start", "int", 1), _P("end", "int", -1)), "Merges dims start..end.", shape=_flatten_shape,
              saves="none",
        aliases=lambda a: True,  # a view of its input: no storage of its own
    ),
    Primitive("transpose", (_P("dim0", "int"), _P("dim1", "int")), "Swaps two dims.", shape=_transpose_shape,
              saves="none",
        aliases=lambda a: True,  # a view of its input: no storage of its own
    ),
    Primitive("permute", (_P("dims", "int_or_tuple"),),
              "Reorders the dims, e.g. (0, 2, 3, 1): (B, C, H, W) -> (B, H, W, C).",
              shape=_permute_shape, check=_check_dims, saves="none",
        aliases=lambda a: True,  # a view of its input: no storage of its own
    ),
    Primitive("select", (_P("index", "int"), _P("dim", "int", 1)), "Takes one index along a dim (e.g. the CLS token).",
              shape=_select_shape, saves="none",
        aliases=lambda a: True,  # a view of its input: no storage of its own
    ),
    Primitive("mean", (_P("dim", "int", 1),), "Mean over one dim.", shape=_mean_shape,
              flops=lambda a, i, o: (0, numel(i[0])), saves="none"),
    Primitive("max", (_P("dim", "int", 1),), "Maximum over one dim (PointNet's symmetric pooling over points).",
              shape=_select_shape, flops=lambda a, i, o: (0, numel(i[0])), saves="both"),
    Primitive("unflatten", (_P("dim", "int"), _P("sizes", "int_or_tuple")), "Splits one dim into several, e.g. "
              "(B, C*H*W) -> (B, C, H, W).", shape=_unflatten_shape, check=_check_sizes, saves="none",
        aliases=lambda a: True,  # a view of its input: no storage of its own
    ),
    Primitive("drop_prefix", (_P("count", "int"),), "Drops the first `count` positions of (B, T, ...): (B, T - count, ...).",
              shape=_drop_prefix_shape, check=_check_positive("count"), saves="none",
        aliases=lambda a: True,  # a view of its input: no storage of its own
    ),
    # state-space models (Mamba) and mixtures of experts
    Primitive(
        "split_sizes", (_P("sizes", "int_or_tuple"), _P("dim", "int", -1)),
        "Splits a tensor into parts of the given sizes.",
        n_outputs=lambda a: len(a["sizes"]) if isinstance(a["sizes"], tuple) else 1, shape=_split_sizes_shape,
        check=_check_positive("sizes"), saves="none",
        aliases=lambda a: True,  # a view of its input: no storage of its own
    ),
    Primitive(
        "tile", (_P("times", "int"), _P("dim", "int", -1)),
        "Repeats a tensor `times` times along a dim, copies side by side (the value shared by every head of "
        "interpretable multi-head attention).",
        shape=_tile_shape, check=_check_positive("times"), saves="none",
    ),
]
