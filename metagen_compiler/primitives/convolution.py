"""Convolutions, pooling and resampling over images, volumes and signals."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from .core import (
    Dim,
    Param,
    Primitive,
    Shape,
    ShapeError,
    _check_positive,
    _elementwise,
    _expect_rank,
    _same,
    dim_mul,
    numel,
)


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, tuple):
        return (int(v[0]), int(v[1]))
    return (int(v), int(v))


def _conv_input(a: Mapping[str, Any], s: list[Shape], dims: str) -> Shape:
    """A convolution's input: one dimension per name of `dims` ("B, C, H, W"), the second its in_channels."""
    x = _expect_rank(s[0], dims)
    if not _same(x[1], a["in_channels"]):
        raise ShapeError(f"expects {a['in_channels']} input channels, got {x[1]}")
    return x


def _conv_out(n: Dim, k: int, s: int, p: int, d: int = 1) -> Dim:
    if not isinstance(n, int):
        raise ShapeError("convolution needs concrete spatial sizes")
    out = (n + 2 * p - d * (k - 1) - 1) // s + 1
    if out <= 0:
        raise ShapeError(f"input of size {n} is too small for kernel {k}, stride {s}, padding {p}")
    return out


def _conv2d_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = _conv_input(a, s, "B, C, H, W")
    kh, kw = _pair(a["kernel"])
    sh, sw = _pair(a["stride"])
    ph, pw = _pair(a["padding"])
    return [(x[0], a["out_channels"], _conv_out(x[2], kh, sh, ph), _conv_out(x[3], kw, sw, pw))]


