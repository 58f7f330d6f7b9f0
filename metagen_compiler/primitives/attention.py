"""Attention and position encodings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .core import Param, Primitive, Shape, ShapeError, _check_positive, _elementwise, _last, fmt_shape, numel


def _sdpa_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    q, k, v = s
    if len(q) != 3 or len(k) != 3 or len(v) != 3:
        raise ShapeError(f"expects q, k, v of shape (B, T, C), got {fmt_shape(q)}, {fmt_shape(k)}, {fmt_shape(v)}")
    h, kvh = a["heads"], a["kv_heads"]
    for name, t, n in (("q", q, h), ("k", k, kvh), ("v", v, kvh)):
        if isinstance(t[-1], int) and t[-1] % n:
            raise ShapeError(f"{name} has {t[-1]} features, not divisible into {n} heads")
    if isinstance(q[-1], int) and isinstance(k[-1], int) and q[-1] // h != k[-1] // kvh:
        raise ShapeError(f"q and k head sizes differ: {q[-1] // h} and {k[-1] // kvh}")
    return [q[:-1] + (v[-1] * h // kvh if isinstance(v[-1], int) else v[-1],)]


def _sdpa_flops(a: Mapping[str, Any], i: list[tuple[int, ...]], o: list[tuple[int, ...]]) -> tuple[int, int]:
    (b, t, c), (_, s_len, _) = i[0], i[1]
    h = a["heads"]
    d = c // h
    mm = 2 * b * h * t * s_len * d * 2  # q @ k^T and attn @ v, as flop_counter counts them
    other = 5 * b * h * t * s_len  # scale, mask, softmax (exp, sum, divide)
    return mm, other


def _rel_bias_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    q, k = s
    if len(q) != 3 or len(k) != 3:
        raise ShapeError(f"expects queries and keys of shape (B, T, C), got {fmt_shape(q)}, {fmt_shape(k)}")
    return [(1, a["heads"], q[1], k[1])]


def _sdpa_bias_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    q, k, v, bias = s
    out = _sdpa_shape({**a, "kv_heads": a["heads"]}, [q, k, v])
    if len(bias) != 4 or (isinstance(bias[1], int) and bias[1] != a["heads"]):
        raise ShapeError(f"expects a bias of shape (1, {a['heads']}, T, S), got {fmt_shape(bias)}")
    return out


def _rel_bias_check(a: Mapping[str, Any]) -> str | None:
    err = _check_positive("heads", "buckets", "max_distance")(a)
    if err:
        return err
    least = 4 if a["bidirectional"] else 2  # half the buckets per direction, half of those exact
    if a["buckets"] < least:
        return f"buckets must be at least {least}, got {a['buckets']}"
    exact = a["buckets"] // (least // 2) // 2
    if a["max_distance"] <= exact:
        return f"max_distance ({a['max_distance']}) must exceed the {exact} exactly bucketed distances"
    return None


def _sinusoid_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if len(x) != 3 or (isinstance(x[2], int) and x[2] != a["dim"]):
        raise ShapeError(f"expects (B, T, {a['dim']}), got {fmt_shape(x)}")
    if isinstance(x[1], int) and x[1] > a["length"]:
        raise ShapeError(f"{x[1]} positions exceed the table's {a['length']}")
    return [x]


def _sinusoid_positions_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if len(x) != 3 or (isinstance(x[2], int) and x[2] != a["dim"]):
        raise ShapeError(f"expects (B, T, {a['dim']}), got {fmt_shape(x)}")
    return [x]


def _even_dim(a: Mapping[str, Any]) -> str | None:
    return _check_positive("dim")(a) or (None if a["dim"] % 2 == 0 and a["dim"] >= 4 else
                                         f"dim must be even and at least 4, got {a['dim']}")


def _rope_check(a: Mapping[str, Any]) -> str | None:
    if float(a["scaling"]) <= 0:
        return f"scaling must be positive, got {a['scaling']}"
    return _check_positive("heads")(a)


def _rope_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    return [s[0], s[1]]


def _check_heads(a: Mapping[str, Any]) -> str | None:
    if a["heads"] <= 0 or a["kv_heads"] <= 0:
        return "heads must be positive"
    if a["heads"] % a["kv_heads"]:
        return f"kv_heads ({a['kv_heads']}) must divide heads ({a['heads']})"
    return None


def _sine_2d_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    _last(a["dim"], "dim")(a, s)
    x = s[0]
    if len(x) != 3 or (isinstance(x[1], int) and x[1] != a["height"] * a["width"]):
        raise ShapeError(f"expects (B, height * width = {a['height'] * a['width']}, dim), got {fmt_shape(x)}")
    return [x]


def _sine_2d_check(a: Mapping[str, Any]) -> str | None:
    return _check_positive("height", "width", "dim")(a) or (
        None if a["dim"] % 4 == 0 else f"dim must be a multiple of 4 (sin and cos of y and x), got {a['dim']}")


def _attention_calls(a: Mapping[str, Any], x: tuple[int, ...]) -> int:
    """Attention's matmul FLOPs split into one product per (batch, head)."""
    return max(1, x[0] * int(a.get("heads", 1)))


