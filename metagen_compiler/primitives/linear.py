"""Learned projections and embeddings: linear maps, lookups, learned tokens and scales."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .core import (
    Param,
    Primitive,
    Shape,
    ShapeError,
    _check_positive,
    _elementwise,
    _last,
    _same,
    dim_add,
    fmt_shape,
    numel,
)


def _linear_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    _last(a["in_features"], "in_features")(a, s)
    return [s[0][:-1] + (a["out_features"],)]


def _linear_flops(a: Mapping[str, Any], i: list[tuple[int, ...]], o: list[tuple[int, ...]]) -> tuple[int, int]:
    rows = numel(i[0][:-1])
    other = rows * a["out_features"] if a["bias"] else 0
    return 2 * rows * a["in_features"] * a["out_features"], other


def _codebook_embedding_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if len(x) != 3 or (isinstance(x[1], int) and x[1] != a["codebooks"]):
        raise ShapeError(f"expects codec tokens (B, {a['codebooks']}, T), got {fmt_shape(x)}")
    return [(x[0], x[2], a["dim"])]


def _codebook_heads_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if len(x) != 3 or (isinstance(x[2], int) and x[2] != a["dim"]):
        raise ShapeError(f"expects (B, T, {a['dim']}), got {fmt_shape(x)}")
    return [(x[0], a["codebooks"], x[1], a["num"])]


def _cls_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    _last(a["dim"], "dim")(a, s)
    x = s[0]
    return [(x[0], dim_add(x[1], 1), x[2])]


def _pos_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    _last(a["dim"], "dim")(a, s)
    x = s[0]
    if isinstance(x[1], int) and x[1] > a["length"]:
        raise ShapeError(f"sequence of {x[1]} positions exceeds the {a['length']} learned positions")
    return [x]


def _embedding_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    return [s[0] + (a["dim"],)]


def _matmul_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x, y = s
    if len(x) != 3 or len(y) != 3 or not _same(x[0], y[0]) or not _same(x[2], y[1]):
        raise ShapeError(f"expects (B, N, K) @ (B, K, M), got {fmt_shape(x)} and {fmt_shape(y)}")
    return [(x[0], x[1], y[2])]


_P = Param

PRIMS: list[Primitive] = [
    Primitive(
        "linear", (_P("in_features", "int"), _P("out_features", "int"), _P("bias", "bool", True)),
        "y = x W^T + b over the last dimension.",
        weights=lambda a: {"weight": (a["out_features"], a["in_features"])} | ({"bias": (a["out_features"],)} if a["bias"] else {}),
        shape=_linear_shape, flops=_linear_flops, check=_check_positive("in_features", "out_features"),
        tags=frozenset({"mm"}),
    ),
    Primitive(
        "learned_log_std", (_P("actions", "int"), _P("init", "float", 0.0)),
        "A learned log standard deviation per action dimension, the same in every state: (B, ...) -> (B, actions) "
        "(a Gaussian policy's, beside its state-dependent mean).",
        weights=lambda a: {"log_std": (a["actions"],)},
        shape=lambda a, s: [(s[0][0], a["actions"])], saves="none", check=_check_positive("actions"),
    ),
    Primitive(
        "layer_scale", (_P("dim", "int"), _P("init", "float", 1e-6)),
        "A learned scale per feature of the last dimension, starting at `init` (CaiT, ConvNeXt).",
        weights=lambda a: {"weight": (a["dim"],)},
        shape=lambda a, s: (_last(a["dim"], "dim")(a, s), [s[0]])[1], flops=_elementwise(1),
        check=_check_positive("dim"),
    ),
    Primitive(
        "embedding", (_P("num", "int"), _P("dim", "int")),
        "Lookup table from integer ids to vectors.",
        weights=lambda a: {"weight": (a["num"], a["dim"])},
        shape=_embedding_shape, check=_check_positive("num", "dim"), saves="input",
    ),
    Primitive(
        "pos_embedding", (_P("length", "int"), _P("dim", "int")),
        "Adds a learned vector per position to (B, T, D), T <= length.",
        weights=lambda a: {"weight": (1, a["length"], a["dim"])},
        shape=_pos_shape, flops=_elementwise(1), check=_check_positive("length", "dim"), saves="none",
    ),
    Primitive(
        "type_embedding", (_P("num", "int"), _P("dim", "int")),
        "Adds the segment (token type) embedding of type 0 to (B, T, D): BERT's token types for single-segment input.",
        weights=lambda a: {"weight": (a["num"], a["dim"])},
        shape=lambda a, s: (_last(a["dim"], "dim")(a, s), [s[0]])[1], flops=_elementwise(1),
        check=_check_positive("num", "dim"), saves="none",
    ),
    Primitive(
        "cls_token", (_P("dim", "int"),),
        "Prepends a learned token: (B, T, D) -> (B, T+1, D).",
        weights=lambda a: {"weight": (1, 1, a["dim"])}, shape=_cls_shape, check=_check_positive("dim"), saves="none",
    ),
    Primitive("scale", (_P("factor", "float"),), "Multiplies by a constant (T5's d_model ** -0.5 before its tied head).",
              flops=_elementwise(1), saves="none"),
    Primitive("matmul", (), "Batched matrix product (B, N, K) @ (B, K, M) (PointNet's learned transforms).", n_inputs=2,
              shape=_matmul_shape, flops=lambda a, i, o: (2 * numel(o[0]) * i[0][2], 0), saves="both",
              tags=frozenset({"mm"})),
    Primitive(
        "codebook_embedding", (_P("codebooks", "int"), _P("num", "int"), _P("dim", "int")),
        "MusicGen's input embedding of audio codec tokens: one (num, dim) table per codebook, the codebooks' "
        "embeddings summed: (B, codebooks, T) ids -> (B, T, dim).",
        weights=lambda a: {"weight": (a["codebooks"], a["num"], a["dim"])}, shape=_codebook_embedding_shape,
        flops=lambda a, i, o: (0, (a["codebooks"] - 1) * numel(o[0])),
        check=_check_positive("codebooks", "num", "dim"), saves="input",
    ),
    Primitive(
        "codebook_heads", (_P("dim", "int"), _P("codebooks", "int"), _P("num", "int")),
        "MusicGen's output heads: one bias-free linear map to `num` logits per codebook: (B, T, dim) -> "
        "(B, codebooks, T, num).",
        weights=lambda a: {"weight": (a["codebooks"], a["num"], a["dim"])}, shape=_codebook_heads_shape,
        flops=lambda a, i, o: (2 * numel(o[0]) * a["dim"], 0),
        check=_check_positive("dim", "codebooks", "num"), tags=frozenset({"mm"}),
    ),
]