def _conv2d_flops(a: Mapping[str, Any], i: list[tuple[int, ...]], o: list[tuple[int, ...]]) -> tuple[int, int]:
    kh, kw = _pair(a["kernel"])
    per_out = (a["in_channels"] // a["groups"]) * kh * kw
    mm = 2 * numel(o[0]) * per_out
    return mm, numel(o[0]) if a["bias"] else 0


def _triple(v: Any) -> tuple[int, int, int]:
    if isinstance(v, tuple):
        if len(v) != 3:
            raise ShapeError(f"expects one size or three (time, height, width), got {v}")
        return (int(v[0]), int(v[1]), int(v[2]))
    return (int(v), int(v), int(v))


def _conv3d_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = _conv_input(a, s, "B, C, T, H, W")
    k, st, p = _triple(a["kernel"]), _triple(a["stride"]), _triple(a["padding"])
    return [(x[0], a["out_channels"], *(_conv_out(x[2 + i], k[i], st[i], p[i]) for i in range(3)))]


def _conv3d_flops(a: Mapping[str, Any], i: list[tuple[int, ...]], o: list[tuple[int, ...]]) -> tuple[int, int]:
    per_out = (a["in_channels"] // a["groups"]) * math.prod(_triple(a["kernel"]))
    return 2 * numel(o[0]) * per_out, numel(o[0]) if a["bias"] else 0


def _pool_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = _expect_rank(s[0], "B, C, H, W")
    k = int(a["kernel"])
    st = int(a["stride"]) if a["stride"] is not None else k
    p = int(a["padding"])
    return [(x[0], x[1], _conv_out(x[2], k, st, p), _conv_out(x[3], k, st, p))]


def _resize_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = _expect_rank(s[0], "B, C, H, W")
    return [(x[0], x[1], a["size"], a["size"])]


def _resize_check(a: Mapping[str, Any]) -> str | None:
    if a["mode"] not in ("bilinear", "nearest"):
        return f"mode is \"bilinear\" or \"nearest\", not {a['mode']!r}"
    return _check_positive("size")(a)


def _gap_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = _expect_rank(s[0], "B, C, H, W")
    return [(x[0], x[1])]


def _conv1d_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = _conv_input(a, s, "B, C, L")
    length: Dim = x[2]
    if isinstance(length, int) or a["kernel"] != 1 or a["stride"] != 1 or a["padding"] != 0:
        length = _conv_out(x[2], a["kernel"], a["stride"], a["padding"])
    return [(x[0], a["out_channels"], length)]


def _conv1d_flops(a: Mapping[str, Any], i: list[tuple[int, ...]], o: list[tuple[int, ...]]) -> tuple[int, int]:
    mm = 2 * numel(o[0]) * (a["in_channels"] // a["groups"]) * a["kernel"]
    return mm, numel(o[0]) if a["bias"] else 0


def _tconv_out(n: Dim, k: int, s: int, p: int, op: int) -> Dim:
    if not isinstance(n, int):
        raise ShapeError("transposed convolution needs concrete spatial sizes")
    out = (n - 1) * s - 2 * p + k + op
    if out <= 0:
        raise ShapeError(f"input of size {n} gives no output for kernel {k}, stride {s}, padding {p}")
    return out


def _conv_transpose2d_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = _conv_input(a, s, "B, C, H, W")
    (kh, kw), (sh, sw), (ph, pw) = _pair(a["kernel"]), _pair(a["stride"]), _pair(a["padding"])
    oh, ow = _pair(a["output_padding"])
    return [(x[0], a["out_channels"], _tconv_out(x[2], kh, sh, ph, oh), _tconv_out(x[3], kw, sw, pw, ow))]


def _conv_transpose2d_flops(a: Mapping[str, Any], i: list[tuple[int, ...]],
                            o: list[tuple[int, ...]]) -> tuple[int, int]:
    # as flop_counter counts a transposed convolution: every input pixel times the whole filter
    kh, kw = _pair(a["kernel"])
    mm = 2 * numel(i[0]) * (a["out_channels"] // a["groups"]) * kh * kw
    return mm, numel(o[0]) if a["bias"] else 0


def _tconv_check(a: Mapping[str, Any]) -> str | None:
    msg = _conv_check(a)
    if msg:
        return msg
    if any(p >= s for p, s in zip(_pair(a["output_padding"]), _pair(a["stride"]))):
        return f"output_padding {a['output_padding']} must be smaller than the stride {a['stride']}"
    return None


def _conv_check(a: Mapping[str, Any]) -> str | None:
    msg = _check_positive("in_channels", "out_channels", "kernel", "stride", "groups")(a)
    if msg:
        return msg
    if a["in_channels"] % a["groups"] or a["out_channels"] % a["groups"]:
        return f"groups ({a['groups']}) must divide in_channels and out_channels"
    return None


def _conv3d_check(a: Mapping[str, Any]) -> str | None:
    for key in ("kernel", "stride", "padding"):
        v = a[key]
        if isinstance(v, tuple) and len(v) != 3:
            return f"{key} must be one size or three (time, height, width), got {v}"
    msg = _conv_check({**a, "kernel": 1, "stride": 1})
    if msg:
        return msg
    if min(_triple(a["kernel"]) + _triple(a["stride"])) <= 0 or min(_triple(a["padding"])) < 0:
        return f"kernel and stride must be positive and padding non-negative, got {a['kernel']}, {a['stride']}, {a['padding']}"
    return None


def _upsample_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = _expect_rank(s[0], "B, C, H, W")
    return [(x[0], x[1], *(dim_mul(d, a["factor"]) for d in x[2:]))]


def _conv_weights(kernel: Callable[[Any], tuple[int, ...]], transposed: bool = False,
                  ) -> Callable[[Mapping[str, Any]], dict[str, tuple[int, ...]]]:
    """A convolution's weight, (out, in / groups, *kernel) or transposed (in, out / groups, *kernel), and its bias."""
    def weights(a: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        first, second = (a["in_channels"], a["out_channels"]) if transposed else (a["out_channels"], a["in_channels"])
        return ({"weight": (first, second // max(1, a["groups"]), *kernel(a["kernel"]))}
                | ({"bias": (a["out_channels"],)} if a["bias"] else {}))

    return weights


_P = Param
# conv2d's and conv3d's: the kernel, stride and padding one size for every spatial dim, or one per dim
_CONV_PARAMS = (_P("in_channels", "int"), _P("out_channels", "int"), _P("kernel", "int_or_tuple"),
                _P("stride", "int_or_tuple", 1), _P("padding", "int_or_tuple", 0), _P("groups", "int", 1),
                _P("bias", "bool", True))

PRIMS: list[Primitive] = [
    Primitive(
        "conv2d", _CONV_PARAMS, "2-D convolution over (B, C, H, W).", weights=_conv_weights(_pair),
        shape=_conv2d_shape, flops=_conv2d_flops, check=_conv_check, tags=frozenset({"mm"}),
    ),
    Primitive(
        "conv3d", _CONV_PARAMS,
        "3-D convolution over (B, C, T, H, W): video tubelets, kernel and stride as (time, height, width).",
        weights=_conv_weights(_triple),
        shape=_conv3d_shape, flops=_conv3d_flops, check=_conv3d_check, tags=frozenset({"mm"}),
    ),
    Primitive(
        "conv1d",
        (_P("in_channels", "int"), _P("out_channels", "int"), _P("kernel", "int", 1), _P("stride", "int", 1),
         _P("padding", "int", 0), _P("groups", "int", 1), _P("bias", "bool", True)),
        "1-D convolution over (B, C, L); with kernel 1, a linear map shared by every position (PointNet).",
        weights=_conv_weights(lambda k: (k,)),
        shape=_conv1d_shape, flops=_conv1d_flops, check=_conv_check, tags=frozenset({"mm"}),
    ),
    Primitive(
        "conv_transpose2d",
        (_P("in_channels", "int"), _P("out_channels", "int"), _P("kernel", "int_or_tuple"), _P("stride", "int_or_tuple", 1),
         _P("padding", "int_or_tuple", 0), _P("output_padding", "int_or_tuple", 0), _P("groups", "int", 1),
         _P("bias", "bool", True)),
        "Transposed 2-D convolution (learned upsampling) over (B, C, H, W).",
        weights=_conv_weights(_pair, transposed=True),
        shape=_conv_transpose2d_shape, flops=_conv_transpose2d_flops, check=_tconv_check, tags=frozenset({"mm"}),
    ),
    Primitive(
        "maxpool2d", (_P("kernel", "int"), _P("stride", "int", None), _P("padding", "int", 0)),
        "2-D max pooling.", shape=_pool_shape, flops=lambda a, i, o: (0, numel(o[0]) * int(a["kernel"]) ** 2),
        check=_check_positive("kernel"),
        saved=lambda a, i, o: 8 * math.prod(o[0]),  # int64 indices of the output's size
    ),
    Primitive(
        "avgpool2d", (_P("kernel", "int"), _P("stride", "int", None), _P("padding", "int", 0)),
        "2-D average pooling.", shape=_pool_shape, flops=lambda a, i, o: (0, numel(o[0]) * int(a["kernel"]) ** 2),
        check=_check_positive("kernel"),
    ),
    Primitive(
        "resize", (_P("size", "int"), _P("mode", "str", "bilinear")),
        "Resizes (B, C, H, W) to (B, C, size, size): bilinear (half-pixel centres, as F.interpolate with "
        "align_corners=False) or nearest.", shape=_resize_shape, flops=_elementwise(4), check=_resize_check,
        saves="none",
    ),
    Primitive(
        "global_avgpool", (), "Mean over H and W: (B, C, H, W) -> (B, C).", shape=_gap_shape,
        flops=lambda a, i, o: (0, numel(i[0])), saves="none",
    ),
    # detection: feature pyramids (YOLO's CSP and PAN) and DETR's transformer
    Primitive(
        "upsample", (_P("factor", "int", 2),),
        "Nearest-neighbour upsampling of (B, C, H, W) by an integer factor (YOLO's nn.Upsample(scale_factor=2)).",
        shape=_upsample_shape, check=_check_positive("factor"), saves="none",
    ),
]