_P = Param

PRIMS: list[Primitive] = [
    Primitive(
        "sdpa", (_P("heads", "int"), _P("kv_heads", "int", 0), _P("causal", "bool", False)),
        "Scaled dot-product attention of q, k, v given as (B, T, C); splits and merges heads.",
        n_inputs=3, shape=_sdpa_shape, flops=_sdpa_flops, check=_check_heads, saves="both",
        tags=frozenset({"mm", "attention"}),
        saved=lambda a, i, o: 4 * i[0][0] * int(a["heads"]) * i[0][1],  # the log-sum-exp per query row (flash attention)
        matmul_calls=_attention_calls,
    ),
    Primitive(
        "sdpa_bias", (_P("heads", "int"), _P("causal", "bool", False), _P("scaled", "bool", True)),
        "Dot-product attention of q, k, v given as (B, T, C) with an additive bias (1, heads, T, S) on the scores "
        "(T5's relative positions); scores scaled by 1/sqrt(head size) unless `scaled` is false (T5).",
        n_inputs=4, shape=_sdpa_bias_shape, flops=_sdpa_flops, check=_check_positive("heads"), saves="both",
        tags=frozenset({"mm", "attention"}),
        matmul_calls=_attention_calls,
    ),
    Primitive(
        "relative_position_bias", (_P("heads", "int"), _P("buckets", "int", 32), _P("max_distance", "int", 128),
                                   _P("bidirectional", "bool", True)),
        "T5's relative position bias: a learned scalar per head for each bucket of key position - query position "
        "(exact below buckets / 2, log-spaced up to max_distance; signed if bidirectional, else only the past): "
        "queries (B, T, C), keys (B, S, C) -> (1, heads, T, S).",
        n_inputs=2, weights=lambda a: {"weight": (a["buckets"], a["heads"])}, shape=_rel_bias_shape,
        check=_rel_bias_check, saves="none",
    ),
    Primitive(
        "sinusoid_embedding", (_P("length", "int"), _P("dim", "int")),
        "Adds fixed sinusoidal positions (Whisper's encoder: sin then cos, timescales up to 10000) to (B, T, D), "
        "T <= length; the table is a frozen parameter (counted, not trained).",
        weights=lambda a: {"weight": (a["length"], a["dim"])}, shape=_sinusoid_shape, flops=_elementwise(1),
        check=lambda a: _check_positive("length", "dim")(a) or (None if a["dim"] % 2 == 0 else
                                                               f"dim must be even, got {a['dim']}"),
        saves="none",
    ),
    Primitive(
        "rope", (_P("heads", "int"), _P("base", "float", 10000.0), _P("scaling", "float", 1.0)),
        "Rotary position embedding applied to q and k, given as (B, T, C); positions divided by `scaling` (linear "
        "rope scaling, transformers' rope_type `linear`).",
        n_inputs=2, n_outputs=lambda a: 2, shape=_rope_shape, flops=lambda a, i, o: (0, 3 * (numel(i[0]) + numel(i[1]))),
        check=_rope_check, saves="none",
        saved=lambda a, i, o: 2 * 4 * i[0][1] * (i[0][2] // int(a["heads"])),  # cos and sin tables (T, head size)
    ),
    Primitive(
        "sine_position_2d", (_P("height", "int"), _P("width", "int"), _P("dim", "int"),
                             _P("temperature", "float", 10000.0)),
        "DETR's fixed 2-D sine positions of a height x width feature map flattened row-major to (B, H*W, dim): "
        "normalised cumulative y and x in (0, 2 pi], the first dim / 2 features sin/cos of y (interleaved), the "
        "rest of x; returns the positions (not added to the input), of its shape.",
        shape=_sine_2d_shape, check=_sine_2d_check, saves="none",
    ),
    Primitive(
        "sinusoid_positions", (_P("dim", "int"),),
        "Adds fixed sinusoidal positions to (B, T, D), computed for any T (MusicGen's decoder: cos then sin, "
        "timescales exp(-log(10000) i / (dim / 2 - 1))); no table, nothing counted.",
        shape=_sinusoid_positions_shape, flops=_elementwise(1), check=_even_dim, saves="none",
    ),
]
