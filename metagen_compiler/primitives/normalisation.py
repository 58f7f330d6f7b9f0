"""Normalisation layers."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .core import Param, Primitive, Shape, ShapeError, _check_positive, _elementwise, _last, _same, fmt_shape


def _groupnorm_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if len(x) < 2 or not _same(x[1], a["channels"]):
        raise ShapeError(f"expects (B, {a['channels']}, ...), got {fmt_shape(x)}")
    return [x]


def _groupnorm_check(a: Mapping[str, Any]) -> str | None:
    msg = _check_positive("groups", "channels")(a)
    if msg:
        return msg
    if a["channels"] % a["groups"]:
        return f"groups must divide channels, got {a['groups']} groups of {a['channels']} channels"
    return None


def _channels_first(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if len(x) != 4:
        raise ShapeError(f"expects (B, C, H, W), got {fmt_shape(x)}")
    if not _same(x[1], a["channels"]):
        raise ShapeError(f"expects {a['channels']} channels, got {x[1]} (shape {fmt_shape(x)})")
    return [x]


def _bn1d_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if len(x) not in (2, 3):
        raise ShapeError(f"expects (B, C) or (B, C, L), got {fmt_shape(x)}")
    if not _same(x[1], a["channels"]):
        raise ShapeError(f"expects {a['channels']} channels, got {x[1]} (shape {fmt_shape(x)})")
    return [x]


# temporal fusion transformer
def _grouped_ln_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    width = a["groups"] * a["dim"]
    if not s[0] or not _same(s[0][-1], width):
        raise ShapeError(f"expects last dimension groups x dim = {width}, got shape {fmt_shape(s[0])}")
    return [s[0]]


_P = Param

PRIMS: list[Primitive] = [
    Primitive(
        "batchnorm1d", (_P("channels", "int"), _P("eps", "float", 1e-5), _P("momentum", "float", 0.1)),
        "Batch normalisation over the channel dimension of (B, C) or (B, C, L).",
        weights=lambda a: {"weight": (a["channels"],), "bias": (a["channels"],)},
        buffers=lambda a: {"running_mean": (a["channels"],), "running_var": (a["channels"],), "num_batches_tracked": ()},
        shape=_bn1d_shape, flops=_elementwise(4), check=_check_positive("channels"),
        saved=lambda a, i, o: 2 * 4 * int(a["channels"]),  # mean and invstd per channel
    ),
    Primitive(
        "batchnorm", (_P("channels", "int"), _P("eps", "float", 1e-5), _P("momentum", "float", 0.1)),
        "Batch normalisation over the channel dimension of (B, C, H, W).",
        weights=lambda a: {"weight": (a["channels"],), "bias": (a["channels"],)},
        buffers=lambda a: {"running_mean": (a["channels"],), "running_var": (a["channels"],), "num_batches_tracked": ()},
        shape=lambda a, s: [s[0]], flops=_elementwise(4), check=_check_positive("channels"),
        saved=lambda a, i, o: 2 * 4 * int(a["channels"]),  # mean and invstd per channel
    ),
    Primitive(
        "layernorm", (_P("dim", "int"), _P("eps", "float", 1e-5), _P("bias", "bool", True)),
        "Layer normalisation over the last dimension.",
        weights=lambda a: {"weight": (a["dim"],)} | ({"bias": (a["dim"],)} if a["bias"] else {}),
        shape=lambda a, s: (_last(a["dim"], "dim")(a, s), [s[0]])[1], flops=_elementwise(5),
        check=_check_positive("dim"), tags=frozenset({"norm"}),
        saved=lambda a, i, o: 2 * 4 * (math.prod(i[0]) // i[0][-1]),  # mean and rstd per row
    ),
    Primitive(
        "layernorm2d", (_P("channels", "int"), _P("eps", "float", 1e-6)),
        "Layer normalisation over the channels of (B, C, H, W) at each position (ConvNeXt's channels-first norm).",
        weights=lambda a: {"weight": (a["channels"],), "bias": (a["channels"],)},
        shape=_channels_first, flops=_elementwise(5), check=_check_positive("channels"), tags=frozenset({"norm"}),
        saved=lambda a, i, o: 2 * 4 * (math.prod(i[0]) // i[0][1]),  # mean and rstd per position (B H W)
    ),
    Primitive(
        "groupnorm", (_P("groups", "int"), _P("channels", "int"), _P("eps", "float", 1e-5)),
        "Group normalisation of (B, C, ...): mean and variance over each group of C / groups channels and all "
        "positions, then a learned scale and shift per channel (U-Nets, diffusion models).",
        weights=lambda a: {"weight": (a["channels"],), "bias": (a["channels"],)},
        shape=_groupnorm_shape, flops=_elementwise(5), check=_groupnorm_check, tags=frozenset({"norm"}),
        saved=lambda a, i, o: 2 * 4 * i[0][0] * int(a["groups"]),  # mean and rstd per sample and group
    ),
    Primitive(
        "rmsnorm", (_P("dim", "int"), _P("eps", "float", 1e-6)),
        "Root-mean-square normalisation over the last dimension.",
        weights=lambda a: {"weight": (a["dim"],)},
        shape=lambda a, s: (_last(a["dim"], "dim")(a, s), [s[0]])[1], flops=_elementwise(4),
        check=_check_positive("dim"), tags=frozenset({"norm"}),
        saved=lambda a, i, o: 4 * (math.prod(i[0]) // i[0][-1]) + 4 * math.prod(o[0]),  # rstd per row, x before the weight
    ),
    Primitive(
        "l2_normalize", (_P("dim", "int", -1), _P("eps", "float", 1e-12)), "Scales to unit L2 norm along a dim.",
        flops=_elementwise(3),
        saved=lambda a, i, o: 2 * 4 * (math.prod(i[0]) // i[0][int(a["dim"])]),  # the norm and its clamp per row
    ),
    Primitive(
        "frozen_batchnorm", (_P("channels", "int"), _P("eps", "float", 1e-5)),
        "Batch normalisation of (B, C, H, W) with fixed statistics and affine (DETR's FrozenBatchNorm2d): "
        "weight, bias, running mean and variance are buffers, not parameters; x * scale + shift in training too.",
        buffers=lambda a: {"weight": (a["channels"],), "bias": (a["channels"],), "running_mean": (a["channels"],),
                           "running_var": (a["channels"],)},
        flops=_elementwise(2), check=_check_positive("channels"), saves="none", tags=frozenset({"module"}),
        saved=lambda a, i, o: 4 * int(a["channels"]),  # the per-channel scale x is multiplied by
    ),
    # temporal fusion transformer: per-variable norms and the shared value of interpretable attention
    Primitive(
        "grouped_layernorm", (_P("groups", "int"), _P("dim", "int"), _P("eps", "float", 1e-5)),
        "Layer normalisation of each of `groups` consecutive blocks of `dim` features of the last dimension "
        "(..., groups * dim), with a learned scale and shift per feature: one LayerNorm(dim) per group (the "
        "temporal fusion transformer's per-variable GRNs).",
        weights=lambda a: {"weight": (a["groups"] * a["dim"],), "bias": (a["groups"] * a["dim"],)},
        shape=_grouped_ln_shape, flops=_elementwise(5), check=_check_positive("groups", "dim"),
        tags=frozenset({"norm"}),
        saved=lambda a, i, o: 2 * 4 * (math.prod(i[0]) // int(a["dim"])) + 4 * math.prod(o[0]),
        # ^ mean and rstd per row and group, and the normalised tensor before the weight
    ),
]
